//! What a listener admits and how long an HTTP connection may sit: connection caps (total and
//! per source address, decided by [`teamtalk_core::limits`]), the listen backlog, HTTP header
//! and keep-alive idle timeouts, the process's descriptor limit, and the reserve descriptor
//! that lets a listener close connections it has no descriptor for (docs/deploy.md,
//! "Connection limits").

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use teamtalk_core::limits::{ConnLimits, ConnPermit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{info, warn};

/// Default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Default cap of connections from one address on an HTTP port.
pub const DEFAULT_HTTP_PER_SOURCE: usize = 256;

/// How one role's listening sockets are set up and what they admit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenConfig {
    /// `listen(2)` backlog (`ListenBacklog`, `listen_backlog`). Default 1024.
    pub backlog: u32,
    /// Connection caps; 0 = none (`MaxConnCnt`, `MaxConnPerIp`). Default: none.
    pub limits: ConnLimits,
    /// Timeouts of HTTP connections (HTTP roles only).
    pub http: HttpTimeouts,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            backlog: DEFAULT_BACKLOG,
            limits: ConnLimits::default(),
            http: HttpTimeouts::default(),
        }
    }
}

impl ListenConfig {
    /// The default with caps `limits`.
    pub fn capped(max_total: usize, max_per_source: usize) -> ListenConfig {
        ListenConfig {
            limits: ConnLimits {
                max_total,
                max_per_source,
            },
            ..ListenConfig::default()
        }
    }
}

/// How long an HTTP connection may take to send a request's headers, and may stay open with
/// nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// From the start of a request until its header is complete (`HttpHeaderTimeout`,
    /// `http_header_timeout`, seconds). Default 10 s.
    pub header: Duration,
    /// No byte read or written and no request being answered for this long closes the
    /// connection (`HttpIdleTimeout`, `http_idle_timeout`, seconds). Default 30 s.
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

impl HttpTimeouts {
    /// An HTTP/1 connection builder with the header timeout set.
    pub fn builder(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header);
        builder
    }
}

/// An accepted connection holding its slot of the listener's caps until dropped.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    permit: ConnPermit,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, permit: ConnPermit) -> Conn {
        Conn { stream, permit }
    }

    /// The socket and the slot (keep the slot as long as the socket).
    pub fn into_parts(self) -> (TcpStream, ConnPermit) {
        (self.stream, self.permit)
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// When an HTTP connection last moved a byte, and how many of its requests are being
/// answered: what [`IdleWatch::expired`] looks at.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn stamp(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }
}

/// An HTTP connection's socket, recording activity for its [`IdleWatch`].
#[derive(Debug)]
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

/// Closes an HTTP connection after [`HttpTimeouts::idle`] without activity.
#[derive(Clone, Debug)]
pub struct IdleWatch {
    activity: Arc<Activity>,
    idle: Duration,
}

/// Marks a request as being answered while held (see [`IdleWatch::busy`]).
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.stamp();
    }
}

impl IdleWatch {
    /// Wraps `io` so that its reads and writes count as activity.
    pub fn new<T>(io: T, timeouts: &HttpTimeouts) -> (hyper_util::rt::TokioIo<Tracked<T>>, Self) {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        });
        let io = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let watch = IdleWatch {
            activity,
            idle: timeouts.idle,
        };
        (hyper_util::rt::TokioIo::new(io), watch)
    }

    /// A guard to hold while a request is answered: a slow answer is not idleness.
    pub fn busy(&self) -> Busy {
        self.activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.activity.clone())
    }

    /// Completes once the connection has been idle for the idle timeout.
    pub async fn expired(&self) {
        loop {
            let last = Duration::from_millis(self.activity.last_ms.load(Ordering::Relaxed));
            let since = self.activity.start.elapsed().saturating_sub(last);
            if since >= self.idle && self.activity.busy.load(Ordering::Relaxed) == 0 {
                return;
            }
            let wait = self
                .idle
                .saturating_sub(since)
                .max(Duration::from_millis(50));
            tokio::time::sleep(wait).await;
        }
    }

    /// Runs `connection` until it ends (`Some`) or the connection is idle too long (`None`,
    /// the connection is dropped, closing it).
    pub async fn run<F: std::future::Future>(&self, connection: F) -> Option<F::Output> {
        tokio::select! {
            output = connection => Some(output),
            () = self.expired() => None,
        }
    }
}

