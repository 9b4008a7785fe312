//! Agent replicas: which of a tunnel's agents take new connections.
//!
//! A tunnel may be served by several agents on the same service port. The gateway probes
//! each agent that is one of several (on [`HEALTH_PORT`], which every agent accepts)
//! and keeps the answers in [`ReplicaHealth`], plain data: connections go to the live agents
//! in turn, and to the others only when none is live (a probe may be wrong; a request should
//! still get its chance). [`AgentDialer`] is the I/O edge that dials in that order.

use futures_lite::future;
use kakuremichi_netstack::{Stack, TcpStream};
use kakuremichi_proto::messages::{Upstream, HEALTH_PORT};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The longest a dial to one of several agents waits before the next agent is tried.
/// Nothing was sent yet, so moving on is safe; an agent that died keeps requests waiting
/// at most this long (less where its probes say the link is quick, see
/// [`ReplicaHealth::patience`]) instead of the stack's own connect timeout (5 s) until its
/// probe marks it down.
pub const REPLICA_PATIENCE: Duration = Duration::from_secs(1);

/// The least time a dial or probe waits for an agent, however quick its probes were: a
/// moment's delay on a busy gateway is no reason to call an agent gone (a missed probe ends
/// the requests waiting on it).
pub const PATIENCE_FLOOR: Duration = Duration::from_millis(300);

/// How the gateway watches replicas.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSettings {
    /// Time between probes of each watched agent.
    pub interval: Duration,
    /// A probe unanswered this long marks the agent down; less where the agent's probes
    /// answer quickly (see [`ReplicaHealth::patience`]).
    pub timeout: Duration,
}

/// What the probes found, per agent overlay address.
#[derive(Default)]
pub struct ReplicaHealth {
    table: Mutex<Table>,
    /// Rotates the first choice among live agents.
    turn: AtomicUsize,
    /// Wakes [`ReplicaHealth::until_probed_down`] when a probe finds an agent gone.
    probed_down: event_listener::Event,
}

#[derive(Default)]
struct Table {
    /// Agents that serve some tunnel together with another agent.
    watched: HashSet<Ipv4Addr>,
    /// Whether each watched agent is believed live, from its probes and from dials to it
    /// (absent: not probed yet, live).
    alive: HashMap<Ipv4Addr, bool>,
    /// Whether each watched agent answered its last probe, from probes alone.
    answered: HashMap<Ipv4Addr, bool>,
    /// How many times probes found each agent gone after it had answered.
    losses: HashMap<Ipv4Addr, u64>,
    /// How long each watched agent's answered probes took.
    round_trips: HashMap<Ipv4Addr, RoundTrips>,
}

/// An agent's probe round trips, smoothed as TCP smooths its own (RFC 6298): how long to
/// wait for the agent then follows its link, so a near agent that died is found within a
/// few hundred milliseconds and a far one is not taken for dead.
#[derive(Clone, Copy, Debug, PartialEq)]
struct RoundTrips {
    smoothed: Duration,
    variation: Duration,
}

impl RoundTrips {
    fn first(sample: Duration) -> Self {
        RoundTrips {
            smoothed: sample,
            variation: sample / 2,
        }
    }

    fn add(&mut self, sample: Duration) {
        let deviation = self.smoothed.abs_diff(sample);
        self.variation = (self.variation * 3 + deviation) / 4;
        self.smoothed = (self.smoothed * 7 + sample) / 8;
    }

    /// How long an answer may take before the agent counts as not answering.
    fn patience(&self) -> Duration {
        self.smoothed + self.variation * 4
    }
}

impl ReplicaHealth {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Plain maps, never left half-changed.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watch exactly these agents; what is known of others is forgotten.
    pub fn watch(&self, agents: impl IntoIterator<Item = Ipv4Addr>) {
        let mut table = self.table();
        table.watched = agents.into_iter().collect();
        let Table {
            watched,
            alive,
            answered,
            round_trips,
            ..
        } = &mut *table;
        // Losses stay counted (a map as small as the overlay): a waiter compares counts.
        alive.retain(|agent, _| watched.contains(agent));
        answered.retain(|agent, _| watched.contains(agent));
        round_trips.retain(|agent, _| watched.contains(agent));
    }

    /// How long to wait for `agent` to answer a dial or probe: what its probes' round trips
    /// say, never less than [`PATIENCE_FLOOR`] and never more than `ceiling` (all of it for
    /// an agent not probed yet).
    pub fn patience(&self, agent: Ipv4Addr, ceiling: Duration) -> Duration {
        let estimate = self
            .table()
            .round_trips
            .get(&agent)
            .map(RoundTrips::patience);
        estimate.unwrap_or(ceiling).max(PATIENCE_FLOOR).min(ceiling)
    }

    /// How long a dial to `agent`, one of several, waits before the next is tried.
    pub fn dial_patience(&self, agent: Ipv4Addr) -> Duration {
        self.patience(agent, REPLICA_PATIENCE)
    }

