//! WireGuard over TCP when a network drops UDP to a gateway, and back to UDP when it
//! passes again.
//!
//! Per gateway, [`Path`] decides from the WireGuard session (plain data, time passed in): no
//! session over UDP for a while means UDP is blocked. A session counts only while the
//! gateway answers a connection to its overlay health port now and then: a session can look
//! current for minutes after UDP (or a TCP carrier) stopped passing. On TCP, a handshake sent over
//! UDP now and then tells whether UDP works again (its answer moves the peer's endpoint
//! back, so nothing stops while it is tried). [`Fallback`] runs the TCP carriers (see
//! `kakuremichi_nodelink::tcp_carrier`) and gives the stack each gateway's endpoint: its
//! UDP address, or the loopback socket of its carrier.

use kakuremichi_netstack::{PeerSpec, PeerStats, Stack};
use kakuremichi_nodelink::tcp_carrier;
use kakuremichi_proto::messages::HEALTH_PORT;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When to fall back and when to try UDP again.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// No session with a gateway over UDP for this long: carry WireGuard over TCP.
    pub after: Duration,
    /// On TCP, try UDP this often.
    pub retry_udp: Duration,
    /// Check this often that the gateway still answers through the session.
    pub check_every: Duration,
}

/// A check unanswered this long means the path stopped passing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the paths are looked at.
pub const TICK: Duration = Duration::from_millis(250);
/// A carrier that ended is not reopened sooner than this.
const CARRIER_RESTART: Duration = Duration::from_secs(2);
/// A carrier through which the gateway stopped answering is replaced only once it is this
/// old: a new one may take a connect timeout over TCP and another over TLS to open.
const CARRIER_STALLED: Duration = Duration::from_secs(15);

/// What to do about one gateway's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Stay,
    /// Open a TCP carrier and send the gateway's datagrams through it.
    UseTcp,
    /// Send a handshake over UDP to see whether UDP passes again.
    ProbeUdp,
    /// UDP answered: send over UDP again and close the carrier.
    BackToUdp,
}

/// One gateway's path: UDP, or TCP since the fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Over UDP; since when without a session, if it has none.
    Udp { waiting_since: Option<Instant> },
    /// Over TCP; when UDP was last tried.
    Tcp { last_probe: Instant },
}

impl Default for Path {
    fn default() -> Self {
        Path::Udp {
            waiting_since: None,
        }
    }
}

impl Path {
    /// The next step, given whether the gateway has a live session and whether its
    /// endpoint is its UDP address (a probe's answer moves it there).
    pub fn step(&mut self, now: Instant, session_up: bool, on_udp: bool, timing: Timing) -> Step {
        match self {
            Path::Udp { waiting_since } => {
                if session_up {
                    *waiting_since = None;
                    return Step::Stay;
                }
                let since = *waiting_since.get_or_insert(now);
                if now.duration_since(since) < timing.after {
                    return Step::Stay;
                }
                *self = Path::Tcp { last_probe: now };
                Step::UseTcp
            }
            Path::Tcp { last_probe } => {
                if session_up && on_udp {
                    *self = Path::Udp {
                        waiting_since: None,
                    };
                    return Step::BackToUdp;
                }
                // Without a session over TCP either, UDP is as likely to work: try it sooner.
                let wait = match session_up {
                    true => timing.retry_udp,
                    false => timing.after,
                };
                if now.duration_since(*last_probe) < wait {
                    return Step::Stay;
                }
                *last_probe = now;
                Step::ProbeUdp
            }
        }
    }
}

/// A TCP carrier to one gateway.
struct Carrier {
    /// The loopback socket the stack sends the gateway's datagrams to.
    local: SocketAddr,
    started: Instant,
    /// What the carrier's task reached: [`Carried::Connecting`] until then.
    carried: Arc<AtomicU8>,
    task: smol::Task<()>,
}

/// How a gateway's WireGuard datagrams travel, for status and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Carried {
    Udp,
    /// A carrier is being opened.
    Connecting,
    Tcp,
    /// TLS to the gateway's HTTPS port: the network lets only HTTPS out.
    Tls,
}

