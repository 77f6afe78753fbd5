//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{
    AccessPolicyRecord, KeyRecord, PrincipalRecord, RoleAssignmentRecord, RoleDefinitionRecord,
    Store, StoreError, StoreResult, VaultRecord, VersionRecord,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vaults (
    name TEXT PRIMARY KEY,
    retention_days INTEGER NOT NULL,
    purge_protection INTEGER NOT NULL,
    rbac_authorization INTEGER NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    vault TEXT NOT NULL,
    name_lc TEXT NOT NULL,
    name TEXT NOT NULL,
    deleted_date INTEGER,
    scheduled_purge INTEGER,
    rotation_policy TEXT,
    PRIMARY KEY (vault, name_lc)
);
CREATE TABLE IF NOT EXISTS key_versions (
    vault TEXT NOT NULL,
    name_lc TEXT NOT NULL,
    version TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created INTEGER NOT NULL,
    props TEXT NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (vault, name_lc, version),
    UNIQUE (vault, name_lc, seq)
);
CREATE TABLE IF NOT EXISTS principals (
    object_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    secret_hash BLOB NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS role_definitions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    data_actions TEXT NOT NULL,
    not_data_actions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS role_assignments (
    id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    scope TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (vault, scope, principal_id, role_id)
);
CREATE TABLE IF NOT EXISTS access_policies (
    vault TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    key_permissions TEXT NOT NULL,
    PRIMARY KEY (vault, principal_id)
);
"#;

/// SQLite store. One connection behind a mutex: SQLite serialises writers anyway, and the hot
/// read path is served from the vault's in-memory cache.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies the schema.
    pub fn open(path: &Path) -> StoreResult<Self> {
        // Keys are sealed, but principals' secret hashes and the sealed signing key are here:
        // the file and its WAL companions are private (0600) whatever the umask.
        let private = |e: std::io::Error| {
            StoreError::Database(format!("cannot make {} private: {e}", path.display()))
        };
        crate::create_private_db(path).map_err(private)?;
        let store = Self::init(Connection::open(path)?)?;
        crate::restrict_db_files(path).map_err(private)?;
        Ok(store)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL keeps readers and the writer apart; FULL fsyncs the WAL at every commit, so a
        // returned call is durable.
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Database("connection lock poisoned".into()))?;
        f(&mut conn)
    }
}

fn vault_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VaultRecord> {
    Ok(VaultRecord {
        name: r.get(0)?,
        retention_days: r.get(1)?,
        purge_protection: r.get(2)?,
        rbac_authorization: r.get(3)?,
        created: r.get(4)?,
        updated: r.get(5)?,
    })
}

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let deleted_date: Option<i64> = r.get(2)?;
    let scheduled: Option<i64> = r.get(3)?;
    Ok(KeyRecord {
        vault: r.get(0)?,
        name: r.get(1)?,
        deleted: deleted_date.zip(scheduled),
        rotation_policy: r.get(4)?,
    })
}

fn version_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRecord> {
    Ok(VersionRecord {
        version: r.get(0)?,
        seq: r.get(1)?,
        created: r.get(2)?,
        props: r.get(3)?,
        sealed: r.get(4)?,
    })
}

fn principal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PrincipalRecord> {
    Ok(PrincipalRecord {
        object_id: r.get(0)?,
        client_id: r.get(1)?,
        display_name: r.get(2)?,
        secret_hash: r.get(3)?,
        created: r.get(4)?,
    })
}

fn assignment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoleAssignmentRecord> {
    Ok(RoleAssignmentRecord {
        id: r.get(0)?,
        vault: r.get(1)?,
        scope: r.get(2)?,
        principal_id: r.get(3)?,
        role_id: r.get(4)?,
        created: r.get(5)?,
    })
}

/// Maps a uniqueness violation to `Conflict`.
fn conflict_on_unique(e: rusqlite::Error, what: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what.to_string())
        }
        e => e.into(),
    }
}

const KEY_COLS: &str = "vault, name, deleted_date, scheduled_purge, rotation_policy";
const VERSION_COLS: &str = "version, seq, created, props, sealed";

fn upsert_key(tx: &rusqlite::Transaction<'_>, key: &KeyRecord) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO keys (vault, name_lc, name, deleted_date, scheduled_purge, rotation_policy)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (vault, name_lc) DO UPDATE SET deleted_date = excluded.deleted_date,
           scheduled_purge = excluded.scheduled_purge, rotation_policy = excluded.rotation_policy",
        params![
            key.vault,
            key.name.to_lowercase(),
            key.name,
            key.deleted.map(|d| d.0),
            key.deleted.map(|d| d.1),
            key.rotation_policy
        ],
    )?;
    Ok(())
}

