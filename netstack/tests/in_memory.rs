//! Several `Core`s wired together in memory: datagrams move between them by address, time is
//! simulated for smoltcp (boringtun keeps its own clock, which handshakes do not need).

use kakuremichi_netstack::core::{ConnectError, Core};
use kakuremichi_netstack::{public_key_of, PeerSpec};
use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

struct Node {
    udp: SocketAddr,
    key: [u8; 32],
    ip: Ipv4Addr,
    core: Core,
}

struct Net {
    nodes: Vec<Node>,
    now: Instant,
    /// Rewrites the source address of datagrams from node `i`, as a NAT would.
    nat: Vec<Option<SocketAddr>>,
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    key
}

impl Net {
    fn new(count: usize) -> Net {
        let nodes = (0..count)
            .map(|i| {
                let key = random_key();
                let ip = Ipv4Addr::new(10, 77, 0, i as u8 + 1);
                let mut core = Core::new(key, i as u64 * 7919, Instant::ZERO);
                core.set_address(ip, 16);
                Node {
                    udp: format!("192.0.2.{}:51820", i + 1).parse().unwrap(),
                    key,
                    ip,
                    core,
                }
            })
            .collect();
        Net {
            nodes,
            now: Instant::ZERO,
            nat: vec![None; count],
        }
    }

    fn spec(&self, i: usize, with_endpoint: bool) -> PeerSpec {
        PeerSpec {
            public_key: public_key_of(&self.nodes[i].key),
            overlay_ip: self.nodes[i].ip,
            endpoint: with_endpoint.then_some(self.nodes[i].udp),
            persistent_keepalive: None,
            incarnation: 0,
        }
    }

    /// Node `hub` peers with every spoke; spokes peer only with the hub and know its endpoint.
    fn star(count: usize) -> Net {
        let mut net = Net::new(count);
        let spokes: Vec<PeerSpec> = (1..count).map(|i| net.spec(i, false)).collect();
        net.nodes[0].core.set_peers(&spokes);
        let hub = net.spec(0, true);
        for i in 1..count {
            net.nodes[i].core.set_peers(std::slice::from_ref(&hub));
        }
        net
    }

    fn step(&mut self) {
        self.now += Duration::from_millis(1);
        let mut in_flight = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.core.poll(self.now);
            while let Some((to, datagram)) = node.core.poll_transmit() {
                in_flight.push((self.nat[i].unwrap_or(node.udp), to, datagram));
            }
        }
        for (from, to, datagram) in in_flight {
            if let Some(node) = self.nodes.iter_mut().find(|n| n.udp == to) {
                node.core.receive_datagram(self.now, from, &datagram);
            }
        }
    }

    fn run_until(&mut self, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        for _ in 0..5_000 {
            if done(self) {
                return true;
            }
            self.step();
        }
        false
    }
}

/// Sends `payload` from a socket on `from` to one on `to`, returning what arrived.
fn transfer(
    net: &mut Net,
    from: (usize, smoltcp::iface::SocketHandle),
    to: (usize, smoltcp::iface::SocketHandle),
    payload: &[u8],
) -> Vec<u8> {
    let mut sent = 0;
    let mut received = Vec::new();
    let complete = net.run_until(|net| {
        let tx = net.nodes[from.0].core.tcp(from.1);
        if sent < payload.len() && tx.can_send() {
            sent += tx.send_slice(&payload[sent..]).unwrap();
        }
        let rx = net.nodes[to.0].core.tcp(to.1);
        while rx.can_recv() {
            rx.recv(|data| {
                received.extend_from_slice(data);
                (data.len(), ())
            })
            .unwrap();
        }
        received.len() >= payload.len()
    });
    assert!(
        complete,
        "transfer stalled at {} of {}",
        received.len(),
        payload.len()
    );
    received
}

fn connect_and_accept(
    net: &mut Net,
    client: usize,
    server: usize,
    port: u16,
) -> (smoltcp::iface::SocketHandle, smoltcp::iface::SocketHandle) {
    net.nodes[server].core.tcp_listen(port).unwrap_or(());
    let remote = SocketAddrV4::new(net.nodes[server].ip, port);
    let handle = net.nodes[client].core.tcp_connect(remote).unwrap();
    let waker = futures_waker();
    let mut accepted = None;
    let ok = net.run_until(|net| {
        accepted = accepted.or_else(|| net.nodes[server].core.tcp_accept(port, &waker));
        accepted.is_some() && net.nodes[client].core.tcp(handle).state() == State::Established
    });
    assert!(ok, "connection {client} -> {server}:{port} not established");
    (handle, accepted.unwrap())
}

fn futures_waker() -> std::task::Waker {
    std::task::Waker::noop().clone()
}

