//! Certificates: Control is the only ACME client, so each hostname's certificate is ordered
//! once and served by every gateway.
//!
//! - [`internal`]: Control's own CA.
//! - [`acme`]: one ACME order; [`acme_http`]: its HTTPS client on smol.
//! - [`inspect`]: reading certificates, checking uploads.
//!
//! The manager here looks at the store every second: a hostname whose tunnel wants HTTPS and
//! whose certificate is missing, from another issuer, or due for renewal gets one; failures
//! back off per hostname and never hold up others.

pub mod acme;
pub mod acme_http;
pub mod inspect;
pub mod internal;

use crate::model::{https_hostnames, CertRecord, CertState, Issuer, State};
use crate::Control;
use kakuremichi_proto::ids::Hostname;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Hostnames that need a certificate now, with their issuer.
pub fn due(state: &State, now: u64) -> Vec<(Hostname, Issuer)> {
    let stored: HashMap<&Hostname, &CertRecord> = state
        .certificates
        .iter()
        .map(|c| (&c.hostname, c))
        .collect();
    https_hostnames(state)
        .into_iter()
        .filter(|(_, issuer)| matches!(issuer, Issuer::Acme | Issuer::Internal))
        .filter(|(hostname, issuer)| match stored.get(hostname) {
            None => true,
            Some(cert) if cert.issuer != *issuer => {
                now >= cert.next_attempt || cert.chain_pem.is_some()
            }
            Some(cert) => cert.is_due(now),
        })
        .collect()
}

/// Keep every HTTPS tunnel's certificate current, forever.
pub async fn run(control: Arc<Control>) {
    retry_failed_soon(&control);
    let mut orders: HashMap<Hostname, smol::Task<()>> = HashMap::new();
    loop {
        orders.retain(|_, task| !task.is_finished());
        if let Err(e) = internal::ensure_fallback(&control.store, &control.crl_url()) {
            log::error!("certificates: no fallback certificate for clients without SNI: {e}");
        }
        // The state the node sessions share: decoded again only when the revision moved.
        match control.store.shared_state() {
            Ok(state) => {
                for (hostname, issuer) in due(&state, crate::auth::unix_now()) {
                    if orders.contains_key(&hostname) {
                        continue;
                    }
                    let previous = state
                        .certificates
                        .iter()
                        .find(|c| c.hostname == hostname)
                        .cloned();
                    let control = control.clone();
                    let name = hostname.clone();
                    orders.insert(
                        hostname,
                        kakuremichi_rt::spawn(async move {
                            obtain(&control, name, issuer, previous).await
                        }),
                    );
                }
            }
            Err(e) => log::error!("certificates: cannot read the store: {e}"),
        }
        async_io::Timer::after(SCAN_INTERVAL).await;
    }
}

/// See [`CertRecord::retry_soon_after_restart`].
fn retry_failed_soon(control: &Control) {
    let Ok(state) = control.store.state() else {
        return;
    };
    let now = crate::auth::unix_now();
    for mut record in state.certificates {
        if record.retry_soon_after_restart(now) {
            if let Err(e) = control.store.put_certificate(&record) {
                log::error!("certificate for {}: {e}", record.hostname);
            }
        }
    }
}

async fn obtain(
    control: &Control,
    hostname: Hostname,
    issuer: Issuer,
    previous: Option<CertRecord>,
) {
    let started = std::time::Instant::now();
    let mut record = previous
        .filter(|p| p.issuer == issuer)
        .unwrap_or(CertRecord {
            hostname: hostname.clone(),
            issuer,
            chain_pem: None,
            key_pem: None,
            serial: None,
            not_before: 0,
            not_after: 0,
            state: CertState::Pending,
            last_error: None,
            failures: 0,
            next_attempt: 0,
        });
    if record.chain_pem.is_none() && record.state != CertState::Failed {
        let _ = control.store.put_certificate(&record);
    }
    let result = match issuer {
        Issuer::Internal => internal::ca(&control.store)
            .and_then(|ca| internal::issue(&ca, &hostname, &control.crl_url()))
            .map_err(|e| e.to_string()),
        Issuer::Acme => match &control.acme {
            Some(settings) => acme::order(control, settings, &hostname).await,
            None => {
                Err("no ACME directory is configured (start Control with --acme-directory)".into())
            }
        },
        Issuer::Manual | Issuer::None => return,
    };
    let now = crate::auth::unix_now();
    match result.and_then(|(chain, key)| {
        inspect::leaf(&chain)
            .map(|info| (chain, key, info))
            .map_err(|e| e.to_string())
    }) {
        Ok((chain, key, info)) => {
            log::info!(
                "certificate for {hostname} from {} in {:.1} s (serial {}, valid until {})",
                issuer.as_str(),
                started.elapsed().as_secs_f64(),
                info.serial,
                info.not_after
            );
            record = info.into_record(hostname.clone(), issuer, chain, key);
        }
        Err(error) => {
            record.failures += 1;
            record.next_attempt = now + CertRecord::backoff(record.failures);
            record.state = CertState::Failed;
            log::warn!(
                "certificate for {hostname} failed (attempt {}, next in {} s): {error}",
                record.failures,
                record.next_attempt - now
            );
            record.last_error = Some(error);
        }
    }
    if let Err(e) = control.store.put_certificate(&record) {
        log::error!("certificate for {hostname}: cannot store it: {e}");
    }
}
