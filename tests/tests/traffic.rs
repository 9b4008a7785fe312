//! Traffic history with the real binaries: a load of known shape through two gateways is
//! what Control's API and the tunnel's page say afterwards, to the byte, and stays so when
//! Control and the gateways restart (a gateway's repeated reports count once).

use kakuremichi_tests::browser::log_in_admin;
use kakuremichi_tests::{metric, wait_for, Cluster, ShapedOrigin};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const REQUESTS: usize = 1_000;
const UPLOAD: usize = 5_000;
const DOWNLOAD: usize = 20_000;
const CLIENTS: usize = 10;

/// Send `count` requests for `paths(i)` to `hostname` through the gateway at `port` on one
/// keep-alive connection, each with `upload` bytes of body; the statuses.
fn load(
    port: u16,
    hostname: &str,
    count: usize,
    upload: usize,
    path: impl Fn(usize) -> String,
) -> Vec<u16> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let body = vec![b'u'; upload];
    let mut statuses = Vec::new();
    for i in 0..count {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {hostname}\r\nContent-Length: {upload}\r\n\r\n",
            path(i)
        );
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&body).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let mut answer = vec![0; length.expect("a Content-Length")];
        reader.read_exact(&mut answer).unwrap();
        statuses.push(status);
    }
    statuses
}

fn totals(cluster: &Cluster, path: &str) -> Value {
    let answer = cluster.api("GET", path, None);
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    answer.json()["totals"].clone()
}

fn wait_for_totals(cluster: &Cluster, path: &str, expected: &[(&str, u64)]) -> Duration {
    let started = Instant::now();
    let matches = |t: &Value| {
        expected
            .iter()
            .all(|(field, n)| t[field].as_u64() == Some(*n))
    };
    wait_for(Duration::from_secs(60), || {
        matches(&totals(cluster, path)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{path}: expected {expected:?}, got {}\n{}",
            totals(cluster, path),
            cluster.logs()
        )
    });
    started.elapsed()
}

