//! Creating, changing and deleting tunnels (each checked against every other, with its
//! service ports allocated), their service tokens, and the keys that sign tunnel logins.

use super::{get, put, Store, ACCESS_KEYS, CONTROL_ROUTE, SERVICE_PORT_CURSOR};
use crate::access::{Keyring, ServiceToken};
use crate::auth::{self};
use crate::error::Error;
use crate::model::{Issuer, NodeRecord, TunnelRecord, TunnelSpec, FIRST_SERVICE_PORT};
use crate::tunnels as rules;
use heed::RwTxn;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::ControlRoute;

impl Store {
    /// Publish the tunnel `build` makes from the current gateways and agents.
    pub fn create_tunnel(
        &self,
        build: impl FnOnce(&[NodeRecord]) -> Result<TunnelSpec, Error>,
    ) -> Result<TunnelRecord, Error> {
        self.write(|s, wtxn| {
            let tunnels = s.decoded_tunnels.all(&s.tunnels, wtxn)?;
            let nodes = s.decoded_nodes.all(&s.nodes, wtxn)?;
            let spec = build(&nodes)?;
            check_agents(&nodes, &spec)?;
            let mut record = TunnelRecord {
                id: auth::new_id("tun"),
                spec,
                service_port: 0,
                created_at: auth::unix_now(),
            };
            rules::check(&record, &tunnels, &nodes)?;
            record.service_port = free_service_ports(s, wtxn, &tunnels, &record)?;
            put(&s.tunnels, wtxn, &record.id, &record)?;
            Ok(record)
        })
    }

    /// Change tunnel `id` to what `change` makes of it, in one transaction with the read.
    pub fn update_tunnel(
        &self,
        id: &str,
        change: impl FnOnce(&TunnelSpec, &[NodeRecord]) -> Result<TunnelSpec, Error>,
    ) -> Result<TunnelRecord, Error> {
        self.write(|s, wtxn| {
            let tunnels = s.decoded_tunnels.all(&s.tunnels, wtxn)?;
            let nodes = s.decoded_nodes.all(&s.nodes, wtxn)?;
            let mut record = tunnels
                .iter()
                .find(|t| t.id == id)
                .cloned()
                .ok_or_else(|| Error::not_found("tunnel", id))?;
            let placed = |t: &TunnelRecord| -> (Vec<String>, u16) {
                let agents = t.spec.agents().map(|(id, _)| id.to_string()).collect();
                (agents, t.spec.port_count())
            };
            let before = placed(&record);
            record.spec = change(&record.spec, &nodes)?;
            check_agents(&nodes, &record.spec)?;
            rules::check(&record, &tunnels, &nodes)?;
            if before != placed(&record) {
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
            tunnel.spec.access.service_tokens.push(record.clone());
            Ok(())
        })?;
        Ok((record, token))
    }

    /// Revoke a tunnel's service token.
    pub fn revoke_service_token(&self, tunnel_id: &str, token_id: &str) -> Result<(), Error> {
        self.change_tunnel(tunnel_id, |tunnel| {
            let tokens = &mut tunnel.spec.access.service_tokens;
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

    /// Remove a tunnel, and its hostname's certificate when nothing else serves that
    /// hostname (another tunnel on a path of it, or Control's own route).
    pub fn delete_tunnel(&self, id: &str) -> Result<(), Error> {
        self.write(|s, wtxn| {
            let mut tunnels = s.decoded_tunnels.all(&s.tunnels, wtxn)?;
            let at = tunnels
                .iter()
                .position(|t| t.id == id)
                .ok_or_else(|| Error::not_found("tunnel", id))?;
            let tunnel = tunnels.remove(at);
            s.tunnels.delete(wtxn, id)?;
            if let Some(hostname) = tunnel.spec.hostname {
                let by_tunnel = tunnels
                    .iter()
                    .any(|t| t.spec.hostname.as_ref() == Some(&hostname));
                let control: Option<(ControlRoute, Issuer)> = get(&s.meta, wtxn, CONTROL_ROUTE)?;
                let by_control = control.is_some_and(|(route, _)| route.hostname == hostname);
                if !by_tunnel && !by_control {
                    s.certs.delete(wtxn, hostname.as_str())?;
                }
            }
            Ok(())
        })
    }
}

/// Every agent `spec` names is an enrolled agent.
fn check_agents(nodes: &[NodeRecord], spec: &TunnelSpec) -> Result<(), Error> {
    for (agent_id, _) in spec.agents() {
        let known = nodes
            .iter()
            .any(|n| n.id == agent_id && n.kind == NodeKind::Agent);
        if !known {
            return Err(Error::invalid(
                "agent",
                format!("no agent with id {agent_id:?}"),
            ));
        }
    }
    Ok(())
}

/// The first of a free block of service ports for `tunnel` on its agents, after the last
/// block handed out (kept in the meta table, in the same transaction).
fn free_service_ports(
    s: &Store,
    wtxn: &mut RwTxn,
    tunnels: &[TunnelRecord],
    tunnel: &TunnelRecord,
) -> Result<u16, Error> {
    let agents: Vec<&str> = tunnel.spec.agents().map(|(id, _)| id).collect();
    let cursor: u16 = get(&s.meta, wtxn, SERVICE_PORT_CURSOR)?.unwrap_or(FIRST_SERVICE_PORT);
    let count = tunnel.spec.port_count();
    let first = rules::allocate_service_ports(tunnels, &agents, count, Some(&tunnel.id), cursor)
        .ok_or_else(|| Error::conflict("agent", "the agents have no free service ports left"))?;
    let next = first.saturating_add(count);
    put(&s.meta, wtxn, SERVICE_PORT_CURSOR, &next)?;
    Ok(first)
}
