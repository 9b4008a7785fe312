//! Access rules on Control's side: what a tunnel stores, the policy each gateway gets for it
//! (user names and roles resolved to the users who may log in), the signing keys, and the
//! assertion Control hands a logged-in browser for a tunnel.

use crate::auth::{self, Role, UserRecord};
use crate::error::Error;
use kakuremichi_proto::access::{
    self, AccessKeys, AccessPolicy, AllowedUser, Assertion, Cidr, DEFAULT_SESSION_HOURS,
};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long an assertion lives: long enough for one redirect.
pub const ASSERTION_SECONDS: u64 = 30;
/// Longest session a tunnel may ask for (30 days).
const MAX_SESSION_HOURS: u64 = 24 * 30;
/// Shortest tunnel password or PIN.
const MIN_PASSWORD_CHARS: usize = 4;
/// Rules per list, so a policy stays small in every snapshot.
const MAX_RULES: usize = 64;

/// A tunnel's rules as Control stores them. Empty: public.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TunnelAccess {
    /// Control users by name who may log in.
    #[serde(default)]
    pub users: Vec<String>,
    /// Roles whose users may log in.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// argon2id hash of the tunnel password or PIN.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub service_tokens: Vec<ServiceToken>,
    #[serde(default)]
    pub allow_ips: Vec<Cidr>,
    #[serde(default)]
    pub deny_ips: Vec<Cidr>,
    #[serde(default)]
    pub bypass: Vec<String>,
    #[serde(default)]
    pub session_hours: Option<u64>,
}

/// A token for scripts: `Authorization: Bearer kst_…` passes. Only its hash is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceToken {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub created_at: u64,
}

impl TunnelAccess {
    /// Whether Control users can log in to the tunnel.
    pub fn has_user_login(&self) -> bool {
        !self.users.is_empty() || !self.roles.is_empty()
    }

    /// Whether `user` may open the tunnel through a Control login.
    pub fn admits_user(&self, user: &UserRecord) -> bool {
        !user.disabled && (self.users.contains(&user.name) || self.roles.contains(&user.role))
    }