#[test]
fn two_stacks_move_bytes_both_ways() {
    let mut net = Net::star(2);
    let (client, server) = connect_and_accept(&mut net, 1, 0, 20000);
    let up: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(transfer(&mut net, (1, client), (0, server), &up), up);
    let down: Vec<u8> = (0..700_000u32).map(|i| (i * 13) as u8).collect();
    assert_eq!(transfer(&mut net, (0, server), (1, client), &down), down);
    let stats = net.nodes[0].core.peer_stats();
    assert!(stats[0].is_up() && stats[0].rx_bytes > 1_000_000);
}

#[test]
fn listener_backlog_takes_many_simultaneous_connections() {
    let mut net = Net::star(2);
    net.nodes[0].core.tcp_listen(8080).unwrap();
    let remote = SocketAddrV4::new(net.nodes[0].ip, 8080);
    let clients: Vec<_> = (0..50)
        .map(|_| net.nodes[1].core.tcp_connect(remote).unwrap())
        .collect();
    let waker = futures_waker();
    let mut accepted = 0;
    let ok = net.run_until(|net| {
        while net.nodes[0].core.tcp_accept(8080, &waker).is_some() {
            accepted += 1;
        }
        accepted == 50
            && clients
                .iter()
                .all(|h| net.nodes[1].core.tcp(*h).state() == State::Established)
    });
    assert!(ok, "accepted {accepted} of 50");
}

#[test]
fn handshakes_abandoned_by_the_client_do_not_reset_later_connections() {
    // A gateway whose requests were cancelled drops its half-open connections; the agent's
    // sockets for them get a reset and go back to listening. A burst of new SYNs must each
    // get a socket of their own, not several count on one leftover listener.
    let mut net = Net::star(2);
    net.nodes[0].core.tcp_listen(8080).unwrap();
    let remote = SocketAddrV4::new(net.nodes[0].ip, 8080);
    let abandoned: Vec<_> = (0..20)
        .map(|_| net.nodes[1].core.tcp_connect(remote).unwrap())
        .collect();
    // One step: the SYNs reach the listener, the SYN-ACKs are not back yet.
    net.step();
    let now = net.now;
    for handle in abandoned {
        net.nodes[1].core.tcp_release(handle, now);
    }
    for _ in 0..20 {
        net.step();
    }
    let clients: Vec<_> = (0..50)
        .map(|_| net.nodes[1].core.tcp_connect(remote).unwrap())
        .collect();
    let waker = futures_waker();
    let ok = net.run_until(|net| {
        while net.nodes[0].core.tcp_accept(8080, &waker).is_some() {}
        clients
            .iter()
            .all(|h| net.nodes[1].core.tcp(*h).state() == State::Established)
    });
    let states: Vec<_> = clients
        .iter()
        .map(|h| net.nodes[1].core.tcp(*h).state())
        .collect();
    assert!(ok, "not every connection got through: {states:?}");
}

#[test]
fn spokes_cannot_reach_each_other_through_the_hub() {
    let mut net = Net::star(3);
    let b = SocketAddrV4::new(net.nodes[2].ip, 20000);
    net.nodes[2].core.tcp_listen(20000).unwrap();
    // A has no peer for B's address: refused before anything is sent.
    assert_eq!(net.nodes[1].core.tcp_connect(b), Err(ConnectError::NoRoute));

    // Even if A routes B's address through the hub, the hub does not forward it.
    let mut via_hub = net.spec(0, true);
    via_hub.overlay_ip = net.nodes[2].ip;
    net.nodes[1].core.set_peers(&[via_hub]);
    let handle = net.nodes[1].core.tcp_connect(b).unwrap();
    for _ in 0..200 {
        net.step();
    }
    assert_ne!(net.nodes[1].core.tcp(handle).state(), State::Established);
    let waker = futures_waker();
    assert!(net.nodes[2].core.tcp_accept(20000, &waker).is_none());
}

#[test]
fn spoofed_source_addresses_are_dropped() {
    let mut net = Net::star(3);
    net.nodes[0].core.tcp_listen(20000).unwrap();
    // A claims B's overlay address.
    let b_ip = net.nodes[2].ip;
    net.nodes[1].core.set_address(b_ip, 16);
    let hub = SocketAddrV4::new(net.nodes[0].ip, 20000);
    let handle = net.nodes[1].core.tcp_connect(hub).unwrap();
    for _ in 0..200 {
        net.step();
    }
    assert_ne!(net.nodes[1].core.tcp(handle).state(), State::Established);
    assert!(net.nodes[0].core.drops().spoofed_sources > 0);
}