/// Serves one accepted HTTP/1 connection with `builder` (made from [`HttpTimeouts::builder`]
/// and the role's own settings): every request is answered by `handle` and counts as
/// activity while it runs; the connection is closed after `timeouts.idle` without activity
/// or after `max_time` in all. `role` names the connection in logs.
pub(crate) async fn serve_http<S, F, Fut, B>(
    stream: S,
    peer: std::net::SocketAddr,
    timeouts: HttpTimeouts,
    builder: hyper::server::conn::http1::Builder,
    max_time: Duration,
    role: &'static str,
    handle: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (io, idle) = IdleWatch::new(stream, &timeouts);
    let watch = idle.clone();
    let service = hyper::service::service_fn(move |request| {
        let busy = watch.busy();
        let answer = handle(request);
        async move {
            let answer = answer.await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let connection = idle.run(builder.serve_connection(io, service));
    match tokio::time::timeout(max_time, connection).await {
        Ok(Some(Ok(()))) => {}
        Ok(Some(Err(error))) => tracing::debug!(%peer, %error, role, "HTTP connection failed"),
        Ok(None) | Err(_) => tracing::debug!(%peer, role, "HTTP connection idle, closed"),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.stamp();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.stamp();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One descriptor kept open (on `/dev/null`) so that a listener that ran out of descriptors
/// can free one, accept the waiting connection and close it, instead of leaving it in the
/// backlog and failing the same accept again and again.
#[derive(Debug, Default)]
pub(crate) struct Reserve(Mutex<Option<File>>);

impl Reserve {
    pub(crate) fn open() -> Reserve {
        Reserve(Mutex::new(File::open("/dev/null").ok()))
    }

    /// Closes the reserve descriptor; `false` when there was none to close.
    pub(crate) fn release(&self) -> bool {
        self.slot().take().is_some()
    }

    /// Opens the reserve descriptor again (when one is free).
    pub(crate) fn refill(&self) {
        let mut slot = self.slot();
        if slot.is_none() {
            *slot = File::open("/dev/null").ok();
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `error` says the process or the system is out of file descriptors.
pub(crate) fn out_of_descriptors(error: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    matches!(error.raw_os_error(), Some(EMFILE | ENFILE))
}

/// How often a [`WarnEvery`] warns at most.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A `warn!` at most every [`WARN_INTERVAL`], saying how many events it stands for.
#[derive(Debug, Default)]
pub(crate) struct WarnEvery(Mutex<(Option<Instant>, u64)>);

impl WarnEvery {
    /// Events counted since the last warning.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    /// Counts one event; `Some(count)` when a warning is due now, covering `count` events.
    pub(crate) fn due(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 += 1;
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < WARN_INTERVAL => None,
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

/// The process's soft descriptor limit (`RLIMIT_NOFILE`), `None` when unlimited or unknown.
pub fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft descriptor limit to the hard one, logging both; returns the soft limit in
/// force afterwards (`None`: unlimited).
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    if old.current == old.maximum {
        info!(soft = ?old.current, hard = ?old.maximum, "descriptor limit");
        return old.current;
    }
    let new = Rlimit {
        current: old.maximum,
        maximum: old.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => {
            let now = getrlimit(Resource::Nofile).current;
            info!(old = ?old.current, new = ?now, "descriptor limit raised to the hard limit");
            now
        }
        Err(error) => {
            warn!(%error, soft = ?old.current, hard = ?old.maximum, "cannot raise the descriptor limit");
            old.current
        }
    }
}

/// The listeners of `teamtalk serve`, one process for every role: each role's total cap is a
/// share of the descriptors the process may spend on connections, so that one role full of
/// connections leaves the others theirs (docs/deploy.md, "Connection limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Descriptors the caps share; 0 (default): derived from the soft descriptor limit at
    /// start ([`teamtalk_core::limits::connection_budget`]).
    pub budget: usize,
    /// Listen backlog of every port (`listen_backlog`). Default 1024.
    pub backlog: u32,
    /// HTTP timeouts of login_server, msfs and http_msg_server.
    pub http: HttpTimeouts,
    /// Per-address cap on the HTTP ports (`max_conn_per_ip`). Default 256; 0: none.
    pub http_per_ip: usize,
    /// Per-address cap on the client ports of msg_server and file_server
    /// (`client_max_conn_per_ip`). Default 0: none.
    pub client_per_ip: usize,
    /// Clients of each msg_server (`max_conn_cnt`); 0 (default): 45 % of the budget, split
    /// between the msg_servers.
    pub msg_max: usize,
    /// login_server HTTP connections (`http_max_conn`); 0 (default): 15 % of the budget.
    pub http_max: usize,
    /// msfs connections (`msfs_max_conn`); 0 (default): 10 % of the budget.
    pub msfs_max: usize,
    /// file_server client connections (`file_max_conn`); 0 (default): 10 % of the budget.
    pub file_max: usize,
    /// http_msg_server connections (`http_msg_max_conn`); 0 (default): 5 % of the budget.
    pub http_msg_max: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            budget: 0,
            backlog: DEFAULT_BACKLOG,
            http: HttpTimeouts::default(),
            http_per_ip: DEFAULT_HTTP_PER_SOURCE,
            client_per_ip: 0,
            msg_max: 0,
            http_max: 0,
            msfs_max: 0,
            file_max: 0,
            http_msg_max: 0,
        }
    }
}

/// A port of `teamtalk serve`, for [`ServeLimits::listen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServePort {
    /// One of `msg_servers` msg_servers' client port.
    MsgClients {
        /// How many msg_servers share the clients' share.
        msg_servers: usize,
    },
    /// login_server HTTP.
    LoginHttp,
    /// msfs HTTP.
    Msfs,
    /// file_server's client port.
    FileClients,
    /// http_msg_server.
    HttpMsg,
    /// A port for the roles' own links (login, route, db_proxy, push, file_server's
    /// msg_server port): 3 % of the budget each.
    Internal,
}

impl ServeLimits {
    /// The budget in force: [`ServeLimits::budget`], or derived from the soft limit.
    pub fn budget(&self) -> usize {
        if self.budget != 0 {
            return self.budget;
        }
        teamtalk_core::limits::connection_budget(descriptor_limit().unwrap_or(1 << 20))
    }

    /// How `port` listens.
    pub fn listen(&self, port: ServePort) -> ListenConfig {
        use teamtalk_core::limits::share;
        let budget = self.budget();
        let pick = |configured: usize, percent: usize| {
            if configured != 0 {
                configured
            } else {
                share(budget, percent)
            }
        };
        let (max_total, max_per_source) = match port {
            ServePort::MsgClients { msg_servers } => {
                let each = (share(budget, 45) / msg_servers.max(1)).max(1);
                let max = if self.msg_max != 0 {
                    self.msg_max
                } else {
                    each
                };
                (max, self.client_per_ip)
            }
            ServePort::LoginHttp => (pick(self.http_max, 15), self.http_per_ip),
            ServePort::Msfs => (pick(self.msfs_max, 10), self.http_per_ip),
            ServePort::FileClients => (pick(self.file_max, 10), self.client_per_ip),
            ServePort::HttpMsg => (pick(self.http_msg_max, 5), self.http_per_ip),
            ServePort::Internal => (share(budget, 3), 0),
        };
        ListenConfig {
            backlog: self.backlog,
            limits: ConnLimits {
                max_total,
                max_per_source,
            },
            http: self.http,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_shares_leave_every_role_its_own_descriptors() {
        let limits = ServeLimits {
            budget: 10_000,
            ..ServeLimits::default()
        };
        let total = |port| limits.listen(port).limits.max_total;
        let msg = total(ServePort::MsgClients { msg_servers: 1 });
        let sum = msg
            + total(ServePort::LoginHttp)
            + total(ServePort::Msfs)
            + total(ServePort::FileClients)
            + total(ServePort::HttpMsg)
            + 5 * total(ServePort::Internal);
        assert_eq!(msg, 4_500);
        assert_eq!(total(ServePort::MsgClients { msg_servers: 3 }), 1_500);
        assert!(sum <= 10_000, "{sum}");
        assert_eq!(
            limits.listen(ServePort::LoginHttp).limits.max_per_source,
            256
        );
        assert_eq!(
            limits
                .listen(ServePort::MsgClients { msg_servers: 1 })
                .limits
                .max_per_source,
            0
        );
        let configured = ServeLimits {
            msg_max: 7,
            http_max: 9,
            ..limits
        };
        assert_eq!(
            configured
                .listen(ServePort::MsgClients { msg_servers: 2 })
                .limits
                .max_total,
            7
        );
        assert_eq!(configured.listen(ServePort::LoginHttp).limits.max_total, 9);
    }

    #[test]
    fn emfile_and_enfile_are_descriptor_exhaustion() {
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(24)));
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(23)));
        assert!(!out_of_descriptors(&io::Error::from_raw_os_error(104)));
    }

    #[test]
    fn the_reserve_frees_and_refills_one_descriptor() {
        let reserve = Reserve::open();
        assert!(reserve.release());
        assert!(!reserve.release());
        reserve.refill();
        assert!(reserve.release());
    }

    #[test]
    fn warnings_are_rate_limited_and_count_what_they_cover() {
        let warn = WarnEvery::default();
        assert_eq!(warn.due(), Some(1));
        assert_eq!(warn.due(), None);
        assert_eq!(warn.due(), None);
    }
}
