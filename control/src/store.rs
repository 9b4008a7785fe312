//! Control's durable state in LMDB (heed). Every change is one write transaction that also
//! bumps the revision, so a change is either wholly there after `kill -9` or not at all, and
//! the revision numbers the config snapshots pushed to nodes.

use crate::access::{Keyring, ServiceToken, TunnelAccess};
use crate::auth::{self, sessions::SessionRecord, Role, UserRecord};
use crate::error::Error;
use crate::model::GatewayChoice;
use crate::model::{
    CertRecord, Issuer, NodeRecord, OverlayNet, Replica, State, TokenRecord, TunnelRecord,
    FIRST_SERVICE_PORT,
};
use crate::model::{OriginSettings, TunnelKind};
use crate::tunnels;
use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn};
use kakuremichi_proto::ids::{Hostname, NodeKind, Target};
use kakuremichi_proto::messages::AcmeChallenge;
use kakuremichi_proto::messages::Hello;
use kakuremichi_proto::ports::PortRange;
use kakuremichi_proto::proxy_protocol::ProxyProtocol;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

type Table = Database<'static, Str, Bytes>;

/// Upper bound of the LMDB map; pages are only used as data grows.
const MAP_SIZE: usize = 1 << 30;

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

/// The open store.
pub struct Store {
    env: Env,
    nodes: Table,
    api_keys: Table,
    tunnels: Table,
    tokens: Table,
    meta: Table,
    /// Hostname → certificate record.
    certs: Table,
    /// Challenge key → answer gateways give while an ACME order is validated.
    challenges: Table,
    /// User id → user.
    users: Table,
    /// User name → user id.
    user_names: Table,
    /// Hash of a session token → session.
    sessions: Table,
    /// A wake-up per commit, for [`Store::commits`].
    commits: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

const REVISION: &str = "revision";
const OVERLAY: &str = "overlay";
/// A second factor a login offers: the TOTP step its code matched, or the forms a recovery
/// code may be stored in.
pub enum SecondFactor {
    Step(u64),
    Recovery(Vec<String>),
}

/// Meta key of where the next service port search starts.
const SERVICE_PORT_CURSOR: &str = "service_port_cursor";
/// Meta key of the keys that sign tunnel logins.
const ACCESS_KEYS: &str = "access_keys";
/// Meta key of Control's built-in gateway route and its certificate issuer.
pub const CONTROL_ROUTE: &str = "control_route";
/// Meta key of the certificate gateways show clients that send no SNI.
pub const FALLBACK_CERTIFICATE: &str = "gateway_fallback_certificate";

impl Store {
    /// Open (or create) the store in `dir`. The overlay network is fixed at first open;
    /// `overlay` only applies then, and a different one later is an error.
    pub fn open(dir: &Path, overlay: OverlayNet) -> Result<Store, Error> {
        kakuremichi_rt::fs::private_dir(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for name in ["data.mdb", "lock.mdb"] {
            let file = dir.join(name);
            kakuremichi_rt::fs::private_file(&file)
                .map_err(|e| Error::io(format!("restricting {}", file.display()), e))?;
        }
        // SAFETY: LMDB requires that the same environment is not opened twice in one process
        // and that its files are not modified except through LMDB. Control opens its data
        // directory once, at start; other processes (the CLI) go through LMDB's own locking.
        #[allow(unsafe_code)]
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(MAP_SIZE)
                .max_dbs(16)
                .open(dir)
        }
        .map_err(|e| Error::Store(format!("opening {}: {e}", dir.display())))?;
        let mut tables = Vec::new();
        for name in [
            "nodes",
            "api_keys",
            "tunnels",
            "tokens",
            "meta",
            "certs",
            "challenges",
            "users",
            "user_names",
            "sessions",
        ] {
            let wtxn = env.write_txn()?;
            let table: Table = env
                .create_databases_and_commit(wtxn, |opener, wtxn| {
                    opener
                        .create_database(wtxn, Some(name))
                        .map(CommitOrAbort::<_, ()>::Commit)
                })?
                .unwrap_commit();
            tables.push(table);
        }
        let [nodes, api_keys, tunnels, tokens, meta, certs, challenges, users, user_names, sessions] =
            tables[..]
        else {
            unreachable!("ten tables were created above")
        };
        let store = Store {
            env,
            nodes,
            api_keys,
            tunnels,
            tokens,
            meta,
            certs,
            challenges,
            users,
            user_names,
            sessions,
            commits: async_channel::bounded(1),
        };
        let mut wtxn = store.env.write_txn()?;
        match get::<OverlayNet>(&store.meta, &wtxn, OVERLAY)? {
            Some(existing) if existing != overlay => {
                return Err(Error::Config(format!(
                    "the store's overlay network is {}/{}; it cannot change to {}/{}",
                    existing.network, existing.prefix, overlay.network, overlay.prefix
                )))
            }
            Some(_) => {}
            None => put(&store.meta, &mut wtxn, OVERLAY, &overlay)?,
        }
        if get::<Keyring>(&store.meta, &wtxn, ACCESS_KEYS)?.is_none() {
            put(&store.meta, &mut wtxn, ACCESS_KEYS, &Keyring::generate()?)?;
        }
        wtxn.commit()?;
        Ok(store)
    }

