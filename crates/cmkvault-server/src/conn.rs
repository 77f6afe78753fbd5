//! Connection handling: the accept loop with a connection cap, TLS-handshake, header, body
//! and idle timeouts, header-size caps, an in-flight request cap (503 beyond it), and counters
//! of what was refused before the request handler ran.
//!
//! Built from tokio's `TcpListener`, tokio-rustls and hyper's HTTP/1.1 and HTTP/2 connection
//! builders (chosen by ALPN), so every limit is enforced by the code that reads the socket.
//! The same loop serves plain HTTP/1.1 ([`Transport::Plain`]) for the loopback
//! managed-identity endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::Service;

/// Connection and request limits of the HTTPS listener and of the managed-identity endpoint
/// ([`crate::ServerOptions::limits`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most; a connection over the cap is closed right after accept.
    pub max_connections: usize,
    /// Requests handled at the same time at most; more are answered 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time a client has to send a request head (HTTP/1.1; counted from when the server waits
    /// for one, so it also bounds the wait for the next request on a kept-alive connection).
    pub header_timeout: Duration,
    /// Time a client has to send a request body, once the server starts reading it (408).
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Request line and headers (HTTP/1.1: 431 beyond it) or header list (HTTP/2), bytes at
    /// most; at least 8 KiB.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_in_flight: 512,
            tls_handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_header_bytes: 32 * 1024,
        }
    }
}

/// How many connections and requests were refused before the request handler ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Connections closed at accept because `max_connections` were open.
    pub connections_over_cap: u64,
    /// TLS handshakes that failed.
    pub tls_handshake_failures: u64,
    /// TLS handshakes that did not finish in time.
    pub tls_handshake_timeouts: u64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: u64,
    /// Requests whose body did not arrive in time.
    pub body_timeouts: u64,
    /// Malformed or oversized request heads (answered 400, 414 or 431 by the HTTP layer).
    pub malformed: u64,
    /// Requests answered 503 because `max_in_flight` requests were running.
    pub shed: u64,
    /// Connections closed after `idle_timeout` without a request.
    pub idle_closed: u64,
}

impl Rejections {
    /// All refusals together (idle closes are housekeeping and not counted).
    pub fn total(&self) -> u64 {
        self.connections_over_cap
            + self.tls_handshake_failures
            + self.tls_handshake_timeouts
            + self.header_timeouts
            + self.body_timeouts
            + self.malformed
            + self.shed
    }
}

/// Which refusal happened.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rejection {
    ConnectionsOverCap,
    TlsHandshakeFailure,
    TlsHandshakeTimeout,
    HeaderTimeout,
    BodyTimeout,
    Malformed,
    Shed,
}

/// Refusal counters, and a rate-limited log line per refusal.
#[derive(Default)]
pub(crate) struct ConnStats {
    counters: [AtomicU64; 7],
    idle_closed: AtomicU64,
    log: Mutex<LogWindow>,
}

/// At most [`LOG_LINES_PER_SECOND`] refusal lines per second; the rest are summed up.
#[derive(Default)]
struct LogWindow {
    start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

const LOG_LINES_PER_SECOND: u32 = 20;

impl ConnStats {
    /// Counts a refusal and logs it (one line each, rate-limited).
    pub(crate) fn reject(&self, what: Rejection, peer: Option<SocketAddr>, detail: &str) {
        self.counters[what as usize].fetch_add(1, Ordering::Relaxed);
        let Ok(mut w) = self.log.lock() else {
            return;
        };
        let now = Instant::now();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            if w.suppressed > 0 {
                tracing::warn!(
                    suppressed = w.suppressed,
                    "more requests were refused before the handler (log lines suppressed)"
                );
            }
            *w = LogWindow {
                start: Some(now),
                lines: 0,
                suppressed: 0,
            };
        }
        if w.lines < LOG_LINES_PER_SECOND {
            w.lines += 1;
            drop(w);
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(reason = ?what, peer = %peer, detail = ?detail, "request refused before the handler");
        } else {
            w.suppressed += 1;
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn snapshot(&self) -> Rejections {
        let c = |r: Rejection| self.counters[r as usize].load(Ordering::Relaxed);
        Rejections {
            connections_over_cap: c(Rejection::ConnectionsOverCap),
            tls_handshake_failures: c(Rejection::TlsHandshakeFailure),
            tls_handshake_timeouts: c(Rejection::TlsHandshakeTimeout),
            header_timeouts: c(Rejection::HeaderTimeout),
            body_timeouts: c(Rejection::BodyTimeout),
            malformed: c(Rejection::Malformed),
            shed: c(Rejection::Shed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
        }
    }
}

/// Stops a running server from elsewhere (signal handlers).
#[derive(Clone)]
pub struct ServerHandle {
    tx: Arc<watch::Sender<Option<Option<Duration>>>>,
}

impl ServerHandle {
    pub(crate) fn new() -> Self {
        ServerHandle {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Stops accepting, asks open connections to finish their requests and close, and
    /// closes what is still open after `grace` (`None`: waits for them).
    pub fn graceful_shutdown(&self, grace: Option<Duration>) {
        self.tx.send_replace(Some(grace));
    }

    fn subscribe(&self) -> watch::Receiver<Option<Option<Duration>>> {
        self.tx.subscribe()
    }
}

/// The body of a request that must arrive within the body timeout, counted from the
/// handler's first read.
pub(crate) struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    stats: Arc<ConnStats>,
    peer: SocketAddr,
    expired: bool,
}

/// The error a [`TimedBody`] fails with when its time is up.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimeout(pub Duration);

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            this.expired = true;
            this.stats.reject(
                Rejection::BodyTimeout,
                Some(this.peer),
                "request body too slow",
            );
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a connection is doing, for the idle timeout.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
    /// Bytes read from the client so far.
    read: AtomicU64,
    /// `read` when the last request finished: more since then means a request has begun.
    read_at_last_end: AtomicU64,
}

/// The connection's stream (TLS or plain), counting the bytes the client sends (to tell a
/// slow request head from a kept-alive connection that simply sent nothing more).
struct Counted<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        this.activity.read.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }

