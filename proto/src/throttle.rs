//! Login throttling: after a few failures, each further attempt from the same client address
//! must wait, twice as long after every failure; an account (or a tunnel's password) is
//! throttled the same way after many more failures, from however many addresses. Every
//! attempt is counted before it is checked, so a burst sent at once gets no more guesses than
//! one sent in turn; a right answer takes its count back. One stranger's failures therefore
//! slow that stranger, never the owner's right password from another address. Plain data with
//! the time passed in; the server keeps one [`Throttle`] in memory (a restart forgets it,
//! which only helps the owner who locked themselves out).

use std::collections::HashMap;

/// Failures allowed from one address before its attempts have to wait.
pub const FREE_FAILURES: u32 = 5;
/// Failures allowed on one account, from all addresses together, before its attempts wait
/// (each address adds at most [`FREE_FAILURES`]: it takes ten addresses to reach).
pub const ACCOUNT_FREE_FAILURES: u32 = 50;
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
    /// When the next attempt may be made, with `free` failures allowed.
    fn open_at(&self, free: u32) -> u64 {
        if self.failures < free {
            return 0;
        }
        let doublings = (self.failures - free).min(20);
        let wait = (FIRST_WAIT_SECS << doublings).min(LONGEST_WAIT_SECS);
        self.last_failure + wait
    }
}

/// What one login attempt is throttled by.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// Where it comes from (`ip:ADDRESS`, or for a tunnel `TUNNEL:ADDRESS`).
    pub address: &'a str,
    /// What it tries to open (`user:NAME`, `tunnel:ID`).
    pub account: &'a str,
}

/// The address part of a throttle key for `ip`: IPv6 clients by their /64, since one
/// subscriber commonly holds a whole /64 and could otherwise take a fresh address per guess.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Attempts by address and by account.
#[derive(Default)]
pub struct Throttle {
    addresses: HashMap<String, Record>,
    accounts: HashMap<String, Record>,
}

fn count(records: &mut HashMap<String, Record>, key: &str, now: u64) {
    if records.len() >= MOST_KEYS {
        forget_old(records, now);
    }
    let record = records.entry(key.to_string()).or_insert(Record {
        failures: 0,
        last_failure: now,
    });
    record.failures = record.failures.saturating_add(1);
    record.last_failure = now;
}

fn forget_old(records: &mut HashMap<String, Record>, now: u64) {
    records.retain(|_, r| now.saturating_sub(r.last_failure) < FORGET_AFTER_SECS);
    if records.len() >= MOST_KEYS {
        let mut oldest: Vec<(u64, String)> = records
            .iter()
            .map(|(k, r)| (r.last_failure, k.clone()))
            .collect();
        oldest.sort_unstable();
        for (_, key) in oldest.into_iter().take(MOST_KEYS / 10) {
            records.remove(&key);
        }
    }
}

impl Throttle {
    /// Seconds to wait before `attempt` may be made, if any.
    pub fn wait(&self, attempt: &Attempt, now: u64) -> Option<u64> {
        let address = self
            .addresses
            .get(attempt.address)
            .map(|r| r.open_at(FREE_FAILURES));
        let account = self
            .accounts
            .get(attempt.account)
            .map(|r| r.open_at(ACCOUNT_FREE_FAILURES));
        address
            .into_iter()
            .chain(account)
            .max()
            .filter(|&open_at| open_at > now)
            .map(|open_at| open_at - now)
    }

    /// Count `attempt` as a failure before it is checked, or say how long it must wait
    /// (then it is not counted and must not be checked).
    pub fn begin(&mut self, attempt: &Attempt, now: u64) -> Result<(), u64> {
        if let Some(wait) = self.wait(attempt, now) {
            return Err(wait);
        }
        // One address adds at most its free failures to the account: a lone stranger, however
        // long they keep at it, never throttles the account for everyone else.
        let address_failures = self
            .addresses
            .get(attempt.address)
            .map_or(0, |r| r.failures);
        count(&mut self.addresses, attempt.address, now);
        if address_failures < FREE_FAILURES {
            count(&mut self.accounts, attempt.account, now);
        }
        Ok(())
    }

