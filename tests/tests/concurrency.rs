//! Under concurrency: hundreds of parallel HTTP/1.1 connections (wrk), HTTP/2 streams
//! (h2load) and WebSockets through one gateway and one agent, with the gateway's per-agent
//! connection limit set low so that requests queue. Every request must succeed, overlay
//! sockets stay bounded by the limit, and memory comes back once the load ends.

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use kakuremichi_tests::{assert_memory_comes_back, metric, rss_kib, Cluster, EchoOrigin, Origin};
use std::process::Command;
use std::time::Duration;

const HOST: &str = "busy.localhost";
const WS_HOST: &str = "swarm.localhost";
/// Requests in flight per agent service: far below the clients' concurrency.
const UPSTREAM_CONNECTIONS: usize = 64;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/install-deps installs it): {e}"));
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{program} failed:\n{text}");
    text
}

#[test]
fn hundreds_of_parallel_clients_get_every_answer_and_memory_comes_back() {
    let mut cluster = Cluster::new("concurrency");
    cluster.gateway_args = vec![
        "--upstream-connections".into(),
        UPSTREAM_CONNECTIONS.to_string(),
    ];
    let origin = Origin::start("busy");
    let echo = EchoOrigin::start();
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel_with_issuer(HOST, agent, &origin.addr.to_string(), "internal");
    cluster.create_tunnel(WS_HOST, agent, &echo.addr.to_string());
    cluster
        .wait_until(0, HOST, Duration::from_secs(15), |a| a.status == 308)
        .unwrap_or_else(|| panic!("tunnel never got its certificate\n{}", cluster.logs()));
    let https_port = cluster.gateways[0].https_port;
    let https_url = format!("https://127.0.0.1:{https_port}/");
    let gateway_pid = cluster.gateways[0].pid().expect("gateway runs");
    let agent_pid = cluster.agents[0].pid().expect("agent runs");
    let port = cluster.gateways[0].http_port;
    let resolve_header = format!("Host: {HOST}");
    // Warm every path once, then take the idle baseline.
    run(
        "wrk",
        &["-c", "10", "-d", "1s", "-H", &resolve_header, &https_url],
    );
    std::thread::sleep(Duration::from_secs(11));
    let idle = rss_kib(gateway_pid) + rss_kib(agent_pid);

    // 400 HTTP/1.1 connections for 5 s, over TLS.
    let wrk = run(
        "wrk",
        &[
            "-t",
            "2",
            "-c",
            "400",
            "-d",
            "5s",
            "--timeout",
            "10s",
            "-H",
            &resolve_header,
            &https_url,
        ],
    );
    assert!(
        !wrk.contains("Non-2xx") && !wrk.contains("Socket errors"),
        "wrk saw errors:\n{wrk}\n{}",
        cluster.gateways[0].metrics()
    );
    assert!(wrk.contains("requests in"), "{wrk}");

    // 20 HTTP/2 connections × 50 streams (h2 chosen by ALPN).
    let h2 = run(
        "h2load",
        &[
            "-n",
            "20000",
            "-c",
            "20",
            "-m",
            "50",
            "-H",
            &format!(":authority: {HOST}"),
            &https_url,
        ],
    );
    assert!(h2.contains("Application protocol: h2"), "{h2}");
    assert!(
        h2.contains("20000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{h2}\n{}\n{}",
        cluster.gateways[0].metrics(),
        cluster.logs()
    );
    assert!(h2.contains("status codes: 20000 2xx"), "{h2}");

    // 300 WebSockets open at once, each echoing three messages.
    smol::block_on(async {
        let sockets = (0..300).map(|i| {
            smol::spawn(async move {
                let tcp = smol::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let url = format!("ws://{WS_HOST}:{port}/socket");
                let (mut ws, _) = async_tungstenite::client_async(url, tcp)
                    .await
                    .map_err(std::io::Error::other)?;
                for round in 0..3 {
                    let text = format!("socket {i} round {round}");
                    ws.send(Message::text(text.clone()))
                        .await
                        .map_err(std::io::Error::other)?;
                    match ws.next().await {
                        Some(Ok(echo)) if echo.to_text().ok() == Some(text.as_str()) => {}
                        other => return Err(std::io::Error::other(format!("{other:?}"))),
                    }
                }
                ws.close(None).await.map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        });
        let sockets: Vec<_> = sockets.collect();
        let mut failures = Vec::new();
        for socket in sockets {
            if let Err(e) = socket.await {
                failures.push(e.to_string());
            }
        }
        assert!(
            failures.is_empty(),
            "{} WebSockets failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    });

    let gateway_metrics = cluster.gateways[0].metrics();
    for counter in ["bad_gateway", "overloaded", "client_errors"] {
        assert_eq!(
            metric(
                &gateway_metrics,
                &format!("kakuremichi_gateway_{counter}_total")
            ),
            Some(0.0),
            "{gateway_metrics}"
        );
    }
    let sockets = metric(
        &cluster.agents[0].metrics(),
        "kakuremichi_agent_tcp_sockets",
    )
    .unwrap_or(f64::MAX);
    assert!(
        sockets <= UPSTREAM_CONNECTIONS as f64 + 300.0,
        "agent holds {sockets} overlay sockets for a limit of {UPSTREAM_CONNECTIONS}"
    );
    assert_memory_comes_back(&[gateway_pid, agent_pid], idle);
}

/// An origin on raw sockets: `GET /events` answers with a chunked event stream that sends a
/// line every 300 ms until the client goes; any other request gets `ok` at once.
fn streaming_origin() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = listener.local_addr().expect("origin address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone stream");
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut header = String::new();
                    while reader.read_line(&mut header).unwrap_or(0) > 2 {
                        header.clear();
                    }
                    if request_line.contains(" /events ") {
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                                    Transfer-Encoding: chunked\r\n\r\n";
                        if writer.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                        while writer.write_all(b"c\r\ndata: tick\n\n\r\n").is_ok() {
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        return;
                    }
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn long_streams_do_not_hold_request_slots() {
    let mut cluster = Cluster::new("streams");
    // Four slots for eight streams, and a short wait: slots held by streams would keep the
    // last four streams and the next plain request waiting into a 503.
    cluster.gateway_args = [
        "--upstream-connections",
        "4",
        "--upstream-queue-timeout",
        "5",
    ]
    .map(String::from)
    .to_vec();
    let origin = streaming_origin();
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel("sse.localhost", agent, &origin.to_string());
    cluster
        .wait_until(0, "sse.localhost", Duration::from_secs(15), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    let port = cluster.gateways[0].http_port;
    let resolve = format!("sse.localhost:{port}:127.0.0.1");
    let url = format!("http://sse.localhost:{port}/events");
    let mut streams: Vec<_> = (0..8)
        .map(|_| {
            Command::new("curl")
                .args(["-sSN", "--max-time", "9", "--resolve", &resolve, &url])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl runs")
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let started = std::time::Instant::now();
    let answer = cluster.get(0, "sse.localhost", "/fast");
    assert_eq!(
        answer.status,
        200,
        "{answer:?}\n{}",
        cluster.gateways[0].metrics()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a plain request waited {:?} behind streams",
        started.elapsed()
    );
    // Every stream is still flowing.
    for stream in &mut streams {
        assert!(
            matches!(stream.try_wait(), Ok(None)),
            "a stream ended early"
        );
    }
    let metrics = cluster.gateways[0].metrics();
    assert_eq!(
        metric(&metrics, "kakuremichi_gateway_overloaded_total"),
        Some(0.0),
        "{metrics}"
    );
    for mut stream in streams {
        let _ = stream.kill();
        let _ = stream.wait();
    }
}
