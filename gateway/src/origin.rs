//! TLS towards an `http` tunnel's HTTPS origin, end to end through the agent: the public
//! roots plus a tunnel's own CA, a chosen server name, or (asked for by name) no check at all.

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::crypto::ring;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::{client::TlsStream, TlsConnector};
use kakuremichi_nodelink::unverified::AnyCertificate;
use kakuremichi_proto::messages::OriginTls;
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::Arc;

/// A TLS client for one origin, built once per snapshot.
#[derive(Clone)]
pub struct OriginTlsClient {
    spec: OriginTls,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for OriginTlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTlsClient")
            .field("server_name", &self.spec.server_name)
            .field("verify", &self.spec.verify)
            .finish_non_exhaustive()
    }
}

// Two clients built from the same settings are the same upstream: pooled connections are
// shared across snapshots.
impl PartialEq for OriginTlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}
impl Eq for OriginTlsClient {}
impl Hash for OriginTlsClient {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spec.hash(state)
    }
}

impl OriginTlsClient {
    /// The client `spec` describes; a CA that does not parse is an error.
    pub fn new(spec: &OriginTls) -> Result<Self, String> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut config = if spec.verify {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for cert in
                CertificateDer::pem_slice_iter(spec.ca_pem.as_deref().unwrap_or("").as_bytes())
            {
                let cert = cert.map_err(|e| format!("origin CA: {e}"))?;
                roots.add(cert).map_err(|e| format!("origin CA: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(spec.server_name.clone())
            .map_err(|e| format!("origin server name {:?}: {e}", spec.server_name))?;
        Ok(OriginTlsClient {
            spec: spec.clone(),
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// TLS over `stream`.
    pub async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: IO,
    ) -> io::Result<TlsStream<IO>> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
            .map_err(|e| {
                io::Error::other(format!(
                    "TLS with the origin ({}): {e}",
                    self.spec.server_name
                ))
            })
    }
}
