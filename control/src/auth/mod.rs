//! Who may act: node API keys and admin API tokens ([`secrets`]), and people — users with
//! argon2id passwords ([`password`]), browser sessions with CSRF tokens ([`sessions`]) and
//! login throttling (`kakuremichi_proto::throttle`, shared with gateways).

pub mod password;
pub mod secrets;
pub mod sessions;
pub mod totp;

pub use secrets::{bearer, hash_secret, new_id, new_secret, random_bytes, unix_now};

use serde::{Deserialize, Serialize};

/// What a user may do; new users are members unless made administrators.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Sees tunnels; may be granted access to tunnels.
    #[default]
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// A person who logs in to Control.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: u64,
    /// Base32 TOTP secret, when two-factor login is on.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// Hashes of the unused recovery codes.
    #[serde(default)]
    pub recovery_codes: Vec<String>,
    /// Unix seconds: sessions begun before are over, on Control and on every tunnel (set
    /// when the password, role or enabled state changes, or on logging out everywhere).
    #[serde(default)]
    pub sessions_since: u64,
    /// The last TOTP time step accepted: a code is good once.
    #[serde(default)]
    pub totp_last_step: u64,
}

impl UserRecord {
    /// An administrator who can log in.
    pub fn is_active_admin(&self) -> bool {
        self.role == Role::Admin && !self.disabled
    }
}

/// Why a user name is refused: 1–64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("use 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("use letters, digits, '.', '_', '-' or '@'".into());
    }
    Ok(())
}
