//! The browser side of Control: the page and form handlers, one module per screen beside
//! its page in [`crate::pages`], and what every page and form needs before its handler runs
//! ([`serve_page`], [`read_form`], [`serve_form`]; the route table in [`crate::routes`] says
//! which). Every state-changing request must come from Control's own pages: its `Origin` (or
//! `Referer`) names this host, and a logged-in form carries the session's CSRF token.

pub mod access;
pub mod account;
pub mod alerts;
pub mod certificates;
pub mod login;
pub mod logs;
pub mod nodes;
pub mod tokens;
pub mod tunnels;
pub mod users;

use crate::auth::sessions::{self, SessionRecord};
use crate::auth::{self, Role, UserRecord};
use crate::error::Error;
use crate::pages;
use crate::routes::{Call, FormResult, PageResult};
use crate::Control;
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderValue, COOKIE, HOST, LOCATION, ORIGIN, REFERER, SET_COOKIE};
use hyper::{Request, Response};
use kakuremichi_rt::http::{respond, Body};
use maud::Markup;
use std::collections::HashMap;

/// Largest form body read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A form's fields by name.
pub type Form = HashMap<String, String>;

/// A form field's value, empty when absent.
pub fn text<'a>(form: &'a Form, name: &str) -> &'a str {
    form.get(name).map_or("", String::as_str)
}

/// A logged-in request: its session and user.
pub struct Visitor {
    pub session: SessionRecord,
    pub user: UserRecord,
}

/// A call from a logged-in visitor whose role the route admits.
pub struct Page {
    pub call: Call,
    pub visitor: Visitor,
}

impl std::ops::Deref for Page {
    type Target = Call;
    fn deref(&self) -> &Call {
        &self.call
    }
}

impl Page {
    /// The visitor and the session's form token, as the page layout takes them.
    pub fn who(&self) -> (&UserRecord, &str) {
        (&self.visitor.user, self.visitor.session.csrf.as_str())
    }

    /// The store's state now, decoded once per revision for every reader.
    pub fn state(&self) -> Result<std::sync::Arc<crate::model::State>, Error> {
        self.control.store.shared_state()
    }

    /// A page for this visitor: its markup as an HTML answer.
    pub fn html(&self, status: u16, markup: Markup) -> Response<Body> {
        html(status, markup)
    }
}

/// The live session of the request's cookie, if any; touches it now and then.
fn current<B>(control: &Control, request: &Request<B>) -> Result<Option<Visitor>, Error> {
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
    if session.awaiting_code {
        return Ok(None);
    }
    if session.wants_touch(now) {
        control.store.update_session(token, |s| s.last_seen = now)?;
    }
    Ok(Some(Visitor { session, user }))
}

/// Where a browser without a session goes: the setup page until there is a user.
fn way_in(control: &Control) -> Response<Body> {
    match control.setup_open() {
        true => redirect("/setup"),
        false => redirect("/login"),
    }
}

/// Run a page handler for a visitor `role` admits; without a session, the way in.
pub fn serve_page(call: Call, role: Role, handler: impl Fn(&Page) -> PageResult) -> Response<Body> {
    let visitor = match current(&call.control, &call.request) {
        Ok(Some(visitor)) => visitor,
        Ok(None) => return way_in(&call.control),
        Err(e) => return failure(&e),
    };
    let page = Page { call, visitor };
    if !admits(role, &page.visitor) {
        return html(403, status_page(page.who(), 403));
    }
    match handler(&page) {
        Ok((status, markup)) => html(status, markup),
        Err(e @ Error::NotFound { .. }) => {
            log::debug!("page: {e}");
            html(404, status_page(page.who(), 404))
        }
        Err(e) => {
            log::error!("page: {e}");
            html(e.status(), status_page(page.who(), e.status()))
        }
    }
}

/// [`serve_page`] for a handler whose answer waits on the gateways.
pub async fn serve_waiting_page(
    call: Call,
    role: Role,
    handler: &(impl Fn(std::sync::Arc<Page>) -> crate::routes::Waiting<PageResult> + ?Sized),
) -> Response<Body> {
    let visitor = match current(&call.control, &call.request) {
        Ok(Some(visitor)) => visitor,
        Ok(None) => return way_in(&call.control),
        Err(e) => return failure(&e),
    };
    let page = std::sync::Arc::new(Page { call, visitor });
    if !admits(role, &page.visitor) {
        return html(403, status_page(page.who(), 403));
    }
    match handler(page.clone()).await {
        Ok((status, markup)) => html(status, markup),
        Err(e) => {
            log::debug!("page: {e}");
            html(e.status(), status_page(page.who(), e.status()))
        }
    }
}

fn admits(role: Role, visitor: &Visitor) -> bool {
    role == Role::Member || visitor.user.role == Role::Admin
}

/// Run a handler for a page anyone may open, with the visitor if logged in.
pub fn serve_visit(
    call: Call,
    handler: impl Fn(Call, Option<Visitor>) -> Response<Body>,
) -> Response<Body> {
    match current(&call.control, &call.request) {
        Ok(visitor) => handler(call, visitor),
        Err(e) => failure(&e),
    }
}

/// Run a handler for a form anyone may send, with the visitor if the session is live and
/// the form carries its token.
pub fn serve_session_form(
    call: Call,
    form: Form,
    handler: impl Fn(Call, Form, Option<Visitor>) -> Response<Body>,
) -> Response<Body> {
    match acting(&call, &form) {
        Ok(visitor) => handler(call, form, Some(visitor)),
        Err(Refusal::NoSession) => handler(call, form, None),
        Err(refusal) => refusal.response(),
    }
}

