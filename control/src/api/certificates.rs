//! Certificates: list, upload one of one's own, ask for another attempt now.

use super::Json;
use crate::error::Error;
use crate::model::{CertRecord, Issuer};
use crate::routes::{ApiResult, Call};
use crate::Control;
use kakuremichi_proto::ids::Hostname;
use serde_json::{json, Value};

pub fn list(call: &Call, _: Json) -> ApiResult {
    let state = call.control.store.state()?;
    Ok((
        200,
        Value::Array(state.certificates.iter().map(certificate_json).collect()),
    ))
}

/// A manual certificate: checked (parses, key matches, covers the hostname, not expired),
/// then stored and pushed like any other.
pub fn upload(call: &Call, body: Json) -> ApiResult {
    let mut fields = body.fields()?;
    let hostname: Hostname = fields
        .parsed("hostname")?
        .ok_or_else(|| Error::invalid("hostname", "is required"))?;
    let chain = fields.required("certificate_pem")?;
    let key = fields.required("key_pem")?;
    fields.finish()?;
    let record = store_manual(&call.control, hostname, chain, key)?;
    Ok((201, certificate_json(&record)))
}

/// Check an uploaded certificate and keep it (the API and the pages).
pub fn store_manual(
    control: &Control,
    hostname: Hostname,
    chain: String,
    key: String,
) -> Result<CertRecord, Error> {
    let info =
        crate::certs::inspect::check_manual(&chain, &key, &hostname, crate::auth::unix_now())?;
    let record = info.into_record(hostname, Issuer::Manual, chain, key);
    control.store.put_certificate(&record)?;
    Ok(record)
}

pub fn retry(call: &Call, _: Json) -> ApiResult {
    let record = call
        .control
        .store
        .retry_certificate(call.param("hostname"))?;
    Ok((200, certificate_json(&record)))
}

fn certificate_json(cert: &CertRecord) -> Value {
    json!({
        "hostname": cert.hostname.as_str(),
        "issuer": cert.issuer.as_str(),
        "state": cert.state,
        "serial": cert.serial,
        "not_before": (cert.not_before > 0).then_some(cert.not_before),
        "not_after": (cert.not_after > 0).then_some(cert.not_after),
        "last_error": cert.last_error,
        "failures": cert.failures,
        "next_attempt": (cert.next_attempt > 0).then_some(cert.next_attempt),
    })
}
