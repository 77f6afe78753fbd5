//! Set Blob Metadata (`PUT …?comp=metadata`), which `object_store` does not offer, for `rewrap`
//! of blobs: one request with `If-Match: <ETag>` that replaces the blob's whole metadata set and
//! leaves its body, properties and Content-MD5 alone.
//!
//! The account, endpoint and credential come from the environment `object_store` reads, with its
//! precedence: `AZURE_STORAGE_ACCOUNT_NAME` + `AZURE_STORAGE_ACCOUNT_KEY` (Shared Key,
//! HMAC-SHA-256 over Microsoft's string-to-sign), `AZURE_STORAGE_SAS_KEY` (the SAS appended to
//! the URL) or `AZURE_STORAGE_TOKEN` (a bearer token); `AZURE_STORAGE_ENDPOINT` overrides
//! `https://ACCOUNT.blob.core.windows.net`. With `AZURE_STORAGE_USE_EMULATOR=true`: Azurite's
//! well-known `devstoreaccount1` account and key unless others are given, at
//! `AZURITE_BLOB_STORAGE_URL` (default `http://127.0.0.1:10000`), path-style URLs.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use zeroize::Zeroizing;

/// The Blob service version requested (Azurite 3.37 accepts it).
const API_VERSION: &str = "2021-08-06";
/// Azurite's well-known account (public, documented by Microsoft).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key (public, documented by Microsoft).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default blob endpoint.
const EMULATOR_URL: &str = "http://127.0.0.1:10000";
/// The request's overall time limit.
const TIMEOUT: Duration = Duration::from_secs(60);

/// How requests are authorised.
enum Auth {
    /// Shared Key: the account key (decoded).
    SharedKey(Box<hmac::Key>),
    /// A SAS token (query string, without the leading `?`).
    Sas(Zeroizing<String>),
    /// A bearer token.
    Bearer(Zeroizing<String>),
}

/// A storage account to send Set Blob Metadata to.
pub(super) struct Account {
    name: String,
    /// The URL below which `CONTAINER/NAME` lies (with the account segment for the emulator).
    base: Url,
    auth: Auth,
}

/// The first value among `keys` in `vars`.
fn first<'a>(vars: &'a HashMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| vars.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// object_store's reading of a boolean setting.
fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "yes" | "y"
    )
}

impl Account {
    /// The account of the process environment (as `object_store`'s `from_env` reads it).
    pub(super) fn from_env() -> Result<Account> {
        let vars = std::env::vars()
            .filter(|(k, _)| k.starts_with("AZURE_") || k == "AZURITE_BLOB_STORAGE_URL")
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Account::from_vars(&vars)
    }

    /// The account of `vars` (lower-case names).
    fn from_vars(vars: &HashMap<String, String>) -> Result<Account> {
        let key = first(
            vars,
            &[
                "azure_storage_account_key",
                "azure_storage_access_key",
                "azure_storage_master_key",
            ],
        );
        let token = first(vars, &["azure_storage_token"]);
        let sas = first(vars, &["azure_storage_sas_key", "azure_storage_sas_token"]);
        let name = first(vars, &["azure_storage_account_name"]);
        let emulator = first(vars, &["azure_storage_use_emulator"]).is_some_and(truthy);
        let (name, base, auth) = if emulator {
            let name = name.unwrap_or(EMULATOR_ACCOUNT);
            let url = first(vars, &["azurite_blob_storage_url"]).unwrap_or(EMULATOR_URL);
            let mut base = Url::parse(url)
                .with_context(|| format!("AZURITE_BLOB_STORAGE_URL {url}: not a URL"))?;
            push_segments(&mut base, [name])?;
            // object_store's emulator order: key, token, SAS, the well-known key.
            let auth = match (key, token, sas) {
                (Some(k), _, _) => shared_key(k)?,
                (None, Some(t), _) => Auth::Bearer(Zeroizing::new(t.to_owned())),
                (None, None, Some(s)) => sas_auth(s),
                (None, None, None) => shared_key(EMULATOR_KEY)?,
            };
            (name, base, auth)
        } else {
            let Some(name) = name else {
                bail!("AZURE_STORAGE_ACCOUNT_NAME is not set (or AZURE_STORAGE_USE_EMULATOR=true)");
            };
            let url = first(vars, &["azure_storage_endpoint", "azure_endpoint"])
                .map(str::to_owned)
                .unwrap_or_else(|| format!("https://{name}.blob.core.windows.net"));
            let base = Url::parse(&url)
                .with_context(|| format!("AZURE_STORAGE_ENDPOINT {url}: not a URL"))?;
            // object_store's automatic order: token, key, (identities), SAS.
            let auth = match (token, key, sas) {
                (Some(t), _, _) => Auth::Bearer(Zeroizing::new(t.to_owned())),
                (None, Some(k), _) => shared_key(k)?,
                (None, None, Some(s)) => sas_auth(s),
                (None, None, None) => bail!(
                    "updating blob metadata needs AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY \
                     or AZURE_STORAGE_TOKEN (object_store's other credentials are not supported \
                     for it)"
                ),
            };
            (name, base, auth)
        };
        Ok(Account {
            name: name.to_owned(),
            base,
            auth,
        })
    }

