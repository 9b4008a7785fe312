//! # kakuremichi-nodelink
//!
//! What gateways and agents share about talking to Control:
//!
//! - [`state_dir`]: the node's state directory: its WireGuard private key (made on first
//!   start, never sent anywhere) and its last config snapshot, written atomically so a crash
//!   leaves the old or the new file, never half of one.
//! - [`apply`]: the newest snapshot wins; peers become netstack peer specs.
//! - [`node`]: starting a node (settings check, key, WireGuard socket, cached config).
//! - [`link`]: the control WebSocket: connect (resolving DNS each time), hello, snapshots in,
//!   heartbeats and status out, reconnect with capped exponential backoff.
//! - [`tcp_carrier`]: WireGuard datagrams over TCP (or TLS) where UDP is blocked.
//! - [`unverified`]: TLS that checks signatures but no certificate authority.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod link;
pub mod node;
pub mod state_dir;
pub mod tcp_carrier;
pub mod unverified;

use kakuremichi_proto::ids::PublicKey;
use kakuremichi_proto::messages::Hello;

/// The hello a node sends: its public key, version, a fresh instance number for this process,
/// (gateways) its WireGuard endpoint, port policy and HTTPS port, and (agents) its
/// `ALLOW_TARGETS`.
pub fn hello(private_key: &[u8; 32], settings: &crate::node::NodeSettings) -> Hello {
    let mut instance = [0u8; 8];
    // Without randomness the instance is 0; peers then only miss the fast re-handshake.
    let _ = getrandom::fill(&mut instance);
    Hello {
        public_key: PublicKey(kakuremichi_netstack::public_key_of(private_key)),
        version: env!("CARGO_PKG_VERSION").to_string(),
        wireguard_endpoint: settings.wireguard_endpoint.clone(),
        instance: u64::from_le_bytes(instance),
        ports: settings.ports.clone(),
        https_port: settings.https_port,
        http_port: settings.http_port,
        allow_targets: settings.allow_targets.clone(),
        features: settings.features.iter().map(|f| f.to_string()).collect(),
    }
}

/// Why the link or the state directory failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator's settings are wrong (bad URL, unreadable key file).
    #[error("configuration: {0}")]
    Config(String),
    /// Control refused the API key.
    #[error("Control rejected the API key (HTTP 401): check API_KEY")]
    Unauthorized,
    /// Control could not be reached or the connection broke.
    #[error("control connection: {0}")]
    Connection(String),
    /// Control sent something that is not our protocol.
    #[error("Control sent an invalid message: {0}")]
    Protocol(String),
    /// Reading or writing the state directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}
