//! What callers send to make a rule or a channel, checked into one [`Rule`] or [`Channel`]
//! with errors that name the field. The API, the pages and the CLI read the same types.

use super::{Channel, ChannelKind, Rule, RuleKind, Smtp, SmtpSecurity};
use crate::error::Error;
use crate::model::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A new rule.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct NewRule {
    #[schemars(schema_with = "crate::spec::name_schema")]
    pub name: String,
    pub kind: Option<RuleKind>,
    /// Seconds a problem lasts before the rule fires (0 to 86400; default 60).
    #[schemars(range(min = 0, max = 86400))]
    pub for_secs: Option<u64>,
    /// Days (certificate), percent (error_rate) or milliseconds (latency_p99).
    #[schemars(range(min = 0))]
    pub threshold: Option<f64>,
    /// Only this tunnel's id (tunnel kinds).
    pub tunnel: Option<String>,
    /// Channel ids; none or empty: every channel.
    pub channels: Option<Vec<String>>,
}

/// A new channel.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct NewChannel {
    #[schemars(schema_with = "crate::spec::name_schema")]
    pub name: String,
    pub kind: Option<ChannelKind>,
    /// http:// or https:// URL (every kind but email).
    pub url: Option<String>,
    /// Webhooks: the key of the HMAC-SHA256 signature.
    pub secret: Option<String>,
    /// Email: the SMTP server, `host:port`.
    pub smtp_server: Option<String>,
    pub smtp_security: Option<SmtpSecurity>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub mail_from: Option<String>,
    pub mail_to: Option<String>,
    /// Email: PEM certificates to trust for the server's TLS (a private CA).
    pub smtp_ca_pem: Option<String>,
}

fn name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "name",
            "1 to 64 characters, no control characters",
        ));
    }
    Ok(name.to_string())
}

impl NewRule {
    /// The rule, checked against the channels and tunnels there are.
    pub fn build(self, state: &State, channels: &[Channel]) -> Result<Rule, Error> {
        let kind = self
            .kind
            .ok_or_else(|| Error::invalid("kind", "is required"))?;
        let for_secs = self.for_secs.unwrap_or(60);
        if for_secs > 86_400 {
            return Err(Error::invalid("for_secs", "0 to 86400 seconds"));
        }
        if self.threshold.is_some_and(|t| !t.is_finite() || t < 0.0) {
            return Err(Error::invalid("threshold", "a number of 0 or more"));
        }
        let tunnel = self.tunnel.filter(|t| !t.trim().is_empty());
        if let Some(id) = &tunnel {
            state
                .tunnel(id)
                .map_err(|_| Error::invalid("tunnel", format!("no tunnel {id:?}")))?;
        }
        let wanted = self.channels.unwrap_or_default();
        if let Some(unknown) = wanted
            .iter()
            .find(|id| !channels.iter().any(|c| c.id == **id))
        {
            return Err(Error::invalid(
                "channels",
                format!("no channel {unknown:?}"),
            ));
        }
        Ok(Rule {
            id: crate::auth::new_id("rul"),
            name: name(&self.name)?,
            kind,
            for_secs,
            threshold: self.threshold,
            tunnel,
            channels: wanted,
        })
    }
}

impl NewChannel {
    pub fn build(self) -> Result<Channel, Error> {
        let kind = self
            .kind
            .ok_or_else(|| Error::invalid("kind", "is required"))?;
        let text = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (mut url, mut smtp) = (None, None);
        if kind == ChannelKind::Email {
            let server = text(self.smtp_server)
                .ok_or_else(|| Error::invalid("smtp_server", "is required: host:port"))?;
            let (host, port) = server
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok().filter(|p| *p > 0)?)))
                .ok_or_else(|| Error::invalid("smtp_server", "host:port"))?;
            let address = |field: &str, value: Option<String>| {
                let value = text(value).ok_or_else(|| Error::invalid(field, "is required"))?;
                value
                    .parse::<lettre::Address>()
                    .map_err(|e| Error::invalid(field, format!("not a mail address: {e}")))?;
                Ok::<_, Error>(value)
            };
            smtp = Some(Smtp {
                host,
                port,
                security: self.smtp_security.unwrap_or_default(),
                username: text(self.smtp_username),
                password: self.smtp_password.filter(|p| !p.is_empty()),
                from: address("mail_from", self.mail_from)?,
                to: address("mail_to", self.mail_to)?,
                ca_pem: match text(self.smtp_ca_pem) {
                    Some(pem) => {
                        lettre::transport::smtp::client::Certificate::from_pem(pem.as_bytes())
                            .map_err(|e| Error::invalid("smtp_ca_pem", e.to_string()))?;
                        Some(pem)
                    }
                    None => None,
                },
            });
        } else {
            let given = text(self.url).ok_or_else(|| Error::invalid("url", "is required"))?;
            let parsed =
                url::Url::parse(&given).map_err(|e| Error::invalid("url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(Error::invalid("url", "an http:// or https:// URL"));
            }
            url = Some(given);
        }
        Ok(Channel {
            id: crate::auth::new_id("chn"),
            name: name(&self.name)?,
            kind,
            url,
            secret: self.secret.filter(|s| !s.is_empty()),
            smtp,
        })
    }
}

/// A channel as the API and pages show it: no secret, no password, and no URL path (a
/// Discord, Slack or Gotify URL is itself a credential).
#[derive(Debug, Serialize)]
pub struct ChannelView {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    /// Scheme and host of the URL, or the mail server and recipient.
    pub to: String,
    pub signed: bool,
}

impl ChannelView {
    pub fn of(channel: &Channel) -> ChannelView {
        let to = match (&channel.url, &channel.smtp) {
            (Some(url), _) => url::Url::parse(url)
                .map(|u| format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("")))
                .unwrap_or_default(),
            (None, Some(smtp)) => format!("{} via {}:{}", smtp.to, smtp.host, smtp.port),
            (None, None) => String::new(),
        };
        ChannelView {
            id: channel.id.clone(),
            name: channel.name.clone(),
            kind: channel.kind.as_str(),
            to,
            signed: channel.secret.is_some(),
        }
    }
}
