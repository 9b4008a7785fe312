//! # kakuremichi-proto
//!
//! What Control, gateways and agents say to each other, as plain data with no I/O:
//!
//! - [`ids`]: validated identifiers (`Hostname`, `Target`, `PublicKey`, …). Untrusted strings
//!   become these at the edge; past the edge nothing re-checks them.
//! - [`access`]: who may open a tunnel, and the signed assertion and session cookie that
//!   carry a login to gateways.
//! - [`throttle`]: login throttling by key (account, address, tunnel), time passed in;
//!   Control and gateways each keep one.
//! - [`path`]: the one normalised request path a gateway decides on and forwards.
//! - [`ports`]: public port ranges of `tcp`/`udp` tunnels and which ports a gateway allows.
//! - [`proxy_protocol`]: the PROXY v1/v2 header that tells an origin the client's address.
//! - [`datagrams`]: how a `udp` tunnel's datagrams travel between gateway and agent.
//! - [`targets`]: which targets an agent forwards to (`ALLOW_TARGETS`).
//! - [`messages`]: the JSON messages carried over the `/ws/agent` and `/ws/gateway` WebSocket,
//!   and the config snapshot Control pushes to every node.
//! - [`status`]: what a node reports of itself, its live peers as changes between reports.
//! - [`request_log`]: the requests a gateway keeps, and how Control asks for them.
//! - [`traffic`]: what each tunnel moved, by minute, with latency histograms that merge.
//!
//! ```
//! use kakuremichi_proto::{ids::Hostname, messages::{decode, encode, NodeMessage}};
//! let host: Hostname = "App.Example.COM".parse().unwrap();
//! assert_eq!(host.as_str(), "app.example.com");
//! let wire = encode(&NodeMessage::Heartbeat);
//! assert!(matches!(decode::<NodeMessage>(&wire), Ok(NodeMessage::Heartbeat)));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod datagrams;
pub mod ids;
pub mod messages;
pub mod patch;
pub mod path;
pub mod ports;
pub mod proxy_protocol;
pub mod request_log;
pub mod status;
pub mod targets;
pub mod throttle;
pub mod traffic;

/// Why an identifier or a message was rejected. Always the sender's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// A field held a value that does not parse; names the field and why.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or kind of value.
        field: &'static str,
        /// A human-readable reason.
        reason: String,
    },
    /// A message was larger than [`messages::MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A message was not valid JSON for its type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl ProtoError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ProtoError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Deterministic noise for the parsers' robustness tests: the same bytes on every run.
#[cfg(test)]
pub(crate) fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}
