//! What Control answers, pinned: every route and method of its route table
//! (`kakuremichi_control::routes`), and some it has not, × visitor (anonymous, a member, an
//! administrator on the pages; no token, a read-only token, an admin token on the API) →
//! status, `Location` and a fragment of the body, in process and without sockets. The
//! answers are `routes.snapshot` beside this file; a change to what Control serves shows as a diff
//! there. `UPDATE_SNAPSHOTS=1 cargo test -p kakuremichi-control --test routes` rewrites it
//! (review the diff: it is the behaviour change).
//!
//! Writes are sent only where they must be refused (no CSRF token, a member, no or a
//! read-only token), so the fixture stays the same for every row.

use http_body_util::BodyExt;
use hyper::{Request, Response};
use kakuremichi_control::auth::{password, Role};
use kakuremichi_control::model::TokenScope;
use kakuremichi_control::{routes, server, Control, Settings};
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_rt::http::{full, Body};
use std::net::SocketAddr;
use std::sync::Arc;

const LISTEN: &str = "127.0.0.1:7080";
const ORIGIN: &str = "http://127.0.0.1:7080";
const PASSWORD: &str = "a password for the table";

struct Fixture {
    control: Arc<Control>,
    /// (placeholder, id) pairs: paths are written with the placeholders.
    ids: Vec<(&'static str, String)>,
    /// Cookie and CSRF token per logged-in visitor.
    member: (String, String),
    admin: (String, String),
    read_only_token: String,
    admin_token: String,
}

fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        listen: LISTEN.parse().unwrap(),
        overlay: "10.77.0.0/16".parse().unwrap(),
        public_url: Some(ORIGIN.into()),
        acme: None,
        control_hostname: None,
        control_upstream: None,
        default_issuer: None,
        heartbeat: std::time::Duration::from_secs(15),
        session_limits: kakuremichi_control::auth::sessions::SessionLimits {
            idle_secs: 3600,
            absolute_secs: 86_400,
        },
        release_dir: None,
        trusted_proxies: Vec::new(),
        join_dir: None,
        traffic_retention: Default::default(),
        alert_interval: std::time::Duration::from_secs(15),
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

async fn send(control: &Arc<Control>, request: Request<Body>) -> (Response<()>, String) {
    let response = server::answer(control.clone(), request, peer()).await;
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        Response::from_parts(parts, ()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: String) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", LISTEN);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(full(body)).unwrap()
}

/// Log `name` in through the login form: its session cookie and a page's CSRF token.
async fn log_in(control: &Arc<Control>, name: &str) -> (String, String) {
    let form = format!("name={name}&password={}", PASSWORD.replace(' ', "+"));
    let headers = [
        ("origin", ORIGIN),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (response, _) = send(control, request("POST", "/login", &headers, form)).await;
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let (_, page) = send(
        control,
        request("GET", "/account", &[("cookie", &cookie)], String::new()),
    )
    .await;
    let at = page.find("name=\"csrf\" value=\"").expect("a form token");
    let csrf = page[at + 19..].split('"').next().unwrap().to_string();
    (cookie, csrf)
}

async fn fixture(dir: &std::path::Path) -> Fixture {
    let control = kakuremichi_control::open(settings(dir), LISTEN.parse().unwrap()).unwrap();
    let store = &control.store;
    let hash = password::hash(PASSWORD).unwrap();
    store
        .create_user("root", Role::Admin, hash.clone(), false)
        .unwrap();
    let member = store
        .create_user("viewer", Role::Member, hash, false)
        .unwrap();
    let (agent, _) = store.create_node(NodeKind::Agent, "home".into()).unwrap();
    let (gateway, _) = store.create_node(NodeKind::Gateway, "edge".into()).unwrap();
    let (_, admin_token) = store
        .create_token("table", None, TokenScope::Admin)
        .unwrap();
    let (_, read_only_token) = store
        .create_token("reader", None, TokenScope::Read)
        .unwrap();
    let (token_record, _) = store
        .create_token("spare", None, TokenScope::Admin)
        .unwrap();
    let body = format!(
        r#"{{"hostname":"app.example.com","agent":"{}","target":"127.0.0.1:3000","issuer":"none"}}"#,
        agent.id
    );
    let auth = format!("Bearer {admin_token}");
    let (created, text) = send(
        &control,
        request("POST", "/api/v1/tunnels", &[("authorization", &auth)], body),
    )
    .await;
    assert_eq!(created.status(), 201, "{text}");
    let tunnel: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tunnel = tunnel["id"].as_str().unwrap().to_string();
    let service_body = r#"{"name":"backup"}"#.to_string();
    let service = format!("/api/v1/tunnels/{tunnel}/service-tokens");
    let (_, text) = send(
        &control,
        request("POST", &service, &[("authorization", &auth)], service_body),
    )
    .await;
    let service_token: serde_json::Value = serde_json::from_str(&text).unwrap();
    let member_session = log_in(&control, "viewer").await;
    let admin_session = log_in(&control, "root").await;
    Fixture {
        ids: vec![
            ("{tunnel}", tunnel),
            ("{agent}", agent.id),
            ("{gateway}", gateway.id),
            ("{member}", member.id),
            ("{token}", token_record.id),
            (
                "{service_token}",
                service_token["id"].as_str().unwrap_or("none").to_string(),
            ),
        ],
        control,
        member: member_session,
        admin: admin_session,
        read_only_token,
        admin_token,
    }
}

/// Requests the table has no route for: a method a path does not take, a path nothing
/// serves. Every route the table lists is called as well ([`Fixture::table`]).
const PAGE_PROBES: &[(&str, &str)] = &[
    ("POST", "/agents/{agent}"),
    ("PUT", "/tunnels"),
    ("DELETE", "/agents/{agent}"),
    ("GET", "/no/such/page"),
];
const API_PROBES: &[(&str, &str)] = &[("PUT", "/api/v1/tunnels"), ("GET", "/api/v1/nothing")];

/// A route's pattern with the fixture's placeholders for its parameters.
fn template(pattern: &str) -> String {
    let segments: Vec<&str> = pattern.split('/').collect();
    let placed: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, segment)| match *segment {
            "{id}" => match segments[i - 1] {
                "tunnels" => "{tunnel}",
                "agents" => "{agent}",
                "gateways" => "{gateway}",
                "users" => "{member}",
                "tokens" => "{token}",
                "sessions" | "rules" | "channels" => "none",
                other => panic!("the fixture has no {other} for {pattern}"),
            },
            "{token_id}" => "{service_token}",
            "{hostname}" => "app.example.com",
            "{name}" => "kakuremichi-agent-x86_64",
            other => other,
        })
        .collect();
    placed.join("/")
}

