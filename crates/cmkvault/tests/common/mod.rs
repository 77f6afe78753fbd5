//! The process harness shared by the `cmkvault` binary's integration tests: a clean-environment
//! command builder, a bounded `run` capturing output in files, the `success` / `one_error_line`
//! checks, a `cmkvault serve` child on a free loopback port that is killed on drop (with the
//! administrator's token: `serve_with_token`), and an HTTPS client trusting its CA.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cmkvault");
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A command with a clean environment: no inherited `CMKVAULT_*`, no backtraces, no proxies.
pub fn cmkvault(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CMKVAULT_") || k.to_ascii_lowercase().ends_with("_proxy") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_BACKTRACE").env_remove("RUST_LOG");
    c.stdin(Stdio::null());
    c
}

/// The outcome of a finished command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion (killing it after [`TIMEOUT`]), capturing its output in files
/// so a chatty process cannot block on a full pipe.
pub fn run(mut cmd: Command, scratch: &Path) -> Output {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let id = COUNTER.fetch_add(1, Ordering::Relaxed);
    let out_path = scratch.join(format!("out-{id}.txt"));
    let err_path = scratch.join(format!("err-{id}.txt"));
    cmd.stdout(std::fs::File::create(&out_path).unwrap());
    cmd.stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().expect("spawn cmkvault");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cmkvault did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn success(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}): stdout={} stderr={}",
        o.status,
        o.stdout,
        o.stderr
    );
    o.stdout
}

/// Asserts a failure with an exit code (not a signal); returns the non-blank stderr lines.
#[track_caller]
pub fn failure_lines<'a>(o: &'a Output, what: &str) -> Vec<&'a str> {
    assert!(
        !o.status.success(),
        "{what} should fail: stdout={}",
        o.stdout
    );
    assert_ne!(o.status.code(), None, "{what} was killed by a signal");
    o.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Asserts a failure with exactly one `error:` line on stderr and no panic or backtrace;
/// returns that line.
#[track_caller]
pub fn one_error_line(o: Output, what: &str) -> String {
    let lines = failure_lines(&o, what);
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got:\n{}",
        o.stderr
    );
    assert!(lines[0].starts_with("error:"), "{what}: {}", lines[0]);
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!o.stderr.contains(bad), "{what}: {}", o.stderr);
    }
    lines[0].to_string()
}

/// A `cmkvault serve` child on a free loopback port, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `cmkvault serve --data DATA` (stderr in `scratch`) and waits until it listens.
    pub fn start(data: &Path, scratch: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = scratch.join(format!("serve-{port}.log"));
        let mut cmd = cmkvault(&[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawn serve");
        let mut server = Server {
            child,
            port,
            data: data.to_path_buf(),
            log,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "serve exited early ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve did not listen on {addr} within {TIMEOUT:?}");
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

/// An HTTPS client trusting `DATA/tls/ca.pem`, with `localhost` pinned to 127.0.0.1.
pub fn https_client(data: &Path, port: u16) -> reqwest::Client {
    let tls = tls_trusting_ca(data);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A current-thread runtime for blocking tests and an [`https_client`] made inside it.
pub fn runtime_and_client(data: &Path, port: u16) -> (tokio::runtime::Runtime, reqwest::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = {
        let _g = rt.enter();
        https_client(data, port)
    };
    (rt, client)
}

/// Starts `cmkvault serve` over `data` and mints a bootstrap-administrator token for it.
pub fn serve_with_token(data: &Path, scratch: &Path) -> (Server, String) {
    let server = Server::start(data, scratch);
    let token = success(
        run(
            cmkvault(&["token", "--data", data.to_str().unwrap()]),
            scratch,
        ),
        "token",
    );
    (server, token.trim().to_string())
}

/// A TLS client configuration trusting only `DATA/tls/ca.pem`.
pub fn tls_trusting_ca(data: &Path) -> rustls::ClientConfig {
    let pem = std::fs::read(data.join("tls").join("ca.pem")).expect("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}
