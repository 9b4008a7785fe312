//! Everything Control serves, in one table: the operational paths, the node WebSockets, the
//! pages and `/api/v1`. Each route names who may call it through its [`Handler`]'s variant
//! (a page for members or administrators, a form with its CSRF token, an API token of a
//! scope), so no handler checks a session, a form's origin or a token itself.
//!
//! A path that matches with another method answers 405 with `Allow`; `HEAD` is `GET`
//! without the body (hyper leaves it out).
//!
//! Why `matchit` and an enum, not axum's `Router`: the guard is data in the table, so the
//! table reads as who may call what and a test can walk it without a server (the OpenAPI
//! document is built from it); axum would bring tower's service stack to a server that runs
//! hyper on smol, for the path matching that `matchit` (axum's own matcher) already does.

use crate::auth::Role;
use crate::model::TokenScope;
use crate::web::{self, Form, Page, Visitor};
use crate::{api, server, Control};
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, Response};
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_rt::http::{respond, Body};
use maud::Markup;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// One request as a handler sees it: Control, the request without its body (a form or JSON
/// body is read by the route's [`Handler`] first), the path's parameters and the peer.
pub struct Call {
    pub control: Arc<Control>,
    pub request: Request<()>,
    params: Vec<(String, String)>,
    pub peer: SocketAddr,
}

impl Call {
    /// The path parameter `name` of the route's pattern (empty if the pattern has none).
    pub fn param(&self, name: &str) -> &str {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value)
    }

    /// One parameter of the query string, at most 4096 characters.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.request.uri().query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.chars().take(4096).collect())
    }
}

/// A page's answer: its status and markup.
pub type PageResult = Result<(u16, Markup), crate::error::Error>;
/// A form's answer (a redirect, a page, a key shown once).
pub type FormResult = Result<Response<Body>, crate::error::Error>;
/// An API answer: its status and JSON.
pub type ApiResult = Result<(u16, serde_json::Value), crate::error::Error>;

type OpenFn = Box<dyn Fn(Call) -> Response<Body> + Send + Sync>;
type PageFn = Box<dyn Fn(&Page) -> PageResult + Send + Sync>;
type OpenFormFn = Box<dyn Fn(Call, Form) -> Response<Body> + Send + Sync>;
type VisitFn = Box<dyn Fn(Call, Option<Visitor>) -> Response<Body> + Send + Sync>;
type SessionFormFn = Box<dyn Fn(Call, Form, Option<Visitor>) -> Response<Body> + Send + Sync>;
type FormFn = Box<dyn Fn(&Page, &Form) -> FormResult + Send + Sync>;
type ApiFn = Box<dyn Fn(&Call, api::Json) -> ApiResult + Send + Sync>;
type TokenFn = Box<dyn Fn(&Call) -> Response<Body> + Send + Sync>;
/// A handler's answer that waits on something (the gateways, for the request log).
pub type Waiting<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type WaitingPageFn = Box<dyn Fn(Arc<Page>) -> Waiting<PageResult> + Send + Sync>;
type WaitingApiFn = Box<dyn Fn(Arc<Call>) -> Waiting<ApiResult> + Send + Sync>;

/// What a route needs before its handler runs, and the handler.
pub enum Handler {
    /// Anyone; the handler sees the call as it came.
    Open(OpenFn),
    /// A page anyone may open that differs for a logged-in visitor (the login page).
    Visit(VisitFn),
    /// A page behind a login; a member opening an administrator's page gets 403.
    Page(Role, PageFn),
    /// A form anyone may send (setup, login), from Control's own pages to one of its names.
    OpenForm(OpenFormFn),
    /// A form anyone may send from Control's pages; with a live session, its CSRF token is
    /// checked and the visitor passed (logout: a browser whose session ended still has a
    /// cookie to clear).
    SessionForm(SessionFormFn),
    /// A form a logged-in `Role` sends from Control's pages with the session's CSRF token.
    Form(Role, FormFn),
    /// JSON under `/api/v1` with an API token of at least this scope.
    Api(TokenScope, ApiFn),
    /// A page as [`Handler::Page`] whose answer waits on the gateways.
    WaitingPage(Role, WaitingPageFn),
    /// An operation as [`Handler::Api`] (without a body) whose answer waits on the gateways.
    WaitingApi(TokenScope, WaitingApiFn),
    /// A text answer for an API token of at least this scope (`/metrics`).
    Token(TokenScope, TokenFn),
}