    /// Record how long an answered probe of `agent` took.
    pub fn answered_within(&self, agent: Ipv4Addr, took: Duration) {
        let mut table = self.table();
        if !table.watched.contains(&agent) {
            return;
        }
        table
            .round_trips
            .entry(agent)
            .and_modify(|trips| trips.add(took))
            .or_insert_with(|| RoundTrips::first(took));
    }

    /// The agents to probe.
    pub fn watched(&self) -> Vec<Ipv4Addr> {
        self.table().watched.iter().copied().collect()
    }

    /// Record a probe's answer; `Some(alive)` when it changed what is known.
    pub fn report(&self, agent: Ipv4Addr, alive: bool) -> Option<bool> {
        let mut table = self.table();
        if !table.watched.contains(&agent) {
            return None;
        }
        let before = table.alive.insert(agent, alive).unwrap_or(true);
        (before != alive).then_some(alive)
    }

    /// Record a probe's answer, as [`ReplicaHealth::report`] does; an agent that answered
    /// its last probe and not this one also ends the requests waiting on it.
    pub fn probed(&self, agent: Ipv4Addr, alive: bool) -> Option<bool> {
        let changed = self.report(agent, alive);
        let mut table = self.table();
        if !table.watched.contains(&agent) {
            return changed;
        }
        let before = table.answered.insert(agent, alive).unwrap_or(true);
        if before && !alive {
            *table.losses.entry(agent).or_default() += 1;
            drop(table);
            self.probed_down.notify(usize::MAX);
        }
        changed
    }

    /// Resolves when a probe finds `agent` gone after this call, never for an agent no
    /// probe watches: a request sent to it stops waiting for an answer that cannot come.
    /// Only probes count, not failed dials, so a busy moment ends no request.
    pub fn until_probed_down(&self, agent: Ipv4Addr) -> impl std::future::Future<Output = ()> + '_ {
        let losses = move |table: &Table| table.losses.get(&agent).copied().unwrap_or(0);
        // Counted now, not when first polled: losses from this call on end the wait.
        let start = losses(&self.table());
        async move {
            loop {
                let listener = self.probed_down.listen();
                if losses(&self.table()) != start {
                    return;
                }
                listener.await;
            }
        }
    }

    /// Whether an agent is believed live (unwatched and unprobed agents are).
    pub fn is_live(&self, agent: Ipv4Addr) -> bool {
        self.table().alive.get(&agent).copied().unwrap_or(true)
    }

    /// The order in which to try `agents`: the live ones, starting with the next in turn,
    /// then the rest.
    pub fn order(&self, agents: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        if agents.len() < 2 {
            return agents.to_vec();
        }
        let table = self.table();
        let (live, down): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) = agents
            .iter()
            .partition(|agent| table.alive.get(agent).copied().unwrap_or(true));
        drop(table);
        let mut ordered = live;
        if !ordered.is_empty() {
            let first = self.turn.fetch_add(1, Ordering::Relaxed) % ordered.len();
            ordered.rotate_left(first);
        }
        ordered.extend(down);
        ordered
    }
}

/// Connections to the agents of `tcp` and `tls` tunnels, replicas in health order.
#[derive(Clone)]
pub struct AgentDialer {
    pub stack: Stack,
    pub health: Arc<ReplicaHealth>,
}

