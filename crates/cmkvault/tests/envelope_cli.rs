//! `cmkvault encrypt`, `decrypt` and `inspect` end to end on the binary: round trips of local
//! files and directories under a local key file and under a vault RSA key of a real
//! `cmkvault serve`; tampered and renamed files, existing outputs and untrusted key hosts fail
//! with one `error:` line and leave no output behind.
//! `rewrap` after a rotation keeps the body bytes and survives disabling the old version;
//! revoked access (role removed, version disabled, key deleted, purged) fails naming the key and
//! the reason; a 2 GiB sparse file round-trips with bounded peak RSS.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use common::{
    cmkvault, one_error_line, run, runtime_and_client, serve_with_token, success, Server,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// Writes a local oct JWK key file with `kid` and returns its path.
fn key_file(dir: &Path, kid: &str) -> PathBuf {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(kid.len() as u8);
    }
    let path = dir.join(format!("key-{}.jwk", kid.len()));
    std::fs::write(
        &path,
        json!({"kty": "oct", "k": B64URL.encode(k), "kid": kid}).to_string(),
    )
    .unwrap();
    path
}

fn cmd(args: &[&str]) -> Command {
    cmkvault(args)
}

/// `cmkvault ARGS INPUT -o OUTPUT`.
fn io_cmd(args: &[&str], input: &Path, output: &Path) -> Command {
    let mut c = cmd(args);
    c.arg(input).arg("-o").arg(output);
    c
}

/// `cmkvault inspect --format json PATH`, parsed.
fn inspect_json(path: &Path, s: &Path) -> Value {
    let out = success(
        run(
            cmd(&["inspect", "--format", "json", path.to_str().unwrap()]),
            s,
        ),
        "inspect",
    );
    serde_json::from_str(&out).unwrap()
}

/// Deterministic non-trivial content of `len` bytes.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Files in `dir` (recursively) whose name starts with `.cmkvault-` (temporaries).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(leftovers(&e.path()));
        } else if e.file_name().to_string_lossy().starts_with(".cmkvault-") {
            out.push(e.path());
        }
    }
    out
}

/// Many files: `encrypt -r`/`decrypt -r` run several at once and make the outputs durable in
/// groups; a tampered file in the middle fails naming it, the files before it are decrypted,
/// none after it, and no temporary file is left.
#[test]
fn many_files_decrypt_stops_at_a_tampered_file_keeping_the_ones_before() {
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    let keyarg = format!("file:{}", key_file(s, "local:many").display());
    let input = s.join("in");
    std::fs::create_dir(&input).unwrap();
    for i in 0..40 {
        std::fs::write(input.join(format!("f{i:02}")), content(i * 1000 + 1)).unwrap();
    }
    let (enc, dec) = (s.join("enc"), s.join("dec"));
    let args = |op: &str, from: &Path, to: &Path| {
        let (from, to) = (from.to_str().unwrap(), to.to_str().unwrap());
        cmd(&[op, "-q", "-r", "--key", &keyarg, from, "-o", to])
    };
    success(run(args("encrypt", &input, &enc), s), "encrypt -r");
    for i in 0..40 {
        assert!(enc.join(format!("f{i:02}.cmk")).exists(), "f{i:02}.cmk");
    }
    let bad = enc.join("f20.cmk");
    let mut bytes = std::fs::read(&bad).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&bad, &bytes).unwrap();
    let line = one_error_line(run(args("decrypt", &enc, &dec), s), "decrypt -r");
    assert!(line.contains("f20.cmk"), "{line}");
    for i in 0..40 {
        let out = dec.join(format!("f{i:02}"));
        if i < 20 {
            assert_eq!(
                std::fs::read(&out).unwrap(),
                content(i * 1000 + 1),
                "f{i:02}"
            );
        } else {
            assert!(!out.exists(), "f{i:02} written after the failing file");
        }
    }
    assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));
}

