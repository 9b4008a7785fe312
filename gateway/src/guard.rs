//! The access check on each request to a protected tunnel, and the gateway's own login paths
//! under `/.kakuremichi/`: the password page, the callback that turns Control's assertion
//! into a session cookie, and logout. The decisions themselves are [`crate::access`].

use crate::access::{Facts, Verdict, COOKIE, PREFIX};
use crate::pages;
use crate::routes::Route;
use crate::Gateway;
use base64::Engine;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, COOKIE as COOKIE_HEADER, LOCATION,
    REFERRER_POLICY, SET_COOKIE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response};
use kakuremichi_proto::access::{AccessPolicy, Subject};
use kakuremichi_rt::http::{respond, Body};
use kakuremichi_rt::unix_now;
use std::net::SocketAddr;
use std::time::Duration;

/// The identity header the origin gets from the gateway only: a client's copies, in every
/// spelling, are removed ([`remove_identity_claims`]).
pub const USER_HEADER: HeaderName = HeaderName::from_static("x-kakuremichi-user");
/// Largest login form read.
const MAX_FORM_BYTES: usize = 4096;
/// Time a client gets to send the login form.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// Let `request` through to the tunnel, or answer it here. Passing strips the session cookie
/// and (when it was ours) the `Authorization` header, and tells the origin who it is.
pub async fn admit(
    gateway: &Gateway,
    route: &Route,
    mut request: Request<Incoming>,
    client: SocketAddr,
    scheme: &str,
    host: &str,
) -> Result<Request<Incoming>, Response<Body>> {
    remove_identity_claims(request.headers_mut());
    let Some(policy) = route.access.as_deref() else {
        // A public tunnel may share the hostname with protected ones: it never sees their
        // session either.
        strip_session_cookie(request.headers_mut());
        return Ok(request);
    };
    let gate = &gateway.gate;
    let now = unix_now();
    let hostname = route.hostname.as_str();
    if request.uri().path().starts_with(PREFIX) {
        if !policy.admits(client.ip()) {
            return Err(pages::forbidden(hostname));
        }
        return Err(endpoint(gateway, route, policy, request, client, scheme, host).await);
    }
    let verdict = {
        let headers = request.headers();
        let (bearer, basic) = credentials(headers);
        let facts = Facts {
            host: hostname,
            path: request.uri().path(),
            client: Some(client.ip()),
            bearer,
            basic,
            cookie: cookie(headers),
        };
        gate.judge(policy, &facts, now)
    };
    let (user, credential) = match verdict {
        Verdict::Pass { user, credential } => (user, credential),
        Verdict::CheckBasic { user, password } => {
            match gate
                .check_password(&route.tunnel_id, policy, client.ip(), &password, now)
                .await
            {
                Ok(true) => (Some(password_visitor(&user)), true),
                Ok(false) => return Err(unauthorized(policy, hostname)),
                Err(throttled) => return Err(pages::throttled(hostname, throttled.retry_after)),
            }
        }
        Verdict::Forbidden => return Err(pages::forbidden(hostname)),
        Verdict::Unauthorized => return Err(unauthorized(policy, hostname)),
        Verdict::Login => return Err(login(gateway, policy, hostname, &request, scheme, host)),
    };
    let headers = request.headers_mut();
    strip_session_cookie(headers);
    if credential {
        headers.remove(AUTHORIZATION);
    }
    if let Some(value) = user.and_then(|u| HeaderValue::from_str(&u).ok()) {
        headers.insert(USER_HEADER, value);
    }
    Ok(request)
}

/// Remove every header an origin could read as one of the gateway's identity headers:
/// `X-Kakuremichi-*` in any case, and spelt with `_` (CGI and WSGI servers read
/// `X_Kakuremichi_User` as `HTTP_X_KAKUREMICHI_USER`, the same as the real one).
fn remove_identity_claims(headers: &mut HeaderMap) {
    remove_headers_where(headers, is_identity_header);
}

