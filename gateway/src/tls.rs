//! TLS termination: certificates pushed by Control, picked by SNI; ACME challenge answers
//! (HTTP-01 tokens for the plain listener, TLS-ALPN-01 certificates for `acme-tls/1`).
//!
//! A client naming a host we hold no certificate for gets a handshake failure (rustls sends
//! an alert) rather than someone else's certificate.

use futures_rustls::rustls::crypto::ring::default_provider;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use futures_rustls::rustls::sign::CertifiedKey;
use futures_rustls::rustls::ServerConfig;
use kakuremichi_proto::ids::Hostname;
use kakuremichi_proto::messages::{AcmeChallenge, CertificateBundle};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

struct Served {
    key: Arc<CertifiedKey>,
    publicly_trusted: bool,
    /// A hash of the PEM it was loaded from: a snapshot that brings the same PEM again
    /// reuses the loaded key instead of parsing thousands of certificates per config.
    source: u64,
}

fn source_of(bundle: &CertificateBundle) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&bundle.chain_pem, &bundle.key_pem).hash(&mut hasher);
    hasher.finish()
}

#[derive(Default)]
struct Table {
    by_host: HashMap<Hostname, Served>,
    http01: HashMap<String, String>,
    tls_alpn01: HashMap<Hostname, Arc<CertifiedKey>>,
    /// For clients that send no SNI.
    fallback: Option<Arc<CertifiedKey>>,
}

/// Everything the gateway serves TLS with, replaced as a whole on every snapshot.
#[derive(Default)]
pub struct Certificates {
    table: RwLock<Table>,
}

/// Load a PEM chain and key into what rustls serves.
fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("empty certificate chain".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("private key: {e}"))?;
    let signing_key = default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

impl Certificates {
    /// Serve exactly these certificates and challenge answers. Returns what could not be
    /// loaded, for the gateway's health.
    pub fn update(
        &self,
        bundles: &[CertificateBundle],
        challenges: &[AcmeChallenge],
        fallback: Option<&CertificateBundle>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut unusable = |what: String| {
            log::error!("{what}");
            problems.push(what);
        };
        let fallback = fallback.and_then(|f| match certified_key(&f.chain_pem, &f.key_pem) {
            Ok(key) => Some(key),
            Err(e) => {
                unusable(format!("fallback certificate is unusable: {e}"));
                None
            }
        });
        let mut table = Table {
            fallback,
            ..Table::default()
        };
        let loaded: HashMap<Hostname, (u64, Arc<CertifiedKey>)> = self
            .read()
            .by_host
            .iter()
            .map(|(host, served)| (host.clone(), (served.source, served.key.clone())))
            .collect();
        for bundle in bundles {
            let source = source_of(bundle);
            let key = match loaded.get(&bundle.hostname) {
                Some((same, key)) if *same == source => Ok(key.clone()),
                _ => certified_key(&bundle.chain_pem, &bundle.key_pem),
            };
            match key {
                Ok(key) => {
                    table.by_host.insert(
                        bundle.hostname.clone(),
                        Served {
                            key,
                            publicly_trusted: bundle.publicly_trusted,
                            source,
                        },
                    );
                }
                Err(e) => unusable(format!(
                    "certificate for {} is unusable: {e}",
                    bundle.hostname
                )),
            }
        }
        for challenge in challenges {
            match challenge {
                AcmeChallenge::Http01 {
                    token,
                    key_authorization,
                    ..
                } => {
                    table
                        .http01
                        .insert(token.clone(), key_authorization.clone());
                }
                AcmeChallenge::TlsAlpn01 {
                    hostname,
                    certificate_pem,
                    key_pem,
                } => match certified_key(certificate_pem, key_pem) {
                    Ok(key) => {
                        table.tls_alpn01.insert(hostname.clone(), key);
                    }
                    Err(e) => unusable(format!(
                        "tls-alpn-01 material for {hostname} is unusable: {e}"
                    )),
                },
            }
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
        problems
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        // The table is replaced whole; a panic elsewhere cannot leave it half-written.
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a certificate is held for `host`.
    pub fn has(&self, host: &Hostname) -> bool {
        self.read().by_host.contains_key(host)
    }

    /// Whether `host`'s certificate is publicly trusted (turns on HSTS).
    pub fn publicly_trusted(&self, host: &Hostname) -> bool {
        self.read()
            .by_host
            .get(host)
            .is_some_and(|s| s.publicly_trusted)
    }

    /// The HTTP-01 answer for `token`.
    pub fn http01(&self, token: &str) -> Option<String> {
        self.read().http01.get(token).cloned()
    }

    /// How many hostnames have certificates.
    pub fn len(&self) -> usize {
        self.read().by_host.len()
    }

    /// Whether no hostname has a certificate.
    pub fn is_empty(&self) -> bool {
        self.read().by_host.is_empty()
    }
}

/// Picks the certificate for a handshake.
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("hostnames", &self.len())
            .finish()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.0.read().fallback.clone();
        };
        let host: Hostname = name.parse().ok()?;
        let wants_challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let table = self.0.read();
        if wants_challenge {
            return table.tls_alpn01.get(&host).cloned();
        }
        table.by_host.get(&host).map(|s| s.key.clone())
    }
}

/// The server configuration: ring, TLS 1.2 and 1.3, ALPN h2 / http/1.1 / acme-tls/1 /
/// kakuremichi-wg/1 (WireGuard carried for agents that reach nothing else).
pub fn server_config(certificates: Arc<Certificates>) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certificates)));
    config.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        ACME_TLS_ALPN.to_vec(),
        kakuremichi_proto::messages::WIREGUARD_ALPN.to_vec(),
    ];
    Ok(Arc::new(config))
}
