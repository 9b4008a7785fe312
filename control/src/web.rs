//! The browser side of Control's listener: setup, login, logout and the pages behind a
//! session. Every state-changing request must come from Control's own pages: its `Origin`
//! (or `Referer`) names this host, and a logged-in form carries the session's CSRF token.

use crate::auth::sessions::{self, SessionRecord};
use crate::auth::{self, password, Role, UserRecord};
use crate::error::Error;
use crate::pages;
use crate::store::SecondFactor;
use crate::tunnels::TunnelKind;
use crate::Control;
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderValue, COOKIE, HOST, LOCATION, ORIGIN, REFERER, SET_COOKIE};
use hyper::{Method, Request, Response};
use kakuremichi_proto::access::local_path;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::throttle::Attempt;
use kakuremichi_rt::http::{respond, Body};
use maud::Markup;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest form body read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Answer a page request, or `None` when the path is not a page.
pub async fn handle(
    control: &Control,
    request: Request<Body>,
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
            let address = control
                .client_address(request.headers(), peer.ip())
                .to_string();
            guarded(control, request, |c, r, f| setup(c, r, f, &address)).await
        }
        (Method::GET, "/login") => {
            let next = query_param(&request, "next");
            match current(control, &request) {
                Ok(Some(_)) => redirect(&local_path(next.as_deref())),
                _ => html(
                    200,
                    pages::login::page(&pages::login::LoginForm {
                        next: next.as_deref().unwrap_or_default(),
                        ..Default::default()
                    }),
                ),
            }
        }
        (Method::GET, "/access") => tunnel_login(control, &request),
        (Method::POST, "/login") => {
            let address = control
                .client_address(request.headers(), peer.ip())
                .to_string();
            guarded(control, request, |c, r, f| login(c, r, f, &address)).await
        }
        (Method::POST, "/logout") => guarded(control, request, logout).await,
        (Method::GET, "/agents") => nodes_page(control, &request, NodeKind::Agent),
        (Method::GET, "/gateways") => nodes_page(control, &request, NodeKind::Gateway),
        (Method::GET, "/agents/new") => new_node_page(control, &request, NodeKind::Agent),
        (Method::GET, "/gateways/new") => new_node_page(control, &request, NodeKind::Gateway),
        (Method::POST, "/agents/new") => {
            guarded(control, request, |c, r, f| enrol(c, r, f, NodeKind::Agent)).await
        }
        (Method::POST, "/gateways/new") => {
            guarded(control, request, |c, r, f| {
                enrol(c, r, f, NodeKind::Gateway)
            })
            .await
        }
        (Method::GET, "/account") => account_page(control, &request, None, None),
        (Method::POST, "/account/password") => guarded(control, request, change_password).await,
        (Method::POST, "/account/totp/start") => guarded(control, request, start_totp).await,
        (Method::POST, "/account/totp/confirm") => guarded(control, request, confirm_totp).await,
        (Method::POST, "/account/totp/off") => guarded(control, request, totp_off).await,
        (Method::GET, "/login/code") => match awaiting(control, &request) {
            Ok(Some(_)) => {
                let next = query_param(&request, "next").unwrap_or_default();
                html(200, pages::login::code_page(None, &next))
            }
            Ok(None) => redirect("/login"),
            Err(e) => failure(&e),
        },
        (Method::POST, "/login/code") => {
            let address = control
                .client_address(request.headers(), peer.ip())
                .to_string();
            guarded(control, request, |c, r, f| second_factor(c, r, f, &address)).await
        }
        (Method::GET, "/certificates") => certificates_page(control, &request, None),
        (Method::POST, "/certificates/new") => guarded(control, request, upload_certificate).await,
        (Method::GET, "/users") => users_page(control, &request),
        (Method::GET, "/tokens") => tokens_page(control, &request),
        (Method::POST, "/tokens/new") => guarded(control, request, create_token).await,
        (Method::POST, "/users/new") => guarded(control, request, add_user).await,
        (Method::GET, "/tunnels/new") => new_tunnel_page(control, &request),
        (Method::GET, "/access/rotate-keys") => {
            admin_session_page(control, &request, |visitor, _| {
                let who = (&visitor.user, visitor.session.csrf.as_str());
                let page = pages::confirm_page(
                    who,
                    "Sign everyone out of every tunnel?",
                    "New keys for tunnel logins: every session made with a password or a Control \
                 login on any tunnel ends within a second, and people log in again. \
                 Service tokens keep working.",
                    "/access/rotate-keys",
                    "Sign everyone out",
                    "/tunnels",
                );
                (200, page)
            })
        }
        (Method::POST, "/access/rotate-keys") => {
            guarded(control, request, rotate_access_keys).await
        }
        (Method::POST, "/tunnels/new") => {
            guarded(control, request, |c, r, f| save_tunnel(c, r, f, None)).await
        }
        (method, path) => match path.split('/').collect::<Vec<_>>()[..] {
            ["", "tunnels", id, "delete"] if method == Method::GET => {
                delete_tunnel_page(control, &request, id)
            }
            ["", "tunnels", id, "delete"] if method == Method::POST => {
                let id = id.to_string();
                guarded(control, request, |c, r, f| delete_tunnel(c, r, f, &id)).await
            }
            ["", "account", "sessions", id, "end"] if method == Method::POST => {
                let id = id.to_string();
                guarded(control, request, |c, r, f| end_session(c, r, f, &id)).await
            }
            ["", "certificates", hostname, "retry"] if method == Method::POST => {
                let hostname = hostname.to_string();
                guarded(control, request, |c, r, f| {
                    retry_certificate(c, r, f, &hostname)
                })
                .await
            }
            ["", "tokens", id, "revoke"] if method == Method::POST => {
                let id = id.to_string();
                guarded(control, request, |c, r, f| revoke_token(c, r, f, &id)).await
            }
            ["", "users", id, "delete"] if method == Method::GET => {
                delete_user_page(control, &request, id)
            }
            ["", "users", id, action] if method == Method::POST => {
                let (id, action) = (id.to_string(), action.to_string());
                guarded(control, request, |c, r, f| {
                    change_user(c, r, f, &id, &action)
                })
                .await
            }
            ["", plural, id, ref action @ ..] if node_kind(plural).is_some() => {
                let kind = node_kind(plural)?;
                node_route(control, request, kind, id, action).await?
            }
            ["", "tunnels", id, "access"] if method == Method::GET => {
                let saved = query_param(&request, "saved").is_some();
                admin_session_page(control, &request, |visitor, state| {
                    rules_page(visitor, state, id, None, None, saved)
                })
            }
            ["", "tunnels", id, "access", ref action @ ..] if method == Method::POST => {
                let id = id.to_string();
                let action: Vec<String> = action.iter().map(|s| s.to_string()).collect();
                guarded(control, request, |c, r, f| {
                    change_access(c, r, f, &id, &action)
                })
                .await
            }
            ["", "tunnels", id, "edit"] if method == Method::GET => {
                edit_tunnel_page(control, &request, id)
            }
            ["", "tunnels", id, "edit"] if method == Method::POST => {
                let id = id.to_string();
                guarded(control, request, |c, r, f| save_tunnel(c, r, f, Some(&id))).await
            }
            ["", "tunnels", id, "enabled"] if method == Method::POST => {
                let id = id.to_string();
                guarded(control, request, |c, r, f| set_tunnel_enabled(c, r, f, &id)).await
            }
            _ => return None,
        },
    };
    Some(response)
}

