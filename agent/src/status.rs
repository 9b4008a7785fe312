//! The loopback status listener, and `healthcheck`, its client for images without curl.

use crate::Agent;
use hyper::Response;
use kakuremichi_rt::http::{health_endpoints, respond, Body};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// Ask the status listener at `addr` whether the agent is alive: `Ok` on a 200 from
/// `/healthz`, otherwise why not.
pub fn healthcheck(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(3);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    match &head[9..12] {
        b"200" => Ok(()),
        status => Err(format!("status {}", String::from_utf8_lossy(status))),
    }
}
