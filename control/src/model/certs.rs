//! A hostname's certificate: who issues it, its state, and when to renew or retry it.

use kakuremichi_proto::ids::Hostname;
use serde::{Deserialize, Serialize};

/// Where a tunnel's certificate comes from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Issuer {
    /// An ACME CA (Let's Encrypt, its staging, Pebble), ordered by Control.
    #[default]
    Acme,
    /// Control's own CA, for LAN, offline and development use.
    Internal,
    /// A certificate uploaded through the API.
    Manual,
    /// No certificate: the gateway serves the hostname over plain HTTP.
    None,
}

impl std::str::FromStr for Issuer {
    type Err = kakuremichi_proto::ProtoError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "acme" => Ok(Issuer::Acme),
            "internal" => Ok(Issuer::Internal),
            "manual" => Ok(Issuer::Manual),
            "none" => Ok(Issuer::None),
            other => Err(kakuremichi_proto::ProtoError::Invalid {
                field: "issuer",
                reason: format!("{other:?} is not acme, internal, manual or none"),
            }),
        }
    }
}

impl Issuer {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Issuer::Acme => "acme",
            Issuer::Internal => "internal",
            Issuer::Manual => "manual",
            Issuer::None => "none",
        }
    }
}

/// Where a hostname's certificate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// Being ordered for the first time.
    Pending,
    /// Served; renewed when a third of its lifetime is left.
    Valid,
    /// The last attempt failed; retried at `next_attempt`.
    Failed,
}

/// A hostname's certificate and how getting it went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertRecord {
    pub hostname: Hostname,
    pub issuer: Issuer,
    /// The current certificate, if any (kept while a renewal fails).
    pub chain_pem: Option<String>,
    pub key_pem: Option<String>,
    pub serial: Option<String>,
    pub not_before: u64,
    pub not_after: u64,
    pub state: CertState,
    pub last_error: Option<String>,
    /// Consecutive failures, for backoff.
    pub failures: u32,
    /// Unix seconds before which no new attempt is made.
    pub next_attempt: u64,
}

/// First retry delay after a failed order; doubles per failure.
pub const RETRY_FIRST_SECONDS: u64 = 5;

/// Longest delay between retries.
pub const RETRY_CAP_SECONDS: u64 = 4 * 3600;

impl CertRecord {
    /// When renewal starts: a third of the lifetime before expiry.
    pub fn renew_at(&self) -> u64 {
        self.not_after
            .saturating_sub(self.not_after.saturating_sub(self.not_before) / 3)
    }

    /// Whether a new certificate should be sought at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        now >= self.next_attempt && (self.chain_pem.is_none() || now >= self.renew_at())
    }

    /// The delay after `failures` consecutive failures.
    pub fn backoff(failures: u32) -> u64 {
        RETRY_FIRST_SECONDS
            .saturating_mul(1u64 << failures.saturating_sub(1).min(20))
            .min(RETRY_CAP_SECONDS)
    }

    /// A person asked to retry a failed order now. Returns whether the record changed.
    pub fn retry_now(&mut self, now: u64) -> bool {
        if self.state == CertState::Failed && self.next_attempt > now {
            self.next_attempt = now;
            return true;
        }
        false
    }

    /// At Control's start, a failed order is retried after the first backoff instead of
    /// the rest of a long one: a restart is what a person does after fixing the cause (DNS,
    /// the ACME settings). Returns whether the record changed.
    pub fn retry_soon_after_restart(&mut self, now: u64) -> bool {
        let soon = now + Self::backoff(1);
        if self.state == CertState::Failed && self.next_attempt > soon {
            self.next_attempt = soon;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod cert_tests {
    use super::*;

    #[test]
    fn renewal_and_backoff_timing() {
        let mut cert = CertRecord {
            hostname: "a.example.com".parse().unwrap(),
            issuer: Issuer::Acme,
            chain_pem: Some("x".into()),
            key_pem: Some("y".into()),
            serial: None,
            not_before: 1000,
            not_after: 1900,
            state: CertState::Valid,
            last_error: None,
            failures: 0,
            next_attempt: 0,
        };
        assert_eq!(cert.renew_at(), 1600);
        assert!(!cert.is_due(1599) && cert.is_due(1600));
        cert.next_attempt = 1700;
        assert!(!cert.is_due(1650));
        cert.chain_pem = None;
        assert!(cert.is_due(1700));
        assert_eq!(
            [1, 2, 3, 30].map(CertRecord::backoff),
            [5, 10, 20, RETRY_CAP_SECONDS]
        );
        // A restart shortens a long backoff of a failed order, and touches nothing else.
        assert!(!cert.retry_soon_after_restart(1000), "not failed");
        cert.state = CertState::Failed;
        cert.next_attempt = 1000 + RETRY_CAP_SECONDS;
        assert!(cert.retry_soon_after_restart(1000));
        assert_eq!(cert.next_attempt, 1005);
        assert!(!cert.retry_soon_after_restart(1000), "already soon");
    }
}