impl Store for SqliteStore {
    fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    fn meta_put_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO NOTHING",
                params![key, value],
            )?;
            let stored: Vec<u8> =
                tx.query_row("SELECT v FROM meta WHERE k = ?1", [key], |r| r.get(0))?;
            tx.commit()?;
            Ok(stored)
        })
    }

    fn vault_create(&self, v: &VaultRecord) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO vaults (name, retention_days, purge_protection, rbac_authorization, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                params![v.name, v.retention_days, v.purge_protection, v.rbac_authorization, v.created, v.updated],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("vault {}", v.name)));
            }
            Ok(())
        })
    }

    fn vault_get(&self, name: &str) -> StoreResult<Option<VaultRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT name, retention_days, purge_protection, rbac_authorization, created, updated
                 FROM vaults WHERE name = ?1",
                [name.to_lowercase()],
                vault_from_row,
            )
            .optional()?)
        })
    }

    fn vault_list(&self) -> StoreResult<Vec<VaultRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT name, retention_days, purge_protection, rbac_authorization, created, updated
                 FROM vaults ORDER BY name",
            )?;
            let rows = st.query_map([], vault_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn vault_update(&self, v: &VaultRecord) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE vaults SET retention_days = ?2, purge_protection = ?3, rbac_authorization = ?4,
                 updated = ?5 WHERE name = ?1",
                params![v.name, v.retention_days, v.purge_protection, v.rbac_authorization, v.updated],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("vault {}", v.name)));
            }
            Ok(())
        })
    }

    fn key_get(&self, vault: &str, name: &str) -> StoreResult<Option<KeyRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLS} FROM keys WHERE vault = ?1 AND name_lc = ?2"),
                params![vault, name.to_lowercase()],
                key_from_row,
            )
            .optional()?)
        })
    }

    fn key_list(
        &self,
        vault: &str,
        deleted: bool,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        self.with(|c| {
            let cond = if deleted {
                "deleted_date IS NOT NULL"
            } else {
                "deleted_date IS NULL"
            };
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE vault = ?1 AND {cond} AND name_lc > ?2
                 ORDER BY name_lc LIMIT ?3"
            ))?;
            let after = after.map(str::to_lowercase).unwrap_or_default();
            let rows = st.query_map(params![vault, after, limit as i64], key_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn key_update(&self, key: &KeyRecord) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE keys SET deleted_date = ?3, scheduled_purge = ?4, rotation_policy = ?5
                 WHERE vault = ?1 AND name_lc = ?2",
                params![
                    key.vault,
                    key.name.to_lowercase(),
                    key.deleted.map(|d| d.0),
                    key.deleted.map(|d| d.1),
                    key.rotation_policy
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("key {}", key.name)));
            }
            Ok(())
        })
    }

    fn key_purge(&self, vault: &str, name: &str) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let lc = name.to_lowercase();
            tx.execute(
                "DELETE FROM key_versions WHERE vault = ?1 AND name_lc = ?2",
                params![vault, lc],
            )?;
            let n = tx.execute(
                "DELETE FROM keys WHERE vault = ?1 AND name_lc = ?2",
                params![vault, lc],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("key {name}")));
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn key_purge_if_due(&self, vault: &str, name: &str, now: i64) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let lc = name.to_lowercase();
            let n = tx.execute(
                "DELETE FROM keys WHERE vault = ?1 AND name_lc = ?2
                   AND deleted_date IS NOT NULL AND scheduled_purge IS NOT NULL
                   AND scheduled_purge <= ?3",
                params![vault, lc, now],
            )?;
            if n == 0 {
                // Recovered, purged or rescheduled since it was listed: leave it alone.
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM key_versions WHERE vault = ?1 AND name_lc = ?2",
                params![vault, lc],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn keys_due_for_purge(&self, now: i64) -> StoreResult<Vec<KeyRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLS} FROM keys WHERE scheduled_purge IS NOT NULL AND scheduled_purge <= ?1"
            ))?;
            let rows = st.query_map([now], key_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn version_add(&self, key: &KeyRecord, v: &VersionRecord) -> StoreResult<i64> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            upsert_key(&tx, key)?;
            let lc = key.name.to_lowercase();
            let seq: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM key_versions WHERE vault = ?1 AND name_lc = ?2",
                params![key.vault, lc],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO key_versions (vault, name_lc, version, seq, created, props, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key.vault, lc, v.version, seq, v.created, v.props, v.sealed],
            )?;
            tx.commit()?;
            Ok(seq)
        })
    }

    fn version_get(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> StoreResult<Option<VersionRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {VERSION_COLS} FROM key_versions
                     WHERE vault = ?1 AND name_lc = ?2 AND version = ?3"
                ),
                params![vault, name.to_lowercase(), version.to_lowercase()],
                version_from_row,
            )
            .optional()?)
        })
    }

    fn version_latest(&self, vault: &str, name: &str) -> StoreResult<Option<VersionRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {VERSION_COLS} FROM key_versions
                     WHERE vault = ?1 AND name_lc = ?2 ORDER BY seq DESC LIMIT 1"
                ),
                params![vault, name.to_lowercase()],
                version_from_row,
            )
            .optional()?)
        })
    }

    fn version_list(
        &self,
        vault: &str,
        name: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<VersionRecord>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {VERSION_COLS} FROM key_versions
                 WHERE vault = ?1 AND name_lc = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4"
            ))?;
            let rows = st.query_map(
                params![vault, name.to_lowercase(), after_seq, limit as i64],
                version_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn version_update_props(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        props: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE key_versions SET props = ?4 WHERE vault = ?1 AND name_lc = ?2 AND version = ?3",
                params![vault, name.to_lowercase(), version, props],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("key {name}/{version}")));
            }
            Ok(())
        })
    }

    fn key_restore(&self, key: &KeyRecord, versions: &[VersionRecord]) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let lc = key.name.to_lowercase();
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM keys WHERE vault = ?1 AND name_lc = ?2",
                    params![key.vault, lc],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!("key {}", key.name)));
            }
            upsert_key(&tx, key)?;
            for v in versions {
                tx.execute(
                    "INSERT INTO key_versions (vault, name_lc, version, seq, created, props, sealed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![key.vault, lc, v.version, v.seq, v.created, v.props, v.sealed],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn principal_create(&self, p: &PrincipalRecord) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO principals (object_id, client_id, display_name, secret_hash, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    p.object_id,
                    p.client_id,
                    p.display_name,
                    p.secret_hash,
                    p.created
                ],
            )
            .map_err(|e| conflict_on_unique(e, &format!("principal {}", p.display_name)))?;
            Ok(())
        })
    }

    fn principal_find(&self, id_or_name: &str) -> StoreResult<Option<PrincipalRecord>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT object_id, client_id, display_name, secret_hash, created FROM principals
                 WHERE object_id = lower(?1) OR client_id = lower(?1) OR display_name = ?1",
                [id_or_name],
                principal_from_row,
            )
            .optional()?)
        })
    }

    fn principal_list(&self) -> StoreResult<Vec<PrincipalRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT object_id, client_id, display_name, secret_hash, created FROM principals
                 ORDER BY display_name",
            )?;
            let rows = st.query_map([], principal_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn principal_set_secret(&self, object_id: &str, secret_hash: &[u8]) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE principals SET secret_hash = ?2 WHERE object_id = ?1",
                params![object_id, secret_hash],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("principal {object_id}")));
            }
            Ok(())
        })
    }

    fn principal_delete(&self, object_id: &str) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM role_assignments WHERE principal_id = ?1",
                [object_id],
            )?;
            tx.execute(
                "DELETE FROM access_policies WHERE principal_id = ?1",
                [object_id],
            )?;
            let n = tx.execute("DELETE FROM principals WHERE object_id = ?1", [object_id])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("principal {object_id}")));
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn role_definition_create(&self, r: &RoleDefinitionRecord) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO role_definitions (id, name, data_actions, not_data_actions)
                 VALUES (?1, ?2, ?3, ?4)",
                params![r.id, r.name, r.data_actions, r.not_data_actions],
            )
            .map_err(|e| conflict_on_unique(e, &format!("role {}", r.name)))?;
            Ok(())
        })
    }

    fn role_definition_list(&self) -> StoreResult<Vec<RoleDefinitionRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, name, data_actions, not_data_actions FROM role_definitions ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RoleDefinitionRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    data_actions: r.get(2)?,
                    not_data_actions: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn role_definition_delete(&self, id: &str) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM role_assignments WHERE role_id = ?1", [id])?;
            let n = tx.execute("DELETE FROM role_definitions WHERE id = ?1", [id])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("role {id}")));
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn assignment_create(&self, a: &RoleAssignmentRecord) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO role_assignments (id, vault, scope, principal_id, role_id, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.id, a.vault, a.scope, a.principal_id, a.role_id, a.created],
            )
            .map_err(|e| conflict_on_unique(e, "role assignment"))?;
            Ok(())
        })
    }

    fn assignment_list(
        &self,
        vault: Option<&str>,
        principal_id: Option<&str>,
    ) -> StoreResult<Vec<RoleAssignmentRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, vault, scope, principal_id, role_id, created FROM role_assignments
                 WHERE (?1 IS NULL OR vault = ?1) AND (?2 IS NULL OR principal_id = ?2)
                 ORDER BY vault, scope, created",
            )?;
            let rows = st.query_map(params![vault, principal_id], assignment_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn assignment_delete(&self, id: &str) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute("DELETE FROM role_assignments WHERE id = ?1", [id])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("role assignment {id}")));
            }
            Ok(())
        })
    }

    fn access_policy_set(&self, p: &AccessPolicyRecord) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO access_policies (vault, principal_id, key_permissions) VALUES (?1, ?2, ?3)
                 ON CONFLICT (vault, principal_id) DO UPDATE SET key_permissions = excluded.key_permissions",
                params![p.vault, p.principal_id, p.key_permissions],
            )?;
            Ok(())
        })
    }

    fn access_policy_list(&self, vault: &str) -> StoreResult<Vec<AccessPolicyRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT vault, principal_id, key_permissions FROM access_policies WHERE vault = ?1
                 ORDER BY principal_id",
            )?;
            let rows = st.query_map([vault], |r| {
                Ok(AccessPolicyRecord {
                    vault: r.get(0)?,
                    principal_id: r.get(1)?,
                    key_permissions: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn access_policy_delete(&self, vault: &str, principal_id: &str) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "DELETE FROM access_policies WHERE vault = ?1 AND principal_id = ?2",
                params![vault, principal_id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "access policy of {principal_id}"
                )));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> KeyRecord {
        KeyRecord {
            vault: "v".into(),
            name: name.into(),
            deleted: None,
            rotation_policy: None,
        }
    }

    fn version(id: &str) -> VersionRecord {
        VersionRecord {
            version: id.into(),
            seq: 0,
            created: 1,
            props: "{}".into(),
            sealed: vec![1, 2, 3],
        }
    }

    #[test]
    fn versions_get_increasing_seq_and_latest_is_last() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert_eq!(s.version_add(&key("K1"), &version("a")).unwrap(), 1);
        assert_eq!(s.version_add(&key("k1"), &version("b")).unwrap(), 2);
        assert_eq!(s.version_latest("v", "K1").unwrap().unwrap().version, "b");
        assert_eq!(s.version_list("v", "k1", 1, 10).unwrap().len(), 1);
        // the display name is the first one used
        assert_eq!(s.key_get("v", "k1").unwrap().unwrap().name, "K1");
    }

    #[test]
    fn restore_conflicts_with_existing_name_and_purge_removes_versions() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.version_add(&key("k"), &version("a")).unwrap();
        let err = s.key_restore(&key("K"), &[version("x")]).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)));
        s.key_purge("v", "k").unwrap();
        assert!(s.version_get("v", "k", "a").unwrap().is_none());
        s.key_restore(&key("k"), &[version("x")]).unwrap();
        assert!(s.version_get("v", "k", "x").unwrap().is_some());
    }

    #[test]
    fn paging_by_name_and_deleted_filter() {
        let s = SqliteStore::open_in_memory().unwrap();
        for n in ["c", "a", "b"] {
            s.version_add(&key(n), &version(n)).unwrap();
        }
        let mut b = s.key_get("v", "b").unwrap().unwrap();
        b.deleted = Some((10, 20));
        s.key_update(&b).unwrap();
        let live: Vec<_> = s.key_list("v", false, None, 10).unwrap();
        assert_eq!(
            live.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(s.key_list("v", false, Some("a"), 10).unwrap().len(), 1);
        assert_eq!(s.key_list("v", true, None, 10).unwrap()[0].name, "b");
        assert_eq!(s.keys_due_for_purge(20).unwrap().len(), 1);
        assert_eq!(s.keys_due_for_purge(19).unwrap().len(), 0);
    }

    #[test]
    fn a_conditional_purge_spares_a_key_that_is_no_longer_due() {
        let s = SqliteStore::open_in_memory().unwrap();
        for n in ["gone", "back", "later"] {
            s.version_add(&key(n), &version(n)).unwrap();
            let mut k = s.key_get("v", n).unwrap().unwrap();
            k.deleted = Some((10, if n == "later" { 30 } else { 20 }));
            s.key_update(&k).unwrap();
        }
        // Listed as due, then recovered before the purge runs.
        assert_eq!(s.keys_due_for_purge(20).unwrap().len(), 2);
        let mut back = s.key_get("v", "back").unwrap().unwrap();
        back.deleted = None;
        s.key_update(&back).unwrap();
        assert!(!s.key_purge_if_due("v", "back", 20).unwrap());
        assert!(s.version_get("v", "back", "back").unwrap().is_some());
        // Not due yet, and absent: nothing happens.
        assert!(!s.key_purge_if_due("v", "later", 20).unwrap());
        assert!(s.key_get("v", "later").unwrap().is_some());
        assert!(!s.key_purge_if_due("v", "nosuch", 20).unwrap());
        // Due: the row and its versions go.
        assert!(s.key_purge_if_due("v", "GONE", 20).unwrap());
        assert!(s.key_get("v", "gone").unwrap().is_none());
        assert!(s.version_get("v", "gone", "gone").unwrap().is_none());
    }

    #[test]
    fn the_database_files_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        // A file left world-readable (an earlier version, or made by hand) is tightened too.
        std::fs::write(dir.path().join("old.sqlite"), b"").unwrap();
        std::fs::set_permissions(
            dir.path().join("old.sqlite"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let s = SqliteStore::open(&path).unwrap();
        s.version_add(&key("k"), &version("a")).unwrap();
        let old = SqliteStore::open(&dir.path().join("old.sqlite")).unwrap();
        old.meta_put_if_absent("m", b"1").unwrap();
        for name in [
            "db.sqlite",
            "db.sqlite-wal",
            "db.sqlite-shm",
            "old.sqlite",
            "old.sqlite-wal",
            "old.sqlite-shm",
        ] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }

    #[test]
    fn vault_names_are_unique() {
        let s = SqliteStore::open_in_memory().unwrap();
        let v = VaultRecord {
            name: "default".into(),
            retention_days: 90,
            purge_protection: false,
            rbac_authorization: true,
            created: 1,
            updated: 1,
        };
        s.vault_create(&v).unwrap();
        assert!(matches!(s.vault_create(&v), Err(StoreError::Conflict(_))));
        assert_eq!(s.vault_get("DEFAULT").unwrap().unwrap(), v);
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.version_add(&key("k"), &version("a")).unwrap();
            s.meta_put_if_absent("m", b"1").unwrap();
            assert_eq!(s.meta_put_if_absent("m", b"2").unwrap(), b"1");
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.version_get("v", "k", "a").unwrap().is_some());
        assert_eq!(s.meta_get("m").unwrap().unwrap(), b"1");
    }

    #[test]
    fn principals_assignments_and_policies() {
        let s = SqliteStore::open_in_memory().unwrap();
        let p = PrincipalRecord {
            object_id: "oid1".into(),
            client_id: "cid1".into(),
            display_name: "svc-a".into(),
            secret_hash: vec![1],
            created: 1,
        };
        s.principal_create(&p).unwrap();
        let mut dup = p.clone();
        dup.object_id = "oid2".into();
        dup.client_id = "cid2".into();
        assert!(matches!(
            s.principal_create(&dup),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.principal_find("cid1").unwrap().unwrap(), p);
        assert_eq!(s.principal_find("SVC-A").unwrap().unwrap(), p);
        let a = RoleAssignmentRecord {
            id: "a1".into(),
            vault: "v".into(),
            scope: "/keys/k".into(),
            principal_id: "oid1".into(),
            role_id: "r".into(),
            created: 1,
        };
        s.assignment_create(&a).unwrap();
        let mut again = a.clone();
        again.id = "a2".into();
        assert!(matches!(
            s.assignment_create(&again),
            Err(StoreError::Conflict(_))
        ));
        s.access_policy_set(&AccessPolicyRecord {
            vault: "v".into(),
            principal_id: "oid1".into(),
            key_permissions: "[\"get\"]".into(),
        })
        .unwrap();
        assert_eq!(s.assignment_list(Some("v"), None).unwrap(), vec![a]);
        s.principal_delete("oid1").unwrap();
        assert!(s.assignment_list(None, Some("oid1")).unwrap().is_empty());
        assert!(s.access_policy_list("v").unwrap().is_empty());
    }
}
