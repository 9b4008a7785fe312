//! The node's state directory: `wireguard.key` and `config.json`.

use crate::Error;
use base64::Engine;
use kakuremichi_proto::messages::{decode, encode, ConfigSnapshot};
use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const KEY_FILE: &str = "wireguard.key";
const CONFIG_FILE: &str = "config.json";
const ENDPOINTS_FILE: &str = "peer-endpoints.json";

/// A node's state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Use (and create if needed) `path`, 0700 with 0600 files: it holds the node's private
    /// key and a snapshot with certificate keys, password hashes and the cookie key.
    pub fn open(path: &Path) -> Result<StateDir, Error> {
        kakuremichi_rt::fs::private_dir(path)
            .map_err(|e| io(format!("creating state directory {}", path.display()), e))?;
        for name in [KEY_FILE, CONFIG_FILE, ENDPOINTS_FILE] {
            let file = path.join(name);
            kakuremichi_rt::fs::private_file(&file)
                .map_err(|e| io(format!("restricting {}", file.display()), e))?;
        }
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// The node's WireGuard private key, generated and saved on first use.
    pub fn private_key(&self) -> Result<[u8; 32], Error> {
        let file = self.path.join(KEY_FILE);
        match fs::read_to_string(&file) {
            Ok(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| Error::Config(format!("{} is not base64", file.display())))?;
                bytes.try_into().map_err(|_| {
                    Error::Config(format!("{} does not hold a 32-byte key", file.display()))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key)
                    .map_err(|e| Error::Config(format!("no randomness for a key: {e}")))?;
                let text = base64::engine::general_purpose::STANDARD.encode(key) + "\n";
                write_atomically(&file, text.as_bytes())?;
                log::info!("generated a new WireGuard key in {}", file.display());
                Ok(key)
            }
            Err(e) => Err(io(format!("reading {}", file.display()), e)),
        }
    }

    /// The last snapshot received from Control, if any and readable.
    pub fn cached_config(&self) -> Option<ConfigSnapshot> {
        let file = self.path.join(CONFIG_FILE);
        let text = fs::read_to_string(&file).ok()?;
        // Its own file, which holds every certificate: not held to a message's size limit.
        match serde_json::from_str(&text) {
            Ok(config) => Some(config),
            Err(e) => {
                log::warn!("ignoring unreadable cached config {}: {e}", file.display());
                None
            }
        }
    }

    /// Peers' last known WireGuard endpoints, by base64 public key.
    pub fn peer_endpoints(&self) -> HashMap<String, SocketAddr> {
        let text = fs::read_to_string(self.path.join(ENDPOINTS_FILE)).unwrap_or_default();
        decode(&text).unwrap_or_default()
    }

    /// Keep peers' endpoints for the next start, so a restarted node can start handshakes
    /// itself instead of waiting for peers whose sessions it lost.
    pub fn save_peer_endpoints(
        &self,
        endpoints: &HashMap<String, SocketAddr>,
    ) -> Result<(), Error> {
        write_atomically(
            &self.path.join(ENDPOINTS_FILE),
            encode(endpoints).as_bytes(),
        )
    }

    /// Keep `config` for the next start.
    pub fn save_config(&self, config: &ConfigSnapshot) -> Result<(), Error> {
        write_atomically(&self.path.join(CONFIG_FILE), encode(config).as_bytes())
    }

    /// [`StateDir::save_config`] for the loop that applies configs, once each is applied,
    /// logging a failure: the session with Control only hands configs on. Encoding one that
    /// carries thousands of certificates there held the session up until it missed
    /// heartbeats; here a burst of configs is saved once, as it is applied once.
    pub fn keep_config(&self, config: &ConfigSnapshot) {
        if let Err(e) = self.save_config(config) {
            log::warn!("could not cache config version {}: {e}", config.version);
        }
    }
}

fn io(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

/// [`kakuremichi_rt::fs::write_atomically`], with the file named in the error.
fn write_atomically(file: &Path, bytes: &[u8]) -> Result<(), Error> {
    kakuremichi_rt::fs::write_atomically(file, bytes)
        .map_err(|e| io(format!("writing {}", file.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("kakuremichi-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let key = state.private_key().unwrap();
        assert_eq!(state.private_key().unwrap(), key);
        fs::write(dir.join(KEY_FILE), "garbage").unwrap();
        assert!(matches!(state.private_key(), Err(Error::Config(_))));
        fs::write(dir.join(CONFIG_FILE), "{").unwrap();
        assert!(state.cached_config().is_none());
        let endpoints = HashMap::from([("key".to_string(), "192.0.2.1:51820".parse().unwrap())]);
        state.save_peer_endpoints(&endpoints).unwrap();
        assert_eq!(state.peer_endpoints(), endpoints);
        let _ = fs::remove_dir_all(&dir);
    }
}
