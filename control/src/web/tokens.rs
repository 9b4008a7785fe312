//! API tokens: the list, a new token shown once, revoking one. The pages are
//! [`crate::pages::tokens`].

use super::{no_store, redirect, text, Form, Page};
use crate::auth;
use crate::model::TokenScope;
use crate::pages;
use crate::routes::{FormResult, PageResult};

pub fn list(page: &Page) -> PageResult {
    let tokens = page.control.store.tokens()?;
    let (user, csrf) = page.who();
    let listed = pages::tokens::list_page(user, csrf, &tokens, None, auth::unix_now());
    Ok((200, listed))
}

pub fn create(page: &Page, form: &Form) -> FormResult {
    let (user, csrf) = page.who();
    let name = text(form, "name").trim();
    let expires_at = text(form, "expires_days")
        .parse::<u64>()
        .ok()
        .map(|days| auth::unix_now() + days.min(3650) * 86_400);
    let scope = match text(form, "scope") {
        "read" => TokenScope::Read,
        _ => TokenScope::Admin,
    };
    match page.control.store.create_token(name, expires_at, scope) {
        Ok((record, token)) => Ok(no_store(page.html(
            201,
            pages::tokens::created_page(user, csrf, &record.name, &token),
        ))),
        Err(e) if e.field().is_some() => {
            let tokens = page.control.store.tokens()?;
            let now = auth::unix_now();
            let again = pages::tokens::list_page(user, csrf, &tokens, Some(&e.reason()), now);
            Ok(page.html(400, again))
        }
        Err(e) => Err(e),
    }
}

pub fn revoke(page: &Page, _: &Form) -> FormResult {
    page.control.store.revoke_token(page.param("id"))?;
    Ok(redirect("/tokens"))
}