    fn last(&self) -> Instant {
        self.last
            .lock()
            .map(|l| *l)
            .unwrap_or_else(|_| Instant::now())
    }
}

/// Marks a request as running on its connection until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        let read = self.0.read.load(Ordering::Relaxed);
        self.0.read_at_last_end.store(read, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a connection task needs.
#[derive(Clone)]
struct Shared {
    app: axum::Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    in_flight: Arc<Semaphore>,
}

/// An Azure-shaped error answered by the connection layer.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// The 503 for a request over the in-flight cap.
fn overloaded() -> Response<Body> {
    let mut resp = refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "The server is handling too many requests. Try again later.",
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Size of a request head as HTTP/2 counts a header list (name + value + 32 per field),
/// with the request target counted in full.
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + target
}

/// What runs between accept and HTTP on a connection.
#[derive(Clone)]
pub(crate) enum Transport {
    /// A TLS handshake (within `tls_handshake_timeout`), then HTTP/2 or HTTP/1.1 by ALPN.
    Tls(tokio_rustls::TlsAcceptor),
    /// Nothing: plain HTTP/1.1 on the TCP stream (the loopback managed-identity endpoint).
    Plain,
}

impl Transport {
    /// TLS with this server configuration.
    pub(crate) fn tls(config: Arc<rustls::ServerConfig>) -> Self {
        Transport::Tls(tokio_rustls::TlsAcceptor::from(config))
    }
}

/// Serves `app` on `listener` (over TLS or plain, as `transport` says) until `handle` asks it
/// to stop.
pub(crate) async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: axum::Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    handle: ServerHandle,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shared = Shared {
        app,
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        limits,
        stats,
    };
    let mut stop = handle.subscribe();
    let mut tasks = JoinSet::new();
    let grace = loop {
        tokio::select! {
            // `wait_for` also sees a stop requested before this task first ran.
            grace = async { stop.wait_for(Option::is_some).await.ok().and_then(|g| *g) } => {
                break grace.flatten();
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    shared.stats.reject(Rejection::ConnectionsOverCap, Some(peer), "connection cap reached");
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let transport = transport.clone();
                let stop = handle.subscribe();
                tasks.spawn(async move {
                    connection(tcp, peer, transport, shared, stop).await;
                    drop(permit);
                });
            }
        }
    };
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    match grace {
        Some(g) => {
            if tokio::time::timeout(g, drain).await.is_err() {
                tasks.shutdown().await;
            }
        }
        None => drain.await,
    }
    Ok(())
}

/// One connection: the TLS handshake (if any), then HTTP.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    transport: Transport,
    shared: Shared,
    stop: watch::Receiver<Option<Option<Duration>>>,
) {
    let acceptor = match transport {
        Transport::Tls(acceptor) => acceptor,
        Transport::Plain => return http(tcp, false, peer, shared, stop).await,
    };
    let stats = &shared.stats;
    let tls = match tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(tcp))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            stats.reject(Rejection::TlsHandshakeFailure, Some(peer), &e.to_string());
            return;
        }
        Err(_) => {
            stats.reject(
                Rejection::TlsHandshakeTimeout,
                Some(peer),
                "TLS handshake too slow",
            );
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    http(tls, h2, peer, shared, stop).await;
}

