//! `cmkvault audit …`: verify, tail, query and export the audit log in a data directory, or
//! verify an exported JSONL file; `checkpoint` and `prune` ask the running server.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cmkvault_crypto::PublicJwk;
use cmkvault_store::{AuditFilter, AuditHead, AuditRow, AuditSink, SqliteAuditStore};
use cmkvault_vault::audit::{export_line, parse_export_line, verify_chain, ChainRow};

use crate::{ClientArgs, DataArgs};

/// `cmkvault audit` subcommands.
#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the hash chain and check every signed checkpoint; names the first broken record.
    Verify {
        #[command(flatten)]
        data: DataArgs,
        /// Verify an exported JSONL file instead of DIR/audit.db (the public key still comes
        /// from DIR, or from --public-key).
        #[arg(long)]
        file: Option<PathBuf>,
        /// The token-signing public key as JWKS or JWK JSON (from /{tenant}/discovery/v2.0/keys).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Show the last records.
    Tail {
        #[command(flatten)]
        data: DataArgs,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Print full JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show records matching filters.
    Query {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Print full JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Write records as JSON lines (one AuditEvent per line, with seq/prevHash/hash).
    Export {
        #[command(flatten)]
        data: DataArgs,
        /// Output format (only jsonl).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Output file (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Only records at or after this time (RFC 3339 date-time or a duration ago such as 1h).
        #[arg(long)]
        since: Option<String>,
    },
    /// Ask the running server to append a signed checkpoint now; prints its sequence number.
    Checkpoint {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask the running server to delete records older than a number of days (after a signed
    /// checkpoint, so the log still verifies); prints how many were removed.
    Prune {
        /// Age in whole days, such as 90d.
        #[arg(long)]
        older_than: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Filters shared by query.
#[derive(Args)]
pub(crate) struct FilterArgs {
    /// Records at or after this time: RFC 3339 (2026-11-23T10:00:00Z) or a duration ago (15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Caller object id.
    #[arg(long)]
    principal: Option<String>,
    /// operationName, such as KeyUnwrap.
    #[arg(long)]
    op: Option<String>,
    /// resultSignature, such as OK or Forbidden.
    #[arg(long)]
    result: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

/// Checks that the log still holds the newest checkpoint the server recorded beside it, so a
/// log cut back to an earlier checkpoint (which still verifies as a chain) is reported.
fn check_head(store: &dyn AuditSink, head: &AuditHead, last_seq: i64) -> Result<()> {
    let file = store.head_location();
    match store.get(head.seq)? {
        Some(row) if row.kind == "checkpoint" && row.hash == head.hash => Ok(()),
        Some(_) => bail!(
            "audit log does not match {file}: record {} is not the checkpoint recorded there",
            head.seq
        ),
        None if head.seq > last_seq => bail!(
            "audit log truncated: {file} names checkpoint {}, but the log ends at record {last_seq}",
            head.seq
        ),
        None => bail!(
            "audit log does not match {file}: checkpoint {} recorded there is missing",
            head.seq
        ),
    }
}

/// Opens the audit log of a data directory (`DIR/audit.db`, with `DIR/audit-head.json`).
fn open_store(data: &DataArgs) -> Result<Box<dyn AuditSink>> {
    let path = data.data.join("audit.db");
    if !path.exists() {
        bail!(
            "{} does not exist: no audit log in this data directory",
            path.display()
        );
    }
    let store = SqliteAuditStore::open(&path, std::time::Duration::from_secs(5))
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(store))
}

/// Parses `--since`: RFC 3339 UTC (`...Z`) or a duration ago.
fn parse_since(text: &str) -> Result<i64> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    if let Ok(d) = crate::parse_duration(text) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    parse_rfc3339_ms(text).with_context(|| {
        format!("--since '{text}' is neither a duration (15m, 2h, 7d) nor an RFC 3339 UTC time (2026-11-23T10:00:00Z)")
    })
}

fn parse_rfc3339_ms(text: &str) -> Result<i64> {
    let t = text.trim().trim_end_matches('Z');
    let (date, time) = t.split_once('T').unwrap_or((t, "00:00:00"));
    let d: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(str::parse).collect::<Result<_, _>>()?;
    if d.len() != 3 || h.len() != 3 {
        bail!("bad date-time");
    }
    let (y, m, day) = (d[0], d[1], d[2]);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        bail!("bad date");
    }
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms: i64 = format!("{frac:0<3}")[..3].parse()?;
    Ok(((days * 86_400) + h[0] * 3600 + h[1] * 60 + h[2]) * 1000 + ms)
}

fn print_row(out: &mut impl Write, row: &AuditRow, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", export_line(row))?;
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&row.record).unwrap_or_default();
    let status = v["properties"]["httpStatusCode"].as_u64().unwrap_or(0);
    let id = v["properties"]["id"].as_str().unwrap_or("-");
    writeln!(
        out,
        "{:>8}  {}  {:<22} {:<12} {:>3}  principal={}  vault={}  {}",
        row.seq,
        v["time"].as_str().unwrap_or("-"),
        row.operation,
        row.result,
        status,
        if row.principal.is_empty() {
            "-"
        } else {
            &row.principal
        },
        if row.vault.is_empty() {
            "-"
        } else {
            &row.vault
        },
        id
    )?;
    Ok(())
}

fn public_key(data: &DataArgs, file: Option<&PathBuf>) -> Result<PublicJwk> {
    use base64::Engine;
    let dec = |v: &serde_json::Value| {
        v.as_str().and_then(|s| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
        })
    };
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", f.display()))?;
        let jwk = if v["keys"].is_array() {
            &v["keys"][0]
        } else {
            &v
        };
        let (x, y) = (dec(&jwk["x"]), dec(&jwk["y"]));
        if jwk["crv"] != "P-256" || x.is_none() || y.is_none() {
            bail!(
                "{} does not hold a P-256 public JWK (crv, x, y)",
                f.display()
            );
        }
        return Ok(PublicJwk {
            crv: Some(cmkvault_crypto::Curve::P256),
            x,
            y,
            ..Default::default()
        });
    }
    if !data.data.join("cmkvault.db").exists() {
        bail!(
            "{} is not an initialised data directory: give --data DIR of the server, or --public-key FILE (the JWKS from /{{tenant}}/discovery/v2.0/keys)",
            data.data.display()
        );
    }
    let root = std::env::var("CMKVAULT_ROOT_KEY")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let opened = cmkvault_server::datadir::open(&data.data, root.as_deref())?;
    Ok(opened.tokens.public_jwk())
}

/// Pages through the whole audit table in sequence order.
fn all_rows(store: &dyn AuditSink) -> impl Iterator<Item = Result<AuditRow>> + '_ {
    let mut after = 0i64;
    let mut buf: std::vec::IntoIter<AuditRow> = Vec::new().into_iter();
    let mut done = false;
    std::iter::from_fn(move || loop {
        if let Some(r) = buf.next() {
            after = r.seq;
            return Some(Ok(r));
        }
        if done {
            return None;
        }
        match store.query(&AuditFilter {
            after_seq: Some(after),
            limit: Some(5000),
            ..Default::default()
        }) {
            Ok(rows) => {
                done = rows.len() < 5000;
                buf = rows.into_iter();
                if buf.len() == 0 {
                    return None;
                }
            }
            Err(e) => {
                done = true;
                return Some(Err(e.into()));
            }
        }
    })
}