/// A logged-in request: its session and user.
struct Visitor {
    session: SessionRecord,
    user: UserRecord,
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

/// A page behind a session, rendered from the visitor and the store's state; without a
/// session, the way to the login.
fn session_page<B>(
    control: &Control,
    request: &Request<B>,
    render: impl FnOnce(&Visitor, &crate::model::State) -> (u16, Markup),
) -> Response<Body> {
    let visitor = match current(control, request) {
        Ok(Some(visitor)) => visitor,
        Ok(None) => return redirect("/login"),
        Err(e) => return failure(&e),
    };
    match control.store.state() {
        Ok(state) => {
            let (status, markup) = render(&visitor, &state);
            html(status, markup)
        }
        Err(e) => failure(&e),
    }
}

/// [`session_page`] for administrators only: a member gets the "only administrators" page,
/// not a form they could fill in and only then be refused.
fn admin_session_page<B>(
    control: &Control,
    request: &Request<B>,
    render: impl FnOnce(&Visitor, &crate::model::State) -> (u16, Markup),
) -> Response<Body> {
    session_page(control, request, |visitor, state| match visitor.user.role {
        Role::Admin => render(visitor, state),
        Role::Member => (
            403,
            forbidden_page((&visitor.user, visitor.session.csrf.as_str())),
        ),
    })
}

fn dashboard(control: &Control, request: &Request<Body>) -> Response<Body> {
    if control.setup_open() {
        return redirect("/setup");
    }
    session_page(control, request, |visitor, state| {
        let overview = pages::dashboard::Overview::of(state, &control.hub);
        (
            200,
            pages::dashboard::page(&visitor.user, &visitor.session.csrf, &overview),
        )
    })
}

fn tunnels(control: &Control, request: &Request<Body>) -> Response<Body> {
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
        let page = pages::tunnels::page(
            &visitor.user,
            &visitor.session.csrf,
            &filter,
            &rows,
            state.tunnels.len(),
        );
        (200, page)
    })
}

/// Why an admin action is not carried out.
enum Refusal {
    NoSession,
    /// The form's CSRF token is missing or wrong, or the user is not an administrator.
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

/// The administrator behind a state-changing form (see [`acting_self`]).
fn acting_admin(control: &Control, request: &Request<()>, form: &Form) -> Result<Visitor, Refusal> {
    let visitor = acting_self(control, request, form)?;
    if visitor.user.role != Role::Admin {
        return Err(Refusal::Forbidden("only administrators may do this"));
    }
    Ok(visitor)
}

fn agent_choices(
    control: &Control,
    state: &crate::model::State,
) -> Vec<pages::tunnel_form::AgentChoice> {
    let mut agents: Vec<_> = state
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Agent)
        .map(|n| pages::tunnel_form::AgentChoice {
            id: n.id.clone(),
            name: n.name.clone(),
            online: control.hub.presence(&n.id).online,
        })
        .collect();
    agents.sort_by(|a, b| b.online.cmp(&a.online).then(a.name.cmp(&b.name)));
    agents
}

fn new_tunnel_page(control: &Control, request: &Request<Body>) -> Response<Body> {
    admin_session_page(control, request, |visitor, state| {
        let form = pages::tunnel_form::TunnelForm {
            issuer: control.default_issuer.as_str(),
            enabled: true,
            ..Default::default()
        };
        let page = pages::tunnel_form::form_page(
            &visitor.user,
            &visitor.session.csrf,
            &agent_choices(control, state),
            &form,
            pages::tunnel_form::Purpose::Create,
        );
        (200, page)
    })
}

fn edit_tunnel_page(control: &Control, request: &Request<Body>, id: &str) -> Response<Body> {
    admin_session_page(control, request, |visitor, state| {
        let who = (&visitor.user, visitor.session.csrf.as_str());
        let Some(tunnel) = state.tunnels.iter().find(|t| t.id == id) else {
            return (404, status_page(who, 404));
        };
        let hostname = tunnel.hostname.as_ref().map_or("", |h| h.as_str());
        let ports = tunnel.ports.map(|p| p.to_string()).unwrap_or_default();
        let target = tunnel.target_text();
        let gateways = tunnel.gateways.to_text();
        let replicas = tunnel
            .replicas
            .iter()
            .map(|r| format!("{}={}", r.agent_id, tunnel.target_text_for(&r.target)))
            .collect::<Vec<_>>()
            .join(", ");
        let timeout = tunnel
            .origin
            .connect_timeout_secs
            .map(|s| s.to_string())
            .unwrap_or_default();
        let form = pages::tunnel_form::TunnelForm {
            kind: tunnel.kind.as_str(),
            hostname,
            ports: &ports,
            agent: &tunnel.agent_id,
            target: &target,
            issuer: tunnel.issuer.as_str(),
            proxy_protocol: tunnel.proxy_protocol.map_or("none", |p| p.as_str()),
            skip_tls_verify: !tunnel.origin.tls_verify,
            path_prefix: tunnel.path_prefix.as_deref().unwrap_or(""),
            gateways: &gateways,
            replicas: &replicas,
            host_header: tunnel.origin.host_header.as_deref().unwrap_or(""),
            connect_timeout: &timeout,
            enabled: tunnel.enabled,
            error: None,
        };
        let page = pages::tunnel_form::form_page(
            who.0,
            who.1,
            &agent_choices(control, state),
            &form,
            pages::tunnel_form::Purpose::Edit(id),
        );
        (200, page)
    })
}

