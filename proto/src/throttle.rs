//! Login throttling: after a few failures, each further attempt for the same account or from
//! the same client address must wait, twice as long after every failure. Plain data with the
//! time passed in; the server keeps one [`Throttle`] in memory (a restart forgets it, which only
//! helps the owner who locked themselves out).

use std::collections::HashMap;

/// Failures allowed before attempts have to wait.
pub const FREE_FAILURES: u32 = 5;
/// The first wait, in seconds; it doubles with each further failure.
pub const FIRST_WAIT_SECS: u64 = 2;
/// The longest wait, in seconds.
pub const LONGEST_WAIT_SECS: u64 = 15 * 60;
/// Keys with no failure for this long are forgotten.
const FORGET_AFTER_SECS: u64 = 24 * 60 * 60;
/// Keys remembered at most: beyond this the oldest go (a spray of addresses cannot grow it).
const MOST_KEYS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    failures: u32,
    last_failure: u64,
}

impl Record {
    /// When the next attempt may be made.
    fn open_at(&self) -> u64 {
        if self.failures < FREE_FAILURES {
            return 0;
        }
        let doublings = (self.failures - FREE_FAILURES).min(20);
        let wait = (FIRST_WAIT_SECS << doublings).min(LONGEST_WAIT_SECS);
        self.last_failure + wait
    }
}

/// Failed logins by key (`user:NAME`, `ip:ADDRESS`).
#[derive(Default)]
pub struct Throttle {
    records: HashMap<String, Record>,
}

impl Throttle {
    /// Seconds to wait before an attempt with these keys is looked at, if any.
    pub fn wait(&self, keys: &[&str], now: u64) -> Option<u64> {
        keys.iter()
            .filter_map(|key| self.records.get(*key))
            .map(|record| record.open_at())
            .max()
            .filter(|&open_at| open_at > now)
            .map(|open_at| open_at - now)
    }

    /// A failed attempt with these keys.
    pub fn failed(&mut self, keys: &[&str], now: u64) {
        if self.records.len() >= MOST_KEYS {
            self.forget_old(now);
        }
        for key in keys {
            let record = self.records.entry((*key).to_string()).or_insert(Record {
                failures: 0,
                last_failure: now,
            });
            record.failures = record.failures.saturating_add(1);
            record.last_failure = now;
        }
    }

    /// A successful login: the account's count starts over (the address's stays, so one
    /// good password does not reset a spray from the same address).
    pub fn succeeded(&mut self, account_key: &str) {
        self.records.remove(account_key);
    }

    fn forget_old(&mut self, now: u64) {
        self.records
            .retain(|_, r| now.saturating_sub(r.last_failure) < FORGET_AFTER_SECS);
        if self.records.len() >= MOST_KEYS {
            let mut oldest: Vec<(u64, String)> = self
                .records
                .iter()
                .map(|(k, r)| (r.last_failure, k.clone()))
                .collect();
            oldest.sort_unstable();
            for (_, key) in oldest.into_iter().take(MOST_KEYS / 10) {
                self.records.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_and_are_capped() {
        let mut throttle = Throttle::default();
        let keys = ["user:alice", "ip:192.0.2.1"];
        let mut now = 1_000;
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.wait(&keys, now), None);
            throttle.failed(&keys, now);
        }
        // The fifth failure set the first wait.
        assert_eq!(throttle.wait(&keys, now), Some(FIRST_WAIT_SECS));
        now += FIRST_WAIT_SECS;
        assert_eq!(throttle.wait(&keys, now), None);
        throttle.failed(&keys, now);
        assert_eq!(throttle.wait(&keys, now), Some(2 * FIRST_WAIT_SECS));
        for _ in 0..30 {
            now += LONGEST_WAIT_SECS;
            throttle.failed(&keys, now);
        }
        assert_eq!(throttle.wait(&keys, now), Some(LONGEST_WAIT_SECS));
    }

    #[test]
    fn either_key_throttles_and_success_clears_only_the_account() {
        let mut throttle = Throttle::default();
        for i in 0..FREE_FAILURES + 2 {
            // A spray: many accounts from one address.
            throttle.failed(&[&format!("user:u{i}"), "ip:198.51.100.7"], 50);
        }
        assert!(throttle
            .wait(&["user:bob", "ip:198.51.100.7"], 50)
            .is_some());
        assert_eq!(throttle.wait(&["user:bob", "ip:203.0.113.9"], 50), None);
        throttle.succeeded("user:bob");
        assert!(throttle
            .wait(&["user:bob", "ip:198.51.100.7"], 50)
            .is_some());
    }
}