    /// `attempt`, begun, was right: the address gets its count back and the account starts
    /// over (the address's earlier failures stay, so one good password does not reset a spray
    /// from the same address).
    pub fn succeeded(&mut self, attempt: &Attempt) {
        if let Some(record) = self.addresses.get_mut(attempt.address) {
            record.failures = record.failures.saturating_sub(1);
        }
        self.accounts.remove(attempt.account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRANGER: Attempt = Attempt {
        address: "ip:192.0.2.1",
        account: "user:alice",
    };

    #[test]
    fn waits_double_after_the_free_failures_and_are_capped() {
        let mut throttle = Throttle::default();
        let mut now = 1_000;
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.begin(&STRANGER, now), Ok(()));
        }
        // The fifth failure set the first wait; a refused attempt is not counted.
        assert_eq!(throttle.begin(&STRANGER, now), Err(FIRST_WAIT_SECS));
        assert_eq!(throttle.begin(&STRANGER, now + 1), Err(FIRST_WAIT_SECS - 1));
        now += FIRST_WAIT_SECS;
        assert_eq!(throttle.begin(&STRANGER, now), Ok(()));
        assert_eq!(throttle.wait(&STRANGER, now), Some(2 * FIRST_WAIT_SECS));
        for _ in 0..30 {
            now += LONGEST_WAIT_SECS;
            assert_eq!(throttle.begin(&STRANGER, now), Ok(()));
        }
        assert_eq!(throttle.wait(&STRANGER, now), Some(LONGEST_WAIT_SECS));
    }

    #[test]
    fn a_burst_gets_the_free_failures_and_no_more() {
        let mut throttle = Throttle::default();
        // 1,000 attempts begun at once, none checked yet: only the free ones may be.
        let begun = (0..1000)
            .filter(|_| throttle.begin(&STRANGER, 50).is_ok())
            .count();
        assert_eq!(begun, FREE_FAILURES as usize);
    }

    #[test]
    fn a_strangers_failures_never_lock_out_the_owner_elsewhere() {
        let mut throttle = Throttle::default();
        let mut now = 0;
        // One address guessing for a day, as fast as it is let.
        for _ in 0..100_000 {
            match throttle.begin(&STRANGER, now) {
                Ok(()) => {}
                Err(wait) => now += wait,
            }
            if now > 86_400 {
                break;
            }
        }
        let owner = Attempt {
            address: "ip:203.0.113.9",
            account: "user:alice",
        };
        assert_eq!(throttle.wait(&owner, now), None, "the owner may try");
        let stranger = throttle.addresses[STRANGER.address].failures;
        assert!((10..200).contains(&stranger), "{stranger} guesses in a day");
        // A right answer takes back its own count and clears the account.
        throttle.begin(&owner, now).unwrap();
        throttle.succeeded(&owner);
        assert_eq!(throttle.addresses[owner.address].failures, 0);
        assert!(!throttle.accounts.contains_key("user:alice"));
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a = address_key("2001:db8:1:2::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(address_key("192.0.2.7".parse().unwrap()), "ip:192.0.2.7");
    }

    #[test]
    fn many_addresses_together_throttle_the_account() {
        let mut throttle = Throttle::default();
        for i in 0..ACCOUNT_FREE_FAILURES {
            let address = format!("ip:198.51.100.{i}");
            let attempt = Attempt {
                address: &address,
                account: "user:bob",
            };
            assert_eq!(throttle.begin(&attempt, 50), Ok(()));
        }
        let next = Attempt {
            address: "ip:203.0.113.1",
            account: "user:bob",
        };
        assert_eq!(throttle.begin(&next, 50), Err(FIRST_WAIT_SECS));
    }
}
