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
//! A connection goes back into the idle list as soon as its response head arrived; it is
//! handed out again only once hyper reports it ready (the previous body finished), and
//! dropped once closed or idle too long.

use crate::body::ClientBody;
use crate::line::{Line, Refused, Slot as Permit};
use crate::routes::Upstream;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use kakuremichi_netstack::Stack;
use kakuremichi_rt::io::FuturesIo;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
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

struct Pooled {
    sender: SendRequest<ClientBody>,
    returned: Instant,
}

impl Pooled {
    /// Closed by the far end, or idle for longer than `idle_timeout`.
    fn is_spent(&self, idle_timeout: Duration) -> bool {
        self.sender.is_closed() || self.sender.is_ready() && self.returned.elapsed() > idle_timeout
    }
}

/// One upstream's idle connections and its line of requests.
struct UpstreamState {
    idle: Vec<Pooled>,
    permits: Arc<Line>,
}

/// A connection to one upstream, with the permit its request holds.
pub struct Conn {
    /// Sends requests on the connection.
    pub sender: SendRequest<ClientBody>,
    /// Whether it served a request before (and so may have been closed by the far end
    /// meanwhile).
    pub reused: bool,
    upstream: Upstream,
    permit: Permit,
}

/// Start HTTP/1.1 on a fresh connection; the connection task runs until it closes.
async fn handshake<I>(io: I, upstream: &Upstream) -> io::Result<SendRequest<ClientBody>>
where
    I: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(FuturesIo(io))
        .await
        .map_err(|e| io::Error::other(format!("HTTP handshake with {upstream}: {e}")))?;
    let name = upstream.to_string();
    // The sender lives in the pool; the connection task ends when the connection closes.
    smol::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            log::debug!("upstream connection {name}: {e}");
        }
    })
    .detach();
    Ok(sender)
}

/// Connections to upstreams, by address.
pub struct Pool {
    stack: Stack,
    limits: Limits,
    slots: Mutex<HashMap<Upstream, UpstreamState>>,
}

impl Pool {
    /// An empty pool dialing through `stack`.
    pub fn new(stack: Stack, limits: Limits) -> Self {
        Pool {
            stack,
            limits,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Upstream, UpstreamState>> {
        // The map holds plain handles; nothing is left half-done by a panic.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot<'a>(
        &self,
        slots: &'a mut HashMap<Upstream, UpstreamState>,
        upstream: &Upstream,
    ) -> &'a mut UpstreamState {
        slots
            .entry(upstream.clone())
            .or_insert_with(|| UpstreamState {
                idle: Vec::new(),
                permits: Line::new(self.limits.connections),
            })
    }

    /// Wait for a permit for `upstream`, then a ready pooled connection or a new one.
    pub async fn checkout(&self, upstream: &Upstream) -> Result<Conn, UpstreamError> {
        let permits = {
            let mut slots = self.lock();
            self.slot(&mut slots, upstream).permits.clone()
        };
        let permit = permits
            .take(self.limits.queue_timeout, self.limits.max_waiting)
            .await
            .map_err(|_: Refused| UpstreamError::Busy)?;
        if let Some(sender) = self.take_ready(upstream) {
            return Ok(Conn {
                sender,
                reused: true,
                upstream: upstream.clone(),
                permit,
            });
        }
        let sender = self.dial(upstream).await.map_err(UpstreamError::failed)?;
        Ok(Conn {
            sender,
            reused: false,
            upstream: upstream.clone(),
            permit,
        })
    }

    fn take_ready(&self, upstream: &Upstream) -> Option<SendRequest<ClientBody>> {
        let mut slots = self.lock();
        let list = &mut slots.get_mut(upstream)?.idle;
        list.retain(|p| !p.is_spent(self.limits.idle_timeout));
        let position = list.iter().position(|p| p.sender.is_ready())?;
        Some(list.swap_remove(position).sender)
    }

    /// Replace `conn`'s connection by a new one (its pooled one was closed), keeping the
    /// permit.
    pub async fn redial(&self, conn: &mut Conn) -> io::Result<()> {
        conn.sender = self.dial(&conn.upstream).await?;
        conn.reused = false;
        Ok(())
    }

    async fn dial(&self, upstream: &Upstream) -> io::Result<SendRequest<ClientBody>> {
        match upstream {
            Upstream::Overlay(addr) => handshake(self.stack.connect(*addr).await?, upstream).await,
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
                handshake(stream, upstream).await
            }
        }
    }

    /// Return a connection whose response head arrived; the permit comes back to be held
    /// until the response body ends.
    pub fn checkin(&self, conn: Conn) -> Permit {
        let mut slots = self.lock();
        let slot = self.slot(&mut slots, &conn.upstream);
        if slot.idle.len() < self.limits.connections {
            slot.idle.push(Pooled {
                sender: conn.sender,
                returned: Instant::now(),
            });
        }
        conn.permit
    }

    /// Close connections idle longer than the idle timeout, and forget upstreams with
    /// nothing left (their agents may be gone for good).
    pub fn sweep(&self) {
        let idle_timeout = self.limits.idle_timeout;
        self.lock().retain(|_, slot| {
            slot.idle.retain(|p| !p.is_spent(idle_timeout));
            // Every permit held and every checkout under way holds a clone of the line.
            !slot.idle.is_empty() || Arc::strong_count(&slot.permits) > 1
        });
    }

    /// Connections held, busy or idle.
    pub fn size(&self) -> usize {
        self.lock().values().map(|s| s.idle.len()).sum()
    }

    /// Requests waiting for a connection, over all upstreams.
    pub fn waiting(&self) -> usize {
        self.lock().values().map(|s| s.permits.waiting()).sum()
    }
}

/// How long a response body may hold its request's permit. A longer one is a stream
/// (Server-Sent Events, a long poll, a download): it keeps its connection, but must not keep
/// other requests waiting, much as an upgraded WebSocket does not.
pub const STREAM_AFTER: Duration = Duration::from_secs(2);

/// A response body that holds its request's permit until it ends, is dropped, or turns
/// out to be a stream ([`STREAM_AFTER`]).
pub struct Held<B> {
    body: B,
    permit: Option<Permit>,
    started: Instant,
    /// Armed the first time the body waits, so quick responses never touch the timer.
    release: Option<async_io::Timer>,
}

impl<B> Held<B> {
    /// `body`, holding `permit` while it lives.
    pub fn new(body: B, permit: Option<Permit>) -> Self {
        Held {
            body,
            permit,
            started: Instant::now(),
            release: None,
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
        if this.permit.is_some() {
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
                this.permit = None;
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