    /// A few words on what protects the tunnel, or `None` when it is public.
    pub fn summary(&self) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        if self.has_user_login() {
            let mut who: Vec<String> = self.users.clone();
            who.extend(self.roles.iter().map(|r| format!("every {}", r.as_str())));
            parts.push(who.join(", "));
        }
        if self.password_hash.is_some() {
            parts.push("password".into());
        }
        if !self.service_tokens.is_empty() {
            let count = self.service_tokens.len();
            parts.push(format!(
                "{count} service token{}",
                if count == 1 { "" } else { "s" }
            ));
        }
        if !self.allow_ips.is_empty() || !self.deny_ips.is_empty() {
            parts.push("IP rules".into());
        }
        (!parts.is_empty()).then(|| parts.join(" · "))
    }

    /// The policy gateways enforce, with `users` (every account) resolved.
    pub fn policy(&self, users: &[UserRecord]) -> AccessPolicy {
        AccessPolicy {
            users: self.has_user_login().then(|| {
                users
                    .iter()
                    .filter(|user| self.admits_user(user))
                    .map(|user| AllowedUser {
                        id: user.id.clone(),
                        name: user.name.clone(),
                        sessions_since: user.sessions_since,
                    })
                    .collect()
            }),
            password_hash: self.password_hash.clone(),
            service_tokens: self.service_tokens.iter().map(|t| t.hash.clone()).collect(),
            allow_ips: self.allow_ips.clone(),
            deny_ips: self.deny_ips.clone(),
            bypass: self.bypass.clone(),
            session_hours: self.session_hours.unwrap_or(DEFAULT_SESSION_HOURS),
        }
    }

    /// The rules as the API shows them: never the password hash, only whether there is one.
    pub fn to_json(&self) -> Value {
        json!({
            "users": self.users,
            "roles": self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "password": self.password_hash.is_some(),
            "service_tokens": self.service_tokens.iter().map(|t| json!({
                "id": t.id, "name": t.name, "created_at": t.created_at,
            })).collect::<Vec<_>>(),
            "allow_ips": self.allow_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "deny_ips": self.deny_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "bypass": self.bypass,
            "session_hours": self.session_hours.unwrap_or(DEFAULT_SESSION_HOURS),
        })
    }

    /// Apply the API's `access` object: each field present replaces that rule; `"password"`
    /// sets (a string) or removes (`null` or `""`) the password. Service tokens have their
    /// own endpoints. Refuses unknown fields and bad values, naming them.
    pub fn apply_json(&mut self, value: &Value) -> Result<(), Error> {
        let Value::Object(fields) = value else {
            return Err(Error::invalid("access", "must be an object"));
        };
        let mut next = self.clone();
        for (name, value) in fields {
            let field = format!("access.{name}");
            match name.as_str() {
                "users" => next.users = strings(&field, value)?,
                "roles" => {
                    next.roles = strings(&field, value)?
                        .iter()
                        .map(|role| match role.as_str() {
                            "admin" => Ok(Role::Admin),
                            "member" => Ok(Role::Member),
                            _ => Err(Error::invalid(&field, "roles are admin or member")),
                        })
                        .collect::<Result<_, _>>()?
                }
                "password" => {
                    next.password_hash = match value {
                        Value::Null => None,
                        Value::String(text) if text.is_empty() => None,
                        Value::String(text) => Some(hash_password(&field, text)?),
                        _ => return Err(Error::invalid(&field, "must be a string or null")),
                    }
                }
                "allow_ips" | "deny_ips" => {
                    let networks = strings(&field, value)?
                        .iter()
                        .map(|text| {
                            text.parse::<Cidr>()
                                .map_err(|e| Error::invalid(&field, e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if name == "allow_ips" {
                        next.allow_ips = networks;
                    } else {
                        next.deny_ips = networks;
                    }
                }
                "bypass" => {
                    let paths = strings(&field, value)?;
                    if let Some(bad) = paths.iter().find(|p| !valid_bypass(p)) {
                        return Err(Error::invalid(
                            &field,
                            format!("{bad:?}: a path starting with /, optionally ending in *"),
                        ));
                    }
                    next.bypass = paths;
                }
                "session_hours" => match value.as_u64() {
                    Some(hours @ 1..=MAX_SESSION_HOURS) => next.session_hours = Some(hours),
                    _ => {
                        return Err(Error::invalid(
                            &field,
                            format!("a whole number of hours from 1 to {MAX_SESSION_HOURS}"),
                        ))
                    }
                },
                _ => return Err(Error::invalid(&field, "unknown field")),
            }
        }
        *self = next;
        Ok(())
    }
}

/// The rules page's fields as the API's `access` object, so both are checked by
/// [`TunnelAccess::apply_json`]. `field` gives a field's text ("" when absent).
pub fn form_json<'a>(field: impl Fn(&str) -> &'a str) -> Value {
    let list = |name: &str, separators: &[char]| -> Vec<String> {
        field(name)
            .split(separators)
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    };
    let roles: Vec<&str> = [("role_admin", "admin"), ("role_member", "member")]
        .into_iter()
        .filter(|(name, _)| field(name) == "true")
        .map(|(_, role)| role)
        .collect();
    let mut access = json!({
        "users": list("users", &[',', ' ', '\n']),
        "roles": roles,
        "allow_ips": list("allow_ips", &['\n', ',']),
        "deny_ips": list("deny_ips", &['\n', ',']),
        "bypass": list("bypass", &['\n']),
    });
    let hours = field("session_hours").trim();
    access["session_hours"] = match hours.parse::<u64>() {
        Ok(hours) => json!(hours),
        Err(_) if hours.is_empty() => json!(DEFAULT_SESSION_HOURS),
        Err(_) => json!(hours),
    };
    if field("remove_password") == "true" {
        access["password"] = Value::Null;
    } else if !field("password").is_empty() {
        access["password"] = json!(field("password"));
    }
    access
}

fn hash_password(field: &str, text: &str) -> Result<String, Error> {
    if text.chars().count() < MIN_PASSWORD_CHARS || text.len() > 128 {
        return Err(Error::invalid(
            field,
            format!("use {MIN_PASSWORD_CHARS} to 128 characters"),
        ));
    }
    auth::password::hash(text).map_err(Error::Store)
}

fn valid_bypass(path: &str) -> bool {
    let path = path.strip_suffix('*').unwrap_or(path);
    // Gateways match rules against normalised paths, so a rule must be normal to match.
    path.starts_with('/')
        && path.len() <= 256
        && !path.contains(['*', '?', '#', ' '])
        && kakuremichi_proto::path::is_normal(path)
}

fn strings(field: &str, value: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(items) = value else {
        return Err(Error::invalid(field, "must be a list of strings"));
    };
    if items.len() > MAX_RULES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_RULES} entries"),
        ));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            _ => Err(Error::invalid(field, "must be a list of non-empty strings")),
        })
        .collect()
}

