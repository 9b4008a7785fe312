//! HTTPS: certificates from Control's internal CA and from a real ACME CA (Pebble), served by
//! gateways over TLS with HTTP/2 and HTTP/1.1.

use kakuremichi_tests::{curl, openssl_leaf, wait_for, Cluster, Origin};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn save_internal_ca(cluster: &Cluster) -> PathBuf {
    let ca = curl(&[&cluster.control_url("/ca.pem")]);
    assert_eq!(ca.status, 200);
    assert!(ca.body.contains("BEGIN CERTIFICATE"));
    let path = cluster.dir.join("internal-ca.pem");
    std::fs::write(&path, &ca.body).unwrap();
    path
}

/// The HTTP version curl negotiated for a request (`2` or `1.1`), and the status.
fn http_version(
    cluster: &Cluster,
    host: &str,
    ca: &std::path::Path,
    flag: &str,
) -> (String, String) {
    let node = &cluster.gateways[0];
    let output = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            flag,
            "--cacert",
        ])
        .arg(ca)
        .args([
            "--resolve",
            &format!("{host}:{}:{}", node.https_port, node.ip),
        ])
        .arg(format!("https://{host}:{}/", node.https_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (version, status) = text.split_once(' ').unwrap_or(("", ""));
    (version.to_string(), status.to_string())
}

#[test]
fn internal_ca_certificates_serve_https_with_h2_and_redirects() {
    let mut cluster = Cluster::new("internal-ca");
    let origin = Origin::start("secure");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let started = Instant::now();
    let tunnel = cluster.create_tunnel_with_issuer(
        "secure.localhost",
        agent,
        &origin.addr.to_string(),
        "internal",
    );
    let ca = save_internal_ca(&cluster);
    let answer = wait_for(Duration::from_secs(15), || {
        Some(cluster.get_https(0, "secure.localhost", "/x", &ca, &[])).filter(|a| a.status == 200)
    })
    .unwrap_or_else(|| panic!("no HTTPS 200\n{}", cluster.logs()));
    println!(
        "internal CA: tunnel POST to first HTTPS 200: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let seen = answer.json();
    assert_eq!(seen["x_forwarded_proto"], "https");
    assert_eq!(seen["path"], "/x");

    let cert = cluster.certificate("secure.localhost");
    assert_eq!(cert["issuer"], "internal");
    assert_eq!(cert["state"], "valid");
    assert!(cert["not_after"].as_u64().unwrap() > cert["not_before"].as_u64().unwrap());

    // ALPN: HTTP/2 when asked, HTTP/1.1 otherwise.
    assert_eq!(
        http_version(&cluster, "secure.localhost", &ca, "--http2"),
        ("2".into(), "200".into())
    );
    assert_eq!(
        http_version(&cluster, "secure.localhost", &ca, "--http1.1"),
        ("1.1".into(), "200".into())
    );

    // Plain HTTP redirects to HTTPS, same host and path; internal certificates get no HSTS.
    let node = &cluster.gateways[0];
    let resolve = format!("secure.localhost:{}:127.0.0.1", node.http_port);
    let redirect = curl(&[
        "-i",
        "--resolve",
        &resolve,
        &format!("http://secure.localhost:{}/a/b?c=1", node.http_port),
    ]);
    assert_eq!(redirect.status, 308, "{redirect:?}");
    let location = format!(
        "location: https://secure.localhost:{}/a/b?c=1",
        node.https_port
    );
    assert!(
        redirect.body.to_ascii_lowercase().contains(&location),
        "{}",
        redirect.body
    );
    let headers = cluster.get_https(0, "secure.localhost", "/", &ca, &["-i"]);
    assert!(
        !headers
            .body
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{}",
        headers.body
    );

    // A name the gateway holds no certificate for: the handshake is refused, cleanly.
    let unknown = cluster.get_https(0, "unknown.localhost", "/", &ca, &[]);
    assert_eq!(unknown.status, 0, "{unknown:?}");
    assert!(cluster.gateways[0].is_running());

    // Deleting the tunnel removes its certificate: no longer listed, no longer served.
    let deleted = cluster.api("DELETE", &format!("/api/v1/tunnels/{tunnel}"), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let listed = cluster.certificate("secure.localhost");
    assert!(listed.is_null(), "still listed: {listed}");
    let refused = wait_for(Duration::from_secs(5), || {
        let answer = cluster.get_https(0, "secure.localhost", "/", &ca, &[]);
        (answer.status == 0).then_some(())
    });
    assert!(refused.is_some(), "the gateway still serves it");
}

#[test]
fn manual_certificates_are_checked_then_served() {
    let mut cluster = Cluster::new("manual");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let origin = Origin::start("manual");
    cluster.create_tunnel_with_issuer(
        "manual.localhost",
        agent,
        &origin.addr.to_string(),
        "manual",
    );
    let (cert, key) = openssl_leaf(&cluster.dir, "manual", "manual.localhost");
    let (_, other_key) = openssl_leaf(&cluster.dir, "other", "other.localhost");
    let (wrong_name_cert, wrong_name_key) = openssl_leaf(&cluster.dir, "wrong", "wrong.localhost");
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap();
    let upload = |cert: &PathBuf, key: &PathBuf| {
        let body = serde_json::json!({"hostname": "manual.localhost", "certificate_pem": read(cert), "key_pem": read(key)});
        cluster.api("POST", "/api/v1/certificates", Some(&body.to_string()))
    };
    for (cert, key, field) in [
        (&cert, &other_key, "key_pem"),
        (&wrong_name_cert, &wrong_name_key, "certificate_pem"),
    ] {
        let refused = upload(cert, key);
        assert_eq!(refused.status, 400, "{refused:?}");
        assert_eq!(refused.json()["field"], field, "{refused:?}");
    }
    let garbage = cluster.api(
        "POST",
        "/api/v1/certificates",
        Some(r#"{"hostname":"manual.localhost","certificate_pem":"x","key_pem":"y"}"#),
    );
    assert_eq!(garbage.status, 400);
    assert!(
        cluster.certificate("manual.localhost").is_null(),
        "a refused upload was stored"
    );

    let accepted = upload(&cert, &key);
    assert_eq!(accepted.status, 201, "{accepted:?}");
    assert_eq!(accepted.json()["issuer"], "manual");
    let answer = wait_for(Duration::from_secs(10), || {
        Some(cluster.get_https(0, "manual.localhost", "/", &cert, &["-i"]))
            .filter(|a| a.status == 200)
    })
    .unwrap_or_else(|| panic!("manual certificate not served\n{}", cluster.logs()));
    // Uploaded certificates count as trusted: HSTS is on.
    assert!(
        answer
            .body
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age="),
        "{}",
        answer.body
    );
}

fn pebble_cluster(name: &str, validity: u64) -> (Cluster, kakuremichi_tests::pebble::Pebble, u16) {
    let (cluster, pebble, http_port, _) = pebble_cluster_with(name, validity, &[]);
    (cluster, pebble, http_port)
}

/// A cluster whose Control orders from a fresh Pebble; returns the HTTP and HTTPS ports
/// Pebble validates on (gateways must listen there).
fn pebble_cluster_with(
    name: &str,
    validity: u64,
    control_args: &[&str],
) -> (Cluster, kakuremichi_tests::pebble::Pebble, u16, u16) {
    let (http_port, https_port) = (
        kakuremichi_tests::free_tcp_port(),
        kakuremichi_tests::free_tcp_port(),
    );
    let dir =
        std::env::temp_dir().join(format!("kakuremichi-{name}-pebble-{}", std::process::id()));
    let pebble = kakuremichi_tests::pebble::Pebble::start(&dir, http_port, https_port, validity);
    let mut args = pebble.control_args();
    args.extend(control_args.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (
        Cluster::with_control_args(name, &args),
        pebble,
        http_port,
        https_port,
    )
}

#[test]
fn acme_certificate_from_pebble_serves_https() {
    let (mut cluster, pebble, http_port) = pebble_cluster("acme", 3600);
    let origin = Origin::start("acme");
    cluster.add_gateway_at("127.0.0.1", http_port);
    let agent = cluster.add_agent();
    wait_for(Duration::from_secs(10), || {
        let id = cluster.gateways[0].id.clone();
        (cluster.node_status("gateway", &id)["online"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("gateway never came online\n{}", cluster.logs()));
    let started = Instant::now();
    cluster.create_tunnel_with_issuer("acme.example.test", agent, &origin.addr.to_string(), "acme");
    let answer = wait_for(Duration::from_secs(15), || {
        Some(cluster.get_https(0, "acme.example.test", "/", &pebble.issuing_root, &["-i"]))
            .filter(|a| a.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no HTTPS 200 within 15 s\n{:?}\n{}",
            cluster.certificate("acme.example.test"),
            cluster.logs()
        )
    });
    println!(
        "ACME (Pebble): tunnel POST to first HTTPS 200: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        answer
            .body
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "ACME certificates are trusted: HSTS expected"
    );
    let cert = cluster.certificate("acme.example.test");
    assert_eq!(cert["issuer"], "acme");
    assert_eq!(cert["state"], "valid");
}

/// The serial of the certificate a gateway presents for `hostname` on `ip:port`.
fn served_serial(ip: &str, port: u16, hostname: &str) -> Option<String> {
    let client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{ip}:{port}"),
            "-servername",
            hostname,
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::io::Write::write_all(x509.stdin.as_mut()?, &client.stdout).ok()?;
    let output = x509.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    text.strip_prefix("serial=").map(|s| s.to_ascii_uppercase())
}

fn wait_online(cluster: &Cluster, kind: &str, id: &str) {
    wait_for(Duration::from_secs(10), || {
        (cluster.node_status(kind, id)["online"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("{kind} {id} not online\n{}", cluster.logs()));
}

#[test]
fn one_order_serves_two_gateways_whichever_one_dns_picks() {
    let (mut cluster, pebble, http_port) = pebble_cluster("two-gateways", 3600);
    let origin = Origin::start("both");
    let a = cluster.add_gateway_at("127.0.0.2", http_port);
    let b = cluster.add_gateway_at("127.0.0.3", http_port);
    let agent = cluster.add_agent();
    for gateway in [a, b] {
        wait_online(&cluster, "gateway", &cluster.gateways[gateway].id.clone());
    }
    // The CA's validation goes to gateway B only.
    pebble.set_address("both.example.test", "127.0.0.3");
    cluster.create_tunnel_with_issuer("both.example.test", agent, &origin.addr.to_string(), "acme");
    for gateway in [a, b] {
        wait_for(Duration::from_secs(20), || {
            Some(cluster.get_https(gateway, "both.example.test", "/", &pebble.issuing_root, &[]))
                .filter(|r| r.status == 200)
        })
        .unwrap_or_else(|| {
            panic!(
                "gateway {gateway} does not serve HTTPS\n{:?}\n{}",
                cluster.certificate("both.example.test"),
                cluster.logs()
            )
        });
    }
    let serial = cluster.certificate("both.example.test")["serial"]
        .as_str()
        .unwrap()
        .to_string();
    for gateway in [a, b] {
        let node = &cluster.gateways[gateway];
        assert_eq!(
            served_serial(&node.ip, node.https_port, "both.example.test").as_deref(),
            Some(serial.as_str()),
            "gateway {gateway}"
        );
    }
    // Exactly one order: one certificate record, issued once.
    assert_eq!(cluster.certificate("both.example.test")["failures"], 0);
}

#[test]
fn gateway_restarted_while_control_is_down_serves_https_from_its_cache() {
    let (mut cluster, pebble, http_port) = pebble_cluster("cache", 3600);
    let origin = Origin::start("cached");
    cluster.add_gateway_at("127.0.0.1", http_port);
    let agent = cluster.add_agent();
    wait_online(&cluster, "gateway", &cluster.gateways[0].id.clone());
    cluster.create_tunnel_with_issuer(
        "cached.example.test",
        agent,
        &origin.addr.to_string(),
        "acme",
    );
    let https_ok = |cluster: &Cluster, limit: u64| {
        wait_for(Duration::from_secs(limit), || {
            Some(cluster.get_https(0, "cached.example.test", "/", &pebble.issuing_root, &[]))
                .filter(|r| r.status == 200)
        })
    };
    https_ok(&cluster, 20).unwrap_or_else(|| panic!("no HTTPS\n{}", cluster.logs()));
    cluster.control.kill9();
    cluster.gateways[0].restart();
    cluster.agents[agent].restart();
    https_ok(&cluster, 10).unwrap_or_else(|| {
        panic!(
            "cached certificate not served after restart\n{}",
            cluster.logs()
        )
    });
}

#[test]
fn failing_orders_back_off_without_blocking_other_hostnames() {
    let (mut cluster, pebble, http_port) = pebble_cluster("failing", 3600);
    let origin = Origin::start("fine");
    cluster.add_gateway_at("127.0.0.1", http_port);
    let agent = cluster.add_agent();
    wait_online(&cluster, "gateway", &cluster.gateways[0].id.clone());
    // Nothing listens where this name resolves.
    pebble.set_address("nowhere.example.test", "127.0.0.9");
    cluster.create_tunnel_with_issuer(
        "nowhere.example.test",
        agent,
        &origin.addr.to_string(),
        "acme",
    );
    cluster.create_tunnel_with_issuer("fine.example.test", agent, &origin.addr.to_string(), "acme");
    wait_for(Duration::from_secs(20), || {
        Some(cluster.get_https(0, "fine.example.test", "/", &pebble.issuing_root, &[]))
            .filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| panic!("the healthy hostname was held up\n{}", cluster.logs()));
    let failed = wait_for(Duration::from_secs(20), || {
        Some(cluster.certificate("nowhere.example.test")).filter(|c| c["state"] == "failed")
    })
    .unwrap_or_else(|| panic!("no failed state\n{}", cluster.logs()));
    assert!(
        failed["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert!(failed["next_attempt"].as_u64().is_some(), "{failed}");
    // Retried, with the delay growing.
    let retried = wait_for(Duration::from_secs(20), || {
        Some(cluster.certificate("nowhere.example.test"))
            .filter(|c| c["failures"].as_u64() >= Some(2))
    })
    .unwrap_or_else(|| panic!("no retry\n{}", cluster.logs()));
    println!("failing order: {retried}");
    // Plain HTTP for it says the certificate is on its way, not a TLS error loop.
    let pending = cluster.get(0, "nowhere.example.test", "/");
    assert_eq!(pending.status, 503);
    assert!(pending.body.contains("nowhere.example.test"));
    assert!(cluster.control.is_running());
}

#[test]
fn certificates_renew_before_expiry_without_a_failed_request() {
    // Certificates valid for 24 s: renewal starts 8 s before expiry.
    let (mut cluster, pebble, http_port) = pebble_cluster("renewal", 24);
    let origin = Origin::start("renew");
    cluster.add_gateway_at("127.0.0.1", http_port);
    let agent = cluster.add_agent();
    wait_online(&cluster, "gateway", &cluster.gateways[0].id.clone());
    cluster.create_tunnel_with_issuer(
        "renew.example.test",
        agent,
        &origin.addr.to_string(),
        "acme",
    );
    let start = Instant::now();
    wait_for(Duration::from_secs(20), || {
        Some(cluster.get_https(0, "renew.example.test", "/", &pebble.issuing_root, &[]))
            .filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| panic!("no HTTPS\n{}", cluster.logs()));
    let node = &cluster.gateways[0];
    let first = served_serial("127.0.0.1", node.https_port, "renew.example.test")
        .expect("a served certificate");
    let mut timeline = vec![(start.elapsed().as_secs_f64(), first.clone())];
    let mut requests = 0;
    while start.elapsed() < Duration::from_secs(34) {
        let answer = cluster.get_https(0, "renew.example.test", "/", &pebble.issuing_root, &[]);
        assert_eq!(
            answer.status,
            200,
            "request {requests} failed at {:.1} s: {answer:?}",
            start.elapsed().as_secs_f64()
        );
        requests += 1;
        if let Some(serial) = served_serial("127.0.0.1", node.https_port, "renew.example.test") {
            if timeline.last().map(|(_, s)| s) != Some(&serial) {
                timeline.push((start.elapsed().as_secs_f64(), serial));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("renewal timeline (seconds, serial): {timeline:?}; {requests} requests, none failed");
    assert!(
        timeline.len() >= 2,
        "no renewal within 34 s of 24 s certificates: {timeline:?}\n{}",
        cluster.logs()
    );
}

#[test]
fn tls_alpn_01_validation_is_answered_on_the_https_port() {
    let (mut cluster, pebble, _, https_port) =
        pebble_cluster_with("tls-alpn", 3600, &["--acme-challenge", "tls-alpn-01"]);
    let origin = Origin::start("alpn");
    // No plain HTTP on Pebble's HTTP-01 port: only TLS-ALPN-01 can succeed.
    cluster.add_gateway_with_ports("127.0.0.1", kakuremichi_tests::free_tcp_port(), https_port);
    let agent = cluster.add_agent();
    wait_online(&cluster, "gateway", &cluster.gateways[0].id.clone());
    cluster.create_tunnel_with_issuer("alpn.example.test", agent, &origin.addr.to_string(), "acme");
    wait_for(Duration::from_secs(20), || {
        Some(cluster.get_https(0, "alpn.example.test", "/", &pebble.issuing_root, &[]))
            .filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "no HTTPS via tls-alpn-01\n{:?}\n{}",
            cluster.certificate("alpn.example.test"),
            cluster.logs()
        )
    });
}

#[test]
fn tls_configuration_passes_sslyze_and_testssl() {
    let mut cluster = Cluster::new("tls-audit");
    let origin = Origin::start("audit");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel_with_issuer(
        "audit.localhost",
        agent,
        &origin.addr.to_string(),
        "internal",
    );
    let ca = save_internal_ca(&cluster);
    wait_for(Duration::from_secs(15), || {
        Some(cluster.get_https(0, "audit.localhost", "/", &ca, &[])).filter(|a| a.status == 200)
    })
    .unwrap_or_else(|| panic!("no HTTPS\n{}", cluster.logs()));
    let port = cluster.gateways[0].https_port;
    // sslyze: Mozilla's "intermediate" configuration (exit status 0 when compliant).
    let sslyze = Command::new("python3")
        .args([
            "-m",
            "sslyze",
            "--mozilla_config",
            "intermediate",
            "--certinfo_ca_file",
        ])
        .arg(&ca)
        .arg(format!("audit.localhost:{port}{{127.0.0.1}}"))
        .output()
        .expect("sslyze runs (pip install sslyze)");
    let report = String::from_utf8_lossy(&sslyze.stdout);
    println!(
        "sslyze: {}",
        report
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("compliant"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(
        sslyze.status.success(),
        "sslyze: not compliant with Mozilla intermediate\n{report}"
    );

    // testssl: protocols and ciphers; nothing HIGH or CRITICAL.
    let json = cluster.dir.join("testssl.json");
    let testssl = Command::new("testssl")
        .args([
            "-p",
            "-S",
            "--quiet",
            "--warnings",
            "off",
            "--color",
            "0",
            "--ip",
            "127.0.0.1",
            "--add-ca",
        ])
        .arg(&ca)
        .arg("--jsonfile")
        .arg(&json)
        .arg(format!("https://audit.localhost:{port}"))
        .output()
        .expect("testssl runs (apt install testssl.sh)");
    let findings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&json).unwrap_or_default(),
    )
    .unwrap_or_else(|e| {
        panic!(
            "testssl JSON ({e}): {}",
            String::from_utf8_lossy(&testssl.stdout)
        )
    });
    let severe: Vec<&serde_json::Value> = findings
        .as_array()
        .expect("a list of findings")
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .collect();
    println!(
        "testssl: {} findings, {} HIGH/CRITICAL",
        findings.as_array().map_or(0, Vec::len),
        severe.len()
    );
    assert!(severe.is_empty(), "testssl found: {severe:#?}");
}

#[test]
fn control_is_reachable_over_https_through_a_gateway() {
    // Gateways serve Control's hostname by proxying to it; its certificate comes from the
    // internal CA here.
    let mut cluster =
        Cluster::with_control_args("control-https", &["--control-hostname", "localhost"]);
    let origin = Origin::start("via-https");
    cluster.add_gateway();
    let ca = save_internal_ca(&cluster);
    let port = cluster.gateways[0].https_port;
    let health = wait_for(Duration::from_secs(15), || {
        Some(curl(&[
            "--cacert",
            &ca.display().to_string(),
            &format!("https://localhost:{port}/healthz"),
        ]))
        .filter(|a| a.status == 200)
    })
    .unwrap_or_else(|| panic!("Control not served over HTTPS\n{}", cluster.logs()));
    assert_eq!(health.body.trim(), "ok");

    // An agent that only knows https://localhost:<gateway port>.
    let agent = cluster.add_agent_via(&format!("https://localhost:{port}"), &ca);
    let agent_id = cluster.agents[agent].id.clone();
    wait_for(Duration::from_secs(15), || {
        (cluster.node_status("agent", &agent_id)["online"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("agent did not connect over HTTPS\n{}", cluster.logs()));
    assert!(
        cluster.agents[agent]
            .log()
            .contains("connected to Control at wss://localhost"),
        "{}",
        cluster.agents[agent].log()
    );
    cluster.create_tunnel_with_issuer("app.localhost", agent, &origin.addr.to_string(), "internal");
    wait_for(Duration::from_secs(15), || {
        Some(cluster.get_https(0, "app.localhost", "/", &ca, &[])).filter(|a| a.status == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "tunnel of the HTTPS-connected agent not served\n{}",
            cluster.logs()
        )
    });
}

#[test]
fn a_forgotten_acme_account_is_registered_again() {
    let (mut cluster, mut pebble, http_port) = pebble_cluster("stale-account", 3600);
    let origin = Origin::start("stale");
    cluster.add_gateway_at("127.0.0.1", http_port);
    let agent = cluster.add_agent();
    let gateway_id = cluster.gateways[0].id.clone();
    wait_online(&cluster, "gateway", &gateway_id);
    let valid = |cluster: &Cluster, hostname: &str| {
        wait_for(Duration::from_secs(20), || {
            (cluster.certificate(hostname)["state"] == "valid").then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{hostname}: no certificate\n{:?}\n{}",
                cluster.certificate(hostname),
                cluster.logs()
            )
        })
    };
    let origin_addr = origin.addr.to_string();
    cluster.create_tunnel_with_issuer("first.example.test", agent, &origin_addr, "acme");
    valid(&cluster, "first.example.test");

    // Pebble keeps accounts in memory: restarted, it no longer knows Control's.
    pebble.restart();
    cluster.create_tunnel_with_issuer("second.example.test", agent, &origin_addr, "acme");
    valid(&cluster, "second.example.test");
    let second = cluster.certificate("second.example.test");
    assert_eq!(second["failures"], 0, "the order failed first: {second}");
    assert!(
        cluster.control.log().contains("registering a new one"),
        "{}",
        cluster.control.log()
    );
    // The new certificate chains to the restarted CA's root and serves, once the gateway has
    // the config that carries it (Control pushes a burst of commits together).
    let serves = wait_for(Duration::from_secs(5), || {
        let answer = cluster.get_https(0, "second.example.test", "/", &pebble.issuing_root, &[]);
        (answer.status == 200).then_some(())
    });
    assert!(
        serves.is_some(),
        "{:?}",
        cluster.get_https(0, "second.example.test", "/", &pebble.issuing_root, &[])
    );
}
