//! Sending notices: one message per channel in the channel's own format, retried with
//! backoff until the channel takes it (a 2xx, or the mail server's acceptance), at most
//! [`GIVE_UP_SECS`]. A notice waits once per channel: a firing queued twice is sent once.

use super::engine::Notice;
use super::{Channel, ChannelKind, Smtp, SmtpSecurity};
use crate::Control;
use bytes::Bytes;
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use kakuremichi_rt::io::FuturesIo;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
const MAX_BACKOFF_SECS: u64 = 300;
/// A notice no channel took for a day is dropped (and logged).
pub const GIVE_UP_SECS: u64 = 86_400;
/// Deliveries the pages show.
const LOG_LENGTH: usize = 200;

/// A notice waiting for one channel.
#[derive(Clone, Debug)]
pub struct Pending {
    pub notice: Notice,
    pub channel: String,
    pub attempts: u32,
    pub queued_at: u64,
    pub next_at: u64,
}

/// One attempt's outcome, as the pages show it.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub at: u64,
    pub channel: String,
    pub notice: String,
    pub rule: String,
    pub subject: String,
    pub state: &'static str,
    pub attempts: u32,
    /// Seconds from the notice to this attempt.
    pub delay_secs: u64,
    /// `delivered`, `retrying` or `gave up`, and the error if any.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Notices waiting, and the latest deliveries.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: VecDeque<Pending>,
    log: VecDeque<Delivery>,
}

impl Outbox {
    /// Send `notice` to `channel` from `now` on, unless it already waits for it.
    pub fn queue(&mut self, notice: Notice, channel: &str, now: u64) {
        let waiting = self.pending.iter().any(|p| {
            p.channel == channel && p.notice.id == notice.id && p.notice.state == notice.state
        });
        if !waiting {
            self.pending.push_back(Pending {
                notice,
                channel: channel.to_string(),
                attempts: 0,
                queued_at: now,
                next_at: now,
            });
        }
    }

    /// The notices due at `now`, taken out.
    pub fn due(&mut self, now: u64) -> Vec<Pending> {
        let (due, waiting): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.next_at <= now);
        self.pending = waiting.into();
        due
    }

    /// How an attempt went: a failure waits twice as long as the one before (from
    /// `base`), up to [`MAX_BACKOFF_SECS`], and is dropped after [`GIVE_UP_SECS`].
    pub fn attempted(
        &mut self,
        mut pending: Pending,
        outcome: Result<(), String>,
        now: u64,
        base: u64,
    ) {
        pending.attempts += 1;
        let (state, error) = match outcome {
            Ok(()) => ("delivered", None),
            Err(_) if now.saturating_sub(pending.queued_at) >= GIVE_UP_SECS => {
                ("gave up", outcome.err())
            }
            Err(e) => ("retrying", Some(e)),
        };
        self.log.push_front(Delivery {
            at: now,
            channel: pending.channel.clone(),
            notice: pending.notice.id.clone(),
            rule: pending.notice.rule.clone(),
            subject: pending.notice.subject.clone(),
            state: pending.notice.state,
            attempts: pending.attempts,
            delay_secs: now.saturating_sub(pending.notice.at),
            outcome: state.to_string(),
            error,
        });
        self.log.truncate(LOG_LENGTH);
        if state == "retrying" {
            let shift = (pending.attempts - 1).min(16);
            pending.next_at = now + (base.max(1) << shift).min(MAX_BACKOFF_SECS);
            self.pending.push_back(pending);
        }
    }

    /// The latest deliveries, newest first.
    pub fn log(&self) -> Vec<Delivery> {
        self.log.iter().cloned().collect()
    }

    /// Notices waiting.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

/// Send every notice that is due now.
pub async fn send_due(control: &Control) {
    let now = kakuremichi_rt::unix_now();
    let due = control.alerts.outbox().due(now);
    if due.is_empty() {
        return;
    }
    let channels = super::channels(control).unwrap_or_default();
    for pending in due {
        let outcome = match channels.iter().find(|c| c.id == pending.channel) {
            Some(channel) => send(channel, &pending.notice).await,
            None => Err("the channel was deleted".into()),
        };
        if let Err(e) = &outcome {
            log::warn!("alert {} to {}: {e}", pending.notice.id, pending.channel);
        }
        let base = control.alerts.every.as_secs().max(1);
        let now = kakuremichi_rt::unix_now();
        control
            .alerts
            .outbox()
            .attempted(pending, outcome, now, base);
    }
}

/// One attempt to give `notice` to `channel`.
pub async fn send(channel: &Channel, notice: &Notice) -> Result<(), String> {
    let attempt = async {
        match channel.kind {
            ChannelKind::Email => {
                let smtp = channel.smtp.clone().ok_or("no SMTP settings")?;
                let (subject, body) = (title(notice), text(notice));
                blocking::unblock(move || mail(&smtp, &subject, &body)).await
            }
            _ => {
                let url = channel.url.as_deref().ok_or("no URL")?;
                let (body, headers) = http_message(channel, notice);
                post(url, body, headers).await
            }
        }
    };
    futures_lite::future::or(attempt, async {
        async_io::Timer::after(ATTEMPT_TIMEOUT).await;
        Err(format!("no answer within {ATTEMPT_TIMEOUT:?}"))
    })
    .await
}

fn title(notice: &Notice) -> String {
    format!(
        "[{}] {}: {}",
        notice.state.to_uppercase(),
        notice.rule,
        notice.subject
    )
}

fn text(notice: &Notice) -> String {
    let mark = match notice.state {
        "resolved" => "Resolved",
        "firing" => "Firing",
        _ => "Test",
    };
    format!(
        "{mark}: {}\nRule: {}\nSince: {} (Unix seconds)\n",
        notice.message, notice.rule, notice.since
    )
}

