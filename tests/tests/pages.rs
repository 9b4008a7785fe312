//! Control's pages over real HTTP, as a browser would use them: the first-run setup guarded
//! by the code in Control's log, login with throttling, the dashboard behind a session, and
//! every forged or foreign request refused with nothing written.

use kakuremichi_tests::browser::{csrf_of, log_in_admin, Browser};
use kakuremichi_tests::{curl, Cluster};
use std::path::{Path, PathBuf};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn setup_code(cluster: &Cluster) -> String {
    let log = cluster.control.log();
    let at = log
        .find("setup code ")
        .unwrap_or_else(|| panic!("no setup code in Control's log:\n{log}"));
    log[at + "setup code ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The setup page's form for the administrator `owner`, with the setup `code`.
fn setup_form(code: &str) -> [(&str, &str); 4] {
    [
        ("code", code),
        ("name", "owner"),
        ("password", "a long enough secret"),
        ("confirm", "a long enough secret"),
    ]
}

#[test]
fn setup_login_dashboard_and_logout_as_a_browser_does_them() {
    let cluster = Cluster::new("pages");
    let origin = cluster.control_url("");
    let origin = origin.as_str();
    let browser = Browser::new(&cluster, "owner");

    // First run: everything leads to the setup page.
    assert_eq!(browser.get("/").status, 303);
    assert_eq!(browser.header("location").as_deref(), Some("/setup"));
    let form = browser.get("/setup");
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains("Create the first administrator"),
        "{}",
        form.body
    );
    let code = setup_code(&cluster);
    let good = setup_form(&code);

    // Refused, each with nothing written: no Origin (a script, or another site's form with
    // Origin stripped), a foreign Origin, a wrong code, a short password, two passwords.
    assert_eq!(browser.post("/setup", &good, None).status, 403);
    assert_eq!(
        browser
            .post("/setup", &good, Some("https://evil.example"))
            .status,
        403
    );
    let mut wrong_code = good;
    wrong_code[0].1 = "setup_guess";
    let mut short = good;
    short[2].1 = "short";
    short[3].1 = "short";
    let mut differ = good;
    differ[3].1 = "another long secret";
    for (form, reason) in [
        (wrong_code, "not the setup code"),
        (short, "at least 10 characters"),
        (differ, "passwords differ"),
    ] {
        let answer = browser.post("/setup", &form, Some(origin));
        assert_eq!(answer.status, 400, "{reason}");
        assert!(answer.body.contains(reason), "{}", answer.body);
    }
    assert_eq!(browser.get("/").status, 303);
    assert_eq!(browser.header("location").as_deref(), Some("/setup"));

    // The real thing: an administrator and a session.
    assert_eq!(browser.post("/setup", &good, Some(origin)).status, 303);
    let cookie = browser.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.starts_with("km_session=kms_") && cookie.contains("HttpOnly; SameSite=Lax; Path=/"),
        "{cookie}"
    );
    let dashboard = browser.get("/");
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    // Status pages reload themselves with a script the page's policy admits by its hash.
    assert!(
        dashboard.body.contains("location.reload()"),
        "{}",
        dashboard.body
    );
    let policy = browser
        .header("content-security-policy")
        .unwrap_or_default();
    assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
    assert!(dashboard.body.contains("Dashboard") && dashboard.body.contains("owner"));
    // The setup page is gone, and its code with it.
    assert_eq!(browser.get("/setup").status, 303);
    assert_eq!(browser.post("/setup", &good, Some(origin)).status, 303);
    assert_eq!(browser.header("location").as_deref(), Some("/login"));

    // Logout needs the session's form token.
    let csrf = csrf_of(&dashboard.body);
    assert_eq!(
        browser
            .post("/logout", &[("csrf", "forged")], Some(origin))
            .status,
        403
    );
    assert_eq!(
        browser.get("/").status,
        200,
        "a forged logout changed nothing"
    );
    assert_eq!(
        browser
            .post("/logout", &[("csrf", csrf.as_str())], Some(origin))
            .status,
        303
    );
    assert_eq!(browser.get("/").status, 303);
    assert_eq!(browser.header("location").as_deref(), Some("/login"));

    // A member added from the shell logs in.
    let data = cluster.dir.join("control-data");
    let output = std::process::Command::new(control_binary())
        .args(["--data-dir", path_str(&data), "user", "add", "member1"])
        .output()
        .expect("user add runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let secret = printed
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("a generated password is printed once")
        .to_string();
    let member = Browser::new(&cluster, "member");
    let login = [("name", "member1"), ("password", secret.as_str())];
    assert_eq!(member.post("/login", &login, Some(origin)).status, 303);
    let page = member.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("member1 · member"), "{}", page.body);
    let tunnels = member.get("/tunnels?q=none");
    assert_eq!(tunnels.status, 200);
    assert!(
        tunnels.body.contains("No tunnel to show"),
        "{}",
        tunnels.body
    );
    // Without a session every page leads to the login.
    let stranger = Browser::new(&cluster, "stranger");
    for path in ["/", "/tunnels"] {
        assert_eq!(stranger.get(path).status, 303, "{path}");
        assert_eq!(stranger.header("location").as_deref(), Some("/login"));
    }
}

