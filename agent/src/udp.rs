//! `udp` services: a gateway sends a public port's datagrams framed on an overlay connection
//! (`kakuremichi_proto::datagrams`); each client flow gets its own UDP socket towards the
//! target, so the target sees one peer per client and its replies find their way back.

use async_io::Async;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use kakuremichi_netstack::TcpStream;
use kakuremichi_proto::datagrams::{self, Frame};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

/// Flows one carrier may hold; the gateway bounds its own, this guards the agent against a
/// broken one.
const MAX_FLOWS: usize = 4096;
/// Replies queued towards the gateway before new ones are dropped, as a congested link would.
const REPLY_QUEUE: usize = 1024;

struct Flow {
    socket: Arc<Async<UdpSocket>>,
    _replies: smol::Task<()>,
}

/// Carry datagrams between the gateway and the target at `to` until the gateway closes the
/// carrier.
pub async fn carry(overlay: TcpStream, to: std::net::SocketAddr) -> io::Result<()> {
    let (mut reader, mut writer) = futures_lite::io::split(overlay);
    let (replies, outgoing) = async_channel::bounded::<Vec<u8>>(REPLY_QUEUE);
    let send = async {
        while let Ok(frame) = outgoing.recv().await {
            writer.write_all(&frame).await?;
            if outgoing.is_empty() {
                writer.flush().await?;
            }
        }
        Ok(())
    };
    let receive = async {
        let mut flows: HashMap<u32, Flow> = HashMap::new();
        let mut buffer = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
            let mut used = 0;
            while let Some((frame, len)) = datagrams::decode(&buffer[used..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                used += len;
                match frame {
                    Frame::End(flow) => {
                        flows.remove(&flow);
                    }
                    Frame::Datagram(flow, datagram) => {
                        if !flows.contains_key(&flow) {
                            if flows.len() >= MAX_FLOWS {
                                continue;
                            }
                            flows.insert(flow, open_flow(flow, to, replies.clone())?);
                        }
                        if let Some(open) = flows.get(&flow) {
                            // A refused or failed send is the datagram lost, as UDP allows.
                            let _ = open.socket.send(datagram).await;
                        }
                    }
                }
            }
            buffer.drain(..used);
        }
    };
    future::or(send, receive).await
}

fn open_flow(
    flow: u32,
    to: SocketAddr,
    replies: async_channel::Sender<Vec<u8>>,
) -> io::Result<Flow> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = Arc::new(Async::<UdpSocket>::bind(any)?);
    socket.get_ref().connect(to)?;
    let reader = socket.clone();
    let task = kakuremichi_rt::spawn(async move {
        let mut buffer = vec![0u8; datagrams::MAX_DATAGRAM];
        loop {
            // An ICMP "port unreachable" surfaces here as an error; the flow stays until
            // the gateway ends it, since the target may come back.
            let Ok(len) = reader.recv(&mut buffer).await else {
                async_io::Timer::after(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let mut frame = Vec::with_capacity(datagrams::FRAME_HEADER + len);
            if datagrams::encode(flow, &buffer[..len], &mut frame).is_ok() {
                let _ = replies.try_send(frame);
            }
        }
    });
    Ok(Flow {
        socket,
        _replies: task,
    })
}
