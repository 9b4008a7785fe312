//! Keep-alive HTTP/1.1 connections to agents' service ports, over the netstack, with a limit
//! per upstream.
//!
//! Every request holds one of its upstream's permits from checkout until its response body
//! ends (see [`Held`]; streams and upgrades give theirs back early), so at most
//! [`Limits::connections`] requests are in flight to one agent service and about that many
//! connections exist: every extra in-flight request
//! would otherwise open its own overlay connection, overrun the agent's backlog and hold
//! its buffers. Requests past the limit wait in line, up to [`Limits::queue_timeout`]; the
//! proxy answers those that waited too long with a 503 and `Retry-After`.
//!
//! A connection goes back into its lane's idle list once its response body ended and hyper
//! has it ready for the next request, and only then is its permit released (see [`Lease`]);
//! it is closed once idle too long.

use crate::body::ClientBody;
use crate::line::{Line, Refused, Slot as Permit};
use crate::routes::Upstream;
use hyper::body::Incoming;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::{http1, http2, TrySendError};
use hyper::{Request, Response};
use kakuremichi_netstack::Stack;
use kakuremichi_rt::io::FuturesIo;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How many requests may be in flight to one upstream, and how long others wait.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Requests in flight (and so connections) per upstream.
    pub connections: usize,
    /// How long a request waits for a free connection before it gets a 503.
    pub queue_timeout: Duration,
    /// Requests waiting per upstream before further ones get a 503 at once.
    pub max_waiting: usize,
    /// Idle connections older than this are closed rather than reused.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 256,
            queue_timeout: Duration::from_secs(10),
            max_waiting: 32 * 1024,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why an upstream gave no answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// Every permit stayed taken for the whole queue timeout, or the line was full.
    Busy,
    /// The upstream could not be reached, or broke off.
    Failed(String),
}

impl UpstreamError {
    /// A failure described by `cause`.
    pub fn failed(cause: impl std::fmt::Display) -> Self {
        UpstreamError::Failed(cause.to_string())
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Busy => write!(f, "every upstream connection stayed busy"),
            UpstreamError::Failed(why) => f.write_str(why),
        }
    }
}

/// Sends requests on one upstream connection: HTTP/1.1, one request at a time, or HTTP/2
/// (h2c origins), many at once.
pub enum Sender {
    Http1(http1::SendRequest<ClientBody>),
    Http2(http2::SendRequest<ClientBody>),
}

impl Sender {
    fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    /// Send `request`; if the connection turned out closed before it was sent, the request
    /// comes back in the error.
    pub async fn try_send_request(
        &mut self,
        request: Request<ClientBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ClientBody>>> {
        match self {
            Sender::Http1(s) => s.try_send_request(request).await,
            Sender::Http2(s) => s.try_send_request(request).await,
        }
    }

    /// Send `request`.
    pub async fn send_request(
        &mut self,
        request: Request<ClientBody>,
    ) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(s) => s.send_request(request).await,
            Sender::Http2(s) => s.send_request(request).await,
        }
    }

    /// Whether requests of HTTP/2 multiplex on this connection.
    pub fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }
}

/// An idle connection, ready for a request.
struct Pooled {
    sender: Sender,
    returned: Instant,
}

/// One upstream's idle connections and its line of requests.
struct Lane {
    /// Ready connections, the most recently returned last: reusing the warmest one lets the
    /// others age out when load drops.
    idle: Mutex<Vec<Pooled>>,
    line: Arc<Line>,
}

impl Lane {
    fn idle(&self) -> MutexGuard<'_, Vec<Pooled>> {
        // Plain handles: nothing is left half-done by a panic.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently returned connection that is still open. An HTTP/2 connection
    /// stays in the list and is shared: every request gets its own handle on it.
    fn take_ready(&self) -> Option<Sender> {
        let mut idle = self.idle();
        while let Some(pooled) = idle.pop() {
            if let Sender::Http2(shared) = &pooled.sender {
                if !pooled.sender.is_closed() {
                    let handle = Sender::Http2(shared.clone());
                    idle.push(pooled);
                    return Some(handle);
                }
                continue;
            }
            if pooled.sender.is_ready() {
                return Some(pooled.sender);
            }
        }
        None
    }

