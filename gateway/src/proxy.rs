//! The reverse proxy: a request for a routed hostname goes to its agent's service port over
//! the overlay, with forwarding headers set; bodies stream both ways; upgrades (WebSocket)
//! become a byte tunnel.

use crate::pages;
use crate::pool::Pool;
use crate::routes::Upstream;
use crate::Gateway;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode, Uri, Version};
use kakuremichi_rt::http::Body;
use kakuremichi_rt::io::HyperIo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Answer one client request.
pub async fn handle(
    gateway: Arc<Gateway>,
    mut request: Request<Incoming>,
    client: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    gateway.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let Some(host) = request_host(&request) else {
        return pages::bad_request("The request names no host.");
    };
    let Some(route) = gateway.routes().lookup(&host).cloned() else {
        gateway.metrics.not_found.fetch_add(1, Ordering::Relaxed);
        return pages::not_found(&host);
    };
    let upgrade = request.headers().get(UPGRADE).cloned();
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    prepare_request(&mut request, &host, client, scheme, upgrade.as_ref());
    let mut response =
        match forward(&gateway.pool, &route.upstream, request.map(|b| b.boxed())).await {
            Ok(response) => response,
            Err(e) => {
                gateway.metrics.bad_gateway.fetch_add(1, Ordering::Relaxed);
                log::warn!("tunnel {} ({}): {e}", route.tunnel_id, route.hostname);
                return pages::bad_gateway(route.hostname.as_str());
            }
        };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            // The tunnel lives as long as both ends keep it open.
            smol::spawn(async move {
                match futures_lite::future::try_zip(client_upgrade, upstream_upgrade).await {
                    Ok((client, upstream)) => {
                        let _ = kakuremichi_rt::copy::copy_bidirectional(
                            HyperIo(client),
                            HyperIo(upstream),
                        )
                        .await;
                    }
                    Err(e) => log::debug!("upgrade failed: {e}"),
                }
            })
            .detach();
        }
    } else {
        remove_hop_by_hop(response.headers_mut(), None);
    }
    response.map(|b| b.boxed())
}

/// Send `request` upstream on a pooled connection; a pooled connection that turns out to be
/// closed is replaced by a fresh one once, if the request was not sent.
async fn forward(
    pool: &Pool,
    upstream: &Upstream,
    request: Request<Body>,
) -> Result<Response<Incoming>, String> {
    let mut conn = pool.checkout(upstream).await.map_err(|e| e.to_string())?;
    let result = match conn.sender.try_send_request(request).await {
        Err(mut e) if conn.reused && e.message().is_some() => {
            let request = e.take_message().ok_or("request lost")?;
            conn = pool.connect(upstream).await.map_err(|e| e.to_string())?;
            conn.sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.into_error().to_string()),
    };
    let response = result?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        pool.checkin(conn);
    }
    Ok(response)
}

/// The host a request names: its `Host` header, or the URI's authority (HTTP/2).
pub fn request_host(request: &Request<Incoming>) -> Option<String> {
    let host = match request.headers().get(HOST) {
        Some(value) => value.to_str().ok()?.to_string(),
        None => request.uri().authority()?.to_string(),
    };
    (!host.is_empty()).then_some(host)
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
    let ip = client.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {ip}"),
        None => ip.clone(),
    };
    for (name, value) in [
        ("x-forwarded-for", forwarded_for.as_str()),
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

/// Drop hop-by-hop headers (and those `Connection` names); keep an upgrade's own.
fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
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
