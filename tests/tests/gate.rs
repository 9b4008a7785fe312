//! Attacks on the gate with the real binaries: password bursts, spoofed identity headers,
//! the session cookie on a public tunnel of the same hostname, framing, and the file modes a
//! local user would read.

use base64::Engine;
use kakuremichi_tests::{
    assert_memory_comes_back, curl, metric, raw_exchange, rss_kib, wait_for, Cluster, Origin,
};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

const PUSH_LIMIT: Duration = Duration::from_secs(2);

/// A cluster with one gateway and one agent publishing `hostname` (a fresh origin), with
/// `access` rules when given; returned once the gateway serves it (200, or 401 under the rules).
fn one_tunnel(name: &str, hostname: &str, access: Option<&str>) -> (Cluster, Origin) {
    let mut cluster = Cluster::new(name);
    let origin = Origin::start(hostname);
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let tunnel = cluster.create_tunnel(hostname, agent, &origin.addr.to_string());
    if let Some(access) = access {
        set_access(&cluster, &tunnel, access);
    }
    let served = if access.is_some() { 401 } else { 200 };
    cluster
        .wait_until(0, hostname, Duration::from_secs(15), |a| a.status == served)
        .unwrap_or_else(|| panic!("{hostname} never served\n{}", cluster.logs()));
    (cluster, origin)
}

fn set_access(cluster: &Cluster, tunnel: &str, access: &str) {
    let body = format!(r#"{{"access":{access}}}"#);
    let answer = cluster.api("PATCH", &format!("/api/v1/tunnels/{tunnel}"), Some(&body));
    assert_eq!(answer.status, 200, "{access}: {}", answer.body);
}

/// `request` from local address `from` to the gateway's HTTP port; the status and the whole
/// answer.
fn exchange_from(from: Ipv4Addr, cluster: &Cluster, request: &str) -> (u16, String) {
    raw_exchange(
        gateway_http(cluster),
        Some(from.into()),
        request.as_bytes(),
        Duration::from_secs(30),
    )
}

/// The first gateway's plain HTTP address.
fn gateway_http(cluster: &Cluster) -> std::net::SocketAddr {
    let node = &cluster.gateways[0];
    format!("{}:{}", node.ip, node.http_port).parse().unwrap()
}

fn basic_get(host: &str, path: &str, password: &str, extra: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ci:{password}"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {basic}\r\n{extra}Connection: close\r\n\r\n"
    )
}

