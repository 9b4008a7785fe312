//! Creating, changing and deleting tunnels (each checked against every other, with its
//! service ports allocated), their service tokens, and the keys that sign tunnel logins.

use super::{all, get, put, Store, ACCESS_KEYS, SERVICE_PORT_CURSOR};
use crate::access::{Keyring, ServiceToken, TunnelAccess};
use crate::auth::{self};
use crate::error::Error;
use crate::model::GatewayChoice;
use crate::model::{Issuer, NodeRecord, Replica, TunnelRecord, FIRST_SERVICE_PORT};
use crate::model::{OriginSettings, TunnelKind};
use crate::tunnels as rules;
use heed::{RoTxn, RwTxn};
use kakuremichi_proto::ids::{Hostname, NodeKind, Target};
use kakuremichi_proto::ports::PortRange;
use kakuremichi_proto::proxy_protocol::ProxyProtocol;

/// A requested tunnel, already validated.
#[derive(Clone, Debug)]
pub struct NewTunnel {
    pub kind: TunnelKind,
    pub hostname: Option<Hostname>,
    pub ports: Option<PortRange>,
    pub agent_id: String,
    pub target: Target,
    pub replicas: Vec<Replica>,
    pub enabled: bool,
    pub issuer: Issuer,
    pub access: TunnelAccess,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub origin: OriginSettings,
    pub path_prefix: Option<String>,
    pub gateways: GatewayChoice,
}

/// Fields of a tunnel to change; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct TunnelPatch {
    pub hostname: Option<Hostname>,
    pub ports: Option<PortRange>,
    pub agent_id: Option<String>,
    pub target: Option<Target>,
    /// Replaces the other agents.
    pub replicas: Option<Vec<Replica>>,
    pub enabled: Option<bool>,
    pub issuer: Option<Issuer>,
    pub access: Option<TunnelAccess>,
    /// `Some(None)` turns the PROXY header off.
    pub proxy_protocol: Option<Option<ProxyProtocol>>,
    pub origin: Option<OriginSettings>,
    /// `Some(None)` removes the prefix.
    pub path_prefix: Option<Option<String>>,
    pub gateways: Option<GatewayChoice>,
}

impl Store {
    /// Publish a tunnel.
    pub fn create_tunnel(&self, new: NewTunnel) -> Result<TunnelRecord, Error> {
        self.write(|s, wtxn| {
            let tunnels: Vec<TunnelRecord> = all(&s.tunnels, wtxn)?;
            s.check_agent(wtxn, &new.agent_id)?;
            for replica in &new.replicas {
                s.check_agent(wtxn, &replica.agent_id)?;
            }
            let mut record = TunnelRecord {
                id: auth::new_id("tun"),
                kind: new.kind,
                hostname: new.hostname,
                ports: new.ports,
                agent_id: new.agent_id,
                target: new.target,
                replicas: new.replicas,
                service_port: 0,
                enabled: new.enabled,
                // A port tunnel has no certificate of its own.
                issuer: match new.kind {
                    TunnelKind::Http => new.issuer,
                    _ => Issuer::None,
                },
                access: new.access,
                proxy_protocol: new.proxy_protocol,
                origin: new.origin,
                path_prefix: new.path_prefix,
                gateways: new.gateways,
                created_at: auth::unix_now(),
            };
            rules::check(&record, &tunnels, &all::<NodeRecord>(&s.nodes, wtxn)?)?;
            record.service_port = free_service_ports(s, wtxn, &tunnels, &record)?;
            put(&s.tunnels, wtxn, &record.id, &record)?;
            Ok(record)
        })
    }