    fn put(&self, sender: Sender, most: usize) {
        let mut idle = self.idle();
        // One HTTP/2 connection serves the whole lane; its handles need not come back.
        if sender.is_http2()
            && idle
                .iter()
                .any(|p| p.sender.is_http2() && !p.sender.is_closed())
        {
            return;
        }
        if idle.len() < most {
            idle.push(Pooled {
                sender,
                returned: Instant::now(),
            });
        }
    }
}

/// A connection to one upstream, with the permit its request holds.
pub struct Conn {
    /// Sends requests on the connection.
    pub sender: Sender,
    /// Whether it served a request before (and so may have been closed by the far end
    /// meanwhile).
    pub reused: bool,
    upstream: Upstream,
    lane: Arc<Lane>,
    permit: Permit,
}

/// A connection whose response is on its way to the client: when the response ends, the
/// connection goes back to its lane once hyper has it ready for the next request, and only
/// then is the permit given back. So a request that gets a permit finds a ready connection
/// (or room to open one) instead of racing a connection that is just finishing, opening an
/// extra one and closing it again.
pub struct Lease {
    sender: Sender,
    lane: Arc<Lane>,
    permit: Option<Permit>,
    most: usize,
    ready_within: Duration,
}

impl Lease {
    fn give_back(self) {
        let Lease {
            mut sender,
            lane,
            permit,
            most,
            ready_within,
        } = self;
        if sender.is_ready() {
            lane.put(sender, most);
            return;
        }
        if sender.is_closed() {
            return;
        }
        // hyper's connection task has not yet seen the end of the response.
        kakuremichi_rt::spawn(async move {
            let ready = futures_lite::future::or(async { sender.ready().await.is_ok() }, async {
                async_io::Timer::after(ready_within).await;
                false
            })
            .await;
            if ready {
                lane.put(sender, most);
            }
            drop(permit);
        })
        .detach();
    }
}

/// Start HTTP/1.1 (or HTTP/2 with prior knowledge, for h2c origins) on a fresh connection;
/// the connection task runs until it closes.
async fn handshake<I>(io: I, upstream: &Upstream, open: Arc<AtomicUsize>) -> io::Result<Sender>
where
    I: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| io::Error::other(format!("HTTP handshake with {upstream}: {e}"));
    let name = upstream.to_string();
    open.fetch_add(1, Ordering::Relaxed);
    let opened = open.clone();
    // The sender lives in the pool; the connection task ends when the connection closes.
    let run = |connection: std::pin::Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>| {
        kakuremichi_rt::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("upstream connection {name}: {e}");
            }
            opened.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    };
    let sender = if upstream.speaks_http2() {
        let (sender, connection) = http2::Builder::new(kakuremichi_rt::exec::SmolExecutor)
            .timer(kakuremichi_rt::exec::SmolTimer)
            .handshake(FuturesIo::new(io))
            .await
            .inspect_err(|_| {
                open.fetch_sub(1, Ordering::Relaxed);
            })
            .map_err(failed)?;
        run(Box::pin(connection));
        Sender::Http2(sender)
    } else {
        let (sender, connection) = http1::Builder::new()
            .handshake(FuturesIo::new(io))
            .await
            .inspect_err(|_| {
                open.fetch_sub(1, Ordering::Relaxed);
            })
            .map_err(failed)?;
        run(Box::pin(connection.with_upgrades()));
        Sender::Http1(sender)
    };
    Ok(sender)
}