#[test]
fn local_key_files_round_trip_and_failures() {
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    let key = key_file(s, "local:test");
    let keyarg = format!("file:{}", key.display());

    // Single files: 0 B, 1 B, 4 MiB + 1.
    for len in [0usize, 1, 4 * 1024 * 1024 + 1] {
        let name = format!("f{len}.bin");
        let input = s.join(&name);
        std::fs::write(&input, content(len)).unwrap();
        let enc = s.join(format!("{name}.cmk"));
        let dec = s.join(format!("dec-{name}"));
        success(
            run(io_cmd(&["encrypt", "--key", &keyarg], &input, &enc), s),
            "encrypt",
        );
        assert!(enc.exists());
        let ct = std::fs::read(&enc).unwrap();
        assert!(ct.starts_with(b"CMKENV1\n"));
        success(
            run(io_cmd(&["decrypt", "--key", &keyarg], &enc, &dec), s),
            "decrypt",
        );
        assert_eq!(std::fs::read(&dec).unwrap(), content(len), "{len} bytes");
    }

    // inspect prints the kid and sizes without the key.
    let big = s.join("f4194305.bin.cmk");
    let v = inspect_json(&big, s);
    assert_eq!(v[0]["kid"], "local:test");
    assert_eq!(v[0]["alg"], "A256KW");
    assert_eq!(v[0]["protocol"], "2.0");
    assert_eq!(v[0]["plaintext_size"], 4 * 1024 * 1024 + 1);
    assert_eq!(v[0]["ciphertext_size"], 4 * 1024 * 1024 + 1 + 2 * 28);
    assert!(v[0]["integrity"].as_str().unwrap().starts_with("present"));
    let table = success(run(cmd(&["inspect", big.to_str().unwrap()]), s), "inspect");
    assert!(table.contains("local:test"), "{table}");

    // An existing output is refused without --force (and kept), replaced with it.
    let one = s.join("f1.bin");
    let dec1 = s.join("dec-f1.bin");
    std::fs::write(&dec1, b"keep me").unwrap();
    let enc1 = s.join("f1.bin.cmk");
    let dec_args = |extra: &[&str]| {
        let mut c = io_cmd(&["decrypt", "--key", &keyarg], &enc1, &dec1);
        c.args(extra);
        c
    };
    let line = one_error_line(run(dec_args(&[]), s), "existing output");
    assert!(
        line.contains("dec-f1.bin") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(std::fs::read(&dec1).unwrap(), b"keep me");
    success(run(dec_args(&["--force"]), s), "decrypt --force");
    assert_eq!(std::fs::read(&dec1).unwrap(), std::fs::read(&one).unwrap());

    // A tampered body fails naming the file; no output, no temporary left.
    let mut bytes = std::fs::read(&big).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = s.join("tampered").join("f4194305.bin.cmk");
    std::fs::create_dir_all(tampered.parent().unwrap()).unwrap();
    std::fs::write(&tampered, &bytes).unwrap();
    let out_t = s.join("tampered").join("out.bin");
    let line = one_error_line(
        run(io_cmd(&["decrypt", "--key", &keyarg], &tampered, &out_t), s),
        "tampered",
    );
    assert!(line.contains("f4194305.bin.cmk"), "{line}");
    assert!(!out_t.exists());
    assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));

    // A renamed file fails (its object name no longer matches); no output.
    let renamed = s.join("tampered").join("other.bin.cmk");
    std::fs::copy(&big, &renamed).unwrap();
    let line = one_error_line(
        run(io_cmd(&["decrypt", "--key", &keyarg], &renamed, &out_t), s),
        "renamed",
    );
    assert!(
        line.contains("other.bin.cmk") && line.contains("f4194305.bin"),
        "{line}"
    );
    assert!(!out_t.exists());
    assert!(leftovers(s).is_empty());

    // Directories with -r: nested paths kept, .cmk appended and stripped.
    let tree = s.join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::create_dir_all(tree.join("c")).unwrap();
    std::fs::write(tree.join("top.txt"), b"top").unwrap();
    std::fs::write(tree.join("a/b/deep.bin"), content(70_000)).unwrap();
    std::fs::write(tree.join("c/empty"), b"").unwrap();
    let enc_dir = s.join("enc-tree");
    let dec_dir = s.join("dec-tree");
    success(
        run(
            io_cmd(&["encrypt", "--key", &keyarg, "-r"], &tree, &enc_dir),
            s,
        ),
        "encrypt -r",
    );
    for rel in ["top.txt.cmk", "a/b/deep.bin.cmk", "c/empty.cmk"] {
        assert!(enc_dir.join(rel).is_file(), "{rel}");
    }
    let out = success(
        run(cmd(&["inspect", "-r", enc_dir.to_str().unwrap()]), s),
        "inspect -r",
    );
    assert_eq!(out.lines().count(), 4, "{out}");
    success(
        run(
            io_cmd(&["decrypt", "--key", &keyarg, "-r"], &enc_dir, &dec_dir),
            s,
        ),
        "decrypt -r",
    );
    for rel in ["top.txt", "a/b/deep.bin", "c/empty"] {
        assert_eq!(
            std::fs::read(dec_dir.join(rel)).unwrap(),
            std::fs::read(tree.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // A file moved to another directory in the tree fails.
    std::fs::rename(enc_dir.join("top.txt.cmk"), enc_dir.join("c/top.txt.cmk")).unwrap();
    let moved_out = s.join("dec-moved");
    let line = one_error_line(
        run(
            io_cmd(&["decrypt", "--key", &keyarg, "-r"], &enc_dir, &moved_out),
            s,
        ),
        "moved",
    );
    assert!(line.contains("top.txt.cmk"), "{line}");
    assert!(!moved_out.join("c/top.txt").exists());

    // A directory without -r, an az:// target, a local-key file without --key.
    let line = one_error_line(
        run(
            io_cmd(&["encrypt", "--key", &keyarg], &tree, &s.join("x")),
            s,
        ),
        "dir without -r",
    );
    assert!(line.contains("-r"), "{line}");
    let line = one_error_line(
        run(
            cmd(&["encrypt", "--key", &keyarg, "az://c/p", "-o", "az://c/q"]),
            s,
        ),
        "az",
    );
    assert!(line.contains("Azure Blob"), "{line}");
    let line = one_error_line(
        run(io_cmd(&["decrypt"], &enc1, &s.join("nokey")), s),
        "no --key",
    );
    assert!(
        line.contains("local:test") && line.contains("--key"),
        "{line}"
    );
}

#[test]
fn decrypt_refuses_key_hosts_not_allowed() {
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    // A file whose recorded KeyId names another vault (crafted with a local key of that kid).
    let kid = "https://evil.example:9443/keys/k/0123456789abcdef";
    let key = key_file(s, kid);
    let input = s.join("data.bin");
    std::fs::write(&input, b"secret").unwrap();
    let enc = s.join("data.bin.cmk");
    success(
        run(
            io_cmd(
                &["encrypt", "--key", &format!("file:{}", key.display()), "-q"],
                &input,
                &enc,
            ),
            s,
        ),
        "encrypt",
    );
    let out = s.join("out.bin");
    let mut c = io_cmd(&["decrypt"], &enc, &out);
    c.env("CMKVAULT_TOKEN", "not-a-real-token");
    let line = one_error_line(run(c, s), "untrusted host");
    assert!(
        line.contains("evil.example:9443") && line.contains("--allow-key-host"),
        "{line}"
    );
    assert!(line.contains("data.bin.cmk"), "{line}");
    assert!(!out.exists());
}

#[test]
fn remote_rsa_key_round_trip() {
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    let vault = Vault::start(s);
    let base = vault.base.clone();

    // An RSA key in the vault.
    let versioned = vault.create_rsa("dataset-kek");

    let input = s.join("model.bin");
    std::fs::write(&input, content(100_000)).unwrap();
    let enc = s.join("model.bin.cmk");
    let kid = format!("{base}/keys/dataset-kek");
    success(
        run(
            vault.env(io_cmd(&["encrypt", "--key", &kid], &input, &enc)),
            s,
        ),
        "encrypt (remote)",
    );
    // The versioned kid is recorded.
    let v = inspect_json(&enc, s);
    assert_eq!(v[0]["kid"], versioned.as_str());
    assert_eq!(v[0]["alg"], "RSA-OAEP-256");

    // Decrypt without --key: the recorded KeyId's host is CMKVAULT_URL's.
    let dec = s.join("model.dec");
    success(
        run(vault.env(io_cmd(&["decrypt"], &enc, &dec)), s),
        "decrypt (remote)",
    );
    assert_eq!(std::fs::read(&dec).unwrap(), content(100_000));

    // And with --key naming the versionless key.
    let dec2 = s.join("model.dec2");
    success(
        run(
            vault.env(io_cmd(&["decrypt", "--key", &kid], &enc, &dec2)),
            s,
        ),
        "decrypt --key (remote)",
    );
    assert_eq!(std::fs::read(&dec2).unwrap(), content(100_000));

    // shred-report: the versionless key and its version match; another version does not.
    std::fs::create_dir_all(s.join("set/sub")).unwrap();
    std::fs::copy(&enc, s.join("set/sub/model.bin.cmk")).unwrap();
    let set = s.join("set");
    for (k, n) in [
        (kid.clone(), 1),
        (versioned.clone(), 1),
        (format!("{kid}/00000000000000000000000000000000"), 0),
        ("local:test".to_string(), 0),
    ] {
        let out = success(
            run(
                cmd(&[
                    "shred-report",
                    "--key",
                    &k,
                    "-r",
                    set.to_str().unwrap(),
                    "--format",
                    "json",
                ]),
                s,
            ),
            "shred-report",
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), n, "{k}: {out}");
    }
}

/// A `cmkvault serve` child with the administrator's token and an HTTPS client for the keys
/// API (trusting DATA/tls/ca.pem).
struct Vault {
    server: Server,
    token: String,
    base: String,
    ca: PathBuf,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Vault {
    fn start(s: &Path) -> Vault {
        let data = s.join("data");
        let (server, token) = serve_with_token(&data, s);
        let (rt, client) = runtime_and_client(&data, server.port);
        Vault {
            base: server.url(),
            ca: data.join("tls").join("ca.pem"),
            server,
            token,
            rt,
            client,
        }
    }

    /// `METHOD base/PATH?api-version=7.6` as the administrator; (status, JSON body or Null).
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut r = self
                .client
                .request(method, format!("{}{path}?api-version=7.6", self.base))
                .bearer_auth(&self.token);
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    /// Creates an RSA key and returns its versioned kid.
    fn create_rsa(&self, name: &str) -> String {
        let (st, v) = self.call(
            reqwest::Method::POST,
            &format!("/keys/{name}/create"),
            Some(json!({"kty": "RSA", "key_size": 2048})),
        );
        assert_eq!(st, 200, "{v}");
        v["key"]["kid"].as_str().unwrap().to_string()
    }

    /// Disables one key version.
    fn disable(&self, versioned: &str) {
        let path = versioned.strip_prefix(&self.base).unwrap();
        let (st, v) = self.call(
            reqwest::Method::PATCH,
            path,
            Some(json!({"attributes": {"enabled": false}})),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["attributes"]["enabled"], false, "{v}");
    }

    /// A command with the administrator's token, the CA and CMKVAULT_URL.
    fn env(&self, mut c: Command) -> Command {
        c.env("CMKVAULT_TOKEN", &self.token)
            .env("CMKVAULT_CA", &self.ca)
            .env("CMKVAULT_URL", &self.base);
        c
    }

    /// An administration command (`--url`, `--data`, the administrator's token).
    fn admin(&self, args: &[&str]) -> Command {
        let mut all = args.to_vec();
        let data = self.server.data.to_str().unwrap();
        all.extend_from_slice(&["--url", &self.base, "--data", data]);
        let mut c = cmkvault(&all);
        c.env("CMKVAULT_TOKEN", &self.token);
        c
    }
}

/// The bytes of a .cmk file after its container header.
fn body_of(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.starts_with(b"CMKENV1\n"));
    let len = u32::from_be_bytes(bytes[10..14].try_into().unwrap()) as usize;
    bytes[14 + len..].to_vec()
}

/// The recorded kid of a .cmk file (`inspect --format json`).
fn kid_of(path: &Path, s: &Path) -> String {
    inspect_json(path, s)[0]["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn encrypt_cmd(key: &str, input: &Path, output: &Path) -> Command {
    io_cmd(&["encrypt", "-q", "--key", key], input, output)
}

fn decrypt_cmd(input: &Path, output: &Path) -> Command {
    io_cmd(&["decrypt", "-q"], input, output)
}

#[test]
fn rotation_then_rewrap_to_latest_keeps_body_and_survives_disabling_old_version() {
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    let vault = Vault::start(s);
    let v1 = vault.create_rsa("rot-kek");
    let kid = format!("{}/keys/rot-kek", vault.base);

    // Two files in a tree, encrypted under the versionless id (v1 recorded).
    let tree = s.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.bin"), content(5 * 1024 * 1024)).unwrap();
    std::fs::write(tree.join("sub/b.bin"), content(1000)).unwrap();
    let enc = s.join("enc");
    let c = vault.env(io_cmd(&["encrypt", "-q", "--key", &kid, "-r"], &tree, &enc));
    success(run(c, s), "encrypt -r");
    let a = enc.join("a.bin.cmk");
    let b = enc.join("sub/b.bin.cmk");
    assert_eq!(kid_of(&a, s), v1);
    let body_a = body_of(&a);
    let body_b = body_of(&b);
    // A copy left under v1, to show that v1 is really disabled below.
    let stale = s.join("stale");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::copy(&a, stale.join("a.bin.cmk")).unwrap();

    // Rotate: a new current version.
    let (st, rotated) = vault.call(reqwest::Method::POST, "/keys/rot-kek/rotate", None);
    assert_eq!(st, 200, "{rotated}");
    let v2 = rotated["key"]["kid"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);

    // rewrap --to latest: one line per file, old -> new.
    let c = vault.env(cmd(&[
        "rewrap",
        "--to",
        "latest",
        "-r",
        enc.to_str().unwrap(),
    ]));
    let out = success(run(c, s), "rewrap --to latest");
    assert_eq!(out.lines().count(), 2, "{out}");
    for line in out.lines() {
        assert!(line.contains(&format!("{v1} -> {v2}")), "{line}");
    }
    for (f, body) in [(&a, &body_a), (&b, &body_b)] {
        assert_eq!(kid_of(f, s), v2);
        assert!(&body_of(f) == body, "{}: body changed", f.display());
    }
    assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));
    // Again: nothing to do, files untouched.
    let before = std::fs::read(&b).unwrap();
    let c = vault.env(cmd(&["rewrap", "--to", "latest", b.to_str().unwrap()]));
    let out = success(run(c, s), "rewrap again");
    assert!(out.contains("already"), "{out}");
    assert_eq!(std::fs::read(&b).unwrap(), before);

    // Disable v1: the re-wrapped files still decrypt, the stale copy does not.
    vault.disable(&v1);
    let dec = s.join("dec");
    let c = vault.env(io_cmd(&["decrypt", "-q", "-r"], &enc, &dec));
    success(run(c, s), "decrypt after disabling v1");
    assert_eq!(
        std::fs::read(dec.join("a.bin")).unwrap(),
        content(5 * 1024 * 1024)
    );
    assert_eq!(std::fs::read(dec.join("sub/b.bin")).unwrap(), content(1000));
    let stale_out = s.join("stale.out");
    let line = one_error_line(
        run(
            vault.env(decrypt_cmd(&stale.join("a.bin.cmk"), &stale_out)),
            s,
        ),
        "stale copy under disabled v1",
    );
    assert!(line.contains(&v1) && line.contains("disabled"), "{line}");
    assert!(!stale_out.exists());

    // A failed rewrap (the current key is disabled) leaves the file as it was.
    let stale_a = stale.join("a.bin.cmk");
    let before = std::fs::read(&stale_a).unwrap();
    let c = vault.env(cmd(&[
        "rewrap",
        "--to",
        "latest",
        stale_a.to_str().unwrap(),
    ]));
    let line = one_error_line(run(c, s), "rewrap under disabled v1");
    assert!(
        line.contains("a.bin.cmk") && line.contains("disabled"),
        "{line}"
    );
    assert_eq!(std::fs::read(&stale_a).unwrap(), before);
    assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));

    // --to KID: to a local key file, then decrypt with it; a malformed az:// target is refused.
    let local = key_file(s, "local:rewrapped");
    let local_arg = format!("file:{}", local.display());
    // (A file named on the command line is bound to its file name: a.bin is, sub/b.bin not.)
    let c = vault.env(cmd(&["rewrap", "--to", &local_arg, a.to_str().unwrap()]));
    let out = success(run(c, s), "rewrap --to file:");
    assert!(out.contains(&format!("{v2} -> local:rewrapped")), "{out}");
    assert!(body_of(&a) == body_a);
    let c = vault.env(cmd(&["rewrap", "--to", &local_arg, b.to_str().unwrap()]));
    let line = one_error_line(run(c, s), "rewrap of a file out of its tree");
    assert!(line.contains("sub/b.bin"), "{line}");
    assert_eq!(kid_of(&b, s), v2);
    let dec_b = s.join("a.dec");
    let mut c = decrypt_cmd(&a, &dec_b);
    c.args(["--key", &local_arg]);
    success(run(c, s), "decrypt with the local key");
    assert_eq!(std::fs::read(&dec_b).unwrap(), content(5 * 1024 * 1024));
    let line = one_error_line(run(cmd(&["rewrap", "--to", "latest", "az://"]), s), "az");
    assert!(line.contains("expected az://CONTAINER"), "{line}");
}

