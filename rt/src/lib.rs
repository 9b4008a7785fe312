//! # kakuremichi-rt
//!
//! hyper without tokio: what the gateway, Control and the agent need to run hyper 1 on smol.
//!
//! - [`io`]: adapters between futures' `AsyncRead`/`AsyncWrite` and hyper's `rt::Read`/`Write`,
//!   both ways (hyper's `Upgraded` only speaks hyper's traits).
//! - [`exec`]: the executor every task runs on ([`spawn`]), with hyper's executor and timer.
//! - [`fs`]: writing a file so that a crash leaves the old one or the new one, never half.
//! - [`http`]: server builders with the limits every listener shares, and body helpers.
//! - [`copy`]: a bidirectional copy that flushes every write and half-closes at EOF.
//! - [`logger`]: a small stderr logger.
//! - [`memory`]: handing memory freed after a burst back to the system (glibc).
//! - [`stop`]: SIGTERM/SIGINT as a future (clean `docker stop` as PID 1), and the
//!   `healthcheck` probe images use.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod copy;
pub mod exec;
pub mod fs;
pub mod http;
pub mod io;
pub mod logger;
pub mod memory;
pub mod metrics;
pub mod stop;

pub use exec::spawn;

/// Seconds since the Unix epoch (0 on a clock set before it): the one clock reading the
/// binaries share for expiries, sessions and "since" times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
