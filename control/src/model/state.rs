//! Everything in the store at one revision.

use super::{CertRecord, Issuer, NodeRecord, OverlayNet, TunnelRecord};
use crate::access::Keyring;
use crate::auth::UserRecord;
use crate::error::Error;
use kakuremichi_proto::messages::{
    AcmeChallenge, CertificateBundle, ControlRoute, DigestedCertificate,
};
use std::sync::OnceLock;

/// Everything in the store at one revision.
#[derive(Clone, Debug)]
pub struct State {
    pub revision: u64,
    pub overlay: OverlayNet,
    pub nodes: Vec<NodeRecord>,
    pub tunnels: Vec<TunnelRecord>,
    pub certificates: Vec<CertRecord>,
    pub challenges: Vec<AcmeChallenge>,
    /// The certificate gateways show clients that send no SNI.
    pub fallback_certificate: Option<CertificateBundle>,
    /// Control's own hostname on gateways, with the issuer of its certificate.
    pub control_route: Option<(ControlRoute, Issuer)>,
    /// Every account: tunnels' access rules name users and roles.
    pub users: Vec<UserRecord>,
    /// The keys that sign tunnel logins.
    pub keyring: Keyring,
    /// [`State::served_certificates`], worked out on first use.
    pub served: OnceLock<Vec<DigestedCertificate>>,
}

impl State {
    /// Tunnel `id`, or an error that names it.
    pub fn tunnel(&self, id: &str) -> Result<&TunnelRecord, Error> {
        self.tunnels
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Error::not_found("tunnel", id))
    }
}
