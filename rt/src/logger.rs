//! A small logger to stderr: `LEVEL target: message`. `KAKUREMICHI_LOG` picks the level
//! (`error`, `warn`, `info` (default), `debug`, `trace`).

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLogger;

/// Libraries that log what strangers do (rustls warns about every client that sends an IP
/// address as SNI, as wrk and curl with `https://1.2.3.4` do): only their errors pass, or
/// any client could fill the disk; `KAKUREMICHI_LOG=debug` lets everything through.
const QUIET_LIBRARIES: [&str; 2] = ["rustls", "h2"];

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let quiet = log::max_level() < LevelFilter::Debug
            && QUIET_LIBRARIES
                .iter()
                .any(|library| metadata.target().starts_with(library));
        let limit = if quiet {
            LevelFilter::Error
        } else {
            log::max_level()
        };
        metadata.level() <= limit
    }
    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{:5} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}

/// Install the logger once per process; later calls do nothing.
pub fn init() {
    let level = std::env::var("KAKUREMICHI_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}