fn control_binary() -> PathBuf {
    // The test executable lives in target/<profile>/deps/; the binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("kakuremichi-control")
}

#[test]
fn failed_logins_are_throttled_with_a_clear_wait() {
    let cluster = Cluster::new("throttle");
    let origin = cluster.control_url("");
    let data = cluster.dir.join("control-data");
    let mut add = std::process::Command::new(control_binary())
        .args([
            "--data-dir",
            path_str(&data),
            "user",
            "add",
            "--admin",
            "--password-stdin",
            "alice",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("user add runs");
    use std::io::Write;
    add.stdin
        .take()
        .unwrap()
        .write_all(b"alice's long password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let browser = Browser::new(&cluster, "guesser");
    let wrong = [("name", "alice"), ("password", "a wrong guess!")];
    for attempt in 0..5 {
        let answer = browser.post("/login", &wrong, Some(&origin));
        assert_eq!(answer.status, 401, "attempt {attempt}: {}", answer.body);
        assert!(answer.body.contains("Wrong name or password"));
    }
    // Now even the right password waits, and the page says for how long.
    let right = [("name", "alice"), ("password", "alice's long password")];
    let answer = browser.post("/login", &right, Some(&origin));
    assert_eq!(answer.status, 429, "{}", answer.body);
    let wait: u64 = browser
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait), "first wait {wait} s");
    assert!(
        answer.body.contains(&format!("Try again in {wait} s")),
        "{}",
        answer.body
    );
    std::thread::sleep(std::time::Duration::from_secs(wait + 1));
    assert_eq!(browser.post("/login", &right, Some(&origin)).status, 303);
    assert_eq!(browser.get("/").status, 200);
}

/// A browser logged in as a new administrator `root`.
fn tunnels(cluster: &Cluster) -> Vec<serde_json::Value> {
    let answer = cluster.api("GET", "/api/v1/tunnels", None);
    assert_eq!(answer.status, 200);
    answer.json().as_array().cloned().unwrap_or_default()
}

#[test]
fn an_admin_creates_disables_and_deletes_a_tunnel_in_the_pages() {
    let cluster = Cluster::new("tunnel-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    let agent = cluster.api("POST", "/api/v1/agents", Some(r#"{"name":"home-nas"}"#));
    let agent_id = agent.json()["id"].as_str().unwrap().to_string();
    cluster.add_user("root", true, "the admin's password");
    cluster.add_user("viewer", false, "the member's password");
    let admin = Browser::new(&cluster, "admin");
    let login = [("name", "root"), ("password", "the admin's password")];
    assert_eq!(admin.post("/login", &login, origin).status, 303);
    let form = admin.get("/tunnels/new");
    assert_eq!(form.status, 200);
    assert!(form.body.contains("home-nas (offline)"), "{}", form.body);
    let csrf = csrf_of(&form.body);
    let fields = [
        ("csrf", csrf.as_str()),
        ("hostname", "photos.example.com"),
        ("agent", agent_id.as_str()),
        ("target", "127.0.0.1:2342"),
        ("issuer", "internal"),
        ("enabled", "true"),
    ];

    // Bad input comes back with the field's error, and nothing is written.
    for (index, bad, reason) in [
        (1, "not a hostname!", "hostname"),
        (2, "agt_missing", "agent"),
        (3, "no port", "target"),
        (4, "lottery", "issuer"),
    ] {
        let mut wrong = fields;
        wrong[index].1 = bad;
        let answer = admin.post("/tunnels/new", &wrong, origin);
        assert_eq!(answer.status, 400, "{reason}: {}", answer.body);
        assert!(
            answer.body.contains("class=\"error\""),
            "{reason}: {}",
            answer.body
        );
    }
    let mut forged = fields;
    forged[0].1 = "forged";
    assert_eq!(admin.post("/tunnels/new", &forged, origin).status, 403);
    assert_eq!(admin.post("/tunnels/new", &fields, None).status, 403);
    assert!(tunnels(&cluster).is_empty(), "refused forms wrote nothing");

    // A member cannot, even with a valid token of their own.
    let member = Browser::new(&cluster, "member");
    let member_login = [("name", "viewer"), ("password", "the member's password")];
    assert_eq!(member.post("/login", &member_login, origin).status, 303);
    let member_csrf = csrf_of(&member.get("/tunnels").body);
    let mut as_member = fields;
    as_member[0].1 = member_csrf.as_str();
    let answer = member.post("/tunnels/new", &as_member, origin);
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(tunnels(&cluster).is_empty());

    // The real thing, then disable, then delete.
    assert_eq!(admin.post("/tunnels/new", &fields, origin).status, 303);
    let made = tunnels(&cluster);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["hostname"], "photos.example.com");
    assert_eq!(made[0]["enabled"], true);
    let id = made[0]["id"].as_str().unwrap().to_string();
    let list = admin.get("/tunnels");
    assert!(list.body.contains("photos.example.com"), "{}", list.body);
    let twice = admin.post(
        "/tunnels/new",
        &[
            fields[0],
            ("hostname", "photos.example.com"),
            fields[2],
            fields[3],
            fields[4],
        ],
        origin,
    );
    assert_eq!(twice.status, 400, "a taken hostname: {}", twice.body);
    assert!(twice.body.contains("class=\"error\""));
    // Edit: the form comes filled in; a bad target is refused, a good one saved.
    let edit = admin.get(&format!("/tunnels/{id}/edit"));
    assert_eq!(edit.status, 200);
    assert!(
        edit.body.contains("value=\"127.0.0.1:2342\""),
        "{}",
        edit.body
    );
    let mut changed = fields;
    changed[3].1 = "no port";
    let path = format!("/tunnels/{id}/edit");
    assert_eq!(admin.post(&path, &changed, origin).status, 400);
    assert_eq!(tunnels(&cluster)[0]["target"], "127.0.0.1:2342");
    changed[3].1 = "app:3000";
    assert_eq!(admin.post(&path, &changed, origin).status, 303);
    assert_eq!(tunnels(&cluster)[0]["target"], "app:3000");
    let toggle = [("csrf", csrf.as_str()), ("enabled", "false")];
    assert_eq!(
        admin
            .post(&format!("/tunnels/{id}/enabled"), &toggle, origin)
            .status,
        303
    );
    assert_eq!(tunnels(&cluster)[0]["enabled"], false);
    let confirm = admin.get(&format!("/tunnels/{id}/delete"));
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Delete photos.example.com?"));
    assert_eq!(
        admin
            .post(
                &format!("/tunnels/{id}/delete"),
                &[("csrf", csrf.as_str())],
                origin
            )
            .status,
        303
    );
    assert!(tunnels(&cluster).is_empty());
    assert_eq!(admin.get(&format!("/tunnels/{id}/delete")).status, 404);
}

#[test]
fn an_agent_is_enrolled_renamed_disabled_rekeyed_and_deleted_in_the_pages() {
    let cluster = Cluster::new("enrol-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    let admin = log_in_admin(&cluster);
    let csrf = csrf_of(&admin.get("/agents/new").body);
    let bad = admin.post(
        "/agents/new",
        &[("csrf", csrf.as_str()), ("name", "")],
        origin,
    );
    assert_eq!(bad.status, 400);
    let answer = admin.post(
        "/agents/new",
        &[("csrf", csrf.as_str()), ("name", "garage-pi")],
        origin,
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(admin.header("cache-control").as_deref(), Some("no-store"));
    let key = answer.body[answer.body.find("kmk_").expect("the API key is shown")..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .next()
        .unwrap()
        .to_string();
    assert!(
        answer.body.contains(&format!("API_KEY={key}")),
        "the snippets carry the key"
    );
    let agents = cluster.api("GET", "/api/v1/agents", None).json();
    assert_eq!(agents.as_array().map(Vec::len), Some(1), "{agents}");
    assert_eq!(agents[0]["name"], "garage-pi");
    // The list never shows the key again.
    let list = admin.get("/agents");
    assert!(list.body.contains("garage-pi") && !list.body.contains(&key));

    let id = agents[0]["id"].as_str().unwrap().to_string();
    let page = admin.get(&format!("/agents/{id}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Rotate API key") && !page.body.contains(&key));
    let post = |action: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        admin.post(&format!("/agents/{id}/{action}"), &all, origin)
    };
    let agent = || {
        cluster
            .api("GET", &format!("/api/v1/agents/{id}"), None)
            .json()
    };

    // Rename: a bad name comes back with its error and changes nothing.
    let bad = post("name", &[("name", " ")]);
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("aria-invalid"), "{}", bad.body);
    assert_eq!(agent()["name"], "garage-pi");
    assert_eq!(post("name", &[("name", "shed-pi")]).status, 303);
    assert_eq!(agent()["name"], "shed-pi");

    // Disable; a forged token or a member cannot enable it again.
    assert_eq!(post("enabled", &[("enabled", "false")]).status, 303);
    assert_eq!(agent()["enabled"], false);
    assert!(admin
        .get(&format!("/agents/{id}"))
        .body
        .contains("serves nothing"));
    let forged = [("csrf", "forged"), ("enabled", "true")];
    let path = format!("/agents/{id}/enabled");
    assert_eq!(admin.post(&path, &forged, origin).status, 403);
    cluster.add_user("mia", false, "a member's password");
    let member = Browser::new(&cluster, "mia");
    let login = [("name", "mia"), ("password", "a member's password")];
    assert_eq!(member.post("/login", &login, origin).status, 303);
    let member_csrf = csrf_of(&member.get("/").body);
    let by_member = [("csrf", member_csrf.as_str()), ("enabled", "true")];
    assert_eq!(member.post(&path, &by_member, origin).status, 403);
    assert_eq!(member.get(&format!("/agents/{id}/delete")).status, 403);
    assert_eq!(agent()["enabled"], false);
    assert_eq!(post("enabled", &[("enabled", "true")]).status, 303);
    assert_eq!(agent()["enabled"], true);

    // A new key, shown once: the old one is refused from now on.
    assert_eq!(admin.get(&format!("/agents/{id}/rotate-key")).status, 200);
    let rotated = post("rotate-key", &[]);
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(admin.header("cache-control").as_deref(), Some("no-store"));
    let new_key = between(&rotated.body, "<pre id=\"api-key\">", "<").to_string();
    assert!(new_key.starts_with("kmk_") && new_key != key);
    let connect = |key: &str| {
        let header = format!("Authorization: Bearer {key}");
        curl(&["-H", &header, &cluster.control_url("/ws/agent")]).status
    };
    assert_eq!(connect(&key), 401);
    assert_eq!(connect(&new_key), 400, "accepted; not a WebSocket upgrade");

    // Delete: refused while it carries a tunnel, naming it; then done.
    let body = format!(r#"{{"hostname":"shed.localhost","agent":"{id}","target":"127.0.0.1:9"}}"#);
    let tunnel = cluster.api("POST", "/api/v1/tunnels", Some(&body)).json();
    let refused = post("delete", &[]);
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("shed.localhost"), "{}", refused.body);
    let tunnel_path = format!("/api/v1/tunnels/{}", tunnel["id"].as_str().unwrap());
    assert_eq!(cluster.api("DELETE", &tunnel_path, None).status, 200);
    assert_eq!(post("delete", &[]).status, 303);
    assert_eq!(admin.get(&format!("/agents/{id}")).status, 404);
    assert_eq!(connect(&new_key), 401);
    let agents = cluster.api("GET", "/api/v1/agents", None).json();
    assert_eq!(agents.as_array().map(Vec::len), Some(0), "{agents}");
}

#[test]
fn users_are_added_disabled_reset_and_deleted_and_old_sessions_end() {
    let cluster = Cluster::new("user-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    let admin = log_in_admin(&cluster);
    let page = admin.get("/users");
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);

    // Bad names come back with the error; nothing is added.
    for bad in ["", "has space", "root"] {
        let answer = admin.post(
            "/users/new",
            &[("csrf", csrf.as_str()), ("name", bad), ("role", "member")],
            origin,
        );
        assert_eq!(answer.status, 400, "{bad:?}: {}", answer.body);
    }
    let added = admin.post(
        "/users/new",
        &[("csrf", csrf.as_str()), ("name", "bob"), ("role", "member")],
        origin,
    );
    assert_eq!(added.status, 201, "{}", added.body);
    let password_of = |body: &str| -> String {
        let at = body
            .find("<pre id=\"password\">")
            .expect("the password is shown")
            + 19;
        body[at..].split('<').next().unwrap().to_string()
    };
    let bob_password = password_of(&added.body);
    let bob = Browser::new(&cluster, "bob");
    let bob_login = [("name", "bob"), ("password", bob_password.as_str())];
    assert_eq!(bob.post("/login", &bob_login, origin).status, 303);
    assert_eq!(bob.get("/").status, 200);
    // A member calling admin actions is refused, with their own valid token.
    assert_eq!(bob.get("/users").status, 403);
    let bob_csrf = csrf_of(&bob.get("/").body);
    let answer = bob.post(
        "/users/new",
        &[
            ("csrf", bob_csrf.as_str()),
            ("name", "mallory"),
            ("role", "admin"),
        ],
        origin,
    );
    assert_eq!(answer.status, 403);
    assert!(!admin.get("/users").body.contains("mallory"));

    // Disabling ends bob's session at once; his password no longer logs in.
    let users = admin.get("/users").body;
    let at = users.find("/users/usr_").expect("a user action");
    let bob_id = users[at + 7..].split('/').next().unwrap().to_string();
    let disable = [("csrf", csrf.as_str()), ("disabled", "true")];
    assert_eq!(
        admin
            .post(&format!("/users/{bob_id}/disabled"), &disable, origin)
            .status,
        303
    );
    assert_eq!(
        bob.get("/").status,
        303,
        "a disabled user's old session is refused"
    );
    assert_eq!(bob.post("/login", &bob_login, origin).status, 401);
    // Enabled again with a reset password: the old one is gone, the new one works.
    let enable = [("csrf", csrf.as_str()), ("disabled", "false")];
    admin.post(&format!("/users/{bob_id}/disabled"), &enable, origin);
    let reset = admin.post(
        &format!("/users/{bob_id}/password"),
        &[("csrf", csrf.as_str())],
        origin,
    );
    assert_eq!(reset.status, 200);
    let new_password = password_of(&reset.body);
    assert_ne!(new_password, bob_password);
    let new_login = [("name", "bob"), ("password", new_password.as_str())];
    assert_eq!(bob.post("/login", &new_login, origin).status, 303);
    assert_eq!(bob.get("/").status, 200);
    // Another reset ends the session bob has now: whoever knew the old password is out.
    let again = admin.post(
        &format!("/users/{bob_id}/password"),
        &[("csrf", csrf.as_str())],
        origin,
    );
    assert_eq!(again.status, 200);
    assert_eq!(
        bob.get("/").status,
        303,
        "a reset left the user's session alive"
    );
    let newest = password_of(&again.body);
    let newest_login = [("name", "bob"), ("password", newest.as_str())];
    assert_eq!(bob.post("/login", &newest_login, origin).status, 303);
    // Deleted: the session ends with the account.
    assert_eq!(
        admin
            .post(
                &format!("/users/{bob_id}/delete"),
                &[("csrf", csrf.as_str())],
                origin
            )
            .status,
        303
    );
    assert_eq!(bob.get("/").status, 303);
    assert!(!admin.get("/users").body.contains(">bob<"));
}

#[test]
fn changing_your_password_ends_your_other_sessions_and_sessions_can_be_ended() {
    let cluster = Cluster::new("account-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    cluster.add_user("carol", false, "carol's first password");
    let laptop = Browser::new(&cluster, "laptop");
    let phone = Browser::new(&cluster, "phone");
    let tablet = Browser::new(&cluster, "tablet");
    let login = [("name", "carol"), ("password", "carol's first password")];
    for browser in [&laptop, &phone, &tablet] {
        assert_eq!(browser.post("/login", &login, origin).status, 303);
    }
    let account = laptop.get("/account");
    assert_eq!(account.status, 200);
    assert_eq!(
        account.body.matches("/end\"").count(),
        2,
        "two other sessions listed"
    );
    let csrf = csrf_of(&account.body);

    // End the phone's session from the laptop.
    let at = account.body.find("/account/sessions/").unwrap();
    let first_other = account.body[at..].split('"').next().unwrap().to_string();
    assert_eq!(
        laptop
            .post(&first_other, &[("csrf", csrf.as_str())], origin)
            .status,
        303
    );
    let still = [&phone, &tablet]
        .iter()
        .filter(|b| b.get("/").status == 200)
        .count();
    assert_eq!(still, 1, "exactly the ended session is gone");

    // A wrong current password or a short new one changes nothing.
    let change = |current: &str, new: &str| {
        laptop.post(
            "/account/password",
            &[
                ("csrf", csrf.as_str()),
                ("current", current),
                ("password", new),
                ("confirm", new),
            ],
            origin,
        )
    };
    assert_eq!(
        change("a wrong password", "carol's second password").status,
        400
    );
    assert_eq!(change("carol's first password", "short").status, 400);
    let fresh = Browser::new(&cluster, "fresh");
    assert_eq!(fresh.post("/login", &login, origin).status, 303);
    // The real change: every other session ends, this one stays.
    let answer = change("carol's first password", "carol's second password");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("Password changed"));
    assert_eq!(laptop.get("/").status, 200);
    for browser in [&phone, &tablet, &fresh] {
        assert_eq!(browser.get("/").status, 303);
    }
    assert_eq!(fresh.post("/login", &login, origin).status, 401);
    let new_login = [("name", "carol"), ("password", "carol's second password")];
    assert_eq!(fresh.post("/login", &new_login, origin).status, 303);
}

#[test]
fn api_tokens_and_users_from_the_pages_and_the_api() {
    let cluster = Cluster::new("token-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    let admin = log_in_admin(&cluster);
    let csrf = csrf_of(&admin.get("/tokens").body);
    let bad = admin.post(
        "/tokens/new",
        &[("csrf", csrf.as_str()), ("name", "")],
        origin,
    );
    assert_eq!(bad.status, 400);
    let made = admin.post(
        "/tokens/new",
        &[
            ("csrf", csrf.as_str()),
            ("name", "backup script"),
            ("expires_days", "30"),
        ],
        origin,
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let token = made.body[made.body.find("kmt_").expect("the token is shown once")..]
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let with = |token: &str| {
        let auth = format!("Authorization: Bearer {token}");
        kakuremichi_tests::curl(&["-H", &auth, &cluster.control_url("/api/v1/tokens")])
    };
    let listed = with(&token);
    assert_eq!(listed.status, 200, "the new token works");
    let record = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "backup script")
        .cloned()
        .expect("the token is listed by name");
    assert!(record["expires_at"].as_u64().is_some() && !listed.body.contains(&token));
    let id = record["id"].as_str().unwrap().to_string();
    assert_eq!(
        admin
            .post(
                &format!("/tokens/{id}/revoke"),
                &[("csrf", csrf.as_str())],
                origin
            )
            .status,
        303
    );
    assert_eq!(with(&token).status, 401, "a revoked token stops working");

    // The API does the same, and expiry holds.
    let expired = cluster.api(
        "POST",
        "/api/v1/tokens",
        Some(r#"{"name":"gone","expires_days":0}"#),
    );
    assert_eq!(expired.status, 201);
    assert_eq!(with(expired.json()["token"].as_str().unwrap()).status, 401);
    let user = cluster.api("POST", "/api/v1/users", Some(r#"{"name":"dave"}"#));
    assert_eq!(user.status, 201, "{}", user.body);
    let dave_password = user.json()["password"].as_str().unwrap().to_string();
    let dave_id = user.json()["id"].as_str().unwrap().to_string();
    let dave = Browser::new(&cluster, "dave");
    let dave_login = [("name", "dave"), ("password", dave_password.as_str())];
    assert_eq!(dave.post("/login", &dave_login, origin).status, 303);
    let patch = cluster.api(
        "PATCH",
        &format!("/api/v1/users/{dave_id}"),
        Some(r#"{"disabled":true}"#),
    );
    assert_eq!(patch.status, 200);
    assert_eq!(
        dave.get("/").status,
        303,
        "disabled through the API: session ended"
    );
    let last_admin = cluster.api("GET", "/api/v1/users", None).json();
    let root_id = last_admin
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "root")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = cluster.api("DELETE", &format!("/api/v1/users/{root_id}"), None);
    assert_eq!(
        refused.status, 409,
        "the last administrator stays: {}",
        refused.body
    );
    assert_eq!(
        cluster
            .api("DELETE", &format!("/api/v1/users/{dave_id}"), None)
            .status,
        200
    );
}

#[test]
fn every_operation_in_the_openapi_document_reaches_a_real_route() {
    let cluster = Cluster::new("openapi");
    let answer = kakuremichi_tests::curl(&[&cluster.control_url("/api/v1/openapi.json")]);
    assert_eq!(answer.status, 200, "the document is public");
    let document = answer.json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 28, "{:?}", paths.keys());
    let mut operations = 0;
    for (path, item) in paths {
        for method in ["get", "post", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let concrete = path
                .replace("{id}", "nonexistent")
                .replace("{token_id}", "nonexistent")
                .replace("{hostname}", "nonexistent.example");
            // An empty object: creation fails on a missing field, which proves the route.
            let body = (method == "post" || method == "patch").then_some("{}");
            let answer = cluster.api(&method.to_uppercase(), &format!("/api/v1{concrete}"), body);
            assert!(
                answer.status != 0
                    && !answer.body.contains("no endpoint")
                    && !answer.body.contains("not allowed on this resource"),
                "{method} {path} did not reach a route: {} {}",
                answer.status,
                answer.body
            );
        }
    }
    assert_eq!(operations, 42);
}

/// The code an authenticator app shows now for a base32 `secret`.
fn totp_now(secret: &str) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut key, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in secret.bytes() {
        let value = alphabet.iter().position(|&a| a == c).expect("base32") as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            key.push((buffer >> bits) as u8);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &key, now)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let at = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} in {text}"))
        + start.len();
    text[at..].split(end).next().unwrap()
}

#[test]
fn two_factor_login_with_an_app_code_or_a_recovery_code() {
    let cluster = Cluster::new("totp");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    cluster.add_user("eve", false, "eve's long password");
    let login = [("name", "eve"), ("password", "eve's long password")];
    let owner = Browser::new(&cluster, "owner");
    assert_eq!(owner.post("/login", &login, origin).status, 303);
    let csrf = csrf_of(&owner.get("/account").body);
    let start = owner.post("/account/totp/start", &[("csrf", csrf.as_str())], origin);
    assert_eq!(start.status, 303);
    let account = owner.get("/account").body;
    assert!(
        account.contains("<svg"),
        "the QR code is drawn on the server"
    );
    let secret = between(&account, "id=\"totp-secret\">", "<").to_string();
    let confirm = |code: &str| {
        owner.post(
            "/account/totp/confirm",
            &[("csrf", csrf.as_str()), ("code", code)],
            origin,
        )
    };
    assert_eq!(
        confirm("000000").status,
        400,
        "a wrong code turns nothing on"
    );
    let done = confirm(&totp_now(&secret));
    assert_eq!(done.status, 200, "{}", done.body);
    let recovery: Vec<String> = between(&done.body, "<pre id=\"recovery-codes\">", "<")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(recovery.len(), 8);

    // A password alone no longer logs in: the second step is due.
    let laptop = Browser::new(&cluster, "laptop");
    assert_eq!(laptop.post("/login", &login, origin).status, 303);
    assert_eq!(laptop.header("location").as_deref(), Some("/login/code"));
    assert_eq!(laptop.get("/").status, 303, "not logged in before the code");
    let wrong = laptop.post("/login/code", &[("code", "000000")], origin);
    assert_eq!(wrong.status, 401);
    let code = totp_now(&secret);
    assert_eq!(
        laptop
            .post("/login/code", &[("code", code.as_str())], origin)
            .status,
        303
    );
    assert_eq!(laptop.get("/").status, 200);
    // The same app code, seen over a shoulder, does not log in a second time (RFC 6238 §5.2).
    let replay = Browser::new(&cluster, "replay");
    assert_eq!(replay.post("/login", &login, origin).status, 303);
    let replayed = replay.post("/login/code", &[("code", code.as_str())], origin);
    assert_eq!(replayed.status, 401, "{}", replayed.body);

    // A recovery code works once.
    let phone = Browser::new(&cluster, "phone");
    assert_eq!(phone.post("/login", &login, origin).status, 303);
    let first = [("code", recovery[0].as_str())];
    assert_eq!(phone.post("/login/code", &first, origin).status, 303);
    assert_eq!(phone.get("/").status, 200);
    let again = Browser::new(&cluster, "again");
    assert_eq!(again.post("/login", &login, origin).status, 303);
    assert_eq!(again.post("/login/code", &first, origin).status, 401);
    assert!(phone.get("/account").body.contains("7 recovery codes left"));

    // Off again with the password; then a password alone logs in.
    let off = owner.post(
        "/account/totp/off",
        &[("csrf", csrf.as_str()), ("current", "eve's long password")],
        origin,
    );
    assert_eq!(off.status, 200, "{}", off.body);
    let plain = Browser::new(&cluster, "plain");
    assert_eq!(plain.post("/login", &login, origin).status, 303);
    assert_eq!(plain.header("location").as_deref(), Some("/"));
}

#[test]
fn certificates_show_why_they_fail_and_retry_now() {
    // No ACME directory configured: an `acme` tunnel's certificate fails, with the reason.
    let cluster = Cluster::new("cert-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    let agent = cluster.api("POST", "/api/v1/agents", Some(r#"{"name":"a"}"#));
    let agent_id = agent.json()["id"].as_str().unwrap().to_string();
    let tunnel = format!(
        r#"{{"hostname":"shop.example.com","agent":"{agent_id}","target":"127.0.0.1:1","issuer":"acme"}}"#
    );
    assert_eq!(
        cluster.api("POST", "/api/v1/tunnels", Some(&tunnel)).status,
        201
    );
    let admin = log_in_admin(&cluster);
    let failing = kakuremichi_tests::wait_for(std::time::Duration::from_secs(10), || {
        let page = admin.get("/certificates");
        page.body.contains("failing").then_some(page.body)
    })
    .expect("the certificate shows as failing");
    assert!(failing.contains("next attempt in"), "{failing}");
    let csrf = csrf_of(&failing);
    let retry = admin.post(
        "/certificates/shop.example.com/retry",
        &[("csrf", csrf.as_str())],
        origin,
    );
    assert_eq!(retry.status, 303);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let certs = cluster.api("GET", "/api/v1/certificates", None).json();
    assert!(
        certs[0]["next_attempt"].as_u64().unwrap() <= now + 2,
        "retried now: {certs}"
    );
    // A manual upload that is not a certificate comes back with the reason; nothing stored.
    let bad = admin.post(
        "/certificates/new",
        &[
            ("csrf", csrf.as_str()),
            ("hostname", "manual.example.com"),
            ("certificate_pem", "not a certificate"),
            ("key_pem", "not a key"),
        ],
        origin,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(!cluster
        .api("GET", "/api/v1/certificates", None)
        .body
        .contains("manual.example.com"));
}

#[test]
fn an_admin_protects_a_tunnel_in_the_pages() {
    let cluster = Cluster::new("access-pages");
    let origin = cluster.control_url("");
    let origin = Some(origin.as_str());
    let agent = cluster
        .api("POST", "/api/v1/agents", Some(r#"{"name":"pi"}"#))
        .json();
    let body = format!(
        r#"{{"hostname":"wiki.localhost","agent":"{}","target":"127.0.0.1:9","issuer":"none"}}"#,
        agent["id"].as_str().unwrap()
    );
    let tunnel = cluster.api("POST", "/api/v1/tunnels", Some(&body)).json();
    let id = tunnel["id"].as_str().unwrap().to_string();
    let admin = log_in_admin(&cluster);
    assert!(admin.get("/tunnels").body.contains("public"));
    let page = admin.get(&format!("/tunnels/{id}/access"));
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    let path = format!("/tunnels/{id}/access");
    let access = || {
        cluster
            .api("GET", &format!("/api/v1/tunnels/{id}"), None)
            .json()["access"]
            .clone()
    };
    let before = access();

    // A bad network comes back with its error; nothing is saved.
    let bad = admin.post(
        &path,
        &[
            ("csrf", csrf.as_str()),
            ("users", "alice"),
            ("allow_ips", "10.0.0.0/99"),
        ],
        origin,
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("aria-invalid") && bad.body.contains("alice"),
        "{}",
        bad.body
    );
    assert_eq!(access(), before);

    let saved = admin.post(
        &path,
        &[
            ("csrf", csrf.as_str()),
            ("users", "alice, bob"),
            ("role_admin", "true"),
            ("password", "pin 1234"),
            ("allow_ips", "10.0.0.0/8\n192.0.2.7"),
            ("bypass", "/health"),
            ("session_hours", "8"),
        ],
        origin,
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    let rules = access();
    assert_eq!(rules["users"], serde_json::json!(["alice", "bob"]));
    assert_eq!(rules["roles"], serde_json::json!(["admin"]));
    assert_eq!(rules["password"], true);
    assert_eq!(
        rules["allow_ips"],
        serde_json::json!(["10.0.0.0/8", "192.0.2.7/32"])
    );
    assert_eq!(rules["session_hours"], 8);
    assert!(admin
        .get("/tunnels")
        .body
        .contains("alice, bob, every admin · password · IP rules"));

    // A service token, shown once; revoked from the page.
    let made = admin.post(
        &format!("{path}/tokens"),
        &[("csrf", csrf.as_str()), ("name", "ci")],
        origin,
    );
    assert_eq!(made.status, 201);
    assert_eq!(admin.header("cache-control").as_deref(), Some("no-store"));
    let token = between(&made.body, "<pre id=\"service-token\">", "<").to_string();
    assert!(token.starts_with("kst_"));
    assert!(!admin.get(&path).body.contains(&token));
    let token_id = access()["service_tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke = format!("{path}/tokens/{token_id}/revoke");
    assert_eq!(
        admin
            .post(&revoke, &[("csrf", csrf.as_str())], origin)
            .status,
        303
    );
    assert_eq!(access()["service_tokens"], serde_json::json!([]));

    // Removing the password keeps the rest; a member cannot change anything.
    let remove = [
        ("csrf", csrf.as_str()),
        ("users", "alice, bob"),
        ("role_admin", "true"),
        ("remove_password", "true"),
    ];
    assert_eq!(admin.post(&path, &remove, origin).status, 303);
    assert_eq!(access()["password"], false);
    cluster.add_user("mia", false, "a member's password");
    let member = Browser::new(&cluster, "mia");
    let login = [("name", "mia"), ("password", "a member's password")];
    assert_eq!(member.post("/login", &login, origin).status, 303);
    let member_csrf = csrf_of(&member.get("/").body);
    assert_eq!(member.get(&path).status, 403);
    let clear = [("csrf", member_csrf.as_str()), ("users", "")];
    assert_eq!(member.post(&path, &clear, origin).status, 403);
    assert_eq!(access()["users"], serde_json::json!(["alice", "bob"]));
    assert_eq!(admin.get("/access/rotate-keys").status, 200);
    assert_eq!(
        admin
            .post("/access/rotate-keys", &[("csrf", csrf.as_str())], origin)
            .status,
        303
    );
}

#[test]
fn nodes_are_healthy_right_after_setup_and_after_a_user_added_from_the_shell() {
    let mut cluster =
        Cluster::with_control_args("setup-health", &["--heartbeat-interval-ms", "300"]);
    cluster.add_gateway();
    let gateway = cluster.gateways[0].id.clone();
    let healthy = |cluster: &Cluster| {
        let node = cluster
            .api("GET", &format!("/api/v1/gateways/{gateway}"), None)
            .json();
        (node["health"] == "healthy").then_some(()).ok_or(node)
    };
    let settle = |cluster: &Cluster, limit: std::time::Duration, after: &str| {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if healthy(cluster).is_ok() {
                return started.elapsed();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "{after}: not healthy within {limit:?}: {}",
            healthy(cluster).unwrap_err()
        );
    };
    settle(&cluster, std::time::Duration::from_secs(10), "enrolled");
    // The first administrator, made on the setup page.
    let origin = cluster.control_url("");
    let browser = Browser::new(&cluster, "owner");
    let code = setup_code(&cluster);
    let form = setup_form(&code);
    assert_eq!(browser.post("/setup", &form, Some(&origin)).status, 303);
    let took = settle(&cluster, std::time::Duration::from_secs(2), "setup");
    println!("healthy {took:?} after setup");
    // A user added by the CLI, another process: no nudge reaches the sessions, the next
    // heartbeat's revision check does.
    cluster.add_user("member", false, "a member's password");
    let took = settle(&cluster, std::time::Duration::from_secs(3), "user add");
    println!("healthy {took:?} after `user add` from the shell");
}
