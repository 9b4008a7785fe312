//! instant-acme's HTTP client, on smol: hyper's HTTP/1.1 client over futures-rustls. One
//! connection per request (an order makes a handful), each bounded by a timeout.

use bytes::Bytes;
use futures_lite::future;
use futures_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use hyper::header::{HeaderValue, HOST};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use kakuremichi_rt::io::FuturesIo;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTPS client for the ACME directory.
pub struct AcmeHttp {
    tls: TlsConnector,
}

impl AcmeHttp {
    /// Trust the web PKI, plus the PEM certificates in `extra_roots` (for Pebble or a private CA).
    pub fn new(extra_roots: Option<&Path>) -> Result<Self, String> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_roots {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("reading {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(AcmeHttp {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }
}

fn other(message: String) -> instant_acme::Error {
    instant_acme::Error::Other(message.into())
}

async fn send(
    tls: TlsConnector,
    mut request: hyper::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, instant_acme::Error> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(other(format!("ACME URLs must be https: {uri}")));
    }
    let host = uri
        .host()
        .ok_or_else(|| other(format!("no host in {uri}")))?
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = smol::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| other(format!("{host}:{port}: {e}")))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| other(e.to_string()))?;
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|e| other(format!("TLS with {host}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| other(e.to_string()))?;
    // The connection task ends with the connection, after the response body was read.
    kakuremichi_rt::spawn(async move {
        let _ = connection.await;
    })
    .detach();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or(host);
    if let Ok(value) = HeaderValue::from_str(&authority) {
        request.headers_mut().insert(HOST, value);
    }
    *request.uri_mut() = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| other("bad path".into()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| other(e.to_string()))?;
    Ok(BytesResponse::from(response))
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        request: hyper::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(future::or(send(tls, request), async {
            async_io::Timer::after(REQUEST_TIMEOUT).await;
            Err(other(format!(
                "ACME request timed out after {REQUEST_TIMEOUT:?}"
            )))
        }))
    }
}
