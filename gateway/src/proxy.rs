//! The reverse proxy: a request for a routed hostname goes to its agent's service port over
//! the overlay, with forwarding headers set; bodies stream both ways; upgrades (WebSocket)
//! become a byte tunnel.

use crate::body::{ClientBody, READ_AHEAD_BYTES};
use crate::pages;
use crate::pool::{Held, UpstreamError};
use crate::routes::{Route, Upstream};
use crate::traffic::{Metered, Outcome, RequestMeter};
use crate::Gateway;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::Authority;
use hyper::{Request, Response, StatusCode, Uri, Version};
use kakuremichi_proto::path::PathRefused;
use kakuremichi_proto::request_log::{kept_path, LogDetails, LogEntry};
use kakuremichi_proto::traffic::{Denial, Failure};
use kakuremichi_rt::http::Body;
use kakuremichi_rt::io::HyperIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
/// Parsed once: removing by `&str` would parse each name on every request.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Answer one client request.
pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    client: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    let metrics = &gateway.metrics;
    metrics.requests.fetch_add(1, Ordering::Relaxed);
    if gateway.drain.is_draining() {
        metrics.drained.fetch_add(1, Ordering::Relaxed);
        return pages::draining();
    }
    let host = match counted_request_host(&gateway, &request) {
        Ok(host) => host,
        Err(why) => return pages::bad_request(why),
    };
    let routes = gateway.routes();
    let Some(host_routes) = routes.lookup(&host) else {
        metrics.not_found.fetch_add(1, Ordering::Relaxed);
        return pages::not_found(&host);
    };
    let mut request = request;
    if host_routes.path_decides() {
        if let Err(why) = normalize_target(&mut request) {
            metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            return pages::bad_request(why.message());
        }
    }
    let path = crate::guard::routing_path(request.uri());
    let Some(route) = host_routes.for_path(&path).cloned() else {
        metrics.not_found.fetch_add(1, Ordering::Relaxed);
        return match &host_routes.not_found_page {
            Some(page) => pages::tunnel_page(404, page),
            None => pages::not_found(&host),
        };
    };
    let entry = LogEntry {
        time_ms: kakuremichi_rt::unix_now_ms(),
        tunnel_id: route.tunnel_id.clone(),
        client: client.ip().to_string(),
        method: request.method().as_str().to_string(),
        host: host.clone(),
        path: kept_path(&path),
        query: (route.log.as_ref())
            .filter(|details| details.query)
            .and_then(|details| Some(details.redacted(request.uri().query()?))),
        headers: match &route.log {
            Some(details) => logged_headers(details, request.headers()),
            None => Vec::new(),
        },
        ..LogEntry::default()
    };
    let Some(mut meter) = gateway.traffic.request(entry) else {
        return through_tunnel(&gateway, route, request, client, scheme, &host, None)
            .await
            .0;
    };
    let (response, outcome) = through_tunnel(
        &gateway,
        route,
        request,
        client,
        scheme,
        &host,
        Some(&mut meter),
    )
    .await;
    meter.answered(response.status().as_u16(), outcome);
    response.map(|body| Metered { body, meter }.boxed())
}

