//! Messages on the control WebSocket, one JSON object per text frame.
//!
//! A node opens `/ws/agent` or `/ws/gateway` with `Authorization: Bearer <API_KEY>` and sends
//! [`NodeMessage::Hello`]. Control answers with [`ControlMessage::Config`], everything the node
//! needs, and sends what changed whenever any of it does ([`crate::patch`]). Both sides
//! send [`NodeMessage::Heartbeat`]/[`ControlMessage::Heartbeat`] every [`HEARTBEAT_INTERVAL`];
//! a peer silent for [`MISSED_HEARTBEATS_OFFLINE`] intervals is gone.

use crate::access::{AccessKeys, AccessPolicy};
use crate::ids::{Hostname, PublicKey, Target};
use crate::patch::ConfigPatch;
use crate::ports::{PortPolicy, Transport};
use crate::proxy_protocol::ProxyProtocol;
use crate::request_log::{LogDetails, LogEntry, LogQuery};
use crate::ProtoError;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// How often each side sends a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A node (or Control) silent for this many intervals is considered offline.
pub const MISSED_HEARTBEATS_OFFLINE: u32 = 3;
/// The largest message either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// The overlay port on which every node accepts a connection and closes it at once:
/// gateways probe agents' to know which of a tunnel's replicas are alive, and agents probe
/// gateways' to notice a WireGuard path that stopped passing.
pub const HEALTH_PORT: u16 = 1;

/// Node → Control.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMessage {
    /// First message on every connection.
    Hello(Hello),
    /// The node runs this config version now (sent after every snapshot it applied).
    Applied {
        /// The snapshot's version.
        version: u64,
    },
    /// Liveness, every heartbeat interval ([`HEARTBEAT_INTERVAL`] unless Control says otherwise).
    Heartbeat,
    /// What the node is running and has moved.
    Status(NodeStatus),
    /// Gateways: the answer to [`ControlMessage::LogQuery`] `id`, newest first.
    Logs {
        /// The query's id.
        id: u64,
        /// The matching entries.
        entries: Vec<LogEntry>,
    },
}

/// Who the node is, beyond its API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The node's WireGuard public key; the private key never leaves the node.
    pub public_key: PublicKey,
    /// The node's software version.
    pub version: String,
    /// Gateways only: `host:port` where agents reach this gateway's WireGuard socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_endpoint: Option<String>,
    /// Random per process start. A peer whose instance changed lost its WireGuard sessions,
    /// so nodes start a new handshake with it at once instead of waiting for timers.
    #[serde(default)]
    pub instance: u64,
    /// Gateways only: which ports `tcp` and `udp` tunnels may take there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortPolicy>,
    /// Gateways only: the public HTTPS port, where agents that reach nothing else carry
    /// WireGuard over TLS (ALPN [`WIREGUARD_ALPN`]) at the WireGuard endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    /// Gateways only: the public plain-HTTP port. With [`Hello::https_port`], the only ports
    /// Control sends a browser back to after a tunnel login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// What the node can do beyond what every node does ([`crate::request_log::FEATURE`]):
    /// Control asks only nodes that say so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Agents only: the targets the agent forwards to (its `ALLOW_TARGETS`, see
    /// [`crate::targets`]); empty for any but those refused by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_targets: Option<String>,
}

/// The ALPN protocol of a TLS connection to a gateway's HTTPS port that carries WireGuard
/// datagrams (see `kakuremichi_nodelink::tcp_carrier`) instead of HTTP.
pub const WIREGUARD_ALPN: &[u8] = b"kakuremichi-wg/1";

pub use crate::status::{NodeStatus, OriginFailure, PeerChanges, PEERS_PER_REPORT};

/// Control → node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// The node's desired configuration, as a patch from the one it holds
    /// ([`crate::patch`]): the whole of it in a session's first.
    Config(Box<ConfigPatch>),
    /// Certificates for configs to refer to by digest ([`CertificateRef`]), sent ahead of
    /// the config that first needs them and in as many messages as they take: a config then
    /// stays small however many HTTPS tunnels there are, and a renewal sends one certificate,
    /// not all of them.
    Certificates {
        /// New to the node since the last config.
        certificates: Vec<DigestedCertificate>,
    },
    /// Liveness, every heartbeat interval ([`HEARTBEAT_INTERVAL`] unless Control says otherwise).
    Heartbeat,
    /// Gateways that said [`crate::request_log::FEATURE`] in their hello: the requests in
    /// their log that match, as [`NodeMessage::Logs`].
    LogQuery(LogQuery),
}