#[test]
fn garbage_truncated_and_replayed_datagrams_are_dropped() {
    let mut net = Net::star(2);
    let (client, server) = connect_and_accept(&mut net, 1, 0, 20000);
    let from = net.nodes[1].udp;
    let hub = &mut net.nodes[0].core;
    let now = Instant::from_secs(1);
    let mut noise = [0u8; 2048];
    for len in [0, 1, 3, 4, 31, 32, 92, 147, 148, 149, 1500, 2048] {
        getrandom::fill(&mut noise).unwrap();
        for kind in 1u8..=4 {
            noise[0] = kind;
            noise[1..4].fill(0);
            hub.receive_datagram(now, from, &noise[..len]);
        }
    }
    // Capture a real data datagram and replay it.
    net.nodes[1].core.tcp(client).send_slice(b"hello").unwrap();
    net.nodes[1].core.poll(net.now);
    let (_, datagram) = net.nodes[1].core.poll_transmit().expect("data datagram");
    net.nodes[0].core.receive_datagram(net.now, from, &datagram);
    let before = net.nodes[0].core.drops().clone();
    net.nodes[0].core.receive_datagram(net.now, from, &datagram);
    assert_eq!(
        net.nodes[0].core.drops().failed_authentication,
        before.failed_authentication + 1,
        "replay accepted"
    );
    // Truncated copies of it: each counted once, under a reason.
    let total = |d: &kakuremichi_netstack::peer::DropCounters| -> u64 {
        d.by_reason().iter().map(|(_, n)| n).sum()
    };
    let before = total(net.nodes[0].core.drops());
    for cut in [1, 16, 31, datagram.len() - 1] {
        net.nodes[0]
            .core
            .receive_datagram(net.now, from, &datagram[..cut]);
    }
    assert_eq!(total(net.nodes[0].core.drops()), before + 4);
    assert!(net.nodes[0].core.drops().not_wireguard >= 3);
    // The session still works.
    assert_eq!(
        transfer(&mut net, (1, client), (0, server), b"still fine"),
        b"hellostill fine"
    );
}

#[test]
fn peer_endpoint_follows_nat_rebinding() {
    let mut net = Net::star(2);
    let (client, server) = connect_and_accept(&mut net, 1, 0, 20000);
    let rebound: SocketAddr = "198.51.100.9:40001".parse().unwrap();
    net.nat[1] = Some(rebound);
    transfer(&mut net, (1, client), (0, server), b"from a new port");
    assert_eq!(net.nodes[0].core.peer_stats()[0].endpoint, Some(rebound));
}

#[test]
fn handshake_flood_gets_cookies() {
    let mut net = Net::star(2);
    let attacker: SocketAddr = "203.0.113.66:9999".parse().unwrap();
    // Valid initiations from a real peer key, replayed many times from one address.
    let mut initiations = Vec::new();
    for _ in 0..300 {
        let mut other = Core::new(net.nodes[1].key, 1, Instant::ZERO);
        other.set_address(net.nodes[1].ip, 16);
        other.set_peers(&[net.spec(0, true)]);
        other
            .tcp_connect(SocketAddrV4::new(net.nodes[0].ip, 1))
            .unwrap();
        other.poll(Instant::ZERO);
        initiations.push(other.poll_transmit().unwrap().1);
    }
    let hub = &mut net.nodes[0].core;
    let mut cookies = 0;
    for init in &initiations {
        hub.receive_datagram(Instant::ZERO, attacker, init);
        while let Some((to, reply)) = hub.poll_transmit() {
            assert_eq!(to, attacker);
            if reply[0] == 3 {
                cookies += 1;
            }
        }
    }
    assert!(cookies > 0, "no cookie replies under a handshake flood");
}

#[test]
fn a_first_handshake_dropped_by_a_peer_not_yet_configured_is_retried_within_a_second() {
    let mut net = Net::new(2);
    // The spoke learns of the hub first and says hello at once; the hub does not know the
    // spoke yet and drops it (what happens when Control adds both to each other).
    let hub = PeerSpec {
        persistent_keepalive: Some(25),
        ..net.spec(0, true)
    };
    net.nodes[1].core.set_peers(&[hub]);
    net.step();
    assert!(
        net.nodes[0].core.drops().unknown_peer >= 1,
        "the first hello was dropped"
    );
    let spoke = net.spec(1, false);
    net.nodes[0].core.set_peers(&[spoke]);
    // WireGuard's own retry comes after 5 s; the first-contact retries must beat 1.5 s.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(1500) {
        for node in &mut net.nodes {
            node.core.update_timers(false);
        }
        net.step();
        if net.nodes[1].core.peer_stats()[0].since_handshake.is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("no handshake 1.5 s after both sides knew each other");
}