/// Create a tunnel (`id` none) or change tunnel `id` from a form.
fn save_tunnel(
    control: &Control,
    request: &Request<()>,
    form: Form,
    id: Option<&str>,
) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let value = |name: &str| text(&form, name).trim();
    let saved = parse_new_tunnel(control, &form).and_then(|new| match id {
        None => control.store.create_tunnel(new).map(|_| ()),
        Some(id) => {
            let patch = crate::store::TunnelPatch {
                hostname: new.hostname,
                ports: new.ports,
                agent_id: Some(new.agent_id),
                target: Some(new.target),
                replicas: Some(new.replicas),
                enabled: Some(new.enabled),
                issuer: Some(new.issuer),
                access: None,
                proxy_protocol: Some(new.proxy_protocol),
                origin: None,
                path_prefix: Some(new.path_prefix),
                gateways: Some(new.gateways),
            };
            match control.store.state()?.tunnels.iter().find(|t| t.id == id) {
                Some(current) if current.kind != new.kind => Err(Error::invalid(
                    "kind",
                    "a tunnel's kind cannot change; create a new tunnel",
                )),
                Some(current) => {
                    // The form shows some origin settings; the rest (CA, error page) stay.
                    let origin = crate::tunnels::OriginSettings {
                        scheme: new.origin.scheme,
                        tls_verify: new.origin.tls_verify,
                        host_header: new.origin.host_header,
                        connect_timeout_secs: new.origin.connect_timeout_secs,
                        ..current.origin.clone()
                    };
                    let patch = crate::store::TunnelPatch {
                        origin: Some(origin),
                        ..patch
                    };
                    control.store.update_tunnel(id, patch).map(|_| ())
                }
                None => Err(Error::not_found("tunnel", id)),
            }
        }
    });
    match saved {
        Ok(()) => redirect("/tunnels"),
        Err(e) if e.field().is_some() => {
            let message = e.reason();
            let field_name = e.field().unwrap_or("");
            let state = match control.store.state() {
                Ok(state) => state,
                Err(e) => return failure(&e),
            };
            let shown = pages::tunnel_form::TunnelForm {
                kind: value("kind"),
                hostname: value("hostname"),
                ports: value("ports"),
                agent: value("agent"),
                target: value("target"),
                issuer: value("issuer"),
                proxy_protocol: value("proxy_protocol"),
                skip_tls_verify: form.contains_key("skip_tls_verify"),
                path_prefix: value("path_prefix"),
                gateways: value("gateways"),
                replicas: value("replicas"),
                host_header: value("host_header"),
                connect_timeout: value("connect_timeout"),
                enabled: form.contains_key("enabled"),
                error: Some((field_name, &message)),
            };
            let purpose = match id {
                None => pages::tunnel_form::Purpose::Create,
                Some(id) => pages::tunnel_form::Purpose::Edit(id),
            };
            html(
                400,
                pages::tunnel_form::form_page(
                    &visitor.user,
                    &visitor.session.csrf,
                    &agent_choices(control, &state),
                    &shown,
                    purpose,
                ),
            )
        }
        Err(e @ Error::NotFound { .. }) => respond(404, "text/plain", format!("{e}\n")),
        Err(e) => failure(&e),
    }
}

/// `agent=target, …` from the tunnel form: more agents with their targets, of the tunnel's
/// scheme.
fn parse_replicas(
    text: &str,
    ports: Option<kakuremichi_proto::ports::PortRange>,
    scheme: crate::tunnels::OriginScheme,
) -> Result<Vec<crate::model::Replica>, Error> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (agent_id, target) = entry.split_once('=').ok_or_else(|| {
                Error::invalid("agents", format!("{entry:?} is not agent id=target"))
            })?;
            crate::tunnels::parse_replica(agent_id.trim(), target.trim(), ports, scheme)
        })
        .collect()
}

/// The tunnel a form describes; errors name the field.
fn parse_new_tunnel(control: &Control, form: &Form) -> Result<crate::store::NewTunnel, Error> {
    let value = |name: &str| text(form, name).trim();
    let parse = |name: &'static str| -> Result<&str, Error> {
        match value(name) {
            "" => Err(Error::invalid(name, "is required")),
            text => Ok(text),
        }
    };
    let kind: TunnelKind = match value("kind") {
        "" => TunnelKind::Http,
        text => text.parse()?,
    };
    let proto = |name: &'static str| {
        move |e: kakuremichi_proto::ProtoError| Error::invalid(name, e.to_string())
    };
    let ports = match value("ports") {
        "" => None,
        text => Some(text.parse().map_err(proto("ports"))?),
    };
    let (target, scheme) = crate::tunnels::parse_scheme_target(parse("target")?, ports)?;
    Ok(crate::store::NewTunnel {
        kind,
        hostname: match value("hostname") {
            "" => None,
            text => Some(text.parse().map_err(proto("hostname"))?),
        },
        ports,
        agent_id: parse("agent")?.to_string(),
        target,
        replicas: parse_replicas(value("replicas"), ports, scheme)?,
        origin: crate::tunnels::OriginSettings {
            scheme,
            tls_verify: !form.contains_key("skip_tls_verify"),
            host_header: Some(value("host_header").to_string()).filter(|h| !h.is_empty()),
            connect_timeout_secs: match value("connect_timeout") {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    Error::invalid("connect_timeout", "must be a whole number of seconds")
                })?),
            },
            ..Default::default()
        },
        enabled: form.contains_key("enabled"),
        issuer: match value("issuer") {
            "" => control.default_issuer,
            text => text.parse().map_err(proto("issuer"))?,
        },
        access: Default::default(),
        gateways: crate::fleet::GatewayChoice::from_text(
            value("gateways"),
            &control.store.state()?.nodes,
        )?,
        path_prefix: match value("path_prefix") {
            "" => None,
            text => crate::tunnels::parse_path_prefix(text)?,
        },
        proxy_protocol: match value("proxy_protocol") {
            "" | "none" => None,
            text => Some(text.parse().map_err(proto("proxy_protocol"))?),
        },
    })
}

fn set_tunnel_enabled(
    control: &Control,
    request: &Request<()>,
    form: Form,
    id: &str,
) -> Response<Body> {
    if let Err(refusal) = acting_admin(control, request, &form) {
        return refusal.response();
    }
    let patch = crate::store::TunnelPatch {
        enabled: Some(form.get("enabled").map(String::as_str) == Some("true")),
        ..Default::default()
    };
    match control.store.update_tunnel(id, patch) {
        Ok(_) => redirect("/tunnels"),
        Err(e @ Error::NotFound { .. }) => respond(404, "text/plain", format!("{e}\n")),
        Err(e) => failure(&e),
    }
}

fn delete_tunnel_page(control: &Control, request: &Request<Body>, id: &str) -> Response<Body> {
    admin_session_page(control, request, |visitor, state| {
        let who = Some((&visitor.user, visitor.session.csrf.as_str()));
        match state.tunnels.iter().find(|t| t.id == id) {
            Some(tunnel) => (
                200,
                pages::confirm_page(
                    (&visitor.user, &visitor.session.csrf),
                    &format!("Delete {}?", tunnel.label()),
                    "Gateways stop serving it within a second; its certificate is kept until it expires.",
                    &format!("/tunnels/{id}/delete"),
                    "Delete tunnel",
                    "/tunnels",
                ),
            ),
            None => (
                404,
                pages::layout(
                    "No such tunnel",
                    who,
                    maud::html! { div.card { p { "This tunnel does not exist (any more). " a href="/tunnels" { "Back to the tunnels." } } } },
                ),
            ),
        }
    })
}

fn delete_tunnel(control: &Control, request: &Request<()>, form: Form, id: &str) -> Response<Body> {
    if let Err(refusal) = acting_admin(control, request, &form) {
        return refusal.response();
    }
    match control.store.delete_tunnel(id) {
        Ok(()) => redirect("/tunnels"),
        Err(e @ Error::NotFound { .. }) => respond(404, "text/plain", format!("{e}\n")),
        Err(e) => failure(&e),
    }
}