fn counter(cluster: &Cluster, name: &str) -> f64 {
    metric(
        &cluster.gateways[0].metrics(),
        &format!("kakuremichi_gateway_{name}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn parallel_password_guesses_are_counted_before_they_are_checked() {
    let (cluster, _origin) = one_tunnel(
        "gate-bursts",
        "pin.localhost",
        Some(r#"{"password":"4711-right-pin"}"#),
    );
    let pid = cluster.gateways[0].pid().expect("gateway runs");
    let idle = rss_kib(pid);
    let mut checked_total = 0.0;
    for burst in [100, 300, 1000] {
        let checked_before = counter(&cluster, "access_failed_logins_total");
        let throttled_before = counter(&cluster, "access_throttled_total");
        let request = basic_get("pin.localhost", "/", "wrong", "");
        let gateway = gateway_http(&cluster);
        let threads: Vec<_> = (0..burst)
            .map(|_| {
                let request = request.clone();
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let limit = Duration::from_secs(60);
                        raw_exchange(gateway, None, request.as_bytes(), limit).0
                    })
                    .unwrap()
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let checked = counter(&cluster, "access_failed_logins_total") - checked_before;
        let throttled = counter(&cluster, "access_throttled_total") - throttled_before;
        let answered = statuses.iter().filter(|&&s| s == 401 || s == 429).count();
        println!(
            "burst of {burst} wrong passwords at once: {checked} checked, {throttled} throttled (429), {answered} answered; gateway RSS {} KiB (idle {idle} KiB)",
            rss_kib(pid)
        );
        assert_eq!(answered, burst, "every guess gets 401 or 429: {statuses:?}");
        assert!(
            checked <= kakuremichi_proto::throttle::FREE_FAILURES as f64,
            "{checked} of a burst of {burst} were checked"
        );
        checked_total += checked;
    }
    assert!(checked_total <= 7.0, "{checked_total} checked in all");
    // The right PIN from another address is not slowed by the stranger.
    let owner = Ipv4Addr::new(127, 0, 0, 2);
    let (status, answer) = exchange_from(
        owner,
        &cluster,
        &basic_get("pin.localhost", "/", "4711-right-pin", ""),
    );
    assert_eq!(status, 200, "{answer}");
    assert_memory_comes_back(&[pid], idle);
}

/// A login POST to Control from local address `from` at `base` (Control's own listener or
/// its route on the gateway), with extra curl arguments.
fn control_login(from: &str, base: &str, password: &str, extra: &[&str]) -> u16 {
    let origin = format!("Origin: {base}");
    let password = format!("password={password}");
    let url = format!("{base}/login");
    let mut args = vec![
        "--interface",
        from,
        "-H",
        origin.as_str(),
        "--data-urlencode",
        "name=alice",
        "--data-urlencode",
        password.as_str(),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).status
}

#[test]
fn a_strangers_failed_logins_behind_the_control_route_slow_only_the_stranger() {
    let mut cluster = Cluster::with_control_args(
        "gate-control-route",
        &["--control-hostname", "control.localhost"],
    );
    cluster.add_gateway();
    cluster.add_user("alice", false, "alice's long password");
    let ca = cluster.dir.join("ca.pem");
    std::fs::write(&ca, curl(&[&cluster.control_url("/ca.pem")]).body).unwrap();
    let node = &cluster.gateways[0];
    let base = format!("https://control.localhost:{}", node.https_port);
    let resolve = format!("control.localhost:{}:{}", node.https_port, node.ip);
    let via_gateway = [
        "--resolve",
        resolve.as_str(),
        "--cacert",
        ca.to_str().unwrap(),
    ];
    wait_for(Duration::from_secs(15), || {
        let mut args = via_gateway.to_vec();
        let health = format!("{base}/healthz");
        args.push(&health);
        (curl(&args).status == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("Control not served through the gateway\n{}", cluster.logs()));

    // Through the gateway: the stranger (127.0.0.3) is throttled, spoofed X-Real-IP or not.
    let spoof = [&via_gateway[..], &["-H", "X-Real-IP: 127.0.0.2"]].concat();
    for attempt in 0..5 {
        let status = control_login("127.0.0.3", &base, "wrong guess", &spoof);
        assert_eq!(status, 401, "attempt {attempt}");
    }
    assert_eq!(
        control_login("127.0.0.3", &base, "wrong guess", &via_gateway),
        429
    );
    // The owner's right password from 127.0.0.2 through the same gateway is not.
    assert_eq!(
        control_login("127.0.0.2", &base, "alice's long password", &via_gateway),
        303,
        "{}",
        cluster.control.log()
    );

    // Straight to Control from an address that is no gateway's, X-Real-IP is not believed.
    let direct = cluster.control_url("");
    for attempt in 0..5 {
        let claim = format!("X-Real-IP: 127.0.0.{}", 100 + attempt);
        let status = control_login("127.0.0.5", &direct, "wrong guess", &["-H", &claim]);
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let claim = "X-Real-IP: 127.0.0.200";
    assert_eq!(
        control_login("127.0.0.5", &direct, "wrong guess", &["-H", claim]),
        429
    );
}

#[test]
fn a_gateway_cut_off_from_control_never_sends_an_old_hostname_into_a_newer_tunnel() {
    let mut cluster = Cluster::new("gate-stale");
    let public = Origin::start("public");
    let secret = Origin::start("secret");
    cluster.add_gateway();
    let control: std::net::SocketAddr = format!("127.0.0.1:{}", cluster.control.http_port)
        .parse()
        .unwrap();
    let relay = kakuremichi_tests::Relay::start(control);
    let stale = cluster.add_gateway();
    cluster.gateways[stale].set_env("CONTROL_URL", &format!("http://{}", relay.addr));
    cluster.gateways[stale].restart();
    let agent = cluster.add_agent();
    let old = cluster.create_tunnel("old.localhost", agent, &public.addr.to_string());
    for gateway in [0, stale] {
        cluster
            .wait_until(gateway, "old.localhost", Duration::from_secs(15), |a| {
                a.status == 200
            })
            .unwrap_or_else(|| panic!("gateway {gateway} never served\n{}", cluster.logs()));
    }
    // The partition: the stale gateway keeps its snapshot and its WireGuard sessions.
    relay.cut();
    let deleted = cluster.api("DELETE", &format!("/api/v1/tunnels/{old}"), None);
    assert!(deleted.status < 300, "{}", deleted.body);
    let new = cluster.create_tunnel("new.localhost", agent, &secret.addr.to_string());
    set_access(&cluster, &new, r#"{"password":"only for the owner"}"#);
    cluster
        .wait_until(0, "new.localhost", Duration::from_secs(10), |a| {
            a.status == 401
        })
        .unwrap_or_else(|| panic!("new tunnel not applied\n{}", cluster.logs()));
    cluster
        .wait_until(0, "old.localhost", Duration::from_secs(10), |a| {
            a.status == 404
        })
        .unwrap_or_else(|| panic!("old tunnel not removed\n{}", cluster.logs()));
    // Through the stale gateway the old hostname reaches nothing of the new tunnel.
    for _ in 0..20 {
        let answer = cluster.get(stale, "old.localhost", "/");
        assert!(
            !answer.body.contains("\"origin\":\"secret\""),
            "the stale gateway sent the old hostname into the new tunnel: {} {}",
            answer.status,
            answer.body
        );
        assert_ne!(answer.status, 200, "{}", answer.body);
    }
}

/// The response head of `curl args…` (`-D -`, body discarded), lower-cased.
fn head_of(args: &[&str]) -> String {
    let mut all = vec!["-D", "-", "-o", "/dev/null"];
    all.extend_from_slice(args);
    curl(&all).body.to_ascii_lowercase()
}

#[test]
fn identity_headers_cookies_and_framing_cannot_be_turned_against_the_origin() {
    let mut cluster = Cluster::new("gate-headers");
    let public = Origin::start("public");
    let private = Origin::start("private");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel("shared.localhost", agent, &public.addr.to_string());
    let agent_id = cluster.agents[agent].id.clone();
    let body = serde_json::json!({"hostname": "shared.localhost", "path_prefix": "/private", "agent": agent_id, "target": private.addr.to_string(), "issuer": "none"});
    let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(answer.status, 201, "{}", answer.body);
    let protected = answer.json()["id"].as_str().unwrap().to_string();
    set_access(&cluster, &protected, r#"{"password":"shared secret"}"#);
    let node = &cluster.gateways[0];
    let base = format!("http://shared.localhost:{}", node.http_port);
    let resolve = format!("shared.localhost:{}:{}", node.http_port, node.ip);
    let get = |path: &str, extra: &[&str]| {
        let mut args = vec!["--resolve", resolve.as_str()];
        args.extend_from_slice(extra);
        let url = format!("{base}{path}");
        args.push(&url);
        curl(&args)
    };
    wait_for(PUSH_LIMIT * 5, || {
        (get("/private/x", &[]).status == 401).then_some(())
    })
    .unwrap_or_else(|| panic!("policy not applied\n{}", cluster.logs()));

    // Every spelling of the identity and forwarding headers, and a Connection nomination of
    // the gateway's own: the origin sees only what the gateway set.
    let spoofs = [
        "X_Kakuremichi_User: admin",
        "x-KAKUREMICHI-user: root",
        "X-Kakuremichi-Email: boss@example.com",
        "x_kakuremichi_email: boss@example.com",
        "Connection: x-kakuremichi-user, x-forwarded-for",
        "X_Forwarded_For: 203.0.113.66",
        "X_Real_IP: 203.0.113.66",
        "X_Forwarded_Host: evil.example",
        "True_Client_IP: 203.0.113.66",
    ];
    let mut args = vec!["-u", "admin:shared secret"];
    for spoof in &spoofs {
        args.extend(["-H", spoof]);
    }
    let seen = get("/private/x", &args);
    assert_eq!(seen.status, 200, "{}", seen.body);
    let seen = seen.json();
    let names: Vec<&str> = seen["header_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains('_')),
        "underscore spellings reached the origin: {names:?}"
    );
    assert_eq!(
        seen["user"], "password:admin",
        "basic-auth visitors are not Control users"
    );
    assert_eq!(seen["email"], "");
    assert_eq!(seen["x_forwarded_for"], "127.0.0.1");
    assert_eq!(
        seen["x_forwarded_host"],
        format!("shared.localhost:{}", node.http_port)
    );

    // The session cookie of the protected path never reaches the public tunnel beside it.
    let jar = cluster.dir.join("visitor.cookies");
    let jar = jar.to_str().unwrap();
    let login = get(
        "/.kakuremichi/login?return=/private/x",
        &["-c", jar, "--data-urlencode", "password=shared secret"],
    );
    assert_eq!(login.status, 303, "{}", login.body);
    let inside = get("/private/x", &["-b", jar]);
    assert_eq!(inside.status, 200, "{}", inside.body);
    assert_eq!(inside.json()["cookie"], "");
    let outside = get("/", &["-b", jar, "-H", "Cookie: theme=dark"]);
    assert_eq!(outside.json()["origin"], "public");
    let cookie = outside.json()["cookie"].as_str().unwrap().to_string();
    assert!(!cookie.contains("km_access"), "{cookie}");
    assert!(
        cookie.contains("theme=dark"),
        "the origin's own cookies pass: {cookie}"
    );

    // Pages cannot be framed, sniffed or cached, on the gateway and on Control.
    let unknown = format!("http://{}:{}/", node.ip, node.http_port);
    let not_found_page = head_of(&["-H", "Host: nothing.localhost", &unknown]);
    let login_page = head_of(&[
        "--resolve",
        &resolve,
        &format!("{base}/.kakuremichi/login?return=/private/x"),
    ]);
    let control_page = head_of(&[&cluster.control_url("/login")]);
    for (name, head) in [
        ("gateway 404 page", &not_found_page),
        ("gateway login page", &login_page),
        ("Control login page", &control_page),
    ] {
        for needle in [
            "x-frame-options: deny",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "cache-control: no-store",
            "referrer-policy:",
        ] {
            assert!(head.contains(needle), "{name} lacks {needle}:\n{head}");
        }
    }
    assert!(
        control_page.contains("script-src 'sha256-"),
        "Control runs only its own copy script:\n{control_page}"
    );
}

#[test]
fn keys_hashes_and_certificates_on_disk_are_readable_by_their_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let (mut cluster, _origin) = one_tunnel(
        "gate-modes",
        "modes.localhost",
        Some(r#"{"password":"a hash on disk"}"#),
    );
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let mut checked = Vec::new();
    // Every directory 0700 (Control's traffic history is one inside its data directory),
    // every file 0600.
    let mut dirs: Vec<std::path::PathBuf> = ["control-data", "gateway0-state", "agent0-state"]
        .iter()
        .map(|dir| cluster.dir.join(dir))
        .collect();
    while let Some(dir) = dirs.pop() {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            checked.push(path);
        }
    }
    for wanted in [
        "control-data/data.mdb",
        "control-data/traffic/data.mdb",
        "gateway0-state/config.json",
        "gateway0-state/wireguard.key",
        "agent0-state/wireguard.key",
    ] {
        assert!(
            checked.contains(&cluster.dir.join(wanted)),
            "{wanted} missing: {checked:?}"
        );
    }
    // A local user who is not the owner reads none of them.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    if root {
        std::fs::set_permissions(&cluster.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for path in &checked {
            let read = std::process::Command::new("runuser")
                .args(["-u", "nobody", "--", "cat"])
                .arg(path)
                .output()
                .unwrap();
            assert!(!read.status.success(), "nobody read {}", path.display());
        }
    }
    // A node that finds its files opened to others closes them again at start, and says so.
    let config = cluster.dir.join("gateway0-state/config.json");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        cluster.dir.join("gateway0-state"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    cluster.gateways[0].restart();
    wait_for(Duration::from_secs(10), || {
        (mode(&config) == 0o600).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "config.json left at {:o}\n{}",
            mode(&config),
            cluster.gateways[0].log()
        )
    });
    assert_eq!(mode(&cluster.dir.join("gateway0-state")), 0o700);
    assert!(cluster.gateways[0].log().contains("was readable by others"));
}

#[test]
fn clients_trickling_bodies_do_not_hold_a_tunnels_connections() {
    let (cluster, _origin) = one_tunnel("gate-slow-bodies", "busy.localhost", None);
    let gateway = gateway_http(&cluster);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 260 clients (more than the tunnel's 256 upstream connections), each sending one byte of
    // its body every 2 s, well inside the body idle timeout.
    let tricklers: Vec<_> = (0..260)
        .map(|_| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let Ok(mut stream) = std::net::TcpStream::connect(gateway) else {
                        return false;
                    };
                    let head = "POST /upload HTTP/1.1\r\nHost: busy.localhost\r\nContent-Length: 100000\r\n\r\n";
                    if stream.write_all(head.as_bytes()).is_err() {
                        return false;
                    }
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if stream.write_all(b"x").is_err() {
                            return false;
                        }
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    true
                })
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    // Meanwhile other visitors of the same tunnel get their answers at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let answer = cluster.get(0, "busy.localhost", "/");
        assert_eq!(answer.status, 200, "{}", answer.body);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let held = tricklers
        .into_iter()
        .map(|t| t.join().unwrap_or(false))
        .filter(|&kept| kept)
        .count();
    println!("260 clients trickling bodies ({held} kept their connection): the slowest of 20 other visitors took {slowest:?}");
    assert!(held >= 250, "the trickling clients were cut off: {held}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
}

#[test]
fn control_refuses_rebound_forms_and_keeps_its_counters_to_token_holders() {
    let cluster = Cluster::new("gate-rebinding");
    cluster.add_user("alice", false, "alice's long password");
    let login = cluster.control_url("/login");
    // A page on an attacker's domain that resolves to Control: its Host and Origin agree, and
    // both name the attacker's domain.
    let rebound = curl(&[
        "-H",
        "Host: rebind.attacker.example:7080",
        "-H",
        "Origin: http://rebind.attacker.example:7080",
        "--data-urlencode",
        "name=alice",
        "--data-urlencode",
        "password=alice's long password",
        &login,
    ]);
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let own = format!("Origin: {}", cluster.control_url(""));
    let direct = curl(&[
        "-H",
        &own,
        "--data-urlencode",
        "name=alice",
        "--data-urlencode",
        "password=alice's long password",
        &login,
    ]);
    assert_eq!(direct.status, 303, "{}", direct.body);

    let metrics = cluster.control_url("/metrics");
    assert_eq!(curl(&[&metrics]).status, 401);
    assert_eq!(
        curl(&["-H", "Authorization: Bearer kat_forged", &metrics]).status,
        401
    );
    assert!(cluster.control_metrics().contains("kakuremichi_control_"));
}

#[test]
fn an_agent_forwards_only_to_its_allowed_targets_whatever_control_asks() {
    let mut cluster = Cluster::new("gate-allow-targets");
    let allowed = Origin::start("allowed");
    let other = Origin::start("other");
    cluster.add_gateway();
    let listed = cluster.add_agent();
    cluster.agents[listed].set_env("ALLOW_TARGETS", &allowed.addr.to_string());
    cluster.agents[listed].restart();
    let open = cluster.add_agent();
    let (listed_id, open_id) = (
        cluster.agents[listed].id.clone(),
        cluster.agents[open].id.clone(),
    );
    wait_for(Duration::from_secs(10), || {
        let agent = cluster
            .api("GET", &format!("/api/v1/agents/{listed_id}"), None)
            .json();
        (agent["allow_targets"] == allowed.addr.to_string() && agent["online"] == true)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent's ALLOW_TARGETS never reached Control\n{}",
            cluster.logs()
        )
    });
    cluster.create_tunnel("allowed.localhost", listed, &allowed.addr.to_string());
    cluster
        .wait_until(0, "allowed.localhost", Duration::from_secs(15), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("allowed target not served\n{}", cluster.logs()));

    // Control refuses, with the reason, a tunnel outside the list and the metadata address.
    let create = |agent: &str, hostname: &str, target: &str| {
        let body = serde_json::json!({"hostname": hostname, "agent": agent, "target": target, "issuer": "none"});
        cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()))
    };
    let refused = create(&listed_id, "other.localhost", &other.addr.to_string());
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("ALLOW_TARGETS"), "{}", refused.body);
    let metadata = create(&open_id, "metadata.localhost", "169.254.169.254:80");
    assert_eq!(metadata.status, 400, "{}", metadata.body);
    assert!(metadata.body.contains("link-local"), "{}", metadata.body);

    // What Control cannot know, the agent refuses itself: its own status port answers like a
    // refused connection (502), and is counted.
    let status = format!("127.0.0.1:{}", cluster.agents[open].admin_port);
    let answer = create(&open_id, "status.localhost", &status);
    assert_eq!(answer.status, 201, "{}", answer.body);
    cluster
        .wait_until(0, "status.localhost", Duration::from_secs(15), |a| {
            a.status == 502
        })
        .unwrap_or_else(|| {
            panic!(
                "the status port was reached or never refused\n{}",
                cluster.logs()
            )
        });
    let answer = cluster.get(0, "status.localhost", "/metrics");
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(
        !answer.body.contains("kakuremichi_agent"),
        "{}",
        answer.body
    );
    let refused_count = metric(
        &cluster.agents[open].metrics(),
        "kakuremichi_agent_refused_targets_total",
    );
    assert!(refused_count.unwrap_or(0.0) >= 1.0, "{refused_count:?}");
}

#[test]
fn a_read_only_token_reads_and_changes_nothing() {
    let cluster = Cluster::new("gate-token-scopes");
    let made = cluster.api(
        "POST",
        "/api/v1/tokens",
        Some(r#"{"name":"grafana","scope":"read"}"#),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.json()["scope"], "read");
    let token = made.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let call = |method: &str, path: &str, body: &str| {
        let url = cluster.control_url(path);
        curl(&["-X", method, "-H", &bearer, "--data", body, &url])
    };
    assert_eq!(
        curl(&["-H", &bearer, &cluster.control_url("/api/v1/tunnels")]).status,
        200
    );
    assert_eq!(
        curl(&["-H", &bearer, &cluster.control_url("/metrics")]).status,
        200
    );
    for (method, path, body) in [
        ("POST", "/api/v1/agents", r#"{"name":"sneaky"}"#),
        ("POST", "/api/v1/tokens", r#"{"name":"escalate"}"#),
        ("PATCH", "/api/v1/users/usr_x", r#"{"role":"admin"}"#),
        ("DELETE", "/api/v1/tokens/tok_x", ""),
        ("POST", "/api/v1/access/rotate-keys", ""),
    ] {
        let answer = call(method, path, body);
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
    }
    let agents = cluster.api("GET", "/api/v1/agents", None).json();
    assert_eq!(agents.as_array().map(Vec::len), Some(0), "{agents}");
    let tokens = cluster.api("GET", "/api/v1/tokens", None).json();
    assert_eq!(tokens.as_array().map(Vec::len), Some(2), "{tokens}");
}

#[test]
fn control_sends_a_login_back_only_to_a_port_a_gateway_serves() {
    let mut cluster = Cluster::new("gate-return-port");
    let origin = Origin::start("app");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let tunnel = cluster.create_tunnel("app.localhost", agent, &origin.addr.to_string());
    cluster.add_user("alice", false, "alice's long password");
    set_access(&cluster, &tunnel, r#"{"users":["alice"]}"#);
    let gateway_id = cluster.gateways[0].id.clone();
    cluster.wait_online("gateway", &gateway_id);
    let access = |origin: &str| {
        let query = format!("origin={origin}&return=/");
        curl(&[&cluster.control_url(&format!("/access?{query}"))]).status
    };
    let port = cluster.gateways[0].http_port;
    assert_eq!(
        access(&format!("http://app.localhost:{port}")),
        303,
        "to Control's login"
    );
    // Another service on the tunnel's host (a tcp tunnel's port, say) never gets the assertion.
    assert_eq!(access(&format!("http://app.localhost:{}", port + 1)), 404);
    assert_eq!(access("http://app.localhost"), 404);
}
