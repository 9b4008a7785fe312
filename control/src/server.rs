//! Control's HTTP listener, and the operational routes: probes, metrics, the internal CA,
//! agent installs and the node WebSockets. What is served where is [`crate::routes`].

use crate::api;
use crate::error::Error;
use crate::routes::Call;
use crate::Control;
use async_io::Async;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::WebSocketStream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response};
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::MAX_MESSAGE_BYTES;
use kakuremichi_rt::http::{respond, Body};
use kakuremichi_rt::io::HyperIo;
use kakuremichi_rt::metrics::Readings;
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The read and write buffer of each node session's WebSocket: a node's messages are small
/// (a report names at most 32 peers), and the read buffer of each idle session stays near
/// twice this (3.9 KB at 2,048, 8.6 KB at 4,096, under heaptrack at 2,100 sessions).
const SESSION_BUFFER_BYTES: usize = 2048;

/// Accept connections forever.
pub async fn serve(control: Arc<Control>, listener: Async<TcpListener>) {
    kakuremichi_rt::http::serve(listener, move |request: Request<Incoming>, peer| {
        answer(control.clone(), request.map(BodyExt::boxed), peer)
    })
    .await
}

/// Control's answer to `request` from `peer`, without a socket (tests call it in process).
/// Every answer carries the page protections ([`crate::pages::content_security_policy`]):
/// JSON and text lose nothing by them, and no route can forget them.
pub async fn answer(
    control: Arc<Control>,
    request: Request<Body>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let mut response = crate::routes::dispatch(control, request, peer).await;
    kakuremichi_rt::http::protect_page(
        response.headers_mut(),
        crate::pages::content_security_policy(),
    );
    response
}

/// `/healthz`: the process answers.
pub fn healthz(_: Call) -> Response<Body> {
    respond(200, "text/plain", "ok\n")
}

/// `/readyz`: the store answers too.
pub fn readyz(call: Call) -> Response<Body> {
    match call.control.store.revision() {
        Ok(_) => respond(200, "text/plain", "ready\n"),
        Err(e) => respond(503, "text/plain", format!("store unavailable: {e}\n")),
    }
}

/// `/ca.pem`: the internal CA's certificate.
pub fn ca_pem(call: Call) -> Response<Body> {
    match crate::certs::internal::ca(&call.control.store) {
        Ok(ca) => respond(200, "application/x-pem-file", ca.cert_pem),
        Err(e) => api::error_response(&e),
    }
}

/// `/ca.crl`: the internal CA's revocations.
pub fn ca_crl(call: Call) -> Response<Body> {
    match crate::certs::internal::ca(&call.control.store)
        .and_then(|ca| crate::certs::internal::crl(&ca))
    {
        Ok(der) => respond(200, "application/pkix-crl", der),
        Err(e) => api::error_response(&e),
    }
}

/// `/install.sh`: the agent installer, when Control serves agent binaries.
pub fn install_script(call: Call) -> Response<Body> {
    let control = &call.control;
    match control.releases.is_empty() {
        true => respond(
            404,
            "text/plain",
            "echo 'This Control serves no agent binaries (start it with --release-dir).' >&2; exit 1\n",
        ),
        false => respond(
            200,
            "text/x-shellscript; charset=utf-8",
            crate::releases::install_script(&control.public_url, &control.releases),
        ),
    }
}

/// One agent binary for `/install.sh`.
pub fn release(call: Call) -> Response<Body> {
    let name = call.param("name");
    let Some(release) = call.control.releases.iter().find(|r| r.name() == name) else {
        return respond(404, "text/plain", "no such release\n");
    };
    match std::fs::read(&release.path) {
        Ok(bytes) => respond(200, "application/octet-stream", bytes),
        Err(e) => {
            log::error!("reading {}: {e}", release.path.display());
            respond(500, "text/plain", "the release file is unreadable\n")
        }
    }
}

