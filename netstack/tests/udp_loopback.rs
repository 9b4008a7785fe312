//! Two `Stack`s over real UDP sockets on loopback: the smol driver, async streams, and a slow
//! reader holding the sender back through the TCP window instead of queueing without bound.

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use kakuremichi_netstack::{public_key_of, PeerSpec, Stack};
use std::time::Duration;

const PAYLOAD: usize = 4000000;

fn key(seed: u8) -> [u8; 32] {
    let mut key = [seed; 32];
    key[0] = 0x40;
    key
}

async fn pair() -> (Stack, Stack) {
    let (hub_key, spoke_key) = (key(1), key(2));
    let hub = Stack::bind("127.0.0.1:0".parse().unwrap(), hub_key)
        .await
        .unwrap();
    let spoke = Stack::bind("127.0.0.1:0".parse().unwrap(), spoke_key)
        .await
        .unwrap();
    hub.set_address("10.77.0.1".parse().unwrap(), 16);
    spoke.set_address("10.77.0.2".parse().unwrap(), 16);
    hub.set_peers(&[PeerSpec {
        public_key: public_key_of(&spoke_key),
        overlay_ip: "10.77.0.2".parse().unwrap(),
        endpoint: None,
        persistent_keepalive: None,
        incarnation: 0,
    }]);
    spoke.set_peers(&[PeerSpec {
        public_key: public_key_of(&hub_key),
        overlay_ip: "10.77.0.1".parse().unwrap(),
        endpoint: Some(hub.local_addr()),
        persistent_keepalive: Some(25),
        incarnation: 0,
    }]);
    (hub, spoke)
}

#[test]
fn streams_carry_bytes_both_ways_over_udp() {
    smol::block_on(async {
        let (hub, spoke) = pair().await;
        let listener = spoke.listen(20000).unwrap();
        let server = smol::spawn(async move {
            let (mut stream, from) = listener.accept().await.unwrap();
            assert_eq!(from.ip().to_string(), "10.77.0.1");
            let mut request = vec![0u8; PAYLOAD];
            stream.read_exact(&mut request).await.unwrap();
            stream.write_all(&request).await.unwrap();
            stream.close().await.unwrap();
        });
        let mut client = hub
            .connect("10.77.0.2:20000".parse().unwrap())
            .await
            .unwrap();
        let payload: Vec<u8> = (0..(PAYLOAD as u32)).map(|i| (i % 251) as u8).collect();
        client.write_all(&payload).await.unwrap();
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.unwrap();
        assert!(
            echoed == payload,
            "echo differs ({} of {} bytes)",
            echoed.len(),
            payload.len()
        );
        server.await;
        let stats = hub.peer_stats();
        assert!(
            stats[0].is_up() && stats[0].rx_bytes > PAYLOAD as u64,
            "{stats:?}"
        );
    });
}

#[test]
fn refused_port_and_unknown_address_fail_fast() {
    smol::block_on(async {
        let (hub, _spoke) = pair().await;
        let refused = hub
            .connect("10.77.0.2:9".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
        let no_route = hub
            .connect("10.77.0.3:80".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            no_route.kind(),
            std::io::ErrorKind::HostUnreachable,
            "{no_route}"
        );
    });
}

#[test]
fn a_slow_reader_holds_the_sender_back() {
    smol::block_on(async {
        let (hub, spoke) = pair().await;
        let listener = spoke.listen(20001).unwrap();
        let mut client = hub
            .connect("10.77.0.2:20001".parse().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // Nobody reads: the writer must stall once both stacks' buffers are full.
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0usize;
        let stalled = future::or(
            async {
                loop {
                    client.write_all(&chunk).await.unwrap();
                    written += chunk.len();
                }
            },
            async {
                async_io::Timer::after(Duration::from_secs(2)).await;
            },
        );
        stalled.await;
        let bound = 2 * kakuremichi_netstack::core::TCP_BUFFER_BYTES + chunk.len();
        assert!(
            written <= bound,
            "wrote {written} bytes with no reader (bound {bound})"
        );
        assert!(
            written >= kakuremichi_netstack::core::TCP_BUFFER_BYTES,
            "only {written} bytes before stalling"
        );
        // Reading drains it all, in order.
        let mut got = vec![0u8; written];
        server.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 7));
    });
}
