//! Records kept decoded between transactions: every commit needs a decoded state, and a
//! fleet's hellos and a script's tunnel writes each check against a whole table, so
//! decoding every record each time made them quadratic.

use super::Table;
use crate::error::Error;
use heed::RoTxn;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Mutex;

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
