//! The WireGuard peer table: which peer a datagram belongs to, which peer an IP packet goes
//! to, and each peer's boringtun session. No sockets and no clocks beyond boringtun's own.

use crate::pool::PacketPool;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Handshake initiations per second (over all peers) before cookies are demanded.
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// Room for the largest datagram or decrypted packet, and for boringtun's 148-byte minimum.
const SCRATCH_BYTES: usize = 65_536 + 148;
/// Outgoing datagrams queued before new ones are dropped (the network, not memory, absorbs
/// bursts beyond this).
const MAX_QUEUED_DATAGRAMS: usize = 4096;
/// WireGuard message type of a cookie reply (the first byte of the message).
const COOKIE_REPLY_TYPE: u8 = 3;
/// A session older than this without a fresh handshake no longer counts as up
/// (WireGuard's reject-after-time).
const SESSION_LIFETIME: Duration = Duration::from_secs(180);
/// When a first handshake is sent again, counted from the first, until one completes; after
/// these, boringtun's own 5 s retry takes over. Control adds two nodes to each other at
/// nearly the same moment, and an initiation that reaches the other side just before it
/// knows us is dropped: waiting 5 s for the retry made a re-enabled node look down.
const FIRST_CONTACT_RETRIES: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
];

/// The public key that goes with a private key.
pub fn public_key_of(private_key: &[u8; 32]) -> [u8; 32] {
    x25519::PublicKey::from(&x25519::StaticSecret::from(*private_key)).to_bytes()
}

/// What a peer should be: its key, its single allowed overlay address, where to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's static public key.
    pub public_key: [u8; 32],
    /// The peer's overlay address: the only source accepted from it and the only destination
    /// routed to it (AllowedIPs = this /32).
    pub overlay_ip: Ipv4Addr,
    /// Where to send datagrams; `None` until the peer's handshake tells us (roaming).
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives that keep a NAT mapping open, if any.
    pub persistent_keepalive: Option<u16>,
    /// Which run of the peer's process this is; a new value drops the old session.
    pub incarnation: u64,
}

/// What one peer has done, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's public key.
    pub public_key: [u8; 32],
    /// Where its datagrams come from now.
    pub endpoint: Option<SocketAddr>,
    /// Time since the last completed handshake.
    pub since_handshake: Option<Duration>,
    /// Bytes of IP packets received from it.
    pub rx_bytes: u64,
    /// Bytes of IP packets sent to it.
    pub tx_bytes: u64,
}

impl PeerStats {
    /// Whether the peer has a current session.
    pub fn is_up(&self) -> bool {
        self.since_handshake.is_some_and(|t| t < SESSION_LIFETIME)
    }
}

struct Peer {
    spec: PeerSpec,
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    /// While a first handshake has not completed: when it was sent, and how many of
    /// [`FIRST_CONTACT_RETRIES`] went out since.
    first_contact: Option<(Instant, usize)>,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// Counters of what the table refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Datagrams that do not parse as WireGuard messages (garbage, scans).
    pub not_wireguard: u64,
    /// WireGuard messages for a key or session index this node does not know.
    pub unknown_peer: u64,
    /// Messages that failed a MAC, decryption or replay check.
    pub failed_authentication: u64,
    /// Handshake initiations answered with a cookie instead (handshake flood protection).
    pub rate_limited: u64,
    /// Decrypted packets whose source is outside the sending peer's AllowedIPs.
    pub spoofed_sources: u64,
    /// IP packets for an address no peer owns.
    pub no_route: u64,
    /// Datagrams dropped because the outgoing queue was full.
    pub queue_full: u64,
}

/// All WireGuard peers of one node.
pub struct PeerTable {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    rate_limiter: Arc<RateLimiter>,
    peers: HashMap<u32, Peer>,
    index_by_key: HashMap<[u8; 32], u32>,
    index_by_ip: HashMap<Ipv4Addr, u32>,
    next_index: u32,
    scratch: Vec<u8>,
    /// Buffers for datagrams and decrypted packets.
    pub pool: PacketPool,
    /// Datagrams to send, with their destination.
    pub to_network: VecDeque<(SocketAddr, Vec<u8>)>,
    /// What was refused.
    pub drops: DropCounters,
}