/// Answer a request for `route`'s tunnel: the access rules, then its agents. What kept it
/// from the origin, if anything, is counted in the tunnel's traffic.
async fn through_tunnel(
    gateway: &Arc<Gateway>,
    route: Route,
    request: Request<Incoming>,
    client: SocketAddr,
    scheme: &'static str,
    host: &str,
    mut meter: Option<&mut RequestMeter>,
) -> (Response<Body>, Option<Outcome>) {
    let metrics = &gateway.metrics;
    let mut request =
        match crate::guard::admit(gateway, &route, request, client, scheme, host).await {
            Ok(request) => request,
            Err(answer) => {
                let denial = match answer.status().as_u16() {
                    401 => Some(Denial::Unauthorized),
                    403 => Some(Denial::Forbidden),
                    429 => Some(Denial::Throttled),
                    _ => None,
                };
                return (answer, denial.map(Outcome::Denied));
            }
        };
    let client_version = request.version();
    let upgrade = request.headers().get(UPGRADE).cloned();
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let wants_trailers = request.headers().get_all(TE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("trailers"))
    });
    prepare_request(&mut request, host, client, scheme, upgrade.as_ref());
    if let Some(host_header) = &route.host_header {
        request.headers_mut().insert(HOST, host_header.clone());
    }
    if route.upstream.speaks_http2() {
        as_http2(&mut request, wants_trailers);
    }
    let (body_failure, mut request) = ClientBody::wrap(request, gateway.body_idle_timeout);
    if let Some(meter) = meter.as_deref_mut() {
        meter.count_request_body(body_failure.received());
        let user = request.headers().get(crate::guard::USER_HEADER);
        meter.user(user.and_then(|u| u.to_str().ok()).map(str::to_string));
    }
    if let Some(why) = request.body_mut().read_ahead(READ_AHEAD_BYTES).await {
        metrics.client_errors.fetch_add(1, Ordering::Relaxed);
        log::debug!("tunnel {} ({}): {why}", route.tunnel_id, route.hostname);
        return (pages::client_error(why.status(), why.message()), None);
    }
    let upstreams = route.upstreams(&gateway.replicas);
    let mut answered_by = None;
    let forwarded = forward(gateway, &upstreams, request, &mut answered_by).await;
    if let Some(meter) = meter {
        meter.agent(answered_by);
    }
    let mut response = match forwarded {
        Ok(response) => response,
        Err(e) => {
            if let Some(why) = body_failure.get() {
                // The client broke off or sent a malformed body: not the tunnel's fault.
                metrics.client_errors.fetch_add(1, Ordering::Relaxed);
                log::debug!("tunnel {} ({}): {why}", route.tunnel_id, route.hostname);
                return (pages::client_error(why.status(), why.message()), None);
            }
            if matches!(e, UpstreamError::Busy) {
                metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "tunnel {} ({}): {e}; answered 503",
                    route.tunnel_id,
                    route.hostname
                );
                let busy = Some(Outcome::Failed(Failure::Busy));
                return (pages::overloaded(route.hostname.as_str()), busy);
            }
            metrics.bad_gateway.fetch_add(1, Ordering::Relaxed);
            log::warn!("tunnel {} ({}): {e}", route.tunnel_id, route.hostname);
            let page = match &route.bad_gateway_page {
                Some(page) => pages::tunnel_page(502, page),
                None => pages::bad_gateway(route.hostname.as_str()),
            };
            return (page, Some(Outcome::Failed(Failure::Unreachable)));
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            // The tunnel lives as long as both ends keep it open, or until a drain's deadline.
            let cut = gateway.drain.cut();
            let mut connection = gateway.traffic.connection(&route.tunnel_id);
            let tunnel = async move {
                match futures_lite::future::try_zip(client_upgrade, upstream_upgrade).await {
                    Ok((client, upstream)) => {
                        let copied = kakuremichi_rt::copy::copy_bidirectional(
                            HyperIo(client),
                            HyperIo(upstream),
                        )
                        .await;
                        if let Ok((bytes_in, bytes_out)) = copied {
                            connection.moved(bytes_in, bytes_out);
                        }
                    }
                    Err(e) => log::debug!("upgrade failed: {e}"),
                }
            };
            kakuremichi_rt::spawn(futures_lite::future::or(tunnel, cut)).detach();
        }
    } else {
        remove_hop_by_hop(response.headers_mut(), None);
    }
    // A proxy answers in its own HTTP version, not the origin's (RFC 9110 §6.2): an HTTP/1.0
    // origin must not turn the client's keep-alive HTTP/1.1 connection into 1.0.
    *response.version_mut() = client_version;
    (response.map(|b| b.boxed()), None)
}

