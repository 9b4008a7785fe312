//! Beyond HTTP: `tcp`, `udp` and `tls` passthrough tunnels against real servers (PostgreSQL,
//! dnsmasq, nginx reading the PROXY protocol, `openssl s_server`), opened, moved and closed
//! live.

use kakuremichi_tests::servers::{self, psql};
use kakuremichi_tests::{
    assert_memory_comes_back, curl, dns, metric, rss_kib, wait_for, Cluster, Origin,
};
use serde_json::json;
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

const LIVE_LIMIT: Duration = Duration::from_secs(2);

fn create(cluster: &Cluster, body: serde_json::Value) -> serde_json::Value {
    let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(answer.status, 201, "create {body}: {}", answer.body);
    answer.json()
}

fn port_open(port: u16) -> bool {
    port_open_at("127.0.0.1", port)
}

fn port_open_at(host: &str, port: u16) -> bool {
    let addr = std::net::SocketAddr::new(host.parse().unwrap(), port);
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The public addresses of the two gateways in the PostgreSQL test.
const GATEWAYS: [&str; 2] = ["127.0.0.1", "127.0.0.2"];

fn pgbench(port: u16, args: &[&str]) -> String {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .output()
        .expect("pgbench");
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn tps(report: &str) -> f64 {
    report
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l[6..].split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_tcp_tunnel_carries_postgresql_and_moves_ports_live() {
    let mut cluster = Cluster::new("tcp-postgres");
    let postgres = servers::postgres(&cluster.dir);
    // Two gateways, each with its public listeners on its own loopback address.
    cluster.add_gateway();
    cluster.add_gateway_at("127.0.0.2", kakuremichi_tests::free_tcp_port());
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);

    let first_port = kakuremichi_tests::free_tcp_port();
    let started = Instant::now();
    let tunnel = create(
        &cluster,
        json!({"kind": "tcp", "port": first_port, "agent": agent_id, "target": format!("127.0.0.1:{}", postgres.port)}),
    );
    assert_eq!(tunnel["kind"], "tcp");
    assert_eq!(tunnel["ports"], first_port.to_string());
    assert!(tunnel["hostname"].is_null());
    let id = tunnel["id"].as_str().unwrap().to_string();
    for gateway in GATEWAYS {
        wait_for(LIVE_LIMIT, || {
            psql(gateway, first_port, "select 1").then_some(())
        })
        .unwrap_or_else(|| panic!("psql through {gateway} failed\n{}", cluster.logs()));
        println!(
            "tcp tunnel POST to first psql answer through {gateway}: {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }

    // A short pgbench through the tunnel and direct (figures, not a check).
    pgbench(first_port, &["-i", "-s", "1", "-q"]);
    let through = tps(&pgbench(
        first_port,
        &["-c", "8", "-j", "2", "-T", "3", "-S"],
    ));
    let direct = tps(&pgbench(
        postgres.port,
        &["-c", "8", "-j", "2", "-T", "3", "-S"],
    ));
    println!(
        "pgbench -S, 8 clients, 3 s: through the tunnel {through:.0} tps, direct {direct:.0} tps ({:.2}x)",
        through / direct.max(1.0)
    );
    assert!(through > 0.0);

    // Move the port while a client loops on the new one: it answers within 2 s, the old one
    // is closed.
    let second_port = kakuremichi_tests::free_tcp_port();
    let moved = Instant::now();
    let answer = cluster.api(
        "PATCH",
        &format!("/api/v1/tunnels/{id}"),
        Some(&json!({"port": second_port}).to_string()),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    for gateway in GATEWAYS {
        let took = wait_for(LIVE_LIMIT, || {
            psql(gateway, second_port, "select 1").then(|| moved.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "the new port never answered on {gateway}\n{}",
                cluster.logs()
            )
        });
        println!(
            "tcp tunnel port change to first psql answer on the new port through {gateway}: {:.3} s",
            took.as_secs_f64()
        );
        wait_for(LIVE_LIMIT, || {
            (!port_open_at(gateway, first_port)).then_some(())
        })
        .expect("the old port is closed");
    }

    // Delete: the port closes.
    assert_eq!(
        cluster
            .api("DELETE", &format!("/api/v1/tunnels/{id}"), None)
            .status,
        200
    );
    for gateway in GATEWAYS {
        wait_for(LIVE_LIMIT, || {
            (!port_open_at(gateway, second_port)).then_some(())
        })
        .expect("a deleted tunnel's port is closed");
    }
    assert!(
        psql("127.0.0.1", postgres.port, "select 1"),
        "PostgreSQL itself is fine"
    );
}

#[test]
fn proxy_protocol_tells_nginx_the_client_address() {
    let mut cluster = Cluster::new("tcp-proxy-protocol");
    let nginx = servers::nginx_proxy_protocol(&cluster.dir);
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    for version in ["v1", "v2"] {
        let port = kakuremichi_tests::free_tcp_port();
        let tunnel = create(
            &cluster,
            json!({"kind": "tcp", "port": port, "agent": agent_id, "target": format!("127.0.0.1:{}", nginx.port), "proxy_protocol": version}),
        );
        assert_eq!(tunnel["proxy_protocol"], version);
        // From a distinct loopback address and port, so the logged address can only be ours.
        let client_port = kakuremichi_tests::free_tcp_port().to_string();
        let url = format!("http://127.0.0.1:{port}/");
        let answer = wait_for(LIVE_LIMIT, || {
            let answer = curl(&[
                "--interface",
                "127.0.0.7",
                "--local-port",
                &client_port,
                &url,
            ]);
            (answer.status == 200).then_some(answer)
        })
        .unwrap_or_else(|| {
            panic!(
                "nginx never answered through the tunnel\n{}",
                cluster.logs()
            )
        });
        assert_eq!(answer.body, "nginx saw 127.0.0.7\n", "{version}");
        let log = nginx.log("logs/access.log");
        assert_eq!(
            log.lines().last(),
            Some(format!("127.0.0.7:{client_port}").as_str()),
            "{version}: {log}"
        );
        let id = tunnel["id"].as_str().unwrap();
        assert_eq!(
            cluster
                .api("DELETE", &format!("/api/v1/tunnels/{id}"), None)
                .status,
            200
        );
    }
}

/// Replies to each datagram with the address it came from, so a test sees which socket of
/// the agent carries its flow.
fn udp_echo() -> (u16, std::thread::JoinHandle<()>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    // Room for every swarm client's datagram at once.
    socket.set_recv_buffer_size(4 << 20).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).expect("udp echo");
    let socket: UdpSocket = socket.into();
    let port = socket.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let mut buffer = [0u8; 65_535];
        while let Ok((len, from)) = socket.recv_from(&mut buffer) {
            let mut reply = format!("{from} ").into_bytes();
            reply.extend_from_slice(&buffer[..len]);
            let _ = socket.send_to(&reply, from);
        }
    });
    (port, thread)
}

fn echo(socket: &UdpSocket, to: u16, payload: &[u8]) -> Option<String> {
    socket.send_to(payload, ("127.0.0.1", to)).ok()?;
    let mut buffer = vec![0u8; 70_000];
    let len = socket.recv(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..len]).to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// 1,000 queries one after another from one socket: answered, p50 and p99 in ms.
fn thousand_queries(server: &str) -> (usize, f64, f64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut times = Vec::with_capacity(1000);
    for id in 0..1000u16 {
        if let Ok((address, took)) =
            dns::query_on(&socket, server, id, &format!("q{id}.example.test"))
        {
            assert_eq!(address.to_string(), "192.0.2.7");
            times.push(took);
        }
    }
    times.sort();
    let answered = times.len();
    (answered, percentile(&times, 0.5), percentile(&times, 0.99))
}

#[test]
fn a_udp_tunnel_answers_dns_keeps_flows_bounded_and_forgets_silent_ones() {
    let mut cluster = Cluster::new("udp");
    let dnsmasq = servers::dnsmasq(&cluster.dir);
    let (echo_port, _echo) = udp_echo();
    let web = Origin::start("web");
    cluster.gateway_args = ["--udp-idle-timeout", "1", "--udp-flows", "64"]
        .map(String::from)
        .to_vec();
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    cluster.create_tunnel("web.localhost", agent, &web.addr.to_string());

    let dns_port = kakuremichi_tests::free_udp_port();
    let started = Instant::now();
    create(
        &cluster,
        json!({"kind": "udp", "port": dns_port, "agent": agent_id, "target": format!("127.0.0.1:{}", dnsmasq.port)}),
    );
    let through = format!("127.0.0.1:{dns_port}");
    wait_for(LIVE_LIMIT, || {
        dns::query(&through, "first.example.test", Duration::from_millis(200)).ok()
    })
    .unwrap_or_else(|| panic!("no DNS answer through the tunnel\n{}", cluster.logs()));
    println!(
        "udp tunnel POST to first DNS answer: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let dig = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns_port.to_string(),
            "+short",
            "+tries=1",
            "+time=2",
            "dig.example.test",
        ])
        .output()
        .expect("dig");
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "192.0.2.7");

    let (answered, p50, p99) = thousand_queries(&through);
    let (direct_answered, direct_p50, direct_p99) =
        thousand_queries(&format!("127.0.0.1:{}", dnsmasq.port));
    println!(
        "1000 DNS queries: through the tunnel {answered} answered, p50 {p50:.3} ms, p99 {p99:.3} ms; \
         direct {direct_answered} answered, p50 {direct_p50:.3} ms, p99 {direct_p99:.3} ms"
    );
    assert!(
        answered >= 995,
        "{answered} of 1000 answered through the tunnel"
    );

    // A flow that keeps talking keeps its agent socket over many idle-timeout periods; one
    // silent for longer than the timeout gets a new one.
    let echo_public = kakuremichi_tests::free_udp_port();
    create(
        &cluster,
        json!({"kind": "udp", "port": echo_public, "agent": agent_id, "target": format!("127.0.0.1:{echo_port}")}),
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let seen_as = |payload: &[u8]| -> Option<String> {
        let reply = echo(&client, echo_public, payload)?;
        Some(reply.split_whitespace().next()?.to_string())
    };
    let first = wait_for(LIVE_LIMIT, || seen_as(b"hello"))
        .unwrap_or_else(|| panic!("no echo through the tunnel\n{}", cluster.logs()));
    // Replies leave from the public port the client sent to.
    client
        .send_to(b"where from", ("127.0.0.1", echo_public))
        .unwrap();
    let mut buffer = [0u8; 512];
    let (_, replied_from) = client.recv_from(&mut buffer).expect("a reply");
    assert_eq!(replied_from.port(), echo_public);
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(seen_as(b"still here").as_deref(), Some(first.as_str()));
    }
    std::thread::sleep(Duration::from_millis(2600));
    let after_silence = seen_as(b"back").expect("an answer after the flow expired");
    assert_ne!(after_silence, first, "a silent flow was forgotten");
    // The largest datagram there is crosses both ways.
    // 65,507 bytes is the most a UDP datagram holds; the echo adds its prefix to this one.
    let big = vec![b'x'; 65_467];
    let reply = echo(&client, echo_public, &big).expect("a 65 kB datagram comes back");
    assert!(reply.ends_with(&String::from_utf8_lossy(&big).to_string()));

    // A flood from 2,000 source ports: the table holds 64 flows, the rest is dropped, and
    // neither the flooded tunnel's live flow nor other tunnels notice.
    let flooders: Vec<UdpSocket> = (0..2000)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for socket in &flooders {
        let _ = socket.send_to(
            &dns::a_query(1, "flood.example.test"),
            ("127.0.0.1", dns_port),
        );
    }
    let metrics = cluster.gateways[gateway].metrics();
    let dropped = metric(&metrics, "kakuremichi_gateway_port_udp_dropped_total").unwrap_or(0.0);
    assert!(dropped > 0.0, "the flood was bounded: {metrics}");
    assert_eq!(cluster.get(gateway, "web.localhost", "/").status, 200);
    let dns_client = UdpSocket::bind("127.0.0.1:0").unwrap();
    dns_client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // The flood's flows expire after a second; the first new client gets in then.
    wait_for(Duration::from_secs(5), || {
        dns::query_on(&dns_client, &through, 7, "after.example.test").ok()
    })
    .expect("DNS answers again once the flood's flows expired");
    assert!(cluster.gateways[gateway].is_running());
}