/// Why a form is not carried out.
enum Refusal {
    NoSession,
    /// The form's CSRF token is missing or wrong, or the user's role may not send it.
    Forbidden(&'static str),
    Failed(Error),
}

impl Refusal {
    fn response(self) -> Response<Body> {
        match self {
            Refusal::NoSession => redirect("/login"),
            Refusal::Forbidden(why) => respond(403, "text/plain", format!("refused: {why}\n")),
            Refusal::Failed(e) => failure(&e),
        }
    }
}

/// The logged-in visitor behind a form, checked against the session's token.
fn acting(call: &Call, form: &Form) -> Result<Visitor, Refusal> {
    let visitor = current(&call.control, &call.request)
        .map_err(Refusal::Failed)?
        .ok_or(Refusal::NoSession)?;
    if !sessions::same_secret(text(form, "csrf"), &visitor.session.csrf) {
        return Err(Refusal::Forbidden(
            "the form's token is wrong; reload the page",
        ));
    }
    Ok(visitor)
}

/// Run a form handler for the visitor who sent it, if `role` admits them.
pub fn serve_form(
    call: Call,
    form: Form,
    role: Role,
    handler: impl Fn(&Page, &Form) -> FormResult,
) -> Response<Body> {
    let visitor = match acting(&call, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    if !admits(role, &visitor) {
        return Refusal::Forbidden("only administrators may do this").response();
    }
    match handler(&Page { call, visitor }, &form) {
        Ok(response) => response,
        Err(Error::Forbidden(why)) => Refusal::Forbidden(why).response(),
        Err(e @ (Error::NotFound { .. } | Error::Invalid { .. } | Error::Conflict { .. })) => {
            respond(e.status(), "text/plain", format!("{}\n", e.reason()))
        }
        Err(e) => failure(&e),
    }
}

/// Check where a form comes from and read it: 403 from another site, 421 for a host that
/// is none of Control's names, 413 over [`MAX_FORM_BYTES`].
pub async fn read_form(call: &Call, body: Body) -> Result<Form, Response<Body>> {
    if !same_origin(&call.control, &call.request) {
        return Err(respond(
            403,
            "text/plain",
            "refused: this form was not sent from Control's own pages\n",
        ));
    }
    if !names_control(&call.control, &call.request) {
        return Err(respond(
            421,
            "text/plain",
            "refused: the Host header names none of Control's addresses (give Control its name with --public-url)\n",
        ));
    }
    match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => Ok(form_urlencoded::parse(&collected.to_bytes())
            .into_owned()
            .collect()),
        Err(_) => Err(respond(413, "text/plain", "form too large\n")),
    }
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
    let Some(from) = authority_of(claimed) else {
        return false;
    };
    let to = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    Some(&from) == to.as_ref() || authority_of(&control.public_url).as_ref() == Some(&from)
}

/// `host[:port]` of a URL, lowercase, the port only when the URL names one that is not its
/// scheme's default (as a `Host` header has it).
fn authority_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

/// Whether the request's `Host` is one of Control's own names: an IP address, `localhost`,
/// the host of `--public-url` or the Control hostname gateways serve. A page on a domain of
/// an attacker's that resolves to Control's address (DNS rebinding) names another host, and
/// its forms are refused.
fn names_control<B>(control: &Control, request: &Request<B>) -> bool {
    let Some(host) = request.headers().get(HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(authority) = host.parse::<hyper::http::uri::Authority>() else {
        return false;
    };
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
    {
        return true;
    }
    let public = control
        .public_url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_ascii_lowercase));
    let routed = control
        .store
        .meta::<(
            kakuremichi_proto::messages::ControlRoute,
            crate::model::Issuer,
        )>(crate::store::CONTROL_ROUTE)
        .ok()
        .flatten()
        .map(|(route, _)| route.hostname.as_str().to_string());
    let name = name.to_ascii_lowercase();
    public.as_deref() == Some(name.as_str()) || routed.as_deref() == Some(name.as_str())
}

/// `/style.css`.
pub fn style(_: Call) -> Response<Body> {
    respond(200, "text/css; charset=utf-8", pages::STYLE)
}

/// The one page for a refusal, a missing object and a failure, by status.
pub fn status_page(who: (&UserRecord, &str), status: u16) -> Markup {
    let (title, text) = match status {
        403 => ("Not allowed", "Only administrators may see this page."),
        404 => ("Not found", "Nothing is here: it may have been deleted."),
        507 => (
            "Disk full",
            "Control's disk is full, so nothing was saved. Free some space and try again.",
        ),
        _ => (
            "Something went wrong",
            "Control could not show this page; its log says why.",
        ),
    };
    pages::layout(
        title,
        Some(who),
        maud::html! { div.card { h1 { (title) } p { (text) } p { a href="/" { "Back to the dashboard" } } } },
    )
}

/// A query string of `pairs`.
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
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

/// An answer that must not stay in caches or history (a secret shown once).
fn no_store(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn html(status: u16, markup: Markup) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", markup.into_string())
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = respond(303, "text/plain", "");
    // Every target is a path built from our own ids, which are header-safe.
    let location = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/"));
    response.headers_mut().insert(LOCATION, location);
    response
}

fn failure(e: &Error) -> Response<Body> {
    log::error!("page: {e}");
    match e.is_internal() {
        true => respond(500, "text/plain", "internal error; see Control's log\n"),
        false => respond(e.status(), "text/plain", format!("{e}\n")),
    }
}
