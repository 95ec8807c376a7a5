//! Serving client connections: HTTP/1.1 only, bounded in number, with a header-read and an
//! idle keep-alive timeout.
//!
//! Every connection holds a file descriptor (and, while it waits for its upstream, a second
//! one), so their number is bounded below the process's open-files limit, leaving
//! [`RESERVED_DESCRIPTORS`] for the write-ahead logs, the tables and the committer. At the
//! limit the listener stops accepting: new connections wait in the kernel's backlog until a
//! slot frees, which costs the process nothing. A connection that sends nothing, or not a
//! whole request head, within `header_read_timeout`, or stays idle between requests longer
//! than `keep_alive_timeout`, is closed, so idle and slow clients cannot hold the slots.
//!
//! HTTP/2 is not served: a client speaking it with prior knowledge is closed without an
//! answer (the TLS listener offers only `http/1.1` by ALPN).

use crate::tls::ClientAddr;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use http_body::Body as _;
use tower_service::Service as _;

/// Descriptors kept for everything but client connections: the write-ahead log segments and
/// the table files the committer, compaction, unpacking and queries open, webhooks, and the
/// upstream connections of up to 256 shadow exchanges.
pub const RESERVED_DESCRIPTORS: u64 = 512;
/// The soft open-files limit is raised to the hard one, but not beyond this.
const MAX_OPEN_FILES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read the open files limit: {0}")]
    Rlimit(std::io::Error),
    #[error(
        "max_connections = {configured} needs {needed} file descriptors (two per connection and {reserved} reserved), \
         but the open files limit is {open_files}: raise it (ulimit -n) or lower max_connections",
        reserved = RESERVED_DESCRIPTORS
    )]
    TooManyConnections { configured: usize, needed: u64, open_files: u64 },
    #[error("the open files limit is {open_files}, too low to serve: raise it (ulimit -n) to at least {least}", least = RESERVED_DESCRIPTORS + 2)]
    TooFewDescriptors { open_files: u64 },
}

/// Raises the soft open-files limit (`RLIMIT_NOFILE`) to the hard one where allowed, and
/// returns the soft limit then in force.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every Unix
pub fn raise_open_files_limit() -> Result<u64, ServerError> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(ServerError::Rlimit(std::io::Error::last_os_error()));
    }
    let wanted = (limit.rlim_max as u64).min(MAX_OPEN_FILES);
    if (limit.rlim_cur as u64) < wanted {
        let raised = libc::rlimit { rlim_cur: wanted as libc::rlim_t, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        } else {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot raise the open files limit");
        }
    }
    Ok(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Result<u64, ServerError> {
    Ok(MAX_OPEN_FILES)
}

/// The most client connections served at once: `configured` if the open-files limit allows
/// it, else as many as it allows, counting two descriptors per connection (the client's and
/// its upstream's) after [`RESERVED_DESCRIPTORS`].
pub fn connection_limit(open_files: u64, configured: Option<usize>) -> Result<usize, ServerError> {
    let fits = open_files.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    match configured {
        Some(n) if n as u64 > fits => Err(ServerError::TooManyConnections {
            configured: n,
            needed: RESERVED_DESCRIPTORS + 2 * n as u64,
            open_files,
        }),
        Some(n) => Ok(n),
        None if fits == 0 => Err(ServerError::TooFewDescriptors { open_files }),
        None => Ok(usize::try_from(fits).unwrap_or(usize::MAX)),
    }
}

/// How client connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From a connection's opening, or the first byte of a request after a response, to the
    /// end of the request head.
    pub header_read_timeout: Duration,
    /// Longest wait for the next request on a connection that has served one.
    pub keep_alive_timeout: Duration,
    /// Every request body must have arrived by then, plus [`BODY_DEADLINE_GRACE`] (the
    /// proxy's own 408 comes first; this also bounds the data and admin APIs' bodies).
    pub request_body_timeout: Duration,
}

/// When a request's head was read: the proxy's `request_body_timeout` (its 408) counts from
/// here, as the connection's own body deadline does, so the 408 always comes first.
#[derive(Debug, Clone, Copy)]
pub struct RequestReceived(pub Instant);

/// How much later than `request_body_timeout` a connection's request body is cut off.
const BODY_DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// The connection slots shared by a listener's accept loop and its connections.
#[derive(Clone)]
pub struct ConnectionSlots(Arc<Semaphore>);

