//! Traffic history: what gateways report of each tunnel, minute by minute, kept in an LMDB
//! environment of its own beside the store (`<data-dir>/traffic`), so that the reports of a
//! fleet, several writes a second, neither move the config revision nor wait behind it.
//!
//! - Minutes: one record per tunnel, minute and gateway, holding the counts of each gateway
//!   process (a restarted gateway reports the same minute again from zero). A report
//!   replaces its process's counts, so a repeated report changes nothing.
//! - Hours: minutes older than [`Retention::minutes`] are added into one record per tunnel,
//!   hour and gateway, and deleted in the same transaction; hours older than
//!   [`Retention::hours`] are deleted. That bounds what a tunnel keeps per gateway: 2,880
//!   minute records and 2,160 hour records by default.
//!
//! Reports go to a writer thread that owns the writes, batches what is waiting into one
//! transaction and does the roll-up every [`Retention::every`]. Sessions never wait for it:
//! when its queue is full a report is dropped and counted, and the gateway's next session
//! sends its kept minutes again.

pub mod series;

use crate::error::Error;
use crate::model::State;
use heed::types::Bytes;
use heed::{Database, Env};
use kakuremichi_proto::traffic::{TrafficCounts, TrafficPoint, ALL_TUNNELS, MINUTE_SECONDS};
use series::{Accumulator, Range, Series};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Table = Database<'static, Bytes, Bytes>;

/// How long points are kept, and how often minutes become hours.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Minutes of minute points kept (48 hours).
    pub minutes: u64,
    /// Minutes of hour points kept (90 days).
    pub hours: u64,
    /// How often the roll-up runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            minutes: 48 * 60,
            hours: 90 * 24 * 60,
            every: Duration::from_secs(300),
        }
    }
}

/// Reports waiting for the writer, at most.
const QUEUE: usize = 1024;
/// Gateway processes kept per minute record: more restarts than this in one minute fold
/// into the oldest.
const INSTANCES_PER_MINUTE: usize = 8;
/// Upper bound of the environment's map; pages are used as data grows.
const MAP_SIZE: usize = 16 << 30;

/// One gateway session's report.
struct Report {
    gateway: String,
    instance: u64,
    points: Vec<TrafficPoint>,
}

struct Tables {
    env: Env,
    minutes: Table,
    hours: Table,
}

/// The traffic history and its writer.
pub struct TrafficStore {
    tables: Arc<Tables>,
    queue: SyncSender<Report>,
    /// Reports dropped because the writer's queue was full.
    pub dropped: AtomicU64,
    /// Points written since start.
    pub written: Arc<AtomicU64>,
}