/// `/metrics`, for an API token: Prometheus text.
pub fn metrics(call: &Call) -> Response<Body> {
    let control = &call.control;
    let Ok(state) = control.store.shared_state() else {
        return respond(503, "text/plain", "store unavailable\n");
    };
    let online_now = control.hub.online_nodes();
    let online = |kind| {
        state
            .nodes
            .iter()
            .filter(|n| n.kind == kind && online_now.contains(&n.id))
            .count() as u64
    };
    let mut readings = Readings::new("kakuremichi_control");
    let hub = &control.hub;
    readings
        .gauge(
            "revision",
            "The store's revision: changes committed since it was made.",
            state.revision,
        )
        .gauge(
            "tunnels",
            "Tunnels in the store.",
            state.tunnels.len() as u64,
        )
        .gauge_with(
            "nodes_online",
            "Nodes with a live session, by kind.",
            &[("kind", "agent")],
            online(NodeKind::Agent),
        )
        .gauge_with(
            "nodes_online",
            "Nodes with a live session, by kind.",
            &[("kind", "gateway")],
            online(NodeKind::Gateway),
        )
        .gauge(
            "sessions",
            "Node sessions open.",
            hub.session_count() as u64,
        )
        .counter(
            "sessions_opened",
            "Node sessions opened since start.",
            hub.sessions_opened(),
        )
        .counter(
            "snapshots_pushed",
            "Config snapshots sent to nodes.",
            hub.snapshots_pushed(),
        )
        .counter(
            "traffic_points_written",
            "Traffic points the gateways reported and Control kept.",
            control.traffic.written.load(Ordering::Relaxed),
        )
        .counter(
            "traffic_reports_dropped",
            "Traffic reports dropped because the writer fell behind (the gateway resends on its next session).",
            control.traffic.dropped.load(Ordering::Relaxed),
        );
    respond(
        200,
        kakuremichi_rt::metrics::CONTENT_TYPE,
        readings.encode(),
    )
}

/// Authenticate a node by its API key and switch the connection to a WebSocket.
pub fn upgrade_node(call: Call, kind: NodeKind) -> Response<Body> {
    let Call {
        control,
        mut request,
        peer,
        ..
    } = call;
    let api_key = crate::auth::bearer(request.headers().get(hyper::header::AUTHORIZATION));
    let node = match api_key.map(|key| control.store.node_by_api_key(key)) {
        None => {
            return api::error_response(&Error::Unauthorized(
                "send Authorization: Bearer <API_KEY>",
            ))
        }
        Some(Err(e)) => return api::error_response(&e),
        Some(Ok(None)) => {
            log::warn!("{} connection refused: unknown API key", kind.as_str());
            return api::error_response(&Error::Unauthorized("unknown API key"));
        }
        Some(Ok(Some(node))) if node.kind != kind => {
            return api::error_response(&Error::Unauthorized(
                "this API key belongs to another kind of node",
            ));
        }
        Some(Ok(Some(node))) => node,
    };
    let is_upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade)
    else {
        return respond(400, "text/plain", "expected a WebSocket upgrade\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    kakuremichi_rt::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                // Small buffers: 10,000 idle sessions each held tungstenite's default
                // 128 KiB read buffer; configs are sent and read in full either way.
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_MESSAGE_BYTES))
                    .max_frame_size(Some(MAX_MESSAGE_BYTES))
                    .read_buffer_size(SESSION_BUFFER_BYTES)
                    .write_buffer_size(SESSION_BUFFER_BYTES);
                let ws =
                    WebSocketStream::from_raw_socket(HyperIo(upgraded), Role::Server, Some(config))
                        .await;
                crate::session::run(control, node, peer.ip(), ws).await;
            }
            Err(e) => log::debug!("upgrade failed: {e}"),
        }
    })
    .detach();
    let mut response = respond(101, "text/plain", "");
    let headers = response.headers_mut();
    headers.remove(hyper::header::CONTENT_TYPE);
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}
