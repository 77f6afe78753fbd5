//! The `cmkvault` command: serve the vault, issue the break-glass token, manage vaults,
//! identities, roles and access policies, bench, list and show the policy rule pack.

#![forbid(unsafe_code)]

mod admin;
mod audit_cli;
mod bench;
mod client;
mod envelope_cli;
mod policy_cli;
mod scan_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use cmkvault_server::{datadir, HttpLimits, ServerOptions};
use cmkvault_vault::tokens::BOOTSTRAP_ADMIN_OID;

/// A self-hosted customer-managed-key vault for AI and ML data, speaking the Azure Key Vault
/// keys API.
#[derive(Parser)]
#[command(name = "cmkvault", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the vault server (HTTPS) on the embedded store.
    Serve(ServeArgs),
    /// Print a bearer token for the bootstrap administrator (break-glass).
    Token(TokenArgs),
    /// Manage vaults (tenants) through the server's management API.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Load-test one key operation over HTTPS and compare it with the raw crypto limit.
    Bench(bench::BenchArgs),
    /// Verify, read and export the tamper-evident audit log of a data directory.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Manage identities (service principals) that get tokens with a client secret.
    Identity {
        #[command(subcommand)]
        command: admin::IdentityCommand,
    },
    /// Manage role definitions and role assignments (RBAC).
    Role {
        #[command(subcommand)]
        command: admin::RoleCommand,
    },
    /// Show denied-access counters: count, principal, vault, key.
    Denials {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Encrypt files or directories into .cmk containers under a vault or local key.
    Encrypt(envelope_cli::EncryptArgs),
    /// Decrypt .cmk containers (files or directories).
    Decrypt(envelope_cli::DecryptArgs),
    /// Show the envelope of .cmk files (key id, algorithm, sizes) without unwrapping.
    Inspect(envelope_cli::InspectArgs),
    /// List the .cmk files that become unreadable if a key (or key version) is revoked.
    ShredReport(envelope_cli::ShredReportArgs),
    /// Re-wrap the data keys of .cmk files to another key or the key's latest version.
    Rewrap(envelope_cli::RewrapArgs),
    /// Check CMK compliance: evaluate Azure Policy definitions offline over inventories, ARM
    /// templates and the live vault (exit 1 when a Deny-effect result is NonCompliant).
    Scan(scan_cli::ScanArgs),
    /// List and show the built-in Azure Policy rule pack (CMK governance).
    Policy {
        #[command(subcommand)]
        command: policy_cli::PolicyCommand,
    },
}

#[derive(Args, Clone)]
pub(crate) struct DataArgs {
    /// Data directory.
    #[arg(
        long = "data",
        env = "CMKVAULT_DATA",
        default_value = "./cmkvault-data"
    )]
    data: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Address to listen on.
    #[arg(long, env = "CMKVAULT_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Vaults are served at NAME.<vault-domain>.
    #[arg(long, env = "CMKVAULT_VAULT_DOMAIN", default_value = "vault.local")]
    vault_domain: String,
    /// Base URL used in key ids instead of the Host the client called (behind a proxy).
    #[arg(long, env = "CMKVAULT_PUBLIC_URL")]
    public_url: Option<String>,
    /// Your own certificate chain (PEM) instead of the generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Your own private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// POST a CloudEvents alert here when a principal's denials exceed the threshold.
    #[arg(long, env = "CMKVAULT_ALERT_WEBHOOK")]
    alert_webhook: Option<String>,
    /// Denials per principal within the window that trigger an alert (fires above this).
    #[arg(long, default_value_t = 5)]
    alert_threshold: u32,
    /// The alert window, such as 60s or 5m.
    #[arg(long, default_value = "60s")]
    alert_window: String,
    /// Prune audit records older than this many days (a signed checkpoint is written first).
    #[arg(long, env = "CMKVAULT_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
    /// Serve an Azure-IMDS-shaped managed-identity endpoint (plain HTTP) on this loopback
    /// address, for `ManagedIdentityCredential` with AZURE_POD_IDENTITY_AUTHORITY_HOST.
    #[arg(long, env = "CMKVAULT_IMDS_LISTEN", requires = "imds_identity")]
    imds_listen: Option<SocketAddr>,
    /// An identity (name or id) this host's workloads may obtain through the managed-identity
    /// endpoint; repeat for several (the first is the default).
    #[arg(long)]
    imds_identity: Vec<String>,
    /// Open connections at most; a connection over the cap is closed at once.
    #[arg(long, env = "CMKVAULT_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Requests handled at the same time at most; more are answered 503 with Retry-After.
    #[arg(long, env = "CMKVAULT_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,
    /// Time a client has to send a request's headers (also the longest wait for the next
    /// request on an HTTP/1.1 connection), such as 30s.
    #[arg(long, default_value = "30s")]
    header_timeout: String,
    /// Time a client has to send a request body, such as 60s (408 after it).
    #[arg(long, default_value = "60s")]
    body_timeout: String,
    /// A connection without a request for this long is closed, such as 120s.
    #[arg(long, default_value = "120s")]
    idle_timeout: String,
    /// Time a client has to finish the TLS handshake, such as 10s.
    #[arg(long, default_value = "10s")]
    tls_handshake_timeout: String,
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Lifetime, such as 30m, 1h or 12h (at most 24h).
    #[arg(long, default_value = "1h")]
    ttl: String,
}

