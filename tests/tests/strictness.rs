//! HTTP strictness at the gateway, byte for byte on a raw socket: what RFC 9110/9112/9113
//! call malformed gets a 4xx from the gateway (never the 502 page, never a guess), and what
//! a client claims about addresses is not passed off to the origin as the gateway's word.

use kakuremichi_tests::{metric, raw_exchange, wait_for, Cluster, Origin};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const HOST: &str = "strict.localhost";

/// Send `request` as is to the gateway and read until it closes or `limit` passes.
fn raw(port: u16, request: &[u8], limit: Duration) -> (u16, String) {
    raw_exchange(([127, 0, 0, 1], port).into(), None, request, limit)
}

/// The JSON the describing origin answered with.
fn origin_saw(answer: &str) -> serde_json::Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn gateway_counter(cluster: &Cluster, name: &str) -> f64 {
    metric(
        &cluster.gateways[0].metrics(),
        &format!("kakuremichi_gateway_{name}_total"),
    )
    .unwrap_or(-1.0)
}

#[test]
fn malformed_requests_get_4xx_and_client_claims_are_not_trusted() {
    let mut cluster = Cluster::new("strict");
    cluster.gateway_args = vec!["--body-idle-timeout".into(), "1".into()];
    let origin = Origin::start("strict");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel(HOST, agent, &origin.addr.to_string());
    cluster
        .wait_until(0, HOST, Duration::from_secs(15), |a| a.status == 200)
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    let port = cluster.gateways[0].http_port;
    let short = Duration::from_secs(5);

    // Two Host field lines: 400 (RFC 9112 §3.2), whichever would route.
    let (status, answer) = raw(
        port,
        format!(
            "GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.localhost\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        short,
    );
    assert_eq!(status, 400, "{answer}");
    // No Host in HTTP/1.1: 400.
    let (status, answer) = raw(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", short);
    assert_eq!(status, 400, "{answer}");
    // A Host that is no authority: 400, not a 404 lookup.
    let (status, answer) = raw(
        port,
        b"GET / HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        short,
    );
    assert_eq!(status, 400, "{answer}");

    // Absolute form: the target's authority wins over Host (RFC 9112 §3.2.2).
    let (status, answer) = raw(
        port,
        format!(
            "GET http://{HOST}/absolute HTTP/1.1\r\nHost: elsewhere.localhost\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        short,
    );
    assert_eq!(status, 200, "{answer}");
    let seen = origin_saw(&answer);
    assert_eq!(seen["path"], "/absolute");
    assert_eq!(seen["host"], HOST);

    // Several X-Forwarded-For lines are one list, joined, then the client appended; a
    // client's Forwarded gets the gateway's element appended; address claims are dropped.
    let (status, answer) = raw(
        port,
        format!(
            "GET /claims HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-For: 192.0.2.1\r\n\
             X-Forwarded-For: 192.0.2.2\r\nForwarded: for=192.0.2.3\r\n\
             True-Client-IP: 192.0.2.4\r\nCF-Connecting-IP: 192.0.2.5\r\n\
             X-Real-IP: 192.0.2.6\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        short,
    );
    assert_eq!(status, 200, "{answer}");
    let seen = origin_saw(&answer);
    assert_eq!(seen["x_forwarded_for"], "192.0.2.1, 192.0.2.2, 127.0.0.1");
    assert_eq!(
        seen["forwarded"],
        format!("for=192.0.2.3, for=127.0.0.1;host=\"{HOST}\";proto=http")
    );
    assert_eq!(seen["x_real_ip"], "127.0.0.1");
    assert_eq!(seen["true_client_ip"], "");
    assert_eq!(seen["cf_connecting_ip"], "");

    let bad_gateway_before = gateway_counter(&cluster, "bad_gateway");
    let client_errors_before = gateway_counter(&cluster, "client_errors");
    // A malformed chunk size is the client's error: 400, not the 502 page.
    let (status, answer) = raw(
        port,
        format!(
            "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"
        )
        .as_bytes(),
        short,
    );
    assert_eq!(status, 400, "{answer}");
    // A body that stops arriving: 408 after the (shortened) idle timeout.
    let started = Instant::now();
    let (status, answer) = raw(
        port,
        format!("POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\nonly ten..")
            .as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status, 408, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle body answered after {:?}",
        started.elapsed()
    );
    // A client that hangs up mid-body.
    {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .write_all(
                format!(
                    "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\npart"
                )
                .as_bytes(),
            )
            .expect("send");
        std::thread::sleep(Duration::from_millis(200));
    }
    let counted = wait_for(Duration::from_secs(5), || {
        (gateway_counter(&cluster, "client_errors") >= client_errors_before + 3.0).then_some(())
    });
    assert!(
        counted.is_some(),
        "client faults not counted as such\n{}",
        cluster.gateways[0].metrics()
    );
    assert_eq!(
        gateway_counter(&cluster, "bad_gateway"),
        bad_gateway_before,
        "a client's fault was counted against the tunnel\n{}",
        cluster.logs()
    );
    // And the tunnel still serves.
    assert_eq!(cluster.get(0, HOST, "/").status, 200);
}