fn nodes_page(control: &Control, request: &Request<Body>, kind: NodeKind) -> Response<Body> {
    session_page(control, request, |visitor, state| {
        let rows = pages::nodes::rows(state, &control.hub, kind);
        // The gateways page also shows which agent reaches which gateway.
        let agents = match kind {
            NodeKind::Gateway => pages::nodes::rows(state, &control.hub, NodeKind::Agent),
            NodeKind::Agent => Vec::new(),
        };
        let matrix = (kind == NodeKind::Gateway).then(|| pages::nodes::Matrix {
            agents: &agents,
            gateways: &rows,
        });
        let page = pages::nodes::list_page(
            &visitor.user,
            &visitor.session.csrf,
            kind,
            &rows,
            matrix,
            auth::unix_now(),
        );
        (200, page)
    })
}

fn new_node_page(control: &Control, request: &Request<Body>, kind: NodeKind) -> Response<Body> {
    admin_session_page(control, request, |visitor, _| {
        let page = pages::nodes::new_page(&visitor.user, &visitor.session.csrf, kind, "", None);
        (200, page)
    })
}

/// Enrol a node and show its key and install snippets, once.
fn enrol(control: &Control, request: &Request<()>, form: Form, kind: NodeKind) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let name = text(&form, "name").trim();
    let (user, csrf) = (&visitor.user, visitor.session.csrf.as_str());
    if let Err(why) = crate::model::check_name(name) {
        return html(
            400,
            pages::nodes::new_page(user, csrf, kind, name, Some(why)),
        );
    }
    match control.store.create_node(kind, name.to_string()) {
        Ok((record, api_key)) => {
            let heading = format!("{} is enrolled", record.name);
            new_key_page(control, &visitor, kind, &heading, &api_key, 201)
        }
        Err(e) => failure(&e),
    }
}

/// One parameter of the request's query string.
fn query_param<B>(request: &Request<B>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.chars().take(4096).collect())
}

fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `/access?origin=https://app.example.com&return=/path`: a gateway sent a browser here to
/// log in to a tunnel open to Control users. With a session, and if the user may open the
/// tunnel, the browser goes back with a signed assertion; without one, it logs in first.
fn tunnel_login(control: &Control, request: &Request<Body>) -> Response<Body> {
    let origin = query_param(request, "origin").unwrap_or_default();
    let return_to = local_path(query_param(request, "return").as_deref());
    // The gateway's state for the browser that began the login, passed back as it is.
    let login_state = query_param(request, "state")
        .filter(|s| s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_default();
    let state = match control.store.state() {
        Ok(state) => state,
        Err(e) => return failure(&e),
    };
    let (scheme, authority) = origin.split_once("://").unwrap_or(("", ""));
    let hostname = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(authority, |(host, _)| host);
    // Tunnels that split a hostname by path: the one serving the return path.
    let tunnel = state
        .tunnels
        .iter()
        .filter(|t| {
            t.hostname.as_ref().is_some_and(|h| h.as_str() == hostname)
                && t.enabled
                && t.access.has_user_login()
                && (scheme == "https"
                    || (scheme == "http" && t.issuer == crate::model::Issuer::None))
                && t.serves_path(&return_to)
        })
        .max_by_key(|t| t.path_prefix.as_ref().map_or(0, String::len));
    let Some(tunnel) = tunnel else {
        return html(404, pages::access::no_tunnel(hostname));
    };
    if !returns_to_a_gateway(&state, tunnel, scheme, authority) {
        return html(404, pages::access::no_tunnel(hostname));
    }
    let visitor = match current(control, request) {
        Ok(Some(visitor)) => visitor,
        Ok(None) => {
            let here = request.uri().path_and_query().map_or("/", |p| p.as_str());
            return redirect(&format!("/login?{}", query(&[("next", here)])));
        }
        Err(e) => return failure(&e),
    };
    if !tunnel.access.admits_user(&visitor.user) {
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
        .filter(|n| n.kind == NodeKind::Gateway && !n.disabled && tunnel.gateways.selects(n))
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

/// A tunnel's access rules page (administrators only). `form` is a refused form to show
/// again with its error; `new_token` a service token just made.
fn rules_page(
    visitor: &Visitor,
    state: &crate::model::State,
    id: &str,
    form: Option<&pages::access::RulesForm>,
    new_token: Option<(&str, &str)>,
    saved: bool,
) -> (u16, Markup) {
    let who = (&visitor.user, visitor.session.csrf.as_str());
    let Some(tunnel) = state.tunnels.iter().find(|t| t.id == id) else {
        return (404, status_page(who, 404));
    };
    let rules = &tunnel.access;
    let lines = |items: Vec<String>| items.join("\n");
    let (users, allow, deny, bypass) = (
        rules.users.join(", "),
        lines(rules.allow_ips.iter().map(ToString::to_string).collect()),
        lines(rules.deny_ips.iter().map(ToString::to_string).collect()),
        lines(rules.bypass.clone()),
    );
    let hours = rules
        .session_hours
        .unwrap_or(kakuremichi_proto::access::DEFAULT_SESSION_HOURS)
        .to_string();
    let stored = pages::access::RulesForm {
        users: &users,
        admins: rules.roles.contains(&Role::Admin),
        members: rules.roles.contains(&Role::Member),
        has_password: rules.password_hash.is_some(),
        allow_ips: &allow,
        deny_ips: &deny,
        bypass: &bypass,
        session_hours: &hours,
        error: None,
    };
    let now = auth::unix_now();
    let tokens: Vec<pages::access::TokenRow> = rules
        .service_tokens
        .iter()
        .map(|t| pages::access::TokenRow {
            id: &t.id,
            name: &t.name,
            created: pages::ago(t.created_at, now),
        })
        .collect();
    let status = match (form, new_token) {
        (Some(_), _) => 400,
        (_, Some(_)) => 201,
        _ => 200,
    };
    // A refused form shows what was sent, with the tunnel's real password state.
    let shown = form.map(|sent| pages::access::RulesForm {
        has_password: stored.has_password,
        ..*sent
    });
    let page = pages::access::rules_page(
        who,
        (id, &tunnel.label()),
        shown.as_ref().unwrap_or(&stored),
        &tokens,
        new_token,
        saved,
    );
    (status, page)
}

/// Save a tunnel's access rules (`action` empty), create a service token (`tokens`) or
/// revoke one (`tokens/{id}/revoke`).
fn change_access(
    control: &Control,
    request: &Request<()>,
    form: Form,
    id: &str,
    action: &[String],
) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let back = format!("/tunnels/{id}/access");
    let action: Vec<&str> = action.iter().map(String::as_str).collect();
    let mut new_token = None;
    let outcome = match action.as_slice() {
        [] => {
            let value = crate::access::form_json(|name| text(&form, name));
            let saved = control.store.state().and_then(|state| {
                let tunnel = state
                    .tunnels
                    .iter()
                    .find(|t| t.id == id)
                    .ok_or_else(|| Error::not_found("tunnel", id))?;
                let mut access = tunnel.access.clone();
                access.apply_json(&value)?;
                let patch = crate::store::TunnelPatch {
                    access: Some(access),
                    ..Default::default()
                };
                control.store.update_tunnel(id, patch)
            });
            match saved {
                Err(e) if e.field().is_some() => {
                    let message = e.reason();
                    let field_name = e.field().unwrap_or_default();
                    let shown = pages::access::RulesForm {
                        users: text(&form, "users"),
                        admins: text(&form, "role_admin") == "true",
                        members: text(&form, "role_member") == "true",
                        has_password: false,
                        allow_ips: text(&form, "allow_ips"),
                        deny_ips: text(&form, "deny_ips"),
                        bypass: text(&form, "bypass"),
                        session_hours: text(&form, "session_hours"),
                        error: Some((field_name, &message)),
                    };
                    return match control.store.state() {
                        Ok(state) => {
                            let (status, page) =
                                rules_page(&visitor, &state, id, Some(&shown), None, false);
                            html(status, page)
                        }
                        Err(e) => failure(&e),
                    };
                }
                other => other.map(|_| ()),
            }
        }
        ["tokens"] => control
            .store
            .add_service_token(id, text(&form, "name").trim())
            .map(|made| new_token = Some(made)),
        ["tokens", token_id, "revoke"] => control.store.revoke_service_token(id, token_id),
        _ => return respond(404, "text/plain", "not found\n"),
    };
    match outcome {
        Ok(()) => {
            let Some((record, token)) = new_token else {
                // Saved rules say so on the page they return to.
                return match action.as_slice() {
                    [] => redirect(&format!("{back}?saved=1")),
                    _ => redirect(&back),
                };
            };
            match control.store.state() {
                Ok(state) => {
                    let shown = Some((record.name.as_str(), token.as_str()));
                    let (status, page) = rules_page(&visitor, &state, id, None, shown, false);
                    let mut response = html(status, page);
                    response.headers_mut().insert(
                        hyper::header::CACHE_CONTROL,
                        HeaderValue::from_static("no-store"),
                    );
                    response
                }
                Err(e) => failure(&e),
            }
        }
        Err(e @ (Error::NotFound { .. } | Error::Invalid { .. })) => {
            respond(e.status(), "text/plain", format!("{}\n", e.reason()))
        }
        Err(e) => failure(&e),
    }
}

fn rotate_access_keys(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    if let Err(refusal) = acting_admin(control, request, &form) {
        return refusal.response();
    }
    match control.store.rotate_access_keys() {
        Ok(()) => redirect("/tunnels"),
        Err(e) => failure(&e),
    }
}

/// The node kind a path's first segment names.
fn node_kind(segment: &str) -> Option<NodeKind> {
    match segment {
        "agents" => Some(NodeKind::Agent),
        "gateways" => Some(NodeKind::Gateway),
        _ => None,
    }
}

/// `/agents/{id}` and `/gateways/{id}`: a node's page, its confirmations and its actions.
async fn node_route(
    control: &Control,
    request: Request<Body>,
    kind: NodeKind,
    id: &str,
    action: &[&str],
) -> Option<Response<Body>> {
    let method = request.method().clone();
    Some(match (method, action) {
        (Method::GET, []) => session_page(control, &request, |visitor, state| {
            node_page(control, visitor, state, kind, id, NodeNotes::default())
        }),
        (Method::GET, [action @ ("rotate-key" | "delete")]) => {
            confirm_node_page(control, &request, kind, id, action)
        }
        (Method::POST, [action]) => {
            let action = action.to_string();
            guarded(control, request, |c, r, f| {
                change_node(c, r, f, kind, id, &action)
            })
            .await
        }
        _ => return None,
    })
}

/// What a node's page says beside the node: a refused rename, or why an action was refused.
#[derive(Default)]
struct NodeNotes<'a> {
    /// The rename field's value and its error.
    name: Option<(&'a str, &'a str)>,
    refusal: Option<&'a str>,
}

fn node_page(
    control: &Control,
    visitor: &Visitor,
    state: &crate::model::State,
    kind: NodeKind,
    id: &str,
    notes: NodeNotes,
) -> (u16, Markup) {
    let who = (&visitor.user, visitor.session.csrf.as_str());
    let Some(node) = state.nodes.iter().find(|n| n.id == id && n.kind == kind) else {
        return (404, missing_page(who, kind));
    };
    let row = pages::nodes::row(state, &control.hub, node);
    let detail = pages::nodes::Detail {
        row: &row,
        kind,
        tunnels: state
            .tunnels
            .iter()
            .filter(|t| t.target_on(id).is_some())
            .map(|t| t.label())
            .collect(),
        name: notes.name.map_or(node.name.as_str(), |(value, _)| value),
        name_error: notes.name.map(|(_, error)| error),
        refusal: notes.refusal,
    };
    let status = match (&notes.name, &notes.refusal) {
        (Some(_), _) => 400,
        (_, Some(_)) => 409,
        _ => 200,
    };
    let page = pages::nodes::detail_page(who.0, who.1, &detail, auth::unix_now());
    (status, page)
}

fn missing_page(who: (&UserRecord, &str), kind: NodeKind) -> Markup {
    let (title, path) = pages::nodes::names(kind);
    pages::layout(
        &format!("No such {}", kind.as_str()),
        Some(who),
        maud::html! { div.card { p { "This " (kind.as_str()) " does not exist (any more). " a href=(path) { "Back to " (title.to_lowercase()) "." } } } },
    )
}

fn confirm_node_page(
    control: &Control,
    request: &Request<Body>,
    kind: NodeKind,
    id: &str,
    action: &str,
) -> Response<Body> {
    admin_session_page(control, request, |visitor, state| {
        let who = (&visitor.user, visitor.session.csrf.as_str());
        let Some(node) = state.nodes.iter().find(|n| n.id == id && n.kind == kind) else {
            return (404, missing_page(who, kind));
        };
        let base = format!("{}/{id}", pages::nodes::names(kind).1);
        let (title, explanation, button) = match action {
            "rotate-key" => (
                format!("Give {} a new API key?", node.name),
                "The old key stops working at once and the node's connection to Control ends. \
                 Tunnels keep serving, but the node gets no new config until it is restarted \
                 with the new key, which the next page shows once.",
                "Rotate API key",
            ),
            _ => (
                format!("Delete {}?", node.name),
                "Its key stops working at once and it stops serving; this cannot be undone. \
                 An agent that still carries tunnels is not deleted.",
                "Delete",
            ),
        };
        let page = pages::confirm_page(
            who,
            &title,
            explanation,
            &format!("{base}/{action}"),
            button,
            &base,
        );
        (200, page)
    })
}

/// Rename (`name`), disable or enable (`enabled`), rotate the key of, or delete a node.
fn change_node(
    control: &Control,
    request: &Request<()>,
    form: Form,
    kind: NodeKind,
    id: &str,
    action: &str,
) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let state = match control.store.state() {
        Ok(state) => state,
        Err(e) => return failure(&e),
    };
    let Some(node) = state.nodes.iter().find(|n| n.id == id && n.kind == kind) else {
        let who = (&visitor.user, visitor.session.csrf.as_str());
        return html(404, missing_page(who, kind));
    };
    let base = format!("{}/{id}", pages::nodes::names(kind).1);
    let show = |notes| {
        let (status, page) = node_page(control, &visitor, &state, kind, id, notes);
        html(status, page)
    };
    let outcome = match action {
        "name" => {
            let name = text(&form, "name").trim();
            if let Err(why) = crate::model::check_name(name) {
                return show(NodeNotes {
                    name: Some((name, why)),
                    refusal: None,
                });
            }
            let name = name.to_string();
            control
                .store
                .update_node(id, |node| node.name = name)
                .map(|_| redirect(&base))
        }
        "labels" if kind == NodeKind::Gateway => {
            let labels =
                match crate::fleet::labels_from_json(&serde_json::json!(text(&form, "labels"))) {
                    Ok(labels) => labels,
                    Err(e) => {
                        let refusal = format!("Labels not saved: {}.", e.reason());
                        return show(NodeNotes {
                            name: None,
                            refusal: Some(&refusal),
                        });
                    }
                };
            control
                .store
                .update_node(id, |node| node.labels = labels)
                .map(|_| redirect(&base))
        }
        "draining" if kind == NodeKind::Gateway => {
            let draining = text(&form, "draining") == "true";
            control
                .store
                .update_node(id, |node| node.draining = draining)
                .map(|_| redirect(&base))
        }
        "enabled" => {
            let disabled = text(&form, "enabled") != "true";
            control
                .store
                .update_node(id, |node| node.disabled = disabled)
                .map(|_| redirect(&base))
        }
        "rotate-key" => control.store.rotate_node_key(id).map(|(node, api_key)| {
            let heading = format!("{} has a new API key", node.name);
            new_key_page(control, &visitor, kind, &heading, &api_key, 200)
        }),
        "delete" => match control.store.delete_node(id) {
            Err(Error::Conflict { message, .. }) => {
                let refusal = format!("{} was not deleted: {message}.", node.name);
                return show(NodeNotes {
                    name: None,
                    refusal: Some(&refusal),
                });
            }
            deleted => deleted.map(|_| redirect(pages::nodes::names(kind).1)),
        },
        _ => return respond(404, "text/plain", "not found\n"),
    };
    match outcome {
        Ok(response) => response,
        Err(e) => failure(&e),
    }
}

