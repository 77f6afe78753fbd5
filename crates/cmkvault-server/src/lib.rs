//! The cmkvault HTTPS server: the Azure Key Vault keys REST API over rustls.
//!
//! Thin by design: `pipeline` runs every request (Host → vault, bearer challenge,
//! routing, authorisation, audit); `keys`, `management` and `oauth` are the route
//! families, which call the domain ([`cmkvault_vault::VaultService`]) on the blocking pool
//! through the shared helpers in `http`; [`error`] maps domain errors to Azure-shaped JSON
//! in one place; [`wire`] holds the JSON shapes.

#![forbid(unsafe_code)]

pub mod alerts;
mod conn;
pub mod datadir;
pub mod error;
mod http;
mod imds;
mod keys;
pub mod maintenance;
mod management;
mod oauth;
mod pipeline;
mod throttle;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cmkvault_store::SqliteAuditStore;
use cmkvault_vault::audit::{AuditLog, AuditOptions};
use cmkvault_vault::tokens::TokenAuthority;
use cmkvault_vault::{VaultError, VaultService};

pub use alerts::{AlertOptions, DenialAlerts};

pub use conn::{Limits as HttpLimits, Rejections, ServerHandle};
pub use datadir::DataDir;
pub use keys::API_VERSIONS;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Certificates or keys are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Configuration is wrong (root key, data directory).
    #[error("{0}")]
    Config(String),
    /// The vault layer refused to open.
    #[error("{0}")]
    Vault(#[from] VaultError),
}

impl ServerError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ServerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shared state of the request handlers.
pub struct AppState {
    /// The domain.
    pub service: Arc<VaultService>,
    /// Token verification.
    pub tokens: Arc<TokenAuthority>,
    /// Vaults are served as `NAME.<vault_domain>`.
    pub vault_domain: String,
    /// Externally visible base URL, if it differs from the Host the client used.
    pub public_url: Option<String>,
    /// The audit log (`None` only when audit is switched off for benchmarking).
    pub audit: Option<Arc<AuditLog>>,
    /// Denied-access counters and alerts.
    pub alerts: Arc<DenialAlerts>,
    /// Failed token requests per client id and source address (brute-force protection).
    pub(crate) login_throttle: throttle::LoginThrottle,
    /// Requests and connections refused before the handler ran.
    pub(crate) rejections: Arc<conn::ConnStats>,
}

impl AppState {
    /// Counts of requests and connections refused before the handler ran.
    pub fn rejections(&self) -> Rejections {
        self.rejections.snapshot()
    }
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Listen address (`127.0.0.1:8443`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Vault domain (`vault.local`).
    pub vault_domain: String,
    /// Public base URL for ids, when behind a proxy.
    pub public_url: Option<String>,
    /// Operator's certificate chain (PEM); the generated one when `None`.
    pub tls_cert: Option<PathBuf>,
    /// Operator's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// How often deleted keys past retention are purged and due rotations run.
    pub maintenance_interval: Duration,
    /// Record every request in the audit log (fail-closed). Off only for benchmarks.
    pub audit: bool,
    /// Audit writer tuning (checkpoint cadence, batch size).
    pub audit_options: AuditOptions,
    /// How long a write to the audit database may wait for a lock before the request fails.
    pub audit_busy_timeout: Duration,
    /// Audit records older than this many days are pruned (after a signed checkpoint).
    pub audit_retention_days: Option<u32>,
    /// Denied-access alerting.
    pub alerts: AlertOptions,
    /// Loopback address for the IMDS-shaped managed-identity endpoint (off when `None`).
    pub imds_listen: Option<SocketAddr>,
    /// Identities (names or ids) the managed-identity endpoint hands out; the first is default.
    pub imds_identities: Vec<String>,
    /// Connection caps and timeouts of the HTTPS listener.
    pub limits: HttpLimits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            vault_domain: "vault.local".into(),
            public_url: None,
            tls_cert: None,
            tls_key: None,
            maintenance_interval: Duration::from_secs(60),
            audit: true,
            audit_options: AuditOptions::default(),
            audit_busy_timeout: Duration::from_secs(5),
            audit_retention_days: None,
            alerts: AlertOptions::default(),
            imds_listen: None,
            imds_identities: Vec::new(),
            limits: HttpLimits::default(),
        }
    }
}

