//! The client's request body on its way upstream. It gets an idle timeout (a stranger must
//! not hold an upstream connection by going quiet mid-upload), and it remembers how it
//! failed, so that a broken or malformed body is answered as the client's fault (400/408)
//! and not counted against the tunnel.

use async_io::Timer;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::Request;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// Whether (and how) a request's body failed; shared with the body itself.
#[derive(Clone, Debug, Default)]
pub struct BodyFailure(Arc<OnceLock<ClientBodyError>>);

impl BodyFailure {
    /// The failure, once one happened.
    pub fn get(&self) -> Option<&ClientBodyError> {
        self.0.get()
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
        });
        (failure, request)
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(this
                .failure
                .record(ClientBodyError::Malformed(e.to_string()))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.armed {
                    this.idle.set_after(this.timeout);
                    this.armed = true;
                }
                match Pin::new(&mut this.idle).poll(cx) {
                    Poll::Ready(_) => {
                        Poll::Ready(Some(Err(this.failure.record(ClientBodyError::Idle))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
