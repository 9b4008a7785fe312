//! An admin API token, kept as a hash, and what it may do.

use serde::{Deserialize, Serialize};

/// An admin API token (hash only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    /// Unix seconds after which the token no longer works; `None`: never expires.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// What the token may do.
    #[serde(default)]
    pub scope: TokenScope,
}

/// What an API token may do: everything an administrator can, or only read (monitoring,
/// dashboards, `/metrics`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    #[default]
    Admin,
    Read,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Admin => "admin",
            TokenScope::Read => "read",
        }
    }
}

impl TokenRecord {
    /// Whether the token works at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}