#[test]
fn tls_passthrough_reaches_an_origin_with_its_own_certificate_beside_terminated_tunnels() {
    let mut cluster = Cluster::new("tls-passthrough");
    let origin = servers::tls_origin(&cluster.dir, "secure.localhost");
    let web = Origin::start("web");
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    cluster.create_tunnel_with_issuer("web.localhost", agent, &web.addr.to_string(), "internal");
    let ca = cluster.dir.join("internal-ca.pem");
    std::fs::write(&ca, curl(&[&cluster.control_url("/ca.pem")]).body).unwrap();
    wait_for(Duration::from_secs(10), || {
        (cluster
            .get_https(gateway, "web.localhost", "/", &ca, &[])
            .status
            == 200)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the terminated tunnel never served\n{}", cluster.logs()));

    let started = Instant::now();
    let tunnel = create(
        &cluster,
        json!({"kind": "tls", "hostname": "secure.localhost", "agent": agent_id, "target": format!("127.0.0.1:{}", origin.port)}),
    );
    assert_eq!(tunnel["kind"], "tls");
    let origin_ca = origin.dir.join("ca.pem");
    let answer = wait_for(Duration::from_secs(5), || {
        let answer = cluster.get_https(gateway, "secure.localhost", "/", &origin_ca, &[]);
        (answer.status == 200).then_some(answer)
    })
    .unwrap_or_else(|| panic!("passthrough never answered\n{}", cluster.logs()));
    println!(
        "tls passthrough POST to first answer: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        answer.body.contains("s_server"),
        "the origin itself answered: {}",
        answer.body
    );

    // The terminated tunnel on the same port still works, with the gateway's certificate.
    assert_eq!(
        cluster
            .get_https(gateway, "web.localhost", "/", &ca, &[])
            .status,
        200
    );
    // The origin's certificate is what the client saw, not the gateway's.
    assert_ne!(
        cluster
            .get_https(gateway, "secure.localhost", "/", &ca, &[])
            .status,
        200
    );

    // No SNI, garbage instead of a ClientHello, a ClientHello cut short: each connection is
    // dropped and nothing else is disturbed.
    let https = cluster.gateways[gateway].https_port;
    let no_sni = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{https}"),
            "-noservername",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    assert!(!String::from_utf8_lossy(&no_sni.stdout).contains("CN = secure.localhost"));
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: secure.localhost\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01][..],
    ] {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(("127.0.0.1", https)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.write_all(junk).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("s_server"));
    }
    assert_eq!(
        cluster
            .get_https(gateway, "web.localhost", "/", &ca, &[])
            .status,
        200
    );
    assert_eq!(
        cluster
            .get_https(gateway, "secure.localhost", "/", &origin_ca, &[])
            .status,
        200
    );
}