/// Everything a node needs, versioned. A higher version replaces a lower one entirely.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// Monotonic across all of Control's changes.
    pub version: u64,
    /// The node's id in Control.
    pub node_id: String,
    /// The node's address inside the overlay network.
    pub overlay_ip: Ipv4Addr,
    /// Prefix length of the overlay network.
    pub overlay_prefix: u8,
    /// WireGuard peers: for an agent every enabled gateway, for a gateway every agent.
    pub peers: Vec<PeerConfig>,
    /// Gateways only: hostname routes to agents.
    #[serde(default)]
    pub routes: Vec<HttpRoute>,
    /// Agents only: service ports on the overlay and where they forward.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Gateways only: public TCP and UDP ports and the agent service each forwards to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_routes: Vec<PortRoute>,
    /// Gateways only: hostnames whose TLS connections on the HTTPS port go to the agent
    /// undecrypted, chosen by the ClientHello's SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough_routes: Vec<PassthroughRoute>,
    /// Gateways only: certificates to serve, by hostname. Control sends none here but refers
    /// to them in `certificate_refs`; the node puts them here before it applies and caches the
    /// config.
    #[serde(default)]
    pub certificates: Vec<CertificateBundle>,
    /// Gateways only: certificates to serve, by the digest of a [`DigestedCertificate`] sent
    /// earlier on this session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<CertificateRef>,
    /// Gateways only: ACME challenge answers to give while an order is validated.
    #[serde(default)]
    pub challenges: Vec<AcmeChallenge>,
    /// Gateways only: Control's own hostname, served by proxying to Control's local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_route: Option<ControlRoute>,
    /// Gateways only: what clients that send no SNI get (names no tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_certificate: Option<CertificateBundle>,
    /// Gateways only: the keys that check logins to tunnels with access rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_keys: Option<AccessKeys>,
    /// How often both ends of the control session send heartbeats; Control decides, so
    /// both ends judge silence by the same clock.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Gateways only: refuse new requests with a 503 while those in flight finish.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

fn default_heartbeat_ms() -> u64 {
    HEARTBEAT_INTERVAL.as_millis() as u64
}

impl Default for ConfigSnapshot {
    fn default() -> Self {
        ConfigSnapshot {
            version: 0,
            node_id: String::new(),
            overlay_ip: Ipv4Addr::UNSPECIFIED,
            overlay_prefix: 0,
            peers: Vec::new(),
            routes: Vec::new(),
            services: Vec::new(),
            port_routes: Vec::new(),
            passthrough_routes: Vec::new(),
            certificates: Vec::new(),
            certificate_refs: Vec::new(),
            challenges: Vec::new(),
            control_route: None,
            fallback_certificate: None,
            access_keys: None,
            heartbeat_interval_ms: default_heartbeat_ms(),
            draining: false,
        }
    }
}

impl ConfigSnapshot {
    /// The heartbeat interval Control asked for.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }
}

/// The built-in route that makes Control reachable over HTTPS through gateways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRoute {
    /// Control's public hostname.
    pub hostname: Hostname,
    /// Where gateways reach Control directly (`host:port`, not through the overlay).
    pub upstream: String,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertificateBundle {
    /// The hostname it is served for (SNI).
    pub hostname: Hostname,
    /// Leaf first, then intermediates.
    pub chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
    /// Whether browsers trust it (ACME or uploaded), which turns on HSTS.
    pub publicly_trusted: bool,
}

/// A certificate a config refers to, sent ahead of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigestedCertificate {
    /// What configs refer to it by: Control's hash of the bundle, new when it changes.
    pub digest: String,
    /// The certificate itself.
    pub bundle: CertificateBundle,
}

/// A config's reference to a [`DigestedCertificate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertificateRef {
    /// The hostname it is for, to name it in errors.
    pub hostname: Hostname,
    /// [`DigestedCertificate::digest`].
    pub digest: String,
}

/// One ACME challenge answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// Answer `GET /.well-known/acme-challenge/{token}` with the key authorization.
    Http01 {
        /// The hostname being validated: only gateways that serve it are given the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<Hostname>,
        /// The challenge token.
        token: String,
        /// `token.thumbprint`.
        key_authorization: String,
    },
    /// Answer TLS connections for `hostname` that offer ALPN `acme-tls/1` with this
    /// self-signed certificate carrying the key authorization digest.
    TlsAlpn01 {
        /// The hostname being validated.
        hostname: Hostname,
        /// The challenge certificate, PEM.
        certificate_pem: String,
        /// Its key, PEM.
        key_pem: String,
    },
}