/// A running server.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The domain service (tests use its clock).
    pub service: Arc<VaultService>,
    /// The token authority.
    pub tokens: Arc<TokenAuthority>,
    /// The audit log, when on.
    pub audit: Option<Arc<AuditLog>>,
    /// Denied-access alerts.
    pub alerts: Arc<DenialAlerts>,
    /// Where the managed-identity endpoint listens, when on.
    pub imds_addr: Option<SocketAddr>,
    /// The data directory's exclusive lock, released when the server is dropped.
    _lock: std::fs::File,
    handle: ServerHandle,
    rejections: Arc<conn::ConnStats>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Background tasks stopped with the server (managed-identity endpoint).
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Auto-purge, auto-rotation and audit upkeep; stopped and awaited before the audit log.
    maintenance: maintenance::Task,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (up to 10 s), and waits.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(10)));
        let _ = self.task.await;
        // The managed-identity endpoint got the same stop and grace: let it finish too.
        for task in self.background {
            let _ = task.await;
        }
        self.maintenance.stop().await;
        stop_audit(self.audit.as_deref()).await;
    }

    /// Waits until the server stops (it stops on an I/O error or after `shutdown`).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self
            .task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        self.background.iter().for_each(|t| t.abort());
        self.maintenance.stop().await;
        stop_audit(self.audit.as_deref()).await;
        result
    }

    /// A handle that can stop the server from elsewhere (signal handlers).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Counts of requests and connections refused before the handler ran (timeouts, caps,
    /// malformed or oversized requests, failed TLS handshakes).
    pub fn rejections(&self) -> Rejections {
        self.rejections.snapshot()
    }
}

/// Stops the audit log: signs the records written since the last checkpoint, so the log's
/// end is covered by a signature, and waits for the writer, so nothing touches the data
/// directory once the server has stopped.
async fn stop_audit(audit: Option<&AuditLog>) {
    if let Some(audit) = audit {
        if let Err(e) = audit.shutdown().await {
            tracing::error!("final audit checkpoint failed: {e}");
        }
    }
}

/// Starts serving an opened data directory.
pub async fn start(data: &DataDir, opts: ServerOptions) -> Result<RunningServer, ServerError> {
    // One server per data directory: two writers would fork the audit chain.
    let lock_path = data.path.join("serve.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ServerError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ServerError::Config(format!(
                "another cmkvault server is already using {} (it holds {})",
                data.path.display(),
                lock_path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ServerError::io(&lock_path, e)),
    }
    let (cert, key) = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let dir = data.path.join("tls");
            tls::ensure_certificates(&dir, &opts.vault_domain)?;
            (dir.join("server.pem"), dir.join("server.key"))
        }
        _ => {
            return Err(ServerError::Config(
                "--tls-cert and --tls-key must be given together".into(),
            ))
        }
    };
    let tls_config = tls::server_config(&cert, &key)?;
    let audit = if opts.audit {
        let path = data.path.join("audit.db");
        let store = SqliteAuditStore::open(&path, opts.audit_busy_timeout)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
        let signer =
            cmkvault_crypto::TokenSigningKey::from_pkcs8(&data.tokens.signing_key().to_pkcs8())
                .map_err(|e| ServerError::Config(e.to_string()))?;
        let log = AuditLog::start(
            Arc::new(store),
            signer,
            data.tokens.tenant_id().to_string(),
            opts.audit_options.clone(),
        )
        .map_err(|e| ServerError::Config(e.to_string()))?;
        Some(Arc::new(log))
    } else {
        tracing::warn!("AUDIT IS OFF: requests are not recorded (benchmarking only)");
        None
    };
    let alerts = Arc::new(DenialAlerts::start(opts.alerts.clone()));
    let rejections = Arc::new(conn::ConnStats::default());
    let state: Arc<AppState> = Arc::new(AppState {
        service: data.service.clone(),
        tokens: data.tokens.clone(),
        vault_domain: opts.vault_domain.to_ascii_lowercase(),
        public_url: opts.public_url.clone(),
        audit: audit.clone(),
        alerts: alerts.clone(),
        login_throttle: Default::default(),
        rejections: rejections.clone(),
    });
    let imds_state = state.clone();
    let app = axum::Router::new()
        .fallback(pipeline::handle)
        .with_state(state);
    let listener = std::net::TcpListener::bind(opts.listen)
        .map_err(|e| ServerError::Config(format!("cannot listen on {}: {e}", opts.listen)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| ServerError::Config(format!("cannot listen on {}: {e}", opts.listen)))?;
    let handle = ServerHandle::new();
    let task = tokio::spawn(conn::serve(
        listener,
        conn::Transport::tls(tls_config),
        app,
        opts.limits.clone(),
        rejections.clone(),
        handle.clone(),
    ));

    let maintenance = maintenance::spawn(
        data.service.clone(),
        opts.maintenance_interval,
        audit.clone(),
        opts.audit_retention_days,
    );

    let mut background = Vec::new();
    let imds_addr = match opts.imds_listen {
        Some(listen) => {
            let (imds_addr, imds_task) = imds::start(
                listen,
                imds_state,
                opts.imds_identities.clone(),
                &opts.limits,
                &handle,
            )
            .await?;
            background.push(imds_task);
            Some(imds_addr)
        }
        None => None,
    };

    Ok(RunningServer {
        addr,
        service: data.service.clone(),
        tokens: data.tokens.clone(),
        audit,
        alerts,
        imds_addr,
        _lock: lock,
        handle,
        rejections,
        task,
        background,
        maintenance,
    })
}