#[test]
fn port_tunnels_refuse_clashes_and_ports_the_gateway_does_not_allow() {
    let mut cluster = Cluster::new("port-rules");
    // Clear of the ports the next nodes take, which come one after another from the same
    // counter.
    let low = kakuremichi_tests::free_tcp_port() + 200;
    let allowed = format!("{low}-{}", low + 20);
    cluster.gateway_args = vec![
        "--tcp-ports".into(),
        allowed.clone(),
        "--udp-ports".into(),
        allowed.clone(),
    ];
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    cluster.wait_online("gateway", &cluster.gateways[gateway].id.clone());
    let target = "127.0.0.1:9";
    let refused = |body: serde_json::Value, status: u16, words: &str| {
        let revision = cluster.api("GET", "/api/v1/tunnels", None).body;
        let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.body.contains(words), "{body}: {}", answer.body);
        assert_eq!(
            cluster.api("GET", "/api/v1/tunnels", None).body,
            revision,
            "nothing changed"
        );
    };
    let range = format!("{}-{}", low + 1, low + 3);
    create(
        &cluster,
        json!({"kind": "tcp", "ports": range, "agent": agent_id, "target": "127.0.0.1:7001-7003"}),
    );
    refused(
        json!({"kind": "tcp", "port": low + 3, "agent": agent_id, "target": target}),
        409,
        "already taken by tunnel tcp",
    );
    refused(
        json!({"kind": "tcp", "port": low + 30, "agent": agent_id, "target": target}),
        409,
        "outside the gateway's --tcp-ports",
    );
    let http_port = cluster.gateways[gateway].http_port;
    refused(
        json!({"kind": "tcp", "port": http_port, "agent": agent_id, "target": target}),
        409,
        "own HTTP listener",
    );
    refused(
        json!({"kind": "udp", "port": low + 5, "agent": agent_id, "target": target, "proxy_protocol": "v2"}),
        400,
        "proxy_protocol",
    );
    refused(
        json!({"kind": "tcp", "ports": "5-1", "agent": agent_id, "target": target}),
        400,
        "ends before it starts",
    );
    refused(
        json!({"kind": "tcp", "ports": format!("{}-{}", low + 4, low + 5), "agent": agent_id, "target": "127.0.0.1:80-82"}),
        400,
        "has 3 ports but the public range has 2",
    );
    refused(
        json!({"kind": "tcp", "agent": agent_id, "target": target}),
        400,
        "needs a public port",
    );
    refused(
        json!({"kind": "tls", "agent": agent_id, "target": target}),
        400,
        "hostname",
    );
    refused(
        json!({"kind": "http", "hostname": "a.localhost", "port": low + 6, "agent": agent_id, "target": target}),
        400,
        "reached by hostname",
    );
    refused(
        json!({"kind": "smtp", "port": low + 6, "agent": agent_id, "target": target}),
        400,
        "expected one of `http`, `tls`, `tcp`, `udp`",
    );
    // The same number over UDP is another port.
    let udp = create(
        &cluster,
        json!({"kind": "udp", "port": low + 2, "agent": agent_id, "target": target}),
    );
    let id = udp["id"].as_str().unwrap();
    let kind_change = cluster.api(
        "PATCH",
        &format!("/api/v1/tunnels/{id}"),
        Some(r#"{"kind":"tcp"}"#),
    );
    assert_eq!(kind_change.status, 400, "{}", kind_change.body);
    // The range opened on the gateway, one listener per port.
    wait_for(LIVE_LIMIT, || {
        ((low + 1..=low + 3).all(port_open)).then_some(())
    })
    .unwrap_or_else(|| panic!("the range never opened\n{}", cluster.logs()));
    let metrics = cluster.gateways[gateway].metrics();
    assert!(cluster.gateways[gateway].is_running(), "{metrics}");
}