impl DropCounters {
    /// Each counter with the reason label `/metrics` gives it.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("not_wireguard", self.not_wireguard),
            ("unknown_peer", self.unknown_peer),
            ("failed_authentication", self.failed_authentication),
            ("rate_limited", self.rate_limited),
            ("spoofed_source", self.spoofed_sources),
            ("no_route", self.no_route),
            ("queue_full", self.queue_full),
        ]
    }
}

impl PeerTable {
    /// An empty table for a node with this private key.
    pub fn new(private_key: [u8; 32]) -> Self {
        let secret = x25519::StaticSecret::from(private_key);
        let public = x25519::PublicKey::from(&secret);
        PeerTable {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            secret,
            public,
            peers: HashMap::new(),
            index_by_key: HashMap::new(),
            index_by_ip: HashMap::new(),
            next_index: 1,
            scratch: vec![0; SCRATCH_BYTES],
            pool: PacketPool::default(),
            to_network: VecDeque::new(),
            drops: DropCounters::default(),
        }
    }

    /// Make the table hold exactly these peers. Peers that stay keep their sessions and
    /// roamed endpoints; a changed configured endpoint replaces the roamed one.
    pub fn set_peers(&mut self, specs: &[PeerSpec]) {
        let wanted: HashMap<[u8; 32], &PeerSpec> =
            specs.iter().map(|s| (s.public_key, s)).collect();
        self.peers
            .retain(|_, peer| wanted.contains_key(&peer.spec.public_key));
        self.index_by_key.retain(|key, _| wanted.contains_key(key));
        for spec in specs {
            match self.index_by_key.get(&spec.public_key).copied() {
                Some(index) => {
                    let Some(peer) = self.peers.get_mut(&index) else {
                        continue;
                    };
                    if spec.endpoint.is_some() && spec.endpoint != peer.spec.endpoint {
                        peer.endpoint = spec.endpoint;
                    }
                    // A restarted peer lost its sessions; ours may already be with its new
                    // process, so start a new handshake rather than drop the session.
                    let restarted = peer.spec.incarnation != spec.incarnation;
                    peer.spec = spec.clone();
                    let has_session = peer
                        .tunn
                        .time_since_last_handshake()
                        .is_some_and(|t| t < SESSION_LIFETIME);
                    if restarted || (spec.persistent_keepalive.is_some() && !has_session) {
                        self.initiate_handshake(index, true);
                    }
                }
                None => {
                    let index = self.allocate_index();
                    let tunn = Tunn::new(
                        self.secret.clone(),
                        x25519::PublicKey::from(spec.public_key),
                        None,
                        spec.persistent_keepalive,
                        index,
                        Some(self.rate_limiter.clone()),
                    );
                    self.peers.insert(
                        index,
                        Peer {
                            spec: spec.clone(),
                            tunn,
                            endpoint: spec.endpoint,
                            first_contact: None,
                            rx_bytes: 0,
                            tx_bytes: 0,
                        },
                    );
                    self.index_by_key.insert(spec.public_key, index);
                    if spec.persistent_keepalive.is_some() {
                        // Like wg(8): a peer with persistent keepalive is contacted at once, so
                        // the far side learns our endpoint before it has anything to send.
                        self.initiate_handshake(index, false);
                    }
                }
            }
        }
        self.index_by_ip = self
            .peers
            .iter()
            .map(|(i, p)| (p.spec.overlay_ip, *i))
            .collect();
    }

    fn initiate_handshake(&mut self, index: u32, force: bool) {
        self.send_initiation(index, force, None);
    }

    /// Send the peer a fresh handshake initiation at `to`, leaving its endpoint alone: the
    /// answer, authenticated, moves the endpoint to where it came from. `false` for an
    /// unknown peer.
    pub fn probe_handshake(&mut self, public_key: &[u8; 32], to: SocketAddr) -> bool {
        match self.index_by_key.get(public_key).copied() {
            Some(index) => self.send_initiation(index, true, Some(to)),
            None => false,
        }
    }

