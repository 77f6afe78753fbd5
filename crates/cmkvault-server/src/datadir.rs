//! The data directory: root key, database, TLS material, tenant id and token-signing key.
//!
//! ```text
//! DIR/root.key        base64 of the 256-bit root key (mode 0600); absent when CMKVAULT_ROOT_KEY is used
//! DIR/cmkvault.db     SQLite (WAL): vaults, keys, sealed versions, metadata (0600, as -wal/-shm)
//! DIR/tls/ca.pem      the CA clients trust
//! DIR/tls/server.pem  server certificate chain; DIR/tls/server.key its key (0600)
//! ```
//!
//! `DIR` and `DIR/tls` are made mode 0700, and tightened to it when the operator made them
//! wider; every file holding secrets or records is created 0600 whatever the umask. A root
//! key file that group or others can access stops the start with the `chmod` that fixes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cmkvault_crypto::{RootKey, TokenSigningKey};
use cmkvault_store::SqliteStore;
use cmkvault_vault::tokens::TokenAuthority;
use cmkvault_vault::{Clock, VaultService};
use zeroize::Zeroizing;

use crate::ServerError;

/// The vault every fresh data directory has, served on `localhost` and `127.0.0.1`.
pub const DEFAULT_VAULT: &str = "default";

/// An opened data directory.
pub struct DataDir {
    /// Where it is.
    pub path: PathBuf,
    /// The vault service over its database.
    pub service: Arc<VaultService>,
    /// The token authority (tenant id and signing key).
    pub tokens: Arc<TokenAuthority>,
}

/// Writes a file via a temporary file, fsync and rename, so a crash leaves the old or the new
/// content, never half of it.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), ServerError> {
    cmkvault_store::write_file_atomic(path, data, mode).map_err(|e| ServerError::io(path, e))
}

/// Makes `path` a directory of mode 0700: created so, or tightened if it exists wider (an
/// operator's `mkdir` under umask 022 gives 0755).
pub fn private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| ServerError::io(path, e))?;
    }
    let mode = std::fs::metadata(path)
        .map_err(|e| ServerError::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ServerError::io(path, e))?;
        tracing::warn!(path = ?path, "tightened the directory's mode from {:o} to 0700", mode & 0o777);
    }
    Ok(())
}

/// Refuses a root key file that group or others can access: the key opens every sealed key.
fn check_root_key_mode(key_path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key_path)
        .map_err(|e| ServerError::io(key_path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ServerError::Config(format!(
            "{p} is accessible by group or others (mode {:04o}); run `chmod 600 {p}` and start again",
            mode & 0o777,
            p = key_path.display()
        )));
    }
    Ok(())
}

fn decode_root_key(text: &str, source: &str) -> Result<RootKey, ServerError> {
    let bytes = Zeroizing::new(
        B64.decode(text.trim())
            .map_err(|_| ServerError::Config(format!("{source} is not valid base64")))?,
    );
    RootKey::from_bytes(&bytes).map_err(|_| {
        ServerError::Config(format!(
            "{source} must hold exactly 32 bytes (256 bits), base64-encoded"
        ))
    })
}

/// Opens `path`, initialising it on first use (root key, database, tenant id, token-signing
/// key, the `default` vault). `root_key_b64` (from `CMKVAULT_ROOT_KEY`) overrides `root.key`.
pub fn open(path: &Path, root_key_b64: Option<&str>) -> Result<DataDir, ServerError> {
    private_dir(path)?;
    let db_path = path.join("cmkvault.db");
    let key_path = path.join("root.key");
    let root = match root_key_b64 {
        Some(text) => decode_root_key(text, "CMKVAULT_ROOT_KEY")?,
        None if key_path.exists() => {
            check_root_key_mode(&key_path)?;
            let text = Zeroizing::new(
                std::fs::read_to_string(&key_path).map_err(|e| ServerError::io(&key_path, e))?,
            );
            decode_root_key(&text, &key_path.display().to_string())?
        }
        None if db_path.exists() => {
            return Err(ServerError::Config(format!(
                "{} exists but there is no root key: restore {} or set CMKVAULT_ROOT_KEY",
                db_path.display(),
                key_path.display()
            )))
        }
        None => {
            let key = RootKey::generate().map_err(|e| ServerError::Config(e.to_string()))?;
            let text = Zeroizing::new(format!("{}\n", B64.encode(key.as_bytes())));
            write_file_atomic(&key_path, text.as_bytes(), 0o600)?;
            key
        }
    };
    // The store creates the database and its -wal/-shm files 0600.
    let store = SqliteStore::open(&db_path)
        .map_err(|e| ServerError::Config(format!("{}: {e}", db_path.display())))?;
    let service = VaultService::open(Arc::new(store), root, Clock::default())?;
    let tenant = service.meta_get_or_create("tenant-id", || {
        uuid::Uuid::new_v4().hyphenated().to_string().into_bytes()
    })?;
    let tenant = String::from_utf8(tenant)
        .map_err(|_| ServerError::Config("stored tenant id is not text".into()))?;
    let signing = service.sealed_meta_get_or_create("token-signing-key", || {
        TokenSigningKey::generate()
            .map(|k| k.to_pkcs8())
            .map_err(Into::into)
    })?;
    let signing = TokenSigningKey::from_pkcs8(&signing)
        .map_err(|e| ServerError::Config(format!("stored token-signing key: {e}")))?;
    service.ensure_vault(DEFAULT_VAULT, 90)?;
    Ok(DataDir {
        path: path.to_path_buf(),
        service: Arc::new(service),
        tokens: Arc::new(TokenAuthority::new(signing, tenant)),
    })
}
