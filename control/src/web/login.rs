//! The way in: first-run setup, login with its second factor, logout, and the login a
//! gateway sends a browser to for a tunnel open to Control users (`/access`).

use super::{failure, html, query, redirect, secure, set_cookie, text, Form, Visitor};
use crate::auth::sessions::{self, SessionRecord};
use crate::auth::{self, password, Role, UserRecord};
use crate::error::Error;
use crate::pages;
use crate::routes::Call;
use crate::store::SecondFactor;
use hyper::header::{HeaderValue, COOKIE};
use hyper::Response;
use kakuremichi_proto::access::local_path;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::throttle::Attempt;
use kakuremichi_rt::http::Body;

/// The address a request came from, as Control trusts it (behind its proxies and gateways).
fn client_address(call: &Call) -> String {
    call.control
        .client_address(call.request.headers(), call.peer.ip())
        .to_string()
}

pub fn setup_page(call: Call) -> Response<Body> {
    match call.control.setup_open() {
        true => html(200, pages::setup::page(&Default::default())),
        false => redirect("/"),
    }
}

pub fn setup(call: Call, form: Form) -> Response<Body> {
    let control = &call.control;
    if !control.setup_open() {
        return redirect("/login");
    }
    let value = |name: &str| text(&form, name);
    let name = value("name").trim();
    let mut shown = pages::setup::SetupForm {
        name,
        ..Default::default()
    };
    if !control.setup_code_matches(value("code")) {
        shown.code_error = Some("This is not the setup code in Control's log.");
        return html(400, pages::setup::page(&shown));
    }
    let name_check = auth::check_user_name(name);
    if let Err(message) = &name_check {
        shown.name_error = Some(message);
        return html(400, pages::setup::page(&shown));
    }
    let policy = password::check_policy(value("password"));
    if let Err(message) = &policy {
        shown.password_error = Some(message);
        return html(400, pages::setup::page(&shown));
    }
    if value("password") != value("confirm") {
        shown.password_error = Some("The two passwords differ.");
        return html(400, pages::setup::page(&shown));
    }
    let created = password::hash(value("password"))
        .map_err(Error::Store)
        .and_then(|hash| control.store.create_user(name, Role::Admin, hash, true));
    match created {
        Ok(user) => {
            control.close_setup();
            log::info!("administrator {} created on the setup page", user.name);
            start_session(&call, &user, "/")
        }
        Err(Error::Conflict { .. }) => {
            // Someone finished setup first (or `user add --admin` ran): log in instead.
            control.close_setup();
            redirect("/login")
        }
        Err(e) => failure(&e),
    }
}

pub fn login_page(call: Call, visitor: Option<Visitor>) -> Response<Body> {
    let next = call.query("next");
    match visitor {
        Some(_) => redirect(&local_path(next.as_deref())),
        None => html(
            200,
            pages::login::page(&pages::login::LoginForm {
                next: next.as_deref().unwrap_or_default(),
                ..Default::default()
            }),
        ),
    }
}

/// The throttle's address key for a client address as Control read it.
fn throttle_address(address: &str) -> String {
    match address.parse() {
        Ok(ip) => kakuremichi_proto::throttle::address_key(ip),
        Err(_) => format!("ip:{address}"),
    }
}

pub fn login(call: Call, form: Form) -> Response<Body> {
    let control = &call.control;
    let name = text(&form, "name").trim();
    let secret = text(&form, "password");
    let next = text(&form, "next");
    let account_key = format!("user:{name}");
    let address_key = throttle_address(&client_address(&call));
    let attempt = Attempt {
        address: &address_key,
        account: &account_key,
    };
    let now = auth::unix_now();
    if let Err(wait) = control.throttle().begin(&attempt, now) {
        let message = format!("Too many failed logins. Try again in {wait} s.");
        let mut response = html(
            429,
            pages::login::page(&pages::login::LoginForm {
                name,
                error: Some(&message),
                next,
            }),
        );
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, value);
        }
        return response;
    }
    let user = match control.store.user_by_name(name) {
        Ok(user) => user,
        Err(e) => return failure(&e),
    };
    let stored = user
        .as_ref()
        .map_or(password::decoy_hash(), |u| u.password_hash.as_str());
    let matches = password::verify(secret, stored);
    match user {
        Some(user) if matches && !user.disabled => {
            control.throttle().succeeded(&attempt);
            start_session(&call, &user, &local_path(Some(next)))
        }
        _ => html(
            401,
            pages::login::page(&pages::login::LoginForm {
                name,
                error: Some("Wrong name or password, or the account is disabled."),
                next,
            }),
        ),
    }
}

