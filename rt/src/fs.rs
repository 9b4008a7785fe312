//! Files that must survive `kill -9` whole or not at all.

use std::fs;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to a temporary file beside `file`, sync it, rename it over `file`, and sync
/// the directory. With `private`, the file is readable by its owner only (keys).
pub fn write_atomically(file: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut handle = options.open(&tmp)?;
    handle.write_all(bytes)?;
    handle.sync_all()?;
    fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent().and_then(|d| fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}
