//! The loopback status listener (`healthcheck` probes it through `kakuremichi_rt::stop`).

use crate::fallback::Carried;
use crate::Agent;
use hyper::Response;
use kakuremichi_rt::http::{health_endpoints, respond, Body};
use kakuremichi_rt::metrics::Readings;
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
    let mut readings = Readings::new("kakuremichi_agent");
    readings
        .gauge(
            "services",
            "Tunnel services the agent carries.",
            agent.service_count.load(Ordering::Relaxed) as u64,
        )
        .counter(
            "refused_targets",
            "Connections to targets outside --allow-targets refused.",
            agent.allowed.refused.load(Ordering::Relaxed),
        );
    let paths = agent
        .fallback
        .as_ref()
        .map(|f| f.paths())
        .unwrap_or_default();
    for carried in [
        Carried::Udp,
        Carried::Connecting,
        Carried::Tcp,
        Carried::Tls,
    ] {
        readings.gauge_with(
            "gateway_paths",
            "Gateways by how WireGuard reaches them: UDP, a carrier being opened, TCP, or TLS to the HTTPS port.",
            &[("path", carried.as_str())],
            paths.iter().filter(|(_, c)| *c == carried).count() as u64,
        );
    }
    let version = agent.config_version.load(Ordering::Relaxed);
    kakuremichi_nodelink::link::read_node_metrics(&mut readings, version, &agent.stack);
    agent.link.read_metrics(&mut readings);
    readings.encode()
}
