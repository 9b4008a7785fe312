//! Files that must survive `kill -9` whole or not at all, and the private directories that
//! hold keys, hashes and certificates (0600 files in 0700 directories).

use std::fs;
use std::io::Write;
use std::path::Path;

/// Write `bytes` to a temporary file beside `file`, sync it, rename it over `file`, and sync
/// the directory. The file is readable by its owner only (everything nodes and Control keep
/// is a key, a hash or a certificate), from the moment it exists: a temporary file left by a
/// crash is removed, not reused with its mode.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut handle = options.open(&tmp)?;
    handle.write_all(bytes)?;
    handle.sync_all()?;
    fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent().and_then(|d| fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Create `dir` (and its parents) if needed and make it 0700; a directory found open to
/// others is closed and the change logged.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    // Created 0700, so a new directory is never open to others, even for a moment.
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)?;
    restrict(dir, 0o700)
}

/// Make an existing `file` 0600 if others could read it, and log that; a missing file is
/// fine.
pub fn private_file(file: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_file() => restrict(file, 0o600),
        Ok(_) => Ok(()),
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = fs::metadata(path)?.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        log::warn!(
            "{} was readable by others (mode {current:o}); made it {mode:o}",
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_private_from_creation_and_wide_modes_are_closed() {
        let dir = std::env::temp_dir().join(format!("km-fs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let state = dir.join("state");
        private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        // A temporary file left world-readable by a crash is not reused.
        let key = state.join("key");
        fs::write(key.with_extension("tmp"), "old").unwrap();
        fs::set_permissions(key.with_extension("tmp"), fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&key, b"secret").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&state).unwrap();
        private_file(&key).unwrap();
        private_file(&state.join("missing")).unwrap();
        assert_eq!((mode(&state), mode(&key)), (0o700, 0o600));
        fs::remove_dir_all(&dir).unwrap();
    }
}
