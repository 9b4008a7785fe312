//! What the API answers: each resource as a `Serialize` view of its record, and the secrets
//! shown once beside it. A record's field the API does not show (a password hash, a key)
//! is not in its view.

use crate::auth::UserRecord;
use crate::model::{CertRecord, CertState, NodeRecord, State, TokenRecord};
use crate::Control;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::NodeStatus;
use serde::Serialize;
use std::collections::BTreeMap;

/// A node with its live state; gateways also with what only they have.
#[derive(Serialize)]
pub struct Node<'a> {
    id: &'a str,
    name: &'a str,
    overlay_ip: String,
    public_key: Option<String>,
    version: &'a Option<String>,
    allow_targets: &'a Option<String>,
    enabled: bool,
    online: bool,
    health: &'static str,
    health_reason: String,
    last_seen: Option<u64>,
    created_at: u64,
    #[serde(flatten)]
    gateway: Option<GatewayOnly<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
}

#[derive(Serialize)]
struct GatewayOnly<'a> {
    wireguard_endpoint: &'a Option<String>,
    labels: &'a crate::model::Labels,
    draining: bool,
}

#[derive(Serialize)]
struct Status {
    config_version: u64,
    peers_up: u32,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl From<&NodeStatus> for Status {
    fn from(s: &NodeStatus) -> Self {
        Status {
            config_version: s.config_version,
            peers_up: s.peers_up,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
        }
    }
}

impl<'a> Node<'a> {
    /// `node` now; `state` is the store's, for its health against its peers.
    pub fn of(control: &Control, fleet: &crate::fleet::Fleet, node: &'a NodeRecord) -> Self {
        let presence = control.hub.presence(&node.id);
        let (health, health_reason) = fleet.health(node);
        Node {
            id: &node.id,
            name: &node.name,
            overlay_ip: node.overlay_ip.to_string(),
            public_key: node.public_key.map(|k| k.to_string()),
            version: &node.version,
            allow_targets: &node.allow_targets,
            enabled: !node.disabled,
            online: presence.online,
            health: health.as_str(),
            health_reason,
            last_seen: presence.last_seen,
            created_at: node.created_at,
            gateway: (node.kind == NodeKind::Gateway).then_some(GatewayOnly {
                wireguard_endpoint: &node.wireguard_endpoint,
                labels: &node.labels,
                draining: node.draining,
            }),
            status: presence.status.as_deref().map(Status::from),
        }
    }
}

/// A node with its new API key and the install snippets that carry it: shown once.
#[derive(Serialize)]
pub struct NodeWithKey<'a> {
    #[serde(flatten)]
    node: Node<'a>,
    api_key: &'a str,
    install: BTreeMap<&'static str, String>,
}

impl<'a> NodeWithKey<'a> {
    pub fn of(control: &Control, state: &State, node: &'a NodeRecord, api_key: &'a str) -> Self {
        let snippets = crate::install::snippets(
            node.kind,
            &control.public_url,
            api_key,
            !control.releases.is_empty(),
        );
        NodeWithKey {
            node: Node::of(
                control,
                &crate::fleet::Fleet::now(&control.hub, state),
                node,
            ),
            api_key,
            install: snippets.into_iter().map(|s| (s.key, s.text)).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct Token<'a> {
    id: &'a str,
    name: &'a str,
    created_at: u64,
    expires_at: Option<u64>,
    scope: &'static str,
}

impl<'a> Token<'a> {
    pub fn of(token: &'a TokenRecord) -> Self {
        Token {
            id: &token.id,
            name: &token.name,
            created_at: token.created_at,
            expires_at: token.expires_at,
            scope: token.scope.as_str(),
        }
    }
}

/// A new API token with its secret, shown once.
#[derive(Serialize)]
pub struct TokenWithSecret<'a> {
    #[serde(flatten)]
    pub token: Token<'a>,
    #[serde(rename = "token")]
    pub secret: &'a str,
}

#[derive(Serialize)]
pub struct User<'a> {
    id: &'a str,
    name: &'a str,
    role: &'static str,
    disabled: bool,
    created_at: u64,
}

impl<'a> User<'a> {
    pub fn of(user: &'a UserRecord) -> Self {
        User {
            id: &user.id,
            name: &user.name,
            role: user.role.as_str(),
            disabled: user.disabled,
            created_at: user.created_at,
        }
    }
}

/// A new user, with the password Control made for them (once) if none was given.
#[derive(Serialize)]
pub struct NewUser<'a> {
    #[serde(flatten)]
    pub user: User<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<&'a str>,
}

/// A new service token of a tunnel, with its secret, shown once.
#[derive(Serialize)]
pub struct ServiceToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub created_at: u64,
    pub token: &'a str,
}

#[derive(Serialize)]
pub struct Certificate<'a> {
    hostname: &'a str,
    issuer: &'static str,
    state: &'a CertState,
    serial: &'a Option<String>,
    not_before: Option<u64>,
    not_after: Option<u64>,
    last_error: &'a Option<String>,
    failures: u32,
    next_attempt: Option<u64>,
}

impl<'a> Certificate<'a> {
    pub fn of(cert: &'a CertRecord) -> Self {
        let known = |at: u64| (at > 0).then_some(at);
        Certificate {
            hostname: cert.hostname.as_str(),
            issuer: cert.issuer.as_str(),
            state: &cert.state,
            serial: &cert.serial,
            not_before: known(cert.not_before),
            not_after: known(cert.not_after),
            last_error: &cert.last_error,
            failures: cert.failures,
            next_attempt: known(cert.next_attempt),
        }
    }
}

/// What an operation that removes or resets something says it did.
#[derive(Serialize)]
pub enum Done<'a> {
    #[serde(rename = "deleted")]
    Deleted(&'a str),
    #[serde(rename = "revoked")]
    Revoked(&'a str),
    #[serde(rename = "rotated")]
    Rotated(bool),
}

/// An error: its message, and the field at fault when the caller's.
#[derive(Serialize)]
pub struct Failure<'a> {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}