/// Parses `--older-than`: a whole number of days (`90d`), at least one.
fn parse_days(text: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("--older-than '{text}' is not a whole number of days such as 90d");
    let secs = crate::parse_duration(text).map_err(|_| bad())?.as_secs();
    if secs == 0 || secs % 86_400 != 0 {
        return Err(bad());
    }
    Ok(secs / 86_400)
}

/// Runs an audit subcommand.
pub(crate) async fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Checkpoint { client } => {
            let v = crate::client::Client::new(&client)?
                .send("POST", "/management/audit/checkpoint", None)
                .await?;
            println!("checkpoint-seq: {}", v["seq"]);
            Ok(())
        }
        AuditCommand::Prune { older_than, client } => {
            let days = parse_days(&older_than)?;
            let v = crate::client::Client::new(&client)?
                .send(
                    "POST",
                    "/management/audit/prune",
                    Some(serde_json::json!({ "olderThanDays": days })),
                )
                .await?;
            println!("removed: {}", v["removed"]);
            Ok(())
        }
        local => run_local(local),
    }
}

/// Runs a subcommand that reads DIR/audit.db (or an export) directly.
fn run_local(cmd: AuditCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cmd {
        AuditCommand::Verify {
            data,
            file,
            public_key: pk,
        } => {
            let key = public_key(&data, pk.as_ref())?;
            let report = if let Some(f) = file {
                let fh = std::fs::File::open(&f)
                    .with_context(|| format!("cannot open {}", f.display()))?;
                let mut rows = Vec::new();
                for (i, line) in std::io::BufReader::new(fh).lines().enumerate() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    rows.push(parse_export_line(&line).with_context(|| {
                        format!(
                            "{} line {}: not an exported audit record",
                            f.display(),
                            i + 1
                        )
                    })?);
                }
                verify_chain(rows, &key)?
            } else {
                let store = open_store(&data)?;
                // Read before the rows: the server writes it after the checkpoint's commit,
                // so every row it names is already in the log we then read.
                let head = store.read_head()?;
                let mut rows: Vec<ChainRow> = Vec::new();
                for r in all_rows(store.as_ref()) {
                    rows.push(ChainRow::from(&r?));
                }
                let report = verify_chain(rows, &key)?;
                if let Some(head) = head {
                    check_head(store.as_ref(), &head, report.last_seq)?;
                }
                report
            };
            if report.rows == 0 {
                writeln!(out, "audit log is empty")?;
            } else {
                writeln!(
                    out,
                    "audit chain OK: {} records ({} to {}), {} signed checkpoints, last checkpoint at {}, {} records after it",
                    report.rows,
                    report.first_seq,
                    report.last_seq,
                    report.checkpoints,
                    report
                        .last_checkpoint
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "none".into()),
                    report.unsigned_tail
                )?;
            }
        }
        AuditCommand::Tail { data, lines, json } => {
            let store = open_store(&data)?;
            let last = store.last()?.map(|r| r.seq).unwrap_or(0);
            let rows = store.query(&AuditFilter {
                after_seq: Some((last - lines as i64).max(0)),
                ..Default::default()
            })?;
            for r in &rows {
                print_row(&mut out, r, json)?;
            }
        }
        AuditCommand::Query { data, filter, json } => {
            let store = open_store(&data)?;
            let rows = store.query(&AuditFilter {
                since_ms: filter.since.as_deref().map(parse_since).transpose()?,
                principal: filter.principal,
                operation: filter.op,
                result: filter.result,
                limit: Some(filter.limit),
                ..Default::default()
            })?;
            for r in &rows {
                print_row(&mut out, r, json)?;
            }
        }
        AuditCommand::Export {
            data,
            format,
            output,
            since,
        } => {
            if format != "jsonl" {
                bail!("--format {format} is not supported: use jsonl");
            }
            let since = since.as_deref().map(parse_since).transpose()?;
            let store = open_store(&data)?;
            let mut sink: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(out),
            };
            let mut n = 0u64;
            for r in all_rows(store.as_ref()) {
                let r = r?;
                if since.is_some_and(|s| r.time_ms < s) {
                    continue;
                }
                writeln!(sink, "{}", export_line(&r))?;
                n += 1;
            }
            sink.flush()?;
            if let Some(p) = output {
                eprintln!("exported {n} records to {}", p.display());
            }
        }
        AuditCommand::Checkpoint { .. } | AuditCommand::Prune { .. } => {
            bail!("checkpoint and prune run against the server")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T13:57:30.123Z").unwrap(),
            1_795_442_250_123
        );
        assert_eq!(parse_rfc3339_ms("2000-02-29").unwrap(), 951_782_400_000);
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }

    #[test]
    fn older_than_days() {
        assert_eq!(parse_days("90d").unwrap(), 90);
        assert_eq!(parse_days("48h").unwrap(), 2);
        for bad in ["0d", "90", "1.5d", "12h", "x"] {
            assert!(parse_days(bad).is_err(), "{bad}");
        }
    }
}