    /// Change a tunnel.
    pub fn update_tunnel(&self, id: &str, patch: TunnelPatch) -> Result<TunnelRecord, Error> {
        self.write(|s, wtxn| {
            let tunnels: Vec<TunnelRecord> = all(&s.tunnels, wtxn)?;
            let mut record = tunnels
                .iter()
                .find(|t| t.id == id)
                .cloned()
                .ok_or_else(|| Error::not_found("tunnel", id))?;
            let agents_of = |t: &TunnelRecord| -> Vec<String> {
                t.agents().map(|(id, _)| id.to_string()).collect()
            };
            let before = (agents_of(&record), record.port_count());
            if let Some(hostname) = patch.hostname {
                record.hostname = Some(hostname);
            }
            if let Some(ports) = patch.ports {
                record.ports = Some(ports);
            }
            if let Some(proxy_protocol) = patch.proxy_protocol {
                record.proxy_protocol = proxy_protocol;
            }
            if let Some(origin) = patch.origin {
                record.origin = origin;
            }
            if let Some(path_prefix) = patch.path_prefix {
                record.path_prefix = path_prefix;
            }
            if let Some(gateways) = patch.gateways {
                record.gateways = gateways;
            }
            if let Some(agent_id) = patch.agent_id.filter(|a| *a != record.agent_id) {
                s.check_agent(wtxn, &agent_id)?;
                record.agent_id = agent_id;
            }
            if let Some(target) = patch.target {
                record.target = target;
            }
            if let Some(replicas) = patch.replicas {
                for replica in &replicas {
                    s.check_agent(wtxn, &replica.agent_id)?;
                }
                record.replicas = replicas;
            }
            if let Some(enabled) = patch.enabled {
                record.enabled = enabled;
            }
            if let Some(issuer) = patch.issuer {
                record.issuer = issuer;
            }
            if let Some(access) = patch.access {
                record.access = access;
            }
            rules::check(&record, &tunnels, &all::<NodeRecord>(&s.nodes, wtxn)?)?;
            if before != (agents_of(&record), record.port_count()) {
                record.service_port = free_service_ports(s, wtxn, &tunnels, &record)?;
            }
            put(&s.tunnels, wtxn, id, &record)?;
            Ok(record)
        })
    }

    /// A new service token for a tunnel: its record and the token (shown once).
    pub fn add_service_token(
        &self,
        tunnel_id: &str,
        name: &str,
    ) -> Result<(ServiceToken, String), Error> {
        crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
        let token = auth::new_secret("kst");
        let record = ServiceToken {
            id: auth::new_id("stk"),
            name: name.to_string(),
            hash: auth::hash_secret(&token),
            created_at: auth::unix_now(),
        };
        self.change_tunnel(tunnel_id, |tunnel| {
            tunnel.access.service_tokens.push(record.clone());
            Ok(())
        })?;
        Ok((record, token))
    }

    /// Revoke a tunnel's service token.
    pub fn revoke_service_token(&self, tunnel_id: &str, token_id: &str) -> Result<(), Error> {
        self.change_tunnel(tunnel_id, |tunnel| {
            let tokens = &mut tunnel.access.service_tokens;
            let before = tokens.len();
            tokens.retain(|t| t.id != token_id);
            match tokens.len() < before {
                true => Ok(()),
                false => Err(Error::not_found("service token", token_id)),
            }
        })
    }

    fn change_tunnel(
        &self,
        id: &str,
        change: impl FnOnce(&mut TunnelRecord) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.write(|s, wtxn| {
            let mut tunnel: TunnelRecord =
                get(&s.tunnels, wtxn, id)?.ok_or_else(|| Error::not_found("tunnel", id))?;
            change(&mut tunnel)?;
            put(&s.tunnels, wtxn, id, &tunnel)
        })
    }

    /// New keys for tunnel logins: every session cookie and assertion made before is refused.
    pub fn rotate_access_keys(&self) -> Result<(), Error> {
        let keyring = Keyring::generate()?;
        self.write(|s, wtxn| put(&s.meta, wtxn, ACCESS_KEYS, &keyring))
    }

    /// Remove a tunnel.
    pub fn delete_tunnel(&self, id: &str) -> Result<(), Error> {
        self.write(|s, wtxn| {
            if !s.tunnels.delete(wtxn, id)? {
                return Err(Error::not_found("tunnel", id));
            }
            Ok(())
        })
    }

    fn check_agent(&self, txn: &RoTxn, agent_id: &str) -> Result<(), Error> {
        match get::<NodeRecord>(&self.nodes, txn, agent_id)? {
            Some(node) if node.kind == NodeKind::Agent => Ok(()),
            _ => Err(Error::invalid(
                "agent",
                format!("no agent with id {agent_id:?}"),
            )),
        }
    }
}

/// The first of a free block of service ports for `tunnel` on its agents, after the last
/// block handed out (kept in the meta table, in the same transaction).
fn free_service_ports(
    s: &Store,
    wtxn: &mut RwTxn,
    tunnels: &[TunnelRecord],
    tunnel: &TunnelRecord,
) -> Result<u16, Error> {
    let agents: Vec<&str> = tunnel.agents().map(|(id, _)| id).collect();
    let cursor: u16 = get(&s.meta, wtxn, SERVICE_PORT_CURSOR)?.unwrap_or(FIRST_SERVICE_PORT);
    let count = tunnel.port_count();
    let first = rules::allocate_service_ports(tunnels, &agents, count, Some(&tunnel.id), cursor)
        .ok_or_else(|| Error::conflict("agent", "the agents have no free service ports left"))?;
    let next = first.saturating_add(count);
    put(&s.meta, wtxn, SERVICE_PORT_CURSOR, &next)?;
    Ok(first)
}
