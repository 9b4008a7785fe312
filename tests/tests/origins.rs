//! Origin options of `http` tunnels against real servers: an HTTPS origin (`openssl
//! s_server` with its own certificate) checked against the public roots, a private CA, a
//! chosen server name, or not at all; a `Host` override; a tunnel's own 502 page; a connect
//! timeout per tunnel.

use kakuremichi_tests::{servers, wait_for, Cluster, Origin};
use serde_json::json;
use std::time::{Duration, Instant};

fn patch(cluster: &Cluster, id: &str, body: serde_json::Value) -> serde_json::Value {
    let answer = cluster.api(
        "PATCH",
        &format!("/api/v1/tunnels/{id}"),
        Some(&body.to_string()),
    );
    assert_eq!(answer.status, 200, "{body}: {}", answer.body);
    answer.json()
}

/// The gateway's answer for `hostname` once it has status `wanted` (config changes take
/// effect within a second or two).
fn status_becomes(cluster: &Cluster, hostname: &str, wanted: u16) -> kakuremichi_tests::Answer {
    wait_for(Duration::from_secs(5), || {
        let answer = cluster.get(0, hostname, "/");
        (answer.status == wanted).then_some(answer)
    })
    .unwrap_or_else(|| {
        panic!(
            "{hostname} never answered {wanted}: {:?}\n{}",
            cluster.get(0, hostname, "/"),
            cluster.logs()
        )
    })
}