/// Every (method, path) of the route table in its order, pages or API, then the probes.
fn requests(api: bool) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = Vec::new();
    for route in &routes::table().routes {
        if route.section.is_api() != api {
            continue;
        }
        for (method, _) in &route.methods {
            listed.push((method.to_string(), template(&route.path)));
        }
    }
    // Last: the member's logout ends the member's session.
    listed.sort_by_key(|(_, path)| path == "/logout");
    let probes = if api { API_PROBES } else { PAGE_PROBES };
    let at = if api { listed.len() } else { listed.len() - 1 };
    let probes = probes.iter().map(|(m, p)| (m.to_string(), p.to_string()));
    listed.splice(at..at, probes);
    listed
}

/// What a row shows of a body: a page's `<title>`, a JSON error, or the first line of text.
fn fragment(body: &str) -> String {
    let text = if let Some(at) = body.find("<title>") {
        let title = body[at + 7..].split("</title>").next().unwrap_or("");
        title.trim_end_matches(" · kakuremichi").to_string()
    } else if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        match value.get("error") {
            Some(error) => format!("error: {}", error.as_str().unwrap_or("")),
            None => "json".to_string(),
        }
    } else if body.contains(char::REPLACEMENT_CHARACTER) {
        "binary".to_string()
    } else {
        body.lines().next().unwrap_or("").to_string()
    };
    text.chars().take(70).collect()
}