    /// The URL of blob `name` in `container` (the same encoding as object_store's).
    fn blob_url(&self, container: &str, name: &str) -> Result<Url> {
        let mut url = self.base.clone();
        push_segments(&mut url, std::iter::once(container).chain(name.split('/')))?;
        Ok(url)
    }

    /// The Set Blob Metadata request for blob `name`: URL and headers, authorised, at time `now`.
    /// `metadata` is the whole new set (names are C# identifiers, values header-safe ASCII).
    fn request(
        &self,
        container: &str,
        name: &str,
        etag: &str,
        metadata: &[(String, String)],
        now: SystemTime,
    ) -> Result<(Url, HeaderMap)> {
        let mut url = self.blob_url(container, name)?;
        url.set_query(Some("comp=metadata"));
        let mut h = HeaderMap::new();
        h.insert("x-ms-date", value(&httpdate::fmt_http_date(now))?);
        h.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        h.insert(reqwest::header::IF_MATCH, value(etag)?);
        h.insert(
            reqwest::header::CONTENT_LENGTH,
            HeaderValue::from_static("0"),
        );
        for (k, v) in metadata {
            check_metadata_name(k)?;
            let hv = value(v).with_context(|| format!("metadata {k}"))?;
            h.insert(HeaderName::try_from(format!("x-ms-meta-{k}"))?, hv);
        }
        match &self.auth {
            Auth::SharedKey(key) => {
                let sts = string_to_sign(&Method::PUT, &h, &url, &self.name)?;
                let tag = hmac::sign(key, sts.as_bytes());
                let auth = format!("SharedKey {}:{}", self.name, B64.encode(tag.as_ref()));
                h.insert(reqwest::header::AUTHORIZATION, value(&auth)?);
            }
            Auth::Sas(sas) => url.set_query(Some(&format!("comp=metadata&{}", sas.as_str()))),
            Auth::Bearer(t) => {
                let mut v = value(&format!("Bearer {}", t.as_str()))?;
                v.set_sensitive(true);
                h.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        Ok((url, h))
    }
}

/// Appends path segments to `url` (percent-encoded as needed).
fn push_segments<'a>(url: &mut Url, parts: impl IntoIterator<Item = &'a str>) -> Result<()> {
    url.path_segments_mut()
        .map_err(|()| anyhow!("the storage URL cannot have a path"))?
        .pop_if_empty()
        .extend(parts);
    Ok(())
}

fn shared_key(b64: &str) -> Result<Auth> {
    let raw = Zeroizing::new(
        B64.decode(b64.trim())
            .map_err(|_| anyhow!("AZURE_STORAGE_ACCOUNT_KEY: not base64"))?,
    );
    Ok(Auth::SharedKey(Box::new(hmac::Key::new(
        hmac::HMAC_SHA256,
        &raw,
    ))))
}

fn sas_auth(sas: &str) -> Auth {
    Auth::Sas(Zeroizing::new(
        sas.trim().trim_start_matches('?').to_owned(),
    ))
}

fn value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|_| anyhow!("not a valid header value (ASCII only)"))
}

/// Metadata names are C# identifiers (ASCII letters, digits, `_`; not starting with a digit).
fn check_metadata_name(k: &str) -> Result<()> {
    let ok = k.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("metadata name {k:?} is not a valid identifier");
    }
    Ok(())
}