#[test]
fn a_known_load_through_two_gateways_is_counted_exactly_and_survives_restarts() {
    let mut cluster = Cluster::with_control_args("traffic", &["--heartbeat-interval-ms", "500"]);
    let origin = ShapedOrigin::start();
    cluster.add_gateway();
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let tunnel = cluster.create_tunnel("shaped.localhost", agent, &origin.addr.to_string());
    // A tunnel to a port nothing listens on: the gateway answers 502 itself.
    let dead_port = kakuremichi_tests::free_tcp_port();
    let dead = cluster.create_tunnel("dead.localhost", agent, &format!("127.0.0.1:{dead_port}"));
    for gateway in 0..2 {
        cluster
            .wait_until(gateway, "shaped.localhost", Duration::from_secs(15), |a| {
                a.status == 200
            })
            .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    }
    // The probe requests above are counted too; the load starts from what they left.
    let before = wait_for(Duration::from_secs(30), || {
        let t = totals(&cluster, &format!("/api/v1/tunnels/{tunnel}/traffic"));
        (t["requests"].as_u64()? > 0).then(|| t["requests"].as_u64().unwrap())
    })
    .expect("the probes are counted");
    std::thread::sleep(Duration::from_secs(2));
    let before = totals(&cluster, &format!("/api/v1/tunnels/{tunnel}/traffic"))["requests"]
        .as_u64()
        .unwrap()
        .max(before);

    // 1,000 requests, every tenth answered 502 by the origin, 5 KB up and 20 KB down each,
    // from 10 clients over the two gateways.
    let ports: Vec<u16> = cluster.gateways.iter().map(|g| g.http_port).collect();
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let port = ports[c % 2];
            std::thread::spawn(move || {
                load(port, "shaped.localhost", REQUESTS / CLIENTS, UPLOAD, |i| {
                    let status = if (c * REQUESTS / CLIENTS + i).is_multiple_of(10) {
                        502
                    } else {
                        200
                    };
                    format!("/{status}/{DOWNLOAD}")
                })
            })
        })
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let sent_in = started.elapsed();
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        REQUESTS / 10
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        REQUESTS * 9 / 10
    );
    let dead_statuses = load(ports[0], "dead.localhost", 10, 0, |_| "/".into());
    assert!(dead_statuses.iter().all(|s| *s == 502), "{dead_statuses:?}");

    let path = format!("/api/v1/tunnels/{tunnel}/traffic");
    let expected_load = [
        ("requests", before + REQUESTS as u64),
        ("status_5xx", REQUESTS as u64 / 10),
    ];
    let delay = wait_for_totals(&cluster, &path, &expected_load);
    let t = totals(&cluster, &path);
    // The probes (GET /) carried no body either way: the bytes are the load's, exactly.
    assert_eq!(
        t["bytes_in"].as_u64(),
        Some((REQUESTS * UPLOAD) as u64),
        "{t}"
    );
    assert_eq!(
        t["bytes_out"].as_u64(),
        Some((REQUESTS * DOWNLOAD) as u64),
        "{t}"
    );
    assert_eq!(
        t["failed"].as_u64(),
        Some(0),
        "the origin's own 502s are answers: {t}"
    );
    // Each gateway's /metrics names the tunnel; their 5xx add up to the load's.
    let sample =
        format!(r#"kakuremichi_gateway_tunnel_requests_total{{tunnel="{tunnel}",class="5xx"}}"#);
    let from_metrics: f64 = (0..2)
        .map(|g| metric(&cluster.gateways[g].metrics(), &sample).unwrap_or(0.0))
        .sum();
    assert_eq!(from_metrics, (REQUESTS / 10) as f64);
    let control = cluster.control_metrics();
    let kept = metric(&control, "kakuremichi_control_traffic_points_written_total");
    assert!(kept.unwrap_or(0.0) > 0.0, "{control}");
    let dropped = metric(
        &control,
        "kakuremichi_control_traffic_reports_dropped_total",
    );
    assert_eq!(dropped, Some(0.0), "{control}");
    let (p50, p99) = (t["p50_ms"].as_f64().unwrap(), t["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p99 >= p50, "{t}");
    // Each gateway's share, and the gateway failure counted on the dead tunnel.
    let through = |g: usize| {
        totals(
            &cluster,
            &format!("/api/v1/gateways/{}/traffic", cluster.gateways[g].id),
        )
    };
    let dead_path = format!("/api/v1/tunnels/{dead}/traffic");
    wait_for_totals(
        &cluster,
        &dead_path,
        &[("requests", 10), ("status_5xx", 10), ("failed", 10)],
    );
    let (first, second) = (through(0), through(1));
    let shared = first["requests"].as_u64().unwrap() + second["requests"].as_u64().unwrap();
    assert_eq!(shared, before + REQUESTS as u64 + 10, "{first}\n{second}");
    assert!(second["requests"].as_u64().unwrap() >= (REQUESTS / 2) as u64);
    let agent_id = cluster.agents[agent].id.clone();
    let of_agent = totals(&cluster, &format!("/api/v1/agents/{agent_id}/traffic"));
    assert_eq!(
        of_agent["requests"].as_u64(),
        Some(before + REQUESTS as u64 + 10)
    );
    let all_day = cluster.api("GET", "/api/v1/traffic?range=24h", None).json();
    assert_eq!(
        all_day["totals"]["requests"].as_u64(),
        Some(before + REQUESTS as u64 + 10)
    );
    assert_eq!(all_day["points"].as_array().unwrap().len(), 96);
    assert_eq!(
        cluster.api("GET", "/api/v1/traffic?range=1y", None).status,
        400
    );
    println!(
        "traffic: {REQUESTS} requests sent in {:.2} s; the API said so {:.2} s after the last",
        sent_in.as_secs_f64(),
        delay.as_secs_f64()
    );

    // The tunnel's page shows the same figures.
    let browser = log_in_admin(&cluster);
    let page = browser.get(&format!("/tunnels/{tunnel}?range=1h"));
    assert_eq!(page.status, 200, "{}", page.body);
    let shown = thousands(before + REQUESTS as u64);
    assert!(page.body.contains("<svg"), "charts drawn");
    assert!(
        page.body.contains(&shown),
        "{shown} requests on the page:\n{}",
        page.body
    );

    // Control restarted: the gateways report their kept minutes again on the new session,
    // and they count once.
    cluster.control.restart();
    for gateway in &cluster.gateways {
        cluster.wait_online("gateway", &gateway.id);
    }
    std::thread::sleep(Duration::from_secs(3));
    let after_control = totals(&cluster, &path);
    assert_eq!(after_control, t, "Control's restart changed the history");
    // Gateways restarted: what they counted is Control's, and new requests add to it.
    for gateway in 0..2 {
        cluster.gateways[gateway].restart();
    }
    for gateway in 0..2 {
        cluster
            .wait_until(gateway, "shaped.localhost", Duration::from_secs(15), |a| {
                a.status == 200
            })
            .unwrap_or_else(|| panic!("tunnel never served again\n{}", cluster.logs()));
    }
    let probes_again = 2; // at least one request each through wait_until
    wait_for(Duration::from_secs(30), || {
        let now = totals(&cluster, &path)["requests"].as_u64()?;
        (now >= t["requests"].as_u64()? + probes_again).then_some(())
    })
    .unwrap_or_else(|| panic!("no counts after the gateways' restart\n{}", cluster.logs()));
    let after = totals(&cluster, &path);
    assert!(
        after["bytes_in"].as_u64() >= t["bytes_in"].as_u64(),
        "{after}"
    );
    assert_eq!(after["status_5xx"], t["status_5xx"], "{after}");
}

/// `1234567` as the pages write it: `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A udp echo on loopback: each datagram comes back as it was.
fn udp_echo() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp echo");
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(&buffer[..len], from);
        }
    });
    port
}

