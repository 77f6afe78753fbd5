//! The administration commands end to end against `cmkvault serve` on a free loopback port:
//! `identity`, `role`, `vault update --rbac-authorization`, `vault policy`, `denials`,
//! `audit checkpoint` and `audit prune`; bad input gives one `error:` line and a non-zero exit.
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

use common::{
    cmkvault, failure_lines, run, runtime_and_client, serve_with_token, success, Output, Server,
};
use serde_json::Value;
use tempfile::TempDir;

/// Asserts a failure with exactly one `error:` line on stderr and nothing on stdout.
#[track_caller]
fn one_error_line(o: Output, what: &str) -> String {
    let lines = failure_lines(&o, what);
    assert_eq!(lines.len(), 1, "{what}: expected one line:\n{}", o.stderr);
    assert!(lines[0].starts_with("error:"), "{what}: {}", lines[0]);
    assert!(!o.stderr.contains("panicked"), "{what}: {}", o.stderr);
    assert!(o.stdout.trim().is_empty(), "{what}: stdout {}", o.stdout);
    lines[0].to_string()
}

/// A `cmkvault serve` child with the administrator's token.
struct AdminServer {
    server: Server,
    token: String,
}

impl AdminServer {
    fn start(data: &Path, scratch: &Path) -> AdminServer {
        let (server, token) = serve_with_token(data, scratch);
        AdminServer { server, token }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// `cmkvault ARGS --url URL --data DIR` with the administrator's token.
    fn cmd(&self, args: &[&str]) -> Command {
        let url = self.url();
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--url", &url, "--data", self.server.data.to_str().unwrap()]);
        let mut c = cmkvault(&all);
        c.env("CMKVAULT_TOKEN", &self.token);
        c
    }
}

/// A minimal HTTPS client for the token endpoint and the keys API (trusts DIR/tls/ca.pem).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &AdminServer) -> Http {
        let (rt, client) = runtime_and_client(&server.server.data, server.server.port);
        Http {
            rt,
            client,
            base: server.url(),
        }
    }

    /// Client-credentials token: `Ok(token)` or `Err(status)`.
    fn token(&self, tenant: &str, client_id: &str, secret: &str) -> Result<String, u16> {
        let body = format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}&scope=https%3A%2F%2Fvault.azure.net%2F.default"
        );
        self.rt.block_on(async {
            let r = self
                .client
                .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            if status == 200 {
                Ok(v["access_token"].as_str().unwrap().to_string())
            } else {
                Err(status)
            }
        })
    }

    /// GET on the default vault with `token`; returns the status.
    fn get(&self, token: &str, path: &str) -> u16 {
        self.rt.block_on(async {
            self.client
                .get(format!("{}{path}?api-version=7.6", self.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }
}

/// `key: value` lines as pairs.
fn fields(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a key: value line: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn identities_roles_policies_denials_and_audit() {
    let tmp = TempDir::new().unwrap();
    let scratch = tmp.path();
    let data = scratch.join("data");
    let server = AdminServer::start(&data, scratch);
    let http = Http::new(&server);
    let go = |args: &[&str]| run(server.cmd(args), scratch);

    // ---------------------------------------------------------------- identities
    let out = success(go(&["identity", "create", "svc-ai"]), "identity create");
    let f = fields(&out);
    let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tenant-id",
            "client-id",
            "object-id",
            "display-name",
            "client-secret"
        ],
        "{out}"
    );
    for (k, v) in &f[..3] {
        assert!(is_guid(v), "{k}: {v}");
    }
    assert_eq!(f[3].1, "svc-ai");
    let (tenant, client_id, object_id, secret) = (
        f[0].1.clone(),
        f[1].1.clone(),
        f[2].1.clone(),
        f[4].1.clone(),
    );
    assert!(secret.len() >= 40, "{secret}");

    // --secret-out: a new 0600 file with the secret and a newline.
    let secret_file = scratch.join("svc-2.secret");
    let out = success(
        go(&[
            "identity",
            "create",
            "svc-2",
            "--secret-out",
            secret_file.to_str().unwrap(),
        ]),
        "identity create --secret-out",
    );
    let f2 = fields(&out);
    assert_eq!(f2.len(), 5, "{out}");
    assert_eq!(
        f2[4],
        (
            "client-secret".to_string(),
            format!("written to {}", secret_file.display())
        )
    );
    let written = std::fs::read_to_string(&secret_file).unwrap();
    assert!(written.ends_with('\n') && written.trim().len() >= 40);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let svc2_secret = written.trim().to_string();
    assert!(http.token(&tenant, &f2[1].1, &svc2_secret).is_ok());

    // Refusals: existing secret file (nothing created), duplicate, bad name, unknown.
    let line = one_error_line(
        go(&[
            "identity",
            "create",
            "svc-3",
            "--secret-out",
            secret_file.to_str().unwrap(),
        ]),
        "--secret-out to an existing file",
    );
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), written);
    let line = one_error_line(go(&["identity", "show", "svc-3"]), "svc-3 was not made");
    assert!(line.contains("404"), "{line}");
    let line = one_error_line(go(&["identity", "create", "svc-ai"]), "duplicate identity");
    assert!(line.contains("409") && line.contains("svc-ai"), "{line}");
    let line = one_error_line(go(&["identity", "create", "bad name"]), "bad name");
    assert!(line.contains("400"), "{line}");
    let line = one_error_line(go(&["identity", "show", "nobody"]), "unknown identity");
    assert!(line.contains("404") && line.contains("nobody"), "{line}");
    let line = one_error_line(go(&["identity", "delete", "nobody"]), "unknown identity");
    assert!(line.contains("404"), "{line}");

    // list and show (by name, object id, client id).
    let list = success(go(&["identity", "list"]), "identity list");
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.lines()
            .any(|l| l == format!("svc-ai\t{object_id}\t{client_id}")),
        "{list}"
    );
    for id in ["svc-ai", object_id.as_str(), client_id.as_str()] {
        let show = success(go(&["identity", "show", id]), "identity show");
        assert_eq!(fields(&show), f[..4].to_vec(), "{show}");
    }

    // ---------------------------------------------------------------- roles
    success(
        go(&["vault", "create", "kv1", "--retention-days", "7"]),
        "vault create",
    );
    let out = success(
        go(&[
            "role",
            "assign",
            "--vault",
            "kv1",
            "--principal",
            "svc-ai",
            "--role",
            "Key Vault Crypto Service Encryption User",
            "--key",
            "dataset-kek",
        ]),
        "role assign",
    );
    let a = fields(&out);
    assert_eq!(a.len(), 4, "{out}");
    assert_eq!(a[0].0, "assignment-id");
    assert!(is_guid(&a[0].1));
    assert_eq!(a[1], ("scope".into(), "/keys/dataset-kek".into()));
    assert_eq!(
        a[2],
        (
            "role".into(),
            "Key Vault Crypto Service Encryption User".into()
        )
    );
    assert_eq!(a[3], ("principal".into(), object_id.clone()));
    let kek_assignment = a[0].1.clone();
    let out = success(
        go(&[
            "role",
            "assign",
            "--vault",
            "default",
            "--principal",
            &client_id,
            "--role",
            "12338af0-0e69-4776-bea7-57ae8d297424",
        ]),
        "role assign by ids",
    );
    let b = fields(&out);
    assert_eq!(b[1], ("scope".into(), "/".into()));
    assert_eq!(b[2], ("role".into(), "Key Vault Crypto User".into()));
    let line = one_error_line(
        go(&[
            "role",
            "assign",
            "--vault",
            "kv1",
            "--principal",
            "svc-ai",
            "--role",
            "Key Vault Janitor",
        ]),
        "unknown role",
    );
    assert!(
        line.contains("404") && line.contains("Key Vault Janitor"),
        "{line}"
    );
    let line = one_error_line(
        go(&[
            "role",
            "assign",
            "--vault",
            "kv1",
            "--principal",
            "nobody",
            "--role",
            "Key Vault Reader",
        ]),
        "unknown principal",
    );
    assert!(line.contains("404"), "{line}");

    let all = success(go(&["role", "list"]), "role list");
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(
        all.lines().any(|l| l
            == format!(
                "{kek_assignment}\tkv1\t/keys/dataset-kek\tKey Vault Crypto Service Encryption User\t{object_id}"
            )),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.contains("\tdefault\t/\tKey Vault Crypto User\t")),
        "{all}"
    );
    let kv1 = success(
        go(&["role", "list", "--vault", "kv1", "--principal", "svc-ai"]),
        "role list --vault",
    );
    assert_eq!(kv1.lines().count(), 1, "{kv1}");
    let none = success(
        go(&["role", "list", "--principal", "svc-2"]),
        "role list --principal",
    );
    assert_eq!(none, "");

    // Definitions and custom roles.
    let defs = success(go(&["role", "definitions"]), "role definitions");
    assert_eq!(defs.lines().count(), 7, "{defs}");
    assert!(
        defs.lines().any(|l| l
            == "e147488a-f6f5-4113-8e2d-b22465e65bf6\tKey Vault Crypto Service Encryption User\tbuiltin"),
        "{defs}"
    );
    let out = success(
        go(&[
            "role",
            "create",
            "Unwrap Only",
            "--data-actions",
            "Microsoft.KeyVault/vaults/keys/read,Microsoft.KeyVault/vaults/keys/unwrap/action",
        ]),
        "role create",
    );
    let r = fields(&out);
    assert_eq!(r[0].0, "role-id");
    assert_eq!(r[1], ("name".into(), "Unwrap Only".into()));
    assert_eq!(
        r[2].1,
        "Microsoft.KeyVault/vaults/keys/read,Microsoft.KeyVault/vaults/keys/unwrap/action"
    );
    let actions_file = scratch.join("actions.json");
    std::fs::write(&actions_file, r#"["Microsoft.KeyVault/vaults/keys/*"]"#).unwrap();
    success(
        go(&[
            "role",
            "create",
            "From File",
            "--data-actions-file",
            actions_file.to_str().unwrap(),
            "--not-data-actions",
            "Microsoft.KeyVault/vaults/keys/purge/action",
        ]),
        "role create from file",
    );
    let defs = success(go(&["role", "definitions"]), "role definitions");
    assert_eq!(defs.lines().count(), 9, "{defs}");
    assert!(
        defs.lines()
            .any(|l| l == format!("{}\tUnwrap Only\tcustom", r[0].1)),
        "{defs}"
    );
    let out = success(
        go(&[
            "role",
            "assign",
            "--vault",
            "kv1",
            "--principal",
            "svc-2",
            "--role",
            "unwrap only",
        ]),
        "assign a custom role",
    );
    assert_eq!(fields(&out)[2].1, "Unwrap Only");
    let line = one_error_line(
        go(&[
            "role",
            "create",
            "Bad",
            "--data-actions",
            "Microsoft.Storage/x",
        ]),
        "bad dataAction",
    );
    assert!(line.contains("400"), "{line}");
    std::fs::write(&actions_file, "not json").unwrap();
    let line = one_error_line(
        go(&[
            "role",
            "create",
            "Bad",
            "--data-actions-file",
            actions_file.to_str().unwrap(),
        ]),
        "bad actions file",
    );
    assert!(line.contains("JSON"), "{line}");
    let line = one_error_line(go(&["role", "delete", "Key Vault Reader"]), "built-in");
    assert!(line.contains("400"), "{line}");
    let out = success(go(&["role", "delete", "Unwrap Only"]), "role delete");
    assert!(out.contains("Unwrap Only"), "{out}");
    success(go(&["role", "delete", "From File"]), "role delete");
    let line = one_error_line(go(&["role", "delete", "Unwrap Only"]), "deleted role");
    assert!(line.contains("404"), "{line}");
    // Its assignment went with it.
    let list = success(go(&["role", "list", "--vault", "kv1"]), "role list");
    assert_eq!(list.lines().count(), 1, "{list}");

    // remove
    success(
        go(&["role", "remove", "--vault", "kv1", &kek_assignment]),
        "role remove",
    );
    let line = one_error_line(
        go(&["role", "remove", "--vault", "kv1", &kek_assignment]),
        "remove twice",
    );
    assert!(line.contains("404"), "{line}");
    assert_eq!(
        success(go(&["role", "list", "--vault", "kv1"]), "role list"),
        ""
    );

    // ---------------------------------------------------------------- access policies
    let out = success(
        go(&["vault", "update", "kv1", "--rbac-authorization", "false"]),
        "vault update --rbac-authorization false",
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["properties"]["enableRbacAuthorization"], false);
    assert_eq!(v["properties"]["enablePurgeProtection"], false);
    let out = success(
        go(&[
            "vault",
            "policy",
            "set",
            "kv1",
            "--principal",
            "svc-ai",
            "--keys",
            "get,wrapKey,unwrapKey",
        ]),
        "policy set",
    );
    assert_eq!(
        fields(&out),
        vec![
            ("vault".to_string(), "kv1".to_string()),
            ("principal".to_string(), object_id.clone()),
            ("keys".to_string(), "get,wrapKey,unwrapKey".to_string()),
        ]
    );
    let list = success(go(&["vault", "policy", "list", "kv1"]), "policy list");
    assert_eq!(list, format!("{object_id}\tget,wrapKey,unwrapKey\n"));
    let v: Value = serde_json::from_str(&success(go(&["vault", "show", "kv1"]), "show")).unwrap();
    assert_eq!(
        v["properties"]["accessPolicies"][0]["permissions"]["keys"],
        serde_json::json!(["get", "wrapKey", "unwrapKey"])
    );
    let line = one_error_line(
        go(&[
            "vault",
            "policy",
            "set",
            "kv1",
            "--principal",
            "svc-ai",
            "--keys",
            "get,teleport",
        ]),
        "bad --keys permission",
    );
    assert!(line.contains("400") && line.contains("teleport"), "{line}");
    let line = one_error_line(
        go(&[
            "vault",
            "policy",
            "set",
            "kv1",
            "--principal",
            "nobody",
            "--keys",
            "get",
        ]),
        "policy for an unknown identity",
    );
    assert!(line.contains("404"), "{line}");
    success(
        go(&["vault", "policy", "delete", "kv1", "--principal", "svc-ai"]),
        "policy delete",
    );
    assert_eq!(
        success(go(&["vault", "policy", "list", "kv1"]), "policy list"),
        ""
    );
    let line = one_error_line(
        go(&["vault", "policy", "delete", "kv1", "--principal", "svc-ai"]),
        "delete twice",
    );
    assert!(line.contains("404"), "{line}");
    let line = one_error_line(
        go(&["vault", "update", "kv1", "--rbac-authorization", "maybe"]),
        "bad bool",
    );
    assert!(line.contains("maybe"), "{line}");
    let line = one_error_line(go(&["vault", "update", "kv1"]), "nothing to update");
    assert!(
        line.contains("--purge-protection") && line.contains("--rbac-authorization"),
        "{line}"
    );
    let v: Value = serde_json::from_str(&success(
        go(&["vault", "update", "kv1", "--purge-protection"]),
        "purge protection still works",
    ))
    .unwrap();
    assert_eq!(v["properties"]["enablePurgeProtection"], true);
    assert_eq!(v["properties"]["enableRbacAuthorization"], false);

    // ---------------------------------------------------------------- denials
    // svc-ai has no role on the default vault: two denied listings.
    let token = http.token(&tenant, &client_id, &secret).expect("token");
    assert_eq!(http.get(&token, "/keys"), 200, "Crypto User may list");
    let svc2 = http.token(&tenant, &f2[1].1, &svc2_secret).unwrap();
    assert_eq!(http.get(&svc2, "/keys"), 403);
    assert_eq!(http.get(&svc2, "/keys/some-key"), 403);
    assert_eq!(http.get(&svc2, "/keys/some-key"), 403);
    let d = success(go(&["denials"]), "denials");
    let mut lines: Vec<&str> = d.lines().collect();
    lines.sort();
    let svc2_oid = &f2[2].1;
    assert_eq!(
        lines,
        vec![
            format!("1\t{svc2_oid}\tdefault\t-"),
            format!("2\t{svc2_oid}\tdefault\tsome-key"),
        ],
        "{d}"
    );

    // ---------------------------------------------------------------- rotate and delete
    // Refused over an existing file: the secret is not rotated.
    let line = one_error_line(
        go(&[
            "identity",
            "rotate-secret",
            "svc-ai",
            "--secret-out",
            secret_file.to_str().unwrap(),
        ]),
        "rotate-secret to an existing file",
    );
    assert!(line.contains("already exists"), "{line}");
    assert!(http.token(&tenant, &client_id, &secret).is_ok());
    let out = success(go(&["identity", "rotate-secret", "svc-ai"]), "rotate");
    let rf = fields(&out);
    assert_eq!(rf[..4].to_vec(), f[..4].to_vec(), "{out}");
    assert_eq!(rf[4].0, "client-secret");
    assert_ne!(rf[4].1, secret);
    assert_eq!(http.token(&tenant, &client_id, &secret), Err(401));
    assert!(http.token(&tenant, &client_id, &rf[4].1).is_ok());
    let new_file = scratch.join("rotated.secret");
    let out = success(
        go(&[
            "identity",
            "rotate-secret",
            &object_id,
            "--secret-out",
            new_file.to_str().unwrap(),
        ]),
        "rotate to a file",
    );
    assert_eq!(
        fields(&out)[4].1,
        format!("written to {}", new_file.display())
    );
    let rotated = std::fs::read_to_string(&new_file).unwrap();
    assert!(http.token(&tenant, &client_id, rotated.trim()).is_ok());
    let line = one_error_line(
        go(&["identity", "rotate-secret", "nobody"]),
        "rotate unknown",
    );
    assert!(line.contains("404"), "{line}");

    let out = success(go(&["identity", "delete", "svc-ai"]), "identity delete");
    assert!(out.contains(&object_id), "{out}");
    assert_eq!(http.get(&token, "/keys"), 401, "deleted identity's token");
    let line = one_error_line(go(&["identity", "show", &client_id]), "deleted");
    assert!(line.contains("404"), "{line}");

    // ---------------------------------------------------------------- audit
    let out = success(go(&["audit", "checkpoint"]), "audit checkpoint");
    let c = fields(&out);
    assert_eq!(c[0].0, "checkpoint-seq");
    assert!(c[0].1.parse::<u64>().unwrap() > 0);
    let out = success(
        go(&["audit", "prune", "--older-than", "90d"]),
        "audit prune",
    );
    assert_eq!(out, "removed: 0\n");
    for bad in ["12h", "0d", "90", "soon"] {
        let line = one_error_line(go(&["audit", "prune", "--older-than", bad]), bad);
        assert!(line.contains("--older-than"), "{bad}: {line}");
    }
    // The local audit commands still read DIR/audit.db and the chain verifies.
    let out = success(
        run(
            cmkvault(&["audit", "verify", "--data", data.to_str().unwrap()]),
            scratch,
        ),
        "audit verify",
    );
    assert!(out.starts_with("audit chain OK"), "{out}");

    // Without a token: one line naming CMKVAULT_TOKEN.
    let mut c = server.cmd(&["identity", "list"]);
    c.env_remove("CMKVAULT_TOKEN");
    let line = one_error_line(run(c, scratch), "no token");
    assert!(line.contains("CMKVAULT_TOKEN"), "{line}");
    // A non-admin token is refused management.
    let mut c = server.cmd(&["identity", "list"]);
    c.env("CMKVAULT_TOKEN", &svc2);
    let line = one_error_line(run(c, scratch), "non-admin");
    assert!(line.contains("403"), "{line}");
    drop(server);
}