#[test]
fn revoked_key_access_fails_decrypt_naming_key_and_reason() {
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    let vault = Vault::start(s);
    let input = s.join("data.bin");
    std::fs::write(&input, content(10_000)).unwrap();
    let encrypt_under = |key: &str, name: &str| -> PathBuf {
        let dir = s.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("data.bin.cmk");
        success(run(vault.env(encrypt_cmd(key, &input, &out)), s), "encrypt");
        out
    };
    // Fails with one line naming the file, the key and `reason`; no output left.
    let expect_fail = |enc: &Path, c: Command, key: &str, reasons: &[&str]| {
        let out = enc.with_file_name("data.bin");
        let line = one_error_line(run(c, s), reasons[0]);
        assert!(line.contains("data.bin.cmk"), "{line}");
        assert!(line.contains(key), "{line}");
        for r in reasons {
            assert!(line.contains(r), "{r}: {line}");
        }
        assert!(!out.exists());
        assert!(leftovers(s).is_empty(), "{:?}", leftovers(s));
    };

    // (a) An identity with the role on the key decrypts with a client secret; without the
    // role assignment it cannot.
    let ident = success(
        run(vault.admin(&["identity", "create", "svc-data"]), s),
        "identity create",
    );
    let field = |k: &str| {
        ident
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap()
            .to_string()
    };
    let (tenant, client_id, secret) = (
        field("tenant-id"),
        field("client-id"),
        field("client-secret"),
    );
    let ka = vault.create_rsa("kek-a");
    let role = "Key Vault Crypto Service Encryption User";
    let assigned = success(
        run(
            vault.admin(&[
                "role",
                "assign",
                "--vault",
                "default",
                "--principal",
                "svc-data",
                "--role",
                role,
                "--key",
                "kek-a",
            ]),
            s,
        ),
        "role assign",
    );
    let assignment = assigned
        .lines()
        .find_map(|l| l.strip_prefix("assignment-id: "))
        .unwrap()
        .to_string();
    let fa = encrypt_under(&ka, "a");
    let as_identity = |c: Command| {
        let mut c = c;
        c.env("CMKVAULT_CA", &vault.ca)
            .env("CMKVAULT_URL", &vault.base)
            .env("AZURE_TENANT_ID", &tenant)
            .env("AZURE_CLIENT_ID", &client_id)
            .env("AZURE_CLIENT_SECRET", &secret)
            .env("AZURE_AUTHORITY_HOST", &vault.base);
        c
    };
    let out_a = s.join("a").join("data.bin");
    success(
        run(as_identity(decrypt_cmd(&fa, &out_a)), s),
        "decrypt as the identity",
    );
    assert_eq!(std::fs::read(&out_a).unwrap(), content(10_000));
    std::fs::remove_file(&out_a).unwrap();
    success(
        run(
            vault.admin(&["role", "remove", "--vault", "default", &assignment]),
            s,
        ),
        "role remove",
    );
    expect_fail(
        &fa,
        as_identity(decrypt_cmd(&fa, &out_a)),
        &ka,
        &["access denied", role],
    );

    // (b) The key version disabled.
    let kb = vault.create_rsa("kek-b");
    let fb = encrypt_under(&kb, "b");
    vault.disable(&kb);
    let out_b = fb.with_file_name("data.bin");
    expect_fail(&fb, vault.env(decrypt_cmd(&fb, &out_b)), &kb, &["disabled"]);

    // (c) The key deleted, (d) then purged.
    let kc = vault.create_rsa("kek-c");
    let fc = encrypt_under(&kc, "c");
    let fd = encrypt_under(&kc, "d");
    for (f, path, status) in [(&fc, "/keys/kek-c", 200), (&fd, "/deletedkeys/kek-c", 204)] {
        let (st, v) = vault.call(reqwest::Method::DELETE, path, None);
        assert_eq!(st, status, "{v}");
        let out = f.with_file_name("data.bin");
        expect_fail(f, vault.env(decrypt_cmd(f, &out)), &kc, &["not found"]);
    }
}