fn open(f: impl Fn(Call) -> Response<Body> + Send + Sync + 'static) -> Handler {
    Handler::Open(Box::new(f))
}
fn page(role: Role, f: impl Fn(&Page) -> PageResult + Send + Sync + 'static) -> Handler {
    Handler::Page(role, Box::new(f))
}
fn visit(f: impl Fn(Call, Option<Visitor>) -> Response<Body> + Send + Sync + 'static) -> Handler {
    Handler::Visit(Box::new(f))
}
fn session_form(
    f: impl Fn(Call, Form, Option<Visitor>) -> Response<Body> + Send + Sync + 'static,
) -> Handler {
    Handler::SessionForm(Box::new(f))
}
fn open_form(f: impl Fn(Call, Form) -> Response<Body> + Send + Sync + 'static) -> Handler {
    Handler::OpenForm(Box::new(f))
}
fn form(role: Role, f: impl Fn(&Page, &Form) -> FormResult + Send + Sync + 'static) -> Handler {
    Handler::Form(role, Box::new(f))
}
fn api(
    scope: TokenScope,
    f: impl Fn(&Call, api::Json) -> ApiResult + Send + Sync + 'static,
) -> Handler {
    Handler::Api(scope, Box::new(f))
}
fn waiting_page(
    role: Role,
    f: impl Fn(Arc<Page>) -> Waiting<PageResult> + Send + Sync + 'static,
) -> Handler {
    Handler::WaitingPage(role, Box::new(f))
}
fn waiting_api(
    scope: TokenScope,
    f: impl Fn(Arc<Call>) -> Waiting<ApiResult> + Send + Sync + 'static,
) -> Handler {
    Handler::WaitingApi(scope, Box::new(f))
}
fn token(
    scope: TokenScope,
    f: impl Fn(&Call) -> Response<Body> + Send + Sync + 'static,
) -> Handler {
    Handler::Token(scope, Box::new(f))
}

/// Which part of Control a route belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Probes, metrics, the internal CA, agent installs, node sessions.
    Operations,
    /// The browser's pages and forms.
    Pages,
    /// `/api/v1`.
    Api,
}

impl Section {
    /// Whether machines call it with a token (or nothing), not browsers with a session.
    pub fn is_api(self) -> bool {
        self != Section::Pages
    }
}

/// One path pattern and what each method does there.
pub struct Route {
    pub section: Section,
    pub path: String,
    pub methods: Vec<(Method, Handler)>,
}

impl Route {
    fn get(&mut self, handler: Handler) -> &mut Self {
        self.methods.push((Method::GET, handler));
        self
    }
    fn post(&mut self, handler: Handler) -> &mut Self {
        self.methods.push((Method::POST, handler));
        self
    }
    fn patch(&mut self, handler: Handler) -> &mut Self {
        self.methods.push((Method::PATCH, handler));
        self
    }
    fn delete(&mut self, handler: Handler) -> &mut Self {
        self.methods.push((Method::DELETE, handler));
        self
    }
    fn allow(&self) -> String {
        let mut methods: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        if methods.contains(&"GET") {
            methods.insert(
                1 + methods.iter().position(|m| *m == "GET").unwrap_or(0),
                "HEAD",
            );
        }
        methods.join(", ")
    }
}

/// The routes, in the order the table lists them, and their radix tree.
pub struct Table {
    pub routes: Vec<Route>,
    tree: matchit::Router<usize>,
    /// The section the next routes belong to.
    section: Section,
}

impl Table {
    fn section(&mut self, section: Section) {
        self.section = section;
    }

    fn at(&mut self, path: impl Into<String>) -> &mut Route {
        let path = path.into();
        let last = self.routes.len();
        // The table is written below and built by every test; a clash is a typo there.
        if let Err(e) = self.tree.insert(path.clone(), last) {
            panic!("route table: {path}: {e}");
        }
        self.routes.push(Route {
            section: self.section,
            path,
            methods: Vec::new(),
        });
        &mut self.routes[last]
    }
}

