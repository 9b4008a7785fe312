//! Reading certificates: validity, serial, names; and checking an uploaded pair.

use crate::error::Error;
use crate::model::{CertRecord, CertState, Issuer};
use kakuremichi_proto::ids::Hostname;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What Control needs to know about a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    pub not_before: u64,
    pub not_after: u64,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub dns_names: Vec<String>,
    /// DER of the SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
}

impl LeafInfo {
    /// The record of a certificate that is now being served.
    pub fn into_record(
        self,
        hostname: Hostname,
        issuer: Issuer,
        chain_pem: String,
        key_pem: String,
    ) -> CertRecord {
        CertRecord {
            hostname,
            issuer,
            chain_pem: Some(chain_pem),
            key_pem: Some(key_pem),
            serial: Some(self.serial),
            not_before: self.not_before,
            not_after: self.not_after,
            state: CertState::Valid,
            last_error: None,
            failures: 0,
            next_attempt: 0,
        }
    }
}

/// The first certificate of a PEM chain.
pub fn leaf(chain_pem: &str) -> Result<LeafInfo, Error> {
    let invalid = |why: String| Error::invalid("certificate_pem", why);
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| invalid(format!("not PEM: {e}")))?;
    let (_, cert) = X509Certificate::from_der(&pem.contents)
        .map_err(|e| invalid(format!("not an X.509 certificate: {e}")))?;
    let validity = cert.validity();
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(LeafInfo {
        not_before: validity.not_before.timestamp().max(0) as u64,
        not_after: validity.not_after.timestamp().max(0) as u64,
        serial: cert
            .raw_serial_as_string()
            .replace(':', "")
            .to_ascii_uppercase(),
        dns_names,
        public_key: cert.public_key().raw.to_vec(),
    })
}

/// Whether a certificate name (possibly `*.example.com`) covers `hostname`.
pub fn covers(name: &str, hostname: &Hostname) -> bool {
    let host = hostname.as_str();
    match name.strip_prefix("*.") {
        Some(suffix) => host.split_once('.').is_some_and(|(_, rest)| rest == suffix),
        None => name == host,
    }
}

/// Check an uploaded certificate: it parses, its key matches, it covers `hostname`, and it
/// has not expired at `now`.
pub fn check_manual(
    chain_pem: &str,
    key_pem: &str,
    hostname: &Hostname,
    now: u64,
) -> Result<LeafInfo, Error> {
    let info = leaf(chain_pem)?;
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| Error::invalid("key_pem", format!("not a PKCS#8 private key: {e}")))?;
    if rcgen::PublicKeyData::subject_public_key_info(&key) != info.public_key {
        return Err(Error::invalid(
            "key_pem",
            "does not match the certificate's public key",
        ));
    }
    if !info.dns_names.iter().any(|n| covers(n, hostname)) {
        return Err(Error::invalid(
            "certificate_pem",
            format!(
                "does not cover {hostname} (names: {})",
                info.dns_names.join(", ")
            ),
        ));
    }
    if info.not_after <= now {
        return Err(Error::invalid("certificate_pem", "has expired"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let host: Hostname = "a.example.com".parse().unwrap();
        assert!(covers("*.example.com", &host));
        assert!(covers("a.example.com", &host));
        assert!(!covers("*.com", &host));
        assert!(!covers("*.a.example.com", &host));
    }
}