/// Free bytes on the file system holding `dir` (`df -Pk`), if `df` answers.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let avail: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(avail * 1024)
}

/// Runs `c` to completion, sampling its `VmHWM` (peak RSS) from /proc every 50 ms; returns
/// the status and the largest peak seen, in bytes.
fn run_measuring_peak_rss(mut c: Command, what: &str) -> u64 {
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    let mut peak = 0u64;
    let mut samples = 0;
    let status = loop {
        if let Ok(st) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = st.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            }) {
                peak = peak.max(kb * 1024);
                samples += 1;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{what} failed ({status}): {err}");
    assert!(samples > 0, "{what}: no VmHWM sample");
    peak
}

/// Encrypts and decrypts a 2 GiB sparse file with a local key; each process's peak RSS stays
/// under 256 MiB (measured: about 28 MiB on 2 cores; by design at most 2 × 8 regions of 4 MiB
/// in flight plus 1 MiB I/O buffers), and the output is the input (all zeros).
#[test]
fn sparse_2gib_file_round_trip_peak_rss_under_256mib() {
    const SIZE: u64 = 2 << 30;
    const BOUND: u64 = 256 << 20;
    let tmp = TempDir::new().unwrap();
    let s = tmp.path();
    match free_bytes(s) {
        Some(free) if free >= 10 << 30 => {}
        other => {
            println!(
                "skipped: needs 10 GiB free below {} (free: {other:?} bytes)",
                s.display()
            );
            return;
        }
    }
    let key = key_file(s, "local:big");
    let keyarg = format!("file:{}", key.display());
    let input = s.join("big.bin");
    std::fs::File::create(&input)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let enc = s.join("big.bin.cmk");
    let peak = run_measuring_peak_rss(encrypt_cmd(&keyarg, &input, &enc), "encrypt");
    assert!(peak < BOUND, "encrypt peak RSS {peak} bytes");
    std::fs::remove_file(&input).unwrap();
    let dec = s.join("out").join("big.bin");
    let mut c = decrypt_cmd(&enc, &dec);
    c.args(["--key", &keyarg]);
    let peak2 = run_measuring_peak_rss(c, "decrypt");
    assert!(peak2 < BOUND, "decrypt peak RSS {peak2} bytes");
    std::fs::remove_file(&enc).unwrap();
    println!("peak RSS: encrypt {peak} B, decrypt {peak2} B (bound {BOUND} B)");

    // The output: SIZE zero bytes, compared a chunk at a time.
    let f = std::fs::File::open(&dec).unwrap();
    assert_eq!(f.metadata().unwrap().len(), SIZE);
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut r = std::io::BufReader::new(f);
    let mut total = 0u64;
    loop {
        use std::io::Read;
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n] == zeros[..n], "non-zero byte near offset {total}");
        total += n as u64;
    }
    assert_eq!(total, SIZE);
}
