//! Persistence for cmkvault: the [`Store`] trait and its embedded SQLite backend, and the
//! [`AuditSink`] trait with its SQLite audit database.
//!
//! The store is deliberately dumb. It keeps vault settings, key rows (deleted state, rotation
//! policy) and key versions (a JSON document of public properties plus the sealed private part)
//! and knows nothing about what they mean; the vault crate owns every rule. Each method that
//! changes more than one row runs in one transaction, and a method returns only after its
//! transaction is durable (WAL with `synchronous=FULL`), so a caller may acknowledge on return.

#![forbid(unsafe_code)]

mod audit;
pub mod conformance;
mod files;
mod sqlite;

pub use audit::{AuditFilter, AuditHead, AuditRow, SqliteAuditStore, SINCE_CLOCK_SLACK_MS};
pub use files::{create_private_db, restrict_db_files, write_file_atomic};
pub use sqlite::SqliteStore;

/// Errors from a store backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row to create already exists (vault name, key name on restore).
    #[error("already exists: {0}")]
    Conflict(String),
    /// The row to change does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The database file could not be opened, read or written.
    #[error("database error: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// One vault (tenant): its name and soft-delete settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultRecord {
    /// Lower-case vault name, unique.
    pub name: String,
    /// Soft-delete retention in days (7..=90), fixed at creation.
    pub retention_days: u32,
    /// Purge protection; once on, never off.
    pub purge_protection: bool,
    /// `enableRbacAuthorization`: RBAC (true) or legacy access policies (false).
    pub rbac_authorization: bool,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Last update time, Unix seconds.
    pub updated: i64,
}

/// One key (all of its versions share this row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Vault name.
    pub vault: String,
    /// Key name as first created (lookups are case-insensitive).
    pub name: String,
    /// Set while the key is soft-deleted: (deletedDate, scheduledPurgeDate), Unix seconds.
    pub deleted: Option<(i64, i64)>,
    /// The rotation policy as a JSON document, if one was set.
    pub rotation_policy: Option<String>,
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    /// Version id: 32 lower-case hex characters.
    pub version: String,
    /// Creation order within the key; the highest is the latest version.
    pub seq: i64,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Public properties (attributes, tags, key_ops, public JWK) as a JSON document.
    pub props: String,
    /// The private key material sealed under the root key.
    pub sealed: Vec<u8>,
}

/// A principal: a service principal or managed identity that can get tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// Object id (GUID), the `oid` claim.
    pub object_id: String,
    /// Client (application) id (GUID), the `appid` claim and OAuth `client_id`.
    pub client_id: String,
    /// Display name, unique.
    pub display_name: String,
    /// Salted hash of the client secret (format owned by the vault crate).
    pub secret_hash: Vec<u8>,
    /// Creation time, Unix seconds.
    pub created: i64,
}

/// A custom role definition (built-in roles live in code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleDefinitionRecord {
    /// Role id (GUID).
    pub id: String,
    /// Role name, unique.
    pub name: String,
    /// dataActions as a JSON array of strings.
    pub data_actions: String,
    /// notDataActions as a JSON array of strings.
    pub not_data_actions: String,
}

/// A role assignment: a principal holds a role at a scope of a vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentRecord {
    /// Assignment id (GUID).
    pub id: String,
    /// Vault name.
    pub vault: String,
    /// `/` for the whole vault or `/keys/<name>` (lower case) for one key.
    pub scope: String,
    /// Principal object id.
    pub principal_id: String,
    /// Role definition id.
    pub role_id: String,
    /// Creation time.
    pub created: i64,
}

/// A legacy access policy: key permissions of one principal on one vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicyRecord {
    /// Vault name.
    pub vault: String,
    /// Principal object id.
    pub principal_id: String,
    /// Key permissions as a JSON array of strings (`get`, `wrapKey`, ...).
    pub key_permissions: String,
}

