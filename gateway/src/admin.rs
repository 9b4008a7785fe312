//! The admin listener (loopback by default): health and Prometheus metrics.

use crate::Gateway;
use hyper::Response;
use kakuremichi_rt::http::{health_endpoints, respond, Body};
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Answer one admin request.
pub fn handle(gateway: &Gateway, path: &str) -> Response<Body> {
    let version = gateway.config_version.load(Ordering::Relaxed);
    // A load balancer's health check sees a draining gateway as not ready and moves clients.
    let ready = if version == 0 {
        Err("no configuration yet (Control not reached, nothing cached)".to_string())
    } else if gateway.drain.is_draining() {
        Err("draining".to_string())
    } else {
        Ok(())
    };
    health_endpoints(path, ready, || metrics(gateway))
        .unwrap_or_else(|| respond(404, "text/plain", "not found\n"))
}

fn metrics(gateway: &Gateway) -> String {
    let m = &gateway.metrics;
    let peers = gateway.stack.peer_stats();
    let mut text = String::new();
    let mut line = |name: &str, kind: &str, value: u64| {
        let _ = writeln!(
            text,
            "# TYPE kakuremichi_gateway_{name} {kind}\nkakuremichi_gateway_{name} {value}"
        );
    };
    let counters = [
        ("requests_total", &m.requests),
        ("not_found_total", &m.not_found),
        ("bad_gateway_total", &m.bad_gateway),
        ("bad_requests_total", &m.bad_requests),
        ("client_errors_total", &m.client_errors),
        ("overloaded_total", &m.overloaded),
        ("drained_total", &m.drained),
        ("access_forbidden_total", &gateway.gate.metrics.forbidden),
        (
            "access_failed_logins_total",
            &gateway.gate.metrics.failed_logins,
        ),
        ("access_logins_total", &gateway.gate.metrics.logins),
        ("access_throttled_total", &gateway.gate.metrics.throttled),
        (
            "port_tcp_connections_total",
            &gateway.port_metrics.tcp_connections,
        ),
        ("port_tcp_refused_total", &gateway.port_metrics.tcp_refused),
        (
            "port_udp_datagrams_in_total",
            &gateway.port_metrics.udp_datagrams_in,
        ),
        (
            "port_udp_datagrams_out_total",
            &gateway.port_metrics.udp_datagrams_out,
        ),
        ("port_udp_dropped_total", &gateway.port_metrics.udp_dropped),
    ];
    for (name, counter) in counters {
        line(name, "counter", counter.load(Ordering::Relaxed));
    }
    line("upstream_waiting", "gauge", gateway.pool.waiting() as u64);
    line("upstream_dials_total", "counter", gateway.pool.dials());
    line(
        "config_version",
        "gauge",
        gateway.config_version.load(Ordering::Relaxed),
    );
    line("routes", "gauge", gateway.routes().len() as u64);
    line("peers", "gauge", peers.len() as u64);
    line(
        "peers_up",
        "gauge",
        peers.iter().filter(|p| p.is_up()).count() as u64,
    );
    line(
        "wireguard_rx_bytes_total",
        "counter",
        peers.iter().map(|p| p.rx_bytes).sum(),
    );
    line(
        "wireguard_tx_bytes_total",
        "counter",
        peers.iter().map(|p| p.tx_bytes).sum(),
    );
    line("upstream_connections", "gauge", gateway.pool.size() as u64);
    line("tcp_sockets", "gauge", gateway.stack.socket_count() as u64);
    text.push_str(&kakuremichi_nodelink::link::drop_metrics(
        "kakuremichi_gateway",
        &gateway.stack,
    ));
    text.push_str(&gateway.link.metrics("kakuremichi_gateway"));
    text
}
