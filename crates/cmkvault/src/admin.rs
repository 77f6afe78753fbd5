//! `cmkvault identity …`, `role …`, `vault policy …` and `denials`: identities, roles, role
//! assignments, access policies and denial counters through the server's management API.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::ClientArgs;

/// `cmkvault identity` subcommands.
#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
    /// Create an identity (service principal); prints its ids and its client secret (once).
    Create {
        /// Name (1-128 letters, digits, '-', '_' or '.').
        name: String,
        /// Write the client secret to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        secret_out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List identities: name, object id, client id.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an identity.
    Show {
        /// Name, object id or client id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an identity with its role assignments and access policies; its tokens stop
    /// working at once.
    Delete {
        /// Name, object id or client id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace an identity's client secret; prints the new one (once).
    RotateSecret {
        /// Name, object id or client id.
        id: String,
        /// Write the client secret to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        secret_out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `cmkvault role` subcommands.
#[derive(Subcommand)]
pub(crate) enum RoleCommand {
    /// Assign a role to an identity on a vault, or on one key of it.
    Assign {
        /// Vault name.
        #[arg(long)]
        vault: String,
        /// Identity: name, object id or client id.
        #[arg(long)]
        principal: String,
        /// Role name (such as "Key Vault Crypto User") or id.
        #[arg(long)]
        role: String,
        /// Limit the assignment to this key.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List role assignments: id, vault, scope, role, principal.
    List {
        /// Only this vault (default: all vaults).
        #[arg(long)]
        vault: Option<String>,
        /// Only this identity.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a role assignment.
    Remove {
        /// Vault name.
        #[arg(long)]
        vault: String,
        /// Assignment id (from `role list`).
        assignment_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List role definitions: id, name, builtin or custom.
    Definitions {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Define a custom role from a list of dataActions.
    Create {
        /// Role name.
        name: String,
        /// Comma-separated dataActions (such as Microsoft.KeyVault/vaults/keys/read).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "data_actions_file",
            conflicts_with = "data_actions_file"
        )]
        data_actions: Vec<String>,
        /// A file holding the dataActions as a JSON list of strings.
        #[arg(long)]
        data_actions_file: Option<PathBuf>,
        /// Comma-separated dataActions to exclude.
        #[arg(long, value_delimiter = ',')]
        not_data_actions: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a custom role (and its assignments).
    Delete {
        /// Role name or id.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `cmkvault vault policy` subcommands.
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Set an identity's key permissions on a vault (replacing earlier ones).
    Set {
        /// Vault name.
        name: String,
        /// Identity: name, object id or client id.
        #[arg(long)]
        principal: String,
        /// Comma-separated key permissions (get, list, wrapKey, unwrapKey, sign, ..., all).
        #[arg(long, value_delimiter = ',', required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a vault's access policies: object id, key permissions.
    List {
        /// Vault name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove an identity's access policy from a vault.
    Delete {
        /// Vault name.
        name: String,
        /// Identity: name, object id or client id.
        #[arg(long)]
        principal: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("-")
}

/// A new secret file, created (mode 0600, never over an existing file) before the secret
/// exists, so a refusal costs nothing and a created secret always has somewhere to go.
struct SecretFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl SecretFile {
    fn create(path: &Path) -> Result<Self> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} already exists: refusing to overwrite it",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
        Ok(SecretFile {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    fn write(mut self, secret: &str) -> Result<()> {
        let mut file = self.file.take().context("secret file already written")?;
        file.write_all(secret.as_bytes())
            .and_then(|_| file.write_all(b"\n"))
            .and_then(|_| file.sync_all())
            .with_context(|| {
                format!(
                    "cannot write the client secret to {} (run `identity rotate-secret` for a new one)",
                    self.path.display()
                )
            })
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        // Not written (the request failed): remove the empty file.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn print_identity(v: &Value) {
    println!("tenant-id: {}", text(v, "tenantId"));
    println!("client-id: {}", text(v, "clientId"));
    println!("object-id: {}", text(v, "objectId"));
    println!("display-name: {}", text(v, "displayName"));
}

/// Prints an identity with its secret, or writes the secret to `out`.
fn print_with_secret(v: &Value, out: Option<SecretFile>) -> Result<()> {
    let secret = v["clientSecret"]
        .as_str()
        .context("the server sent no clientSecret")?;
    print_identity(v);
    match out {
        Some(f) => {
            let path = f.path.clone();
            f.write(secret)?;
            println!("client-secret: written to {}", path.display());
        }
        None => println!("client-secret: {secret}"),
    }
    Ok(())
}

/// Sends a request whose answer carries a new client secret and prints the identity with the
/// secret, into `secret_out` when given (created before the request is sent).
async fn send_and_print_secret(
    client: &ClientArgs,
    secret_out: Option<&Path>,
    method: &str,
    path: &str,
) -> Result<()> {
    let c = Client::new(client)?;
    let out = secret_out.map(SecretFile::create).transpose()?;
    let v = c.send(method, path, None).await?;
    print_with_secret(&v, out)
}

/// Runs an identity subcommand.
pub(crate) async fn identity(cmd: IdentityCommand) -> Result<()> {
    match cmd {
        IdentityCommand::Create {
            name,
            secret_out,
            client,
        } => {
            send_and_print_secret(
                &client,
                secret_out.as_deref(),
                "PUT",
                &format!("/management/identities/{}", enc(&name)),
            )
            .await?;
        }
        IdentityCommand::List { client } => {
            let v = Client::new(&client)?
                .send("GET", "/management/identities", None)
                .await?;
            for p in v["value"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}",
                    text(p, "displayName"),
                    text(p, "objectId"),
                    text(p, "clientId")
                );
            }
        }
        IdentityCommand::Show { id, client } => {
            let v = Client::new(&client)?
                .send("GET", &format!("/management/identities/{}", enc(&id)), None)
                .await?;
            print_identity(&v);
        }
        IdentityCommand::Delete { id, client } => {
            let v = Client::new(&client)?
                .send(
                    "DELETE",
                    &format!("/management/identities/{}", enc(&id)),
                    None,
                )
                .await?;
            println!(
                "deleted identity {} ({})",
                text(&v, "displayName"),
                text(&v, "objectId")
            );
        }
        IdentityCommand::RotateSecret {
            id,
            secret_out,
            client,
        } => {
            send_and_print_secret(
                &client,
                secret_out.as_deref(),
                "POST",
                &format!("/management/identities/{}/rotateSecret", enc(&id)),
            )
            .await?;
        }
    }
    Ok(())
}

fn print_assignment_line(a: &Value) {
    println!(
        "{}\t{}\t{}\t{}\t{}",
        text(a, "id"),
        text(a, "vault"),
        text(a, "scope"),
        text(a, "roleName"),
        text(a, "principalId")
    );
}

/// Runs a role subcommand.
pub(crate) async fn role(cmd: RoleCommand) -> Result<()> {
    match cmd {
        RoleCommand::Assign {
            vault,
            principal,
            role,
            key,
            client,
        } => {
            let mut body = json!({"principal": principal, "role": role});
            if let Some(k) = key {
                body["key"] = json!(k);
            }
            let a = Client::new(&client)?
                .send(
                    "PUT",
                    &format!("/management/vaults/{}/roleAssignments", enc(&vault)),
                    Some(body),
                )
                .await?;
            println!("assignment-id: {}", text(&a, "id"));
            println!("scope: {}", text(&a, "scope"));
            println!("role: {}", text(&a, "roleName"));
            println!("principal: {}", text(&a, "principalId"));
        }
        RoleCommand::List {
            vault,
            principal,
            client,
        } => {
            let c = Client::new(&client)?;
            let vaults = match vault {
                Some(v) => vec![v],
                None => c
                    .send("GET", "/management/vaults", None)
                    .await?
                    .get("value")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["name"].as_str().map(str::to_string))
                    .collect(),
            };
            let query = principal
                .map(|p| format!("?principal={}", enc(&p)))
                .unwrap_or_default();
            for v in vaults {
                let list = c
                    .send(
                        "GET",
                        &format!("/management/vaults/{}/roleAssignments{query}", enc(&v)),
                        None,
                    )
                    .await?;
                for a in list["value"].as_array().into_iter().flatten() {
                    print_assignment_line(a);
                }
            }
        }
        RoleCommand::Remove {
            vault,
            assignment_id,
            client,
        } => {
            let a = Client::new(&client)?
                .send(
                    "DELETE",
                    &format!(
                        "/management/vaults/{}/roleAssignments/{}",
                        enc(&vault),
                        enc(&assignment_id)
                    ),
                    None,
                )
                .await?;
            println!(
                "removed assignment {} ({} on {}{} for {})",
                text(&a, "id"),
                text(&a, "roleName"),
                text(&a, "vault"),
                text(&a, "scope").trim_end_matches('/'),
                text(&a, "principalId")
            );
        }
        RoleCommand::Definitions { client } => {
            let v = Client::new(&client)?
                .send("GET", "/management/roleDefinitions", None)
                .await?;
            for r in v["value"].as_array().into_iter().flatten() {
                let kind = if r["builtIn"].as_bool() == Some(true) {
                    "builtin"
                } else {
                    "custom"
                };
                println!("{}\t{}\t{kind}", text(r, "id"), text(r, "name"));
            }
        }
        RoleCommand::Create {
            name,
            data_actions,
            data_actions_file,
            not_data_actions,
            client,
        } => {
            let actions: Vec<String> = match data_actions_file {
                Some(f) => {
                    let t = std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    serde_json::from_str(&t).with_context(|| {
                        format!("{} does not hold a JSON list of strings", f.display())
                    })?
                }
                None => data_actions,
            };
            let clean = |v: Vec<String>| -> Vec<String> {
                v.into_iter()
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect()
            };
            let (actions, not_actions) = (clean(actions), clean(not_data_actions));
            if actions.is_empty() {
                bail!("a custom role needs at least one dataAction (--data-actions A,B)");
            }
            let r = Client::new(&client)?
                .send(
                    "PUT",
                    &format!("/management/roleDefinitions/{}", enc(&name)),
                    Some(json!({"dataActions": actions, "notDataActions": not_actions})),
                )
                .await?;
            println!("role-id: {}", text(&r, "id"));
            println!("name: {}", text(&r, "name"));
            let list = |f: &str| {
                r[f].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            println!("data-actions: {}", list("dataActions"));
            let not = list("notDataActions");
            if !not.is_empty() {
                println!("not-data-actions: {not}");
            }
        }
        RoleCommand::Delete { name, client } => {
            let r = Client::new(&client)?
                .send(
                    "DELETE",
                    &format!("/management/roleDefinitions/{}", enc(&name)),
                    None,
                )
                .await?;
            println!("deleted role {} ({})", text(&r, "name"), text(&r, "id"));
        }
    }
    Ok(())
}

fn permissions(p: &Value) -> String {
    p["permissions"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs a `vault policy` subcommand.
pub(crate) async fn policy(cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Set {
            name,
            principal,
            keys,
            client,
        } => {
            let keys: Vec<String> = keys
                .into_iter()
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                bail!("--keys needs at least one permission, such as get,wrapKey,unwrapKey");
            }
            let p = Client::new(&client)?
                .send(
                    "PUT",
                    &format!(
                        "/management/vaults/{}/accessPolicies/{}",
                        enc(&name),
                        enc(&principal)
                    ),
                    Some(json!({"permissions": {"keys": keys}})),
                )
                .await?;
            println!("vault: {name}");
            println!("principal: {}", text(&p, "objectId"));
            println!("keys: {}", permissions(&p));
        }
        PolicyCommand::List { name, client } => {
            let v = Client::new(&client)?
                .send(
                    "GET",
                    &format!("/management/vaults/{}/accessPolicies", enc(&name)),
                    None,
                )
                .await?;
            for p in v["value"].as_array().into_iter().flatten() {
                println!("{}\t{}", text(p, "objectId"), permissions(p));
            }
        }
        PolicyCommand::Delete {
            name,
            principal,
            client,
        } => {
            Client::new(&client)?
                .send(
                    "DELETE",
                    &format!(
                        "/management/vaults/{}/accessPolicies/{}",
                        enc(&name),
                        enc(&principal)
                    ),
                    None,
                )
                .await?;
            println!("removed the access policy of {principal} on vault {name}");
        }
    }
    Ok(())
}

/// `cmkvault denials`: one line per counter (count, principal, vault, key).
pub(crate) async fn denials(client: ClientArgs) -> Result<()> {
    let v = Client::new(&client)?
        .send("GET", "/management/denials", None)
        .await?;
    for d in v["value"].as_array().into_iter().flatten() {
        println!(
            "{}\t{}\t{}\t{}",
            d["count"].as_u64().unwrap_or(0),
            text(d, "principal"),
            text(d, "vault"),
            text(d, "key")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(enc("Key Vault Crypto User"), "Key%20Vault%20Crypto%20User");
        assert_eq!(enc("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(enc("svc-ai_1.x~"), "svc-ai_1.x~");
    }
}
