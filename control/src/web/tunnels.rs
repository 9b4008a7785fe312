//! The dashboard and the tunnels: the list, the form that creates and edits one, turning one
//! on or off, deleting one. Their pages are [`crate::pages::tunnels`] and
//! [`crate::pages::tunnel_form`].

use super::{redirect, text, Form, Page};
use crate::auth;
use crate::error::Error;
use crate::model::State;
use crate::pages::{self, tunnel_form};
use crate::routes::{FormResult, PageResult};
use crate::spec::{self, Fields};
use crate::store::TunnelPatch;
use crate::Control;
use kakuremichi_proto::ids::NodeKind;
use serde_json::Value;

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
    let saved = form_fields(form).and_then(|fields| match id {
        None => {
            let new = spec::new_tunnel(control, fields)?;
            control.store.create_tunnel(new).map(|_| ())
        }
        Some(id) => {
            let state = control.store.state()?;
            let patch = spec::tunnel_patch(control, fields, state.tunnel(id)?)?;
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

/// The tunnel form as the object the API takes, so one reader ([`spec`]) checks both: every
/// field the form shows is sent (an edit changes them all), empty ones as "unchanged" or
/// "none" where the API says so. `agent=target, …` lines are the other agents.
fn form_fields(form: &Form) -> Result<Fields, Error> {
    let value = |name: &str| text(form, name).trim();
    let required = |name: &'static str| match value(name) {
        "" => Err(Error::invalid(name, "is required")),
        text => Ok(text),
    };
    let mut agents = vec![json_object([
        ("agent", Value::from(required("agent")?)),
        ("target", Value::from(required("target")?)),
    ])];
    for entry in value("replicas").split([',', '\n']).map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let (agent, target) = entry
            .split_once('=')
            .ok_or_else(|| Error::invalid("agents", format!("{entry:?} is not agent id=target")))?;
        agents.push(json_object([
            ("agent", Value::from(agent.trim())),
            ("target", Value::from(target.trim())),
        ]));
    }
    let connect_timeout =
        match value("connect_timeout") {
            "" => Value::Null,
            text => Value::from(text.parse::<u64>().map_err(|_| {
                Error::invalid("connect_timeout", "must be a whole number of seconds")
            })?),
        };
    let origin = json_object([
        (
            "tls_verify",
            Value::from(!form.contains_key("skip_tls_verify")),
        ),
        ("host_header", Value::from(value("host_header"))),
        ("connect_timeout_secs", connect_timeout),
    ]);
    let mut fields = serde_json::Map::new();
    for name in ["kind", "hostname", "ports", "issuer"] {
        if !value(name).is_empty() {
            fields.insert(name.into(), Value::from(value(name)));
        }
    }
    let or = |name: &str, empty: &str| match value(name) {
        "" => Value::from(empty),
        text => Value::from(text),
    };
    fields.insert("proxy_protocol".into(), or("proxy_protocol", "none"));
    fields.insert("path_prefix".into(), or("path_prefix", "/"));
    fields.insert("gateways".into(), or("gateways", "all"));
    fields.insert("agents".into(), Value::Array(agents));
    fields.insert("origin".into(), origin);
    fields.insert("enabled".into(), Value::from(form.contains_key("enabled")));
    Ok(Fields::new(fields))
}

fn json_object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
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