/// One WireGuard peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// The peer node's id.
    pub node_id: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// Its overlay address; the only source address accepted from it (AllowedIPs /32).
    pub overlay_ip: Ipv4Addr,
    /// Where to send its datagrams (gateways have one; agents are found by their handshakes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The peer process's [`Hello::instance`].
    #[serde(default)]
    pub instance: u64,
    /// Gateways: their [`Hello::https_port`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
}

/// A hostname a gateway serves, and where the tunnel's agent listens for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// The public hostname.
    pub hostname: Hostname,
    /// The agent's overlay address.
    pub agent_ip: Ipv4Addr,
    /// The tunnel's service port on that address.
    pub service_port: u16,
    /// Other agents serving the same tunnel on the same service port (replicas): requests
    /// are spread over the healthy ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_ips: Vec<Ipv4Addr>,
    /// Whether the hostname is served over HTTPS (plain HTTP then redirects); `false` serves
    /// plain HTTP, e.g. behind another TLS terminator.
    #[serde(default)]
    pub https: bool,
    /// Who may open it; public when absent.
    #[serde(default, skip_serializing_if = "AccessPolicy::is_public")]
    pub access: AccessPolicy,
    /// How the gateway talks to the origin, when not plain HTTP/1.1 as the client asked.
    #[serde(default, skip_serializing_if = "OriginOptions::is_plain")]
    pub origin: OriginOptions,
    /// Only requests whose path is this prefix or below it (`/api`, `/api/…`); the longest
    /// matching prefix of a hostname wins. Absent: everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// What the request log keeps beyond the path; nothing when absent.
    #[serde(default, skip_serializing_if = "LogDetails::is_off")]
    pub log: LogDetails,
}

/// Whether a request for `path` (normalised, [`crate::path`]) falls under a route's path
/// `prefix`: the prefix itself or below it at a segment boundary (`/api` takes `/api`,
/// `/api/x`, `/api?q` and `/api;v=1`, not `/apix`). Case does not matter, and `;` ends a
/// segment, because some origins serve `/API` or `/api;jsessionid=…/x` as `/api/x`: a
/// prefix that guards a path must take every spelling an origin could serve it under.
/// No prefix takes every path.
pub fn under_prefix(prefix: Option<&str>, path: &str) -> bool {
    prefix.is_none_or(|prefix| {
        let (Some(head), Some(rest)) = (path.get(..prefix.len()), path.get(prefix.len()..)) else {
            return false;
        };
        head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || rest.starts_with(['/', '?', ';']))
    })
}

/// How a gateway talks to an `http` tunnel's origin through the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OriginOptions {
    /// The origin speaks HTTPS: the gateway runs TLS end to end through the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<OriginTls>,
    /// The `Host` header the origin gets instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// The page clients get instead of the gateway's own when the origin cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_gateway_page: Option<String>,
    /// The page for paths of the hostname that no tunnel serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_page: Option<String>,
    /// The origin speaks HTTP/2 without TLS (h2c, prior knowledge), as gRPC servers do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h2c: bool,
}

impl OriginOptions {
    /// Plain HTTP with the client's `Host` and the gateway's pages.
    pub fn is_plain(&self) -> bool {
        *self == OriginOptions::default()
    }
}

/// TLS towards an origin.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OriginTls {
    /// The name sent as SNI and checked in the origin's certificate.
    pub server_name: String,
    /// Check the origin's certificate (off only for origins with self-signed ones the
    /// user accepts as is).
    pub verify: bool,
    /// PEM certificates trusted for this origin besides the public roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// A service port an agent listens on inside the overlay, and its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// Port on the agent's overlay address.
    pub port: u16,
    /// Where connections are forwarded.
    pub target: Target,
    /// What the target speaks: for `udp` each overlay connection carries datagrams framed
    /// as [`crate::datagrams`] says, and the agent sends them to the target over UDP.
    #[serde(default, skip_serializing_if = "is_tcp")]
    pub transport: Transport,
    /// How long the agent waits for the target to accept; its default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// How the agent checks the target between connections; absent: a TCP connect every
    /// [`DEFAULT_HEALTH_INTERVAL_SECS`] (tcp targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Other agents serve the tunnel too: while its target fails its check, this agent
    /// closes the service port, so gateways send the tunnel's requests to the others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replicated: bool,
}

/// Seconds between an agent's checks of a target, unless its tunnel says.
pub const DEFAULT_HEALTH_INTERVAL_SECS: u64 = 30;

/// How an agent checks a tunnel's target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Seconds between checks; 0: none.
    pub interval_secs: u64,
    /// A path to `GET` over HTTP/1.1; absent: a TCP connect is the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// The status that passes; absent: any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
}

fn is_tcp(transport: &Transport) -> bool {
    *transport == Transport::Tcp
}

