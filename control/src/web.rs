//! The browser side of Control's listener: setup, login, logout and the pages behind a
//! session. Every state-changing request must come from Control's own pages: its `Origin`
//! (or `Referer`) names this host, and a logged-in form carries the session's CSRF token.

use crate::auth::sessions::{self, SessionRecord};
use crate::auth::{self, password, Role, UserRecord};
use crate::error::Error;
use crate::pages;
use crate::Control;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, COOKIE, HOST, LOCATION, ORIGIN, REFERER, SET_COOKIE};
use hyper::{Method, Request, Response};
use kakuremichi_rt::http::{respond, Body};
use maud::Markup;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest form body read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Answer a page request, or `None` when the path is not a page.
pub async fn handle(
    control: &Control,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Option<Response<Body>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match (method, path.as_str()) {
        (Method::GET, "/style.css") => respond(200, "text/css; charset=utf-8", pages::STYLE),
        (Method::GET, "/") => dashboard(control, &request),
        (Method::GET, "/tunnels") => tunnels(control, &request),
        (Method::GET, "/setup") => match control.setup_open() {
            true => html(200, pages::setup::page(&Default::default())),
            false => redirect("/"),
        },
        (Method::POST, "/setup") => {
            let address = peer.ip().to_string();
            guarded(control, request, |c, r, f| setup(c, r, f, &address)).await
        }
        (Method::GET, "/login") => match current(control, &request) {
            Ok(Some(_)) => redirect("/"),
            _ => html(200, pages::login::page(&Default::default())),
        },
        (Method::POST, "/login") => {
            let address = peer.ip().to_string();
            guarded(control, request, |c, r, f| login(c, r, f, &address)).await
        }
        (Method::POST, "/logout") => guarded(control, request, logout).await,
        _ => return None,
    };
    Some(response)
}

/// A logged-in request: its session and user.
struct Visitor {
    session: SessionRecord,
    user: UserRecord,
}

/// The live session of the request's cookie, if any; touches it now and then.
fn current(control: &Control, request: &Request<Incoming>) -> Result<Option<Visitor>, Error> {
    let Some(token) = sessions::token_from_cookies(request.headers().get(COOKIE)) else {
        return Ok(None);
    };
    let Some((session, user)) = control.store.session(token)? else {
        return Ok(None);
    };
    let now = auth::unix_now();
    if user.disabled || !session.is_live(now, control.session_limits) {
        control.store.delete_session(token)?;
        return Ok(None);
    }
    if session.wants_touch(now) {
        control.store.touch_session(token, now)?;
    }
    Ok(Some(Visitor { session, user }))
}

/// A page behind a session, rendered from the visitor and the store's state; without a
/// session, the way to the login.
fn session_page(
    control: &Control,
    request: &Request<Incoming>,
    render: impl FnOnce(&Visitor, &crate::model::State) -> Markup,
) -> Response<Body> {
    let visitor = match current(control, request) {
        Ok(Some(visitor)) => visitor,
        Ok(None) => return redirect("/login"),
        Err(e) => return failure(&e),
    };
    match control.store.state() {
        Ok(state) => html(200, render(&visitor, &state)),
        Err(e) => failure(&e),
    }
}

fn dashboard(control: &Control, request: &Request<Incoming>) -> Response<Body> {
    if control.setup_open() {
        return redirect("/setup");
    }
    session_page(control, request, |visitor, state| {
        let overview = pages::dashboard::Overview::of(state, &control.hub);
        pages::dashboard::page(&visitor.user, &visitor.session.csrf, &overview)
    })
}

fn tunnels(control: &Control, request: &Request<Incoming>) -> Response<Body> {
    let filter = request
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "q")
                .map(|(_, v)| v.chars().take(200).collect::<String>())
        })
        .unwrap_or_default();
    session_page(control, request, |visitor, state| {
        let rows = pages::tunnels::rows(state, &control.hub, &filter, auth::unix_now());
        pages::tunnels::page(
            &visitor.user,
            &visitor.session.csrf,
            &filter,
            &rows,
            state.tunnels.len(),
        )
    })
}

type Form = HashMap<String, String>;

/// Check where a state-changing request comes from, read its form, then run `action`.
async fn guarded<F>(control: &Control, request: Request<Incoming>, action: F) -> Response<Body>
where
    F: FnOnce(&Control, &Request<()>, Form) -> Response<Body>,
{
    if !same_origin(control, &request) {
        return respond(
            403,
            "text/plain",
            "refused: this form was not sent from Control's own pages\n",
        );
    }
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(413, "text/plain", "form too large\n"),
    };
    let form: Form = form_urlencoded::parse(&bytes).into_owned().collect();
    action(control, &Request::from_parts(parts, ()), form)
}