/// Remove the headers whose (lower-case) names `claimed` picks.
pub fn remove_headers_where(headers: &mut HeaderMap, claimed: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| claimed(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Whether `name` (lower case, as hyper keeps names) reads as one of ours.
pub fn is_identity_header(name: &str) -> bool {
    name.get(..IDENTITY_PREFIX.len())
        .is_some_and(|head| reads_as(head, IDENTITY_PREFIX))
}

/// Whether header name `name` reads as `wanted` (both lower case) to a server that takes `_`
/// for `-`, as CGI and WSGI servers do. Compared byte by byte: it runs on every header of
/// every request.
pub fn reads_as(name: &str, wanted: &str) -> bool {
    name.len() == wanted.len()
        && name
            .bytes()
            .zip(wanted.bytes())
            .all(|(got, want)| got == want || (got == b'_' && want == b'-'))
}

const IDENTITY_PREFIX: &str = "x-kakuremichi-";

/// How a visitor who gave the tunnel password is named to the origin: `password:` and the
/// name they typed (or nothing). Control user names cannot hold `:`, so no password visitor
/// passes for a Control user.
fn password_visitor(typed: &str) -> String {
    let typed: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        .take(64)
        .collect();
    format!("password:{typed}")
}

/// The bearer token, or the decoded basic credentials, of the `Authorization` header.
fn credentials(headers: &HeaderMap) -> (Option<&str>, Option<(String, String)>) {
    let Some((scheme, value)) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return (None, None);
    };
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (Some(value), None);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let pair = decoded.as_deref().and_then(|text| text.split_once(':'));
        return (None, pair.map(|(u, p)| (u.to_string(), p.to_string())));
    }
    (None, None)
}

/// The value of our session cookie among the request's `Cookie` headers.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    cookie_named(headers, COOKIE)
}

/// The value of cookie `wanted` among the request's `Cookie` headers.
fn cookie_named<'a>(headers: &'a HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
}

/// The origin never sees the gateway's cookie; its own cookies pass untouched.
fn strip_session_cookie(headers: &mut HeaderMap) {
    if cookie(headers).is_none() {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(COOKIE))
        .map(str::to_string)
        .collect();
    headers.remove(COOKIE_HEADER);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(COOKIE_HEADER, value);
        }
    }
}