/// One connection's slot, given back when it is dropped.
pub struct ConnectionSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl ConnectionSlots {
    pub fn new(max_connections: usize) -> Self {
        metrics::gauge!("inferlog_http_connections_limit").set(max_connections as f64);
        ConnectionSlots(Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))))
    }

    /// As many as a semaphore holds: for listeners that are not bounded (tests' upstreams).
    pub fn unbounded() -> Self {
        ConnectionSlots(Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)))
    }

    /// A free slot, waiting for one when all are taken (counted once per wait).
    pub async fn acquire(&self) -> ConnectionSlot {
        match self.0.clone().try_acquire_owned() {
            Ok(permit) => ConnectionSlot(permit),
            Err(_) => {
                metrics::counter!("inferlog_http_connection_limit_reached_total").increment(1);
                ConnectionSlot(self.0.clone().acquire_owned().await.expect("the semaphore is never closed"))
            }
        }
    }
}

/// A connection accepted with its slot.
pub struct Accepted<Io> {
    pub io: Io,
    pub peer: SocketAddr,
    pub slot: ConnectionSlot,
}

/// A listener whose connections the server serves.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection; errors are handled (logged, retried) inside.
    fn accept(&mut self) -> impl Future<Output = Accepted<Self::Io>> + Send;
}

/// Names and meanings of the connection metrics, for `/metrics`.
fn describe_metrics() {
    metrics::describe_gauge!("inferlog_http_connections_open", "Client connections being served");
    metrics::describe_gauge!(
        "inferlog_http_connections_limit",
        "Client connections served at most at once (max_connections, or derived from the open files limit)"
    );
    metrics::describe_counter!(
        "inferlog_http_connection_limit_reached_total",
        "Times every connection slot was taken, so new connections waited to be accepted"
    );
    metrics::describe_counter!(
        "inferlog_http_connections_timed_out_total",
        "Client connections closed for sending no complete request head in time (phase=header) or staying idle between requests (phase=keep_alive)"
    );
    metrics::describe_gauge!("inferlog_process_open_files_limit", "The gateway process's open files limit (soft RLIMIT_NOFILE)");
}

/// Records the open-files limit in force, for `/metrics`.
pub fn report_open_files_limit(open_files: u64) {
    metrics::gauge!("inferlog_process_open_files_limit").set(open_files as f64);
}

/// Serves `router` on the listener's connections until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish (idle connections close at once) and returns
/// once every connection has ended.
pub async fn serve<L: Accept>(mut listener: L, router: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()> + Send) {
    describe_metrics();
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection holds a receiver; all are gone when every connection has ended.
    let (ended_tx, ended_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let connection = serve_connection(accepted, router.clone(), limits, stop_rx.clone());
        let ended = ended_rx.clone();
        tokio::spawn(async move {
            connection.await;
            drop(ended);
        });
    }
    let _ = stop_tx.send(true);
    drop(listener);
    drop(ended_rx);
    ended_tx.closed().await;
}

async fn serve_connection<Io>(accepted: Accepted<Io>, router: Router, limits: ConnectionLimits, mut stop: watch::Receiver<bool>)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted { io, peer, slot: _slot } = accepted;
    let open = metrics::gauge!("inferlog_http_connections_open");
    open.increment(1.0);
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlightRequest::start(activity.clone());
            request.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
            request.extensions_mut().insert(RequestReceived(Instant::now()));
            let request = request.map(|body| {
                if body.is_end_stream() {
                    Body::new(body)
                } else {
                    Body::new(DeadlineBody::new(body, limits.request_body_timeout + BODY_DEADLINE_GRACE))
                }
            });
            let mut router = router.clone();
            async move {
                let response = router.call(request).await?;
                // The request counts as in flight until its response body is done with.
                Ok::<_, std::convert::Infallible>(response.map(|body| Body::new(TrackedBody { inner: body, _in_flight: in_flight })))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Both timeouts are kept here (hyper's own would close idle connections at the header
    // timeout); the timer is for hyper's other timers.
    builder.timer(TokioTimer::new()).header_read_timeout(None);
    let connection = builder.serve_connection(TokioIo::new(WatchedIo { inner: io, activity: activity.clone() }), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        let expiry = activity.expiry(&limits);
        // While a request is in flight its own timeouts apply; look again later.
        let wake = activity.opened + expiry.map_or(activity.elapsed() + limits.header_read_timeout, |(at, _)| at);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            // A request head begun on an idle connection moves the deadline nearer.
            _ = activity.head_started.notified() => {}
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some((at, phase)) = activity.expiry(&limits) {
                    if activity.elapsed() >= at {
                        metrics::counter!("inferlog_http_connections_timed_out_total", "phase" => phase.label()).increment(1);
                        tracing::debug!(%peer, phase = phase.label(), "connection timed out");
                        break; // dropping the connection closes it
                    }
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    open.decrement(1.0);
}

/// Which timeout closes a connection that stays as it is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Header,
    /// Idle after a response.
    KeepAlive,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Header => "header",
            Phase::KeepAlive => "keep_alive",
        }
    }
}

const NOT_STARTED: u64 = u64::MAX;