/// Log `user` in from where `call` came: a new session, its cookie, and on to `to` (by the
/// second-factor page when the user has one).
fn start_session(call: &Call, user: &UserRecord, to: &str) -> Response<Body> {
    let control = &call.control;
    let token = auth::new_secret("kms");
    let now = auth::unix_now();
    let header = |name| {
        call.request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>()
    };
    let session = SessionRecord {
        id: auth::new_id("ses"),
        user_id: user.id.clone(),
        created_at: now,
        last_seen: now,
        csrf: auth::new_secret("csrf"),
        address: client_address(call),
        user_agent: header(hyper::header::USER_AGENT),
        awaiting_code: user.totp_secret.is_some(),
        totp_enrolment: None,
    };
    let to = match (session.awaiting_code, to) {
        (false, to) => to.to_string(),
        (true, "/") => "/login/code".to_string(),
        (true, next) => format!("/login/code?{}", query(&[("next", next)])),
    };
    if let Err(e) = control.store.create_session(&token, &session) {
        return failure(&e);
    }
    let mut response = redirect(&to);
    set_cookie(
        &mut response,
        &sessions::set_cookie(
            &token,
            secure(control, &call.request),
            control.session_limits,
        ),
    );
    response
}

/// A session whose password step passed and whose second factor is due, with its token.
fn awaiting(call: &Call) -> Result<Option<(String, UserRecord)>, Error> {
    let control = &call.control;
    let Some(token) = sessions::token_from_cookies(call.request.headers().get(COOKIE)) else {
        return Ok(None);
    };
    Ok(control
        .store
        .session(token)?
        .filter(|(session, user)| {
            session.awaiting_code
                && !user.disabled
                && session.is_live(auth::unix_now(), control.session_limits)
        })
        .map(|(_, user)| (token.to_string(), user)))
}

pub fn code_page(call: Call) -> Response<Body> {
    match awaiting(&call) {
        Ok(Some(_)) => {
            let next = call.query("next").unwrap_or_default();
            html(200, pages::login::code_page(None, &next))
        }
        Ok(None) => redirect("/login"),
        Err(e) => failure(&e),
    }
}

pub fn second_factor(call: Call, form: Form) -> Response<Body> {
    let control = &call.control;
    let (token, user) = match awaiting(&call) {
        Ok(Some(found)) => found,
        Ok(None) => return redirect("/login"),
        Err(e) => return failure(&e),
    };
    let account_key = format!("user:{}", user.name);
    let address_key = throttle_address(&client_address(&call));
    let attempt = Attempt {
        address: &address_key,
        account: &account_key,
    };
    let now = auth::unix_now();
    let next = text(&form, "next");
    if let Err(wait) = control.throttle().begin(&attempt, now) {
        let message = format!("Too many wrong codes. Try again in {wait} s.");
        return html(429, pages::login::code_page(Some(&message), next));
    }
    let code = text(&form, "code");
    let spent = match user
        .totp_secret
        .as_deref()
        .and_then(|secret| auth::totp::verify(secret, code, now))
    {
        Some(step) => SecondFactor::Step(step),
        None => SecondFactor::Recovery(vec![
            auth::totp::recovery_hash(&user.id, code),
            auth::totp::legacy_recovery_hash(code),
        ]),
    };
    match control.store.spend_second_factor(&user.id, &spent) {
        Ok(true) => {}
        Ok(false) => {
            return html(
                401,
                pages::login::code_page(Some("That code is not right."), next),
            )
        }
        Err(e) => return failure(&e),
    }
    match control
        .store
        .update_session(&token, |s| s.awaiting_code = false)
    {
        Ok(()) => {
            control.throttle().succeeded(&attempt);
            redirect(&local_path(Some(next)))
        }
        Err(e) => failure(&e),
    }
}