    /// The current revision alone (one read, for a cheap check per heartbeat).
    pub fn revision(&self) -> Result<u64, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(get(&self.meta, &rtxn, REVISION)?.unwrap_or(0))
    }

    /// Everything, consistently, at the current revision.
    pub fn state(&self) -> Result<State, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(State {
            revision: get(&self.meta, &rtxn, REVISION)?.unwrap_or(0),
            overlay: get(&self.meta, &rtxn, OVERLAY)?
                .ok_or_else(|| Error::Store("overlay network missing".into()))?,
            nodes: all(&self.nodes, &rtxn)?,
            tunnels: all(&self.tunnels, &rtxn)?,
            certificates: all(&self.certs, &rtxn)?,
            challenges: all(&self.challenges, &rtxn)?,
            fallback_certificate: get(&self.meta, &rtxn, FALLBACK_CERTIFICATE)?,
            control_route: get(&self.meta, &rtxn, CONTROL_ROUTE)?,
            users: all(&self.users, &rtxn)?,
            keyring: get(&self.meta, &rtxn, ACCESS_KEYS)?
                .ok_or_else(|| Error::Store("access keys missing".into()))?,
        })
    }

    /// Run `change` in one write transaction that bumps the revision; commit only if it
    /// succeeds.
    fn write<T>(
        &self,
        change: impl FnOnce(&Self, &mut RwTxn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut wtxn = self.env.write_txn()?;
        let value = change(self, &mut wtxn)?;
        self.bump_revision(&mut wtxn)?;
        wtxn.commit()?;
        self.announce_commit();
        Ok(value)
    }

    /// Wakes whoever waits on [`Store::commits`]: the hub, which pushes a moved revision to
    /// every node. A full channel already holds an unread wake-up.
    fn announce_commit(&self) {
        let _ = self.commits.0.try_send(());
    }

    /// Wakes after this process commits to the store (the hub pushes new revisions from
    /// it; other processes' commits it finds by polling [`Store::revision`]).
    pub fn commits(&self) -> async_channel::Receiver<()> {
        self.commits.1.clone()
    }

    fn bump_revision(&self, wtxn: &mut RwTxn) -> Result<(), Error> {
        let revision: u64 = get(&self.meta, wtxn, REVISION)?.unwrap_or(0);
        put(&self.meta, wtxn, REVISION, &(revision + 1))
    }

    /// Enrol a node. Returns its record and its API key, which is not stored.
    pub fn create_node(&self, kind: NodeKind, name: String) -> Result<(NodeRecord, String), Error> {
        let api_key = auth::new_secret("kmk");
        let record = self.write(|s, wtxn| {
            let nodes: Vec<NodeRecord> = all(&s.nodes, wtxn)?;
            let overlay: OverlayNet = get(&s.meta, wtxn, OVERLAY)?
                .ok_or_else(|| Error::Store("overlay network missing".into()))?;
            let used: Vec<_> = nodes.iter().map(|n| n.overlay_ip).collect();
            let overlay_ip = overlay
                .allocate(&used)
                .ok_or_else(|| Error::conflict("overlay", "the overlay network is full"))?;
            let id = auth::new_id(match kind {
                NodeKind::Agent => "agt",
                NodeKind::Gateway => "gw",
            });
            let record = NodeRecord::enrolled(
                &id,
                kind,
                &name,
                overlay_ip,
                auth::hash_secret(&api_key),
                auth::unix_now(),
            );
            put(&s.nodes, wtxn, &record.id, &record)?;
            put(&s.api_keys, wtxn, &record.api_key_hash, &record.id)?;
            Ok(record)
        })?;
        Ok((record, api_key))
    }

    /// Rename, disable or enable a node through `change`; its kind, key and address stay.
    pub fn update_node(
        &self,
        id: &str,
        change: impl FnOnce(&mut NodeRecord),
    ) -> Result<NodeRecord, Error> {
        self.write(|s, wtxn| {
            let mut node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            change(&mut node);
            put(&s.nodes, wtxn, id, &node)?;
            Ok(node)
        })
    }

    /// Give a node a new API key and forget the old one: the node's live session ends and
    /// the old key is refused from now on. Returns the record and the new key (shown once).
    pub fn rotate_node_key(&self, id: &str) -> Result<(NodeRecord, String), Error> {
        let api_key = auth::new_secret("kmk");
        let node = self.write(|s, wtxn| {
            let mut node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            s.api_keys.delete(wtxn, &node.api_key_hash)?;
            node.api_key_hash = auth::hash_secret(&api_key);
            put(&s.api_keys, wtxn, &node.api_key_hash, &node.id)?;
            put(&s.nodes, wtxn, id, &node)?;
            Ok(node)
        })?;
        Ok((node, api_key))
    }

    /// Remove a node and its key. An agent that still carries tunnels is refused, naming them:
    /// deleting it would silently take them down.
    pub fn delete_node(&self, id: &str) -> Result<NodeRecord, Error> {
        self.write(|s, wtxn| {
            let node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            let carried: Vec<String> = all::<TunnelRecord>(&s.tunnels, wtxn)?
                .into_iter()
                .filter(|t| t.target_on(id).is_some())
                .map(|t| t.label())
                .collect();
            if !carried.is_empty() {
                return Err(Error::conflict(
                    "agent",
                    format!(
                        "it still carries {}: move or delete them first",
                        carried.join(", ")
                    ),
                ));
            }
            s.api_keys.delete(wtxn, &node.api_key_hash)?;
            s.nodes.delete(wtxn, id)?;
            Ok(node)
        })
    }

    /// The node an API key belongs to.
    pub fn node_by_api_key(&self, api_key: &str) -> Result<Option<NodeRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let Some(id) = get::<String>(&self.api_keys, &rtxn, &auth::hash_secret(api_key))? else {
            return Ok(None);
        };
        get(&self.nodes, &rtxn, &id)
    }

    /// Record what a node said in its hello. Returns whether anything changed (and so the
    /// revision moved and peers need new snapshots).
    pub fn record_hello(&self, id: &str, hello: &Hello) -> Result<bool, Error> {
        let rtxn = self.env.read_txn()?;
        let node: NodeRecord =
            get(&self.nodes, &rtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
        let (public_key, version) = (hello.public_key, hello.version.as_str());
        let endpoint = if node.kind == NodeKind::Gateway {
            hello.wireguard_endpoint.clone()
        } else {
            None
        };
        let (port_policy, https_port, http_port, allow_targets) = match node.kind {
            NodeKind::Gateway => (hello.ports.clone(), hello.https_port, hello.http_port, None),
            NodeKind::Agent => (None, None, None, hello.allow_targets.clone()),
        };
        let unchanged = node.public_key == Some(public_key)
            && node.version.as_deref() == Some(version)
            && node.wireguard_endpoint == endpoint
            && node.instance == hello.instance
            && node.port_policy == port_policy
            && node.https_port == https_port
            && node.http_port == http_port
            && node.allow_targets == allow_targets;
        if unchanged {
            return Ok(false);
        }
        drop(rtxn);
        self.write(|s, wtxn| {
            let clash = all::<NodeRecord>(&s.nodes, wtxn)?
                .into_iter()
                .any(|n| n.id != id && n.public_key == Some(public_key));
            if clash {
                return Err(Error::conflict(
                    "public_key",
                    "another node already uses this WireGuard key",
                ));
            }
            let mut node: NodeRecord =
                get(&s.nodes, wtxn, id)?.ok_or_else(|| Error::not_found("node", id))?;
            node.public_key = Some(public_key);
            node.version = Some(version.to_string());
            node.wireguard_endpoint = endpoint;
            node.instance = hello.instance;
            node.port_policy = port_policy;
            node.https_port = https_port;
            node.http_port = http_port;
            node.allow_targets = allow_targets;
            put(&s.nodes, wtxn, id, &node)?;
            Ok(true)
        })
    }

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
            tunnels::check(&record, &tunnels, &all::<NodeRecord>(&s.nodes, wtxn)?)?;
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
            tunnels::check(&record, &tunnels, &all::<NodeRecord>(&s.nodes, wtxn)?)?;
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

    /// Record a hostname's certificate state.
    /// Retry a failing certificate's order now; a certificate that is not failing is left.
    pub fn retry_certificate(&self, hostname: &str) -> Result<CertRecord, Error> {
        self.write(|s, wtxn| {
            let mut record: CertRecord = get(&s.certs, wtxn, hostname)?
                .ok_or_else(|| Error::not_found("certificate", hostname))?;
            if record.retry_now(auth::unix_now()) {
                put(&s.certs, wtxn, hostname, &record)?;
            }
            Ok(record)
        })
    }

    pub fn put_certificate(&self, record: &CertRecord) -> Result<(), Error> {
        self.write(|s, wtxn| put(&s.certs, wtxn, record.hostname.as_str(), record))
    }

    /// Publish a challenge answer to gateways under `key`; returns the revision that carries it.
    pub fn put_challenge(&self, key: &str, challenge: &AcmeChallenge) -> Result<u64, Error> {
        self.write(|s, wtxn| put(&s.challenges, wtxn, key, challenge))?;
        Ok(self.state()?.revision)
    }

    /// Withdraw a challenge answer.
    pub fn remove_challenge(&self, key: &str) -> Result<(), Error> {
        self.write(|s, wtxn| {
            s.challenges
                .delete(wtxn, key)
                .map(|_| ())
                .map_err(Error::from)
        })
    }

    /// A value kept in the meta table (CA material, ACME account).
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let rtxn = self.env.read_txn()?;
        get(&self.meta, &rtxn, key)
    }

    /// Keep a value in the meta table.
    pub fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.write(|s, wtxn| put(&s.meta, wtxn, key, value))
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

    /// A new admin API token named `name`, expiring at `expires_at` if given: its record and
    /// the token itself (shown once; only its hash is kept).
    pub fn create_token(
        &self,
        name: &str,
        expires_at: Option<u64>,
        scope: crate::model::TokenScope,
    ) -> Result<(TokenRecord, String), Error> {
        crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
        let token = auth::new_secret("kmt");
        let record = TokenRecord {
            id: auth::new_id("tok"),
            name: name.to_string(),
            created_at: auth::unix_now(),
            expires_at,
            scope,
        };
        self.write_accounts(|s, wtxn| put(&s.tokens, wtxn, &auth::hash_secret(&token), &record))?;
        Ok((record, token))
    }

    /// What `token` may do, if it is a live API token.
    pub fn token_scope(&self, token: &str) -> Result<Option<crate::model::TokenScope>, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(
            get::<TokenRecord>(&self.tokens, &rtxn, &auth::hash_secret(token))?
                .filter(|record| record.is_live(auth::unix_now()))
                .map(|record| record.scope),
        )
    }

    /// Every admin API token's record, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let mut tokens: Vec<TokenRecord> = all(&self.tokens, &rtxn)?;
        tokens.sort_by_key(|t| t.created_at);
        Ok(tokens)
    }

    /// Revoke the token with record id `id`.
    pub fn revoke_token(&self, id: &str) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| {
            let mut key = None;
            for entry in s.tokens.iter(wtxn)? {
                let (hash, bytes) = entry?;
                let record: TokenRecord = serde_json::from_slice(bytes)
                    .map_err(|e| Error::Store(format!("corrupt token record: {e}")))?;
                if record.id == id {
                    key = Some(hash.to_string());
                }
            }
            let key = key.ok_or_else(|| Error::not_found("token", id))?;
            s.tokens.delete(wtxn, &key)?;
            Ok(())
        })
    }

    /// Run `change` in one write transaction that leaves the revision alone: sessions and
    /// admin tokens are not part of any node's configuration, and a login must not make every
    /// node fetch its snapshot again. (Users are: gateways admit them to tunnels.)
    fn write_accounts<T>(
        &self,
        change: impl FnOnce(&Self, &mut RwTxn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut wtxn = self.env.write_txn()?;
        let value = change(self, &mut wtxn)?;
        wtxn.commit()?;
        // Some account changes move the revision too (ending a user's tunnel sessions).
        self.announce_commit();
        Ok(value)
    }

    /// How many users exist.
    pub fn user_count(&self) -> Result<u64, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(self.users.len(&rtxn)?)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let mut users: Vec<UserRecord> = all(&self.users, &rtxn)?;
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        get(&self.users, &rtxn, id)
    }

    /// A user by name.
    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        match get::<String>(&self.user_names, &rtxn, name)? {
            Some(id) => get(&self.users, &rtxn, &id),
            None => Ok(None),
        }
    }

    /// Add a user. With `only_if_first`, refuse when any user exists (the setup page and
    /// `user add --admin` on a fresh store race no one: the check and the write are one
    /// transaction).
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        password_hash: String,
        only_if_first: bool,
    ) -> Result<UserRecord, Error> {
        auth::check_user_name(name).map_err(|m| Error::invalid("name", m))?;
        self.write(|s, wtxn| {
            if only_if_first && s.users.len(wtxn)? > 0 {
                return Err(Error::conflict("name", "an administrator already exists"));
            }
            if get::<String>(&s.user_names, wtxn, name)?.is_some() {
                return Err(Error::conflict("name", format!("{name:?} is taken")));
            }
            let user = UserRecord {
                id: auth::new_id("usr"),
                name: name.to_string(),
                role,
                password_hash,
                disabled: false,
                created_at: auth::unix_now(),
                totp_secret: None,
                recovery_codes: Vec::new(),
                sessions_since: 0,
                totp_last_step: 0,
            };
            put(&s.users, wtxn, &user.id, &user)?;
            put(&s.user_names, wtxn, name, &user.id)?;
            Ok(user)
        })
    }

    /// Change a user with `change`; refuses a change that takes away the last enabled
    /// administrator. A change of password, role or enabled state ends the user's sessions,
    /// on Control and on every tunnel, and moves the revision so gateways hear of it.
    pub fn update_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRecord, Error> {
        self.update_user_keeping(id, None, change)
    }

    /// [`Store::update_user`], keeping the Control session `keep` (the user's own, when they
    /// change their own password).
    pub fn update_user_keeping(
        &self,
        id: &str,
        keep: Option<&str>,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRecord, Error> {
        self.write_accounts(|s, wtxn| {
            let mut user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            let was_admin = user.is_active_admin();
            let credentials = |u: &UserRecord| (u.role, u.disabled, u.password_hash.clone());
            let before = credentials(&user);
            change(&mut user);
            if credentials(&user) != before {
                s.end_sessions_of(wtxn, &mut user, keep)?;
            }
            put(&s.users, wtxn, id, &user)?;
            if was_admin {
                s.check_an_admin_remains(wtxn)?;
            }
            Ok(user)
        })
    }

    /// Use up a second factor of a user's, if it is good: a TOTP step later than the last one
    /// used, or an unused recovery code. Checked and spent in one transaction, so two
    /// requests with one code cannot both pass.
    pub fn spend_second_factor(&self, id: &str, spent: &SecondFactor) -> Result<bool, Error> {
        self.write_accounts(|s, wtxn| {
            let mut user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            let good = match spent {
                SecondFactor::Step(step) => {
                    let fresh = *step > user.totp_last_step;
                    user.totp_last_step = user.totp_last_step.max(*step);
                    fresh
                }
                SecondFactor::Recovery(forms) => {
                    let before = user.recovery_codes.len();
                    user.recovery_codes.retain(|c| !forms.contains(c));
                    user.recovery_codes.len() < before
                }
            };
            if good {
                put(&s.users, wtxn, id, &user)?;
            }
            Ok(good)
        })
    }

    /// End every session of a user, on Control and on every tunnel.
    pub fn end_all_sessions(&self, id: &str) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| {
            let mut user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            s.end_sessions_of(wtxn, &mut user, None)?;
            put(&s.users, wtxn, id, &user)
        })
    }

    /// End `user`'s Control sessions but `keep`, and (through `sessions_since`, pushed to the
    /// gateways with the moved revision, which also carries a new role or enabled state)
    /// their tunnel sessions. The caller stores `user`.
    fn end_sessions_of(
        &self,
        wtxn: &mut RwTxn,
        user: &mut UserRecord,
        keep: Option<&str>,
    ) -> Result<(), Error> {
        user.sessions_since = auth::unix_now().max(user.sessions_since);
        self.bump_revision(wtxn)?;
        self.delete_sessions_where(wtxn, |session| {
            session.user_id == user.id && Some(session.id.as_str()) != keep
        })
    }

    /// Remove a user and their sessions; refuses to remove the last enabled administrator.
    pub fn delete_user(&self, id: &str) -> Result<(), Error> {
        self.write(|s, wtxn| {
            let user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            s.users.delete(wtxn, id)?;
            s.user_names.delete(wtxn, &user.name)?;
            if user.is_active_admin() {
                s.check_an_admin_remains(wtxn)?;
            }
            s.delete_sessions_where(wtxn, |session| session.user_id == id)
        })
    }

    fn check_an_admin_remains(&self, txn: &RoTxn) -> Result<(), Error> {
        let users: Vec<UserRecord> = all(&self.users, txn)?;
        match users.iter().any(UserRecord::is_active_admin) {
            true => Ok(()),
            false => Err(Error::conflict(
                "user",
                "at least one enabled administrator must remain",
            )),
        }
    }

    /// End the sessions `doomed` picks.
    pub fn end_sessions(&self, doomed: impl Fn(&SessionRecord) -> bool) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| s.delete_sessions_where(wtxn, doomed))
    }

    /// A user's sessions, most recently used first.
    pub fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let mut sessions: Vec<SessionRecord> = all::<SessionRecord>(&self.sessions, &rtxn)?
            .into_iter()
            .filter(|s| s.user_id == user_id)
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(sessions)
    }

    fn delete_sessions_where(
        &self,
        wtxn: &mut RwTxn,
        doomed: impl Fn(&SessionRecord) -> bool,
    ) -> Result<(), Error> {
        let mut keys = Vec::new();
        for entry in self.sessions.iter(wtxn)? {
            let (key, bytes) = entry?;
            let session: SessionRecord = serde_json::from_slice(bytes)
                .map_err(|e| Error::Store(format!("corrupt session: {e}")))?;
            if doomed(&session) {
                keys.push(key.to_string());
            }
        }
        for key in keys {
            self.sessions.delete(wtxn, &key)?;
        }
        Ok(())
    }

    /// Keep a new session under the hash of its token.
    pub fn create_session(&self, token: &str, session: &SessionRecord) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| put(&s.sessions, wtxn, &auth::hash_secret(token), session))
    }

    /// The session a token stands for, with its user, if both exist.
    pub fn session(&self, token: &str) -> Result<Option<(SessionRecord, UserRecord)>, Error> {
        let rtxn = self.env.read_txn()?;
        let Some(session) = get::<SessionRecord>(&self.sessions, &rtxn, &auth::hash_secret(token))?
        else {
            return Ok(None);
        };
        Ok(get::<UserRecord>(&self.users, &rtxn, &session.user_id)?.map(|user| (session, user)))
    }

    /// Change the session a token stands for, if it exists.
    pub fn update_session(
        &self,
        token: &str,
        change: impl FnOnce(&mut SessionRecord),
    ) -> Result<(), Error> {
        let key = auth::hash_secret(token);
        self.write_accounts(|s, wtxn| {
            if let Some(mut session) = get::<SessionRecord>(&s.sessions, wtxn, &key)? {
                change(&mut session);
                put(&s.sessions, wtxn, &key, &session)?;
            }
            Ok(())
        })
    }

    /// End the session a token stands for.
    pub fn delete_session(&self, token: &str) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| {
            s.sessions.delete(wtxn, &auth::hash_secret(token))?;
            Ok(())
        })
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
    let first = tunnels::allocate_service_ports(tunnels, &agents, count, Some(&tunnel.id), cursor)
        .ok_or_else(|| Error::conflict("agent", "the agents have no free service ports left"))?;
    let next = first.saturating_add(count);
    put(&s.meta, wtxn, SERVICE_PORT_CURSOR, &next)?;
    Ok(first)
}

/// Longest key LMDB takes (its default `MDB_MAXKEYSIZE`).
const MAX_KEY_BYTES: usize = 511;

fn get<T: DeserializeOwned>(table: &Table, txn: &RoTxn, key: &str) -> Result<Option<T>, Error> {
    // LMDB refuses an empty or longer key as an error; no record has one, and a stranger's
    // login name, cookie or path may be one.
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Ok(None);
    }
    match table.get(txn, key)? {
        Some(bytes) => serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| Error::Store(format!("corrupt record {key:?}: {e}"))),
        None => Ok(None),
    }
}

fn put<T: Serialize>(table: &Table, txn: &mut RwTxn, key: &str, value: &T) -> Result<(), Error> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| Error::Store(format!("encoding {key:?}: {e}")))?;
    table.put(txn, key, &bytes)?;
    Ok(())
}

fn all<T: DeserializeOwned>(table: &Table, txn: &RoTxn) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    for entry in table.iter(txn)? {
        let (key, bytes) = entry?;
        out.push(
            serde_json::from_slice(bytes)
                .map_err(|e| Error::Store(format!("corrupt record {key:?}: {e}")))?,
        );
    }
    Ok(out)
}
