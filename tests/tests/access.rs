//! Access rules with the real binaries: a gateway decides every request itself, from the
//! policy and keys Control pushed, and keeps deciding while Control is down.

use kakuremichi_tests::{curl, metric, wait_for, Answer, Cluster, CookieJar, Origin};
use std::time::Duration;

const PUSH_LIMIT: Duration = Duration::from_secs(2);

/// A browser-like client: a cookie jar, and navigation through a gateway.
struct Client {
    jar: CookieJar,
}

impl Client {
    fn new(cluster: &Cluster, name: &str) -> Client {
        Client {
            jar: CookieJar::new(&cluster.dir, name),
        }
    }

    fn request(&self, url: &str, extra: &[&str]) -> Answer {
        self.jar.request(url, extra)
    }

    /// A GET through gateway `index` for `hostname`, as a browser navigating (`Accept: html`).
    fn browse(&self, cluster: &Cluster, index: usize, hostname: &str, path: &str) -> Answer {
        let node = &cluster.gateways[index];
        let resolve = format!("{hostname}:{}:{}", node.http_port, node.ip);
        let url = format!("http://{hostname}:{}{path}", node.http_port);
        self.request(&url, &["--resolve", &resolve, "-H", "Accept: text/html"])
    }

    fn header(&self, name: &str) -> Option<String> {
        self.jar.header(name)
    }
}

