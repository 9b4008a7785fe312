//! Control's durable state in LMDB (heed). Every change is one write transaction that also
//! bumps the revision, so a change is either wholly there after `kill -9` or not at all, and
//! the revision numbers the config snapshots pushed to nodes.

use crate::access::Keyring;
use crate::error::Error;
use crate::model::{OverlayNet, State};
use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod accounts;
mod certs;
mod kept;
mod nodes;
mod tunnels;

pub use accounts::SecondFactor;

type Table = Database<'static, Str, Bytes>;

/// Upper bound of the LMDB map; pages are only used as data grows.
const MAP_SIZE: usize = 1 << 30;

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
    /// The state last decoded by [`Store::shared_state`].
    shared: Mutex<Option<Arc<State>>>,
    /// The node and tunnel records decoded last, by [`Store::state`] or by a write that
    /// checks against them all (a tunnel against every other, a hello's key against every
    /// node's).
    decoded_nodes: kept::Decoded<crate::model::NodeRecord>,
    decoded_tunnels: kept::Decoded<crate::model::TunnelRecord>,
}

const REVISION: &str = "revision";
const OVERLAY: &str = "overlay";

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
        let (env, tables) = open_env(
            dir,
            MAP_SIZE,
            &[
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
            ],
        )?;
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
            shared: Mutex::new(None),
            decoded_nodes: kept::Decoded::new(),
            decoded_tunnels: kept::Decoded::new(),
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

    /// [`Store::state`], decoded once per revision and shared by every caller: what the node
    /// sessions build their snapshots from, so a change is read once, not once per node.
    /// Writes that leave the revision alone (logins, API tokens) are not in it until the
    /// next revision, as they are in no snapshot.
    pub fn shared_state(&self) -> Result<Arc<State>, Error> {
        // One caller decodes a new revision while the others wait for it; the lock guards
        // nothing a panic could leave half-written.
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let revision = self.revision()?;
        if let Some(state) = shared.as_ref().filter(|s| s.revision == revision) {
            return Ok(state.clone());
        }
        let mut state = self.state()?;
        if let Some(before) = shared.as_deref() {
            state.follows(before);
        }
        let state = Arc::new(state);
        *shared = Some(state.clone());
        Ok(state)
    }

    /// The state [`Store::shared_state`] decoded last, whatever the store's revision is now:
    /// sessions build from it when the hub nudges them, so a burst of commits is decoded
    /// once by the hub, not once per session that happens to wake after the next commit.
    pub fn last_shared_state(&self) -> Option<Arc<State>> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything, consistently, at the current revision.
    pub fn state(&self) -> Result<State, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(State {
            revision: get(&self.meta, &rtxn, REVISION)?.unwrap_or(0),
            overlay: get(&self.meta, &rtxn, OVERLAY)?
                .ok_or_else(|| Error::Store("overlay network missing".into()))?,
            nodes: self.decoded_nodes.all(&self.nodes, &rtxn)?,
            tunnels: self.decoded_tunnels.all(&self.tunnels, &rtxn)?,
            certificates: all(&self.certs, &rtxn)?,
            challenges: all(&self.challenges, &rtxn)?,
            fallback_certificate: get(&self.meta, &rtxn, FALLBACK_CERTIFICATE)?,
            control_route: get(&self.meta, &rtxn, CONTROL_ROUTE)?,
            users: all(&self.users, &rtxn)?,
            keyring: get(&self.meta, &rtxn, ACCESS_KEYS)?
                .ok_or_else(|| Error::Store("access keys missing".into()))?,
            derived: Default::default(),
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

    /// A value kept in the meta table (CA material, ACME account).
    pub fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let rtxn = self.env.read_txn()?;
        get(&self.meta, &rtxn, key)
    }

    /// Keep a value in the meta table.
    pub fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.write(|s, wtxn| put(&s.meta, wtxn, key, value))
    }

    /// Change a value of the meta table (its default when absent) in one transaction: two
    /// writers never lose each other's change; an `Err` from `change` writes nothing.
    pub fn update_meta<T, R>(
        &self,
        key: &str,
        change: impl FnOnce(&mut T) -> Result<R, Error>,
    ) -> Result<R, Error>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        self.write(|s, wtxn| {
            let mut value: T = get(&s.meta, wtxn, key)?.unwrap_or_default();
            let answer = change(&mut value)?;
            put(&s.meta, wtxn, key, &value)?;
            Ok(answer)
        })
    }
}

/// Open (or create) the LMDB environment in `dir` (a 0700 directory of 0600 files) with
/// the named tables, each created in its own transaction if missing.
pub(crate) fn open_env<K: 'static>(
    dir: &Path,
    map_size: usize,
    names: &[&str],
) -> Result<(Env, Vec<Database<'static, K, Bytes>>), Error> {
    kakuremichi_rt::fs::private_dir(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for name in ["data.mdb", "lock.mdb"] {
        let file = dir.join(name);
        kakuremichi_rt::fs::private_file(&file)
            .map_err(|e| Error::io(format!("restricting {}", file.display()), e))?;
    }
    // SAFETY: LMDB requires that the same environment is not opened twice in one process
    // and that its files are not modified except through LMDB. Control opens each of its
    // environments once, at start; other processes (the CLI) go through LMDB's own locking.
    #[allow(unsafe_code)]
    let env = unsafe {
        EnvOpenOptions::new()
            .map_size(map_size)
            .max_dbs(16)
            .open(dir)
    }
    .map_err(|e| Error::Store(format!("opening {}: {e}", dir.display())))?;
    let mut tables = Vec::new();
    for name in names {
        let wtxn = env.write_txn()?;
        let table = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                opener
                    .create_database(wtxn, Some(name))
                    .map(CommitOrAbort::<_, ()>::Commit)
            })?
            .unwrap_commit();
        tables.push(table);
    }
    Ok((env, tables))
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