/// Everything Control serves.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(build)
}

fn build() -> Table {
    let mut t = Table {
        routes: Vec::new(),
        tree: matchit::Router::new(),
        section: Section::Operations,
    };
    operations(&mut t);
    t.section(Section::Pages);
    pages(&mut t);
    t.section(Section::Api);
    api_v1(&mut t);
    t
}

#[rustfmt::skip]
fn operations(t: &mut Table) {
    use NodeKind::{Agent, Gateway};
    use TokenScope::Read;
    // Operations: probes, metrics, the internal CA, agent installs, node sessions.
    t.at("/healthz").get(open(server::healthz));
    t.at("/readyz").get(open(server::readyz));
    t.at("/metrics").get(token(Read, server::metrics));
    t.at("/ca.pem").get(open(server::ca_pem));
    t.at("/ca.crl").get(open(server::ca_crl));
    t.at("/install.sh").get(open(server::install_script));
    t.at("/releases/{name}").get(open(server::release));
    t.at("/ws/agent").get(open(|call| server::upgrade_node(call, Agent)));
    t.at("/ws/gateway").get(open(|call| server::upgrade_node(call, Gateway)));
}

#[rustfmt::skip]
fn pages(t: &mut Table) {
    use crate::web::{access, account, alerts, certificates, login, logs, nodes, tokens, tunnels, users};
    use NodeKind::{Agent, Gateway};
    use Role::{Admin, Member};
    // Pages: the way in.
    t.at("/style.css").get(open(web::style));
    t.at("/setup").get(open(login::setup_page)).post(open_form(login::setup));
    t.at("/login").get(visit(login::login_page)).post(open_form(login::login));
    t.at("/login/code").get(open(login::code_page)).post(open_form(login::second_factor));
    t.at("/logout").post(session_form(login::logout));
    t.at("/access").get(visit(login::tunnel_login));

    // Pages: tunnels and who may open them.
    t.at("/").get(page(Member, tunnels::dashboard));
    t.at("/tunnels").get(page(Member, tunnels::list));
    t.at("/tunnels/new").get(page(Admin, tunnels::new_page)).post(form(Admin, tunnels::create));
    t.at("/tunnels/{id}").get(page(Member, tunnels::detail));
    t.at("/tunnels/{id}/edit").get(page(Admin, tunnels::edit_page)).post(form(Admin, tunnels::save));
    t.at("/tunnels/{id}/enabled").post(form(Admin, tunnels::set_enabled));
    t.at("/tunnels/{id}/delete").get(page(Admin, tunnels::delete_page)).post(form(Admin, tunnels::delete));
    t.at("/tunnels/{id}/access").get(page(Admin, access::rules)).post(form(Admin, access::save_rules));
    t.at("/tunnels/{id}/access/tokens").post(form(Admin, access::add_service_token));
    t.at("/tunnels/{id}/access/tokens/{token_id}/revoke").post(form(Admin, access::revoke_service_token));
    t.at("/access/rotate-keys").get(page(Admin, access::rotate_keys_page)).post(form(Admin, access::rotate_keys));

    // Pages: agents and gateways.
    for (kind, base) in [(Agent, "/agents"), (Gateway, "/gateways")] {
        let path = |rest: &str| format!("{base}{rest}");
        t.at(path("")).get(page(Member, move |p| nodes::list(p, kind)));
        t.at(path("/new")).get(page(Admin, move |p| nodes::new_page(p, kind))).post(form(Admin, move |p, f| nodes::enrol(p, f, kind)));
        t.at(path("/{id}")).get(page(Member, move |p| nodes::detail(p, kind)));
        t.at(path("/{id}/name")).post(form(Admin, move |p, f| nodes::rename(p, f, kind)));
        t.at(path("/{id}/enabled")).post(form(Admin, move |p, f| nodes::set_enabled(p, f, kind)));
        t.at(path("/{id}/rotate-key")).get(page(Admin, move |p| nodes::rotate_key_page(p, kind))).post(form(Admin, move |p, f| nodes::rotate_key(p, f, kind)));
        t.at(path("/{id}/delete")).get(page(Admin, move |p| nodes::delete_page(p, kind))).post(form(Admin, move |p, f| nodes::delete(p, f, kind)));
    }
    t.at("/gateways/{id}/labels").post(form(Admin, nodes::set_labels));
    t.at("/gateways/{id}/draining").post(form(Admin, nodes::set_draining));

    // Pages: what the gateways saw, and who hears of problems.
    t.at("/logs").get(waiting_page(Member, |p| Box::pin(logs::page(p))));
    t.at("/alerts").get(page(Member, alerts::page));
    t.at("/alerts/rules").post(form(Admin, alerts::add_rule));
    t.at("/alerts/rules/{id}/delete").post(form(Admin, alerts::delete_rule));
    t.at("/alerts/channels").post(form(Admin, alerts::add_channel));
    t.at("/alerts/channels/{id}/delete").post(form(Admin, alerts::delete_channel));
    t.at("/alerts/channels/{id}/test").post(form(Admin, alerts::test_channel));

    // Pages: certificates, people and tokens.
    t.at("/certificates").get(page(Member, certificates::list));
    t.at("/certificates/new").post(form(Admin, certificates::upload));
    t.at("/certificates/{hostname}/retry").post(form(Admin, certificates::retry));
    t.at("/users").get(page(Admin, users::list));
    t.at("/users/new").post(form(Admin, users::add));
    t.at("/users/{id}/disabled").post(form(Admin, users::set_disabled));
    t.at("/users/{id}/password").post(form(Admin, users::reset_password));
    t.at("/users/{id}/delete").get(page(Admin, users::delete_page)).post(form(Admin, users::delete));
    t.at("/tokens").get(page(Admin, tokens::list));
    t.at("/tokens/new").post(form(Admin, tokens::create));
    t.at("/tokens/{id}/revoke").post(form(Admin, tokens::revoke));
    t.at("/account").get(page(Member, account::page));
    t.at("/account/password").post(form(Member, account::change_password));
    t.at("/account/totp/start").post(form(Member, account::start_totp));
    t.at("/account/totp/confirm").post(form(Member, account::confirm_totp));
    t.at("/account/totp/off").post(form(Member, account::totp_off));
    t.at("/account/sessions/{id}/end").post(form(Member, account::end_session));
}

