//! Certificates: list, upload one of one's own, ask for another attempt now.

use super::views::Certificate;
use super::{answer, Json};
use crate::error::Error;
use crate::model::{CertRecord, Issuer};
use crate::routes::{ApiResult, Call};
use crate::Control;
use kakuremichi_proto::ids::Hostname;
use schemars::JsonSchema;
use serde::Deserialize;

pub fn list(call: &Call, _: Json) -> ApiResult {
    let state = call.control.store.shared_state()?;
    let certificates: Vec<_> = state.certificates.iter().map(Certificate::of).collect();
    answer(200, certificates)
}

/// `POST /certificates`: a certificate of one's own with its key, in PEM.
#[derive(Deserialize, JsonSchema)]
pub struct Upload {
    #[schemars(length(min = 1, max = 253))]
    hostname: String,
    certificate_pem: String,
    key_pem: String,
}

/// A manual certificate: checked (parses, key matches, covers the hostname, not expired),
/// then stored and pushed like any other.
pub fn upload(call: &Call, body: Json) -> ApiResult {
    let upload: Upload = body.read()?;
    let hostname: Hostname = (upload.hostname.parse())
        .map_err(|e| Error::invalid("hostname", crate::spec::reason(e)))?;
    let record = store_manual(
        &call.control,
        hostname,
        upload.certificate_pem,
        upload.key_pem,
    )?;
    answer(201, Certificate::of(&record))
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
    answer(200, Certificate::of(&record))
}