    /// Queue a handshake initiation for peer `index` to `to`, or else to its endpoint (a
    /// first contact then, retried on [`FIRST_CONTACT_RETRIES`]). `false` for no such peer.
    fn send_initiation(&mut self, index: u32, force: bool, to: Option<SocketAddr>) -> bool {
        let PeerTable {
            peers,
            scratch,
            to_network,
            drops,
            pool,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&index) else {
            return false;
        };
        let Some(destination) = to.or(peer.endpoint) else {
            return true;
        };
        log::debug!(
            "peer {}: initiating handshake to {destination}",
            short(&peer.spec.public_key)
        );
        if let TunnResult::WriteToNetwork(out) =
            peer.tunn.format_handshake_initiation(scratch, force)
        {
            push_bounded(to_network, drops, pool, destination, out);
            if to.is_none() {
                peer.first_contact.get_or_insert((Instant::now(), 0));
            }
        }
        true
    }

    fn allocate_index(&mut self) -> u32 {
        // boringtun shifts the index left by 8 bits for session ids: keep it within 24 bits.
        loop {
            let index = self.next_index;
            self.next_index = (self.next_index % 0x00ff_ffff) + 1;
            if !self.peers.contains_key(&index) {
                return index;
            }
        }
    }

    /// Whether some peer owns this overlay address.
    pub fn has_route(&self, ip: Ipv4Addr) -> bool {
        self.index_by_ip.contains_key(&ip)
    }

