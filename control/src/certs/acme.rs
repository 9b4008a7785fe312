//! One ACME order, driven on smol: publish each challenge answer to every online gateway, wait
//! until they applied it, let the CA validate, finalize with our own key, fetch the chain.
//! The challenge answers are withdrawn whatever the outcome.

use super::acme_http::AcmeHttp;
use crate::Control;
use async_io::Timer;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus,
};
use kakuremichi_proto::ids::Hostname;
use kakuremichi_proto::messages::AcmeChallenge;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long gateways get to acknowledge a challenge answer before the CA is asked anyway.
const GATEWAY_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an order may take from set-ready to certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Where to order certificates.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// The directory URL (Let's Encrypt, its staging, Pebble).
    pub directory: String,
    /// Contact address for the account.
    pub email: Option<String>,
    /// Extra trusted roots for the directory's own HTTPS (Pebble's test CA).
    pub extra_roots: Option<PathBuf>,
    /// Which challenge gateways answer.
    pub challenge: ChallengeKind,
}

/// The ACME challenge type used for validation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChallengeKind {
    /// An HTTP request to the gateway's plain HTTP port (80).
    #[default]
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on the gateway's HTTPS port (443).
    TlsAlpn01,
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "http-01" => Ok(ChallengeKind::Http01),
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            other => Err(format!("{other:?} is not http-01 or tls-alpn-01")),
        }
    }
}

/// The answer gateways give for one challenge.
fn answer(
    kind: ChallengeKind,
    hostname: &Hostname,
    token: &str,
    key_authorization: &instant_acme::KeyAuthorization,
) -> Result<AcmeChallenge, String> {
    Ok(match kind {
        ChallengeKind::Http01 => AcmeChallenge::Http01 {
            hostname: Some(hostname.clone()),
            token: token.to_string(),
            key_authorization: key_authorization.as_str().to_string(),
        },
        ChallengeKind::TlsAlpn01 => {
            // RFC 8737: a self-signed certificate for the name carrying the digest of the key
            // authorization in the critical acmeIdentifier extension.
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()])
                .map_err(|e| e.to_string())?;
            params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
                key_authorization.digest().as_ref(),
            )];
            let certificate = params.self_signed(&key).map_err(|e| e.to_string())?;
            AcmeChallenge::TlsAlpn01 {
                hostname: hostname.clone(),
                certificate_pem: certificate.pem(),
                key_pem: key.serialize_pem(),
            }
        }
    })
}

fn describe(e: instant_acme::Error) -> String {
    e.to_string()
}

