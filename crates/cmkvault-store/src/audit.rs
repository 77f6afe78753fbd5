//! The audit log's own SQLite file (`DIR/audit.db`): append-only rows written in batches, the
//! SQLite implementation of [`AuditSink`].
//!
//! It lives apart from the key database so the audit writer's group commits never wait on key
//! writes and vice versa. Rows are opaque here: the vault crate computes the hash chain and
//! signs checkpoints; this module only stores, reads and prunes them. The [`AuditHead`] is kept
//! in a file beside the database (`DIR/audit-head.json`), not in it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{AuditSink, StoreError, StoreResult};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    vault TEXT NOT NULL,
    principal TEXT NOT NULL,
    operation TEXT NOT NULL,
    result TEXT NOT NULL,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_checkpoints ON audit (seq) WHERE kind = 'checkpoint';
-- Queries walk the rows by seq (the rowid); these two indexes of early versions were never used
-- by a query plan and cost every insert, so they are dropped.
DROP INDEX IF EXISTS audit_time;
DROP INDEX IF EXISTS audit_principal;
"#;

/// One stored audit row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain, 1-based, gap-free (until pruning removes a prefix).
    pub seq: i64,
    /// Event time, Unix milliseconds.
    pub time_ms: i64,
    /// `event` or `checkpoint`.
    pub kind: String,
    /// Vault name (empty for server-wide events).
    pub vault: String,
    /// Caller object id (empty when unauthenticated).
    pub principal: String,
    /// operationName (`KeyUnwrap`, ...).
    pub operation: String,
    /// resultSignature (`OK`, `Forbidden`, ...).
    pub result: String,
    /// The full record as JSON.
    pub record: String,
    /// Hash of the previous row (hex), all zeros for the first.
    pub prev_hash: String,
    /// Hash of this row (hex).
    pub hash: String,
}

/// How far a `since` query looks back before the newest checkpoint it may start at, in
/// milliseconds (see [`AuditSink::query`]).
pub const SINCE_CLOCK_SLACK_MS: i64 = 10 * 60 * 1000;

/// Which rows a query returns.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only rows after this sequence number.
    pub after_seq: Option<i64>,
    /// Only rows at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only this caller object id.
    pub principal: Option<String>,
    /// Only this operationName (case-insensitive).
    pub operation: Option<String>,
    /// Only this resultSignature (case-insensitive).
    pub result: Option<String>,
    /// At most this many rows.
    pub limit: Option<usize>,
}

/// The newest signed checkpoint the writer made, kept beside the database in
/// `<name>-head.json` (`DIR/audit-head.json`). Rows cut from the end of the log, down to an
/// earlier checkpoint, still form a valid chain; this file is how `audit verify` notices.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditHead {
    /// The checkpoint row's sequence number.
    pub seq: i64,
    /// The checkpoint row's hash.
    pub hash: String,
}

/// The audit database, an [`AuditSink`] (every read and write goes through that trait).
pub struct SqliteAuditStore {
    /// `None` once [`AuditSink::close`] ran.
    conn: Mutex<Option<Connection>>,
    head_path: PathBuf,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        time_ms: r.get(1)?,
        kind: r.get(2)?,
        vault: r.get(3)?,
        principal: r.get(4)?,
        operation: r.get(5)?,
        result: r.get(6)?,
        record: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

const COLS: &str =
    "seq, time_ms, kind, vault, principal, operation, result, record, prev_hash, hash";

impl SqliteAuditStore {
    /// Opens (creating) the audit database; writes wait at most `busy_timeout` for a lock
    /// before failing.
    /// The file and its `-wal`/`-shm` companions are private (mode 0600) whatever the umask.
    pub fn open(path: &Path, busy_timeout: Duration) -> StoreResult<Self> {
        let private = |e: std::io::Error| {
            StoreError::Database(format!("cannot make {} private: {e}", path.display()))
        };
        crate::create_private_db(path).map_err(private)?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=FULL;")?;
        conn.execute_batch(SCHEMA)?;
        crate::restrict_db_files(path).map_err(private)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
        Ok(SqliteAuditStore {
            conn: Mutex::new(Some(conn)),
            head_path: path.with_file_name(format!("{stem}-head.json")),
        })
    }