impl Carried {
    pub fn as_str(self) -> &'static str {
        match self {
            Carried::Udp => "udp",
            Carried::Connecting => "connecting",
            Carried::Tcp => "tcp",
            Carried::Tls => "tls",
        }
    }

    fn load(cell: &AtomicU8) -> Carried {
        match cell.load(Ordering::Relaxed) {
            n if n == Carried::Tcp as u8 => Carried::Tcp,
            n if n == Carried::Tls as u8 => Carried::Tls,
            _ => Carried::Connecting,
        }
    }
}

#[derive(Default)]
struct Gateway {
    path: Path,
    carrier: Option<Carrier>,
    /// A connection to the gateway's health port in flight, and when it started.
    check: Option<(Instant, smol::Task<bool>)>,
    last_check: Option<Instant>,
    /// The last check went unanswered: the session does not count.
    unanswered: bool,
}

/// Every gateway's path, and the carriers of those on TCP.
pub struct Fallback {
    stack: Stack,
    timing: Timing,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The peers as the snapshot says, endpoints on UDP.
    base: Vec<PeerSpec>,
    /// Gateways' public HTTPS ports, where WireGuard over TLS is the last resort.
    https_ports: HashMap<[u8; 32], u16>,
    gateways: HashMap<[u8; 32], Gateway>,
}