/// Log out: the visitor's session (or all of theirs) ends; a browser whose session already
/// ended, or waits for its second factor, has its cookie cleared all the same.
pub fn logout(call: Call, form: Form, visitor: Option<Visitor>) -> Response<Body> {
    let control = &call.control;
    if let Some(visitor) = visitor {
        let token = sessions::token_from_cookies(call.request.headers().get(COOKIE)).unwrap_or("");
        // Everywhere: every Control session and every tunnel session of the user.
        let ended = match text(&form, "everywhere") == "true" {
            true => control.store.end_all_sessions(&visitor.user.id),
            false => control.store.delete_session(token),
        };
        if let Err(e) = ended {
            return failure(&e);
        }
    }
    let mut response = redirect("/login");
    set_cookie(
        &mut response,
        &sessions::clear_cookie(secure(control, &call.request)),
    );
    response
}

/// `/access?origin=https://app.example.com&return=/path`: a gateway sent a browser here to
/// log in to a tunnel open to Control users. With a session, and if the user may open the
/// tunnel, the browser goes back with a signed assertion; without one, it logs in first.
pub fn tunnel_login(call: Call, visitor: Option<Visitor>) -> Response<Body> {
    let control = &call.control;
    let origin = call.query("origin").unwrap_or_default();
    let return_to = local_path(call.query("return").as_deref());
    // The gateway's state for the browser that began the login, passed back as it is.
    let login_state = call
        .query("state")
        .filter(|s| s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_default();
    let state = match control.store.shared_state() {
        Ok(state) => state,
        Err(e) => return failure(&e),
    };
    let origin = url::Url::parse(&origin).ok();
    let scheme = origin.as_ref().map_or("", |o| o.scheme());
    let hostname = origin.as_ref().and_then(|o| o.host_str()).unwrap_or("");
    let authority = match origin.as_ref().and_then(|o| o.port()) {
        Some(port) => format!("{hostname}:{port}"),
        None => hostname.to_string(),
    };
    // Tunnels that split a hostname by path: the one serving the return path.
    let tunnel = state
        .tunnels
        .iter()
        .filter(|t| {
            t.spec
                .hostname
                .as_ref()
                .is_some_and(|h| h.as_str() == hostname)
                && t.spec.enabled
                && t.spec.access.has_user_login()
                && (scheme == "https"
                    || (scheme == "http" && t.spec.issuer == crate::model::Issuer::None))
                && t.spec.serves_path(&return_to)
        })
        .max_by_key(|t| t.spec.path_prefix.as_ref().map_or(0, String::len));
    let Some(tunnel) = tunnel else {
        return html(404, pages::access::no_tunnel(hostname));
    };
    if !returns_to_a_gateway(&state, tunnel, scheme, &authority) {
        return html(404, pages::access::no_tunnel(hostname));
    }
    let Some(visitor) = visitor else {
        let here = call
            .request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str());
        return redirect(&format!("/login?{}", query(&[("next", here)])));
    };
    if !tunnel.spec.access.admits_user(&visitor.user) {
        let who = (&visitor.user, visitor.session.csrf.as_str());
        return html(403, pages::access::not_allowed(who, hostname));
    }
    match state
        .keyring
        .assert(hostname, &visitor.user, &login_state, auth::unix_now())
    {
        Ok(assertion) => {
            let back = query(&[("assertion", &assertion), ("return", &return_to)]);
            redirect(&format!(
                "{scheme}://{authority}/.kakuremichi/callback?{back}"
            ))
        }
        Err(e) => failure(&e),
    }
}

/// Whether `scheme://authority` is a port where a gateway serving `tunnel` said browsers reach
/// it: an assertion goes back only there, never to another service on the tunnel's host.
/// Gateways too old to say are not held to it.
fn returns_to_a_gateway(
    state: &crate::model::State,
    tunnel: &crate::model::TunnelRecord,
    scheme: &str,
    authority: &str,
) -> bool {
    let default = if scheme == "https" { 443 } else { 80 };
    let port = match authority.parse::<hyper::http::uri::Authority>() {
        Ok(parsed) => parsed.port_u16().unwrap_or(default),
        Err(_) => return false,
    };
    let announced: Vec<u16> = state
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Gateway && !n.disabled && tunnel.spec.gateways.selects(n))
        .filter_map(|n| {
            if scheme == "https" {
                n.https_port
            } else {
                n.http_port
            }
        })
        .collect();
    announced.is_empty() || announced.contains(&port)
}