/// The headers `details` names, as the client sent them (values cut at 256 characters).
fn logged_headers(details: &LogDetails, headers: &HeaderMap) -> Vec<(String, String)> {
    let mut logged = Vec::new();
    for name in &details.headers {
        for value in headers.get_all(name.as_str()) {
            let value = String::from_utf8_lossy(value.as_bytes());
            logged.push((name.clone(), value.chars().take(256).collect()));
        }
    }
    logged
}

/// Send `request` to the first of `upstreams` (a tunnel's replicas in the order to try)
/// that takes it: a request that never left the gateway moves on to the next, and an agent
/// that could not be reached counts as down until its probe answers.
async fn forward(
    gateway: &Gateway,
    upstreams: &[Upstream],
    request: Request<ClientBody>,
    answered_by: &mut Option<std::net::Ipv4Addr>,
) -> Result<Response<Held<Incoming>>, UpstreamError> {
    let mut request = request;
    for (i, upstream) in upstreams.iter().enumerate() {
        let patience = (i + 1 < upstreams.len()).then(|| match upstream.agent() {
            Some(agent) => gateway.replicas.dial_patience(agent),
            None => crate::replicas::REPLICA_PATIENCE,
        });
        match send(gateway, upstream, request, patience).await {
            Attempt::Answered(result) => {
                *answered_by = upstream.agent().filter(|_| result.is_ok());
                return result;
            }
            Attempt::NotSent {
                request: unsent,
                error,
                unreachable,
            } => {
                if i + 1 == upstreams.len() {
                    return Err(error);
                }
                if let (true, Some(agent)) = (unreachable, upstream.agent()) {
                    gateway.replicas.report(agent, false);
                }
                log::warn!("{upstream}: {error}; trying the next replica");
                request = unsent;
            }
        }
    }
    Err(UpstreamError::failed("the tunnel has no agent"))
}

/// How one upstream dealt with a request.
enum Attempt {
    /// It answered, or failed after the request left.
    Answered(Result<Response<Held<Incoming>>, UpstreamError>),
    /// The request never left the gateway and can go elsewhere.
    NotSent {
        request: Request<ClientBody>,
        error: UpstreamError,
        /// No connection could be made at all.
        unreachable: bool,
    },
}

/// Send `request` upstream on a pooled connection; a pooled connection that turns out to be
/// closed is replaced by a fresh one once, if the request was not sent. The response body
/// holds the request's pool permit until it ends.
async fn send(
    gateway: &Gateway,
    upstream: &Upstream,
    request: Request<ClientBody>,
    patience: Option<std::time::Duration>,
) -> Attempt {
    let pool = &gateway.pool;
    let mut conn = match pool.checkout(upstream, patience).await {
        Ok(conn) => conn,
        Err(error @ UpstreamError::Busy) => return Attempt::Answered(Err(error)),
        Err(error) => {
            return Attempt::NotSent {
                request,
                error,
                unreachable: true,
            }
        }
    };
    // `Err` is the attempt's outcome when there is no response to hand on (boxed: it can
    // hold the whole request).
    let exchange = async {
        let answered = |result: Result<_, UpstreamError>| {
            result.map_err(|e| Box::new(Attempt::Answered(Err(e))))
        };
        match conn.sender.try_send_request(request).await {
            Err(mut e) => match e.take_message() {
                Some(request) if conn.reused => {
                    if let Err(error) = pool.redial(&mut conn).await {
                        return Err(Box::new(Attempt::NotSent {
                            request,
                            error: UpstreamError::failed(error),
                            unreachable: true,
                        }));
                    }
                    let sent = conn.sender.send_request(request).await;
                    answered(sent.map_err(UpstreamError::failed))
                }
                Some(request) => Err(Box::new(Attempt::NotSent {
                    request,
                    error: UpstreamError::failed(e.into_error()),
                    unreachable: false,
                })),
                None => answered(Err(UpstreamError::failed(e.into_error()))),
            },
            Ok(response) => Ok(response),
        }
    };
    // A replica a probe finds gone will not answer: its requests end now, not when TCP
    // gives up.
    let gone = async {
        match upstream.agent() {
            Some(agent) => gateway.replicas.until_probed_down(agent).await,
            None => std::future::pending().await,
        }
        let error = UpstreamError::failed("the agent stopped answering its probes");
        Err(Box::new(Attempt::Answered(Err(error))))
    };
    let response = match futures_lite::future::or(exchange, gone).await {
        Ok(response) => response,
        Err(attempt) => return *attempt,
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The connection now belongs to the upgraded stream; its permit goes back at once
        // (long-lived WebSockets must not hold request slots).
        return Attempt::Answered(Ok(response.map(|body| Held::new(body, None))));
    }
    let lease = pool.lease(conn);
    Attempt::Answered(Ok(response.map(|body| Held::new(body, Some(lease)))))
}

