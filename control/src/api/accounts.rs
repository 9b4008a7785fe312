//! People and API tokens: list, create (a secret shown once), change, delete or revoke.

use super::Json;
use crate::auth::{password, Role, UserRecord};
use crate::error::Error;
use crate::model::{TokenRecord, TokenScope};
use crate::routes::{ApiResult, Call};
use serde_json::{json, Value};

pub fn tokens(call: &Call, _: Json) -> ApiResult {
    let tokens = call.control.store.tokens()?;
    Ok((200, Value::Array(tokens.iter().map(token_json).collect())))
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
    let mut body = token_json(&record);
    body["token"] = json!(token);
    Ok((201, body))
}

pub fn revoke_token(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.revoke_token(id)?;
    Ok((200, json!({ "revoked": id })))
}

fn token_json(token: &TokenRecord) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "scope": token.scope.as_str(),
    })
}

pub fn users(call: &Call, _: Json) -> ApiResult {
    let users = call.control.store.users()?;
    Ok((200, Value::Array(users.iter().map(user_json).collect())))
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
    let mut body = user_json(&user);
    if given.is_none() {
        body["password"] = json!(secret);
    }
    Ok((201, body))
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
    Ok((200, user_json(&user)))
}

pub fn delete_user(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.delete_user(id)?;
    Ok((200, json!({ "deleted": id })))
}

fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "role": user.role.as_str(),
        "disabled": user.disabled,
        "created_at": user.created_at,
    })
}