/// One exchange on a tcp tunnel's public port: `request` out, the whole answer back.
fn tcp_exchange(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

#[test]
fn tcp_connections_and_udp_flows_are_counted_with_their_bytes() {
    let mut cluster =
        Cluster::with_control_args("traffic-ports", &["--heartbeat-interval-ms", "500"]);
    let origin = ShapedOrigin::start();
    let echo = udp_echo();
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let (tcp_port, udp_port) = (
        kakuremichi_tests::free_tcp_port(),
        kakuremichi_tests::free_udp_port(),
    );
    let create = |body: serde_json::Value| {
        let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.json()["id"].as_str().unwrap().to_string()
    };
    let tcp = create(
        serde_json::json!({"kind": "tcp", "port": tcp_port, "agent": agent_id, "target": origin.addr.to_string()}),
    );
    let udp = create(
        serde_json::json!({"kind": "udp", "port": udp_port, "agent": agent_id, "target": format!("127.0.0.1:{echo}")}),
    );
    // `Connection: close`: the origin answers and closes, so the connection ends.
    let request = b"GET /200/3000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer_len = wait_for(Duration::from_secs(15), || tcp_exchange(tcp_port, request))
        .unwrap_or_else(|| panic!("no answer through the tcp tunnel\n{}", cluster.logs()))
        .len();
    let datagram = [7u8; 100];
    let ready = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ready
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    wait_for(Duration::from_secs(15), || {
        ready.send_to(&datagram, ("127.0.0.1", udp_port)).ok()?;
        ready.recv_from(&mut [0u8; 200]).ok()
    })
    .unwrap_or_else(|| panic!("no echo through the udp tunnel\n{}", cluster.logs()));
    std::thread::sleep(Duration::from_secs(2));
    let tcp_path = format!("/api/v1/tunnels/{tcp}/traffic");
    let udp_path = format!("/api/v1/tunnels/{udp}/traffic");
    let (tcp_before, udp_before) = (totals(&cluster, &tcp_path), totals(&cluster, &udp_path));
    let n = |t: &Value, field: &str| t[field].as_u64().unwrap();

    for _ in 0..5 {
        assert_eq!(
            tcp_exchange(tcp_port, request).map(|a| a.len()),
            Some(answer_len)
        );
    }
    for _ in 0..3 {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for _ in 0..4 {
            client.send_to(&datagram, ("127.0.0.1", udp_port)).unwrap();
            assert_eq!(client.recv_from(&mut [0u8; 200]).unwrap().0, 100);
        }
    }
    wait_for_totals(
        &cluster,
        &tcp_path,
        &[
            ("connections", n(&tcp_before, "connections") + 5),
            (
                "bytes_in",
                n(&tcp_before, "bytes_in") + 5 * request.len() as u64,
            ),
            (
                "bytes_out",
                n(&tcp_before, "bytes_out") + 5 * answer_len as u64,
            ),
        ],
    );
    wait_for_totals(
        &cluster,
        &udp_path,
        &[
            ("connections", n(&udp_before, "connections") + 3),
            ("bytes_in", n(&udp_before, "bytes_in") + 1_200),
            ("bytes_out", n(&udp_before, "bytes_out") + 1_200),
        ],
    );
    assert!(
        n(&totals(&cluster, &udp_path), "open_max") >= 3,
        "the flows stay open for a while"
    );
}