impl TrafficStore {
    /// Open (or create) the history in `dir` and start its writer thread, which ends when
    /// the store is dropped.
    pub fn open(dir: &Path, retention: Retention) -> Result<TrafficStore, Error> {
        let (env, tables) = crate::store::open_env(dir, MAP_SIZE, &["minutes", "hours"])?;
        let [minutes, hours] = tables[..] else {
            unreachable!("two tables were created above")
        };
        let tables = Arc::new(Tables {
            env,
            minutes,
            hours,
        });
        let (queue, reports) = sync_channel::<Report>(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let (writer, counted) = (tables.clone(), written.clone());
        std::thread::Builder::new()
            .name("traffic-writer".into())
            .spawn(move || {
                let mut next_rollup = Instant::now() + retention.every;
                loop {
                    let wait = next_rollup.saturating_duration_since(Instant::now());
                    let mut batch = match reports.recv_timeout(wait) {
                        Ok(report) => vec![report],
                        Err(RecvTimeoutError::Timeout) => Vec::new(),
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    batch.extend(reports.try_iter().take(QUEUE));
                    match writer.write(&batch) {
                        Ok(n) => _ = counted.fetch_add(n, Ordering::Relaxed),
                        Err(e) => log::warn!("traffic: {} reports not kept: {e}", batch.len()),
                    }
                    if Instant::now() >= next_rollup {
                        if let Err(e) = writer.roll_up(this_minute(), retention) {
                            log::warn!("traffic: roll-up failed: {e}");
                        }
                        next_rollup = Instant::now() + retention.every;
                    }
                }
            })
            .map_err(|e| Error::io("starting the traffic writer", e))?;
        Ok(TrafficStore {
            tables,
            queue,
            dropped: AtomicU64::new(0),
            written,
        })
    }

    /// Keep `points` from process `instance` of `gateway`, soon. Never waits.
    pub fn submit(&self, gateway: &str, instance: u64, points: Vec<TrafficPoint>) {
        let report = Report {
            gateway: gateway.to_string(),
            instance,
            points,
        };
        if self.queue.try_send(report).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The traffic of `tunnels` over `range` at `now` (a minute number), through `gateway`
    /// only, or every gateway.
    pub fn series<'a>(
        &self,
        tunnels: impl IntoIterator<Item = &'a str>,
        gateway: Option<&str>,
        range: Range,
        now: u64,
    ) -> Result<Series, Error> {
        let mut acc = Accumulator::new(range, now);
        let (from, to) = acc.minutes();
        let rtxn = self.tables.env.read_txn()?;
        for tunnel in tunnels {
            let bounds = (
                Bound::Included(key(tunnel, from, "")),
                Bound::Excluded(key(tunnel, to, "")),
            );
            let bounds = (
                bounds.0.as_ref().map(Vec::as_slice),
                bounds.1.as_ref().map(Vec::as_slice),
            );
            for table in [&self.tables.minutes, &self.tables.hours] {
                for entry in table.range(&rtxn, &bounds)? {
                    let (k, v) = entry?;
                    let Some((_, minute, from_gateway)) = parse_key(k) else {
                        continue;
                    };
                    if gateway.is_some_and(|g| g != from_gateway) {
                        continue;
                    }
                    acc.add(minute, &decode_counts(v)?);
                }
            }
        }
        Ok(acc.finish())
    }

    /// The traffic of what `scope` names in `state`, over `range` at minute `now`.
    pub fn series_of(
        &self,
        state: &State,
        scope: Scope<'_>,
        range: Range,
        now: u64,
    ) -> Result<Series, Error> {
        match scope {
            Scope::Tunnel(id) => self.series([state.tunnel(id)?.id.as_str()], None, range, now),
            Scope::Agent(id) => {
                let tunnels = state.tunnels_of_agent(id).map(|t| t.id.as_str());
                self.series(tunnels, None, range, now)
            }
            Scope::Gateway(id) => self.series([ALL_TUNNELS], Some(id), range, now),
            Scope::All => self.series([ALL_TUNNELS], None, range, now),
        }
    }

    /// What each of `tunnels` moved over the `minutes` minutes up to `now`, through every
    /// gateway; tunnels that moved nothing are left out.
    pub fn recent<'a>(
        &self,
        tunnels: impl IntoIterator<Item = &'a str>,
        minutes: u64,
        now: u64,
    ) -> Result<Vec<(String, TrafficCounts)>, Error> {
        let rtxn = self.tables.env.read_txn()?;
        let mut recent = Vec::new();
        for tunnel in tunnels {
            let (start, end) = (
                key(tunnel, now + 1 - minutes.min(now + 1), ""),
                key(tunnel, now + 1, ""),
            );
            let bounds = (
                Bound::Included(start.as_slice()),
                Bound::Excluded(end.as_slice()),
            );
            let mut sum = TrafficCounts::default();
            for entry in self.tables.minutes.range(&rtxn, &bounds)? {
                sum.add(&decode_counts(entry?.1)?);
            }
            if !sum.is_empty() {
                recent.push((tunnel.to_string(), sum));
            }
        }
        Ok(recent)
    }

    /// Records kept: (minute records, hour records), and the bytes of the environment's file.
    pub fn size(&self) -> Result<(u64, u64, u64), Error> {
        let rtxn = self.tables.env.read_txn()?;
        let minutes = self.tables.minutes.len(&rtxn)?;
        let hours = self.tables.hours.len(&rtxn)?;
        let bytes = self.tables.env.real_disk_size()?;
        Ok((minutes, hours, bytes))
    }

    /// Write `reports` now and roll up at `now` (tests pass time in).
    pub fn write_now(&self, reports: Vec<(String, u64, Vec<TrafficPoint>)>) -> Result<(), Error> {
        let reports: Vec<Report> = reports
            .into_iter()
            .map(|(gateway, instance, points)| Report {
                gateway,
                instance,
                points,
            })
            .collect();
        self.tables.write(&reports).map(|_| ())
    }

    /// Roll minutes into hours and drop what is older than `retention` at minute `now`.
    pub fn roll_up(&self, now: u64, retention: Retention) -> Result<(), Error> {
        self.tables.roll_up(now, retention)
    }
}

/// Whose traffic a series adds up.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Tunnel(&'a str),
    /// The tunnels an agent serves (with replicas, those it shares too).
    Agent(&'a str),
    /// Every tunnel (deleted ones too), through one gateway.
    Gateway(&'a str),
    /// Every tunnel (deleted ones too), through every gateway.
    All,
}

/// The minute it is now.
pub fn this_minute() -> u64 {
    kakuremichi_rt::unix_now() / MINUTE_SECONDS
}

impl Tables {
    /// Keep every point of `reports` in one transaction; returns how many were kept.
    fn write(&self, reports: &[Report]) -> Result<u64, Error> {
        if reports.is_empty() {
            return Ok(0);
        }
        let mut wtxn = self.env.write_txn()?;
        let mut kept = 0;
        for report in reports {
            for point in &report.points {
                if !point.counts.latency.is_valid() || point.tunnel_id.contains('\0') {
                    continue;
                }
                let k = key(&point.tunnel_id, point.minute, &report.gateway);
                let mut by_instance = match self.minutes.get(&wtxn, &k)? {
                    Some(v) => decode(v)?,
                    None => Vec::new(),
                };
                match by_instance.iter_mut().find(|(i, _)| *i == report.instance) {
                    Some((_, counts)) => *counts = point.counts.clone(),
                    None => by_instance.push((report.instance, point.counts.clone())),
                }
                while by_instance.len() > INSTANCES_PER_MINUTE {
                    let (_, oldest) = by_instance.remove(0);
                    by_instance[0].1.add(&oldest);
                }
                self.minutes.put(&mut wtxn, &k, &encode(&by_instance))?;
                kept += 1;
            }
        }
        wtxn.commit()?;
        Ok(kept)
    }

    fn roll_up(&self, now: u64, retention: Retention) -> Result<(), Error> {
        // Whole hours only: an hour's minutes become its record together.
        let cutoff = now.saturating_sub(retention.minutes) / 60 * 60;
        let forget_before = now.saturating_sub(retention.hours);
        let mut wtxn = self.env.write_txn()?;
        for tunnel in self.tunnels(&wtxn, &self.minutes)? {
            let old = self.keys_before(&wtxn, &self.minutes, &tunnel, cutoff)?;
            let mut hours: BTreeMap<Vec<u8>, TrafficCounts> = BTreeMap::new();
            for k in &old {
                let Some((_, minute, gateway)) = parse_key(k) else {
                    continue;
                };
                let Some(value) = self.minutes.get(&wtxn, k)? else {
                    continue;
                };
                let counts = decode_counts(value)?;
                let hour = key(&tunnel, minute / 60 * 60, gateway);
                fold(hours.entry(hour).or_default(), &counts);
            }
            for k in &old {
                self.minutes.delete(&mut wtxn, k)?;
            }
            for (k, counts) in hours {
                let mut sum = match self.hours.get(&wtxn, &k)? {
                    Some(v) => decode_counts(v)?,
                    None => TrafficCounts::default(),
                };
                fold(&mut sum, &counts);
                self.hours.put(&mut wtxn, &k, &encode(&[(0u64, sum)]))?;
            }
        }
        for tunnel in self.tunnels(&wtxn, &self.hours)? {
            for k in self.keys_before(&wtxn, &self.hours, &tunnel, forget_before)? {
                self.hours.delete(&mut wtxn, &k)?;
            }
        }
        wtxn.commit()?;
        Ok(())
    }

    /// The tunnels `table` has records of, one seek each.
    fn tunnels(&self, txn: &heed::RoTxn, table: &Table) -> Result<Vec<String>, Error> {
        let mut tunnels = Vec::new();
        let mut lower: Vec<u8> = Vec::new();
        loop {
            // LMDB takes no empty key, even as a bound.
            let from = match lower.is_empty() {
                true => Bound::Unbounded,
                false => Bound::Included(lower.as_slice()),
            };
            let bounds = (from, Bound::Unbounded);
            let Some(entry) = table.range(txn, &bounds)?.next() else {
                return Ok(tunnels);
            };
            let (k, _) = entry?;
            let Some((tunnel, _, _)) = parse_key(k) else {
                return Ok(tunnels);
            };
            lower = [tunnel.as_bytes(), &[1]].concat();
            tunnels.push(tunnel.to_string());
        }
    }

    /// The keys of `tunnel`'s records in `table` before minute `before`.
    fn keys_before(
        &self,
        txn: &heed::RoTxn,
        table: &Table,
        tunnel: &str,
        before: u64,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let (start, end) = (key(tunnel, 0, ""), key(tunnel, before, ""));
        let bounds = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        let mut keys = Vec::new();
        for entry in table.range(txn, &bounds)? {
            keys.push(entry?.0.to_vec());
        }
        Ok(keys)
    }
}

/// Add `counts` into `sum` as time adds: `open_max` is the most of either, not their sum.
fn fold(sum: &mut TrafficCounts, counts: &TrafficCounts) {
    let open_max = sum.open_max.max(counts.open_max);
    sum.add(counts);
    sum.open_max = open_max;
}

/// `tunnel NUL minute gateway`: a tunnel's records together, in time order.
fn key(tunnel: &str, minute: u64, gateway: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tunnel.len() + 9 + gateway.len());
    k.extend_from_slice(tunnel.as_bytes());
    k.push(0);
    k.extend_from_slice(&minute.to_be_bytes());
    k.extend_from_slice(gateway.as_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(&str, u64, &str)> {
    let nul = k.iter().position(|b| *b == 0)?;
    let tunnel = std::str::from_utf8(&k[..nul]).ok()?;
    let minute = u64::from_be_bytes(k.get(nul + 1..nul + 9)?.try_into().ok()?);
    let gateway = std::str::from_utf8(&k[nul + 9..]).ok()?;
    Some((tunnel, minute, gateway))
}

/// A minute's or an hour's counts as the table keeps them: [`TrafficCounts`] without
/// optional fields, so a compact encoding that does not describe itself can read it back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    status: [u64; 5],
    bytes_in: u64,
    bytes_out: u64,
    connections: u64,
    open_max: u64,
    denied: Vec<(kakuremichi_proto::traffic::Denial, u64)>,
    failed: Vec<(kakuremichi_proto::traffic::Failure, u64)>,
    latency: Vec<(u16, u64)>,
}

impl Stored {
    fn of(counts: &TrafficCounts) -> Stored {
        Stored {
            status: counts.status,
            bytes_in: counts.bytes_in,
            bytes_out: counts.bytes_out,
            connections: counts.connections,
            open_max: counts.open_max,
            denied: counts.denied.iter().map(|(k, v)| (*k, *v)).collect(),
            failed: counts.failed.iter().map(|(k, v)| (*k, *v)).collect(),
            latency: counts.latency.buckets().to_vec(),
        }
    }

    fn counts(self) -> Result<TrafficCounts, Error> {
        Ok(TrafficCounts {
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            connections: self.connections,
            open_max: self.open_max,
            denied: self.denied.into_iter().collect(),
            failed: self.failed.into_iter().collect(),
            latency: kakuremichi_proto::traffic::Histogram::from_buckets(self.latency)
                .ok_or_else(|| Error::Store("a traffic record's latency is damaged".into()))?,
        })
    }
}

fn encode(by_instance: &[(u64, TrafficCounts)]) -> Vec<u8> {
    let stored: Vec<(u64, Stored)> = (by_instance.iter())
        .map(|(instance, counts)| (*instance, Stored::of(counts)))
        .collect();
    postcard::to_stdvec(&stored).unwrap_or_default()
}

/// A record's counts, per gateway process.
fn decode(value: &[u8]) -> Result<Vec<(u64, TrafficCounts)>, Error> {
    let stored: Vec<(u64, Stored)> =
        postcard::from_bytes(value).map_err(|e| Error::Store(format!("a traffic record: {e}")))?;
    (stored.into_iter())
        .map(|(instance, stored)| Ok((instance, stored.counts()?)))
        .collect()
}

/// A record's counts over every gateway process.
fn decode_counts(value: &[u8]) -> Result<TrafficCounts, Error> {
    let mut sum = TrafficCounts::default();
    for (_, counts) in decode(value)? {
        sum.add(&counts);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests;
