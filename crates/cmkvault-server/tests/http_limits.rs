//! The HTTP layer's limits: bounded audit records for oversized requests, header-size caps,
//! key names checked before authorisation (denial counters stay small), header/body/idle/TLS
//! timeouts, the connection cap, 503 over the in-flight cap, strict Host parsing, refusal
//! counters, and no access-policy match claimed for the break-glass administrator.
//!
//! Timeouts are set short in each test's options; waits are bounded and never assert speed.
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cmkvault_server::{HttpLimits, ServerOptions};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Longest any test here waits for the server to do something.
const BOUND: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ helpers

/// Starts a test server with these connection limits (and the usual test options).
async fn start_limited(limits: HttpLimits) -> TestServer {
    TestServer::start_with(ServerOptions {
        limits,
        ..options()
    })
    .await
}

/// A TCP connection to the test server and a TLS handshake over it (no ALPN: HTTP/1.1).
async fn tls_handshake(ts: &TestServer) -> std::io::Result<TlsStream<TcpStream>> {
    let config = tls_config(&ts.dir.path().join("tls").join("ca.pem"));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(ts.srv.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// A raw HTTP/1.1-over-TLS connection to the test server.
async fn tls_connect(ts: &TestServer) -> TlsStream<TcpStream> {
    tls_handshake(ts).await.expect("TLS handshake")
}

/// Reads `chunk` bytes at a time until `done(what was read)` holds or the server closes the
/// connection (or `BOUND` passes: then `None`).
async fn read_until(
    conn: &mut TlsStream<TcpStream>,
    chunk: usize,
    done: impl Fn(&[u8]) -> bool,
) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    let read = async {
        while !done(&out) {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Reads until the server closes the connection (or `BOUND` passes: then `None`).
async fn read_to_close(conn: &mut TlsStream<TcpStream>) -> Option<String> {
    read_until(conn, 4096, |_| false).await
}

/// Reads one response head (up to the blank line, a byte at a time so nothing after it is
/// consumed), within `BOUND`.
async fn read_head(conn: &mut TlsStream<TcpStream>) -> Option<String> {
    read_until(conn, 1, |out| out.ends_with(b"\r\n\r\n")).await
}

/// Sends an authorised `GET /keys` on `conn` and asserts the answer's head says 200.
async fn get_keys_on(ts: &TestServer, conn: &mut TlsStream<TcpStream>) {
    let request = format!(
        "GET /keys?api-version=7.6 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        ts.token
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(conn).await.expect("an answer");
    assert_eq!(status_of(&head), 200, "{head}");
}

/// Sends the head of an authorised JSON `POST path` announcing `length` body bytes, then
/// `body_start`, on a new connection, and returns the connection.
async fn post_head(
    ts: &TestServer,
    path: &str,
    length: usize,
    body_start: &str,
) -> TlsStream<TcpStream> {
    let mut conn = tls_connect(ts).await;
    let head = format!(
        "POST {path}?api-version=7.6 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{body_start}",
        ts.token
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

/// Sends a whole request text (`Connection: close` is up to the caller) and returns the
/// response text.
async fn raw_exchange(ts: &TestServer, request: &str) -> String {
    let mut conn = tls_connect(ts).await;
    conn.write_all(request.as_bytes()).await.expect("write");
    read_to_close(&mut conn)
        .await
        .expect("the server answers and closes")
}

/// Status code of a response text.
fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"))
}

/// The JSON body of a response text.
fn body_of(resp: &str) -> Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// An HTTP/2 client (ALPN h2 only) for the test server.
fn h2_client(ts: &TestServer) -> reqwest::Client {
    let mut config = tls_config(&ts.dir.path().join("tls").join("ca.pem"));
    config.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
        .timeout(BOUND)
        .build()
        .expect("reqwest client")
}

/// Waits (at most `BOUND`) until `cond` holds; fails the test otherwise.
#[track_caller]
fn wait_until(cond: impl Fn() -> bool) -> impl std::future::Future<Output = ()> {
    let caller = std::panic::Location::caller();
    async move {
        for _ in 0..(BOUND.as_millis() / 20) {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("condition not met in time ({caller})");
    }
}

/// The test server's `audit.db`, opened directly.
fn audit_db(ts: &TestServer) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(ts.dir.path().join("audit.db")).expect("open audit.db");
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

/// Sum of the lengths of the audit records and their number, read from `audit.db`.
fn audit_size(ts: &TestServer) -> (i64, i64) {
    audit_db(ts)
        .query_row(
            "SELECT COALESCE(SUM(length(record)), 0), COUNT(*) FROM audit WHERE kind = 'event'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

/// The longest audit record, in bytes.
fn longest_record(ts: &TestServer) -> i64 {
    audit_db(ts)
        .query_row(
            "SELECT COALESCE(MAX(length(record)), 0) FROM audit",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// Every audit record so far, parsed, oldest first.
fn audit_records(ts: &TestServer) -> Vec<Value> {
    let rows = ts
        .srv
        .audit
        .as_ref()
        .unwrap()
        .store()
        .query(&Default::default())
        .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(&r.record).unwrap())
        .collect()
}

/// A request with a client-chosen URL tail and headers, returning the status or `None` when
/// the server closed the connection instead of answering.
async fn try_status(rb: reqwest::RequestBuilder) -> Option<u16> {
    rb.send().await.ok().map(|r| r.status().as_u16())
}

/// An authorised `GET /keys` through the test client.
fn get_keys(ts: &TestServer) -> reqwest::RequestBuilder {
    ts.client
        .get(format!("{}/keys?api-version={API}", ts.base))
        .bearer_auth(&ts.token)
}

// ------------------------------------------------------------------ 1. bounded audit rows

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_give_bounded_audit_rows_or_none() {
    let ts = TestServer::start().await;
    let before = ts.srv.rejections();

    // Over the header cap: refused by the HTTP layer (431), never reaching the handler.
    let q63 = "q".repeat(63 * 1024);
    let url = format!("{}/keys?api-version={API}&x={q63}", ts.base);
    let s = try_status(ts.client.get(&url)).await;
    assert!(matches!(s, None | Some(431) | Some(414)), "{s:?}");
    let huge_host = format!("{}.example", "h".repeat(100_000));
    let s = try_status(
        ts.client
            .get(format!("{}/keys?api-version={API}", ts.base))
            .header("user-agent", "u".repeat(100_000))
            .header("x-ms-client-request-id", huge_host),
    )
    .await;
    assert!(matches!(s, None | Some(431)), "{s:?}");
    // HTTP/2: over the cap (under HTTP/2's own limit of twice the cap): 431 from the
    // connection layer, Azure-shaped.
    let h2 = h2_client(&ts);
    let q40 = "q".repeat(40 * 1024);
    let r = send(h2.get(format!("{}/keys?api-version={API}&x={q40}", ts.base))).await;
    expect_error(&r, 431, "RequestHeaderFieldsTooLarge");
    let s = try_status(h2.get(&url)).await;
    assert!(matches!(s, None | Some(431)), "{s:?}");
    // HTTP/1.1: hyper's 431 (no body) or a closed connection.
    let resp = raw_exchange(
        &ts,
        &format!("GET /keys?api-version={API}&x={q63} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
    .await;
    assert!(resp.is_empty() || status_of(&resp) == 431, "{resp}");
    let resp = raw_exchange(
        &ts,
        &format!(
            "GET /keys?api-version={API} HTTP/1.1\r\nHost: {}.example\r\n\r\n",
            "h".repeat(100_000)
        ),
    )
    .await;
    assert!(resp.is_empty() || status_of(&resp) == 431, "{resp}");
    assert_eq!(
        audit_size(&ts).1,
        0,
        "no record for a request refused before the handler"
    );
    // Counted when the connection ends, which may be just after the client saw the answer.
    wait_until(|| ts.srv.rejections().malformed >= before.malformed + 5).await;

    // Under the cap but long: answered, and every field of the record is bounded.
    let q20 = "q".repeat(16 * 1024);
    for _ in 0..3 {
        let r = send(
            ts.client
                .get(format!("{}/keys?api-version={API}&x={q20}", ts.base))
                .header("user-agent", "u".repeat(6 * 1024))
                .header("x-ms-client-request-id", "c".repeat(6 * 1024)),
        )
        .await;
        assert_eq!(r.0, 401);
    }
    let longest = longest_record(&ts);
    assert!(longest < 4096, "an audit record of {longest} bytes");
    let rec = &audit_records(&ts)[0];
    let uri = rec["properties"]["requestUri"].as_str().unwrap();
    assert!(uri.contains("[cut "), "a cut URI says so: {uri}");
    assert!(uri.contains("sha256 "), "{uri}");

    // 300 such requests: the log grows by a bounded amount per request.
    let (bytes0, n0) = audit_size(&ts);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..6 {
        let client = ts.client.clone();
        let url = format!("{}/keys?api-version={API}&x={q20}", ts.base);
        tasks.spawn(async move {
            for i in 0..50 {
                let r = client
                    .get(&url)
                    .header("user-agent", format!("{w}-{i}-{}", "u".repeat(6 * 1024)))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status().as_u16(), 401);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (bytes1, n1) = audit_size(&ts);
    assert_eq!(n1 - n0, 300);
    assert!(
        bytes1 - bytes0 < 300 * 4096,
        "300 requests added {} bytes of records",
        bytes1 - bytes0
    );
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 2. key names

#[tokio::test]
async fn invalid_key_names_are_refused_before_authorisation() {
    let ts = TestServer::start().await;
    let (p, _secret) = ts.srv.service.create_principal("least-privilege").unwrap();
    let weak = ts
        .srv
        .tokens
        .issue(&p.object_id, &p.client_id, ts.now(), 600)
        .unwrap();
    for i in 0..60 {
        let name = format!("{i}{}", "n".repeat(8_000));
        let r = send(
            ts.client
                .get(format!("{}/keys/{name}?api-version={API}", ts.base))
                .bearer_auth(&weak),
        )
        .await;
        expect_error(&r, 400, "BadParameter");
        let r = send(
            ts.client
                .post(format!("{}/keys/{name}/wrapkey?api-version={API}", ts.base))
                .bearer_auth(&weak)
                .json(&json!({"alg": "RSA-OAEP", "value": "AA"})),
        )
        .await;
        expect_error(&r, 400, "BadParameter");
    }
    // A 60 KB name does not even reach the handler.
    let s = try_status(
        ts.client
            .get(format!(
                "{}/keys/{}?api-version={API}",
                ts.base,
                "n".repeat(60_000)
            ))
            .bearer_auth(&weak),
    )
    .await;
    assert!(matches!(s, None | Some(431) | Some(414)), "{s:?}");
    assert_eq!(
        ts.srv.alerts.footprint(),
        (0, 0),
        "{:?}",
        ts.srv.alerts.counters()
    );
    // A valid name is still authorised (and denied) as before.
    let r = send(
        ts.client
            .get(format!("{}/keys/valid-name?api-version={API}", ts.base))
            .bearer_auth(&weak),
    )
    .await;
    assert_eq!(r.0, 403, "{}", r.2);
    assert_eq!(ts.srv.alerts.footprint().0, 1);
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 3. timeouts and caps

/// Short header, body and TLS-handshake timeouts.
fn short() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(30),
        tls_handshake_timeout: Duration::from_millis(400),
        ..Default::default()
    }
}

/// The default limits changed by `set`, with header and body timeouts long enough for a test
/// to hold a connection or a request open.
fn patient(set: impl FnOnce(&mut HttpLimits)) -> HttpLimits {
    let mut limits = HttpLimits {
        header_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    set(&mut limits);
    limits
}

#[tokio::test]
async fn a_client_dripping_headers_is_disconnected() {
    let ts = start_limited(short()).await;
    let mut conn = tls_connect(&ts).await;
    conn.write_all(b"GET /keys?api-version=7.6 HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // One header line every 100 ms for up to 15 s: the server must hang up long before.
    let closed = drip_headers(&mut conn).await;
    assert!(closed, "a client dripping headers kept its connection");
    wait_until(|| ts.srv.rejections().header_timeouts >= 1).await;
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_answered() {
    let ts = start_limited(short()).await;
    let before = ts.srv.rejections();
    // Announced larger than the body cap: refused at once, nothing read.
    let mut conn = post_head(&ts, "/keys/k/create", 100_000_000, "").await;
    let resp = read_head(&mut conn).await.expect("an answer");
    assert_eq!(status_of(&resp), 413, "{resp}");

    // A small body that never comes: 408 after the body timeout.
    let mut conn = post_head(&ts, "/rng", 1000, "{\"count\"").await;
    let resp = read_head(&mut conn).await.expect("an answer");
    assert_eq!(status_of(&resp), 408, "{resp}");
    assert!(ts.srv.rejections().body_timeouts > before.body_timeouts);
    // The refusal is audited like any request.
    let records = audit_records(&ts);
    let last = records.last().unwrap();
    assert_eq!(last["properties"]["httpStatusCode"], 408, "{last}");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn slow_tls_handshakes_and_garbage_are_counted_and_closed() {
    let ts = start_limited(short()).await;
    // Nothing sent: closed after the handshake timeout.
    let mut tcp = TcpStream::connect(ts.srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(BOUND, tcp.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "a silent client kept its connection"
    );
    assert!(ts.srv.rejections().tls_handshake_timeouts >= 1);
    // Not TLS: refused and counted.
    let mut tcp = TcpStream::connect(ts.srv.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(BOUND, tcp.read(&mut buf)).await;
    wait_until(|| ts.srv.rejections().tls_handshake_failures >= 1).await;
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_the_others_keep_working() {
    let ts = start_limited(patient(|l| l.max_connections = 3)).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(tls_connect(&ts).await);
    }
    // The fourth is closed right after accept: its handshake fails.
    let fourth = tokio::time::timeout(BOUND, tls_handshake(&ts))
        .await
        .expect("the server answers the fourth connection at once");
    assert!(fourth.is_err(), "a connection over the cap was served");
    assert!(ts.srv.rejections().connections_over_cap >= 1);

    // The open ones still work.
    get_keys_on(&ts, &mut open[0]).await;

    // Closing one frees a slot.
    drop(open.pop());
    let mut served = false;
    for _ in 0..100 {
        if try_status(get_keys(&ts)).await == Some(200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "a freed slot was not reused");
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_503() {
    let ts = start_limited(patient(|l| l.max_in_flight = 1)).await;
    // A request waiting for its body holds the only slot.
    let mut slow = post_head(&ts, "/rng", 12, "").await;
    let mut shed = None;
    for _ in 0..100 {
        let r = send_unchecked(get_keys(&ts)).await;
        if r.0 == 503 {
            shed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = shed.expect("a request over the in-flight cap was served");
    assert_eq!(r.2["error"]["code"], "ServiceUnavailable");
    assert_eq!(r.1["retry-after"], "1");
    assert!(ts.srv.rejections().shed >= 1);
    // Once the slow request finishes, requests are served again.
    slow.write_all(b"{\"count\": 8}").await.unwrap();
    let resp = read_head(&mut slow).await.expect("an answer");
    assert_eq!(status_of(&resp), 200, "{resp}");
    ok(ts.get("/keys").await);
    ts.srv.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    // By the idle timeout, and (HTTP/1.1) by the header timeout while waiting for the next
    // request: both are ordinary closes, not counted as refusals.
    for (idle, header) in [(300, 30_000), (30_000, 300)] {
        let ts = start_limited(HttpLimits {
            idle_timeout: Duration::from_millis(idle),
            header_timeout: Duration::from_millis(header),
            ..Default::default()
        })
        .await;
        let mut conn = tls_connect(&ts).await;
        get_keys_on(&ts, &mut conn).await;
        assert!(
            read_to_close(&mut conn).await.is_some(),
            "an idle connection stayed open"
        );
        wait_until(|| ts.srv.rejections().idle_closed >= 1).await;
        assert_eq!(ts.srv.rejections().total(), 0, "{:?}", ts.srv.rejections());
        ts.srv.shutdown().await;
    }
}

// ------------------------------------------------------------------ 4. Host

#[tokio::test]
async fn host_is_parsed_strictly() {
    let ts = TestServer::start().await;
    let port = ts.port();
    ts.create_key("k", json!({"kty": "EC"})).await;
    let get = |host: &str, auth: bool| {
        let auth = if auth {
            format!("Authorization: Bearer {}\r\n", ts.token)
        } else {
            String::new()
        };
        format!("GET /keys/k?api-version=7.6 HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
    };
    for host in [
        "[::1]@evil.example/x".to_string(),
        format!("localhost:{port}@evil.example"),
        "evil.example/x".into(),
        "localhost:99999".into(),
        "localhost:".into(),
        "-bad-.vault.local".into(),
        "a b".into(),
        "[::1".into(),
        "::1".into(),
    ] {
        for auth in [true, false] {
            let resp = raw_exchange(&ts, &get(&host, auth)).await;
            assert_eq!(status_of(&resp), 400, "Host {host:?}: {resp}");
            assert_eq!(body_of(&resp)["error"]["code"], "BadParameter", "{resp}");
            assert!(!resp.contains("evil"), "Host {host:?} echoed: {resp}");
        }
    }
    // Two Host headers.
    let resp = raw_exchange(
        &ts,
        &format!(
            "GET /keys/k?api-version=7.6 HTTP/1.1\r\nHost: localhost:{port}\r\nHost: evil.example\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            ts.token
        ),
    )
    .await;
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(!resp.contains("evil"), "{resp}");

    // Ordinary hosts work, and key ids and the challenge use them.
    ts.create_vault("tenant1", 7, false).await;
    for host in [
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        "localhost".into(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("tenant1.vault.local:{port}"),
    ] {
        let resp = raw_exchange(&ts, &get(&host, false)).await;
        assert_eq!(status_of(&resp), 401, "{host}: {resp}");
        let lower = host.to_ascii_lowercase();
        assert!(
            resp.contains(&format!("authorization=\"https://{lower}/")),
            "{host}: {resp}"
        );
        if host.starts_with("tenant1") {
            continue;
        }
        let resp = raw_exchange(&ts, &get(&host, true)).await;
        assert_eq!(status_of(&resp), 200, "{host}: {resp}");
        let kid = body_of(&resp)["key"]["kid"].as_str().unwrap().to_string();
        assert!(
            kid.starts_with(&format!("https://{lower}/keys/k/")),
            "{kid}"
        );
    }
    ts.srv.shutdown().await;
}

// ------------------------------------------------------------------ 6. break-glass audit

#[tokio::test]
async fn the_break_glass_admin_is_not_recorded_as_an_access_policy_match() {
    let ts = TestServer::start().await;
    ok(ts
        .patch(
            "/management/vaults/default",
            json!({"properties": {"enableRbacAuthorization": false}}),
        )
        .await);
    let r = send(
        ts.client
            .get(format!("{}/keys?api-version={API}", ts.base))
            .bearer_auth(&ts.token)
            .header("x-ms-client-request-id", "break-glass-list"),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);
    let rec = audit_records(&ts)
        .into_iter()
        .find(|v| v["correlationId"] == "break-glass-list")
        .expect("the request's record");
    assert_ne!(
        rec["properties"]["isAccessPolicyMatch"], true,
        "the break-glass admin matched no policy: {rec}"
    );
    let _ = Method::GET;
    ts.srv.shutdown().await;
}
