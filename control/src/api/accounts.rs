//! People and API tokens: list, create (a secret shown once), change, delete or revoke.

use super::views::{self, Done};
use super::{answer, Json};
use crate::auth::{password, Role};
use crate::error::Error;
use crate::model::TokenScope;
use crate::routes::{ApiResult, Call};
use schemars::JsonSchema;
use serde::Deserialize;

pub fn tokens(call: &Call, _: Json) -> ApiResult {
    let tokens = call.control.store.tokens()?;
    answer(200, tokens.iter().map(views::Token::of).collect::<Vec<_>>())
}

/// `POST /tokens`.
#[derive(Deserialize, JsonSchema)]
pub struct NewToken {
    #[schemars(schema_with = "crate::spec::name_schema")]
    name: String,
    /// Days until it stops working (at most ten years); none is never.
    expires_days: Option<u64>,
    #[serde(default)]
    scope: TokenScope,
}

pub fn create_token(call: &Call, body: Json) -> ApiResult {
    let control = &call.control;
    let new: NewToken = body.read()?;
    let expires_at = new
        .expires_days
        .map(|days| crate::auth::unix_now() + days.min(3650) * 86_400);
    let (record, token) = control
        .store
        .create_token(&new.name, expires_at, new.scope)?;
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

/// `POST /users`.
#[derive(Deserialize, JsonSchema)]
pub struct NewUser {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._@-]{1,64}$"))]
    name: String,
    #[serde(default)]
    role: Role,
    /// None: Control makes one and shows it once.
    #[schemars(length(min = 10, max = 128))]
    password: Option<String>,
}

pub fn create_user(call: &Call, body: Json) -> ApiResult {
    let control = &call.control;
    let NewUser {
        name,
        role,
        password: given,
    } = body.read()?;
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
/// `PATCH /users/{id}`.
#[derive(Deserialize, JsonSchema)]
pub struct UserChange {
    disabled: Option<bool>,
    role: Option<Role>,
}

pub fn change_user(call: &Call, body: Json) -> ApiResult {
    let change: UserChange = body.read()?;
    let user = call.control.store.update_user(call.param("id"), |user| {
        user.disabled = change.disabled.unwrap_or(user.disabled);
        user.role = change.role.unwrap_or(user.role);
    })?;
    answer(200, views::User::of(&user))
}

pub fn delete_user(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.delete_user(id)?;
    answer(200, Done::Deleted(id))
}
