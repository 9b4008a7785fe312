//! An access log file (`--access-log`): each request as one JSON line, written by a thread
//! of its own so no request waits for the disk. The file is rotated when it passes its size
//! (`FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`, …), keeping a set number. When the
//! writer falls behind, lines are dropped and counted rather than held in memory.

use kakuremichi_proto::request_log::LogEntry;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Lines waiting for the writer, at most.
const QUEUE: usize = 8_192;

/// How large the file grows and how many rotated files are kept.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

/// The file's writer; the thread ends when this is dropped.
pub struct AccessLog {
    lines: SyncSender<String>,
    /// Lines dropped because the writer fell behind.
    pub dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Append to `path` (created 0600), rotating as `rotation` says.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<AccessLog> {
        let file = open_private(path)?;
        let (lines, queue) = sync_channel(QUEUE);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(path, file, rotation, queue))?;
        Ok(AccessLog {
            lines,
            dropped: Arc::default(),
        })
    }

    /// Write `entry` soon.
    pub fn write(&self, entry: &LogEntry) {
        let line = serde_json::to_string(entry).unwrap_or_default();
        if self.lines.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn write_lines(path: PathBuf, file: File, rotation: Rotation, queue: Receiver<String>) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = BufWriter::new(file);
    while let Ok(first) = queue.recv() {
        for line in std::iter::once(first).chain(queue.try_iter()) {
            if out
                .write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .is_err()
            {
                continue;
            }
            size += line.len() as u64 + 1;
            if size >= rotation.max_bytes {
                let _ = out.flush();
                match rotate(&path, rotation.keep) {
                    Ok(file) => (out, size) = (BufWriter::new(file), 0),
                    Err(e) => log::warn!("access log {}: rotating: {e}", path.display()),
                }
            }
        }
        // Flushed whenever the queue is empty: a quiet gateway's log is complete on disk.
        if let Err(e) = out.flush() {
            log::warn!("access log {}: {e}", path.display());
        }
    }
}

/// Shift `FILE.n` to `FILE.n+1` (the oldest beyond `keep` removed), `FILE` to `FILE.1`,
/// and open a new `FILE`.
fn rotate(path: &Path, keep: usize) -> std::io::Result<File> {
    if keep == 0 {
        std::fs::remove_file(path)?;
        return open_private(path);
    }
    let _ = std::fs::remove_file(rotated(path, keep));
    for n in (1..keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    std::fs::rename(path, rotated(path, 1))?;
    open_private(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_rotate_at_their_size_and_the_oldest_go() {
        let dir = std::env::temp_dir().join(format!("kakuremichi-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.jsonl");
        let rotation = Rotation {
            max_bytes: 10_000,
            keep: 3,
        };
        let log = AccessLog::open(&path, rotation).unwrap();
        let entry = LogEntry {
            time_ms: 1,
            tunnel_id: "tun_a".into(),
            client: "192.0.2.1".into(),
            user: None,
            method: "GET".into(),
            host: "h".into(),
            path: "/".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 1,
            micros: 5,
            agent: None,
            query: None,
            headers: Vec::new(),
        };
        for _ in 0..1_000 {
            log.write(&entry);
        }
        drop(log);
        // The writer ends once the queue is drained and the sender gone.
        let written = || {
            (0..=4)
                .map(|n| match n {
                    0 => path.clone(),
                    n => rotated(&path, n),
                })
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .collect::<Vec<_>>()
        };
        let mut files = written();
        for _ in 0..100 {
            if files.len() == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            files = written();
        }
        assert_eq!(files.len(), 4, "the file and three rotated ones, no more");
        for text in &files {
            assert!(text.len() <= 10_000 + 200);
            for line in text.lines() {
                assert_eq!(serde_json::from_str::<LogEntry>(line).unwrap(), entry);
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