/// Whether `Origin` (or, without it, `Referer`) names the host the request was sent to or
/// Control's public URL. Browsers send `Origin` with every form POST.
fn same_origin<B>(control: &Control, request: &Request<B>) -> bool {
    let claimed = request
        .headers()
        .get(ORIGIN)
        .or_else(|| request.headers().get(REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(claimed) = claimed else {
        return false;
    };
    let host_of = |url: &str| -> Option<String> {
        let rest = url.split_once("://")?.1;
        Some(rest.split('/').next()?.to_ascii_lowercase())
    };
    let Some(from) = host_of(claimed) else {
        return false;
    };
    let to = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    Some(&from) == to.as_ref() || host_of(&control.public_url).as_ref() == Some(&from)
}

fn setup(control: &Control, request: &Request<()>, form: Form, address: &str) -> Response<Body> {
    if !control.setup_open() {
        return redirect("/login");
    }
    let value = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
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
            start_session(control, request, &user, address, "/")
        }
        Err(Error::Conflict { .. }) => {
            // Someone finished setup first (or `user add --admin` ran): log in instead.
            control.close_setup();
            redirect("/login")
        }
        Err(e) => failure(&e),
    }
}

fn login(control: &Control, request: &Request<()>, form: Form, address: &str) -> Response<Body> {
    let name = form.get("name").map(String::as_str).unwrap_or("").trim();
    let secret = form.get("password").map(String::as_str).unwrap_or("");
    let account_key = format!("user:{name}");
    let address_key = format!("ip:{address}");
    let keys = [account_key.as_str(), address_key.as_str()];
    let now = auth::unix_now();
    if let Some(wait) = control.throttle().wait(&keys, now) {
        let message = format!("Too many failed logins. Try again in {wait} s.");
        let mut response = html(
            429,
            pages::login::page(&pages::login::LoginForm {
                name,
                error: Some(&message),
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
            control.throttle().succeeded(&account_key);
            start_session(control, request, &user, address, "/")
        }
        _ => {
            control.throttle().failed(&keys, now);
            html(
                401,
                pages::login::page(&pages::login::LoginForm {
                    name,
                    error: Some("Wrong name or password, or the account is disabled."),
                }),
            )
        }
    }
}

fn logout(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    let token = sessions::token_from_cookies(request.headers().get(COOKIE));
    if let Some(token) = token {
        match control.store.session(token) {
            Ok(Some((session, _))) => {
                let sent = form.get("csrf").map(String::as_str).unwrap_or("");
                if !sessions::same_secret(sent, &session.csrf) {
                    return respond(403, "text/plain", "refused: the form's token is wrong\n");
                }
                if let Err(e) = control.store.delete_session(token) {
                    return failure(&e);
                }
            }
            Ok(None) => {}
            Err(e) => return failure(&e),
        }
    }
    let mut response = redirect("/login");
    set_cookie(
        &mut response,
        &sessions::clear_cookie(secure(control, request)),
    );
    response
}

/// Log `user` in from `address`: a new session, its cookie, and on to `to`.
fn start_session(
    control: &Control,
    request: &Request<()>,
    user: &UserRecord,
    address: &str,
    to: &'static str,
) -> Response<Body> {
    let token = auth::new_secret("kms");
    let now = auth::unix_now();
    let header = |name| {
        request
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
        address: address.to_string(),
        user_agent: header(hyper::header::USER_AGENT),
    };
    if let Err(e) = control.store.create_session(&token, &session) {
        return failure(&e);
    }
    let mut response = redirect(to);
    set_cookie(
        &mut response,
        &sessions::set_cookie(&token, secure(control, request), control.session_limits),
    );
    response
}

/// Whether the browser reached Control over HTTPS (its public URL, or a gateway in front).
fn secure<B>(control: &Control, request: &Request<B>) -> bool {
    control.public_url.starts_with("https://")
        || request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(response: &mut Response<Body>, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

fn html(status: u16, markup: Markup) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", markup.into_string())
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut response = respond(303, "text/plain", "");
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    response
}

fn failure(e: &Error) -> Response<Body> {
    log::error!("page: {e}");
    respond(500, "text/plain", "internal error; see Control's log\n")
}
