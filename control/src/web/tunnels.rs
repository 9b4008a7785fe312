//! The dashboard and the tunnels: the list, a tunnel's own page, the form that creates and edits one, turning one
//! on or off, deleting one. Their pages are [`crate::pages::tunnels`] and
//! [`crate::pages::tunnel_form`].

use super::{redirect, text, Form, Page};
use crate::auth;
use crate::model::State;
use crate::model::TunnelSpec;
use crate::pages;
use crate::pages::tunnel_form::{self, Purpose, TunnelForm};
use crate::routes::{FormResult, PageResult};
use crate::spec::TunnelFields;
use crate::traffic::series::Range;
use crate::traffic::{this_minute, Scope};
use crate::Control;
use kakuremichi_proto::ids::NodeKind;

pub fn dashboard(page: &Page) -> PageResult {
    let state = page.state()?;
    let traffic = &page.control.traffic;
    let now = this_minute();
    let ids = || state.tunnels.iter().map(|t| t.id.as_str());
    let recent = traffic.recent(ids(), pages::dashboard::RECENT_MINUTES, now)?;
    let range = Range::parse(Some(page.query("range").as_deref().unwrap_or("24h")))?;
    let series = traffic.series_of(&state, Scope::All, range, now)?;
    let firing: Vec<crate::alerts::engine::Firing> = page
        .control
        .store
        .meta(crate::alerts::FIRING)?
        .unwrap_or_default();
    let hub = &page.control.hub;
    let overview = pages::dashboard::Overview::of(&state, hub, (&recent, &firing), series);
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

/// A tunnel's own page, with its traffic over `?range=` (the last hour by default).
pub fn detail(page: &Page) -> PageResult {
    let id = page.param("id");
    let state = page.state()?;
    state.tunnel(id)?;
    let range = Range::parse(page.query("range").as_deref())?;
    let series =
        (page.control.traffic).series_of(&state, Scope::Tunnel(id), range, this_minute())?;
    let rows = pages::tunnels::rows(&state, &page.control.hub, "", auth::unix_now());
    let row = rows
        .iter()
        .find(|row| row.id == id)
        .ok_or_else(|| crate::Error::not_found("tunnel", id))?;
    let (user, csrf) = page.who();
    Ok((200, pages::tunnel::page(user, csrf, row, &series)))
}

fn agent_choices(control: &Control, state: &State) -> Vec<tunnel_form::AgentChoice> {
    let mut agents: Vec<_> = state
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Agent)
        .map(|n| tunnel_form::AgentChoice {
            id: n.id.clone(),
            name: n.name.clone(),
            online: control.hub.is_online(&n.id),
        })
        .collect();
    agents.sort_by(|a, b| b.online.cmp(&a.online).then(a.name.cmp(&b.name)));
    agents
}

pub fn new_page(page: &Page) -> PageResult {
    let form = TunnelForm::new(page.control.default_issuer);
    form_page(page, &form, Purpose::Create)
}

pub fn edit_page(page: &Page) -> PageResult {
    let id = page.param("id");
    let state = page.state()?;
    let form = TunnelForm::of(TunnelFields::of(&state.tunnel(id)?.spec));
    form_page(page, &form, Purpose::Edit(id))
}

fn form_page(page: &Page, form: &TunnelForm, purpose: Purpose) -> PageResult {
    let (user, csrf) = page.who();
    let choices = agent_choices(&page.control, &*page.state()?);
    Ok((
        200,
        tunnel_form::form_page(user, csrf, &choices, form, purpose),
    ))
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
    let store = &page.control.store;
    let issuer = page.control.default_issuer;
    let mut shown = TunnelForm {
        values: form.clone(),
        error: None,
    };
    let saved = shown.fields().and_then(|fields| match id {
        None => store.create_tunnel(|nodes| fields.build(None, issuer, nodes)),
        Some(id) => store.update_tunnel(id, |current, nodes| {
            fields.build(Some(current), issuer, nodes)
        }),
    });
    let e = match saved {
        Ok(_) => return Ok(redirect("/tunnels")),
        Err(e) => e,
    };
    let Some(field_name) = e.field() else {
        return Err(e);
    };
    let message = e.reason();
    shown.error = Some((field_name, &message));
    let purpose = match id {
        None => Purpose::Create,
        Some(id) => Purpose::Edit(id),
    };
    let (status, again) = form_page(page, &shown, purpose)?;
    Ok(page.html(status.max(400), again))
}

pub fn set_enabled(page: &Page, form: &Form) -> FormResult {
    let enabled = text(form, "enabled") == "true";
    page.control
        .store
        .update_tunnel(page.param("id"), |current, _| {
            Ok(TunnelSpec {
                enabled,
                ..current.clone()
            })
        })?;
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