/// HTTP on an established stream (HTTP/2 when `h2`, otherwise HTTP/1.1), with the header,
/// body and idle timeouts, the header-size and in-flight caps, and graceful shutdown.
async fn http<S>(
    stream: S,
    h2: bool,
    peer: SocketAddr,
    shared: Shared,
    mut stop: watch::Receiver<Option<Option<Duration>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stats = shared.stats.clone();
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
        read: AtomicU64::new(0),
        read_at_last_end: AtomicU64::new(0),
    });
    let service = {
        let activity = activity.clone();
        let shared = shared.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let activity = activity.clone();
            let shared = shared.clone();
            async move {
                activity.in_flight.fetch_add(1, Ordering::AcqRel);
                let _running = InFlight(activity);
                // HTTP/1.1 heads over the cap never get here (hyper answers 431); HTTP/2
                // header lists between the cap and twice the cap are refused here.
                if head_size(&req) > shared.limits.max_header_bytes.max(8192) {
                    shared
                        .stats
                        .reject(Rejection::Malformed, Some(peer), "request head too large");
                    return Ok(refusal(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "RequestHeaderFieldsTooLarge",
                        "The request line and headers are too large.",
                    ));
                }
                let Ok(_permit) = shared.in_flight.clone().try_acquire_owned() else {
                    shared.stats.reject(
                        Rejection::Shed,
                        Some(peer),
                        "in-flight request cap reached",
                    );
                    return Ok::<_, std::convert::Infallible>(overloaded());
                };
                let (parts, body) = req.into_parts();
                let body = TimedBody {
                    inner: body,
                    timeout: shared.limits.body_timeout,
                    deadline: None,
                    stats: shared.stats.clone(),
                    peer,
                    expired: false,
                };
                let mut req = Request::from_parts(parts, Body::new(body));
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let mut app = shared.app.clone();
                app.call(req).await
            }
        })
    };
    let io = TokioIo::new(Counted {
        inner: stream,
        activity: activity.clone(),
    });
    let limits = &shared.limits;
    let header_bytes = limits.max_header_bytes.max(8192);
    let end = ConnEnd {
        activity: &activity,
        idle: limits.idle_timeout,
        stats: &stats,
        peer,
        stop: &mut stop,
    };
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            // HTTP/2 refuses lists over twice the cap itself (a stream error, not counted);
            // the service answers 431 from the cap on (counted).
            .max_header_list_size(u32::try_from(header_bytes * 2).unwrap_or(u32::MAX))
            .max_concurrent_streams(128)
            .keep_alive_interval(None);
        let conn = b.serve_connection(io, service);
        drive(conn, end, |c| c.graceful_shutdown()).await;
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(header_bytes)
            .max_header_size(header_bytes)
            .keep_alive(true);
        let conn = b.serve_connection(io, service);
        drive(conn, end, |c| c.graceful_shutdown()).await;
    }
}

/// What [`drive`] needs besides the connection: its activity, the idle timeout, the counters,
/// the peer, and the server's stop signal.
struct ConnEnd<'a> {
    activity: &'a Activity,
    idle: Duration,
    stats: &'a ConnStats,
    peer: SocketAddr,
    stop: &'a mut watch::Receiver<Option<Option<Duration>>>,
}

/// Runs a connection to its end: closes it gracefully when the server stops or when it has
/// been idle (no request in flight) for `idle`, and counts refusals the HTTP layer made.
async fn drive<C>(conn: C, end: ConnEnd<'_>, graceful: impl Fn(Pin<&mut C>))
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let ConnEnd {
        activity,
        idle,
        stats,
        peer,
        stop,
    } = end;
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let result = loop {
        let idle_at = activity.last() + idle;
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = async { stop.wait_for(Option::is_some).await.is_ok() }, if !closing => {
                closing = true;
                graceful(conn.as_mut());
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.in_flight.load(Ordering::Acquire) == 0
                    && activity.last() + idle <= Instant::now()
                {
                    closing = true;
                    stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    graceful(conn.as_mut());
                }
            }
        }
    };
    if let Err(e) = result {
        let began = activity.read.load(Ordering::Relaxed)
            > activity.read_at_last_end.load(Ordering::Relaxed);
        if e.is_timeout() && !began {
            // A kept-alive connection that sent no further request: an ordinary close.
            stats.idle_closed.fetch_add(1, Ordering::Relaxed);
        } else if e.is_timeout() {
            stats.reject(
                Rejection::HeaderTimeout,
                Some(peer),
                "request head too slow",
            );
        } else if e.is_parse() || e.is_parse_too_large() {
            stats.reject(Rejection::Malformed, Some(peer), &e.to_string());
        } else {
            tracing::debug!(peer = %peer, "connection ended: {e}");
        }
    }
}