impl AgentDialer {
    /// A connection to one of the upstream's agents: a dial that fails or times out moves on
    /// to the next (nothing was sent yet), and marks that agent down until a probe answers.
    pub async fn connect(&self, upstream: &Upstream) -> io::Result<TcpStream> {
        let mut agents = vec![upstream.agent_ip];
        agents.extend(&upstream.replica_ips);
        let mut last_error = None;
        let ordered = self.health.order(&agents);
        for (i, &agent) in ordered.iter().enumerate() {
            // The stack gives up on an unanswered dial after its CONNECT_TIMEOUT; with
            // another agent to try, after the agent's patience.
            let dial = self
                .stack
                .connect(SocketAddrV4::new(agent, upstream.service_port));
            let dialed = match i + 1 < ordered.len() {
                true => within(self.health.dial_patience(agent), dial).await,
                false => dial.await,
            };
            match dialed {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    if agents.len() > 1 && self.health.report(agent, false) == Some(false) {
                        log::warn!(
                            "tunnel {}: agent {agent} failed ({e}); trying another",
                            upstream.tunnel_id
                        );
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("the tunnel has no agent")))
    }

    /// Probe every watched agent each interval, forever; `went_down` runs for each agent
    /// that stopped answering (to drop pooled connections to it).
    pub async fn probe(
        &self,
        settings: ProbeSettings,
        went_down: impl Fn(Ipv4Addr) + Clone + Send + 'static,
    ) {
        loop {
            async_io::Timer::after(settings.interval).await;
            for agent in self.health.watched() {
                let (stack, health, went_down) =
                    (self.stack.clone(), self.health.clone(), went_down.clone());
                kakuremichi_rt::spawn(async move {
                    let patience = health.patience(agent, settings.timeout);
                    let sent = std::time::Instant::now();
                    let dial = stack.connect(SocketAddrV4::new(agent, HEALTH_PORT));
                    let answered = within(patience, dial).await.is_ok();
                    if answered {
                        health.answered_within(agent, sent.elapsed());
                    }
                    match health.probed(agent, answered) {
                        Some(true) => log::info!("replica agent {agent} answers again"),
                        Some(false) => {
                            log::warn!("replica agent {agent} stopped answering; not used");
                            went_down(agent);
                        }
                        None => {}
                    }
                })
                .detach();
            }
        }
    }
}

/// `work`, or a timeout error once `patience` has passed.
pub async fn within<T>(
    patience: Duration,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    future::or(work, async {
        async_io::Timer::after(patience).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {patience:?}"),
        ))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, last)
    }

    #[test]
    fn requests_wait_on_an_agent_until_a_probe_finds_it_gone_not_a_dial() {
        let health = ReplicaHealth::default();
        health.watch([ip(2), ip(3)]);
        let pending = |agent| {
            let mut waiting = Box::pin(health.until_probed_down(agent));
            future::block_on(future::poll_once(&mut waiting)).is_none()
        };
        let mut waiting = Box::pin(health.until_probed_down(ip(2)));
        assert!(future::block_on(future::poll_once(&mut waiting)).is_none());
        // A failed dial (a busy moment) is no reason to end a request.
        health.report(ip(2), false);
        assert!(future::block_on(future::poll_once(&mut waiting)).is_none());
        // Another agent's loss is not this one's.
        health.probed(ip(3), false);
        assert!(future::block_on(future::poll_once(&mut waiting)).is_none());
        health.probed(ip(2), false);
        assert!(future::block_on(future::poll_once(&mut waiting)).is_some());
        // Known gone already: a request sent to it anyway (no other was live) waits for the
        // next loss, not the last one.
        assert!(pending(ip(2)));
        health.probed(ip(2), false);
        assert!(pending(ip(2)), "a second missed probe is not a new loss");
        health.probed(ip(2), true);
        let mut waiting = Box::pin(health.until_probed_down(ip(2)));
        health.probed(ip(2), false);
        assert!(future::block_on(future::poll_once(&mut waiting)).is_some());
        // An agent no probe watches never ends its requests this way.
        assert!(pending(ip(9)));
        health.probed(ip(9), false);
        assert!(pending(ip(9)));
    }

    #[test]
    fn live_agents_take_turns_and_dead_ones_come_last() {
        let health = ReplicaHealth::default();
        health.watch([ip(2), ip(3), ip(4)]);
        let agents = [ip(2), ip(3), ip(4)];
        let firsts: HashSet<Ipv4Addr> = (0..3).map(|_| health.order(&agents)[0]).collect();
        assert_eq!(firsts.len(), 3, "every live agent comes first in turn");

        assert_eq!(health.report(ip(3), false), Some(false));
        assert_eq!(health.report(ip(3), false), None, "no change, no news");
        for _ in 0..6 {
            let order = health.order(&agents);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], ip(3), "the dead agent is the last resort");
        }
        assert_eq!(health.report(ip(3), true), Some(true));
        assert!(health.is_live(ip(3)));
    }

    #[test]
    fn patience_follows_the_probes_round_trips_within_its_bounds() {
        let health = ReplicaHealth::default();
        health.watch([ip(2), ip(3)]);
        let ceiling = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(
            health.patience(ip(2), ceiling),
            ceiling,
            "not probed yet: all of it"
        );
        // A near agent: its patience falls to the floor.
        for _ in 0..20 {
            health.answered_within(ip(2), ms(2));
        }
        assert_eq!(health.patience(ip(2), ceiling), PATIENCE_FLOOR);
        // A far one with jitter: smoothed plus four times the variation, above the floor.
        for took in [400, 450, 380, 420, 410, 430, 390, 405] {
            health.answered_within(ip(3), ms(took));
        }
        let far = health.patience(ip(3), ceiling);
        assert!(far > ms(450) && far < ceiling, "{far:?}");
        // A link that turns slow raises it again, up to the ceiling.
        for _ in 0..20 {
            health.answered_within(ip(2), ms(900));
        }
        assert_eq!(health.patience(ip(2), ceiling), ceiling);
        // A ceiling set below the floor wins; unwatched agents keep no round trips.
        assert_eq!(health.patience(ip(3), ms(100)), ms(100));
        health.answered_within(ip(9), ms(1));
        assert_eq!(health.patience(ip(9), ceiling), ceiling);
        health.watch([ip(3)]);
        assert_eq!(
            health.patience(ip(2), ceiling),
            ceiling,
            "forgotten when unwatched"
        );
    }

    #[test]
    fn all_dead_still_tries_them_all_and_unwatched_agents_are_forgotten() {
        let health = ReplicaHealth::default();
        health.watch([ip(2), ip(3)]);
        health.report(ip(2), false);
        health.report(ip(3), false);
        assert_eq!(health.order(&[ip(2), ip(3)]).len(), 2);
        health.watch([ip(3)]);
        assert!(health.is_live(ip(2)), "no longer watched: nothing known");
        assert_eq!(health.report(ip(2), false), None);
        assert_eq!(health.order(&[ip(9)]), vec![ip(9)]);
    }
}