/// Whether the CA says it does not know the account (it forgot it, or deactivated it):
/// the stored credentials are useless and a new account must be registered.
fn is_unknown_account(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(problem)
        if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

/// Control's account at the CA: the stored one, or (when there is none, or `register` asks
/// for it) a newly registered one, stored in place of the old.
async fn account(
    control: &Control,
    settings: &AcmeSettings,
    register: bool,
) -> Result<Account, String> {
    let http = || {
        AcmeHttp::new(settings.extra_roots.as_deref())
            .map(|h| Box::new(h) as Box<dyn instant_acme::HttpClient>)
    };
    let key = format!("acme_account:{}", settings.directory);
    let stored = match register {
        true => None,
        false => control
            .store
            .meta::<AccountCredentials>(&key)
            .map_err(|e| e.to_string())?,
    };
    if let Some(credentials) = stored {
        return Account::builder_with_http(http()?)
            .from_credentials(credentials)
            .await
            .map_err(describe);
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(&new, settings.directory.clone(), None)
        .await
        .map_err(describe)?;
    control
        .store
        .put_meta(&key, &credentials)
        .map_err(|e| e.to_string())?;
    log::info!("created an ACME account at {}", settings.directory);
    Ok(account)
}

/// Order a certificate for `hostname`: (chain PEM, key PEM).
pub async fn order(
    control: &Control,
    settings: &AcmeSettings,
    hostname: &Hostname,
) -> Result<(String, String), String> {
    let identifiers = [Identifier::Dns(hostname.to_string())];
    let new_order = NewOrder::new(&identifiers);
    let stored = account(control, settings, false).await?;
    let mut order = match stored.new_order(&new_order).await {
        Err(e) if is_unknown_account(&e) => {
            // CAs forget accounts (a reset test CA, a deactivated account): register anew
            // rather than fail every order from now on.
            log::warn!(
                "the ACME server no longer knows Control's account ({e}); registering a new one"
            );
            account(control, settings, true)
                .await?
                .new_order(&new_order)
                .await
                .map_err(describe)?
        }
        other => other.map_err(describe)?,
    };
    let mut published = Vec::new();
    let result =
        validate_and_finalize(control, settings, &mut order, hostname, &mut published).await;
    for key in &published {
        if let Err(e) = control.store.remove_challenge(key) {
            log::warn!("could not withdraw challenge {key}: {e}");
        }
    }
    result
}

async fn validate_and_finalize(
    control: &Control,
    settings: &AcmeSettings,
    order: &mut Order,
    hostname: &Hostname,
    published: &mut Vec<String>,
) -> Result<(String, String), String> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(describe)?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the CA reports the authorization as {other:?}")),
        }
        let challenge_type = match settings.challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut challenge = authorization
            .challenge(challenge_type.clone())
            .ok_or_else(|| format!("the CA offers no {challenge_type:?} challenge"))?;
        let answer = answer(
            settings.challenge,
            hostname,
            &challenge.token,
            &challenge.key_authorization(),
        )?;
        let key = format!("{hostname}/{:?}/{}", settings.challenge, challenge.token);
        let revision = control
            .store
            .put_challenge(&key, &answer)
            .map_err(|e| e.to_string())?;
        published.push(key);
        wait_for_gateways(control, revision).await?;
        challenge.set_ready().await.map_err(describe)?;
    }
    let deadline = Instant::now() + ORDER_TIMEOUT;
    let status = loop {
        let state = order.refresh().await.map_err(describe)?;
        match state.status {
            OrderStatus::Ready | OrderStatus::Valid => break state.status,
            OrderStatus::Invalid => return Err(invalid_reason(order).await),
            OrderStatus::Pending | OrderStatus::Processing => {}
        }
        if Instant::now() > deadline {
            return Err(format!("the CA did not validate within {ORDER_TIMEOUT:?}"));
        }
        Timer::after(POLL_INTERVAL).await;
    };
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    if status == OrderStatus::Ready {
        let params =
            rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(|e| e.to_string())?;
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        order.finalize_csr(csr.der()).await.map_err(describe)?;
    }
    loop {
        if let Some(chain) = order.certificate().await.map_err(describe)? {
            return Ok((chain, key.serialize_pem()));
        }
        if Instant::now() > deadline {
            return Err(format!("the CA did not issue within {ORDER_TIMEOUT:?}"));
        }
        Timer::after(POLL_INTERVAL).await;
    }
}

/// Why the CA refused: the first challenge error it reports, or the order's own.
async fn invalid_reason(order: &mut Order) -> String {
    let order_error = order.state().error.as_ref().map(|p| p.to_string());
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            if let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref()) {
                return format!("validation failed: {problem}");
            }
        }
    }
    order_error.unwrap_or_else(|| "the CA marked the order invalid".into())
}

/// Wait until every online gateway applied `revision` (which carries a challenge answer).
async fn wait_for_gateways(control: &Control, revision: u64) -> Result<(), String> {
    let deadline = Instant::now() + GATEWAY_ACK_TIMEOUT;
    loop {
        let (online, applied) = control.hub.gateways_applied(revision);
        if online == 0 {
            return Err("no gateway is online to answer the challenge".into());
        }
        if applied == online {
            return Ok(());
        }
        if Instant::now() > deadline {
            log::warn!("{applied} of {online} gateways acknowledged the challenge in time; asking the CA anyway");
            return Ok(());
        }
        Timer::after(Duration::from_millis(50)).await;
    }
}
