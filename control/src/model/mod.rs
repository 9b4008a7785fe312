//! What Control stores, as plain data, and the pure rules over it: the records (nodes,
//! tunnels, certificates, tokens), the gateways a tunnel is served by, and each node's config
//! snapshot. Nothing here reads the store or the clock.

mod certs;
mod concern;
mod gateways;
mod nodes;
mod snapshot;
mod state;
mod tokens;
mod tunnels;

pub use certs::{CertRecord, CertState, Issuer, RETRY_CAP_SECONDS, RETRY_FIRST_SECONDS};
pub use concern::{concerned, Concerned};
pub use gateways::{labels_from_json, parse_pairs, GatewayChoice};
pub use nodes::{check_name, Labels, NodeRecord, OverlayNet};
pub use snapshot::{
    hostnames_without_certificate, https_hostnames, node_config, snapshot, Entry, NodeConfig,
    SnapshotSettings, TunnelRoutes,
};
pub use state::{PeerList, State};
pub use tokens::{TokenRecord, TokenScope};
pub use tunnels::{
    OriginScheme, OriginSettings, Replica, TunnelKind, TunnelRecord, TunnelSpec, FIRST_SERVICE_PORT,
};