#[test]
fn https_origins_are_checked_against_a_ca_a_server_name_or_not_at_all() {
    let mut cluster = Cluster::new("https-origin");
    let origin = servers::tls_origin(&cluster.dir, "origin.internal");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let body = json!({"hostname": "secure.localhost", "agent": agent_id, "target": format!("https://127.0.0.1:{}", origin.port), "issuer": "none"});
    let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(answer.status, 201, "{}", answer.body);
    let tunnel = answer.json();
    assert_eq!(
        tunnel["target"],
        format!("https://127.0.0.1:{}", origin.port)
    );
    assert_eq!(tunnel["origin"]["tls_verify"], true);
    let id = tunnel["id"].as_str().unwrap().to_string();

    // A self-signed origin is not trusted by default: 502, and the log says why.
    status_becomes(&cluster, "secure.localhost", 502);
    assert!(
        cluster.gateways[0].log().contains("TLS with the origin"),
        "{}",
        cluster.logs()
    );

    // Its private CA, with the name its certificate carries: the origin answers.
    let ca = std::fs::read_to_string(origin.dir.join("ca.pem")).unwrap();
    patch(
        &cluster,
        &id,
        json!({"origin": {"ca_pem": ca, "server_name": "origin.internal"}}),
    );
    let answer = status_becomes(&cluster, "secure.localhost", 200);
    assert!(answer.body.contains("s_server"), "{}", answer.body);
    // The right CA with the wrong name is refused again.
    patch(
        &cluster,
        &id,
        json!({"origin": {"server_name": "other.internal"}}),
    );
    status_becomes(&cluster, "secure.localhost", 502);

    // No verification at all, as people do for self-signed origins on their LAN.
    patch(
        &cluster,
        &id,
        json!({"origin": {"tls_verify": false, "ca_pem": null, "server_name": null}}),
    );
    let answer = status_becomes(&cluster, "secure.localhost", 200);
    assert!(answer.body.contains("s_server"), "{}", answer.body);

    // TLS settings without an https target, or on a port tunnel, are refused.
    let refused = cluster.api(
        "POST",
        "/api/v1/tunnels",
        Some(&json!({"hostname": "plain.localhost", "agent": agent_id, "target": "127.0.0.1:1", "origin": {"tls_verify": false}}).to_string()),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    let refused = cluster.api(
        "POST",
        "/api/v1/tunnels",
        Some(&json!({"kind": "tcp", "port": kakuremichi_tests::free_tcp_port(), "agent": agent_id, "target": "https://127.0.0.1:1"}).to_string()),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
}

#[test]
fn host_override_error_page_and_connect_timeout_apply_per_tunnel() {
    let mut cluster = Cluster::new("origin-options");
    let web = Origin::start("web");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let id = cluster.create_tunnel("app.localhost", agent, &web.addr.to_string());
    status_becomes(&cluster, "app.localhost", 200);
    patch(
        &cluster,
        &id,
        json!({"origin": {"host_header": "intranet.example:8080"}}),
    );
    wait_for(Duration::from_secs(5), || {
        (cluster.get(0, "app.localhost", "/").json()["host"] == "intranet.example:8080")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the origin never saw the Host override\n{}", cluster.logs()));
    let seen = cluster.get(0, "app.localhost", "/").json();
    assert!(
        seen["x_forwarded_host"]
            .as_str()
            .unwrap()
            .starts_with("app.localhost"),
        "{seen}"
    );

    // The tunnel's own page when its origin is down.
    let page = "<!doctype html><h1>Back soon</h1><p>We are upgrading the shop.</p>";
    let closed = kakuremichi_tests::free_tcp_port();
    patch(
        &cluster,
        &id,
        json!({"target": format!("127.0.0.1:{closed}"), "origin": {"bad_gateway_page": page}}),
    );
    let answer = status_becomes(&cluster, "app.localhost", 502);
    assert_eq!(answer.body, page);

    // An origin that never accepts: its listen queue is full and new handshakes go
    // unanswered. With a 1 s connect timeout the tunnel answers 502 in about a second
    // instead of the default 5 s.
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    stuck.bind(&addr.into()).unwrap();
    stuck.listen(0).unwrap();
    let stuck_addr = stuck.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<std::net::TcpStream> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&stuck_addr, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(!fillers.is_empty());
    patch(
        &cluster,
        &id,
        json!({"target": stuck_addr.to_string(), "origin": {"connect_timeout_secs": 1, "bad_gateway_page": null}}),
    );
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let answer = cluster.get(0, "app.localhost", "/");
    let took = started.elapsed();
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    println!("connect timeout 1 s: 502 after {:.2} s", took.as_secs_f64());
    let bad = cluster.api(
        "PATCH",
        &format!("/api/v1/tunnels/{id}"),
        Some(r#"{"origin":{"connect_timeout_secs":0}}"#),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn path_prefixes_split_one_hostname_between_origins() {
    let mut cluster = Cluster::new("path-prefix");
    let (site, api) = (Origin::start("site"), Origin::start("api"));
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let root = cluster.create_tunnel("app.localhost", agent, &site.addr.to_string());
    let page = "<!doctype html><h1>Nothing here</h1>";
    let body = json!({"hostname": "app.localhost", "path_prefix": "/api/", "agent": agent_id, "target": api.addr.to_string(), "issuer": "none", "origin": {"not_found_page": page}});
    let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.json()["path_prefix"], "/api");
    let again = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(again.status, 409, "{}", again.body);

    // Until the gateway has the routes it answers its own 404 page, which is not JSON.
    let origin_of = |path: &str| {
        let answer = cluster.get(0, "app.localhost", path);
        let json: Option<serde_json::Value> = serde_json::from_str(&answer.body).ok();
        json.map(|j| j["origin"].clone()).unwrap_or_default()
    };
    wait_for(Duration::from_secs(5), || {
        (origin_of("/api/v1/items") == "api").then_some(())
    })
    .unwrap_or_else(|| panic!("/api never reached its origin\n{}", cluster.logs()));
    for (path, expected) in [
        ("/", "site"),
        ("/api", "api"),
        ("/api?q=1", "api"),
        ("/apix", "site"),
        ("/about", "site"),
    ] {
        assert_eq!(origin_of(path), expected, "{path}");
    }
    // Without the root tunnel, other paths get the page the /api tunnel set.
    assert_eq!(
        cluster
            .api("DELETE", &format!("/api/v1/tunnels/{root}"), None)
            .status,
        200
    );
    let answer = status_becomes(&cluster, "app.localhost", 404);
    assert_eq!(answer.body, page);
    assert_eq!(origin_of("/api/x"), "api");
}

#[test]
fn an_h2c_origin_is_spoken_to_in_http2_and_shares_one_connection() {
    let mut cluster = Cluster::new("h2c-origin");
    let origin = servers::h2c_origin(&cluster.dir, &[("hello.txt", "served over HTTP/2\n")]);
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let body = json!({"hostname": "grpc.localhost", "agent": agent_id, "target": format!("h2c://127.0.0.1:{}", origin.port), "issuer": "none"});
    let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(
        answer.json()["target"],
        format!("h2c://127.0.0.1:{}", origin.port)
    );
    // nghttpd speaks nothing but HTTP/2 without TLS: an answer means the gateway spoke it.
    let answer = wait_for(Duration::from_secs(5), || {
        let answer = cluster.get(gateway, "grpc.localhost", "/hello.txt");
        (answer.status == 200).then_some(answer)
    })
    .unwrap_or_else(|| panic!("the h2c origin never answered\n{}", cluster.logs()));
    assert_eq!(answer.body, "served over HTTP/2\n");

    // 100 clients at once ride one multiplexed connection to the origin, with no error.
    let http = cluster.gateways[gateway].http_port;
    let out = std::process::Command::new("h2load")
        .args([
            "--h1",
            "-n",
            "2000",
            "-c",
            "100",
            "-H",
            ":authority: grpc.localhost",
        ])
        .arg(format!("http://127.0.0.1:{http}/hello.txt"))
        .output()
        .expect("h2load");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("2000 succeeded, 0 failed, 0 errored"),
        "{report}"
    );
    let metrics = cluster.gateways[gateway].metrics();
    let dials =
        kakuremichi_tests::metric(&metrics, "kakuremichi_gateway_upstream_dials_total").unwrap();
    assert!(dials <= 2.0, "{dials} connections opened to the h2c origin");
    println!("h2c: 2000 requests from 100 clients over {dials} upstream connection(s)");
}
