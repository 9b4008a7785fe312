//! The dashboard and the tunnels: the list, the form that creates and edits one, turning one
//! on or off, deleting one. Their pages are [`crate::pages::tunnels`] and
//! [`crate::pages::tunnel_form`].

use super::{redirect, text, Form, Page};
use crate::auth;
use crate::error::Error;
use crate::model::State;
use crate::model::{OriginScheme, OriginSettings, TunnelKind};
use crate::pages::{self, tunnel_form};
use crate::routes::{FormResult, PageResult};
use crate::store::{NewTunnel, TunnelPatch};
use crate::Control;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::ports::PortRange;

pub fn dashboard(page: &Page) -> PageResult {
    let overview = pages::dashboard::Overview::of(&page.state()?, &page.control.hub);
    let (user, csrf) = page.who();
    Ok((200, pages::dashboard::page(user, csrf, &overview)))
}

pub fn list(page: &Page) -> PageResult {
    let filter: String = page
        .query("q")
        .map(|q| q.chars().take(200).collect())
        .unwrap_or_default();
    let state = page.state()?;
    let rows = pages::tunnels::rows(&state, &page.control.hub, &filter, auth::unix_now());
    let (user, csrf) = page.who();
    let listed = pages::tunnels::page(user, csrf, &filter, &rows, state.tunnels.len());
    Ok((200, listed))
}

fn agent_choices(control: &Control, state: &State) -> Vec<tunnel_form::AgentChoice> {
    let mut agents: Vec<_> = state
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Agent)
        .map(|n| tunnel_form::AgentChoice {
            id: n.id.clone(),
            name: n.name.clone(),
            online: control.hub.presence(&n.id).online,
        })
        .collect();
    agents.sort_by(|a, b| b.online.cmp(&a.online).then(a.name.cmp(&b.name)));
    agents
}

pub fn new_page(page: &Page) -> PageResult {
    let form = tunnel_form::TunnelForm {
        issuer: page.control.default_issuer.as_str(),
        enabled: true,
        ..Default::default()
    };
    let (user, csrf) = page.who();
    let choices = agent_choices(&page.control, &page.state()?);
    let shown = tunnel_form::form_page(user, csrf, &choices, &form, tunnel_form::Purpose::Create);
    Ok((200, shown))
}

pub fn edit_page(page: &Page) -> PageResult {
    let id = page.param("id");
    let state = page.state()?;
    let tunnel = state.tunnel(id)?;
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
    let form = tunnel_form::TunnelForm {
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
    let (user, csrf) = page.who();
    let choices = agent_choices(&page.control, &state);
    let shown = tunnel_form::form_page(user, csrf, &choices, &form, tunnel_form::Purpose::Edit(id));
    Ok((200, shown))
}

pub fn create(page: &Page, form: &Form) -> FormResult {
    save_tunnel(page, form, None)
}

pub fn save(page: &Page, form: &Form) -> FormResult {
    save_tunnel(page, form, Some(page.param("id")))
}

/// Create a tunnel (`id` none) or change tunnel `id` from the form; a field's error shows the
/// form again beside the field.
fn save_tunnel(page: &Page, form: &Form, id: Option<&str>) -> FormResult {
    let control = &page.control;
    let value = |name: &str| text(form, name).trim();
    let saved = parse_new_tunnel(control, form).and_then(|new| match id {
        None => control.store.create_tunnel(new).map(|_| ()),
        Some(id) => {
            let state = control.store.state()?;
            let current = state.tunnel(id)?;
            if current.kind != new.kind {
                return Err(Error::invalid(
                    "kind",
                    "a tunnel's kind cannot change; create a new tunnel",
                ));
            }
            // The form shows some origin settings; the rest (CA, error page) stay.
            let origin = OriginSettings {
                scheme: new.origin.scheme,
                tls_verify: new.origin.tls_verify,
                host_header: new.origin.host_header,
                connect_timeout_secs: new.origin.connect_timeout_secs,
                ..current.origin.clone()
            };
            let patch = TunnelPatch {
                hostname: new.hostname,
                ports: new.ports,
                agent_id: Some(new.agent_id),
                target: Some(new.target),
                replicas: Some(new.replicas),
                enabled: Some(new.enabled),
                issuer: Some(new.issuer),
                access: None,
                proxy_protocol: Some(new.proxy_protocol),
                origin: Some(origin),
                path_prefix: Some(new.path_prefix),
                gateways: Some(new.gateways),
            };
            control.store.update_tunnel(id, patch).map(|_| ())
        }
    });
    let e = match saved {
        Ok(()) => return Ok(redirect("/tunnels")),
        Err(e) => e,
    };
    let Some(field_name) = e.field() else {
        return Err(e);
    };
    let message = e.reason();
    let shown = tunnel_form::TunnelForm {
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
        None => tunnel_form::Purpose::Create,
        Some(id) => tunnel_form::Purpose::Edit(id),
    };
    let (user, csrf) = page.who();
    let choices = agent_choices(control, &page.state()?);
    let again = tunnel_form::form_page(user, csrf, &choices, &shown, purpose);
    Ok(page.html(400, again))
}

/// `agent=target, …` from the tunnel form: more agents with their targets, of the tunnel's
/// scheme.
fn parse_replicas(
    text: &str,
    ports: Option<PortRange>,
    scheme: OriginScheme,
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
fn parse_new_tunnel(control: &Control, form: &Form) -> Result<NewTunnel, Error> {
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
    Ok(NewTunnel {
        kind,
        hostname: match value("hostname") {
            "" => None,
            text => Some(text.parse().map_err(proto("hostname"))?),
        },
        ports,
        agent_id: parse("agent")?.to_string(),
        target,
        replicas: parse_replicas(value("replicas"), ports, scheme)?,
        origin: OriginSettings {
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
        gateways: crate::model::GatewayChoice::from_text(
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

pub fn set_enabled(page: &Page, form: &Form) -> FormResult {
    let patch = TunnelPatch {
        enabled: Some(text(form, "enabled") == "true"),
        ..Default::default()
    };
    page.control.store.update_tunnel(page.param("id"), patch)?;
    Ok(redirect("/tunnels"))
}

pub fn delete_page(page: &Page) -> PageResult {
    let id = page.param("id");
    let state = page.state()?;
    let tunnel = state.tunnel(id)?;
    let question = pages::confirm_page(
        page.who(),
        &format!("Delete {}?", tunnel.label()),
        "Gateways stop serving it within a second; its certificate is kept until it expires.",
        &format!("/tunnels/{id}/delete"),
        "Delete tunnel",
        "/tunnels",
    );
    Ok((200, question))
}

pub fn delete(page: &Page, _: &Form) -> FormResult {
    page.control.store.delete_tunnel(page.param("id"))?;
    Ok(redirect("/tunnels"))
}
