//! People: the list, adding someone (their first password shown once), disabling, resetting
//! a password, deleting. The pages are [`crate::pages::users`].

use super::{redirect, text, Form, Page};
use crate::auth::{password, Role};
use crate::error::Error;
use crate::pages;
use crate::routes::{FormResult, PageResult};

pub fn list(page: &Page) -> PageResult {
    let users = page.control.store.users()?;
    let (user, csrf) = page.who();
    Ok((200, pages::users::list_page(user, csrf, &users, "", None)))
}

pub fn add(page: &Page, form: &Form) -> FormResult {
    let (user, csrf) = page.who();
    let name = text(form, "name").trim();
    let role = match text(form, "role") {
        "admin" => Role::Admin,
        _ => Role::Member,
    };
    let secret = password::generate();
    let created = password::hash(&secret)
        .map_err(Error::Store)
        .and_then(|hash| page.control.store.create_user(name, role, hash, false));
    match created {
        Ok(added) => Ok(page.html(
            201,
            pages::users::password_page(user, csrf, &added.name, &secret),
        )),
        Err(e) if e.field().is_some() => {
            let users = page.control.store.users()?;
            let again = pages::users::list_page(user, csrf, &users, name, Some(&e.reason()));
            Ok(page.html(400, again))
        }
        Err(e) => Err(e),
    }
}

/// The user of the path, unless it is the visitor: their own account changes on the account
/// page, where the current password is asked.
fn someone_else(page: &Page) -> Result<&str, Error> {
    match page.param("id") {
        id if id == page.visitor.user.id => Err(Error::Forbidden("not on your own account here")),
        id => Ok(id),
    }
}

pub fn set_disabled(page: &Page, form: &Form) -> FormResult {
    let id = someone_else(page)?;
    let disabled = text(form, "disabled") == "true";
    page.control
        .store
        .update_user(id, |u| u.disabled = disabled)?;
    Ok(redirect("/users"))
}

/// A new password for someone, shown once.
pub fn reset_password(page: &Page, _: &Form) -> FormResult {
    let id = someone_else(page)?;
    let secret = password::generate();
    let hash = password::hash(&secret).map_err(Error::Store)?;
    let changed = page
        .control
        .store
        .update_user(id, |u| u.password_hash = hash)?;
    let (user, csrf) = page.who();
    Ok(page.html(
        200,
        pages::users::password_page(user, csrf, &changed.name, &secret),
    ))
}

pub fn delete_page(page: &Page) -> PageResult {
    let id = page.param("id");
    let user = page
        .control
        .store
        .user(id)?
        .ok_or_else(|| Error::not_found("user", id))?;
    let question = pages::confirm_page(
        page.who(),
        &format!("Delete {}?", user.name),
        "Their sessions end at once; this cannot be undone.",
        &format!("/users/{id}/delete"),
        "Delete user",
        "/users",
    );
    Ok((200, question))
}

pub fn delete(page: &Page, _: &Form) -> FormResult {
    let id = someone_else(page)?;
    page.control.store.delete_user(id)?;
    Ok(redirect("/users"))
}