/// A connection from `source` (a loopback address) to `port` that sends `bytes` and reads
/// whatever comes back until the gateway closes (nothing when it refuses to connect).
fn exchange_from(source: &str, port: u16, bytes: &[u8]) -> String {
    let from = source.parse().ok();
    let to = ([127, 0, 0, 1], port).into();
    kakuremichi_tests::raw_exchange(to, from, bytes, Duration::from_secs(10)).1
}

#[test]
fn a_trusted_front_names_the_client_and_nobody_else_can() {
    use kakuremichi_proto::ports::Transport;
    use kakuremichi_proto::proxy_protocol::{header, ProxyProtocol};
    let mut cluster = Cluster::new("trusted-front");
    let nginx = servers::nginx_proxy_protocol(&cluster.dir);
    let web = Origin::start("web");
    cluster.gateway_args = vec!["--proxy-protocol-from".into(), "127.0.0.9/32".into()];
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    cluster.create_tunnel("web.localhost", agent, &web.addr.to_string());
    let http = cluster.gateways[gateway].http_port;
    let request = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n";
    let gateway_addr: std::net::SocketAddr = ([127, 0, 0, 1], http).into();
    let through_front = |version, client: &str| {
        let mut bytes = header(
            version,
            Transport::Tcp,
            client.parse().unwrap(),
            gateway_addr,
        );
        bytes.extend_from_slice(request);
        exchange_from("127.0.0.9", http, &bytes)
    };
    wait_for(Duration::from_secs(5), || {
        through_front(ProxyProtocol::V1, "203.0.113.50:40000")
            .contains("\"x_forwarded_for\":\"203.0.113.50\"")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the front's client never reached the origin\n{}",
            cluster.logs()
        )
    });
    let v2 = through_front(ProxyProtocol::V2, "198.51.100.60:40001");
    assert!(v2.contains("\"x_forwarded_for\":\"198.51.100.60\""), "{v2}");
    // The front must send a header; without one the connection is dropped unanswered.
    assert_eq!(exchange_from("127.0.0.9", http, request), "");
    // Anyone else cannot claim an address: their header is just a malformed request.
    let mut spoof = header(
        ProxyProtocol::V1,
        Transport::Tcp,
        "192.0.2.1:1".parse().unwrap(),
        gateway_addr,
    );
    spoof.extend_from_slice(request);
    let refused = exchange_from("127.0.0.1", http, &spoof);
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(!refused.contains("192.0.2.1"));

    // On a tcp tunnel's port too: the origin's PROXY header names the front's client.
    let port = kakuremichi_tests::free_tcp_port();
    create(
        &cluster,
        json!({"kind": "tcp", "port": port, "agent": agent_id, "target": format!("127.0.0.1:{}", nginx.port), "proxy_protocol": "v1"}),
    );
    let tunnel_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut bytes = header(
        ProxyProtocol::V2,
        Transport::Tcp,
        "192.0.2.99:5555".parse().unwrap(),
        tunnel_addr,
    );
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: nginx\r\nConnection: close\r\n\r\n");
    let answer = wait_for(LIVE_LIMIT, || {
        let answer = exchange_from("127.0.0.9", port, &bytes);
        answer.contains("nginx saw").then_some(answer)
    })
    .unwrap_or_else(|| panic!("nginx never answered through the front\n{}", cluster.logs()));
    assert!(answer.contains("nginx saw 192.0.2.99"), "{answer}");
    assert_eq!(
        nginx.log("logs/access.log").lines().last(),
        Some("192.0.2.99:5555")
    );
}