impl Fixture {
    fn path(&self, template: &str) -> String {
        self.ids
            .iter()
            .fold(template.to_string(), |path, (placeholder, id)| {
                path.replace(placeholder, id)
            })
    }

    fn unplace(&self, text: &str) -> String {
        self.ids
            .iter()
            .fold(text.to_string(), |text, (placeholder, id)| {
                text.replace(id, placeholder)
            })
    }

    async fn row(
        &self,
        visitor: &str,
        method: &str,
        template: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> String {
        let (response, text) = send(
            &self.control,
            request(method, &self.path(template), headers, body.into()),
        )
        .await;
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(|a| format!(" allow={a}"))
            .unwrap_or_default();
        self.unplace(&format!(
            "{visitor:<10} {method:<6} {template:<58} {} {location}{allow} | {}",
            response.status().as_u16(),
            fragment(&text)
        ))
    }

    async fn table(&self) -> Vec<String> {
        let mut rows = Vec::new();
        let form = ("content-type", "application/x-www-form-urlencoded");
        for (method, path) in requests(false) {
            let (method, path) = (method.as_str(), path.as_str());
            let member_cookie = self.member.0.as_str();
            let admin_cookie = self.admin.0.as_str();
            rows.push(self.row("anonymous", method, path, &[], "").await);
            if matches!(method, "GET" | "PUT" | "DELETE") {
                rows.push(
                    self.row("member", method, path, &[("cookie", member_cookie)], "")
                        .await,
                );
                rows.push(
                    self.row("admin", method, path, &[("cookie", admin_cookie)], "")
                        .await,
                );
            } else {
                // A write without the form token, from the page's own origin: refused.
                let headers = [("cookie", admin_cookie), ("origin", ORIGIN), form];
                rows.push(self.row("admin/csrf", method, path, &headers, "").await);
                // A member with the token: refused on every administrator's form.
                let body = format!("csrf={}", self.member.1);
                let headers = [("cookie", member_cookie), ("origin", ORIGIN), form];
                rows.push(self.row("member", method, path, &headers, &body).await);
            }
        }
        let json = ("content-type", "application/json");
        let read_only = format!("Bearer {}", self.read_only_token);
        let admin = format!("Bearer {}", self.admin_token);
        for (method, path) in requests(true) {
            let (method, path) = (method.as_str(), path.as_str());
            rows.push(self.row("no token", method, path, &[json], "{}").await);
            rows.push(
                self.row(
                    "read-only",
                    method,
                    path,
                    &[json, ("authorization", &read_only)],
                    "{}",
                )
                .await,
            );
            // Reads, and a method no route takes, as the administrator too.
            if matches!(method, "GET" | "PUT") {
                rows.push(
                    self.row(
                        "admin",
                        method,
                        path,
                        &[json, ("authorization", &admin)],
                        "",
                    )
                    .await,
                );
            }
        }
        rows
    }
}

#[test]
fn every_route_method_and_visitor_answers_as_pinned() {
    let dir = std::env::temp_dir().join(format!("kakuremichi-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rows = smol::block_on(async {
        let fixture = fixture(&dir).await;
        fixture.table().await
    });
    let _ = std::fs::remove_dir_all(&dir);
    let table = rows.join("\n") + "\n";
    let snapshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/routes.snapshot");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &table).unwrap();
        return;
    }
    let pinned = std::fs::read_to_string(&snapshot).unwrap_or_default();
    let changed: Vec<String> = pinned
        .lines()
        .zip(table.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("- {a}\n+ {b}"))
        .collect();
    assert!(
        changed.is_empty() && pinned.lines().count() == table.lines().count(),
        "Control's answers changed ({} rows differ; {} pinned, {} now):\n{}",
        changed.len(),
        pinned.lines().count(),
        table.lines().count(),
        changed.join("\n")
    );
}

/// A request (method, path, headers, body) and the status it must get.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, String, u16);

