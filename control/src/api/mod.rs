//! The REST API under `/api/v1`: token-authenticated JSON, one module per resource. The
//! route table ([`crate::routes`]) names each operation's token scope; [`serve`] checks it,
//! reads the body and maps every error to JSON once. A body is read into its serde type
//! ([`crate::spec::read`]) so an error names the field; nothing is written unless the whole
//! request is valid.

pub mod accounts;
pub mod alerts;
pub mod certificates;
pub mod logs;
pub mod nodes;
pub mod traffic;
pub mod tunnels;
mod views;

use crate::error::Error;
use crate::model::TokenScope;
use crate::routes::{ApiResult, Call};
use http_body_util::{BodyExt, Limited};
use hyper::Response;
use kakuremichi_rt::http::{respond, Body};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// Largest JSON body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request's body, read; an operation that takes one parses it with [`Json::read`].
pub struct Json(bytes::Bytes);

impl Json {
    /// The body as a `T` (an empty body is an empty object).
    fn read<T: DeserializeOwned>(self) -> Result<T, Error> {
        let value: Value = if self.0.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&self.0)
                .map_err(|e| Error::invalid("body", format!("not JSON: {e}")))?
        };
        if !value.is_object() {
            return Err(Error::invalid("body", "expected a JSON object"));
        }
        crate::spec::read(value)
    }
}

/// Run an API operation for a token of at least `scope`.
pub async fn serve(
    call: Call,
    body: Body,
    scope: TokenScope,
    operation: impl Fn(&Call, Json) -> ApiResult,
) -> Response<Body> {
    let answered = async {
        authorize(&call, scope)?;
        let bytes = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|_| {
                Error::invalid(
                    "body",
                    format!("unreadable or larger than {MAX_BODY_BYTES} bytes"),
                )
            })?
            .to_bytes();
        operation(&call, Json(bytes))
    };
    match answered.await {
        Ok((status, body)) => json_response(status, &body),
        Err(e) => error_response(&e),
    }
}

/// [`serve`] for an operation without a body whose answer waits on the gateways.
pub async fn serve_waiting(
    call: Call,
    scope: TokenScope,
    operation: &(impl Fn(std::sync::Arc<Call>) -> crate::routes::Waiting<ApiResult> + ?Sized),
) -> Response<Body> {
    if let Err(e) = authorize(&call, scope) {
        return error_response(&e);
    }
    match operation(std::sync::Arc::new(call)).await {
        Ok((status, body)) => json_response(status, &body),
        Err(e) => error_response(&e),
    }
}

/// Whether the request's `Authorization: Bearer` API token may do what `scope` allows: 401
/// without a live token, 403 for a read-only token where an admin token is needed.
pub fn authorize(call: &Call, scope: TokenScope) -> Result<(), Error> {
    let headers = call.request.headers();
    let held = match crate::auth::bearer(headers.get(hyper::header::AUTHORIZATION)) {
        Some(token) => call
            .control
            .store
            .token_scope(token)?
            .ok_or(Error::Unauthorized("unknown API token"))?,
        None => {
            return Err(Error::Unauthorized(
                "send Authorization: Bearer <token> (kakuremichi-control token create)",
            ))
        }
    };
    match (scope, held) {
        (TokenScope::Admin, TokenScope::Read) => Err(Error::Forbidden("this token may only read")),
        _ => Ok(()),
    }
}

/// The JSON form of an error.
pub fn error_response(e: &Error) -> Response<Body> {
    let status = e.status();
    let message = if e.is_internal() {
        log::error!("api: {e}");
        "internal error; see Control's log".to_string()
    } else {
        e.to_string()
    };
    let failure = views::Failure {
        error: message,
        field: e.field(),
    };
    match serde_json::to_value(failure) {
        Ok(body) => json_response(status, &body),
        Err(_) => respond(status, "text/plain", "error\n"),
    }
}

/// An answer of `status` with `view` as its JSON.
fn answer(status: u16, view: impl Serialize) -> ApiResult {
    serde_json::to_value(view)
        .map(|body| (status, body))
        .map_err(|e| Error::Store(format!("encoding an answer: {e}")))
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    respond(status, "application/json", format!("{body}\n"))
}

/// `/api/v1/openapi.json`: public, since it holds nothing but the routes.
pub fn openapi(call: Call) -> Response<Body> {
    json_response(200, &crate::openapi::document(&call.control.public_url))
}
