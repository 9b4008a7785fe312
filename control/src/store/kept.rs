//! Values derived from a table and kept between write transactions: a fleet's hellos and a
//! script's tunnel writes come one after another, and each decoding a whole table made them
//! quadratic. A kept value is used only at the revision it was kept for (every commit moves
//! the revision), so a write by any other path makes the next reader decode afresh.

use crate::error::Error;
use std::sync::Mutex;

/// A value as of one revision, taken by the write that reads it and put back once that
/// write's revision is committed.
pub(super) struct KeptAt<T>(Mutex<Option<(u64, T)>>);

impl<T> KeptAt<T> {
    pub(super) fn new() -> Self {
        KeptAt(Mutex::new(None))
    }

    /// The value at `revision`: the kept one if it is at that revision, else `read`'s.
    pub(super) fn take_at(
        &self,
        revision: u64,
        read: impl FnOnce() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match kept {
            Some((at, value)) if at == revision => Ok(value),
            _ => read(),
        }
    }

    /// Keep `value` as of `revision`.
    pub(super) fn keep(&self, revision: u64, value: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((revision, value));
    }
}
