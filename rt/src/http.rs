//! Shared HTTP plumbing: one body type, response helpers, and a server builder with the limits
//! every listener applies to strangers.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use std::time::Duration;

/// The body type of every response we build or relay.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Time a client gets to send a complete request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line plus headers) accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A response with a status, a content type and a body.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> hyper::Response<Body> {
    let mut response = hyper::Response::new(full(body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The headers every HTML page of ours carries: `csp` as its `Content-Security-Policy`
/// (each with `frame-ancestors 'none'`), no framing at all (a framed page's one click must
/// not act for its visitor), no content sniffing, no referrer beyond the origin, and never
/// cached (pages show secrets once).
pub fn protect_page(headers: &mut hyper::HeaderMap, csp: &str) {
    use hyper::header::{
        HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY,
        X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers
        .entry(REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An HTTP/1.1 server connection builder with our timeouts and size limits.
pub fn http1_server() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(crate::exec::SmolTimer)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
}

/// Accept HTTP/1.1 connections on `listener` forever, answering each request with `handler`
/// (given the client's address). Upgrades (WebSocket) are allowed.
pub async fn serve<F, Fut>(listener: async_io::Async<std::net::TcpListener>, handler: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>, std::net::SocketAddr) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("accept: {e}");
                async_io::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.get_ref().set_nodelay(true);
        // Each connection lives as long as its client keeps it open; hyper's own timeouts
        // bound idle and slow clients.
        crate::spawn(serve_connection(
            stream,
            peer,
            handler.clone(),
            Protocol::Http1,
        ))
        .detach();
    }
}

/// Which HTTP version a connection speaks (for TLS, what ALPN chose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0), with upgrades.
    Http1,
    /// HTTP/2, with extended CONNECT for WebSockets (RFC 8441).
    #[cfg(feature = "http2")]
    Http2,
}

/// Serve one connection until it closes.
pub async fn serve_connection<I, F, Fut>(
    io: I,
    peer: std::net::SocketAddr,
    handler: F,
    protocol: Protocol,
) where
    I: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    F: Fn(hyper::Request<hyper::body::Incoming>, std::net::SocketAddr) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let response = handler(request, peer);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    });
    let io = crate::io::FuturesIo::new(io);
    let result = match protocol {
        Protocol::Http1 => {
            http1_server()
                .serve_connection(io, service)
                .with_upgrades()
                .await
        }
        #[cfg(feature = "http2")]
        Protocol::Http2 => http2_server().serve_connection(io, service).await,
    };
    if let Err(e) = result {
        log::debug!("connection from {peer}: {e}");
    }
}

/// An HTTP/2 server connection builder with our limits.
#[cfg(feature = "http2")]
pub fn http2_server() -> hyper::server::conn::http2::Builder<crate::exec::SmolExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(crate::exec::SmolExecutor);
    builder
        .timer(crate::exec::SmolTimer)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(250)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .enable_connect_protocol();
    builder
}

/// Answer `/healthz`, `/readyz` and `/metrics` for a node's admin listener; `None` for
/// other paths.
pub fn health_endpoints(
    path: &str,
    ready: Result<(), String>,
    metrics: impl FnOnce() -> String,
) -> Option<hyper::Response<Body>> {
    Some(match path {
        "/healthz" => respond(200, "text/plain", "ok\n"),
        "/readyz" => match ready {
            Ok(()) => respond(200, "text/plain", "ready\n"),
            Err(why) => respond(503, "text/plain", format!("not ready: {why}\n")),
        },
        "/metrics" => respond(200, crate::metrics::CONTENT_TYPE, metrics()),
        _ => return None,
    })
}