impl Fallback {
    /// Every gateway on UDP until it proves blocked.
    pub fn new(stack: Stack, timing: Timing) -> Self {
        Fallback {
            stack,
            timing,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain maps and task handles, never left half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New peers from a snapshot: what the stack should get, endpoints of gateways on TCP
    /// replaced by their carriers. A gateway that restarted or moved starts over on UDP:
    /// whatever blocked the old one may not block it.
    pub fn set_peers(
        &self,
        peers: Vec<PeerSpec>,
        https_ports: HashMap<[u8; 32], u16>,
    ) -> Vec<PeerSpec> {
        let mut state = self.state();
        state.https_ports = https_ports;
        let State { base, gateways, .. } = &mut *state;
        gateways.retain(|key, _| {
            let old = base.iter().find(|p| p.public_key == *key);
            let new = peers.iter().find(|p| p.public_key == *key);
            matches!((old, new), (Some(old), Some(new))
                if old.incarnation == new.incarnation && old.endpoint == new.endpoint)
        });
        state.base = peers;
        state.effective()
    }

    /// How each gateway is reached now, by its UDP address, for status and metrics.
    pub fn paths(&self) -> Vec<(SocketAddr, Carried)> {
        let state = self.state();
        let carried =
            |key: &[u8; 32]| match state.gateways.get(key).and_then(|g| g.carrier.as_ref()) {
                Some(carrier) => Carried::load(&carrier.carried),
                None => Carried::Udp,
            };
        (state.base.iter())
            .filter_map(|p| Some((p.endpoint?, carried(&p.public_key))))
            .collect()
    }

    /// Look at every path each [`TICK`], forever.
    pub async fn run(&self) {
        loop {
            async_io::Timer::after(TICK).await;
            self.tick(Instant::now());
        }
    }

    fn tick(&self, now: Instant) {
        let stats: HashMap<[u8; 32], PeerStats> = self
            .stack
            .peer_stats()
            .into_iter()
            .map(|s| (s.public_key, s))
            .collect();
        let mut state = self.state();
        let mut changed = false;
        let State {
            base,
            https_ports,
            gateways,
        } = &mut *state;
        for spec in base.iter() {
            let Some(udp) = spec.endpoint else {
                continue;
            };
            let stat = stats.get(&spec.public_key);
            let tls =
                (https_ports.get(&spec.public_key)).map(|port| SocketAddr::new(udp.ip(), *port));
            let on_udp = stat.and_then(|s| s.endpoint) == Some(udp);
            let gateway = gateways.entry(spec.public_key).or_default();
            let session_up = stat.is_some_and(PeerStats::is_up);
            if session_up {
                self.check_path(gateway, spec, now);
            }
            let session_up = session_up && !gateway.unanswered;
            match gateway.path.step(now, session_up, on_udp, self.timing) {
                Step::UseTcp => {
                    log::warn!(
                        "gateway {udp}: no WireGuard session over UDP; carrying it over TCP"
                    );
                    gateway.carrier = self.open_carrier(udp, tls, now);
                    (gateway.check, gateway.unanswered) = (None, false);
                    changed = true;
                }
                Step::ProbeUdp => {
                    log::debug!("gateway {udp}: trying UDP again");
                    self.stack.probe_handshake(&spec.public_key, udp);
                }
                Step::BackToUdp => {
                    log::info!("gateway {udp}: UDP answers again; TCP carrier closed");
                    gateway.carrier = None;
                    changed = true;
                }
                Step::Stay => {
                    // A carrier that ended, or one through which the gateway stopped
                    // answering (a stream a firewall now drops without a word), is replaced.
                    let ended = gateway.carrier.as_ref().is_some_and(|c| {
                        let age = now.duration_since(c.started);
                        (c.task.is_finished() && age >= CARRIER_RESTART)
                            || (gateway.unanswered && age >= CARRIER_STALLED)
                    });
                    if ended {
                        if gateway.unanswered {
                            log::warn!(
                                "gateway {udp}: no answer through the carrier; opening another"
                            );
                        }
                        gateway.unanswered = false;
                        gateway.carrier = self.open_carrier(udp, tls, now);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.stack.set_peers(&state.effective());
        }
    }

    /// Collect a finished check of the gateway's health port, and start the next when due.
    /// A refused connection answers too: something came back through the session.
    fn check_path(&self, gateway: &mut Gateway, spec: &PeerSpec, now: Instant) {
        if let Some((started, task)) = gateway.check.take() {
            if !task.is_finished() {
                gateway.check = Some((started, task));
                return;
            }
            gateway.unanswered = !futures_lite::future::block_on(task);
            if gateway.unanswered {
                log::warn!(
                    "gateway {}: no answer through the WireGuard session for {:?}",
                    spec.overlay_ip,
                    now.duration_since(started)
                );
            }
        }
        if gateway
            .last_check
            .is_some_and(|last| now.duration_since(last) < self.timing.check_every)
        {
            return;
        }
        gateway.last_check = Some(now);
        let stack = self.stack.clone();
        let health = std::net::SocketAddrV4::new(spec.overlay_ip, HEALTH_PORT);
        let task = kakuremichi_rt::spawn(async move {
            let reached = async {
                match stack.connect(health).await {
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                }
            };
            let silent = async {
                async_io::Timer::after(CHECK_TIMEOUT).await;
                false
            };
            futures_lite::future::or(reached, silent).await
        });
        gateway.check = Some((now, task));
    }

    /// A carrier to the gateway whose WireGuard socket is at `udp`: the same port over TCP,
    /// or else TLS to `tls` (its HTTPS port); `None` if no loopback socket could be made (logged; retried next tick).
    fn open_carrier(
        &self,
        udp: SocketAddr,
        tls: Option<SocketAddr>,
        now: Instant,
    ) -> Option<Carrier> {
        let wireguard = tcp_carrier::local_wireguard_addr(self.stack.local_addr());
        let socket = tcp_carrier::loopback_socket_for(wireguard)
            .and_then(|s| Ok((s.get_ref().local_addr()?, s)));
        let (local, socket) = match socket {
            Ok(made) => made,
            Err(e) => {
                log::warn!("gateway {udp}: no loopback socket for a TCP carrier: {e}");
                return None;
            }
        };
        let carried = Arc::new(AtomicU8::new(Carried::Connecting as u8));
        let reached = carried.clone();
        let task = kakuremichi_rt::spawn(async move {
            let timeout = kakuremichi_netstack::stack::CONNECT_TIMEOUT;
            let idle = tcp_carrier::IDLE_TIMEOUT;
            let ended = match (tcp_carrier::connect_tcp(udp, timeout).await, tls) {
                (Ok(stream), _) => {
                    reached.store(Carried::Tcp as u8, Ordering::Relaxed);
                    tcp_carrier::pump(stream, socket, idle).await
                }
                // Networks that drop UDP often let only HTTPS through.
                (Err(tcp), Some(tls)) => match tcp_carrier::connect_tls(tls, timeout).await {
                    Ok(stream) => {
                        log::warn!("gateway {udp}: TCP refused ({tcp}); carrying WireGuard over TLS to {tls}");
                        reached.store(Carried::Tls as u8, Ordering::Relaxed);
                        tcp_carrier::pump(stream, socket, idle).await
                    }
                    Err(e) => Err(e),
                },
                (Err(e), None) => Err(e),
            };
            reached.store(Carried::Connecting as u8, Ordering::Relaxed);
            log::warn!("gateway {udp}: TCP carrier ended: {ended:?}");
        });
        Some(Carrier {
            local,
            started: now,
            carried,
            task,
        })
    }
}

impl State {
    fn effective(&self) -> Vec<PeerSpec> {
        self.base
            .iter()
            .map(|spec| {
                let carrier = self
                    .gateways
                    .get(&spec.public_key)
                    .and_then(|g| g.carrier.as_ref());
                PeerSpec {
                    endpoint: carrier.map(|c| c.local).or(spec.endpoint),
                    ..spec.clone()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        after: Duration::from_secs(4),
        retry_udp: Duration::from_secs(30),
        check_every: Duration::from_secs(10),
    };

    #[test]
    fn a_gateway_without_a_session_over_udp_moves_to_tcp_and_back_when_udp_answers() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut path = Path::default();
        // Sessions come and go on UDP without a fallback as long as each gap is short.
        for cycle in 0..10u64 {
            let t = cycle * 5_000;
            assert_eq!(path.step(at(t), false, true, TIMING), Step::Stay);
            assert_eq!(path.step(at(t + 3_900), false, true, TIMING), Step::Stay);
            assert_eq!(path.step(at(t + 4_000), true, true, TIMING), Step::Stay);
        }
        // No session for `after`: TCP.
        let t = 60_000;
        assert_eq!(path.step(at(t), false, true, TIMING), Step::Stay);
        assert_eq!(path.step(at(t + 4_000), false, true, TIMING), Step::UseTcp);
        // On TCP with a session: UDP is tried every `retry_udp`, many periods over.
        let mut probes = 0;
        for ms in (t + 4_250..t + 4_000 + 10 * 30_000).step_by(250) {
            match path.step(at(ms), true, false, TIMING) {
                Step::ProbeUdp => probes += 1,
                Step::Stay => {}
                other => panic!("{other:?} at {ms}"),
            }
        }
        assert_eq!(probes, 9);
        // A probe was answered: the endpoint is UDP again.
        let back = t + 4_000 + 10 * 30_000;
        assert_eq!(path.step(at(back), true, true, TIMING), Step::BackToUdp);
        assert_eq!(
            path,
            Path::Udp {
                waiting_since: None
            }
        );
    }

    #[test]
    fn on_tcp_a_lost_session_keeps_trying_udp_and_does_not_go_back_without_one() {
        let start = Instant::now();
        let mut path = Path::Tcp { last_probe: start };
        // The endpoint reads UDP but no session: not back yet.
        assert_eq!(
            path.step(start + Duration::from_secs(1), false, true, TIMING),
            Step::Stay
        );
        // No session over TCP either: UDP is tried every `after`, not every `retry_udp`.
        assert_eq!(
            path.step(start + Duration::from_secs(4), false, false, TIMING),
            Step::ProbeUdp
        );
        assert_eq!(
            path.step(start + Duration::from_secs(5), true, false, TIMING),
            Step::Stay
        );
        assert_eq!(
            path.step(start + Duration::from_secs(34), true, false, TIMING),
            Step::ProbeUdp
        );
    }
}
