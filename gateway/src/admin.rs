//! The admin listener (loopback by default): health and Prometheus metrics.

use crate::Gateway;
use hyper::Response;
use kakuremichi_rt::http::{health_endpoints, respond, Body};
use kakuremichi_rt::metrics::Readings;
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
    let gate = &gateway.gate.metrics;
    let ports = &gateway.port_metrics;
    let counters = [
        ("requests", "HTTP requests answered.", &m.requests),
        (
            "not_found",
            "Requests for a hostname no tunnel serves.",
            &m.not_found,
        ),
        (
            "bad_gateway",
            "Requests whose agent or origin did not answer.",
            &m.bad_gateway,
        ),
        (
            "bad_requests",
            "Malformed requests refused.",
            &m.bad_requests,
        ),
        (
            "client_errors",
            "Connections that failed on the client's side.",
            &m.client_errors,
        ),
        (
            "overloaded",
            "Requests refused while every origin connection was busy.",
            &m.overloaded,
        ),
        (
            "drained",
            "Requests sent elsewhere while draining.",
            &m.drained,
        ),
        (
            "access_forbidden",
            "Requests an IP rule kept out.",
            &gate.forbidden,
        ),
        (
            "access_failed_logins",
            "Tunnel logins refused.",
            &gate.failed_logins,
        ),
        ("access_logins", "Tunnel logins accepted.", &gate.logins),
        (
            "access_throttled",
            "Tunnel logins throttled.",
            &gate.throttled,
        ),
        (
            "port_tcp_connections",
            "TCP connections to port tunnels.",
            &ports.tcp_connections,
        ),
        (
            "port_tcp_refused",
            "TCP connections to port tunnels refused.",
            &ports.tcp_refused,
        ),
        (
            "port_udp_datagrams_in",
            "UDP datagrams from clients of port tunnels.",
            &ports.udp_datagrams_in,
        ),
        (
            "port_udp_datagrams_out",
            "UDP datagrams to clients of port tunnels.",
            &ports.udp_datagrams_out,
        ),
        (
            "port_udp_dropped",
            "UDP datagrams of port tunnels dropped.",
            &ports.udp_dropped,
        ),
    ];
    let mut readings = Readings::new("kakuremichi_gateway");
    for (name, help, counter) in counters {
        readings.counter(name, help, counter.load(Ordering::Relaxed));
    }
    readings
        .gauge(
            "upstream_waiting",
            "Requests waiting for an origin connection.",
            gateway.pool.waiting() as u64,
        )
        .counter(
            "upstream_dials",
            "Connections opened to origins.",
            gateway.pool.dials(),
        )
        .gauge(
            "upstream_connections",
            "Origin connections open.",
            gateway.pool.size() as u64,
        )
        .gauge(
            "routes",
            "Hostname routes served.",
            gateway.routes().len() as u64,
        )
        .gauge(
            "certificates",
            "Hostnames with a certificate to serve.",
            gateway.certificates.len() as u64,
        );
    let version = gateway.config_version.load(Ordering::Relaxed);
    kakuremichi_nodelink::link::read_node_metrics(&mut readings, version, &gateway.stack);
    gateway.link.read_metrics(&mut readings);
    gateway
        .traffic
        .with(|table| table.read_metrics(&mut readings));
    readings.encode()
}