    /// Where [`AuditHead`] is kept.
    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Database("audit connection lock poisoned".into()))?;
        match conn.as_mut() {
            Some(c) => f(c),
            None => Err(StoreError::Database("the audit database is closed".into())),
        }
    }
}

impl AuditSink for SqliteAuditStore {
    /// Records the newest checkpoint (after its row is committed), atomically.
    fn write_head(&self, head: &AuditHead) -> StoreResult<()> {
        let text = serde_json::to_vec(head).map_err(|e| StoreError::Database(e.to_string()))?;
        crate::write_file_atomic(&self.head_path, &text, 0o600).map_err(|e| {
            StoreError::Database(format!("cannot write {}: {e}", self.head_path.display()))
        })
    }

    /// The newest checkpoint recorded by [`AuditSink::write_head`], if any.
    fn read_head(&self) -> StoreResult<Option<AuditHead>> {
        let text = match std::fs::read(&self.head_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Database(format!(
                    "cannot read {}: {e}",
                    self.head_path.display()
                )))
            }
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            StoreError::Database(format!("{} is not valid: {e}", self.head_path.display()))
        })
    }

    /// The row with this sequence number.
    fn get(&self, seq: i64) -> StoreResult<Option<AuditRow>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {COLS} FROM audit WHERE seq = ?1"),
                [seq],
                row,
            )
            .optional()?)
        })
    }

    /// Closes the connection now (SQLite folds the WAL into the database and removes the
    /// `-wal`/`-shm` files if this was the last connection), so nothing touches the directory
    /// afterwards. Later calls fail with "closed". Closing twice is a no-op.
    fn close(&self) -> StoreResult<()> {
        let taken = self
            .conn
            .lock()
            .map_err(|_| StoreError::Database("audit connection lock poisoned".into()))?
            .take();
        match taken {
            Some(c) => c.close().map_err(|(_, e)| e.into()),
            None => Ok(()),
        }
    }

    /// Appends rows in one transaction (one fsync); all or nothing.
    fn append(&self, rows: &[AuditRow]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(&format!(
                    "INSERT INTO audit ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ))?;
                for r in rows {
                    st.execute(params![
                        r.seq,
                        r.time_ms,
                        r.kind,
                        r.vault,
                        r.principal,
                        r.operation,
                        r.result,
                        r.record,
                        r.prev_hash,
                        r.hash
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The last row (the chain head).
    fn last(&self) -> StoreResult<Option<AuditRow>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {COLS} FROM audit ORDER BY seq DESC LIMIT 1"),
                [],
                row,
            )
            .optional()?)
        })
    }

    /// The last checkpoint row.
    fn last_checkpoint(&self) -> StoreResult<Option<AuditRow>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {COLS} FROM audit WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1"
                ),
                [],
                row,
            )
            .optional()?)
        })
    }

    /// The newest checkpoint written at or before `time_ms` (where pruning may start the log).
    fn last_checkpoint_at_or_before(&self, time_ms: i64) -> StoreResult<Option<AuditRow>> {
        // `+time_ms` keeps SQLite on the small checkpoint index, newest first, instead of
        // range-scanning the time index over every older row.
        self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {COLS} FROM audit WHERE kind = 'checkpoint' AND +time_ms <= ?1
                     ORDER BY seq DESC LIMIT 1"
                ),
                [time_ms],
                row,
            )
            .optional()?)
        })
    }

    /// Rows matching a filter, in sequence order.
    ///
    /// With `since_ms`, the scan starts at the newest checkpoint written more than
    /// [`SINCE_CLOCK_SLACK_MS`] before it instead of at the first row: a row is written after
    /// its event time and before any later checkpoint, whose time is taken when it is written,
    /// so no earlier row can match. The slack covers the wall clock stepping back.
    fn query(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        let mut after_seq = f.after_seq.unwrap_or(0);
        if let Some(since) = f.since_ms {
            if let Some(cp) =
                self.last_checkpoint_at_or_before(since.saturating_sub(SINCE_CLOCK_SLACK_MS))?
            {
                after_seq = after_seq.max(cp.seq - 1);
            }
        }
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLS} FROM audit
                 WHERE seq > ?1 AND time_ms >= ?2
                   AND (?3 IS NULL OR principal = lower(?3))
                   AND (?4 IS NULL OR lower(operation) = lower(?4))
                   AND (?5 IS NULL OR lower(result) = lower(?5))
                 ORDER BY seq LIMIT ?6"
            ))?;
            let limit = f.limit.map(|l| l as i64).unwrap_or(i64::MAX);
            let rows = st.query_map(
                params![
                    after_seq,
                    f.since_ms.unwrap_or(i64::MIN),
                    f.principal,
                    f.operation,
                    f.result,
                    limit
                ],
                row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Deletes every row with `seq <= through`; returns how many went.
    fn prune_through(&self, through: i64) -> StoreResult<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM audit WHERE seq <= ?1", [through])?))
    }

    /// The head file's path (`<name>-head.json` beside the database).
    fn head_location(&self) -> String {
        self.head_path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: i64, op: &str) -> AuditRow {
        AuditRow {
            seq,
            time_ms: seq * 1000,
            kind: "event".into(),
            vault: "v".into(),
            principal: "p1".into(),
            operation: op.into(),
            result: "OK".into(),
            record: "{}".into(),
            prev_hash: "0".into(),
            hash: format!("h{seq}"),
        }
    }

    /// SQLite's plan for `SELECT … FROM audit <rest>`, its steps joined by "; ".
    fn query_plan(s: &SqliteAuditStore, rest: &str) -> String {
        s.with(|c| {
            let mut st = c.prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {COLS} FROM audit {rest}"
            ))?;
            let details = st
                .query_map([], |r| r.get::<_, String>(3))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(details.join("; "))
        })
        .unwrap()
    }

    #[test]
    fn the_sqlite_sink_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteAuditStore::open(&dir.path().join("a.db"), Duration::from_secs(1)).unwrap();
        crate::conformance::audit_sink(&s).unwrap();
        // The head is a file beside the database, which the closed sink left alone.
        assert_eq!(
            s.head_location(),
            dir.path().join("a-head.json").display().to_string()
        );
        assert!(dir.path().join("a-head.json").exists());
        assert!(!dir.path().join("a.db-wal").exists());
    }

    /// The SQLite sink with one rule broken: pruning takes one row too many.
    struct PrunesTooMuch(SqliteAuditStore);

    impl AuditSink for PrunesTooMuch {
        fn append(&self, rows: &[AuditRow]) -> StoreResult<()> {
            self.0.append(rows)
        }
        fn get(&self, seq: i64) -> StoreResult<Option<AuditRow>> {
            self.0.get(seq)
        }
        fn last(&self) -> StoreResult<Option<AuditRow>> {
            self.0.last()
        }
        fn last_checkpoint(&self) -> StoreResult<Option<AuditRow>> {
            self.0.last_checkpoint()
        }
        fn last_checkpoint_at_or_before(&self, time_ms: i64) -> StoreResult<Option<AuditRow>> {
            self.0.last_checkpoint_at_or_before(time_ms)
        }
        fn query(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
            self.0.query(filter)
        }
        fn prune_through(&self, through: i64) -> StoreResult<usize> {
            self.0.prune_through(through + 1)
        }
        fn write_head(&self, head: &AuditHead) -> StoreResult<()> {
            self.0.write_head(head)
        }
        fn read_head(&self) -> StoreResult<Option<AuditHead>> {
            self.0.read_head()
        }
        fn head_location(&self) -> String {
            self.0.head_location()
        }
        fn close(&self) -> StoreResult<()> {
            self.0.close()
        }
    }

    #[test]
    fn the_conformance_check_names_a_broken_rule() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteAuditStore::open(&dir.path().join("a.db"), Duration::from_secs(1)).unwrap();
        let err = crate::conformance::audit_sink(&PrunesTooMuch(s)).unwrap_err();
        assert_eq!(err, "prune_through(2) removed 3 rows, not 2");
    }

    #[test]
    fn append_query_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteAuditStore::open(&dir.path().join("a.db"), Duration::from_secs(1)).unwrap();
        s.append(&[r(1, "KeyGet"), r(2, "KeyUnwrap"), r(3, "KeyUnwrap")])
            .unwrap();
        // A duplicate sequence number fails the whole batch.
        assert!(s.append(&[r(4, "KeyGet"), r(3, "KeyGet")]).is_err());
        assert_eq!(s.last().unwrap().unwrap().seq, 3);
        let f = AuditFilter {
            operation: Some("keyunwrap".into()),
            ..Default::default()
        };
        assert_eq!(s.query(&f).unwrap().len(), 2);
        let f = AuditFilter {
            since_ms: Some(2500),
            ..Default::default()
        };
        assert_eq!(s.query(&f).unwrap().len(), 1);
        assert_eq!(s.prune_through(2).unwrap(), 2);
        assert_eq!(s.query(&AuditFilter::default()).unwrap()[0].seq, 3);
    }

    #[test]
    fn newest_checkpoint_before_a_time_uses_the_checkpoint_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteAuditStore::open(&dir.path().join("a.db"), Duration::from_secs(1)).unwrap();
        let rows: Vec<AuditRow> = (1..=50)
            .map(|seq| {
                let mut x = r(seq, "KeyGet");
                if seq % 10 == 0 {
                    x.kind = "checkpoint".into();
                    x.operation = "AuditCheckpoint".into();
                }
                x
            })
            .collect();
        s.append(&rows).unwrap();
        let at = |t: i64| s.last_checkpoint_at_or_before(t).unwrap().map(|x| x.seq);
        assert_eq!(at(9_999), None);
        assert_eq!(at(10_000), Some(10));
        assert_eq!(at(35_500), Some(30));
        assert_eq!(at(i64::MAX), Some(50));
        // Pruning runs this on every maintenance tick: it must not scan the whole log.
        let plan = query_plan(
            &s,
            "WHERE kind = 'checkpoint' AND +time_ms <= 1 ORDER BY seq DESC LIMIT 1",
        );
        assert!(plan.contains("audit_checkpoints"), "{plan}");
    }

    #[test]
    fn since_queries_start_at_a_checkpoint_older_than_the_slack() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteAuditStore::open(&dir.path().join("a.db"), Duration::from_secs(1)).unwrap();
        // One row a minute for 100 minutes, a checkpoint every 10 rows.
        let minute = 60_000;
        let rows: Vec<AuditRow> = (1..=100)
            .map(|seq| {
                let mut x = r(seq, "KeyGet");
                x.time_ms = seq * minute;
                if seq % 10 == 0 {
                    x.kind = "checkpoint".into();
                }
                x
            })
            .collect();
        s.append(&rows).unwrap();
        let since = |minutes: i64| -> Vec<i64> {
            let f = AuditFilter {
                since_ms: Some(minutes * minute),
                ..Default::default()
            };
            s.query(&f).unwrap().iter().map(|x| x.seq).collect()
        };
        for m in [0, 1, 35, 50, 71, 100, 101] {
            assert_eq!(since(m), (m.max(1)..=100).collect::<Vec<_>>(), "since {m}");
        }
        // A row that claims a later time than the checkpoint after it (impossible for the
        // writer) shows where the scan starts: before seq 60, the newest checkpoint at least
        // 10 minutes older than minute 75, it is not read.
        for seq in [55, 61] {
            s.with(|c| {
                let sql = "UPDATE audit SET time_ms = ?1 WHERE seq = ?2";
                Ok(c.execute(sql, [80 * minute, seq])?)
            })
            .unwrap();
        }
        assert_eq!(
            since(75),
            [61].into_iter().chain(75..=100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn only_the_checkpoint_index_is_kept_and_old_indexes_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        // A log made by an earlier version, with its two write-only indexes.
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,
                   kind TEXT NOT NULL, vault TEXT NOT NULL, principal TEXT NOT NULL,
                   operation TEXT NOT NULL, result TEXT NOT NULL, record TEXT NOT NULL,
                   prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
                 CREATE INDEX audit_time ON audit (time_ms);
                 CREATE INDEX audit_principal ON audit (principal, seq);",
            )
            .unwrap();
        }
        let s = SqliteAuditStore::open(&path, Duration::from_secs(1)).unwrap();
        s.append(&[r(1, "KeyGet")]).unwrap();
        let indexes: Vec<String> = s
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit'
                     ORDER BY name",
                )?;
                let names = st
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(names)
            })
            .unwrap();
        assert_eq!(indexes, ["audit_checkpoints"]);
        // Queries walk the rowid, with or without filters.
        let plan = query_plan(
            &s,
            "WHERE seq > 0 AND time_ms >= 5 AND principal = 'p1' ORDER BY seq LIMIT 5",
        );
        assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
        assert_eq!(s.query(&AuditFilter::default()).unwrap().len(), 1);
    }
}