#[derive(Args, Clone)]
pub(crate) struct ClientArgs {
    /// Server URL.
    #[arg(long, env = "CMKVAULT_URL", default_value = "https://localhost:8443")]
    pub url: String,
    /// CA certificate to trust (default: DATA/tls/ca.pem).
    #[arg(long, env = "CMKVAULT_CA")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Create a vault.
    Create {
        /// Vault name (3-24 letters, digits and hyphens).
        name: String,
        /// Soft-delete retention in days (7-90), fixed at creation.
        #[arg(long, default_value_t = 90)]
        retention_days: u32,
        /// Turn on purge protection (cannot be turned off).
        #[arg(long)]
        purge_protection: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List vaults.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a vault's settings (ARM JSON).
    Show {
        /// Vault name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a vault's settings.
    Update {
        /// Vault name.
        name: String,
        /// Turn on purge protection (it can never be turned off).
        #[arg(long)]
        purge_protection: bool,
        /// Authorise with RBAC role assignments (true) or with access policies (false).
        #[arg(long, value_name = "true|false")]
        rbac_authorization: Option<bool>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage a vault's access policies (used when --rbac-authorization is false).
    Policy {
        #[command(subcommand)]
        command: admin::PolicyCommand,
    },
}

/// Parses `30s`, `15m`, `1h`, `2d` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .with_context(|| format!("'{text}' is not a duration such as 30s, 15m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("'{text}' is not a duration such as 30s, 15m or 1h"),
    };
    Ok(Duration::from_secs(secs))
}

fn root_key_env() -> Option<String> {
    std::env::var("CMKVAULT_ROOT_KEY")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CMKVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs) -> Result<()> {
    if let Some(url) = &args.alert_webhook {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            bail!("--alert-webhook must be an http(s) URL, got '{url}'");
        }
    }
    if args.audit_retention_days == Some(0) {
        bail!("--audit-retention-days must be at least 1");
    }
    let alert_window = parse_duration(&args.alert_window)?;
    if alert_window.is_zero() {
        bail!("--alert-window must be longer than 0s");
    }
    if args.max_connections == 0 || args.max_in_flight == 0 {
        bail!("--max-connections and --max-in-flight must be at least 1");
    }
    let timeout = |flag: &str, text: &str| -> Result<Duration> {
        let d = parse_duration(text)?;
        if d.is_zero() {
            bail!("--{flag} must be longer than 0s");
        }
        Ok(d)
    };
    let header_timeout = timeout("header-timeout", &args.header_timeout)?;
    let body_timeout = timeout("body-timeout", &args.body_timeout)?;
    let idle_timeout = timeout("idle-timeout", &args.idle_timeout)?;
    let tls_handshake_timeout = timeout("tls-handshake-timeout", &args.tls_handshake_timeout)?;
    let data = datadir::open(&args.data.data, root_key_env().as_deref())?;
    let opts = ServerOptions {
        limits: HttpLimits {
            max_connections: args.max_connections,
            max_in_flight: args.max_in_flight,
            header_timeout,
            body_timeout,
            idle_timeout,
            tls_handshake_timeout,
            ..Default::default()
        },
        listen: args.listen,
        vault_domain: args.vault_domain,
        public_url: args.public_url,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        audit_retention_days: args.audit_retention_days,
        imds_listen: args.imds_listen,
        imds_identities: args.imds_identity,
        alerts: cmkvault_server::AlertOptions {
            webhook: args.alert_webhook,
            threshold: args.alert_threshold,
            window: alert_window,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = cmkvault_server::start(&data, opts).await?;
    tracing::info!(
        addr = %server.addr,
        data = %args.data.data.display(),
        ca = %args.data.data.join("tls/ca.pem").display(),
        tenant = %data.tokens.tenant_id(),
        "cmkvault serving the Azure Key Vault keys API over HTTPS"
    );
    let handle = server.handle();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        tracing::info!("shutting down");
        handle.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    server.wait().await.context("server stopped")
}

fn token(args: TokenArgs) -> Result<()> {
    let ttl = parse_duration(&args.ttl)?;
    if ttl.is_zero() || ttl > Duration::from_secs(86400) {
        bail!("--ttl must be between 1s and 24h");
    }
    if !args.data.data.join("cmkvault.db").exists() {
        bail!(
            "{} is not an initialised data directory (run `cmkvault serve --data {}` once first)",
            args.data.data.display(),
            args.data.data.display()
        );
    }
    let data = datadir::open(&args.data.data, root_key_env().as_deref())?;
    let now = data.service.clock().now();
    let token = data.tokens.issue(
        BOOTSTRAP_ADMIN_OID,
        "cmkvault-admin",
        now,
        ttl.as_secs() as i64,
    )?;
    println!("{token}");
    Ok(())
}

async fn vault(command: VaultCommand) -> Result<()> {
    match command {
        VaultCommand::Create {
            name,
            retention_days,
            purge_protection,
            client,
        } => {
            let body = serde_json::json!({"properties": {
                "softDeleteRetentionInDays": retention_days,
                "enablePurgeProtection": purge_protection,
            }});
            let v = client::Client::new(&client)?
                .send("PUT", &format!("/management/vaults/{name}"), Some(body))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        VaultCommand::List { client } => {
            let v = client::Client::new(&client)?
                .send("GET", "/management/vaults", None)
                .await?;
            for vault in v["value"].as_array().into_iter().flatten() {
                let p = &vault["properties"];
                println!(
                    "{}\tretention={}d\tpurge-protection={}\t{}",
                    vault["name"].as_str().unwrap_or_default(),
                    p["softDeleteRetentionInDays"],
                    p["enablePurgeProtection"],
                    p["vaultUri"].as_str().unwrap_or_default(),
                );
            }
        }
        VaultCommand::Show { name, client } => {
            let v = client::Client::new(&client)?
                .send("GET", &format!("/management/vaults/{name}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        VaultCommand::Update {
            name,
            purge_protection,
            rbac_authorization,
            client,
        } => {
            if !purge_protection && rbac_authorization.is_none() {
                bail!(
                    "nothing to update: pass --purge-protection or --rbac-authorization true|false (retention is fixed at creation)"
                );
            }
            let mut props = serde_json::Map::new();
            if purge_protection {
                props.insert("enablePurgeProtection".into(), true.into());
            }
            if let Some(rbac) = rbac_authorization {
                props.insert("enableRbacAuthorization".into(), rbac.into());
            }
            let body = serde_json::json!({ "properties": props });
            let v = client::Client::new(&client)?
                .send("PATCH", &format!("/management/vaults/{name}"), Some(body))
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        VaultCommand::Policy { command } => admin::policy(command).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line naming the problem (clap's first line, plus the list it introduces
            // when it ends with ':'), not the whole usage text.
            let text = e.to_string();
            let mut lines = text.lines();
            let first = lines.next().unwrap_or("invalid arguments").trim();
            let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
            if first.ends_with(':') {
                for l in lines.map(str::trim).take_while(|l| !l.is_empty()) {
                    first.push(' ');
                    first.push_str(l);
                }
            }
            eprintln!("error: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Scan(a) = cli.command {
        // Exit 0/1 is the CI gate; any error is a usage or input error (2).
        return match runtime.block_on(scan_cli::run(a)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                eprintln!("error: {}", chain.join(": "));
                ExitCode::from(2)
            }
        };
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Scan(_) => Ok(()),
            Command::Serve(a) => serve(a).await,
            Command::Token(a) => token(a),
            Command::Vault { command } => vault(command).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Audit { command } => audit_cli::run(command).await,
            Command::Identity { command } => admin::identity(command).await,
            Command::Role { command } => admin::role(command).await,
            Command::Denials { client } => admin::denials(client).await,
            Command::Encrypt(a) => envelope_cli::encrypt(a).await,
            Command::Decrypt(a) => envelope_cli::decrypt(a).await,
            Command::Inspect(a) => envelope_cli::inspect(a).await,
            Command::ShredReport(a) => envelope_cli::shred_report(a).await,
            Command::Rewrap(a) => envelope_cli::rewrap(a).await,
            Command::Policy { command } => policy_cli::run(command),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            // The reader went away (`| head`): not an error of ours.
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line naming the problem and its causes; no backtrace.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}
