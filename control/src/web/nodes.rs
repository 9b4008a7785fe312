//! Agents and gateways: the lists, enrolment with its key shown once, a node's page, and
//! renaming, disabling, draining, labelling, rotating the key of and deleting a node. The
//! pages are [`crate::pages::nodes`].

use super::{no_store, redirect, text, Form, Page};
use crate::auth;
use crate::error::Error;
use crate::model::{NodeRecord, State};
use crate::pages::{self, nodes};
use crate::routes::{FormResult, PageResult};
use crate::traffic::series::Range;
use crate::traffic::{this_minute, Scope};
use hyper::Response;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_rt::http::Body;

pub fn list(page: &Page, kind: NodeKind) -> PageResult {
    let state = page.state()?;
    let hub = &page.control.hub;
    let rows = nodes::rows(&state, hub, kind);
    // The gateways page also shows which agent reaches which gateway.
    let agents = match kind {
        NodeKind::Gateway => nodes::rows(&state, hub, NodeKind::Agent),
        NodeKind::Agent => Vec::new(),
    };
    let matrix = (kind == NodeKind::Gateway).then(|| nodes::Matrix {
        agents: &agents,
        gateways: &rows,
    });
    let (user, csrf) = page.who();
    let listed = nodes::list_page(user, csrf, kind, &rows, matrix, auth::unix_now());
    Ok((200, listed))
}

pub fn new_page(page: &Page, kind: NodeKind) -> PageResult {
    let (user, csrf) = page.who();
    Ok((200, nodes::new_page(user, csrf, kind, "", None)))
}

/// Enrol a node and show its key and install snippets, once.
pub fn enrol(page: &Page, form: &Form, kind: NodeKind) -> FormResult {
    let name = text(form, "name").trim();
    if let Err(why) = crate::model::check_name(name) {
        let (user, csrf) = page.who();
        return Ok(page.html(400, nodes::new_page(user, csrf, kind, name, Some(why))));
    }
    let (record, api_key) = page.control.store.create_node(kind, name.to_string())?;
    let heading = format!("{} is enrolled", record.name);
    Ok(key_page(page, kind, &heading, &api_key, 201))
}

/// What a node's page says beside the node: a refused rename, or why an action was refused.
#[derive(Default)]
struct Notes<'a> {
    /// The rename field's value and its error.
    name: Option<(&'a str, &'a str)>,
    refusal: Option<&'a str>,
}

fn find<'s>(state: &'s State, kind: NodeKind, id: &str) -> Result<&'s NodeRecord, Error> {
    state
        .nodes
        .iter()
        .find(|n| n.id == id && n.kind == kind)
        .ok_or_else(|| Error::not_found(kind.as_str(), id))
}

fn node_page(page: &Page, state: &State, kind: NodeKind, notes: Notes) -> PageResult {
    let id = page.param("id");
    let node = find(state, kind, id)?;
    let fleet = crate::fleet::Fleet::now(&page.control.hub, state);
    let row = nodes::row(state, &fleet, node);
    let detail = nodes::Detail {
        row: &row,
        kind,
        tunnels: state
            .tunnels
            .iter()
            .filter(|t| t.spec.target_on(id).is_some())
            .map(|t| t.label())
            .collect(),
        name: notes.name.map_or(node.name.as_str(), |(value, _)| value),
        name_error: notes.name.map(|(_, error)| error),
        refusal: notes.refusal,
        traffic: (page.control.traffic).series_of(
            state,
            match kind {
                NodeKind::Agent => Scope::Agent(id),
                NodeKind::Gateway => Scope::Gateway(id),
            },
            Range::parse(page.query("range").as_deref())?,
            this_minute(),
        )?,
    };
    let status = match (&notes.name, &notes.refusal) {
        (Some(_), _) => 400,
        (_, Some(_)) => 409,
        _ => 200,
    };
    let (user, csrf) = page.who();
    Ok((
        status,
        nodes::detail_page(user, csrf, &detail, auth::unix_now()),
    ))
}

/// The node's page again with `notes`, as a form's answer.
fn refused(page: &Page, state: &State, kind: NodeKind, notes: Notes) -> FormResult {
    let (status, markup) = node_page(page, state, kind, notes)?;
    Ok(page.html(status, markup))
}