/// The persistence interface every backend implements.
///
/// Names of vaults and keys are matched case-insensitively. Methods are synchronous; async
/// callers run them on a blocking pool.
pub trait Store: Send + Sync {
    /// Reads a metadata value (root-key check, token-signing key, tenant id, ...).
    fn meta_get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a metadata value if it is absent; returns the value now stored.
    fn meta_put_if_absent(&self, key: &str, value: &[u8]) -> StoreResult<Vec<u8>>;

    /// Creates a vault; `Conflict` if the name is taken.
    fn vault_create(&self, vault: &VaultRecord) -> StoreResult<()>;
    /// Reads a vault.
    fn vault_get(&self, name: &str) -> StoreResult<Option<VaultRecord>>;
    /// Lists all vaults by name.
    fn vault_list(&self) -> StoreResult<Vec<VaultRecord>>;
    /// Replaces a vault's settings; `NotFound` if absent.
    fn vault_update(&self, vault: &VaultRecord) -> StoreResult<()>;

    /// Reads a key row.
    fn key_get(&self, vault: &str, name: &str) -> StoreResult<Option<KeyRecord>>;
    /// Lists key rows in name order after `after` (exclusive), live or deleted ones.
    fn key_list(
        &self,
        vault: &str,
        deleted: bool,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Replaces a key row's deleted state and rotation policy; `NotFound` if absent.
    fn key_update(&self, key: &KeyRecord) -> StoreResult<()>;
    /// Removes a key and all its versions for good.
    fn key_purge(&self, vault: &str, name: &str) -> StoreResult<()>;
    /// Removes a key and all its versions for good, but only if it is still soft-deleted with
    /// a scheduled purge date at or before `now` (checked in the deleting transaction); returns
    /// whether it was removed. Auto-purge uses this, so a key recovered after it was listed
    /// survives.
    fn key_purge_if_due(&self, vault: &str, name: &str, now: i64) -> StoreResult<bool>;
    /// Keys whose scheduled purge date is at or before `now`.
    fn keys_due_for_purge(&self, now: i64) -> StoreResult<Vec<KeyRecord>>;

    /// Adds a version, creating the key row if needed, in one transaction. The version's
    /// `seq` is assigned by the store (one more than the highest) and returned.
    fn version_add(&self, key: &KeyRecord, version: &VersionRecord) -> StoreResult<i64>;
    /// Reads one version.
    fn version_get(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> StoreResult<Option<VersionRecord>>;
    /// Reads the latest version.
    fn version_latest(&self, vault: &str, name: &str) -> StoreResult<Option<VersionRecord>>;
    /// Lists versions in creation order with `seq > after_seq`.
    fn version_list(
        &self,
        vault: &str,
        name: &str,
        after_seq: i64,
        limit: usize,
    ) -> StoreResult<Vec<VersionRecord>>;
    /// Replaces one version's public properties; `NotFound` if absent.
    fn version_update_props(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        props: &str,
    ) -> StoreResult<()>;
    /// Restores a whole key (row and versions, seq kept) in one transaction; `Conflict` if the
    /// name exists in any state.
    fn key_restore(&self, key: &KeyRecord, versions: &[VersionRecord]) -> StoreResult<()>;

    /// Creates a principal; `Conflict` if the display name or ids are taken.
    fn principal_create(&self, p: &PrincipalRecord) -> StoreResult<()>;
    /// Reads a principal by object id, client id or display name.
    fn principal_find(&self, id_or_name: &str) -> StoreResult<Option<PrincipalRecord>>;
    /// Lists principals by display name.
    fn principal_list(&self) -> StoreResult<Vec<PrincipalRecord>>;
    /// Replaces a principal's secret hash; `NotFound` if absent.
    fn principal_set_secret(&self, object_id: &str, secret_hash: &[u8]) -> StoreResult<()>;
    /// Deletes a principal with its role assignments and access policies; `NotFound` if absent.
    fn principal_delete(&self, object_id: &str) -> StoreResult<()>;

    /// Creates a custom role; `Conflict` if the name or id is taken.
    fn role_definition_create(&self, r: &RoleDefinitionRecord) -> StoreResult<()>;
    /// Lists custom roles.
    fn role_definition_list(&self) -> StoreResult<Vec<RoleDefinitionRecord>>;
    /// Deletes a custom role and its assignments; `NotFound` if absent.
    fn role_definition_delete(&self, id: &str) -> StoreResult<()>;

    /// Creates a role assignment; `Conflict` if the same (vault, scope, principal, role) exists.
    fn assignment_create(&self, a: &RoleAssignmentRecord) -> StoreResult<()>;
    /// Lists assignments, optionally of one vault and/or one principal.
    fn assignment_list(
        &self,
        vault: Option<&str>,
        principal_id: Option<&str>,
    ) -> StoreResult<Vec<RoleAssignmentRecord>>;
    /// Deletes an assignment by id; `NotFound` if absent.
    fn assignment_delete(&self, id: &str) -> StoreResult<()>;

    /// Sets (replaces) a principal's access policy on a vault.
    fn access_policy_set(&self, p: &AccessPolicyRecord) -> StoreResult<()>;
    /// Lists access policies of a vault.
    fn access_policy_list(&self, vault: &str) -> StoreResult<Vec<AccessPolicyRecord>>;
    /// Removes a principal's access policy on a vault; `NotFound` if absent.
    fn access_policy_delete(&self, vault: &str, principal_id: &str) -> StoreResult<()>;
}

/// Where the audit log's rows live: the persistence interface every audit backend implements
/// (SQLite's [`SqliteAuditStore`] now; a PostgreSQL store later).
///
/// The sink stores rows; it does not chain, sign or check them: the vault crate's audit writer
/// assigns `seq`, computes `prev_hash`/`hash`, signs checkpoints and calls
/// [`AuditSink::append`] from one thread. Rows are opaque apart from the columns queries filter
/// on. Methods are synchronous; async callers run them on a blocking pool.
///
/// The sink also keeps the [`AuditHead`], the newest checkpoint written, *outside* the rows (the
/// SQLite sink: `<name>-head.json` beside the database file), so a log cut back to an earlier
/// checkpoint, which is still a valid chain, is noticed by `audit verify`. An implementation
/// should keep it where deleting rows does not also rewrite it. [`conformance::audit_sink`]
/// checks an implementation's semantics.
pub trait AuditSink: Send + Sync {
    /// Appends rows (already chained, `seq` gap-free after the last row) in one durable
    /// transaction: all or nothing, durable when this returns. A `seq` that exists fails the
    /// whole batch.
    fn append(&self, rows: &[AuditRow]) -> StoreResult<()>;
    /// The row with this sequence number.
    fn get(&self, seq: i64) -> StoreResult<Option<AuditRow>>;
    /// The last row (the chain head).
    fn last(&self) -> StoreResult<Option<AuditRow>>;
    /// The last checkpoint row.
    fn last_checkpoint(&self) -> StoreResult<Option<AuditRow>>;
    /// The newest checkpoint written at or before `time_ms` (where pruning may start the log).
    fn last_checkpoint_at_or_before(&self, time_ms: i64) -> StoreResult<Option<AuditRow>>;
    /// Rows matching a filter, in sequence order. With `since_ms`, an implementation may skip
    /// rows before the newest checkpoint written [`SINCE_CLOCK_SLACK_MS`] before it (no earlier
    /// row can match), but must return every row with `time_ms >= since_ms` after it.
    fn query(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>>;
    /// Deletes every row with `seq <= through`; returns how many went.
    fn prune_through(&self, through: i64) -> StoreResult<usize>;
    /// Records the newest checkpoint, atomically (called after its row is committed).
    fn write_head(&self, head: &AuditHead) -> StoreResult<()>;
    /// The newest checkpoint recorded by [`AuditSink::write_head`], if any.
    fn read_head(&self) -> StoreResult<Option<AuditHead>>;
    /// Where the head is kept, for messages (the SQLite sink: the head file's path).
    fn head_location(&self) -> String;
    /// Releases the backend now (the SQLite sink closes its connection, so nothing touches the
    /// directory afterwards). Later calls fail; closing twice is a no-op.
    fn close(&self) -> StoreResult<()>;
}
