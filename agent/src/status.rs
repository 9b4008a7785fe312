//! The loopback status listener (`healthcheck` probes it through `kakuremichi_rt::stop`).

use crate::Agent;
use hyper::Response;
use kakuremichi_rt::http::{health_endpoints, respond, Body};
use std::sync::atomic::Ordering;

/// Answer one status request.
pub fn handle(agent: &Agent, path: &str) -> Response<Body> {
    let version = agent.config_version.load(Ordering::Relaxed);
    let ready = if version > 0 {
        Ok(())
    } else {
        Err("no configuration yet (Control not reached, nothing cached)".to_string())
    };
    health_endpoints(path, ready, || metrics(agent))
        .unwrap_or_else(|| respond(404, "text/plain", "not found\n"))
}

fn metrics(agent: &Agent) -> String {
    let peers = agent.stack.peer_stats();
    let lines = [
        (
            "config_version",
            "gauge",
            agent.config_version.load(Ordering::Relaxed),
        ),
        (
            "services",
            "gauge",
            agent.service_count.load(Ordering::Relaxed) as u64,
        ),
        ("peers", "gauge", peers.len() as u64),
        (
            "peers_up",
            "gauge",
            peers.iter().filter(|p| p.is_up()).count() as u64,
        ),
        (
            "wireguard_rx_bytes_total",
            "counter",
            peers.iter().map(|p| p.rx_bytes).sum(),
        ),
        (
            "wireguard_tx_bytes_total",
            "counter",
            peers.iter().map(|p| p.tx_bytes).sum(),
        ),
        ("tcp_sockets", "gauge", agent.stack.socket_count() as u64),
        (
            "refused_targets_total",
            "counter",
            agent.allowed.refused.load(Ordering::Relaxed),
        ),
    ];
    let mut text: String = lines
        .iter()
        .map(|(name, kind, value)| {
            format!("# TYPE kakuremichi_agent_{name} {kind}\nkakuremichi_agent_{name} {value}\n")
        })
        .collect();
    text.push_str(&kakuremichi_nodelink::link::drop_metrics(
        "kakuremichi_agent",
        &agent.stack,
    ));
    text.push_str(&agent.link.metrics("kakuremichi_agent"));
    text
}
