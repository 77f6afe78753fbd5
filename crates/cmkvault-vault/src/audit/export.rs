//! Export lines: one JSON object per record, the stored record plus its chain fields `seq`,
//! `prevHash` and `hash`, so an exported log verifies without the database.

use cmkvault_store::AuditRow;
use serde_json::{json, Value};

use super::ChainRow;

/// A record as one export line: the AuditEvent plus `seq`, `prevHash` and `hash`.
pub fn export_line(row: &AuditRow) -> String {
    let mut v: Value = serde_json::from_str(&row.record).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("seq".into(), json!(row.seq));
        m.insert("prevHash".into(), json!(row.prev_hash));
        m.insert("hash".into(), json!(row.hash));
    }
    v.to_string()
}

/// Parses an export line back into a chain row.
pub fn parse_export_line(line: &str) -> Option<ChainRow> {
    let mut v: Value = serde_json::from_str(line).ok()?;
    let m = v.as_object_mut()?;
    let seq = m.remove("seq")?.as_i64()?;
    let prev_hash = m.remove("prevHash")?.as_str()?.to_string();
    let hash = m.remove("hash")?.as_str()?.to_string();
    Some(ChainRow {
        seq,
        record: v.to_string(),
        prev_hash,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lines_round_trip() {
        let row = AuditRow {
            seq: 3,
            time_ms: 1,
            kind: "event".into(),
            vault: "v".into(),
            principal: String::new(),
            operation: "KeyGet".into(),
            result: "OK".into(),
            record: json!({"b": 1, "a": {"z": 2, "y": "x"}}).to_string(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let back = parse_export_line(&export_line(&row)).unwrap();
        assert_eq!(back.record, row.record);
        assert_eq!(
            (back.seq, back.prev_hash.as_str(), back.hash.as_str()),
            (3, "p", "h")
        );
    }
}
