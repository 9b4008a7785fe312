//! The public listeners. Plain HTTP answers ACME HTTP-01 requests, redirects HTTPS tunnels
//! (308, same host and path) and serves plain-HTTP tunnels. HTTPS terminates TLS, picks
//! HTTP/2 or HTTP/1.1 by ALPN and proxies, after handing `tls` tunnels' connections to
//! [`crate::passthrough`] by SNI.

use crate::passthrough::{self, Replay};
use crate::tls::ACME_TLS_ALPN;
use crate::{pages, ports, proxy, Gateway};
use async_io::{Async, Timer};
use futures_lite::future;
use futures_rustls::rustls::ServerConfig;
use futures_rustls::TlsAcceptor;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION, RETRY_AFTER, STRICT_TRANSPORT_SECURITY};
use hyper::{Request, Response};
use kakuremichi_proto::ids::Hostname;
use kakuremichi_proto::messages::WIREGUARD_ALPN;
use kakuremichi_rt::http::{respond, serve_connection, Body, Protocol};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Time a client gets to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const ACME_PATH: &str = "/.well-known/acme-challenge/";
const HSTS: &str = "max-age=31536000";

/// Accept plain HTTP connections forever.
pub async fn serve_http(gateway: Arc<Gateway>, listener: Async<TcpListener>) {
    loop {
        let (mut stream, peer) = accept(&listener).await;
        let gateway = gateway.clone();
        // Each connection lives as long as its client keeps it open; hyper's own timeouts
        // bound idle and slow clients.
        kakuremichi_rt::spawn(async move {
            let client = match gateway.fronts.client_of(&mut stream, peer).await {
                Ok(client) => client,
                Err(e) => return log::debug!("front {peer}: {e}"),
            };
            let cut = gateway.drain.cut();
            let handler = move |request, client| handle_http(gateway.clone(), request, client);
            future::or(
                serve_connection(stream, client, handler, Protocol::Http1),
                cut,
            )
            .await;
        })
        .detach();
    }
}

/// The next connection; errors such as running out of file descriptors back off instead
/// of spinning.
async fn accept(listener: &Async<TcpListener>) -> (Async<TcpStream>, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.get_ref().set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                log::warn!("accept: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answer a request on the plain HTTP port.
async fn handle_http(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    if let Some(token) = request.uri().path().strip_prefix(ACME_PATH) {
        return match gateway.certificates.http01(token) {
            Some(answer) => respond(200, "text/plain", answer),
            None => respond(404, "text/plain", "unknown challenge\n"),
        };
    }
    let host = match proxy::counted_request_host(&gateway, &request) {
        Ok(host) => host,
        Err(why) => return pages::bad_request(why),
    };
    let Some(route) = gateway.routes().lookup(&host).map(|h| h.any().clone()) else {
        return proxy::handle(gateway, request, client, "http").await;
    };
    if !route.https {
        return proxy::handle(gateway, request, client, "http").await;
    }
    if !gateway.certificates.has(&route.hostname) {
        let mut response = pages::certificate_pending(route.hostname.as_str());
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("10"));
        return response;
    }
    redirect_to_https(&route.hostname, gateway.https_port, &request)
}

fn redirect_to_https(
    host: &Hostname,
    https_port: u16,
    request: &Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = match https_port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let mut response = respond(308, "text/plain", format!("moved to {location}\n"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// Answer a request that arrived over TLS.
async fn handle_https(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let host = proxy::request_host(&request).ok().and_then(|h| {
        gateway
            .routes()
            .lookup(&h)
            .map(|r| r.any().hostname.clone())
    });
    let mut response = proxy::handle(gateway.clone(), request, client, "https").await;
    if host.is_some_and(|h| gateway.certificates.publicly_trusted(&h)) {
        response
            .headers_mut()
            .insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

/// With passthrough hostnames configured, read the ClientHello first: a passthrough SNI
/// sends the connection to its agent (and `None` is returned); any other comes back with
/// the bytes read, for rustls. A client that sends no valid ClientHello before `deadline` is
/// dropped.
async fn pass_through_or_keep(
    gateway: &Gateway,
    mut stream: Async<TcpStream>,
    peer: SocketAddr,
    deadline: Timer,
) -> Option<(Async<TcpStream>, Vec<u8>)> {
    if gateway.passthrough.is_empty() {
        return Some((stream, Vec::new()));
    }
    let hello = future::or(
        async { Some(passthrough::read_client_hello(&mut stream).await) },
        async {
            deadline.await;
            None
        },
    );
    let (already_read, sni) = match hello.await {
        Some(Ok(read)) => read,
        Some(Err(e)) => {
            log::debug!("no ClientHello from {peer}: {e}");
            return None;
        }
        None => {
            log::debug!("no ClientHello from {peer} in time");
            return None;
        }
    };
    let Some(upstream) = sni.and_then(|sni| gateway.passthrough.lookup(&sni)) else {
        return Some((stream, already_read));
    };
    if let Err(e) = ports::splice(
        (&gateway.dialer, &gateway.traffic),
        &upstream,
        stream,
        peer,
        &already_read,
    )
    .await
    {
        log::debug!(
            "tunnel {}: passthrough from {peer}: {e}",
            upstream.tunnel_id
        );
    }
    None
}

/// Accept TLS connections forever.
pub async fn serve_https(
    gateway: Arc<Gateway>,
    listener: Async<TcpListener>,
    config: Arc<ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (mut stream, peer) = accept(&listener).await;
        let (acceptor, gateway) = (acceptor.clone(), gateway.clone());
        // Each connection lives until its client closes it; the handshake and hyper's own
        // timeouts bound slow or idle clients.
        kakuremichi_rt::spawn(async move {
            let deadline = Timer::after(HANDSHAKE_TIMEOUT);
            let peer = match gateway.fronts.client_of(&mut stream, peer).await {
                Ok(client) => client,
                Err(e) => return log::debug!("front {peer}: {e}"),
            };
            let Some((stream, already_read)) =
                pass_through_or_keep(&gateway, stream, peer, deadline).await
            else {
                return;
            };
            let stream = Replay::new(already_read, stream);
            let handshake = future::or(async { Some(acceptor.accept(stream).await) }, async {
                Timer::after(HANDSHAKE_TIMEOUT).await;
                None
            });
            let tls = match handshake.await {
                Some(Ok(tls)) => tls,
                Some(Err(e)) => return log::debug!("TLS handshake with {peer}: {e}"),
                None => return log::debug!("TLS handshake with {peer} timed out"),
            };
            let protocol = match tls.get_ref().1.alpn_protocol() {
                // The validation connection only needed the handshake.
                Some(ACME_TLS_ALPN) => return,
                Some(WIREGUARD_ALPN) => return gateway.carriers.carry(tls, peer),
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            let cut = gateway.drain.cut();
            let handler = move |request, client| handle_https(gateway.clone(), request, client);
            future::or(serve_connection(tls, peer, handler, protocol), cut).await;
        })
        .detach();
    }
}
