//! Control's own CA, for LAN, offline and development use: made once with rcgen, kept in the
//! store, and downloadable at `/ca.pem` so clients can trust it.

use crate::error::Error;
use crate::store::{Store, FALLBACK_CERTIFICATE};
use kakuremichi_proto::ids::Hostname;
use kakuremichi_proto::messages::CertificateBundle;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const CA_KEY: &str = "internal_ca";
/// The name in it: a reserved TLD (RFC 2606), so it matches no real site.
const FALLBACK_NAME: &str = "gateway.kakuremichi.invalid";
const CA_NAME: &str = "kakuremichi internal CA";
/// Lifetime of leaf certificates; renewed after two thirds of it, like ACME ones.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The CA's certificate and key, PEM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaMaterial {
    pub cert_pem: String,
    key_pem: String,
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Store(format!("{what}: {e}"))
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("CA parameters"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.not_before = time_from_unix(crate::auth::unix_now().saturating_sub(3600));
    params.not_after = time_from_unix(crate::auth::unix_now() + 10 * 365 * 24 * 3600);
    Ok(params)
}

fn time_from_unix(seconds: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The CA, made and stored on first use.
pub fn ca(store: &Store) -> Result<CaMaterial, Error> {
    if let Some(ca) = store.meta::<CaMaterial>(CA_KEY)? {
        return Ok(ca);
    }
    let key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(rcgen_error("CA certificate"))?;
    let ca = CaMaterial {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    store.put_meta(CA_KEY, &ca)?;
    log::info!("created the internal CA");
    Ok(ca)
}

/// How long a CRL from `/ca.crl` stays current.
const CRL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A new leaf certificate for `hostname`: (chain PEM, key PEM). `crl_url` is where clients
/// find the CA's revocation list. The chain holds the leaf only: clients that trust the
/// internal CA have its certificate already, and sending a root is pointless.
pub fn issue(
    ca: &CaMaterial,
    hostname: &Hostname,
    crl_url: &str,
) -> Result<(String, String), Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rcgen_error("CA key"))?;
    // The issuer is rebuilt from the same parameters the CA was made with: its name and key
    // are what a leaf refers to.
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate().map_err(rcgen_error("leaf key"))?;
    let mut params = CertificateParams::new(vec![hostname.to_string()])
        .map_err(rcgen_error("leaf parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, hostname.as_str());
    let now = crate::auth::unix_now();
    params.not_before = time_from_unix(now.saturating_sub(300));
    params.not_after = time_from_unix(now + LEAF_LIFETIME.as_secs());
    params.use_authority_key_identifier_extension = true;
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![crl_url.to_string()],
    }];
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_error("leaf certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA's current certificate revocation list, DER. Nothing is revoked yet: certificates
/// are short-lived and replaced, not revoked.
pub fn crl(ca: &CaMaterial) -> Result<Vec<u8>, Error> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rcgen_error("CA key"))?;
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let now = crate::auth::unix_now();
    let params = rcgen::CertificateRevocationListParams {
        this_update: time_from_unix(now.saturating_sub(300)),
        next_update: time_from_unix(now + CRL_LIFETIME.as_secs()),
        crl_number: rcgen::SerialNumber::from(now),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).map_err(rcgen_error("CRL"))?;
    Ok(crl.der().to_vec())
}

/// Make sure gateways have a certificate for clients without SNI: issued by the internal CA
/// for a name no site uses, so such clients learn nothing about the tunnels.
pub fn ensure_fallback(store: &Store, crl_url: &str) -> Result<(), Error> {
    let now = crate::auth::unix_now();
    let current: Option<CertificateBundle> = store.meta(FALLBACK_CERTIFICATE)?;
    let fresh = current
        .and_then(|c| crate::certs::inspect::leaf(&c.chain_pem).ok())
        .is_some_and(|leaf| leaf.not_after > now + LEAF_LIFETIME.as_secs() / 3);
    if fresh {
        return Ok(());
    }
    let hostname: Hostname = FALLBACK_NAME
        .parse()
        .map_err(|e| Error::Store(format!("fallback name: {e}")))?;
    let (chain_pem, key_pem) = issue(&ca(store)?, &hostname, crl_url)?;
    let bundle = CertificateBundle {
        hostname,
        chain_pem,
        key_pem,
        publicly_trusted: false,
    };
    store.put_meta(FALLBACK_CERTIFICATE, &bundle)
}
