//! `--join-dir`: a directory Control shares with the nodes of a one-shot deployment (the
//! docker compose stack). At start Control makes sure it holds a working API key for one
//! gateway (`gateway.key`) and one agent (`agent.key`) — or only the kinds `--join` names —
//! enrolling them when the files are missing or name keys the store does not know, so nodes join with `API_KEY_FILE` and no
//! secret is written into the compose file. It also writes the first-run setup address and
//! code (`setup.txt`) while no user exists.

use crate::error::Error;
use crate::store::Store;
use kakuremichi_proto::ids::NodeKind;
use std::path::Path;

/// Enrol what is missing of `kinds` and write the keys into `dir`.
pub fn prepare(store: &Store, dir: &Path, kinds: &[NodeKind]) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    for &kind in kinds {
        let path = dir.join(format!("{}.key", kind.as_str()));
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        let known = store
            .node_by_api_key(current.trim())?
            .is_some_and(|node| node.kind == kind);
        if known {
            continue;
        }
        let (node, api_key) = store.create_node(kind, format!("compose-{}", kind.as_str()))?;
        write_private(&path, &api_key)?;
        log::info!(
            "join directory: enrolled {} {} and wrote its API key to {}",
            kind.as_str(),
            node.id,
            path.display()
        );
    }
    Ok(())
}

/// Write the setup address and code for the owner to find beside the keys.
pub fn write_setup(dir: &Path, url: &str, code: &str) -> Result<(), Error> {
    write_private(
        &dir.join("setup.txt"),
        &format!("Open {url}/setup and enter the setup code {code}\n"),
    )
}

/// Replace `path` with `text`, readable by this user only.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    kakuremichi_rt::fs::write_atomically(path, text.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
