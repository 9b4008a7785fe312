//! Starting a node: everything a gateway and an agent do alike before their roles diverge.

use crate::apply::Latest;
use crate::link::{ControlUrl, LinkSettings};
use crate::state_dir::StateDir;
use crate::Error;
use kakuremichi_netstack::Stack;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::{ConfigSnapshot, HEALTH_PORT};
use kakuremichi_proto::ports::PortPolicy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How a node reaches Control and where it keeps its state: what every node is told.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    /// `CONTROL_URL`.
    pub control_url: String,
    /// `API_KEY`.
    pub api_key: String,
    /// Extra roots to trust for an `https://` Control (`CONTROL_CA`).
    pub control_ca: Option<PathBuf>,
    /// Where the key and cached config live (`STATE_DIR`).
    pub state_dir: PathBuf,
}

impl ControlSettings {
    /// From command-line flags, each falling back to its environment variable (`CONTROL_URL`,
    /// `API_KEY` or a file named by `API_KEY_FILE`, `CONTROL_CA`, `STATE_DIR`); the state
    /// directory then to `default_state_dir`.
    pub fn from_flags_or_env(
        control_url: Option<String>,
        api_key: Option<String>,
        control_ca: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        default_state_dir: &str,
    ) -> Result<Self, Error> {
        let path = |flag: Option<PathBuf>, env: &str| {
            flag.or_else(|| std::env::var_os(env).map(PathBuf::from))
        };
        Ok(ControlSettings {
            control_url: required(control_url, "CONTROL_URL")?,
            api_key: match (api_key, std::env::var_os("API_KEY_FILE")) {
                (None, Some(file)) if std::env::var("API_KEY").is_err() => {
                    read_key_file(Path::new(&file))?
                }
                (flag, _) => required(flag, "API_KEY")?,
            },
            control_ca: path(control_ca, "CONTROL_CA"),
            state_dir: path(state_dir, "STATE_DIR")
                .unwrap_or_else(|| PathBuf::from(default_state_dir)),
        })
    }
}

/// The API key in `path` (`API_KEY_FILE`, e.g. written by Control's `--join-dir`).
fn read_key_file(path: &Path) -> Result<String, Error> {
    let key = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("API_KEY_FILE {}: {e}", path.display())))?;
    match key.trim() {
        "" => Err(Error::Config(format!(
            "API_KEY_FILE {} is empty",
            path.display()
        ))),
        key => Ok(key.to_string()),
    }
}

/// A required setting from its command-line flag or, failing that, its environment variable.
fn required(flag: Option<String>, env: &str) -> Result<String, Error> {
    flag.or_else(|| std::env::var(env).ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "{env} is required (environment variable or --{})",
                env.to_lowercase().replace('_', "-")
            ))
        })
}

/// What starting a node needs.
pub struct NodeSettings<'a> {
    /// Agent or gateway.
    pub kind: NodeKind,
    /// Control and the state directory.
    pub control: &'a ControlSettings,
    /// The WireGuard UDP socket's address.
    pub wireguard_bind: SocketAddr,
    /// Gateways: the `host:port` agents send datagrams to.
    pub wireguard_endpoint: Option<String>,
    /// Gateways: which ports tunnels may take.
    pub ports: Option<PortPolicy>,
    /// Gateways: the public HTTPS port (see [`kakuremichi_proto::messages::Hello::https_port`]).
    pub https_port: Option<u16>,
    /// Gateways: the public HTTP port (see [`kakuremichi_proto::messages::Hello::http_port`]).
    pub http_port: Option<u16>,
    /// Agents: their `ALLOW_TARGETS`, as Control shows and checks tunnels against it.
    pub allow_targets: Option<String>,
    /// What the node says it can do in its hello ([`kakuremichi_proto::messages::Hello::features`]).
    pub features: &'static [&'static str],
}

/// A started node, not yet talking to Control.
pub struct Node {
    /// The userspace network, bound and driven.
    pub stack: Stack,
    /// Snapshots to apply; holds the cached one, if any, from the start.
    pub snapshots: Latest<ConfigSnapshot>,
    /// What [`crate::link::run`] needs.
    pub link: LinkSettings,
}

/// Accept and close connections on [`HEALTH_PORT`] inside the overlay, forever: the node
/// that probes learns that this node and the WireGuard path to it are alive.
pub fn answer_health_probes(stack: &Stack) -> Result<impl std::future::Future<Output = ()>, Error> {
    let listener = stack.listen(HEALTH_PORT).map_err(|source| Error::Io {
        context: format!("listening on overlay port {HEALTH_PORT}"),
        source,
    })?;
    Ok(async move {
        loop {
            if let Err(e) = listener.accept().await {
                log::debug!("health port: {e}");
                async_io::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    })
}

/// Check the settings, load or make the key, bind WireGuard and queue the cached config.
pub async fn start(settings: NodeSettings<'_>) -> Result<Node, Error> {
    let control = ControlUrl::parse(&settings.control.control_url, settings.kind)?;
    if settings.control.api_key.is_empty() {
        return Err(Error::Config("API_KEY is empty".into()));
    }
    let state_dir = StateDir::open(&settings.control.state_dir)?;
    let private_key = state_dir.private_key()?;
    let stack = Stack::bind(settings.wireguard_bind, private_key)
        .await
        .map_err(|source| Error::Io {
            context: format!("binding the WireGuard socket {}", settings.wireguard_bind),
            source,
        })?;
    let snapshots = Latest::default();
    if let Some(cached) = state_dir.cached_config() {
        log::info!(
            "serving cached config version {} until Control answers",
            cached.version
        );
        snapshots.put(cached);
    }
    let hello = crate::hello(&private_key, &settings);
    let tls = Some(crate::link::tls_connector(
        settings.control.control_ca.as_deref(),
    )?);
    let link = LinkSettings {
        control,
        api_key: settings.control.api_key.clone(),
        hello,
        state_dir,
        tls,
    };
    Ok(Node {
        stack,
        snapshots,
        link,
    })
}