    /// Handle one datagram from the network; decrypted IP packets go to `to_stack`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        to_stack: &mut VecDeque<Vec<u8>>,
    ) {
        let Some(index) = self.peer_index_for(from, datagram) else {
            return;
        };
        let PeerTable {
            peers,
            scratch,
            to_network,
            drops,
            pool,
            ..
        } = self;
        let Some(peer) = peers.get_mut(&index) else {
            drops.unknown_peer += 1;
            return;
        };
        let mut first = true;
        loop {
            let result = if first {
                peer.tunn.decapsulate(Some(from.ip()), datagram, scratch)
            } else {
                // Drains packets boringtun queued while the handshake was in flight.
                peer.tunn.decapsulate(None, &[], scratch)
            };
            let authenticated = match &result {
                TunnResult::Err(_) => false,
                TunnResult::WriteToNetwork(out) => out.first() != Some(&COOKIE_REPLY_TYPE),
                _ => true,
            };
            if first && authenticated && peer.endpoint != Some(from) {
                log::debug!("peer {}: endpoint now {from}", short(&peer.spec.public_key));
                peer.endpoint = Some(from);
            }
            first = false;
            match result {
                TunnResult::WriteToNetwork(out) => {
                    if let Some(endpoint) = peer.endpoint.or(Some(from)) {
                        push_bounded(to_network, drops, pool, endpoint, out);
                    }
                }
                TunnResult::WriteToTunnelV4(packet, source) => {
                    if source == peer.spec.overlay_ip {
                        peer.rx_bytes += packet.len() as u64;
                        to_stack.push_back(pool.copy_of(packet));
                    } else {
                        drops.spoofed_sources += 1;
                    }
                    return;
                }
                TunnResult::WriteToTunnelV6(..) => {
                    drops.spoofed_sources += 1;
                    return;
                }
                TunnResult::Err(e) => {
                    log::debug!(
                        "peer {}: datagram from {from} refused: {e:?}",
                        short(&peer.spec.public_key)
                    );
                    drops.failed_authentication += 1;
                    return;
                }
                TunnResult::Done => return,
            }
        }
    }

    /// Which peer a datagram claims to be from. Handshake initiations are rate limited and
    /// their MAC checked before the Diffie-Hellman that reveals the sender's key.
    fn peer_index_for(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<u32> {
        let index = match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(init)) => {
                match self
                    .rate_limiter
                    .verify_packet(Some(from.ip()), datagram, &mut self.scratch)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        self.drops.rate_limited += 1;
                        push_bounded(
                            &mut self.to_network,
                            &mut self.drops,
                            &mut self.pool,
                            from,
                            cookie,
                        );
                        return None;
                    }
                    Err(_) => {
                        self.drops.failed_authentication += 1;
                        return None;
                    }
                }
                let index = parse_handshake_anon(&self.secret, &self.public, &init)
                    .ok()
                    .and_then(|half| self.index_by_key.get(&half.peer_static_public).copied());
                if index.is_none() {
                    self.drops.unknown_peer += 1;
                }
                index
            }
            Ok(Packet::HandshakeResponse(p)) => Some(p.receiver_idx >> 8),
            Ok(Packet::PacketCookieReply(p)) => Some(p.receiver_idx >> 8),
            Ok(Packet::PacketData(p)) => Some(p.receiver_idx >> 8),
            Err(_) => {
                self.drops.not_wireguard += 1;
                None
            }
        };
        index
    }

    /// Encrypt one IP packet for the peer that owns its destination address.
    pub fn send_packet(&mut self, packet: &[u8]) {
        let Some(destination) = ipv4_destination(packet) else {
            self.drops.no_route += 1;
            return;
        };
        let Some(peer) = self
            .index_by_ip
            .get(&destination)
            .and_then(|i| self.peers.get_mut(i))
        else {
            self.drops.no_route += 1;
            return;
        };
        if let TunnResult::WriteToNetwork(out) = peer.tunn.encapsulate(packet, &mut self.scratch) {
            peer.tx_bytes += packet.len() as u64;
            if let Some(endpoint) = peer.endpoint {
                push_bounded(
                    &mut self.to_network,
                    &mut self.drops,
                    &mut self.pool,
                    endpoint,
                    out,
                );
            }
        }
    }

    /// Run every peer's handshake, rekey and keepalive timers. Call about every 250 ms;
    /// `new_second` also resets the handshake rate limiter's count.
    pub fn update_timers(&mut self, new_second: bool) {
        if new_second {
            self.rate_limiter.reset_count();
        }
        let PeerTable {
            peers,
            scratch,
            to_network,
            drops,
            pool,
            ..
        } = self;
        for peer in peers.values_mut() {
            if let TunnResult::WriteToNetwork(out) = peer.tunn.update_timers(scratch) {
                if let Some(endpoint) = peer.endpoint {
                    push_bounded(to_network, drops, pool, endpoint, out);
                }
            }
            let Some((sent, retries)) = peer.first_contact else {
                continue;
            };
            let connected = peer
                .tunn
                .time_since_last_handshake()
                .is_some_and(|t| t < SESSION_LIFETIME);
            match FIRST_CONTACT_RETRIES.get(retries) {
                Some(after) if !connected => {
                    if sent.elapsed() < *after {
                        continue;
                    }
                    peer.first_contact = Some((sent, retries + 1));
                    if let (Some(endpoint), TunnResult::WriteToNetwork(out)) = (
                        peer.endpoint,
                        peer.tunn.format_handshake_initiation(scratch, true),
                    ) {
                        push_bounded(to_network, drops, pool, endpoint, out);
                    }
                }
                _ => peer.first_contact = None,
            }
        }
    }

    /// Per-peer counters.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.peers
            .values()
            .map(|p| PeerStats {
                public_key: p.spec.public_key,
                endpoint: p.endpoint,
                since_handshake: p.tunn.time_since_last_handshake(),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect()
    }
}

/// The start of a key in base64-free hex, enough to tell peers apart in logs.
fn short(key: &[u8; 32]) -> String {
    key[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn push_bounded(
    queue: &mut VecDeque<(SocketAddr, Vec<u8>)>,
    drops: &mut DropCounters,
    pool: &mut PacketPool,
    to: SocketAddr,
    datagram: &[u8],
) {
    if queue.len() < MAX_QUEUED_DATAGRAMS {
        queue.push_back((to, pool.copy_of(datagram)));
    } else {
        drops.queue_full += 1;
    }
}

/// The destination of an IPv4 packet, if it is one.
pub fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    Some(Ipv4Addr::new(
        packet[16], packet[17], packet[18], packet[19],
    ))
}
