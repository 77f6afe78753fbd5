//! The IMDS-shaped managed-identity endpoint: tokens for the host's identities, loopback only.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use common::*;
use serde_json::Value;

async fn start_with_imds(
    identities: &[&str],
) -> (tempfile::TempDir, cmkvault_server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let data = cmkvault_server::datadir::open(dir.path(), None).unwrap();
    let mut opts = options();
    opts.imds_listen = Some("127.0.0.1:0".parse().unwrap());
    opts.imds_identities = identities.iter().map(|s| s.to_string()).collect();
    let srv = cmkvault_server::start(&data, opts).await.unwrap();
    (dir, srv)
}

#[tokio::test]
async fn managed_identity_tokens_work_on_the_vault_and_need_the_metadata_header() {
    let (dir, srv) = start_with_imds(&["mi-host", "mi-second"]).await;
    let (first, _) = srv.service.create_principal("mi-host").unwrap();
    let (second, _) = srv.service.create_principal("mi-second").unwrap();
    let imds = format!(
        "http://{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        srv.imds_addr.unwrap()
    );
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();

    // Without `Metadata: true` the request is refused (SSRF protection, as in Azure).
    let r = plain.get(&imds).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // The default identity is the first one.
    let r = plain
        .get(&imds)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["client_id"], first.client_id.as_str());
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap().to_string();

    // A client_id selects another of the host's identities; an unknown one is refused.
    let r = plain
        .get(format!("{imds}&client_id={}", second.client_id))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["client_id"], second.client_id.as_str());
    let r = plain
        .get(format!(
            "{imds}&client_id=00000000-0000-0000-0000-000000000000"
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Only the vault resource is served.
    let r = plain
        .get(imds.replace("vault.azure.net", "management.azure.com"))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The token is a real vault token: without a role it authenticates but is refused (403).
    let client = http_client(&dir.path().join("tls").join("ca.pem"));
    let base = format!("https://localhost:{}", srv.addr.port());
    let r = send(
        client
            .get(with_api_version(&format!("{base}/keys")))
            .bearer_auth(&token),
    )
    .await;
    expect_inner(&r, 403, "Forbidden", "ForbiddenByRbac");
    srv.service
        .assign_role("default", "mi-host", "Key Vault Reader", None)
        .unwrap();
    let r = send(
        client
            .get(with_api_version(&format!("{base}/keys")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(r.0, 200, "{:?}", r.2);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_endpoint_refuses_non_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let data = cmkvault_server::datadir::open(dir.path(), None).unwrap();
    let mut opts = options();
    opts.imds_listen = Some("0.0.0.0:0".parse().unwrap());
    opts.imds_identities = vec!["x".into()];
    let err = cmkvault_server::start(&data, opts).await.err().unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
}

/// The endpoint is served with the vault's connection limits: a client dripping headers is
/// disconnected after the header timeout, and the refusal is counted.
#[tokio::test]
async fn a_client_dripping_headers_to_the_endpoint_is_disconnected_and_counted() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let data = cmkvault_server::datadir::open(dir.path(), None).unwrap();
    let mut opts = options();
    opts.imds_listen = Some("127.0.0.1:0".parse().unwrap());
    opts.imds_identities = vec!["mi-host".into()];
    opts.limits.header_timeout = Duration::from_millis(400);
    let srv = cmkvault_server::start(&data, opts).await.unwrap();
    assert_eq!(srv.rejections().header_timeouts, 0);

    let mut conn = tokio::net::TcpStream::connect(srv.imds_addr.unwrap())
        .await
        .unwrap();
    conn.write_all(b"GET /metadata/identity/oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // One header line every 100 ms for up to 15 s: the server must hang up long before.
    let closed = drip_headers(&mut conn).await;
    assert!(closed, "a client dripping headers kept its connection");
    let mut counted = false;
    for _ in 0..250 {
        if srv.rejections().header_timeouts >= 1 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(counted, "the header timeout was not counted");
    srv.shutdown().await;
}