#[rustfmt::skip]
fn api_v1(t: &mut Table) {
    use NodeKind::{Agent, Gateway};
    use TokenScope::{Admin as Write, Read};
    // The API (described at /api/v1/openapi.json, which is built from these rows).
    t.at("/api/v1/openapi.json").get(open(api::openapi));
    for (kind, base) in [(Agent, "/api/v1/agents"), (Gateway, "/api/v1/gateways")] {
        let path = |rest: &str| format!("{base}{rest}");
        t.at(path("")).get(api(Read, move |c, _| api::nodes::list(c, kind))).post(api(Write, move |c, b| api::nodes::create(c, b, kind)));
        t.at(path("/{id}")).get(api(Read, move |c, _| api::nodes::get(c, kind))).patch(api(Write, move |c, b| api::nodes::change(c, b, kind))).delete(api(Write, move |c, _| api::nodes::delete(c, kind)));
        t.at(path("/{id}/rotate-key")).post(api(Write, move |c, _| api::nodes::rotate_key(c, kind)));
        t.at(path("/{id}/traffic")).get(api(Read, move |c, _| api::traffic::of_node(c, kind)));
    }
    t.at("/api/v1/tunnels").get(api(Read, api::tunnels::list)).post(api(Write, api::tunnels::create));
    t.at("/api/v1/tunnels/{id}").get(api(Read, api::tunnels::get)).patch(api(Write, api::tunnels::change)).delete(api(Write, api::tunnels::delete));
    t.at("/api/v1/tunnels/{id}/traffic").get(api(Read, api::traffic::of_tunnel));
    t.at("/api/v1/traffic").get(api(Read, api::traffic::of_all));
    t.at("/api/v1/alerts").get(api(Read, api::alerts::overview));
    t.at("/api/v1/alerts/rules").post(api(Write, api::alerts::create_rule));
    t.at("/api/v1/alerts/rules/{id}").delete(api(Write, api::alerts::delete_rule));
    t.at("/api/v1/alerts/channels").post(api(Write, api::alerts::create_channel));
    t.at("/api/v1/alerts/channels/{id}").delete(api(Write, api::alerts::delete_channel));
    t.at("/api/v1/alerts/channels/{id}/test").post(waiting_api(Write, |c| Box::pin(api::alerts::test(c))));
    t.at("/api/v1/logs").get(waiting_api(Read, |c| Box::pin(api::logs::query(c))));
    t.at("/api/v1/tunnels/{id}/service-tokens").get(api(Read, api::tunnels::service_tokens)).post(api(Write, api::tunnels::add_service_token));
    t.at("/api/v1/tunnels/{id}/service-tokens/{token_id}").delete(api(Write, api::tunnels::revoke_service_token));
    t.at("/api/v1/access/rotate-keys").post(api(Write, api::tunnels::rotate_access_keys));
    t.at("/api/v1/tokens").get(api(Read, api::accounts::tokens)).post(api(Write, api::accounts::create_token));
    t.at("/api/v1/tokens/{id}").delete(api(Write, api::accounts::revoke_token));
    t.at("/api/v1/users").get(api(Read, api::accounts::users)).post(api(Write, api::accounts::create_user));
    t.at("/api/v1/users/{id}").patch(api(Write, api::accounts::change_user)).delete(api(Write, api::accounts::delete_user));
    t.at("/api/v1/certificates").get(api(Read, api::certificates::list)).post(api(Write, api::certificates::upload));
    t.at("/api/v1/certificates/{hostname}/retry").post(api(Write, api::certificates::retry));
}