#[test]
fn a_tcp_tunnel_passes_the_origin_closing_to_a_client_that_keeps_its_side_open() {
    // A server that greets and hangs up, as SMTP-style banners and many probes do.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut stream in server.incoming().flatten() {
            let _ = stream.write_all(b"220 hello, goodbye\r\n");
        }
    });
    let mut cluster = Cluster::new("tcp-close");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let port = kakuremichi_tests::free_tcp_port();
    create(
        &cluster,
        json!({"kind": "tcp", "port": port, "agent": agent_id, "target": target.to_string()}),
    );
    wait_for(LIVE_LIMIT, || port_open(port).then_some(())).expect("the port opens");
    use std::io::Read;
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut greeting = String::new();
    client
        .read_to_string(&mut greeting)
        .expect("EOF, not a timeout");
    assert_eq!(greeting, "220 hello, goodbye\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_cli_creates_changes_and_deletes_a_port_tunnel_live() {
    let mut cluster = Cluster::new("tunnel-cli");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let web = Origin::start("web");
    let first = kakuremichi_tests::free_tcp_port().to_string();
    let (ok, out) = cluster.cli(
        "tunnel",
        &[
            "create",
            "--kind",
            "tcp",
            "--port",
            &first,
            "--agent",
            &agent_id,
            "--target",
            &web.addr.to_string(),
        ],
    );
    assert!(ok, "{out}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let through = |port: &str| curl(&["-H", "Host: x", &format!("http://127.0.0.1:{port}/")]);
    wait_for(LIVE_LIMIT, || (through(&first).status == 200).then_some(()))
        .unwrap_or_else(|| panic!("the CLI's tunnel never answered\n{}", cluster.logs()));
    let second = kakuremichi_tests::free_tcp_port().to_string();
    let (ok, out) = cluster.cli("tunnel", &["update", &id, "--port", &second]);
    assert!(ok, "{out}");
    wait_for(LIVE_LIMIT, || {
        (through(&second).status == 200).then_some(())
    })
    .expect("the new port answers");
    let (ok, out) = cluster.cli("tunnel", &["list"]);
    assert!(ok && out.contains(&second), "{out}");
    // Refusals come back with the API's reason and a failing exit status.
    let (ok, out) = cluster.cli(
        "tunnel",
        &[
            "create",
            "--kind",
            "tcp",
            "--port",
            &second,
            "--agent",
            &agent_id,
            "--target",
            "127.0.0.1:1",
        ],
    );
    assert!(!ok && out.contains("already taken"), "{out}");
    let (ok, out) = cluster.cli("tunnel", &["delete", &id]);
    assert!(ok, "{out}");
    wait_for(LIVE_LIMIT, || {
        (!port_open(second.parse().unwrap())).then_some(())
    })
    .expect("the deleted tunnel's port closes");
}

#[test]
fn hundreds_of_clients_through_tcp_and_udp_tunnels_get_every_answer_and_memory_comes_back() {
    let mut cluster = Cluster::new("ports-load");
    let web = Origin::start("web");
    let (echo_port, _echo) = udp_echo();
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let (tcp_port, udp_port) = (
        kakuremichi_tests::free_tcp_port(),
        kakuremichi_tests::free_udp_port(),
    );
    create(
        &cluster,
        json!({"kind": "tcp", "port": tcp_port, "agent": agent_id, "target": web.addr.to_string()}),
    );
    create(
        &cluster,
        json!({"kind": "udp", "port": udp_port, "agent": agent_id, "target": format!("127.0.0.1:{echo_port}")}),
    );
    let url = format!("http://127.0.0.1:{tcp_port}/");
    wait_for(LIVE_LIMIT, || (curl(&[&url]).status == 200).then_some(()))
        .unwrap_or_else(|| panic!("the tcp tunnel never answered\n{}", cluster.logs()));
    let wrk = |connections: &str, seconds: &str| {
        let out = Command::new("wrk")
            .args([
                "-t",
                "2",
                "-c",
                connections,
                "-d",
                seconds,
                "--timeout",
                "10s",
                &url,
            ])
            .output()
            .expect("wrk");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // 300 UDP clients at once, 20 datagrams each, one after another per client.
    let udp_swarm = || -> usize {
        let clients: Vec<_> = (0..300)
            .map(|i| {
                std::thread::spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    (0..20)
                        .filter(|n| {
                            echo(
                                &socket,
                                udp_port,
                                format!("client {i} datagram {n}").as_bytes(),
                            )
                            .is_some_and(|reply| {
                                reply.ends_with(&format!("client {i} datagram {n}"))
                            })
                        })
                        .count()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    };
    let (gateway_pid, agent_pid) = (
        cluster.gateways[gateway].pid().unwrap(),
        cluster.agents[agent].pid().unwrap(),
    );
    wrk("10", "1s");
    udp_swarm();
    std::thread::sleep(Duration::from_secs(11));
    let idle = rss_kib(gateway_pid) + rss_kib(agent_pid);

    let report = wrk("300", "5s");
    assert!(report.contains("requests in"), "{report}");
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "wrk through the tcp tunnel saw errors:\n{report}"
    );
    let answered = udp_swarm();
    assert_eq!(answered, 6000, "{}", cluster.gateways[gateway].metrics());
    println!("300 wrk connections through a tcp tunnel: no errors; 300 UDP clients: 6000 of 6000 answered");
    assert_memory_comes_back(&[gateway_pid, agent_pid], idle);
}
