//! The hash chain and its signed checkpoints: how a row's hash is computed, what a checkpoint
//! signs, and the walk that verifies a log (from the database or an export).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use cmkvault_crypto::{PublicJwk, TokenSigningKey};
use cmkvault_store::AuditRow;
use serde_json::{json, Value};

use super::record::rfc3339_ms;
use super::AuditError;

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hash of one chain row.
pub fn chain_hash(prev_hash: &str, seq: i64, record_json: &str) -> String {
    let mut data = Vec::with_capacity(prev_hash.len() + record_json.len() + 24);
    data.extend_from_slice(prev_hash.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(seq.to_string().as_bytes());
    data.push(b'\n');
    data.extend_from_slice(record_json.as_bytes());
    hex::encode(cmkvault_crypto::sha256(&data))
}

/// What a checkpoint's ES256 signature covers: the head it seals.
fn checkpoint_message(head_seq: i64, head_hash: &str) -> Vec<u8> {
    format!("cmkvault-audit-checkpoint:v1\n{head_seq}\n{head_hash}").into_bytes()
}

/// The checkpoint row `seq` that seals the chain up to `seq - 1` (whose hash is `prev`),
/// signed with `signer`, written at `now` (Unix ms).
pub(super) fn checkpoint_row(
    signer: &TokenSigningKey,
    seq: i64,
    prev: &str,
    now: i64,
) -> Result<AuditRow, AuditError> {
    let sig = signer
        .sign(&checkpoint_message(seq - 1, prev))
        .map_err(|e| AuditError::Write(e.to_string()))?;
    let record = json!({
        "time": rfc3339_ms(now),
        "category": "AuditCheckpoint",
        "operationName": "AuditCheckpoint",
        "properties": {
            "headSeq": seq - 1,
            "headHash": prev,
            "alg": "ES256",
            "signature": B64URL.encode(sig),
        },
    });
    let record = record.to_string();
    Ok(AuditRow {
        seq,
        time_ms: now,
        kind: "checkpoint".into(),
        vault: String::new(),
        principal: String::new(),
        operation: "AuditCheckpoint".into(),
        result: "OK".into(),
        hash: chain_hash(prev, seq, &record),
        prev_hash: prev.to_string(),
        record,
    })
}

/// The outcome of a successful verification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked (events and checkpoints).
    pub rows: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// First sequence number.
    pub first_seq: i64,
    /// Last sequence number.
    pub last_seq: i64,
    /// Last verified checkpoint's sequence number.
    pub last_checkpoint: Option<i64>,
    /// Rows after the last checkpoint (covered by the chain, not yet by a signature).
    pub unsigned_tail: u64,
}

/// Where and why a chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at record {seq}: {reason}")]
pub struct ChainBroken {
    /// The first bad record's sequence number (or the missing one).
    pub seq: i64,
    /// What is wrong.
    pub reason: String,
}

/// One row as read from the database or an export.
#[derive(Clone, Debug)]
pub struct ChainRow {
    /// Sequence number.
    pub seq: i64,
    /// Record JSON without chain fields (keys sorted).
    pub record: String,
    /// Previous hash.
    pub prev_hash: String,
    /// This hash.
    pub hash: String,
}

impl From<&AuditRow> for ChainRow {
    fn from(r: &AuditRow) -> Self {
        ChainRow {
            seq: r.seq,
            record: r.record.clone(),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

/// Walks a chain: contiguous sequence numbers, each `prev_hash` equal to the previous row's
/// hash, each hash recomputed, each checkpoint's signature valid under `public`. A chain that
/// does not start at record 1 must start at a checkpoint (pruned logs do).
pub fn verify_chain(
    rows: impl IntoIterator<Item = ChainRow>,
    public: &PublicJwk,
) -> Result<VerifyReport, ChainBroken> {
    let mut report = VerifyReport::default();
    let mut prev: Option<(i64, String)> = None;
    for row in rows {
        let broken = |reason: String| ChainBroken {
            seq: row.seq,
            reason,
        };
        match &prev {
            None => {
                report.first_seq = row.seq;
                if row.seq == 1 && row.prev_hash != GENESIS_HASH {
                    return Err(broken(
                        "the first record does not start from the genesis hash".into(),
                    ));
                }
            }
            Some((pseq, phash)) => {
                if row.seq != pseq + 1 {
                    return Err(ChainBroken {
                        seq: pseq + 1,
                        reason: format!(
                            "record {} is missing (next present record is {})",
                            pseq + 1,
                            row.seq
                        ),
                    });
                }
                if &row.prev_hash != phash {
                    return Err(broken(
                        "its previous-hash does not match the record before it (records removed, reordered or edited)".into(),
                    ));
                }
            }
        }
        if chain_hash(&row.prev_hash, row.seq, &row.record) != row.hash {
            return Err(broken(
                "its content does not match its hash (record edited)".into(),
            ));
        }
        let value: Value = serde_json::from_str(&row.record)
            .map_err(|_| broken("the record is not valid JSON".into()))?;
        let is_checkpoint = value["category"] == "AuditCheckpoint";
        if is_checkpoint {
            let p = &value["properties"];
            let sig = p["signature"]
                .as_str()
                .and_then(|s| B64URL.decode(s).ok())
                .ok_or_else(|| broken("checkpoint without signature".into()))?;
            let head_seq = p["headSeq"].as_i64().unwrap_or(-1);
            let head_hash = p["headHash"].as_str().unwrap_or_default();
            if head_seq != row.seq - 1 || head_hash != row.prev_hash {
                return Err(broken(
                    "checkpoint does not name the record before it".into(),
                ));
            }
            if !cmkvault_crypto::verify_es256(
                public,
                &checkpoint_message(head_seq, head_hash),
                &sig,
            ) {
                return Err(broken("checkpoint signature is invalid".into()));
            }
            report.checkpoints += 1;
            report.last_checkpoint = Some(row.seq);
            report.unsigned_tail = 0;
        } else {
            if prev.is_none() && row.seq != 1 {
                return Err(broken(
                    "the log does not start at record 1 or at a signed checkpoint (records removed from the start)".into(),
                ));
            }
            report.unsigned_tail += 1;
        }
        report.rows += 1;
        report.last_seq = row.seq;
        prev = Some((row.seq, row.hash.clone()));
    }
    Ok(report)
}