/// Keys the store cannot hold (empty, or over LMDB's 511 bytes) from a stranger are answers,
/// not store errors: a login name, a session cookie, an API token, a path's id.
#[test]
fn oversized_and_empty_keys_are_refused_not_failed() {
    let dir = std::env::temp_dir().join(format!("kakuremichi-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    smol::block_on(async {
        let fixture = fixture(&dir).await;
        let long = "x".repeat(600);
        let form = ("content-type", "application/x-www-form-urlencoded");
        let cookie = format!("km_session={long}");
        let bearer = format!("Bearer {long}");
        let admin = format!("Bearer {}", fixture.admin_token);
        let cases: Vec<Case> = vec![
            (
                "POST",
                "/login".into(),
                vec![("origin", ORIGIN), form],
                format!("name={long}&password=x"),
                401,
            ),
            (
                "POST",
                "/login".into(),
                vec![("origin", ORIGIN), form],
                "name=&password=".into(),
                401,
            ),
            (
                "GET",
                "/".into(),
                vec![("cookie", &cookie)],
                String::new(),
                303,
            ),
            (
                "GET",
                "/api/v1/tunnels".into(),
                vec![("authorization", &bearer)],
                String::new(),
                401,
            ),
            (
                "GET",
                format!("/api/v1/tunnels/{long}"),
                vec![("authorization", &admin)],
                String::new(),
                404,
            ),
            (
                "DELETE",
                format!("/api/v1/users/{long}"),
                vec![("authorization", &admin)],
                String::new(),
                404,
            ),
        ];
        for (method, path, headers, body, status) in cases {
            let (response, text) =
                send(&fixture.control, request(method, &path, &headers, body)).await;
            assert_eq!(
                response.status(),
                status,
                "{method} {}: {text}",
                &path[..path.len().min(40)]
            );
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

/// What clients read from the API's answers stays where they read it: each resource's keys,
/// the secrets shown once beside it, and gateway-only keys on gateways alone.
#[test]
fn api_answers_carry_the_fields_clients_read() {
    let dir = std::env::temp_dir().join(format!("kakuremichi-views-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    smol::block_on(async {
        let fixture = fixture(&dir).await;
        let auth = format!("Bearer {}", fixture.admin_token);
        let call = |method: &'static str, path: String, body: &'static str| {
            let request = request(method, &path, &[("authorization", &auth)], body.into());
            let control = fixture.control.clone();
            async move {
                let (response, text) = send(&control, request).await;
                assert!(response.status().is_success(), "{method} {path}: {text}");
                serde_json::from_str::<serde_json::Value>(&text).unwrap()
            }
        };
        let node = [
            "allow_targets",
            "created_at",
            "enabled",
            "health",
            "health_reason",
            "id",
            "last_seen",
            "name",
            "online",
            "overlay_ip",
            "public_key",
            "version",
        ];
        let agents = call("GET", "/api/v1/agents".into(), "").await;
        assert_eq!(keys(&agents[0]), node);
        let gateway = call("POST", "/api/v1/gateways".into(), r#"{"name":"two"}"#).await;
        let mut with_key: Vec<&str> = node.to_vec();
        with_key.extend([
            "api_key",
            "draining",
            "install",
            "labels",
            "wireguard_endpoint",
        ]);
        with_key.sort_unstable();
        assert_eq!(keys(&gateway), with_key);
        assert!(gateway["install"]["shell"]
            .as_str()
            .is_some_and(|s| s.contains(gateway["api_key"].as_str().unwrap())));
        let tunnels = call("GET", "/api/v1/tunnels".into(), "").await;
        assert_eq!(
            keys(&tunnels[0]),
            [
                "access",
                "agent",
                "agents",
                "created_at",
                "enabled",
                "gateways",
                "health",
                "hostname",
                "id",
                "issuer",
                "kind",
                "origin",
                "path_prefix",
                "ports",
                "proxy_protocol",
                "request_log",
                "service_port",
                "target",
            ]
        );
        assert_eq!(keys(&tunnels[0]["agents"][0]), ["agent", "target"]);
        assert_eq!(keys(&tunnels[0]["health"]), ["failing", "state"]);
        assert_eq!(tunnels[0]["health"]["state"], "no agent online");
        let user = call("POST", "/api/v1/users".into(), r#"{"name":"carol"}"#).await;
        assert_eq!(
            keys(&user),
            ["created_at", "disabled", "id", "name", "password", "role"]
        );
        let token = call("POST", "/api/v1/tokens".into(), r#"{"name":"ci"}"#).await;
        assert_eq!(
            keys(&token),
            ["created_at", "expires_at", "id", "name", "scope", "token"]
        );
        let id = token["id"].as_str().unwrap();
        let revoked = call("DELETE", format!("/api/v1/tokens/{id}"), "").await;
        assert_eq!(revoked, serde_json::json!({ "revoked": id }));
        let certificates = call("GET", "/api/v1/certificates".into(), "").await;
        assert!(certificates.as_array().is_some());
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The tunnel form and the API read tunnels with one reader: an edit in the form changes
/// what the form shows (emptied fields too) and keeps what it does not show.
#[test]
fn the_tunnel_form_edits_through_the_api_reader() {
    let dir = std::env::temp_dir().join(format!("kakuremichi-form-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    smol::block_on(async {
        let fixture = fixture(&dir).await;
        let (second, _) = fixture
            .control
            .store
            .create_node(NodeKind::Agent, "second".into())
            .unwrap();
        let tunnel = fixture.path("{tunnel}");
        let agent = fixture.path("{agent}");
        let auth = format!("Bearer {}", fixture.admin_token);
        let api = |method: &'static str, body: String| {
            let request = request(
                method,
                &format!("/api/v1/tunnels/{tunnel}"),
                &[("authorization", &auth)],
                body,
            );
            let control = fixture.control.clone();
            async move {
                let (response, text) = send(&control, request).await;
                assert!(response.status().is_success(), "{text}");
                serde_json::from_str::<serde_json::Value>(&text).unwrap()
            }
        };
        let setup = r#"{"path_prefix":"/api","origin":{"bad_gateway_page":"<p>down</p>","host_header":"old"}}"#;
        api("PATCH", setup.into()).await;
        let (cookie, csrf) = &fixture.admin;
        let form = format!(
            "csrf={csrf}&kind=http&hostname=app.example.com&agent={agent}&target=127.0.0.1%3A3000\
             &replicas={}%3D127.0.0.1%3A3001&issuer=none&proxy_protocol=none&path_prefix=\
             &gateways=&host_header=new&connect_timeout=7&enabled=true",
            second.id
        );
        let headers = [
            ("cookie", cookie.as_str()),
            ("origin", ORIGIN),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        let (response, text) = send(
            &fixture.control,
            request("POST", &format!("/tunnels/{tunnel}/edit"), &headers, form),
        )
        .await;
        assert_eq!(response.status(), 303, "{text}");
        let saved = api("GET", String::new()).await;
        assert_eq!(
            saved["path_prefix"],
            serde_json::Value::Null,
            "an emptied prefix is removed"
        );
        assert_eq!(saved["origin"]["host_header"], "new");
        assert_eq!(saved["origin"]["connect_timeout_secs"], 7);
        assert_eq!(
            saved["origin"]["bad_gateway_page"], "<p>down</p>",
            "kept: the form does not show it"
        );
        assert_eq!(saved["agents"][1]["agent"], second.id.as_str());
        // A refused edit names its field in the form and changes nothing.
        let bad =
            format!("csrf={csrf}&kind=tcp&agent={agent}&target=127.0.0.1%3A3000&enabled=true");
        let (response, text) = send(
            &fixture.control,
            request("POST", &format!("/tunnels/{tunnel}/edit"), &headers, bad),
        )
        .await;
        assert_eq!(response.status(), 400);
        assert!(text.contains("kind cannot change"), "{text}");
        assert_eq!(api("GET", String::new()).await, saved);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