/// Where a gateway sends a stream or datagrams it accepted for a tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// The agent's overlay address.
    pub agent_ip: Ipv4Addr,
    /// The service port on that address.
    pub service_port: u16,
    /// Other agents serving the same tunnel on the same service port (replicas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_ips: Vec<Ipv4Addr>,
    /// A PROXY header to put in front of each forwarded connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A public port on the gateway that a `tcp` or `udp` tunnel owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRoute {
    /// TCP or UDP.
    pub transport: Transport,
    /// The public port.
    pub port: u16,
    /// Where its traffic goes.
    pub upstream: Upstream,
}

/// A hostname a `tls` tunnel owns: its connections are spliced, not terminated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassthroughRoute {
    /// The SNI that selects it.
    pub hostname: Hostname,
    /// Where its connections go.
    pub upstream: Upstream,
}

/// Serialize a message for the wire.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no floats.
    serde_json::to_string(message).expect("protocol messages always serialize")
}

/// Parse a message from the wire, refusing oversized input before parsing it.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ProtoError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtoError::TooLarge(text.len()));
    }
    serde_json::from_str(text).map_err(|e| ProtoError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_match_whole_segments() {
        assert!(under_prefix(None, "/anything"));
        for path in [
            "/api",
            "/api/",
            "/api/v1",
            "/api?q=1",
            "/API/v1",
            "/api;v=1/x",
        ] {
            assert!(under_prefix(Some("/api"), path), "{path}");
        }
        for path in ["/apix", "/", "/ap", "/other/api"] {
            assert!(!under_prefix(Some("/api"), path), "{path}");
        }
    }

    #[test]
    fn snapshot_round_trips() {
        let snapshot = ConfigSnapshot {
            version: 7,
            node_id: "agt_1".into(),
            overlay_ip: Ipv4Addr::new(10, 77, 0, 2),
            overlay_prefix: 16,
            peers: vec![PeerConfig {
                node_id: "gw_1".into(),
                public_key: PublicKey([1; 32]),
                overlay_ip: Ipv4Addr::new(10, 77, 0, 1),
                endpoint: Some("gw.example.com:51820".into()),
                instance: 9,
                https_port: Some(443),
            }],
            routes: vec![],
            certificates: vec![],
            certificate_refs: vec![],
            fallback_certificate: None,
            control_route: None,
            access_keys: None,
            heartbeat_interval_ms: 15_000,
            draining: false,
            challenges: vec![AcmeChallenge::Http01 {
                hostname: Some("app.example.com".parse().unwrap()),
                token: "t".into(),
                key_authorization: "t.k".into(),
            }],
            services: vec![Service {
                tunnel_id: "tun_1".into(),
                port: 20000,
                target: "127.0.0.1:8080".parse().unwrap(),
                transport: Transport::Udp,
                connect_timeout_ms: Some(1500),
                health: Some(HealthCheck {
                    interval_secs: 5,
                    http_path: Some("/health".into()),
                    expect_status: Some(204),
                }),
                replicated: true,
            }],
            port_routes: vec![PortRoute {
                transport: Transport::Tcp,
                port: 15432,
                upstream: Upstream {
                    tunnel_id: "tun_2".into(),
                    agent_ip: Ipv4Addr::new(10, 77, 0, 2),
                    service_port: 20001,
                    replica_ips: vec![Ipv4Addr::new(10, 77, 0, 3)],
                    proxy_protocol: Some(ProxyProtocol::V2),
                },
            }],
            passthrough_routes: vec![],
        };
        let message = ControlMessage::Config(Box::new(crate::patch::ConfigPatch {
            version: snapshot.version,
            base: 0,
            lists: crate::patch::ListPatches {
                routes: crate::patch::ListPatch {
                    upsert: snapshot.routes.clone(),
                    remove: vec![],
                },
                ..Default::default()
            },
            rest: Some(Box::new(snapshot)),
            more: false,
        }));
        assert_eq!(
            decode::<ControlMessage>(&encode(&message)).unwrap(),
            message
        );
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        assert!(matches!(
            decode::<NodeMessage>("{\"type\":\"nope\"}"),
            Err(ProtoError::Malformed(_))
        ));
        assert!(matches!(
            decode::<NodeMessage>("]"),
            Err(ProtoError::Malformed(_))
        ));
        let huge = " ".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(matches!(
            decode::<NodeMessage>(&huge),
            Err(ProtoError::TooLarge(_))
        ));
        let bad_key = r#"{"type":"hello","public_key":"AAAA","version":"1"}"#;
        assert!(decode::<NodeMessage>(bad_key).is_err());
    }
}
