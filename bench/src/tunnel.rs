//! One end of a bare netstack tunnel: the gateway end takes host TCP connections and opens
//! overlay ones to the agent end, which forwards them to the origin. WireGuard and smoltcp
//! as the real nodes run them, without HTTP, TLS or Control.

use anyhow::{bail, Context as _};
use async_io::Async;
use kakuremichi_netstack::{public_key_of, PeerSpec, Stack};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};

const GATEWAY_KEY: [u8; 32] = [0x11; 32];
const AGENT_KEY: [u8; 32] = [0x22; 32];
const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const AGENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const SERVICE_PORT: u16 = 80;

/// Run one end of the bare tunnel until killed.
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "tunnel")]
pub struct TunnelArgs {
    /// which end: gateway or agent
    #[argh(option)]
    role: String,
    /// this end's WireGuard UDP address
    #[argh(option)]
    udp: SocketAddr,
    /// the gateway end's WireGuard UDP address (agent only)
    #[argh(option)]
    gateway_udp: Option<SocketAddr>,
    /// host TCP address to accept clients on (gateway only)
    #[argh(option)]
    accept: Option<SocketAddr>,
    /// origin address (agent only)
    #[argh(option)]
    origin: Option<SocketAddr>,
}

pub async fn run(args: TunnelArgs) -> anyhow::Result<()> {
    match args.role.as_str() {
        "gateway" => {
            let accept = args
                .accept
                .context("--accept is needed for the gateway end")?;
            let stack = Stack::bind(args.udp, GATEWAY_KEY).await?;
            stack.set_address(GATEWAY_IP, 24);
            stack.set_peers(&[peer(AGENT_KEY, AGENT_IP, None)]);
            let listener = Async::<TcpListener>::bind(accept)?;
            println!(
                "tunnel gateway end: tcp {accept}, udp {}",
                stack.local_addr()
            );
            loop {
                let (client, _) = listener.accept().await?;
                client.get_ref().set_nodelay(true)?;
                let stack = stack.clone();
                smol::spawn(async move {
                    match stack
                        .connect(SocketAddrV4::new(AGENT_IP, SERVICE_PORT))
                        .await
                    {
                        Ok(overlay) => {
                            let _ = kakuremichi_rt::copy::copy_bidirectional(client, overlay).await;
                        }
                        Err(e) => eprintln!("overlay connect: {e}"),
                    }
                })
                .detach();
            }
        }
        "agent" => {
            let origin = args
                .origin
                .context("--origin is needed for the agent end")?;
            let gateway = args
                .gateway_udp
                .context("--gateway-udp is needed for the agent end")?;
            let stack = Stack::bind(args.udp, AGENT_KEY).await?;
            stack.set_address(AGENT_IP, 24);
            stack.set_peers(&[peer(GATEWAY_KEY, GATEWAY_IP, Some(gateway))]);
            let listener = stack.listen(SERVICE_PORT)?;
            println!(
                "tunnel agent end: origin {origin}, udp {}",
                stack.local_addr()
            );
            loop {
                let (overlay, _) = listener.accept().await?;
                smol::spawn(async move {
                    match Async::<TcpStream>::connect(origin).await {
                        Ok(upstream) => {
                            let _ = upstream.get_ref().set_nodelay(true);
                            let _ =
                                kakuremichi_rt::copy::copy_bidirectional(overlay, upstream).await;
                        }
                        Err(e) => eprintln!("origin connect: {e}"),
                    }
                })
                .detach();
            }
        }
        other => bail!("--role {other}: gateway or agent expected"),
    }
}

fn peer(private_key: [u8; 32], overlay_ip: Ipv4Addr, endpoint: Option<SocketAddr>) -> PeerSpec {
    PeerSpec {
        public_key: public_key_of(&private_key),
        overlay_ip,
        endpoint,
        persistent_keepalive: endpoint.map(|_| 25),
        incarnation: 0,
    }
}
