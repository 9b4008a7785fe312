//! The client's request body on its way upstream. It gets an idle timeout (a stranger must
//! not hold an upstream connection by going quiet mid-upload), and it remembers how it
//! failed, so that a broken or malformed body is answered as the client's fault (400/408)
//! and not counted against the tunnel. Its first [`READ_AHEAD_BYTES`] are read before an
//! upstream connection is taken ([`ClientBody::read_ahead`]): a form or a JSON body then
//! holds a tunnel's connection only while the origin answers, and a client trickling a body
//! byte by byte holds none of them.

use async_io::Timer;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::Request;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

/// How much of a body is read before the request takes an upstream connection: bodies up
/// to this size reach the origin whole, and bound the memory each waiting request holds.
pub const READ_AHEAD_BYTES: usize = 32 * 1024;

/// Longest silence allowed between two pieces of a request body, by default.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a client's body failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientBodyError {
    /// Malformed framing (a bad chunk size) or the client broke off mid-body.
    Malformed(String),
    /// Nothing arrived for the idle timeout.
    Idle,
}

impl ClientBodyError {
    /// The status the client is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ClientBodyError::Malformed(_) => 400,
            ClientBodyError::Idle => 408,
        }
    }

    /// What the error page says.
    pub fn message(&self) -> &'static str {
        match self {
            ClientBodyError::Malformed(_) => "The request body was malformed or cut short.",
            ClientBodyError::Idle => "The request body stopped arriving.",
        }
    }
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBodyError::Malformed(why) => write!(f, "client body: {why}"),
            ClientBodyError::Idle => write!(f, "client body went idle"),
        }
    }
}

impl std::error::Error for ClientBodyError {}

/// Whether (and how) a request's body failed, and how much of it arrived; shared with the
/// body itself.
#[derive(Clone, Debug, Default)]
pub struct BodyFailure(Arc<OnceLock<ClientBodyError>>, Arc<AtomicU64>);

impl BodyFailure {
    /// The failure, once one happened.
    pub fn get(&self) -> Option<&ClientBodyError> {
        self.0.get()
    }

    /// The count of the body's bytes received from the client, as it grows.
    pub fn received(&self) -> Arc<AtomicU64> {
        self.1.clone()
    }

    fn record(&self, error: ClientBodyError) -> ClientBodyError {
        let _ = self.0.set(error.clone());
        error
    }
}

/// A client's request body, watched. See the module docs.
pub struct ClientBody {
    inner: Incoming,
    idle: Timer,
    armed: bool,
    timeout: Duration,
    failure: BodyFailure,
    /// Frames read ahead and not yet passed on, and how many bytes they hold.
    ahead: std::collections::VecDeque<Frame<Bytes>>,
    ahead_bytes: usize,
    /// The client's body ended (or failed) while it was read ahead.
    finished: Option<Option<ClientBodyError>>,
}

impl ClientBody {
    /// Watch `request`'s body, failing it after `timeout` of silence; the returned handle
    /// tells whether it failed.
    pub fn wrap(
        request: Request<Incoming>,
        timeout: Duration,
    ) -> (BodyFailure, Request<ClientBody>) {
        let failure = BodyFailure::default();
        let watched = failure.clone();
        let request = request.map(|inner| ClientBody {
            inner,
            idle: Timer::never(),
            armed: false,
            timeout,
            failure: watched,
            ahead: Default::default(),
            ahead_bytes: 0,
            finished: None,
        });
        (failure, request)
    }

    /// Read the body until it ends, fails, or `limit` bytes are held; what was read is passed
    /// on first. Returns the failure, if the body failed meanwhile.
    pub async fn read_ahead(&mut self, limit: usize) -> Option<ClientBodyError> {
        while self.finished.is_none() && self.ahead_bytes < limit {
            match std::future::poll_fn(|cx| self.poll_client(cx)).await {
                Some(Ok(frame)) => {
                    self.ahead_bytes += frame.data_ref().map_or(0, Bytes::len);
                    self.ahead.push_back(frame);
                }
                Some(Err(e)) => self.finished = Some(Some(e)),
                None => self.finished = Some(None),
            }
        }
        self.finished.clone().flatten()
    }

    /// The next frame from the client, with the idle timeout.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.armed = false;
                let bytes = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.failure.1.fetch_add(bytes, Ordering::Relaxed);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(self
                .failure
                .record(ClientBodyError::Malformed(e.to_string()))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !self.armed {
                    self.idle.set_after(self.timeout);
                    self.armed = true;
                }
                match Pin::new(&mut self.idle).poll(cx) {
                    Poll::Ready(_) => {
                        Poll::Ready(Some(Err(self.failure.record(ClientBodyError::Idle))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        if let Some(frame) = this.ahead.pop_front() {
            this.ahead_bytes -= frame.data_ref().map_or(0, Bytes::len);
            return Poll::Ready(Some(Ok(frame)));
        }
        match &this.finished {
            Some(Some(error)) => Poll::Ready(Some(Err(error.clone()))),
            Some(None) => Poll::Ready(None),
            None => this.poll_client(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && (self.finished.is_some() || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.ahead_bytes as u64;
        if self.finished.is_some() {
            return SizeHint::with_exact(ahead);
        }
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + ahead);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}