/// Control's keys for tunnel logins, as stored: the assertion signing key (PKCS#8) and the
/// gateways' shared cookie key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyring {
    pkcs8: String,
    cookie_key: String,
    pub created_at: u64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring {{ created_at: {} }}", self.created_at)
    }
}

impl Keyring {
    /// New random keys.
    pub fn generate() -> Result<Keyring, Error> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Store("could not generate a signing key".into()))?;
        Ok(Keyring {
            pkcs8: access::encode_key(pkcs8.as_ref()),
            cookie_key: access::encode_key(&auth::random_bytes::<32>()),
            created_at: auth::unix_now(),
        })
    }

    fn key_pair(&self) -> Result<Ed25519KeyPair, Error> {
        let pkcs8 = access::decode_key(&self.pkcs8).map_err(|e| Error::Store(e.to_string()))?;
        Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| Error::Store("the stored signing key is unreadable".into()))
    }

    /// What gateways get: the public half and the cookie key.
    pub fn for_gateways(&self, login_url: Option<String>) -> Result<AccessKeys, Error> {
        Ok(AccessKeys {
            assertion_public_key: access::encode_key(self.key_pair()?.public_key().as_ref()),
            cookie_key: self.cookie_key.clone(),
            login_url,
        })
    }

    /// An assertion that `user` may open `host`, valid for [`ASSERTION_SECONDS`].
    pub fn assert(
        &self,
        host: &str,
        user: &UserRecord,
        state: &str,
        now: u64,
    ) -> Result<String, Error> {
        let assertion = Assertion {
            host: host.to_string(),
            user: AllowedUser {
                id: user.id.clone(),
                name: user.name.clone(),
                ..Default::default()
            },
            expires: now + ASSERTION_SECONDS,
            nonce: auth::new_secret("n"),
            state: state.to_string(),
        };
        Ok(access::sign_assertion(&self.key_pair()?, &assertion))
    }
}

/// The schema of the API's `access` object ([`TunnelAccess::apply_json`]).
pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let strings = serde_json::json!({ "type": "array", "items": { "type": "string" } });
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "users": strings, "roles": strings, "password": { "type": ["string", "null"] },
            "allow_ips": strings, "deny_ips": strings, "bypass": strings,
            "session_hours": { "type": "integer", "minimum": 1, "maximum": MAX_SESSION_HOURS },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role, disabled: bool) -> UserRecord {
        UserRecord {
            id: format!("usr_{name}"),
            name: name.into(),
            role,
            password_hash: String::new(),
            disabled,
            created_at: 0,
            totp_secret: None,
            recovery_codes: Vec::new(),
            sessions_since: 0,
            totp_last_step: 0,
        }
    }

    #[test]
    fn users_and_roles_resolve_to_the_enabled_users_they_name() {
        let users = [
            user("alice", Role::Member, false),
            user("bob", Role::Member, false),
            user("root", Role::Admin, false),
            user("old", Role::Admin, true),
        ];
        let rules = TunnelAccess {
            users: vec!["alice".into(), "ghost".into()],
            roles: vec![Role::Admin],
            ..Default::default()
        };
        let policy = rules.policy(&users);
        let names: Vec<_> = policy.users.unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["alice", "root"]);
        assert!(TunnelAccess::default().policy(&users).is_public());
    }

    #[test]
    fn the_api_object_is_checked_field_by_field_and_changes_nothing_when_refused() {
        let mut rules = TunnelAccess::default();
        let good = json!({"users":["alice"],"roles":["admin"],"allow_ips":["10.0.0.0/8"],
            "bypass":["/health","/hooks/*"],"session_hours":2,"password":"1234"});
        rules.apply_json(&good).unwrap();
        assert!(rules.password_hash.is_some() && rules.session_hours == Some(2));
        let before = rules.clone();
        for (bad, field) in [
            (json!({"roles":["owner"]}), "access.roles"),
            (json!({"allow_ips":["10.0.0.0/40"]}), "access.allow_ips"),
            (json!({"bypass":["health"]}), "access.bypass"),
            (json!({"session_hours":0}), "access.session_hours"),
            (json!({"password":"12"}), "access.password"),
            (json!({"users":"alice"}), "access.users"),
            (json!({"colour":"red"}), "access.colour"),
            (json!({"users":["bob"],"roles":["owner"]}), "access.roles"),
        ] {
            let error = rules.apply_json(&bad).unwrap_err();
            assert!(
                matches!(&error, Error::Invalid { field: f, .. } if f == field),
                "{bad}: {error}"
            );
            assert_eq!(rules, before, "{bad} changed the rules");
        }
        rules.apply_json(&json!({"password": null})).unwrap();
        assert!(rules.password_hash.is_none());
    }
}