async fn dial(stack: Stack, upstream: Upstream, open: Arc<AtomicUsize>) -> io::Result<Sender> {
    match &upstream {
        Upstream::Overlay { addr, tls, .. } => {
            // Under a burst of handshakes the agent's stack still refuses one now and then
            // (about 2 in 140,000 requests in tests/tests/concurrency.rs, cause not found);
            // nothing was sent yet, so one more try is safe.
            let stream = match stack.connect(*addr).await {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::debug!("{upstream} refused a connection; trying once more");
                    stack.connect(*addr).await?
                }
                other => other?,
            };
            match tls {
                Some(tls) => handshake(tls.connect(stream).await?, &upstream, open).await,
                None => handshake(stream, &upstream, open).await,
            }
        }
        Upstream::Direct(addr) => {
            let connect = smol::net::TcpStream::connect(addr.as_str());
            let timeout = async {
                async_io::Timer::after(kakuremichi_netstack::stack::CONNECT_TIMEOUT).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from {addr}"),
                ))
            };
            let stream = futures_lite::future::or(connect, timeout).await?;
            let _ = stream.set_nodelay(true);
            handshake(stream, &upstream, open).await
        }
    }
}

/// Connections to upstreams, by address.
pub struct Pool {
    stack: Stack,
    limits: Limits,
    lanes: Mutex<HashMap<Upstream, Arc<Lane>>>,
    /// Connections opened so far; far above the limit means connections churn.
    dials: AtomicU64,
    /// Connections open now, busy, idle or upgraded.
    open: Arc<AtomicUsize>,
}

