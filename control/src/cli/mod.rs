//! `kakuremichi-control tunnel …`, `gateway …` and `alert …`: the API from a shell on
//! Control's host. It talks to the running Control over its HTTP listener (so every change
//! is pushed to the nodes at once, as from the pages), with an API token from `--token` or
//! `KAKUREMICHI_TOKEN`.

pub mod alerts;

use crate::spec::TunnelFields;
use futures_lite::future;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use kakuremichi_rt::io::FuturesIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);

/// The body of `tunnel create` and `tunnel update`: the fields the options gave (absent ones
/// are not sent) with `--json`'s object merged over them (`origin`, `access`, …).
pub fn tunnel_body(fields: &TunnelFields, json: Option<&str>) -> Result<Value, String> {
    let Ok(Value::Object(mut body)) = serde_json::to_value(fields) else {
        return Err("the tunnel's fields are not a JSON object".into());
    };
    body.retain(|_, value| !value.is_null());
    if let Some(port) = fields.port {
        body.insert("port".into(), port.into());
    }
    if let Some(extra) = json {
        let extra: Value = serde_json::from_str(extra).map_err(|e| format!("--json: {e}"))?;
        let Value::Object(extra) = extra else {
            return Err("--json must be a JSON object".into());
        };
        body.extend(extra);
    }
    Ok(Value::Object(body))
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
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(FuturesIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        kakuremichi_rt::spawn(async move {
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
    use serde_json::json;

    #[test]
    fn options_become_the_api_body_and_json_adds_to_them() {
        let fields = TunnelFields {
            kind: Some(crate::model::TunnelKind::Tcp),
            port: Some(15432),
            agent: Some("agt_1".into()),
            target: Some("127.0.0.1:5432".into()),
            ..TunnelFields::default()
        };
        let extra = r#"{"origin":{"connect_timeout_secs":3}}"#;
        assert_eq!(
            tunnel_body(&fields, Some(extra)).unwrap(),
            json!({"kind":"tcp","port":15432,"agent":"agt_1","target":"127.0.0.1:5432",
                   "origin":{"connect_timeout_secs":3}})
        );
        assert!(tunnel_body(&fields, Some("[1]")).is_err());
    }
}