/// The sort key of an `x-ms-*` header name in the service's order, which is not byte order:
/// `-` is ignored, `_` sorts before digits, digits before letters, letters without case (the
/// Python SDK emulates the same collation: `_storage_header_sort`). Distinct names made of
/// these characters that differ only in `-` do not occur among the headers sent here.
fn service_order(name: &str) -> Result<Vec<u8>> {
    name.bytes()
        .filter(|&b| b != b'-')
        .map(|b| match b {
            b'_' => Ok(1),
            b'0'..=b'9' => Ok(2 + (b - b'0')),
            b'a'..=b'z' => Ok(20 + (b - b'a')),
            b'A'..=b'Z' => Ok(20 + (b - b'A')),
            _ => Err(anyhow!("header {name:?}: unexpected character")),
        })
        .collect()
}

/// The Shared Key string-to-sign of a Blob service request (Microsoft, "Authorize with Shared
/// Key", version 2009-09-19 and later): the verb, twelve standard headers (Content-Length empty
/// when 0), the `x-ms-` headers in the service's order, then `/ACCOUNT/PATH` and each query
/// parameter as `\nname:value` (names lower case, sorted).
fn string_to_sign(method: &Method, h: &HeaderMap, url: &Url, account: &str) -> Result<String> {
    use reqwest::header as n;
    let get = |name: &HeaderName| -> Result<&str> {
        h.get(name)
            .map(|v| v.to_str().map_err(|_| anyhow!("{name}: not ASCII")))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let mut s = format!("{method}\n");
    for name in [&n::CONTENT_ENCODING, &n::CONTENT_LANGUAGE] {
        s.push_str(get(name)?);
        s.push('\n');
    }
    let length = get(&n::CONTENT_LENGTH)?;
    s.push_str(if length == "0" { "" } else { length });
    s.push('\n');
    let md5 = HeaderName::from_static("content-md5");
    for name in [
        &md5,
        &n::CONTENT_TYPE,
        &n::DATE,
        &n::IF_MODIFIED_SINCE,
        &n::IF_MATCH,
        &n::IF_NONE_MATCH,
        &n::IF_UNMODIFIED_SINCE,
        &n::RANGE,
    ] {
        s.push_str(get(name)?);
        s.push('\n');
    }
    let mut ms: Vec<(Vec<u8>, &str, &str)> = Vec::new();
    for (k, v) in h {
        if k.as_str().starts_with("x-ms-") {
            let v = v.to_str().map_err(|_| anyhow!("{k}: not ASCII"))?;
            ms.push((service_order(k.as_str())?, k.as_str(), v));
        }
    }
    ms.sort();
    for (_, k, v) in ms {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push_str(&format!("/{account}{}", url.path()));
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    query.sort();
    for (k, v) in query {
        s.push_str(&format!("\n{k}:{v}"));
    }
    Ok(s)
}

/// Set Blob Metadata requests of one account.
pub(super) struct MetadataClient {
    account: Account,
    http: reqwest::Client,
}

impl MetadataClient {
    /// A client for the account of the environment.
    pub(super) fn from_env() -> Result<MetadataClient> {
        let account = Account::from_env().context("cannot set blob metadata")?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("cannot make an HTTP client")?;
        Ok(MetadataClient { account, http })
    }

    /// Replaces the metadata of blob `name` in `container` with `metadata`, only if its ETag is
    /// still `etag`. A 412 (the blob changed since `etag` was read) is an error, not retried.
    pub(super) async fn set(
        &self,
        container: &str,
        name: &str,
        etag: &str,
        metadata: &[(String, String)],
    ) -> Result<()> {
        let (url, headers) =
            self.account
                .request(container, name, etag, metadata, SystemTime::now())?;
        let resp = self
            .http
            .request(Method::PUT, url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| anyhow!("Set Blob Metadata failed: {}", without_url(e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Err(anyhow!("{}", failure(status, &code)))
    }
}

/// A reqwest error without its URL (which may carry a SAS).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// What a failed Set Blob Metadata means.
fn failure(status: StatusCode, code: &str) -> String {
    let what = format!("{} {code}", status.as_u16());
    match status {
        StatusCode::PRECONDITION_FAILED => format!(
            "the blob changed after its metadata was read ({what}: its ETag no longer matches); \
             its metadata was not replaced: run rewrap again"
        ),
        StatusCode::NOT_FOUND => format!("the blob no longer exists ({what})"),
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => format!(
            "Set Blob Metadata was refused ({what}): check the account key, or that the SAS or \
             token may write"
        ),
        _ => format!("Set Blob Metadata failed ({what})"),
    }
}

#[cfg(test)]
mod tests {
    // Test code may unwrap: a panic is a test failure with its message.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn emulator() -> Account {
        Account::from_vars(&vars(&[
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
            ("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000"),
        ]))
        .unwrap()
    }

    /// 2 June 2025 10:00:00 UTC.
    fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_858_400)
    }

    fn sample_metadata() -> Vec<(String, String)> {
        [
            ("encryptiondata", "{\"a\":1}"),
            ("a_b", "x y"),
            ("a1", "2"),
            ("Zeta", "z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The known answer: azure-storage-blob 12.31.1's `SharedKeyCredentialPolicy.on_request`,
    /// run once on the same request (PUT
    /// http://127.0.0.1:10000/devstoreaccount1/cse-test/dir/a%20b.bin?comp=metadata, the same
    /// x-ms-date, x-ms-version, If-Match, Content-Length 0 and x-ms-meta-* headers, the
    /// emulator's well-known account key) printed this Authorization header.
    #[test]
    fn shared_key_signature_matches_the_python_sdk() {
        let (url, h) = emulator()
            .request(
                "cse-test",
                "dir/a b.bin",
                "\"0x8DDA1B2C3D4E5F6\"",
                &sample_metadata(),
                fixed_time(),
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/cse-test/dir/a%20b.bin?comp=metadata"
        );
        assert_eq!(h["x-ms-date"], "Mon, 02 Jun 2025 10:00:00 GMT");
        assert_eq!(
            h["authorization"],
            "SharedKey devstoreaccount1:MCvtCVfXaNVBFA7pTeGPWmoXyvdy6puthlHqZcXXzCk="
        );
    }

    #[test]
    fn string_to_sign_layout() {
        let (url, h) = emulator()
            .request("c", "n", "\"e\"", &sample_metadata(), fixed_time())
            .unwrap();
        let sts = string_to_sign(&Method::PUT, &h, &url, "devstoreaccount1").unwrap();
        assert_eq!(
            sts,
            "PUT\n\n\n\n\n\n\n\n\"e\"\n\n\n\n\
             x-ms-date:Mon, 02 Jun 2025 10:00:00 GMT\n\
             x-ms-meta-a_b:x y\nx-ms-meta-a1:2\nx-ms-meta-encryptiondata:{\"a\":1}\n\
             x-ms-meta-zeta:z\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/c/n\ncomp:metadata"
        );
    }

    #[test]
    fn credentials_follow_object_store() {
        // Azure: the endpoint from the account name; a SAS goes into the query, unsigned.
        let a = Account::from_vars(&vars(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_SAS_KEY", "?sv=2021-08-06&sig=abc%3D"),
        ]))
        .unwrap();
        let (url, h) = a.request("c", "d/n", "\"e\"", &[], fixed_time()).unwrap();
        assert_eq!(
            url.as_str(),
            "https://acct.blob.core.windows.net/c/d/n?comp=metadata&sv=2021-08-06&sig=abc%3D"
        );
        assert!(h.get("authorization").is_none());
        // A bearer token wins over a key, as in object_store.
        let a = Account::from_vars(&vars(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_ACCOUNT_KEY", EMULATOR_KEY),
            ("AZURE_STORAGE_TOKEN", "tok"),
        ]))
        .unwrap();
        let (_, h) = a.request("c", "n", "\"e\"", &[], fixed_time()).unwrap();
        assert_eq!(h["authorization"], "Bearer tok");
        // No usable credential: refused with the variables to set.
        let e = Account::from_vars(&vars(&[
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_CLIENT_ID", "x"),
        ]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{e}");
        let e = Account::from_vars(&vars(&[])).err().unwrap().to_string();
        assert!(e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
    }

    #[test]
    fn bad_metadata_names_and_values_are_refused() {
        let a = emulator();
        for (k, v) in [("1a", "x"), ("a-b", "x"), ("", "x"), ("ok", "caf\u{e9}")] {
            let md = vec![(k.to_string(), v.to_string())];
            assert!(
                a.request("c", "n", "\"e\"", &md, fixed_time()).is_err(),
                "{k}"
            );
        }
    }

    #[test]
    fn a_412_says_the_blob_changed() {
        let m = failure(StatusCode::PRECONDITION_FAILED, "ConditionNotMet");
        assert!(
            m.contains("changed") && m.contains("412 ConditionNotMet"),
            "{m}"
        );
    }
}