pub fn detail(page: &Page, kind: NodeKind) -> PageResult {
    node_page(page, &*page.state()?, kind, Notes::default())
}

/// Where a node's page is.
fn base(page: &Page, kind: NodeKind) -> String {
    format!("{}/{}", nodes::names(kind).1, page.param("id"))
}

/// The question before rotating a key (`rotate-key`) or deleting a node (`delete`).
fn confirm_page(page: &Page, kind: NodeKind, action: &str) -> PageResult {
    let state = page.state()?;
    let node = find(&state, kind, page.param("id"))?;
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
    let base = base(page, kind);
    let action = format!("{base}/{action}");
    let question = pages::confirm_page(page.who(), &title, explanation, &action, button, &base);
    Ok((200, question))
}

pub fn rotate_key_page(page: &Page, kind: NodeKind) -> PageResult {
    confirm_page(page, kind, "rotate-key")
}

pub fn delete_page(page: &Page, kind: NodeKind) -> PageResult {
    confirm_page(page, kind, "delete")
}

/// Change the node of the call's path with `change`, then back to its page.
fn update(page: &Page, kind: NodeKind, change: impl FnOnce(&mut NodeRecord)) -> FormResult {
    find(&*page.state()?, kind, page.param("id"))?;
    page.control.store.update_node(page.param("id"), change)?;
    Ok(redirect(&base(page, kind)))
}

pub fn rename(page: &Page, form: &Form, kind: NodeKind) -> FormResult {
    let name = text(form, "name").trim();
    if let Err(why) = crate::model::check_name(name) {
        let notes = Notes {
            name: Some((name, why)),
            refusal: None,
        };
        return refused(page, &*page.state()?, kind, notes);
    }
    let name = name.to_string();
    update(page, kind, |node| node.name = name)
}

pub fn set_enabled(page: &Page, form: &Form, kind: NodeKind) -> FormResult {
    let disabled = text(form, "enabled") != "true";
    update(page, kind, |node| node.disabled = disabled)
}

pub fn set_labels(page: &Page, form: &Form) -> FormResult {
    let kind = NodeKind::Gateway;
    match crate::model::labels_from_json(&serde_json::Value::from(text(form, "labels"))) {
        Ok(labels) => update(page, kind, |node| node.labels = labels),
        Err(e) => {
            let refusal = format!("Labels not saved: {}.", e.reason());
            let notes = Notes {
                name: None,
                refusal: Some(&refusal),
            };
            refused(page, &*page.state()?, kind, notes)
        }
    }
}

pub fn set_draining(page: &Page, form: &Form) -> FormResult {
    let draining = text(form, "draining") == "true";
    update(page, NodeKind::Gateway, |node| node.draining = draining)
}

pub fn rotate_key(page: &Page, _: &Form, kind: NodeKind) -> FormResult {
    find(&*page.state()?, kind, page.param("id"))?;
    let (node, api_key) = page.control.store.rotate_node_key(page.param("id"))?;
    let heading = format!("{} has a new API key", node.name);
    Ok(key_page(page, kind, &heading, &api_key, 200))
}

pub fn delete(page: &Page, _: &Form, kind: NodeKind) -> FormResult {
    let state = page.state()?;
    let node = find(&state, kind, page.param("id"))?;
    match page.control.store.delete_node(&node.id) {
        Err(Error::Conflict { message, .. }) => {
            let refusal = format!("{} was not deleted: {message}.", node.name);
            let notes = Notes {
                name: None,
                refusal: Some(&refusal),
            };
            refused(page, &state, kind, notes)
        }
        deleted => deleted.map(|_| redirect(nodes::names(kind).1)),
    }
}

/// The one page that shows a node's API key, with install snippets carrying it.
fn key_page(
    page: &Page,
    kind: NodeKind,
    heading: &str,
    api_key: &str,
    status: u16,
) -> Response<Body> {
    let control = &page.control;
    let snippets = crate::install::snippets(
        kind,
        &control.public_url,
        api_key,
        !control.releases.is_empty(),
    );
    let (user, csrf) = page.who();
    let warning = crate::install::loopback_warning(&control.public_url);
    let markup = nodes::key_page(
        user,
        csrf,
        kind,
        heading,
        api_key,
        &snippets,
        warning.as_deref(),
    );
    no_store(page.html(status, markup))
}
