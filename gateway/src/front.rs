//! A trusted front (a cloud load balancer) that starts every connection with a PROXY
//! header: from its addresses the header is required and names the real client, so
//! `X-Forwarded-For`, access rules and PROXY headers towards origins stay right behind it.
//! From anyone else no header is read: a stranger cannot claim another address.

use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt};
use kakuremichi_proto::access::Cidr;
use kakuremichi_proto::proxy_protocol::{self, Carried, V1_MAX_LINE};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Time a front gets to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The networks whose connections carry a PROXY header.
#[derive(Clone, Debug, Default)]
pub struct TrustedFronts(pub Vec<Cidr>);

impl TrustedFronts {
    /// The client behind `stream`: `peer` itself, or, from a trusted front, the client its
    /// header names. The header is consumed exactly, nothing after it is read.
    pub async fn client_of(
        &self,
        stream: &mut Async<TcpStream>,
        peer: SocketAddr,
    ) -> io::Result<SocketAddr> {
        if !self.0.iter().any(|cidr| cidr.contains(peer.ip())) {
            return Ok(peer);
        }
        let read = async {
            match read_header(stream).await? {
                Carried::Proxied { client, .. } => Ok(client),
                Carried::Local => Ok(peer),
            }
        };
        let timeout = async {
            Timer::after(HEADER_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no PROXY header in time",
            ))
        };
        future::or(read, timeout).await
    }
}

async fn read_header(stream: &mut Async<TcpStream>) -> io::Result<Carried> {
    let invalid = |e: proxy_protocol::Malformed| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    match first[0] {
        b'P' => {
            // Version 1: byte by byte up to CRLF, so not one byte past the header is taken.
            let mut line = vec![b'P'];
            while !line.ends_with(b"\r\n") {
                if line.len() >= V1_MAX_LINE {
                    return Err(invalid(proxy_protocol::Malformed("line too long")));
                }
                stream.read_exact(&mut first).await?;
                line.push(first[0]);
            }
            proxy_protocol::parse_v1(&line).map_err(invalid)
        }
        b'\r' => {
            let mut head = [0u8; 16];
            head[0] = b'\r';
            stream.read_exact(&mut head[1..]).await?;
            let mut block = vec![0u8; proxy_protocol::v2_block_len(&head).map_err(invalid)?];
            stream.read_exact(&mut block).await?;
            proxy_protocol::parse_v2(&head, &block).map_err(invalid)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a trusted front sent no PROXY header",
        )),
    }
}