/// What a connection is doing, as its reads, requests and responses tell; times are
/// milliseconds since it opened. Everything touching it runs in the connection's task, so
/// relaxed atomics suffice.
struct Activity {
    opened: Instant,
    /// Requests whose response has not ended.
    in_flight: AtomicUsize,
    /// When the connection last became idle (opened, or a response ended).
    idle_since_ms: AtomicU64,
    /// When the first byte after a response arrived (the start of the next request head;
    /// the first request's head counts from the opening).
    head_since_ms: AtomicU64,
    /// Told when `head_since_ms` is set, so the connection's timer is set again.
    head_started: tokio::sync::Notify,
    /// Whether a request has been served (the keep-alive timeout applies from then on).
    served: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(NOT_STARTED),
            head_started: tokio::sync::Notify::new(),
            served: AtomicBool::new(false),
        }
    }

    fn elapsed(&self) -> Duration {
        self.opened.elapsed()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.served.load(Ordering::Relaxed)
            && self.head_since_ms.compare_exchange(NOT_STARTED, self.now_ms(), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // A stored permit if the loop is not waiting: it looks again at its next turn.
            self.head_started.notify_one();
        }
    }

    /// When (since opening) the connection times out if nothing changes, and why; `None`
    /// while a request is in flight.
    fn expiry(&self, limits: &ConnectionLimits) -> Option<(Duration, Phase)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_since_ms.load(Ordering::Relaxed);
        if head != NOT_STARTED {
            return Some((Duration::from_millis(head) + limits.header_read_timeout, Phase::Header));
        }
        let idle = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(if self.served.load(Ordering::Relaxed) {
            (idle + limits.keep_alive_timeout, Phase::KeepAlive)
        } else {
            (idle + limits.header_read_timeout, Phase::Header)
        })
    }
}

/// A request from its head to the end of its response.
struct InFlightRequest(Arc<Activity>);

impl InFlightRequest {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.head_since_ms.store(NOT_STARTED, Ordering::Relaxed);
        activity.served.store(true, Ordering::Relaxed);
        InFlightRequest(activity)
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.idle_since_ms.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request's time in flight when it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlightRequest,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once its deadline has passed, so a sender trickling a body
/// (to any route) cannot hold its connection forever.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
struct BodyDeadlinePassed(Duration);

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyDeadlinePassed(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, telling its [`Activity`] when bytes arrive.
struct WatchedIo<Io> {
    inner: Io,
    activity: Arc<Activity>,
}

impl<Io: AsyncRead + Unpin> AsyncRead for WatchedIo<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for WatchedIo<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        keep_alive_timeout: Duration::from_secs(60),
        request_body_timeout: Duration::from_secs(30),
    };

    #[test]
    fn a_connection_times_out_by_the_header_timeout_until_it_has_served_then_by_keep_alive() {
        let activity = Arc::new(Activity::new());
        assert_eq!(activity.expiry(&LIMITS), Some((Duration::from_secs(10), Phase::Header)), "opened, nothing sent");
        std::thread::sleep(Duration::from_millis(20));
        activity.bytes_read();
        assert_eq!(activity.expiry(&LIMITS), Some((Duration::from_secs(10), Phase::Header)), "the first head counts from the opening");
        let request = InFlightRequest::start(activity.clone());
        assert_eq!(activity.expiry(&LIMITS), None, "a request in flight has its own timeouts");
        activity.bytes_read();
        assert_eq!(activity.expiry(&LIMITS), None, "body bytes are not a new request head");
        drop(request);
        let idle = Duration::from_millis(activity.idle_since_ms.load(Ordering::Relaxed));
        assert_eq!(activity.expiry(&LIMITS), Some((idle + Duration::from_secs(60), Phase::KeepAlive)));
        activity.bytes_read();
        assert!(activity.head_started.notified().now_or_never().is_some(), "a head begun wakes the connection's timer");
        let head = Duration::from_millis(activity.head_since_ms.load(Ordering::Relaxed));
        assert_eq!(activity.expiry(&LIMITS), Some((head + Duration::from_secs(10), Phase::Header)), "a head begun must end in time");
        let _next = InFlightRequest::start(activity.clone());
        assert_eq!(activity.expiry(&LIMITS), None);
    }

    #[test]
    fn the_connection_limit_leaves_the_reserve_and_two_descriptors_per_connection() {
        assert_eq!(connection_limit(1024, None).unwrap(), 256);
        assert_eq!(connection_limit(1024, Some(100)).unwrap(), 100);
        assert!(matches!(connection_limit(1024, Some(257)), Err(ServerError::TooManyConnections { needed: 1026, .. })));
        assert!(matches!(connection_limit(512, None), Err(ServerError::TooFewDescriptors { .. })));
        assert_eq!(connection_limit(u64::MAX, None).unwrap() as u64, (u64::MAX - RESERVED_DESCRIPTORS) / 2);
    }
}
