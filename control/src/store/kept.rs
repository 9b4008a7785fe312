//! Values derived from a table and kept between write transactions: a fleet's hellos and a
//! script's tunnel writes come one after another, and each decoding a whole table made them
//! quadratic. A kept value is used only at the revision it was kept for (every commit moves
//! the revision), so a write by any other path makes the next reader decode afresh.

use super::Table;
use crate::error::Error;
use heed::RoTxn;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
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

/// A table's records as last decoded, each with the bytes it came from: the state decoded
/// after a commit decodes only the records that changed and copies the rest. Every commit
/// needs a decoded state (the hub compares it with the last), and at 10,000 nodes decoding
/// every record took tens of milliseconds each time.
pub(super) struct Decoded<T>(Mutex<HashMap<String, (Vec<u8>, T)>>);

impl<T: DeserializeOwned + Clone> Decoded<T> {
    pub(super) fn new() -> Self {
        Decoded(Mutex::new(HashMap::new()))
    }

    /// Every record of `table`, in key order (within a write transaction too: a record is
    /// reused only if its bytes are the ones it was decoded from, committed or not).
    pub(super) fn all(&self, table: &Table, txn: &RoTxn) -> Result<Vec<T>, Error> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Taken, so that a failure part way leaves nothing stale behind.
        let mut before = std::mem::take(&mut *held);
        let mut kept = HashMap::with_capacity(before.len());
        let mut out = Vec::with_capacity(before.len());
        for entry in table.iter(txn)? {
            let (key, bytes) = entry?;
            let (key, record) = match before.remove_entry(key) {
                Some((key, (was, record))) if was == bytes => (key, record),
                _ => {
                    let record: T = serde_json::from_slice(bytes)
                        .map_err(|e| Error::Store(format!("corrupt record {key:?}: {e}")))?;
                    (key.to_string(), record)
                }
            };
            out.push(record.clone());
            kept.insert(key, (bytes.to_vec(), record));
        }
        *held = kept;
        Ok(out)
    }
}