impl Pool {
    /// An empty pool dialing through `stack`.
    pub fn new(stack: Stack, limits: Limits) -> Self {
        Pool {
            stack,
            limits,
            lanes: Mutex::new(HashMap::new()),
            dials: AtomicU64::new(0),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lanes(&self) -> MutexGuard<'_, HashMap<Upstream, Arc<Lane>>> {
        // The map holds plain handles; nothing is left half-done by a panic.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lane(&self, upstream: &Upstream) -> Arc<Lane> {
        self.lanes()
            .entry(upstream.clone())
            .or_insert_with(|| {
                Arc::new(Lane {
                    idle: Mutex::new(Vec::new()),
                    line: Line::new(self.limits.connections),
                })
            })
            .clone()
    }

    /// Wait for a permit for `upstream`, then a ready pooled connection or a new one, dialed
    /// for at most `patience` when there is another replica to try.
    pub async fn checkout(
        &self,
        upstream: &Upstream,
        patience: Option<Duration>,
    ) -> Result<Conn, UpstreamError> {
        let lane = self.lane(upstream);
        let permit = lane
            .line
            .take(self.limits.queue_timeout, self.limits.max_waiting)
            .await
            .map_err(|_: Refused| UpstreamError::Busy)?;
        let (sender, reused) = match lane.take_ready() {
            Some(sender) => (sender, true),
            None => {
                let dialing = self.dial(upstream, &lane);
                let dialed = match patience {
                    Some(patience) => crate::replicas::within(patience, dialing).await,
                    None => dialing.await,
                };
                (dialed.map_err(UpstreamError::failed)?, false)
            }
        };
        Ok(Conn {
            sender,
            reused,
            upstream: upstream.clone(),
            lane,
            permit,
        })
    }

    /// Replace `conn`'s connection by a new one (its pooled one was closed), keeping the
    /// permit.
    pub async fn redial(&self, conn: &mut Conn) -> io::Result<()> {
        conn.sender = self.dial(&conn.upstream, &conn.lane).await?;
        conn.reused = false;
        Ok(())
    }

    /// A new connection to `upstream`. The dial runs on its own: a request that goes away
    /// meanwhile (its client hung up) leaves the connection to the lane instead of
    /// abandoning a half-open handshake, which under mass cancellation turned into thousands
    /// of wasted dials.
    async fn dial(&self, upstream: &Upstream, lane: &Arc<Lane>) -> io::Result<Sender> {
        self.dials.fetch_add(1, Ordering::Relaxed);
        let (deliver, delivered) = async_channel::bounded(1);
        let lane = lane.clone();
        let most = self.limits.connections;
        let dialing = dial(self.stack.clone(), upstream.clone(), self.open.clone());
        kakuremichi_rt::spawn(async move {
            if let Err(unwanted) = deliver.try_send(dialing.await) {
                if let Ok(sender) = unwanted.into_inner() {
                    lane.put(sender, most);
                }
            }
        })
        .detach();
        delivered
            .recv()
            .await
            .unwrap_or_else(|_| Err(io::Error::other("dial task ended")))
    }

    /// The response head arrived on `conn`: its connection and permit ride with the
    /// response body (see [`Lease`]).
    pub fn lease(&self, conn: Conn) -> Lease {
        Lease {
            sender: conn.sender,
            lane: conn.lane,
            permit: Some(conn.permit),
            most: self.limits.connections,
            ready_within: self.limits.idle_timeout,
        }
    }

    /// Close connections idle longer than the idle timeout, and forget upstreams with
    /// nothing left (their agents may be gone for good).
    pub fn sweep(&self) {
        let idle_timeout = self.limits.idle_timeout;
        self.lanes().retain(|_, lane| {
            let mut idle = lane.idle();
            idle.retain(|p| !p.sender.is_closed() && p.returned.elapsed() <= idle_timeout);
            // Every lease and every checkout under way holds a clone of the lane.
            !idle.is_empty() || Arc::strong_count(lane) > 1
        });
    }

    /// Close the idle connections of upstreams `routed` no longer names. Their agent (or this
    /// gateway) was disabled or lost its tunnels: the far end has dropped those connections,
    /// and if the route comes back, its first request must not land on one of them.
    pub fn forget_unrouted(&self, routed: impl Fn(&Upstream) -> bool) {
        self.lanes().retain(|upstream, lane| {
            if routed(upstream) {
                return true;
            }
            lane.idle().clear();
            Arc::strong_count(lane) > 1
        });
    }

    /// Connections open now, busy, idle or upgraded.
    pub fn size(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections opened so far, over all upstreams.
    pub fn dials(&self) -> u64 {
        self.dials.load(Ordering::Relaxed)
    }

    /// Requests waiting for a connection, over all upstreams.
    pub fn waiting(&self) -> usize {
        self.lanes().values().map(|lane| lane.line.waiting()).sum()
    }
}

/// How long a response body may hold its request's permit. A longer one is a stream
/// (Server-Sent Events, a long poll, a download): it keeps its connection, but must not keep
/// other requests waiting, much as an upgraded WebSocket does not.
pub const STREAM_AFTER: Duration = Duration::from_secs(2);

/// A response body that holds its request's [`Lease`] until it ends or is dropped; the
/// permit goes back early if it turns out to be a stream ([`STREAM_AFTER`]).
pub struct Held<B> {
    body: B,
    lease: Option<Lease>,
    started: Instant,
    /// Armed the first time the body waits, so quick responses never touch the timer.
    release: Option<async_io::Timer>,
}

impl<B> Held<B> {
    /// `body`, holding `lease` (if any) while it lives.
    pub fn new(body: B, lease: Option<Lease>) -> Self {
        Held {
            body,
            lease,
            started: Instant::now(),
            release: None,
        }
    }
}

impl<B> Drop for Held<B> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(lease) = this.lease.as_mut().filter(|l| l.permit.is_some()) {
            let deadline = this.started + STREAM_AFTER;
            let release = match polled {
                Poll::Ready(_) => Instant::now() >= deadline,
                Poll::Pending => {
                    let timer = this
                        .release
                        .get_or_insert_with(|| async_io::Timer::at(deadline));
                    Pin::new(timer).poll(cx).is_ready()
                }
            };
            if release {
                lease.permit = None;
                this.release = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
