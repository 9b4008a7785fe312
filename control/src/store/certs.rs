//! Certificates and the ACME challenges gateways answer while an order is validated.

use super::{get, put, Store};
use crate::auth::{self};
use crate::error::Error;
use crate::model::CertRecord;
use kakuremichi_proto::messages::AcmeChallenge;

impl Store {
    /// Record a hostname's certificate state.
    /// Retry a failing certificate's order now; a certificate that is not failing is left.
    pub fn retry_certificate(&self, hostname: &str) -> Result<CertRecord, Error> {
        self.write(|s, wtxn| {
            let mut record: CertRecord = get(&s.certs, wtxn, hostname)?
                .ok_or_else(|| Error::not_found("certificate", hostname))?;
            if record.retry_now(auth::unix_now()) {
                put(&s.certs, wtxn, hostname, &record)?;
            }
            Ok(record)
        })
    }

    pub fn put_certificate(&self, record: &CertRecord) -> Result<(), Error> {
        self.write(|s, wtxn| put(&s.certs, wtxn, record.hostname.as_str(), record))
    }

    /// Publish a challenge answer to gateways under `key`; returns the revision that carries it.
    pub fn put_challenge(&self, key: &str, challenge: &AcmeChallenge) -> Result<u64, Error> {
        self.write(|s, wtxn| put(&s.challenges, wtxn, key, challenge))?;
        Ok(self.state()?.revision)
    }

    /// Withdraw a challenge answer.
    pub fn remove_challenge(&self, key: &str) -> Result<(), Error> {
        self.write(|s, wtxn| {
            s.challenges
                .delete(wtxn, key)
                .map(|_| ())
                .map_err(Error::from)
        })
    }
}