/// The one page that shows a node's API key, with install snippets carrying it.
fn new_key_page(
    control: &Control,
    visitor: &Visitor,
    kind: NodeKind,
    heading: &str,
    api_key: &str,
    status: u16,
) -> Response<Body> {
    let snippets = crate::install::snippets(
        kind,
        &control.public_url,
        api_key,
        !control.releases.is_empty(),
    );
    let (user, csrf) = (&visitor.user, visitor.session.csrf.as_str());
    let warning = crate::install::loopback_warning(&control.public_url);
    let page = pages::nodes::key_page(
        user,
        csrf,
        kind,
        heading,
        api_key,
        &snippets,
        warning.as_deref(),
    );
    let mut response = html(status, page);
    // The key must not linger in caches or history.
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// A page only administrators see, rendered from the store by `render`.
fn admin_page(
    control: &Control,
    request: &Request<Body>,
    render: impl FnOnce(&UserRecord, &str) -> Result<Markup, Error>,
) -> Response<Body> {
    admin_session_page(control, request, |visitor, _| {
        let who = (&visitor.user, visitor.session.csrf.as_str());
        match render(who.0, who.1) {
            Ok(page) => (200, page),
            Err(e) => {
                log::error!("page: {e}");
                (500, status_page(who, 500))
            }
        }
    })
}

fn users_page(control: &Control, request: &Request<Body>) -> Response<Body> {
    admin_page(control, request, |user, csrf| {
        let users = control.store.users()?;
        Ok(pages::users::list_page(user, csrf, &users, "", None))
    })
}

fn forbidden_page(who: (&UserRecord, &str)) -> Markup {
    status_page(who, 403)
}

/// The one page for a refusal, a missing object and a failure, by status.
fn status_page(who: (&UserRecord, &str), status: u16) -> Markup {
    let (title, text) = match status {
        403 => ("Not allowed", "Only administrators may see this page."),
        404 => ("Not found", "Nothing is here: it may have been deleted."),
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

fn add_user(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let (user, csrf) = (&visitor.user, visitor.session.csrf.as_str());
    let name = text(&form, "name").trim();
    let role = match text(&form, "role") {
        "admin" => Role::Admin,
        _ => Role::Member,
    };
    let secret = password::generate();
    let created = password::hash(&secret)
        .map_err(Error::Store)
        .and_then(|hash| control.store.create_user(name, role, hash, false));
    match created {
        Ok(added) => html(
            201,
            pages::users::password_page(user, csrf, &added.name, &secret),
        ),
        Err(e) if e.field().is_some() => match control.store.users() {
            Ok(users) => html(
                400,
                pages::users::list_page(user, csrf, &users, name, Some(&e.reason())),
            ),
            Err(e) => failure(&e),
        },
        Err(e) => failure(&e),
    }
}

/// Disable or enable (`disabled`), reset the password of (`password`), or delete a user.
fn change_user(
    control: &Control,
    request: &Request<()>,
    form: Form,
    id: &str,
    action: &str,
) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    if id == visitor.user.id {
        return respond(403, "text/plain", "refused: not on your own account here\n");
    }
    let result = match action {
        "disabled" => {
            let disabled = text(&form, "disabled") == "true";
            control
                .store
                .update_user(id, |u| u.disabled = disabled)
                .map(|_| None)
        }
        "password" => {
            let secret = password::generate();
            password::hash(&secret)
                .map_err(Error::Store)
                .and_then(|hash| control.store.update_user(id, |u| u.password_hash = hash))
                .map(|changed| Some((changed.name, secret)))
        }
        "delete" => control.store.delete_user(id).map(|()| None),
        _ => return respond(404, "text/plain", "not found\n"),
    };
    match result {
        Ok(None) => redirect("/users"),
        Ok(Some((name, secret))) => html(
            200,
            pages::users::password_page(&visitor.user, &visitor.session.csrf, &name, &secret),
        ),
        Err(e @ (Error::NotFound { .. } | Error::Conflict { .. })) => {
            respond(e.status(), "text/plain", format!("{}\n", e.reason()))
        }
        Err(e) => failure(&e),
    }
}

fn delete_user_page(control: &Control, request: &Request<Body>, id: &str) -> Response<Body> {
    admin_session_page(control, request, |visitor, _| {
        let who = (&visitor.user, visitor.session.csrf.as_str());
        match control.store.user(id) {
            Ok(Some(user)) => (
                200,
                pages::confirm_page(
                    who,
                    &format!("Delete {}?", user.name),
                    "Their sessions end at once; this cannot be undone.",
                    &format!("/users/{id}/delete"),
                    "Delete user",
                    "/users",
                ),
            ),
            Ok(_) => (404, status_page(who, 404)),
            Err(e) => {
                log::error!("page: {e}");
                (500, status_page(who, 500))
            }
        }
    })
}

fn account_page<B>(
    control: &Control,
    request: &Request<B>,
    error: Option<(&str, &str)>,
    notice: Option<&str>,
) -> Response<Body> {
    let visitor = match current(control, request) {
        Ok(Some(visitor)) => visitor,
        Ok(None) => return redirect("/login"),
        Err(e) => return failure(&e),
    };
    let sessions = match control.store.sessions_of(&visitor.user.id) {
        Ok(sessions) => sessions,
        Err(e) => return failure(&e),
    };
    let enrolment = visitor.session.totp_enrolment.as_deref().map(|secret| {
        let uri = auth::totp::uri(secret, &visitor.user.name, "kakuremichi");
        (secret, auth::totp::qr_svg(&uri).unwrap_or_default())
    });
    let two_factor = match (&visitor.user.totp_secret, &enrolment) {
        (Some(_), _) => pages::account::TwoFactor::On {
            recovery_codes_left: visitor.user.recovery_codes.len(),
        },
        (None, Some((secret, qr_svg))) => pages::account::TwoFactor::Enrolling { secret, qr_svg },
        (None, None) => pages::account::TwoFactor::Off,
    };
    let view = pages::account::AccountView {
        current_session: &visitor.session.id,
        sessions: &sessions,
        two_factor,
        error,
        notice,
        now: auth::unix_now(),
    };
    html(
        if error.is_some() { 400 } else { 200 },
        pages::account::page(&visitor.user, &visitor.session.csrf, &view),
    )
}

/// The logged-in visitor behind a state-changing form, checked against the session's token.
fn acting_self(control: &Control, request: &Request<()>, form: &Form) -> Result<Visitor, Refusal> {
    let visitor = current(control, request)
        .map_err(Refusal::Failed)?
        .ok_or(Refusal::NoSession)?;
    if !sessions::same_secret(text(form, "csrf"), &visitor.session.csrf) {
        return Err(Refusal::Forbidden(
            "the form's token is wrong; reload the page",
        ));
    }
    Ok(visitor)
}

/// The account page with an error on section `section`, unless the form's `current` field is
/// the visitor's password (asked again before changing a password or turning off 2FA).
fn unless_current_password(
    control: &Control,
    request: &Request<()>,
    visitor: &Visitor,
    form: &Form,
    section: &str,
) -> Option<Response<Body>> {
    let known = password::verify(text(form, "current"), &visitor.user.password_hash);
    (!known).then(|| {
        account_page(
            control,
            request,
            Some((section, "This is not your current password.")),
            None,
        )
    })
}

fn change_password(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    let visitor = match acting_self(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    if let Some(refused) = unless_current_password(control, request, &visitor, &form, "password") {
        return refused;
    }
    let new = text(&form, "password");
    if let Err(why) = password::check_policy(new) {
        return account_page(
            control,
            request,
            Some(("password", &format!("New password: {why}."))),
            None,
        );
    }
    if new != text(&form, "confirm") {
        return account_page(
            control,
            request,
            Some(("password", "The two new passwords differ.")),
            None,
        );
    }
    let (user_id, this_session) = (visitor.user.id.clone(), visitor.session.id.clone());
    let changed = password::hash(new)
        .map_err(Error::Store)
        .and_then(|hash| {
            control
                .store
                .update_user_keeping(&user_id, Some(&this_session), |u| u.password_hash = hash)
        })
        .map(|_| ());
    match changed {
        Ok(()) => account_page(
            control,
            request,
            None,
            Some("Password changed; your other sessions have ended."),
        ),
        Err(e) => failure(&e),
    }
}

fn end_session(control: &Control, request: &Request<()>, form: Form, id: &str) -> Response<Body> {
    let visitor = match acting_self(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let user_id = visitor.user.id.clone();
    match control
        .store
        .end_sessions(|s| s.user_id == user_id && s.id == id)
    {
        Ok(()) => redirect("/account"),
        Err(e) => failure(&e),
    }
}

fn tokens_page(control: &Control, request: &Request<Body>) -> Response<Body> {
    admin_page(control, request, |user, csrf| {
        let tokens = control.store.tokens()?;
        Ok(pages::tokens::list_page(
            user,
            csrf,
            &tokens,
            None,
            auth::unix_now(),
        ))
    })
}

fn create_token(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    let visitor = match acting_admin(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let (user, csrf) = (&visitor.user, visitor.session.csrf.as_str());
    let name = text(&form, "name").trim();
    let expires_at = text(&form, "expires_days")
        .parse::<u64>()
        .ok()
        .map(|days| auth::unix_now() + days.min(3650) * 86_400);
    let scope = match text(&form, "scope") {
        "read" => crate::model::TokenScope::Read,
        _ => crate::model::TokenScope::Admin,
    };
    match control.store.create_token(name, expires_at, scope) {
        Ok((record, token)) => {
            let mut response = html(
                201,
                pages::tokens::created_page(user, csrf, &record.name, &token),
            );
            response.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(e) if e.field().is_some() => match control.store.tokens() {
            Ok(tokens) => html(
                400,
                pages::tokens::list_page(user, csrf, &tokens, Some(&e.reason()), auth::unix_now()),
            ),
            Err(e) => failure(&e),
        },
        Err(e) => failure(&e),
    }
}

fn revoke_token(control: &Control, request: &Request<()>, form: Form, id: &str) -> Response<Body> {
    if let Err(refusal) = acting_admin(control, request, &form) {
        return refusal.response();
    }
    match control.store.revoke_token(id) {
        Ok(()) => redirect("/tokens"),
        Err(e @ Error::NotFound { .. }) => respond(404, "text/plain", format!("{e}\n")),
        Err(e) => failure(&e),
    }
}

/// A session whose password step passed and whose second factor is due, with its token.
fn awaiting<B>(
    control: &Control,
    request: &Request<B>,
) -> Result<Option<(String, SessionRecord, UserRecord)>, Error> {
    let Some(token) = sessions::token_from_cookies(request.headers().get(COOKIE)) else {
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
        .map(|(session, user)| (token.to_string(), session, user)))
}

fn second_factor(
    control: &Control,
    request: &Request<()>,
    form: Form,
    address: &str,
) -> Response<Body> {
    let (token, user) = match awaiting(control, request) {
        Ok(Some((token, _, user))) => (token, user),
        Ok(None) => return redirect("/login"),
        Err(e) => return failure(&e),
    };
    let account_key = format!("user:{}", user.name);
    let address_key = throttle_address(address);
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

fn start_totp(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    if let Err(refusal) = acting_self(control, request, &form) {
        return refusal.response();
    }
    let token = sessions::token_from_cookies(request.headers().get(COOKIE)).unwrap_or("");
    let started = auth::totp::new_secret()
        .map_err(Error::Store)
        .and_then(|secret| {
            control
                .store
                .update_session(token, |s| s.totp_enrolment = Some(secret))
        });
    match started {
        Ok(()) => redirect("/account"),
        Err(e) => failure(&e),
    }
}

fn confirm_totp(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    let visitor = match acting_self(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    let Some(secret) = visitor.session.totp_enrolment.clone() else {
        return redirect("/account");
    };
    if auth::totp::verify(&secret, text(&form, "code"), auth::unix_now()).is_none() {
        return account_page(
            control,
            request,
            Some((
                "totp",
                "That code is not right; check the app's clock and try the next one.",
            )),
            None,
        );
    }
    let token = sessions::token_from_cookies(request.headers().get(COOKIE)).unwrap_or("");
    let codes = match auth::totp::new_recovery_codes() {
        Ok(codes) => codes,
        Err(e) => return failure(&Error::Store(e)),
    };
    let user_id = &visitor.user.id;
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| auth::totp::recovery_hash(user_id, c))
        .collect();
    let saved = control
        .store
        .update_user(&visitor.user.id, |u| {
            u.totp_secret = Some(secret);
            u.recovery_codes = hashes;
        })
        .and_then(|_| {
            control
                .store
                .update_session(token, |s| s.totp_enrolment = None)
        });
    match saved {
        Ok(()) => html(
            200,
            pages::account::recovery_page(&visitor.user, &visitor.session.csrf, &codes),
        ),
        Err(e) => failure(&e),
    }
}

fn totp_off(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    let visitor = match acting_self(control, request, &form) {
        Ok(visitor) => visitor,
        Err(refusal) => return refusal.response(),
    };
    if let Some(refused) = unless_current_password(control, request, &visitor, &form, "totp") {
        return refused;
    }
    match control.store.update_user(&visitor.user.id, |u| {
        u.totp_secret = None;
        u.recovery_codes.clear();
    }) {
        Ok(_) => account_page(control, request, None, Some("Two-factor login is off.")),
        Err(e) => failure(&e),
    }
}

fn certificates_page<B>(
    control: &Control,
    request: &Request<B>,
    upload_error: Option<&str>,
) -> Response<Body> {
    session_page(control, request, |visitor, state| {
        let mut certificates: Vec<&crate::model::CertRecord> = state.certificates.iter().collect();
        certificates.sort_by(|a, b| a.hostname.as_str().cmp(b.hostname.as_str()));
        let missing: Vec<(String, crate::model::Issuer)> =
            crate::model::hostnames_without_certificate(state)
                .into_iter()
                .map(|(hostname, issuer)| (hostname.to_string(), issuer))
                .collect();
        let page = pages::certificates::page(
            &visitor.user,
            &visitor.session.csrf,
            (&certificates, &missing),
            upload_error,
            auth::unix_now(),
        );
        (if upload_error.is_some() { 400 } else { 200 }, page)
    })
}

fn upload_certificate(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    if let Err(refusal) = acting_admin(control, request, &form) {
        return refusal.response();
    }
    let stored = text(&form, "hostname")
        .trim()
        .parse()
        .map_err(|e: kakuremichi_proto::ProtoError| Error::invalid("hostname", e.to_string()))
        .and_then(|hostname| {
            crate::api::store_manual_certificate(
                control,
                hostname,
                text(&form, "certificate_pem").to_string(),
                text(&form, "key_pem").to_string(),
            )
        });
    match stored {
        Ok(_) => redirect("/certificates"),
        Err(e) if e.field().is_some() => certificates_page(control, request, Some(&e.reason())),
        Err(e) => failure(&e),
    }
}

fn retry_certificate(
    control: &Control,
    request: &Request<()>,
    form: Form,
    hostname: &str,
) -> Response<Body> {
    if let Err(refusal) = acting_admin(control, request, &form) {
        return refusal.response();
    }
    match control.store.retry_certificate(hostname) {
        Ok(_) => redirect("/certificates"),
        Err(e @ Error::NotFound { .. }) => respond(404, "text/plain", format!("{e}\n")),
        Err(e) => failure(&e),
    }
}

type Form = HashMap<String, String>;

/// A form field's value, empty when absent.
fn text<'a>(form: &'a Form, name: &str) -> &'a str {
    form.get(name).map_or("", String::as_str)
}

/// Check where a state-changing request comes from, read its form, then run `action`.
async fn guarded<F>(control: &Control, request: Request<Body>, action: F) -> Response<Body>
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
    if !names_control(control, &request) {
        return respond(
            421,
            "text/plain",
            "refused: the Host header names none of Control's addresses (give Control its name with --public-url)\n",
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

fn setup(control: &Control, request: &Request<()>, form: Form, address: &str) -> Response<Body> {
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
            // The new user is news for the gateways (access rules admit users by role).
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

/// The throttle's address key for a client address as Control read it.
fn throttle_address(address: &str) -> String {
    match address.parse() {
        Ok(ip) => kakuremichi_proto::throttle::address_key(ip),
        Err(_) => format!("ip:{address}"),
    }
}

fn login(control: &Control, request: &Request<()>, form: Form, address: &str) -> Response<Body> {
    let name = text(&form, "name").trim();
    let secret = text(&form, "password");
    let next = text(&form, "next");
    let account_key = format!("user:{name}");
    let address_key = throttle_address(address);
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
            start_session(control, request, &user, address, &local_path(Some(next)))
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

fn logout(control: &Control, request: &Request<()>, form: Form) -> Response<Body> {
    match acting_self(control, request, &form) {
        Ok(visitor) => {
            let token = sessions::token_from_cookies(request.headers().get(COOKIE)).unwrap_or("");
            // Everywhere: every Control session and every tunnel session of the user.
            let ended = match text(&form, "everywhere") == "true" {
                true => control.store.end_all_sessions(&visitor.user.id),
                false => control.store.delete_session(token),
            };
            if let Err(e) = ended {
                return failure(&e);
            }
        }
        // Already logged out (or the session expired): only the cookie is left to clear.
        Err(Refusal::NoSession) => {}
        Err(refusal) => return refusal.response(),
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
    to: &str,
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

fn redirect(to: &str) -> Response<Body> {
    let mut response = respond(303, "text/plain", "");
    // Every target is a path built from our own ids, which are header-safe.
    let location = HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/"));
    response.headers_mut().insert(LOCATION, location);
    response
}

fn failure(e: &Error) -> Response<Body> {
    log::error!("page: {e}");
    respond(500, "text/plain", "internal error; see Control's log\n")
}