/// The body and headers a channel of `channel`'s kind takes.
fn http_message(channel: &Channel, notice: &Notice) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let json = |value: serde_json::Value| serde_json::to_vec(&value).unwrap_or_default();
    let firing = notice.state == "firing";
    match channel.kind {
        ChannelKind::Ntfy => {
            let headers = vec![
                ("title", title(notice)),
                (
                    "tags",
                    if firing {
                        "warning"
                    } else {
                        "white_check_mark"
                    }
                    .into(),
                ),
                ("priority", if firing { "high" } else { "default" }.into()),
            ];
            (text(notice).into_bytes(), headers)
        }
        ChannelKind::Gotify => (
            json(
                serde_json::json!({"title": title(notice), "message": text(notice), "priority": if firing { 8 } else { 4 }}),
            ),
            vec![("content-type", "application/json".into())],
        ),
        ChannelKind::Discord => (
            json(
                serde_json::json!({"content": format!("**{}**\n{}", title(notice), text(notice))}),
            ),
            vec![("content-type", "application/json".into())],
        ),
        ChannelKind::Slack => (
            json(serde_json::json!({"text": format!("*{}*\n{}", title(notice), text(notice))})),
            vec![("content-type", "application/json".into())],
        ),
        ChannelKind::Webhook | ChannelKind::Email => {
            let body = json(serde_json::json!({"channel": channel.name, "notice": notice}));
            let mut headers = vec![
                ("content-type", "application/json".to_string()),
                (
                    "x-kakuremichi-event",
                    format!("{} {}", notice.id, notice.state),
                ),
            ];
            if let Some(secret) = &channel.secret {
                headers.push(("x-kakuremichi-signature", signature(secret, &body)));
            }
            (body, headers)
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A TLS client that trusts the web's roots (built per delivery: alerts are rare).
fn tls() -> Result<TlsConnector, String> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POST `body` to `url` (http or https); a 2xx is taken.
async fn post(
    url: &str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
) -> Result<(), String> {
    let url = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let host = url.host_str().ok_or("the URL has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let tcp = smol::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let mut request = hyper::Request::post(&url[url::Position::BeforePath..])
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    if let Ok(value) = HeaderValue::from_str(&authority) {
        request.headers_mut().insert(HOST, value);
    }
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.headers_mut().insert(name, value);
        }
    }
    if !request.headers().contains_key(CONTENT_TYPE) {
        request.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    let status = match url.scheme() {
        "https" => {
            let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let stream = tls()?
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(FuturesIo::new(stream), request).await?
        }
        "http" => exchange(FuturesIo::new(tcp), request).await?,
        other => return Err(format!("{other}: not http or https")),
    };
    match status {
        200..=299 => Ok(()),
        status => Err(format!("answered {status}")),
    }
}

async fn exchange<S>(io: FuturesIo<S>, request: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let connection = async {
        let _ = connection.await;
        Ok::<_, String>(0)
    };
    let answered = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        Ok(status)
    };
    futures_lite::future::or(answered, async {
        connection.await?;
        Err("the connection closed".into())
    })
    .await
}

/// Send one mail (blocking: run off the executor).
fn mail(smtp: &Smtp, subject: &str, body: &str) -> Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};
    let message = Message::builder()
        .from(smtp.from.parse().map_err(|e| format!("from: {e}"))?)
        .to(smtp.to.parse().map_err(|e| format!("to: {e}"))?)
        .subject(subject)
        .body(body.to_string())
        .map_err(|e| e.to_string())?;
    let tls = || {
        let mut parameters = TlsParameters::builder(smtp.host.clone());
        if let Some(pem) = &smtp.ca_pem {
            let certificate = Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
            parameters = parameters.add_root_certificate(certificate);
        }
        parameters.build_rustls().map_err(|e| e.to_string())
    };
    let builder = SmtpTransport::builder_dangerous(&smtp.host);
    let builder = match smtp.security {
        SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        SmtpSecurity::None => builder,
    };
    let mut builder = builder.port(smtp.port).timeout(Some(ATTEMPT_TIMEOUT));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    builder
        .build()
        .send(&message)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(state: &'static str) -> Notice {
        Notice {
            id: "rul_1/tun_a/100".into(),
            rule_id: "rul_1".into(),
            rule: "origin down".into(),
            subject: "tun_a".into(),
            message: "cannot reach".into(),
            state,
            since: 100,
            at: 105,
        }
    }

    #[test]
    fn a_failing_channel_is_retried_with_backoff_and_a_notice_waits_once() {
        let mut outbox = Outbox::default();
        outbox.queue(notice("firing"), "chn_1", 105);
        outbox.queue(notice("firing"), "chn_1", 105);
        assert_eq!(outbox.waiting(), 1, "queued twice, waits once");
        let mut now = 105;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let due = outbox.due(now);
            assert_eq!(due.len(), 1);
            outbox.attempted(
                due.into_iter().next().unwrap(),
                Err("refused".into()),
                now,
                1,
            );
            let next = outbox.pending[0].next_at;
            waits.push(next - now);
            assert!(outbox.due(next - 1).is_empty());
            now = next;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let due = outbox.due(now);
        outbox.attempted(due.into_iter().next().unwrap(), Ok(()), now, 1);
        assert_eq!(outbox.waiting(), 0);
        let log = outbox.log();
        assert_eq!(
            (log[0].outcome.as_str(), log[0].attempts),
            ("delivered", 13)
        );
        assert_eq!(log.iter().filter(|d| d.outcome == "delivered").count(), 1);
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let signed = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signed,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