/// Control's answer to `request`: the table's route for its path and method.
pub async fn dispatch(
    control: Arc<Control>,
    request: Request<Body>,
    peer: SocketAddr,
) -> Response<Body> {
    let table = table();
    let path = request.uri().path();
    let is_api = path.starts_with("/api/v1/");
    // The API has always taken a trailing slash.
    let lookup = match is_api {
        true => path.trim_end_matches('/'),
        false => path,
    };
    let Ok(matched) = table.tree.at(lookup) else {
        return not_found(is_api, path);
    };
    let route = &table.routes[*matched.value];
    let params = matched
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let method = match request.method() {
        &Method::HEAD => Method::GET,
        other => other.clone(),
    };
    let Some((_, handler)) = route.methods.iter().find(|(m, _)| *m == method) else {
        return method_not_allowed(is_api, route);
    };
    let (parts, body) = request.into_parts();
    let call = Call {
        control,
        request: Request::from_parts(parts, ()),
        params,
        peer,
    };
    match handler {
        Handler::Open(f) => f(call),
        Handler::Visit(f) => web::serve_visit(call, f),
        Handler::SessionForm(f) => match web::read_form(&call, body).await {
            Ok(form) => web::serve_session_form(call, form, f),
            Err(refused) => refused,
        },
        Handler::Page(role, f) => web::serve_page(call, *role, f),
        Handler::OpenForm(f) => match web::read_form(&call, body).await {
            Ok(form) => f(call, form),
            Err(refused) => refused,
        },
        Handler::Form(role, f) => match web::read_form(&call, body).await {
            Ok(form) => web::serve_form(call, form, *role, f),
            Err(refused) => refused,
        },
        Handler::Api(scope, f) => api::serve(call, body, *scope, f).await,
        Handler::WaitingPage(role, f) => web::serve_waiting_page(call, *role, f).await,
        Handler::WaitingApi(scope, f) => api::serve_waiting(call, *scope, f).await,
        Handler::Token(scope, f) => match api::authorize(&call, *scope) {
            Ok(()) => f(&call),
            Err(e) => api::error_response(&e),
        },
    }
}

fn not_found(is_api: bool, path: &str) -> Response<Body> {
    match is_api {
        true => api::error_response(&crate::error::Error::not_found("endpoint", path)),
        false => respond(404, "text/plain", "not found\n"),
    }
}

fn method_not_allowed(is_api: bool, route: &Route) -> Response<Body> {
    let mut response = match is_api {
        true => api::error_response(&crate::error::Error::MethodNotAllowed),
        false => respond(405, "text/plain", "method not allowed\n"),
    };
    if let Ok(value) = HeaderValue::from_str(&route.allow()) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}
