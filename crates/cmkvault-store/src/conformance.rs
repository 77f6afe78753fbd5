//! Behaviour every [`AuditSink`] must have, as a check any backend's tests can run.
//!
//! [`audit_sink`] exercises append, reads, the head record, pruning and close on an empty sink
//! and names the first rule broken. The SQLite sink runs it in this crate's tests; a PostgreSQL
//! sink runs the same function on an empty schema.

use crate::{AuditFilter, AuditHead, AuditRow, AuditSink};

/// A row of the check's log: `seq` at `seq` seconds, checkpoints at 3 and 6.
fn row(seq: i64) -> AuditRow {
    let checkpoint = seq % 3 == 0;
    AuditRow {
        seq,
        time_ms: seq * 1000,
        kind: if checkpoint { "checkpoint" } else { "event" }.into(),
        vault: if checkpoint { "" } else { "team-a" }.into(),
        principal: if seq % 2 == 0 { "p-even" } else { "p-odd" }.into(),
        operation: if checkpoint {
            "AuditCheckpoint"
        } else {
            "KeyUnwrap"
        }
        .into(),
        result: if seq == 4 { "Forbidden" } else { "OK" }.into(),
        record: format!("{{\"n\":{seq},\"s\":\"\\u00e9 \\\"q\\\"\"}}"),
        prev_hash: format!("h{}", seq - 1),
        hash: format!("h{seq}"),
    }
}

/// Names a failed call.
fn e(what: &'static str) -> impl Fn(crate::StoreError) -> String {
    move |err| format!("{what} failed: {err}")
}

fn seqs(rows: &[AuditRow]) -> Vec<i64> {
    rows.iter().map(|r| r.seq).collect()
}

/// Runs the audit-sink rules against `sink`, which must be empty and is closed at the end.
/// Returns the first rule it breaks.
pub fn audit_sink(sink: &dyn AuditSink) -> Result<(), String> {
    macro_rules! check {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                return Err(format!($($msg)+));
            }
        };
    }
    let query = |f: AuditFilter| sink.query(&f).map(|r| seqs(&r)).map_err(e("query"));

    // Empty.
    check!(
        sink.last().map_err(e("last"))?.is_none(),
        "an empty sink has a last row"
    );
    check!(
        sink.last_checkpoint()
            .map_err(e("last_checkpoint"))?
            .is_none(),
        "an empty sink has a checkpoint"
    );
    check!(
        sink.read_head().map_err(e("read_head"))?.is_none(),
        "an empty sink has a head"
    );
    check!(
        query(AuditFilter::default())?.is_empty(),
        "an empty sink returns rows"
    );

    // Append in two batches; rows come back exactly as written.
    let rows: Vec<AuditRow> = (1..=7).map(row).collect();
    sink.append(&rows[..2]).map_err(e("append"))?;
    sink.append(&rows[2..]).map_err(e("append"))?;
    for r in &rows {
        let got = sink.get(r.seq).map_err(e("get"))?;
        check!(
            got.as_ref() == Some(r),
            "get({}) returned {got:?}, not {r:?}",
            r.seq
        );
    }
    check!(
        sink.get(8).map_err(e("get"))?.is_none(),
        "get(8) found a row never written"
    );
    check!(
        sink.last().map_err(e("last"))?.as_ref() == Some(&rows[6]),
        "last is not row 7"
    );

    // A batch with a sequence number that exists fails as a whole.
    check!(
        sink.append(&[row(8), row(7)]).is_err(),
        "a batch repeating seq 7 was accepted"
    );
    check!(
        sink.get(8).map_err(e("get"))?.is_none(),
        "a failed batch left row 8 behind"
    );
    check!(
        sink.last().map_err(e("last"))?.map(|r| r.seq) == Some(7),
        "last moved after a failed batch"
    );

    // Checkpoints.
    let cp = sink
        .last_checkpoint()
        .map_err(e("last_checkpoint"))?
        .map(|r| r.seq);
    check!(cp == Some(6), "last_checkpoint is {cp:?}, not 6");
    let at = |t: i64| {
        sink.last_checkpoint_at_or_before(t)
            .map(|r| r.map(|r| r.seq))
            .map_err(e("last_checkpoint_at_or_before"))
    };
    for (t, want) in [
        (2_999, None),
        (3_000, Some(3)),
        (5_999, Some(3)),
        (i64::MAX, Some(6)),
    ] {
        let got = at(t)?;
        check!(
            got == want,
            "last_checkpoint_at_or_before({t}) is {got:?}, not {want:?}"
        );
    }

    // Filters, in sequence order.
    let cases = [
        (AuditFilter::default(), vec![1, 2, 3, 4, 5, 6, 7]),
        (
            AuditFilter {
                after_seq: Some(5),
                ..Default::default()
            },
            vec![6, 7],
        ),
        (
            AuditFilter {
                since_ms: Some(4_500),
                ..Default::default()
            },
            vec![5, 6, 7],
        ),
        (
            AuditFilter {
                limit: Some(2),
                after_seq: Some(1),
                ..Default::default()
            },
            vec![2, 3],
        ),
        (
            AuditFilter {
                operation: Some("keyunwrap".into()),
                ..Default::default()
            },
            vec![1, 2, 4, 5, 7],
        ),
        (
            AuditFilter {
                result: Some("forbidden".into()),
                ..Default::default()
            },
            vec![4],
        ),
        (
            AuditFilter {
                principal: Some("P-EVEN".into()),
                ..Default::default()
            },
            vec![2, 4, 6],
        ),
        (
            AuditFilter {
                principal: Some("p-odd".into()),
                result: Some("OK".into()),
                since_ms: Some(2_000),
                ..Default::default()
            },
            vec![3, 5, 7],
        ),
    ];
    for (filter, want) in cases {
        let got = query(filter.clone())?;
        check!(
            got == want,
            "query({filter:?}) returned {got:?}, not {want:?}"
        );
    }

    // The head record: the latest write wins.
    for seq in [3, 6] {
        let head = AuditHead {
            seq,
            hash: format!("h{seq}"),
        };
        sink.write_head(&head).map_err(e("write_head"))?;
        let got = sink.read_head().map_err(e("read_head"))?;
        check!(
            got.as_ref() == Some(&head),
            "read_head returned {got:?}, not {head:?}"
        );
    }
    check!(!sink.head_location().is_empty(), "head_location is empty");

    // Pruning removes a prefix and nothing else.
    let removed = sink.prune_through(2).map_err(e("prune_through"))?;
    check!(
        removed == 2,
        "prune_through(2) removed {removed} rows, not 2"
    );
    check!(
        query(AuditFilter::default())? == vec![3, 4, 5, 6, 7],
        "pruning removed the wrong rows"
    );
    check!(
        sink.get(2).map_err(e("get"))?.is_none(),
        "row 2 survived pruning"
    );
    check!(
        at(5_999)? == Some(3),
        "the checkpoint the log now starts at is not found"
    );
    let removed = sink.prune_through(2).map_err(e("prune_through"))?;
    check!(removed == 0, "pruning again removed {removed} rows");
    check!(
        sink.last().map_err(e("last"))?.map(|r| r.seq) == Some(7),
        "pruning moved the head"
    );
    sink.append(&[row(8)]).map_err(e("append after pruning"))?;

    // Close: later calls fail, closing again does not.
    sink.close().map_err(e("close"))?;
    check!(sink.last().is_err(), "a closed sink still reads");
    check!(
        sink.append(&[row(9)]).is_err(),
        "a closed sink still writes"
    );
    sink.close().map_err(e("a second close"))?;
    Ok(())
}
