//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a gateway puts in front of a
//! forwarded connection so the origin learns the client's address, and reads from a trusted
//! load balancer in front of it.

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

/// The longest version 1 line, CRLF included (the specification's own bound).
pub const V1_MAX_LINE: usize = 107;
/// The longest version 2 address block accepted: addresses plus TLVs a load balancer adds
/// (AWS and GCP add a few dozen bytes).
pub const V2_MAX_BLOCK: usize = 2048;

/// What a PROXY header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// A proxied connection: the client's address and the address it connected to.
    Proxied {
        /// The original client.
        client: SocketAddr,
        /// Where the client connected (the load balancer's front address).
        destination: SocketAddr,
    },
    /// The front's own connection (a health check) or a family it cannot name: use the
    /// connection's own addresses.
    Local,
}

/// A header that is not a PROXY header, or a broken one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("PROXY protocol: {0}")]
pub struct Malformed(pub &'static str);

/// Parse a version 1 line (`PROXY TCP4 … \r\n`, CRLF included).
pub fn parse_v1(line: &[u8]) -> Result<Carried, Malformed> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or(Malformed("line does not end in CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| Malformed("line is not text"))?;
    let mut words = line.split(' ');
    if words.next() != Some("PROXY") {
        return Err(Malformed("no PROXY signature"));
    }
    match words.next() {
        Some("UNKNOWN") => return Ok(Carried::Local),
        Some("TCP4" | "TCP6") => {}
        _ => return Err(Malformed("unknown protocol")),
    }
    let mut next = || words.next().ok_or(Malformed("too few fields"));
    let (source, destination) = (next()?, next()?);
    let (source_port, destination_port) = (next()?, next()?);
    if words.next().is_some() {
        return Err(Malformed("too many fields"));
    }
    let address = |ip: &str, port: &str| -> Result<SocketAddr, Malformed> {
        let ip: std::net::IpAddr = ip.parse().map_err(|_| Malformed("bad address"))?;
        let port: u16 = port.parse().map_err(|_| Malformed("bad port"))?;
        Ok(SocketAddr::new(ip, port))
    };
    Ok(Carried::Proxied {
        client: address(source, source_port)?,
        destination: address(destination, destination_port)?,
    })
}

/// The version 2 block's length, from its 16-byte head.
pub fn v2_block_len(head: &[u8; 16]) -> Result<usize, Malformed> {
    if head[..12] != V2_SIGNATURE {
        return Err(Malformed("no version 2 signature"));
    }
    if head[12] >> 4 != 2 {
        return Err(Malformed("not version 2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    match len <= V2_MAX_BLOCK {
        true => Ok(len),
        false => Err(Malformed("address block too large")),
    }
}

/// Parse a version 2 header: its 16-byte head and the block [`v2_block_len`] announced.
pub fn parse_v2(head: &[u8; 16], block: &[u8]) -> Result<Carried, Malformed> {
    v2_block_len(head)?;
    match head[12] & 0x0f {
        0x0 => return Ok(Carried::Local),
        0x1 => {}
        _ => return Err(Malformed("unknown command")),
    }
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match head[13] >> 4 {
        0x1 if block.len() >= 12 => {
            let ip = |at: usize| {
                std::net::Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3])
            };
            Ok(Carried::Proxied {
                client: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            })
        }
        0x2 if block.len() >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                std::net::Ipv6Addr::from(octets)
            };
            Ok(Carried::Proxied {
                client: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            })
        }
        0x1 | 0x2 => Err(Malformed("address block too short")),
        // AF_UNSPEC or AF_UNIX: nothing an IP listener can use.
        _ => Ok(Carried::Local),
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
    fn what_is_written_is_read_back() {
        let (client, local): (SocketAddr, SocketAddr) = (
            "203.0.113.7:51000".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
        );
        let expected = Carried::Proxied {
            client,
            destination: local,
        };
        let v1 = header(ProxyProtocol::V1, Transport::Tcp, client, local);
        assert_eq!(parse_v1(&v1), Ok(expected));
        let v2 = header(ProxyProtocol::V2, Transport::Tcp, client, local);
        let head: [u8; 16] = v2[..16].try_into().unwrap();
        assert_eq!(v2_block_len(&head), Ok(12));
        assert_eq!(parse_v2(&head, &v2[16..]), Ok(expected));
        let (client6, local6): (SocketAddr, SocketAddr) = (
            "[2001:db8::7]:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        );
        let v2 = header(ProxyProtocol::V2, Transport::Tcp, client6, local6);
        let head: [u8; 16] = v2[..16].try_into().unwrap();
        assert_eq!(
            parse_v2(&head, &v2[16..]),
            Ok(Carried::Proxied {
                client: client6,
                destination: local6
            })
        );
    }

    #[test]
    fn broken_headers_are_refused() {
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Carried::Local));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(&V2_SIGNATURE);
        head[12] = 0x21;
        head[13] = 0x11;
        head[14..].copy_from_slice(&5000u16.to_be_bytes());
        assert!(v2_block_len(&head).is_err(), "too large");
        head[14..].copy_from_slice(&4u16.to_be_bytes());
        assert!(
            parse_v2(&head, &[0; 4]).is_err(),
            "too short for two IPv4 addresses"
        );
        head[12] = 0x20;
        assert_eq!(
            parse_v2(&head, &[0; 4]),
            Ok(Carried::Local),
            "LOCAL command"
        );
        head[0] = b'X';
        assert!(v2_block_len(&head).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let v2 = header(
            ProxyProtocol::V2,
            Transport::Tcp,
            "[2001:db8::7]:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        );
        for round in 0..20_000 {
            let len = round % 120;
            let mut bytes = crate::noise(&mut seed, len);
            let _ = parse_v1(&bytes);
            // Lines that look right at the start, garbage after.
            let mut line = b"PROXY TCP4 ".to_vec();
            line.extend_from_slice(&bytes);
            line.extend_from_slice(b"\r\n");
            let _ = parse_v1(&line);
            // A valid v2 head with a mangled block, and a mangled head.
            let mut head: [u8; 16] = v2[..16].try_into().unwrap();
            if let Ok(len) = v2_block_len(&head) {
                bytes.resize(len.min(bytes.len()), 0);
                let _ = parse_v2(&head, &bytes);
            }
            head[12..].copy_from_slice(&crate::noise(&mut seed, 4));
            if v2_block_len(&head).is_ok() {
                let _ = parse_v2(&head, &bytes);
            }
        }
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
