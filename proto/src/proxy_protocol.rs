//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a gateway puts in front of a
//! forwarded connection so the origin learns the client's address.

use crate::ports::Transport;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Which header to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    /// The text header: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl std::str::FromStr for ProxyProtocol {
    type Err = crate::ProtoError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            other => Err(crate::ProtoError::invalid(
                "proxy_protocol",
                format!("{other:?} is not v1 or v2"),
            )),
        }
    }
}

impl ProxyProtocol {
    /// `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

/// The v2 header's fixed signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a connection from `client` to the gateway's `local` address. Addresses of
/// different families (an IPv4 client on a dual-stack socket) are both written as IPv6.
pub fn header(
    version: ProxyProtocol,
    transport: Transport,
    client: SocketAddr,
    local: SocketAddr,
) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocol::V1 => {
            // Version 1 has no UDP; a UDP tunnel's origin that wants v1 gets TCP's words,
            // which is what HAProxy's own UDP-less peers expect.
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        ProxyProtocol::V2 => {
            let mut out = Vec::with_capacity(16 + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, command PROXY
            let protocol = match transport {
                Transport::Tcp => 0x1,
                Transport::Udp => 0x2,
            };
            let mut addresses = Vec::with_capacity(36);
            let family = match (client, local) {
                (SocketAddr::V4(c), SocketAddr::V4(l)) => {
                    addresses.extend_from_slice(&c.ip().octets());
                    addresses.extend_from_slice(&l.ip().octets());
                    0x10
                }
                (SocketAddr::V6(c), SocketAddr::V6(l)) => {
                    addresses.extend_from_slice(&c.ip().octets());
                    addresses.extend_from_slice(&l.ip().octets());
                    0x20
                }
                _ => unreachable!("same_family returned one family"),
            };
            addresses.extend_from_slice(&client.port().to_be_bytes());
            addresses.extend_from_slice(&local.port().to_be_bytes());
            out.push(family | protocol);
            out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
            out.extend_from_slice(&addresses);
            out
        }
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    match a.is_ipv4() == b.is_ipv4() {
        true => (a, b),
        false => (v6(a), v6(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_is_the_text_line() {
        let header = header(
            ProxyProtocol::V1,
            Transport::Tcp,
            "203.0.113.7:51000".parse().unwrap(),
            "198.51.100.1:15432".parse().unwrap(),
        );
        assert_eq!(
            header,
            b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 15432\r\n".to_vec()
        );
    }

    #[test]
    fn version_2_is_the_binary_block() {
        let header = header(
            ProxyProtocol::V2,
            Transport::Udp,
            "203.0.113.7:51000".parse().unwrap(),
            "198.51.100.1:53".parse().unwrap(),
        );
        let mut expected = V2_SIGNATURE.to_vec();
        expected.extend_from_slice(&[0x21, 0x12, 0, 12, 203, 0, 113, 7, 198, 51, 100, 1]);
        expected.extend_from_slice(&51000u16.to_be_bytes());
        expected.extend_from_slice(&53u16.to_be_bytes());
        assert_eq!(header, expected);
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let header = header(
            ProxyProtocol::V1,
            Transport::Tcp,
            "203.0.113.7:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        );
        let line = String::from_utf8(header).unwrap();
        assert_eq!(line, "PROXY TCP6 ::ffff:203.0.113.7 2001:db8::1 1 2\r\n");
    }
}
