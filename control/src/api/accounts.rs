//! People and API tokens: list, create (a secret shown once), change, delete or revoke.

use super::views::{self, Done};
use super::{answer, Json};
use crate::auth::{password, Role};
use crate::error::Error;
use crate::model::TokenScope;
use crate::routes::{ApiResult, Call};

pub fn tokens(call: &Call, _: Json) -> ApiResult {
    let tokens = call.control.store.tokens()?;
    answer(200, tokens.iter().map(views::Token::of).collect::<Vec<_>>())
}

pub fn create_token(call: &Call, body: Json) -> ApiResult {
    let control = &call.control;
    let mut fields = body.fields()?;
    let name = fields.required("name")?;
    let expires_at = fields
        .number("expires_days")?
        .map(|days| crate::auth::unix_now() + days.min(3650) * 86_400);
    let scope = match fields.string("scope")? {
        Some(text) => TokenScope::parse(&text)?,
        None => TokenScope::Admin,
    };
    fields.finish()?;
    let (record, token) = control.store.create_token(&name, expires_at, scope)?;
    let made = views::TokenWithSecret {
        token: views::Token::of(&record),
        secret: &token,
    };
    answer(201, made)
}

pub fn revoke_token(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.revoke_token(id)?;
    answer(200, Done::Revoked(id))
}

pub fn users(call: &Call, _: Json) -> ApiResult {
    let users = call.control.store.users()?;
    answer(200, users.iter().map(views::User::of).collect::<Vec<_>>())
}

pub fn create_user(call: &Call, body: Json) -> ApiResult {
    let control = &call.control;
    let mut fields = body.fields()?;
    let name = fields.required("name")?;
    let role = match fields.string("role")?.as_deref() {
        None | Some("member") => Role::Member,
        Some("admin") => Role::Admin,
        Some(_) => return Err(Error::invalid("role", "must be admin or member")),
    };
    let given = fields.string("password")?;
    fields.finish()?;
    if let Some(given) = &given {
        password::check_policy(given).map_err(|why| Error::invalid("password", why))?;
    }
    let secret = given.clone().unwrap_or_else(password::generate);
    let hash = password::hash(&secret).map_err(Error::Store)?;
    let user = control.store.create_user(&name, role, hash, false)?;
    let made = views::NewUser {
        user: views::User::of(&user),
        password: given.is_none().then_some(secret.as_str()),
    };
    answer(201, made)
}

/// Disable or enable someone, or change their role.
pub fn change_user(call: &Call, body: Json) -> ApiResult {
    let mut fields = body.fields()?;
    let disabled = fields.boolean("disabled")?;
    let role = match fields.string("role")?.as_deref() {
        None => None,
        Some("admin") => Some(Role::Admin),
        Some("member") => Some(Role::Member),
        Some(_) => return Err(Error::invalid("role", "must be admin or member")),
    };
    fields.finish()?;
    let user = call.control.store.update_user(call.param("id"), |user| {
        user.disabled = disabled.unwrap_or(user.disabled);
        user.role = role.unwrap_or(user.role);
    })?;
    answer(200, views::User::of(&user))
}

pub fn delete_user(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.delete_user(id)?;
    answer(200, Done::Deleted(id))
}
