//! The `cmkvault` binary end to end: `serve` on a free loopback port, `token`, and the
//! `vault` management commands; bad input gives exactly one `error:` line on stderr and a
//! non-zero exit, never a panic or a backtrace.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{cmkvault, one_error_line, run, success, Server};
use serde_json::Value;
use tempfile::TempDir;

impl Server {
    /// `vault ...` against this server with `token` (or none).
    fn vault(&self, args: &[&str], token: Option<&str>) -> Command {
        let mut all = vec!["vault"];
        all.extend_from_slice(args);
        let url = self.url();
        all.extend_from_slice(&["--url", &url, "--data", self.data.to_str().unwrap()]);
        let mut c = cmkvault(&all);
        if let Some(t) = token {
            c.env("CMKVAULT_TOKEN", t);
        }
        c
    }
}

fn token_cmd(data: &Path, extra: &[&str]) -> Command {
    let mut args = vec!["token", "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    cmkvault(&args)
}

#[test]
fn serve_token_and_vault_commands() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    let server = Server::start(&data, scratch);
    assert!(data.join("tls").join("ca.pem").exists());
    assert!(data.join("cmkvault.db").exists());

    // token: a JWT, three dot-separated base64url parts.
    let token = success(run(token_cmd(&data, &[]), scratch), "token");
    let token = token.trim().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    for p in &parts {
        assert!(
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
    }
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    let short = success(
        run(token_cmd(&data, &["--ttl", "30m"]), scratch),
        "token 30m",
    );
    assert_eq!(short.trim().split('.').count(), 3);

    // vault create / list / show / update.
    let out = success(
        run(
            server.vault(&["create", "kv1", "--retention-days", "7"], Some(&token)),
            scratch,
        ),
        "vault create",
    );
    let created: Value = serde_json::from_str(&out).expect("create prints JSON");
    assert_eq!(created["name"], "kv1");
    assert_eq!(created["properties"]["softDeleteRetentionInDays"], 7);

    let list = success(run(server.vault(&["list"], Some(&token)), scratch), "list");
    let kv1 = list
        .lines()
        .find(|l| l.starts_with("kv1\t"))
        .unwrap_or_else(|| panic!("kv1 not listed:\n{list}"));
    assert!(kv1.contains("retention=7d"), "{kv1}");
    assert!(kv1.contains("purge-protection=false"), "{kv1}");
    assert!(
        list.lines().any(|l| l.starts_with("default\t")),
        "default vault listed:\n{list}"
    );

    let show = success(
        run(server.vault(&["show", "kv1"], Some(&token)), scratch),
        "show",
    );
    let v: Value = serde_json::from_str(&show).expect("show prints JSON");
    assert_eq!(v["type"], "Microsoft.KeyVault/vaults");
    assert_eq!(v["name"], "kv1");
    assert_eq!(v["properties"]["softDeleteRetentionInDays"], 7);
    assert_eq!(v["properties"]["enablePurgeProtection"], false);
    assert_eq!(v["properties"]["enableRbacAuthorization"], true);
    assert_eq!(v["properties"]["enableSoftDelete"], true);
    assert!(v["properties"]["vaultUri"]
        .as_str()
        .unwrap()
        .starts_with("https://kv1."));

    let upd = success(
        run(
            server.vault(&["update", "kv1", "--purge-protection"], Some(&token)),
            scratch,
        ),
        "update",
    );
    let u: Value = serde_json::from_str(&upd).expect("update prints JSON");
    assert_eq!(u["properties"]["enablePurgeProtection"], true);
    let show = success(
        run(server.vault(&["show", "kv1"], Some(&token)), scratch),
        "show",
    );
    let v: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["properties"]["enablePurgeProtection"], true);
    let list = success(run(server.vault(&["list"], Some(&token)), scratch), "list");
    assert!(
        list.lines()
            .any(|l| l.starts_with("kv1\t") && l.contains("purge-protection=true")),
        "{list}"
    );

    // Bad input against the running server: one error line each.
    let line = one_error_line(
        run(server.vault(&["create", "kv2"], None), scratch),
        "create without token",
    );
    assert!(line.contains("CMKVAULT_TOKEN"), "{line}");
    let line = one_error_line(
        run(server.vault(&["create", "x!"], Some(&token)), scratch),
        "invalid name",
    );
    assert!(line.contains("400") && line.contains("x!"), "{line}");
    let line = one_error_line(
        run(
            server.vault(&["create", "kv3", "--retention-days", "3"], Some(&token)),
            scratch,
        ),
        "retention 3",
    );
    assert!(line.contains("400") && line.contains('3'), "{line}");
    let line = one_error_line(
        run(server.vault(&["create", "kv1"], Some(&token)), scratch),
        "duplicate",
    );
    assert!(line.contains("409"), "{line}");
    let line = one_error_line(
        run(server.vault(&["show", "nosuch"], Some(&token)), scratch),
        "show missing",
    );
    assert!(line.contains("404"), "{line}");
    let line = one_error_line(
        run(server.vault(&["update", "kv1"], Some(&token)), scratch),
        "update nothing",
    );
    assert!(line.contains("purge-protection"), "{line}");
    let line = one_error_line(
        run(server.vault(&["list"], Some("not-a-token")), scratch),
        "bad token",
    );
    assert!(line.contains("401"), "{line}");

    // serve with a wrong, a malformed and a short root key on the initialised directory.
    let wrong = B64.encode([0x42u8; 32]);
    for (key, needle) in [
        (wrong.as_str(), "root key"),
        ("not base64 at all!", "CMKVAULT_ROOT_KEY"),
        ("AAAA", "CMKVAULT_ROOT_KEY"),
    ] {
        let mut cmd = cmkvault(&[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        cmd.env("CMKVAULT_ROOT_KEY", key);
        let line = one_error_line(run(cmd, scratch), "serve with a bad root key");
        assert!(line.contains(needle), "{key}: {line}");
    }
    // token with a wrong root key fails the same way.
    let mut cmd = token_cmd(&data, &[]);
    cmd.env("CMKVAULT_ROOT_KEY", &wrong);
    let line = one_error_line(run(cmd, scratch), "token with a wrong root key");
    assert!(line.contains("root key"), "{line}");

    // The server is still fine.
    success(
        run(server.vault(&["show", "kv1"], Some(&token)), scratch),
        "show",
    );
    drop(server);
}

#[test]
fn token_errors() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let empty = scratch.join("empty");
    std::fs::create_dir(&empty).unwrap();

    for dir in [empty.clone(), scratch.join("does-not-exist")] {
        let line = one_error_line(run(token_cmd(&dir, &[]), scratch), "token on a bare dir");
        assert!(line.contains("not an initialised data directory"), "{line}");
    }
    assert!(
        !empty.join("cmkvault.db").exists(),
        "token must not initialise a directory"
    );
    for ttl in ["99x", "abc", "", "0", "25h", "1.5h"] {
        let line = one_error_line(
            run(token_cmd(&empty, &["--ttl", ttl]), scratch),
            &format!("--ttl {ttl}"),
        );
        assert!(
            line.contains("ttl") || line.contains("duration"),
            "{ttl}: {line}"
        );
    }
    let line = one_error_line(
        run(token_cmd(&empty, &["--ttl", "99x"]), scratch),
        "--ttl 99x",
    );
    assert!(line.contains("99x"), "{line}");
}