/// Replace the request's path by its normal form, the one every decision and the origin see.
fn normalize_target<B>(request: &mut Request<B>) -> Result<(), PathRefused> {
    let uri = request.uri();
    let path = kakuremichi_proto::path::normalize(uri.path())?;
    if path == uri.path() {
        return Ok(());
    }
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| PathRefused::Malformed)?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| PathRefused::Malformed)?;
    Ok(())
}

/// [`request_host`], counting a malformed request in the gateway's `bad_requests`.
pub fn counted_request_host<B>(
    gateway: &Gateway,
    request: &Request<B>,
) -> Result<String, &'static str> {
    request_host(request).inspect_err(|_| {
        gateway.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
    })
}

/// The host a request is for, as RFC 9112 §3.2 and RFC 9113 §8.3.1 say: the authority of
/// an absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) wins over `Host`; HTTP/1.1
/// needs exactly one valid `Host`; a `Host` that disagrees with `:authority` is malformed.
/// Returns the reason for a 400 otherwise.
pub fn request_host<B>(request: &Request<B>) -> Result<String, &'static str> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("The request has more than one Host header.");
    }
    let header = match header {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| "The Host header is not valid.")?;
            Some(
                text.parse::<Authority>()
                    .map_err(|_| "The Host header is not valid.")?,
            )
        }
        None => None,
    };
    let authority = request.uri().authority().cloned();
    let host = match (request.version(), authority, header) {
        (Version::HTTP_2, Some(authority), Some(header)) if authority != header => {
            return Err("The Host header disagrees with the request's authority.")
        }
        (_, Some(authority), _) => authority,
        (Version::HTTP_11, None, None) => return Err("The request has no Host header."),
        (_, None, Some(header)) => header,
        (_, None, None) => return Err("The request names no host."),
    };
    if host.host().is_empty() {
        return Err("The request names no host.");
    }
    // uri-host [":" port] only (RFC 9110 §7.2): no user information.
    if host.as_str().contains('@') {
        return Err("The Host header is not valid.");
    }
    Ok(host.as_str().to_string())
}

/// Headers a client could send to pass itself off as someone else to the origin: only the
/// gateway knows who connected, and it sets `X-Real-IP` itself.
const CLIENT_ADDRESS_CLAIMS: [&str; 7] = [
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "x-forwarded-port",
    "x-forwarded-server",
];

/// Headers the gateway sets itself: a client's copies spelt with `_` are removed too, since
/// CGI and WSGI servers read `X_Forwarded_For` as `X-Forwarded-For`.
const SET_BY_GATEWAY: [&str; 5] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Whether a client's header `name` claims who connected.
fn claims_client_address(name: &str) -> bool {
    use crate::guard::reads_as;
    CLIENT_ADDRESS_CLAIMS
        .iter()
        .any(|claim| reads_as(name, claim))
        || (name.contains('_') && SET_BY_GATEWAY.iter().any(|set| reads_as(name, set)))
}

