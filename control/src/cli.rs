//! `kakuremichi-control tunnel …`: the tunnel API from a shell on Control's host. It talks to
//! the running Control over its HTTP listener (so every change is pushed to the nodes at
//! once, as from the pages), with an API token from `--token` or `KAKUREMICHI_TOKEN`.

use futures_lite::future;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use kakuremichi_rt::io::FuturesIo;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);

/// A tunnel's fields as command-line options give them; absent ones are not sent.
#[derive(Default)]
pub struct TunnelFields {
    pub kind: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub ports: Option<String>,
    pub agent: Option<String>,
    pub target: Option<String>,
    pub issuer: Option<String>,
    pub path_prefix: Option<String>,
    pub proxy_protocol: Option<String>,
    pub enabled: Option<bool>,
    /// Extra JSON merged over the fields above (`origin`, `access`, …).
    pub json: Option<String>,
}

impl TunnelFields {
    /// The request body.
    pub fn to_json(&self) -> Result<Value, String> {
        let mut body = Map::new();
        let mut set = |name: &str, value: Value| {
            body.insert(name.to_string(), value);
        };
        for (name, value) in [
            ("kind", &self.kind),
            ("hostname", &self.hostname),
            ("ports", &self.ports),
            ("agent", &self.agent),
            ("target", &self.target),
            ("issuer", &self.issuer),
            ("path_prefix", &self.path_prefix),
            ("proxy_protocol", &self.proxy_protocol),
        ] {
            if let Some(value) = value {
                set(name, json!(value));
            }
        }
        if let Some(port) = self.port {
            set("port", json!(port));
        }
        if let Some(enabled) = self.enabled {
            set("enabled", json!(enabled));
        }
        if let Some(extra) = &self.json {
            let extra: Value = serde_json::from_str(extra).map_err(|e| format!("--json: {e}"))?;
            let Value::Object(extra) = extra else {
                return Err("--json must be a JSON object".into());
            };
            body.extend(extra);
        }
        Ok(Value::Object(body))
    }
}

/// Call Control's API at `listen` and return the status and body. Refuses to run without a
/// token.
pub fn call(
    listen: SocketAddr,
    token: Option<String>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, String), String> {
    let token = token
        .or_else(|| std::env::var("KAKUREMICHI_TOKEN").ok())
        .filter(|t| !t.is_empty())
        .ok_or("an API token is needed: --token or KAKUREMICHI_TOKEN (kakuremichi-control token create)")?;
    // Control listening on every address is reached on loopback.
    let addr = match listen.ip().is_unspecified() {
        true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port()),
        false => listen,
    };
    let request = async {
        let stream = smol::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("Control at {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(FuturesIo(stream))
            .await
            .map_err(|e| e.to_string())?;
        smol::spawn(async move {
            let _ = connection.await;
        })
        .detach();
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("/api/v1/{path}"))
            .body(Full::new(bytes::Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        let value = |v: String| HeaderValue::from_str(&v).map_err(|e| e.to_string());
        headers.insert(HOST, value(addr.to_string())?);
        headers.insert(AUTHORIZATION, value(format!("Bearer {token}"))?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    smol::block_on(future::or(request, async {
        async_io::Timer::after(TIMEOUT).await;
        Err(format!("Control at {addr} did not answer in {TIMEOUT:?}"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_the_api_body_and_json_adds_to_them() {
        let fields = TunnelFields {
            kind: Some("tcp".into()),
            port: Some(15432),
            agent: Some("agt_1".into()),
            target: Some("127.0.0.1:5432".into()),
            json: Some(r#"{"origin":{"connect_timeout_secs":3}}"#.into()),
            ..TunnelFields::default()
        };
        assert_eq!(
            fields.to_json().unwrap(),
            json!({"kind":"tcp","port":15432,"agent":"agt_1","target":"127.0.0.1:5432",
                   "origin":{"connect_timeout_secs":3}})
        );
        let bad = TunnelFields {
            json: Some("[1]".into()),
            ..TunnelFields::default()
        };
        assert!(bad.to_json().is_err());
    }
}