/// A wrong or missing credential from a client that cannot log in through a page.
fn unauthorized(policy: &AccessPolicy, hostname: &str) -> Response<Body> {
    let mut response = pages::unauthorized(hostname);
    let challenge = match policy.password_hash {
        Some(_) => format!("Basic realm=\"{hostname}\", charset=\"UTF-8\""),
        None => "Bearer".to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// A request that must log in: browsers go to a login page, other clients get a 401.
/// `hostname` is the tunnel's; `host` the `Host` the browser used (with its port), for the
/// way back from Control.
fn login(
    gateway: &Gateway,
    policy: &AccessPolicy,
    hostname: &str,
    request: &Request<Incoming>,
    scheme: &str,
    host: &str,
) -> Response<Body> {
    let navigates = matches!(*request.method(), Method::GET | Method::HEAD)
        && request
            .headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    if !navigates {
        return unauthorized(policy, hostname);
    }
    let here = request.uri().path_and_query().map_or("/", |p| p.as_str());
    match (
        &policy.password_hash,
        control_login(gateway, policy, scheme, host, here),
    ) {
        (None, Some(control)) => with_state(see_other(&control.url, None), Some(&control)),
        _ => see_other(
            &format!("{PREFIX}login?{}", query(&[("return", here)])),
            None,
        ),
    }
}

/// Control's login for a tunnel, and the cookie that binds its answer to this browser.
struct ControlLogin {
    url: String,
    state_cookie: String,
}

/// Control's login for this tunnel, when Control users may open it.
fn control_login(
    gateway: &Gateway,
    policy: &AccessPolicy,
    scheme: &str,
    host: &str,
    return_to: &str,
) -> Option<ControlLogin> {
    policy.users.as_ref()?;
    let login_url = gateway.gate.login_url()?;
    let origin = format!("{scheme}://{host}");
    let state = new_state()?;
    Some(ControlLogin {
        url: format!(
            "{login_url}?{}",
            query(&[
                ("origin", &origin),
                ("return", return_to),
                ("state", &state)
            ])
        ),
        state_cookie: state_cookie(&state, STATE_SECONDS, scheme),
    })
}

/// `response`, with the state cookie of the Control login it offers, if any.
fn with_state(mut response: Response<Body>, control: Option<&ControlLogin>) -> Response<Body> {
    if let Some(value) = control.and_then(|c| HeaderValue::from_str(&c.state_cookie).ok()) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// A login's state: 128 random bits in hex.
fn new_state() -> Option<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The browser that began a Control login keeps its state this long.
const STATE_SECONDS: u64 = 600;
const STATE_COOKIE: &str = "km_state";

/// `Set-Cookie` for a login's state (sent back only to the callback, under [`PREFIX`]).
fn state_cookie(value: &str, max_age: u64, scheme: &str) -> String {
    set_cookie(STATE_COOKIE, PREFIX, value, max_age, scheme)
}

fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn see_other(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut response = respond(303, "text/plain", "");
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(LOCATION, value);
    }
    // The callback's URL holds an assertion: it must not leak to the next site as a referrer.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// `Set-Cookie` for cookie `name` on `path` lasting `max_age` seconds (0 ends it).
/// Host-only: no `Domain`, so it goes back to this hostname alone.
fn set_cookie(name: &str, path: &str, value: &str, max_age: u64, scheme: &str) -> String {
    let secure = if scheme == "https" { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// `Set-Cookie` for a tunnel session lasting `max_age` seconds (0 ends it).
fn session_cookie(value: &str, max_age: u64, scheme: &str) -> String {
    set_cookie(COOKIE, "/", value, max_age, scheme)
}

/// The path that picks a request's tunnel: its own (already normalised), or for the login
/// paths under `/.kakuremichi/`, the normal form of the path the visitor returns to.
pub fn routing_path(uri: &hyper::Uri) -> String {
    if !uri.path().starts_with(PREFIX) {
        return uri.path().to_string();
    }
    let returning = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(name, _)| name == "return")
            .map(|(_, value)| value.into_owned())
    });
    let returning = kakuremichi_proto::access::local_path(returning.as_deref());
    let path = returning.split(['?', '#']).next().unwrap_or("/");
    kakuremichi_proto::path::normalize(path).unwrap_or_else(|_| "/".to_string())
}

/// `/.kakuremichi/…` on a protected hostname.
async fn endpoint(
    gateway: &Gateway,
    route: &Route,
    policy: &AccessPolicy,
    request: Request<Incoming>,
    client: SocketAddr,
    scheme: &str,
    host: &str,
) -> Response<Body> {
    let hostname = route.hostname.as_str();
    let now = unix_now();
    let params: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let action = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_string();
    let session_secs = policy.session_hours * 3600;
    let method = request.method().clone();
    match (method, action.as_str()) {
        (Method::GET, "login") => {
            let return_to = kakuremichi_proto::access::local_path(param("return"));
            let control = control_login(gateway, policy, scheme, host, &return_to);
            let page = pages::login(
                hostname,
                &return_to,
                policy.password_hash.is_some(),
                control.as_ref().map(|c| c.url.as_str()),
                None,
                200,
            );
            with_state(page, control.as_ref())
        }
        (Method::POST, "login") => {
            let form = match read_form(request).await {
                Some(form) => form,
                None => return pages::client_error(400, "The login form could not be read."),
            };
            let field = |name: &str| {
                form.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            let return_to = kakuremichi_proto::access::local_path(field("return"));
            let password = field("password").unwrap_or_default();
            let has_password = policy.password_hash.is_some();
            match gateway
                .gate
                .check_password(&route.tunnel_id, policy, client.ip(), password, now)
                .await
            {
                Ok(true) => {
                    let subject = Subject::Password {
                        epoch: policy.password_epoch(),
                    };
                    let sealed = gateway
                        .gate
                        .seal(hostname, subject, policy.session_hours, now);
                    gateway
                        .gate
                        .metrics
                        .logins
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let cookie = sealed.map(|value| session_cookie(&value, session_secs, scheme));
                    see_other(&return_to, cookie)
                }
                Ok(false) => {
                    let control = control_login(gateway, policy, scheme, host, &return_to);
                    let page = pages::login(
                        hostname,
                        &return_to,
                        has_password,
                        control.as_ref().map(|c| c.url.as_str()),
                        Some("That password is not right."),
                        401,
                    );
                    with_state(page, control.as_ref())
                }
                Err(throttled) => pages::throttled(hostname, throttled.retry_after),
            }
        }
        (Method::GET, "callback") => {
            let return_to = kakuremichi_proto::access::local_path(param("return"));
            let token = param("assertion").unwrap_or_default();
            let state = cookie_named(request.headers(), STATE_COOKIE);
            let mut response = match gateway.gate.redeem(policy, token, hostname, state, now) {
                Some(user) => {
                    let sealed =
                        gateway
                            .gate
                            .seal(hostname, Subject::User(user), policy.session_hours, now);
                    let cookie = sealed.map(|value| session_cookie(&value, session_secs, scheme));
                    see_other(&return_to, cookie)
                }
                None => pages::login_link_refused(hostname),
            };
            // The state is used up either way.
            if let Ok(value) = HeaderValue::from_str(&state_cookie("", 0, scheme)) {
                response.headers_mut().append(SET_COOKIE, value);
            }
            response
        }
        (Method::GET | Method::POST, "logout") => {
            let mut response = pages::logged_out(hostname);
            if let Ok(value) = HeaderValue::from_str(&session_cookie("", 0, scheme)) {
                response.headers_mut().insert(SET_COOKIE, value);
            }
            response
        }
        _ => pages::not_found(host),
    }
}

/// A small urlencoded form, or `None` when it is too large, too slow or malformed.
async fn read_form(request: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let body = request.into_body();
    let collect = async { Limited::new(body, MAX_FORM_BYTES).collect().await.ok() };
    let timeout = async {
        async_io::Timer::after(FORM_TIMEOUT).await;
        None
    };
    let bytes = futures_lite::future::or(collect, timeout).await?.to_bytes();
    Some(form_urlencoded::parse(&bytes).into_owned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_and_stripped_alone() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE_HEADER,
            HeaderValue::from_static("theme=dark; km_access=abc.def"),
        );
        headers.append(COOKIE_HEADER, HeaderValue::from_static("lang=ja"));
        assert_eq!(cookie(&headers), Some("abc.def"));
        strip_session_cookie(&mut headers);
        assert_eq!(headers.get(COOKIE_HEADER).unwrap(), "theme=dark; lang=ja");
        let mut only = HeaderMap::new();
        only.insert(COOKIE_HEADER, HeaderValue::from_static("km_access=x"));
        strip_session_cookie(&mut only);
        assert!(only.get(COOKIE_HEADER).is_none());
    }

    #[test]
    fn identity_headers_are_known_in_every_spelling() {
        for name in [
            "x-kakuremichi-user",
            "x_kakuremichi_user",
            "x_kakuremichi-email",
        ] {
            assert!(is_identity_header(name), "{name}");
        }
        for name in ["x-kakuremichi", "x-kakuremich-user", "kakuremichi-user"] {
            assert!(!is_identity_header(name), "{name}");
        }
        assert!(reads_as("x_real_ip", "x-real-ip") && reads_as("x-real-ip", "x-real-ip"));
        assert!(!reads_as("x-real_ipx", "x-real-ip") && !reads_as("x-real-ip", "x_real_ip"));
    }

    #[test]
    fn credentials_are_read_from_authorization() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer kst_abc"));
        assert_eq!(credentials(&headers).0, Some("kst_abc"));
        // "ci:pass:word" — the password may hold colons.
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic Y2k6cGFzczp3b3Jk"),
        );
        assert_eq!(
            credentials(&headers).1,
            Some(("ci".into(), "pass:word".into()))
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(credentials(&headers), (None, None));
    }
}