/// A plain (non-browser) request through gateway `index` with extra curl arguments.
fn fetch(cluster: &Cluster, index: usize, hostname: &str, path: &str, extra: &[&str]) -> Answer {
    let node = &cluster.gateways[index];
    let resolve = format!("{hostname}:{}:{}", node.http_port, node.ip);
    let url = format!("http://{hostname}:{}{path}", node.http_port);
    let mut args = vec!["--resolve", resolve.as_str()];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

fn set_access(cluster: &Cluster, tunnel: &str, access: &str) {
    let body = format!(r#"{{"access":{access}}}"#);
    let answer = cluster.api("PATCH", &format!("/api/v1/tunnels/{tunnel}"), Some(&body));
    assert_eq!(answer.status, 200, "{access}: {}", answer.body);
}

/// A cluster with `gateways` gateways, one agent and one tunnel `app.localhost` (plain HTTP).
fn tunnel_cluster(name: &str, gateways: usize) -> (Cluster, String, Origin) {
    let mut cluster = Cluster::new(name);
    let origin = Origin::start("app");
    for _ in 0..gateways {
        cluster.add_gateway();
    }
    let agent = cluster.add_agent();
    let tunnel = cluster.create_tunnel("app.localhost", agent, &origin.addr.to_string());
    for index in 0..gateways {
        cluster
            .wait_until(index, "app.localhost", Duration::from_secs(10), |a| {
                a.status == 200
            })
            .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    }
    (cluster, tunnel, origin)
}

#[test]
fn passwords_tokens_ip_rules_and_bypass_paths_each_admit_the_right_callers() {
    let (cluster, tunnel, _origin) = tunnel_cluster("access-kinds", 1);
    let get = |path: &str, extra: &[&str]| fetch(&cluster, 0, "app.localhost", path, extra);
    set_access(
        &cluster,
        &tunnel,
        r#"{"password":"open sesame","bypass":["/health","/hooks/*"]}"#,
    );
    wait_for(PUSH_LIMIT, || (get("/", &[]).status == 401).then_some(()))
        .unwrap_or_else(|| panic!("policy not applied within 2 s\n{}", cluster.logs()));
    let number = |answer: Answer| answer.json()["request_number"].as_u64().unwrap();
    let before = number(get("/health", &[]));
    assert_eq!(get("/hooks/github", &[]).status, 200);
    assert_eq!(get("/healthz", &[]).status, 401);
    // Denied requests, a WebSocket upgrade and HTTP/2 among them, never reach the origin.
    let upgrade = [
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    assert_eq!(get("/socket", &upgrade).status, 401);
    for _ in 0..10 {
        assert_eq!(
            get("/", &["-H", "Authorization: Bearer kst_unknown"]).status,
            401
        );
    }
    assert_eq!(
        number(get("/health", &[])),
        before + 2,
        "only the bypass requests arrived"
    );

    // Basic auth: the right password passes (the origin sees neither it nor our cookie), a
    // wrong one gets a challenge.
    let seen = get(
        "/",
        &["-u", "ci:open sesame", "-H", "X-Kakuremichi-User: root"],
    );
    assert_eq!(seen.status, 200, "{}", seen.body);
    // Named so that no Control user (whose names hold no ':') can be mistaken for them.
    assert_eq!(seen.json()["user"], "password:ci");
    assert_eq!(seen.json()["authorization"], "");
    assert_eq!(get("/", &["-u", "ci:wrong"]).status, 401);

    // The browser's way: the login page, a wrong password, the right one, a cookie.
    let browser = Client::new(&cluster, "browser");
    let first = browser.browse(&cluster, 0, "app.localhost", "/private?x=1");
    assert_eq!(first.status, 303);
    let location = browser.header("location").expect("a login redirect");
    assert!(
        location.starts_with("/.kakuremichi/login?return="),
        "{location}"
    );
    let page = browser.browse(&cluster, 0, "app.localhost", &location);
    assert!(page.body.contains("type=\"password\""), "{}", page.body);
    let node = &cluster.gateways[0];
    let resolve = format!("app.localhost:{}:{}", node.http_port, node.ip);
    let login_url = format!("http://app.localhost:{}/.kakuremichi/login", node.http_port);
    let login = |password: &str| {
        let field = format!("password={password}");
        browser.request(
            &login_url,
            &[
                "--resolve",
                &resolve,
                "--data-urlencode",
                &field,
                "--data-urlencode",
                "return=/private?x=1",
            ],
        )
    };
    assert_eq!(login("nope").status, 401);
    assert_eq!(login("open sesame").status, 303);
    assert_eq!(browser.header("location").as_deref(), Some("/private?x=1"));
    let cookie = browser.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.starts_with("km_access=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let inside = browser.browse(&cluster, 0, "app.localhost", "/private");
    assert_eq!(inside.status, 200, "{}", inside.body);
    assert_eq!(
        inside.json()["cookie"],
        "",
        "the origin never sees the gateway's cookie"
    );

    // Service tokens: made once, pass as a bearer, stop within 2 s of being revoked.
    let path = format!("/api/v1/tunnels/{tunnel}/service-tokens");
    let made = cluster.api("POST", &path, Some(r#"{"name":"deploy"}"#));
    assert_eq!(made.status, 201, "{}", made.body);
    let token = made.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    wait_for(PUSH_LIMIT, || {
        (get("/", &["-H", &bearer]).status == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("service token not pushed within 2 s\n{}", cluster.logs()));
    let seen = get("/", &["-H", &bearer]).json();
    assert_eq!(
        (seen["user"].as_str(), seen["authorization"].as_str()),
        (Some("token:service"), Some(""))
    );
    assert_eq!(
        get("/", &["-H", "Authorization: Bearer kst_forged"]).status,
        401
    );
    let listed = cluster.api("GET", &path, None);
    assert!(
        !listed.body.contains(&token),
        "the token is shown only once"
    );
    let id = made.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        cluster.api("DELETE", &format!("{path}/{id}"), None).status,
        200
    );
    wait_for(PUSH_LIMIT, || {
        (get("/", &["-H", &bearer]).status == 401).then_some(())
    })
    .unwrap_or_else(|| panic!("revoked token still passes after 2 s\n{}", cluster.logs()));

    // A changed password ends the sessions made with the old one.
    set_access(&cluster, &tunnel, r#"{"password":"a new secret"}"#);
    wait_for(PUSH_LIMIT, || {
        (browser.browse(&cluster, 0, "app.localhost", "/").status == 303).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "old password's session still works after 2 s\n{}",
            cluster.logs()
        )
    });

    // IP rules come before everything, bypass paths included.
    set_access(&cluster, &tunnel, r#"{"deny_ips":["127.0.0.0/8"]}"#);
    wait_for(PUSH_LIMIT, || {
        (get("/health", &[]).status == 403).then_some(())
    })
    .unwrap_or_else(|| panic!("deny rule not applied within 2 s\n{}", cluster.logs()));
    set_access(
        &cluster,
        &tunnel,
        r#"{"deny_ips":[],"allow_ips":["192.0.2.0/24"]}"#,
    );
    wait_for(PUSH_LIMIT, || {
        (get("/health", &[]).status == 403).then_some(())
    });
    assert_eq!(get("/", &["-u", "x:a new secret"]).status, 403);
    set_access(&cluster, &tunnel, r#"{"allow_ips":["127.0.0.1"]}"#);
    wait_for(PUSH_LIMIT, || {
        (get("/health", &[]).status == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("allow rule not applied within 2 s\n{}", cluster.logs()));

    // Bad rules are refused with the field, and change nothing.
    for bad in [
        r#"{"allow_ips":["300.0.0.0/8"]}"#,
        r#"{"bypass":["nope"]}"#,
        r#"{"password":"ab"}"#,
        r#"{"roles":["owner"]}"#,
    ] {
        let body = format!(r#"{{"access":{bad}}}"#);
        let answer = cluster.api("PATCH", &format!("/api/v1/tunnels/{tunnel}"), Some(&body));
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert!(
            answer.json()["field"]
                .as_str()
                .unwrap()
                .starts_with("access."),
            "{}",
            answer.body
        );
    }

    // Guessing is throttled per client and tunnel, with a clear wait, and counted. Two
    // wrong passwords above (basic and the form) already count: 3 more are free.
    let statuses: Vec<u16> = (0..6).map(|_| login("guess").status).collect();
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    assert!(browser.header("retry-after").is_some());
    assert_eq!(
        login("a new secret").status,
        429,
        "even the right password waits"
    );
    let metrics = cluster.gateways[0].metrics();
    assert!(metric(&metrics, "kakuremichi_gateway_access_failed_logins_total").unwrap() >= 5.0);
    assert!(metric(&metrics, "kakuremichi_gateway_access_throttled_total").unwrap() >= 2.0);
}

#[test]
fn control_users_log_in_once_for_every_gateway_and_keep_working_with_control_down() {
    let (mut cluster, tunnel, origin) = tunnel_cluster("access-users", 2);
    for (name, password) in [("alice", "alice's password"), ("bob", "bob's password")] {
        let body = format!(r#"{{"name":"{name}","role":"member","password":"{password}"}}"#);
        assert_eq!(
            cluster.api("POST", "/api/v1/users", Some(&body)).status,
            201
        );
    }
    set_access(
        &cluster,
        &tunnel,
        r#"{"users":["alice"],"password":"team pin 2468"}"#,
    );
    let get = |cluster: &Cluster, index, extra: &[&str]| {
        fetch(cluster, index, "app.localhost", "/", extra)
    };
    wait_for(PUSH_LIMIT, || {
        (get(&cluster, 0, &[]).status == 401).then_some(())
    })
    .unwrap_or_else(|| panic!("policy not applied within 2 s\n{}", cluster.logs()));

    // The gateway's login page offers Control's login; Control asks for a login first, then
    // sends the browser back with a one-time assertion, which becomes the tunnel's cookie.
    let alice = Client::new(&cluster, "alice");
    let answer = log_in(&cluster, &alice, 0, "alice", "alice's password");
    assert_eq!(answer.status, 303, "{}", answer.body);
    let callback = alice.header("location").unwrap();
    let gateway0 = format!(
        "http://app.localhost:{}/.kakuremichi/callback?",
        cluster.gateways[0].http_port
    );
    assert!(callback.starts_with(&gateway0), "{callback}");
    let ports: Vec<u16> = cluster.gateways.iter().map(|g| g.http_port).collect();
    let resolve = |i: usize| format!("app.localhost:{}:127.0.0.1", ports[i]);
    assert_eq!(
        alice.request(&callback, &["--resolve", &resolve(0)]).status,
        303
    );
    assert_eq!(alice.header("location").as_deref(), Some("/inbox"));
    let inside = alice.browse(&cluster, 0, "app.localhost", "/inbox");
    assert_eq!(inside.status, 200, "{}", inside.body);
    assert_eq!(inside.json()["user"], "alice");
    assert_eq!(inside.json()["cookie"], "");
    // The same cookie opens the tunnel on the other gateway.
    assert_eq!(
        alice.browse(&cluster, 1, "app.localhost", "/").json()["user"],
        "alice"
    );

    // Replayed, forged and wrong-host assertions are refused.
    let replay = Client::new(&cluster, "replay");
    assert_eq!(
        replay
            .request(&callback, &["--resolve", &resolve(0)])
            .status,
        403
    );
    let forged = format!("{gateway0}assertion=eyJob3N0IjoiYXBwLmxvY2FsaG9zdCJ9.AAAA&return=/");
    assert_eq!(
        replay.request(&forged, &["--resolve", &resolve(0)]).status,
        403
    );
    // A login link is bound to the browser that began the login: another browser cannot
    // redeem it on any gateway, even before its owner did; the owner still can.
    let gateway1 = |link: &str| {
        link.replace(
            &gateway0,
            &format!("http://app.localhost:{}/.kakuremichi/callback?", ports[1]),
        )
    };
    // (Alice is logged in to Control: its /access answers with the link at once.)
    let link = control_link(&cluster, &alice, 0);
    assert_eq!(alice.request(&link, &[]).status, 303);
    let unused = alice.header("location").unwrap();
    for gateway in 0..2 {
        let link = if gateway == 0 {
            unused.clone()
        } else {
            gateway1(&unused)
        };
        let stolen = replay.request(&link, &["--resolve", &resolve(gateway)]);
        assert_eq!(
            stolen.status, 403,
            "a stranger redeemed a login link on gateway {gateway}"
        );
    }
    assert_eq!(
        alice
            .request(&gateway1(&unused), &["--resolve", &resolve(1)])
            .status,
        303
    );
    // Used once, it is refused on the other gateway too, even to its owner.
    assert_eq!(
        alice.request(&unused, &["--resolve", &resolve(0)]).status,
        403
    );
    let forged_cookie = "Cookie: km_access=eyJob3N0IjoiYXBwLmxvY2FsaG9zdCJ9.AAAA";
    assert_eq!(get(&cluster, 0, &["-H", forged_cookie]).status, 401);

    // Alice's cookie, valid here, is refused by another tunnel she may also open: cookies are
    // bound to their hostname.
    let jar = std::fs::read_to_string(alice.jar.file()).unwrap();
    let value = jar
        .lines()
        .find(|l| l.contains("\tkm_access\t"))
        .and_then(|l| l.rsplit('\t').next())
        .expect("alice's cookie in her jar")
        .to_string();
    let with_cookie = format!("Cookie: km_access={value}");
    let other = cluster.create_tunnel("db.localhost", 0, &origin.addr.to_string());
    set_access(&cluster, &other, r#"{"users":["alice"]}"#);
    let db = |extra: &[&str]| fetch(&cluster, 0, "db.localhost", "/", extra).status;
    wait_for(PUSH_LIMIT, || (db(&[]) == 401).then_some(()))
        .unwrap_or_else(|| panic!("second tunnel not protected\n{}", cluster.logs()));
    assert_eq!(
        db(&["-H", &with_cookie]),
        401,
        "a cookie for app.localhost opens db.localhost"
    );
    assert_eq!(get(&cluster, 0, &["-H", &with_cookie]).status, 200);

    // Bob may log in to Control but not open this tunnel.
    let bob = Client::new(&cluster, "bob");
    let refused = log_in(&cluster, &bob, 0, "bob", "bob's password");
    assert_eq!(refused.status, 403, "{}", refused.body);

    // A service token revoked before Control goes down stays revoked.
    let path = format!("/api/v1/tunnels/{tunnel}/service-tokens");
    let made = cluster.api("POST", &path, Some(r#"{"name":"old"}"#)).json();
    let bearer = format!("Authorization: Bearer {}", made["token"].as_str().unwrap());
    let revoke = format!("{path}/{}", made["id"].as_str().unwrap());
    assert_eq!(cluster.api("DELETE", &revoke, None).status, 200);
    // Control is not on the data path: the revocation holds once the gateways have it.
    wait_for(Duration::from_secs(5), || {
        (0..2)
            .all(|gateway| get(&cluster, gateway, &["-H", &bearer]).status == 401)
            .then_some(())
    })
    .expect("both gateways refuse the revoked token");

    // Control down, and a gateway restarted meanwhile from its cached config: alice's
    // session and a password login still work on both gateways; the revoked token does not.
    // (A gateway saves agents' endpoints every 2 s, to start handshakes itself after a
    // restart; a real one has run longer than this test before it restarts.)
    let endpoints = cluster.dir.join("gateway1-state/peer-endpoints.json");
    wait_for(Duration::from_secs(5), || endpoints.exists().then_some(()))
        .expect("the gateway saved its peers' endpoints");
    cluster.control.kill9();
    cluster.gateways[1].restart();
    wait_for(Duration::from_secs(10), || {
        (get(&cluster, 1, &["-u", "x:team pin 2468"]).status == 200).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "restarted gateway does not serve from its cache\n{}",
            cluster.logs()
        )
    });
    for gateway in 0..2 {
        assert_eq!(get(&cluster, gateway, &["-H", &bearer]).status, 401);
        assert_eq!(
            alice.browse(&cluster, gateway, "app.localhost", "/").status,
            200
        );
        assert_eq!(
            get(&cluster, gateway, &["-u", "x:team pin 2468"]).status,
            200
        );
    }
    cluster.control.start();
    wait_for(Duration::from_secs(10), || {
        (cluster.node_status("gateway", &cluster.gateways[1].id)["online"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("gateway not back with Control\n{}", cluster.logs()));

    let users = cluster.api("GET", "/api/v1/users", None).json();
    let alice_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A change of role ends alice's tunnel sessions on both gateways; she logs in again.
    // (Another administrator first, so that alice can be disabled below.)
    let root = r#"{"name":"root","role":"admin","password":"the admin's password"}"#;
    assert_eq!(cluster.api("POST", "/api/v1/users", Some(root)).status, 201);
    let promoted = cluster.api(
        "PATCH",
        &format!("/api/v1/users/{alice_id}"),
        Some(r#"{"role":"admin"}"#),
    );
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    for gateway in 0..2 {
        wait_for(PUSH_LIMIT, || {
            (alice.browse(&cluster, gateway, "app.localhost", "/").status == 303).then_some(())
        })
        .unwrap_or_else(|| panic!("a session outlived a role change\n{}", cluster.logs()));
    }
    assert_eq!(
        log_in(&cluster, &alice, 0, "alice", "alice's password").status,
        303
    );
    let callback = alice.header("location").unwrap();
    assert_eq!(
        alice.request(&callback, &["--resolve", &resolve(0)]).status,
        303
    );
    assert_eq!(
        alice.browse(&cluster, 1, "app.localhost", "/").json()["user"],
        "alice"
    );

    // Disabling alice reaches both gateways within 2 s.
    let started = std::time::Instant::now();
    let disabled = cluster.api(
        "PATCH",
        &format!("/api/v1/users/{alice_id}"),
        Some(r#"{"disabled":true}"#),
    );
    assert_eq!(disabled.status, 200);
    for gateway in 0..2 {
        wait_for(PUSH_LIMIT, || {
            (alice.browse(&cluster, gateway, "app.localhost", "/").status == 303).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "disabled user still admitted on gateway {gateway}\n{}",
                cluster.logs()
            )
        });
    }
    println!(
        "user disabled → refused on both gateways: {:.3} s",
        started.elapsed().as_secs_f64()
    );

    // Rotating the keys ends every session.
    let pin = Client::new(&cluster, "pin");
    let node = &cluster.gateways[0];
    let login = format!("http://app.localhost:{}/.kakuremichi/login", node.http_port);
    let answer = pin.request(
        &login,
        &[
            "--resolve",
            &resolve(0),
            "--data-urlencode",
            "password=team pin 2468",
        ],
    );
    assert_eq!(answer.status, 303);
    assert_eq!(pin.browse(&cluster, 0, "app.localhost", "/").status, 200);
    assert_eq!(
        cluster
            .api("POST", "/api/v1/access/rotate-keys", None)
            .status,
        200
    );
    wait_for(PUSH_LIMIT, || {
        (pin.browse(&cluster, 0, "app.localhost", "/").status == 303).then_some(())
    })
    .unwrap_or_else(|| panic!("session survived key rotation\n{}", cluster.logs()));
}

/// The link to Control's login on app.localhost's login page through gateway `gateway` (the
/// page also gives `client` the login's state cookie).
fn control_link(cluster: &Cluster, client: &Client, gateway: usize) -> String {
    let page = client.browse(
        cluster,
        gateway,
        "app.localhost",
        "/.kakuremichi/login?return=/inbox",
    );
    let start = page
        .body
        .split("href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next());
    let link = start
        .expect("a link to Control's login")
        .replace("&amp;", "&");
    assert!(link.starts_with(&cluster.control_url("/access?")), "{link}");
    link
}

/// Log `client` in to the tunnel app.localhost through gateway `gateway` with Control's
/// login as `name`: the answer of Control's `/access`, which sends the browser back with an
/// assertion (or refuses).
fn log_in(
    cluster: &Cluster,
    client: &Client,
    gateway: usize,
    name: &str,
    password: &str,
) -> Answer {
    let control_origin = cluster.control_url("");
    let control_login = control_link(cluster, client, gateway);
    let answer = client.request(&control_login, &[]);
    assert_eq!(answer.status, 303);
    let to_login = client.header("location").unwrap();
    assert!(to_login.starts_with("/login?next="), "{to_login}");
    let next = to_login.trim_start_matches("/login?next=").to_string();
    let next = form_decode(&next);
    let origin_header = format!("Origin: {control_origin}");
    let fields = [
        format!("name={name}"),
        format!("password={password}"),
        format!("next={next}"),
    ];
    let mut args = vec!["-H", origin_header.as_str()];
    for field in &fields {
        args.extend(["--data-urlencode", field.as_str()]);
    }
    assert_eq!(
        client.request(&cluster.control_url("/login"), &args).status,
        303
    );
    let access = client.header("location").unwrap();
    assert!(access.starts_with("/access?"), "{access}");
    client.request(&cluster.control_url(&access), &[])
}

/// Decode one `application/x-www-form-urlencoded` value.
fn form_decode(text: &str) -> String {
    let mut bytes = Vec::new();
    let mut input = text.bytes();
    while let Some(b) = input.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex: String = input.by_ref().take(2).map(char::from).collect();
                bytes.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
            }
            b => bytes.push(b),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn http2_requests_over_https_are_checked_like_any_other() {
    let mut cluster = Cluster::new("access-h2");
    let origin = Origin::start("app");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let tunnel = cluster.create_tunnel_with_issuer(
        "app.localhost",
        agent,
        &origin.addr.to_string(),
        "internal",
    );
    cluster
        .wait_until(0, "app.localhost", Duration::from_secs(15), |a| {
            a.status == 308
        })
        .unwrap_or_else(|| panic!("tunnel never got its certificate\n{}", cluster.logs()));
    let ca = cluster.dir.join("ca.pem");
    std::fs::write(&ca, curl(&[&cluster.control_url("/ca.pem")]).body).unwrap();
    set_access(&cluster, &tunnel, r#"{"password":"open sesame"}"#);
    let h2 = |extra: &[&str]| {
        let mut args = vec!["--http2"];
        args.extend_from_slice(extra);
        cluster.get_https(0, "app.localhost", "/", &ca, &args)
    };
    wait_for(PUSH_LIMIT, || (h2(&[]).status == 401).then_some(()))
        .unwrap_or_else(|| panic!("policy not applied within 2 s\n{}", cluster.logs()));
    let version = h2(&["-o", "/dev/null", "-w", "%{http_version}\n%{http_code}"]);
    assert_eq!(
        (version.body.as_str(), version.status),
        ("2", 401),
        "HTTP/2, refused"
    );
    let inside = h2(&["-u", "ci:open sesame"]);
    assert_eq!(inside.status, 200, "{}", inside.body);
    assert!(
        inside.body.contains("\"user\":\"password:ci\""),
        "{}",
        inside.body
    );
    // Browsers over HTTPS get a Secure cookie.
    let node = &cluster.gateways[0];
    let resolve = format!("app.localhost:{}:{}", node.https_port, node.ip);
    let url = format!(
        "https://app.localhost:{}/.kakuremichi/login",
        node.https_port
    );
    let ca_path = ca.display().to_string();
    let login = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        &ca_path,
        "-D",
        "-",
        "--data-urlencode",
        "password=open sesame",
        &url,
    ]);
    assert_eq!(login.status, 303);
    let cookie = login
        .body
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}