fn prepare_request(
    request: &mut Request<Incoming>,
    host: &str,
    client: SocketAddr,
    scheme: &str,
    upgrade: Option<&HeaderValue>,
) {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // A path always parses as a URI; fall back to "/" rather than trust that.
    *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    remove_hop_by_hop(headers, upgrade);
    crate::guard::remove_headers_where(headers, claims_client_address);
    let ip = client.ip().to_string();
    // Several field lines of a list header are one list (RFC 9110 §5.3): join, then append.
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let forwarded_for = match joined("x-forwarded-for") {
        Some(previous) => format!("{previous}, {ip}"),
        None => ip.clone(),
    };
    let node = match client.ip() {
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        v4 => v4.to_string(),
    };
    let element = format!("for={node};host=\"{host}\";proto={scheme}");
    let forwarded = match joined("forwarded") {
        Some(previous) => format!("{previous}, {element}"),
        None => element,
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for.as_str()),
        ("forwarded", forwarded.as_str()),
        ("x-real-ip", ip.as_str()),
        ("x-forwarded-proto", scheme),
        ("x-forwarded-host", host),
        ("host", host),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// Turn a request prepared for HTTP/1.1 into one for an HTTP/2 origin: the authority moves
/// from `Host` into the target (`:authority`), and `TE: trailers`, the one TE HTTP/2
/// allows and gRPC needs, goes along if the client sent it.
fn as_http2(request: &mut Request<Incoming>, wants_trailers: bool) {
    let authority = request
        .headers_mut()
        .remove(HOST)
        .and_then(|host| host.to_str().ok().map(str::to_string));
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Some(uri) = authority.and_then(|a| format!("http://{a}{path}").parse::<Uri>().ok()) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    if wants_trailers {
        request
            .headers_mut()
            .insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Drop hop-by-hop headers (and those `Connection` names, except the gateway's identity
/// headers: a client must not remove what the gateway tells the origin); keep an upgrade's
/// own.
fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !crate::guard::is_identity_header(name.as_str()))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_host_a_request_is_for() {
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        assert_eq!(
            request_host(&request(h1, "/", &["a.test"])),
            Ok("a.test".into())
        );
        assert_eq!(
            request_host(&request(h1, "/", &["a.test:8080"])),
            Ok("a.test:8080".into())
        );
        assert!(request_host(&request(h1, "/", &["a.test", "b.test"])).is_err());
        assert!(request_host(&request(h1, "/", &["a.test", "a.test"])).is_err());
        assert!(request_host(&request(h1, "/", &[])).is_err());
        assert!(request_host(&request(h1, "/", &[""])).is_err());
        assert!(request_host(&request(h1, "/", &["a b"])).is_err());
        assert!(request_host(&request(h1, "/", &["user@a.test"])).is_err());
        // Absolute form wins over Host.
        assert_eq!(
            request_host(&request(h1, "http://a.test/x", &["b.test"])),
            Ok("a.test".into())
        );
        // HTTP/1.0 may omit Host but then names nothing.
        assert!(request_host(&request(Version::HTTP_10, "/", &[])).is_err());
        // HTTP/2: :authority, and a Host that disagrees with it is malformed.
        assert_eq!(
            request_host(&request(h2, "https://a.test/", &[])),
            Ok("a.test".into())
        );
        assert_eq!(
            request_host(&request(h2, "https://a.test/", &["a.test"])),
            Ok("a.test".into())
        );
        assert!(request_host(&request(h2, "https://a.test/", &["b.test"])).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go_and_named_ones_too() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers, None);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
        let websocket = HeaderValue::from_static("websocket");
        remove_hop_by_hop(&mut headers, Some(&websocket));
        assert_eq!(headers.get(UPGRADE), Some(&websocket));
        assert_eq!(headers.get(CONNECTION).unwrap(), "upgrade");
    }
}
