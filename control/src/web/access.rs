//! Who may open a tunnel: its access rules, its service tokens, and signing everyone out of
//! every tunnel (new login keys). The page is [`crate::pages::access`].

use super::{no_store, redirect, text, Form, Page};
use crate::auth::{self, Role};
use crate::pages::{self, access::RulesForm};
use crate::routes::{FormResult, PageResult};

/// A tunnel's access rules page. `form` is a refused form to show again with its error;
/// `new_token` a service token just made.
fn rules_page(
    page: &Page,
    form: Option<&RulesForm>,
    new_token: Option<(&str, &str)>,
    saved: bool,
) -> PageResult {
    let id = page.param("id");
    let state = page.state()?;
    let tunnel = state.tunnel(id)?;
    let rules = &tunnel.spec.access;
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
    let stored = RulesForm {
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
    let shown = form.map(|sent| RulesForm {
        has_password: stored.has_password,
        ..*sent
    });
    let markup = pages::access::rules_page(
        page.who(),
        (id, &tunnel.label()),
        shown.as_ref().unwrap_or(&stored),
        &tokens,
        new_token,
        saved,
    );
    Ok((status, markup))
}

pub fn rules(page: &Page) -> PageResult {
    rules_page(page, None, None, page.query("saved").is_some())
}

/// Save the rules; a field's error shows the page again beside the field.
pub fn save_rules(page: &Page, form: &Form) -> FormResult {
    let id = page.param("id");
    let value = crate::access::form_json(|name| text(form, name));
    let saved = page.control.store.update_tunnel(id, |current, _| {
        let mut spec = current.clone();
        spec.access.apply_json(&value)?;
        Ok(spec)
    });
    match saved {
        Ok(_) => Ok(redirect(&format!("/tunnels/{id}/access?saved=1"))),
        Err(e) => {
            let Some(field_name) = e.field() else {
                return Err(e);
            };
            let message = e.reason();
            let shown = RulesForm {
                users: text(form, "users"),
                admins: text(form, "role_admin") == "true",
                members: text(form, "role_member") == "true",
                has_password: false,
                allow_ips: text(form, "allow_ips"),
                deny_ips: text(form, "deny_ips"),
                bypass: text(form, "bypass"),
                session_hours: text(form, "session_hours"),
                error: Some((field_name, &message)),
            };
            let (status, markup) = rules_page(page, Some(&shown), None, false)?;
            Ok(page.html(status, markup))
        }
    }
}

/// A new service token, shown once on the rules page.
pub fn add_service_token(page: &Page, form: &Form) -> FormResult {
    let (record, token) = page
        .control
        .store
        .add_service_token(page.param("id"), text(form, "name").trim())?;
    let shown = Some((record.name.as_str(), token.as_str()));
    let (status, markup) = rules_page(page, None, shown, false)?;
    Ok(no_store(page.html(status, markup)))
}

pub fn revoke_service_token(page: &Page, _: &Form) -> FormResult {
    let id = page.param("id");
    page.control
        .store
        .revoke_service_token(id, page.param("token_id"))?;
    Ok(redirect(&format!("/tunnels/{id}/access")))
}

pub fn rotate_keys_page(page: &Page) -> PageResult {
    let question = pages::confirm_page(
        page.who(),
        "Sign everyone out of every tunnel?",
        "New keys for tunnel logins: every session made with a password or a Control \
         login on any tunnel ends within a second, and people log in again. \
         Service tokens keep working.",
        "/access/rotate-keys",
        "Sign everyone out",
        "/tunnels",
    );
    Ok((200, question))
}

pub fn rotate_keys(page: &Page, _: &Form) -> FormResult {
    page.control.store.rotate_access_keys()?;
    Ok(redirect("/tunnels"))
}
