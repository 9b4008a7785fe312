//! The request log, asked of the gateways: each gateway keeps its latest requests in memory
//! ([`kakuremichi_proto::request_log`]), and the Logs page and `/api/v1/logs` ask every
//! connected gateway at once through its session, wait a moment for the answers and merge
//! them, newest first. Nothing of the log is stored in Control.

use crate::error::Error;
use kakuremichi_proto::request_log::{LogEntry, LogQuery, MAX_ENTRIES};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a query waits for the gateways' answers.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// Queries waiting on one session, at most: more are refused rather than queued.
const QUEUED_PER_SESSION: usize = 8;

/// Entries at most a query asks for unless it says.
pub const DEFAULT_LIMIT: usize = 200;

/// The query a page's or the API's parameters ask for: `tunnel` (an id), `status` (1 to 5),
/// `client`, `user`, `minutes` back and `limit`; empty parameters are left out.
pub fn query_of(
    parameter: impl Fn(&str) -> Option<String>,
    now_ms: u64,
) -> Result<LogQuery, Error> {
    let given = |name: &str| parameter(name).filter(|v| !v.trim().is_empty());
    let number = |name: &str, low: u64, high: u64| -> Result<Option<u64>, Error> {
        match given(name) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (low..=high).contains(&n) => Ok(Some(n)),
                _ => Err(Error::invalid(
                    name,
                    format!("a number from {low} to {high}"),
                )),
            },
        }
    };
    Ok(LogQuery {
        id: 0,
        tunnel_id: given("tunnel"),
        status_class: number("status", 1, 5)?.map(|c| c as u16),
        client: given("client").map(|c| c.trim().to_string()),
        user: given("user").map(|u| u.trim().to_string()),
        since_ms: number("minutes", 1, 7 * 24 * 60)?.map(|m| now_ms.saturating_sub(m * 60_000)),
        limit: number("limit", 1, MAX_ENTRIES as u64)?.map_or(DEFAULT_LIMIT, |n| n as usize),
    })
}

/// One gateway's entry with the gateway it came from.
#[derive(Clone, Debug)]
pub struct Found {
    pub gateway: String,
    pub entry: LogEntry,
}

/// What a query gathered.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Newest first, at most the query's limit.
    pub entries: Vec<Found>,
    /// Gateways asked, and those that answered in time.
    pub asked: usize,
    pub answered: usize,
}

type Answers = async_channel::Sender<(String, Vec<LogEntry>)>;

/// Which gateway sessions take queries, and the queries waiting for answers.
#[derive(Default)]
pub struct LogBroker {
    sessions: Mutex<HashMap<u64, (String, async_channel::Sender<LogQuery>)>>,
    waiting: Mutex<HashMap<u64, Answers>>,
    next: AtomicU64,
}

/// A gateway session's place in the broker; leaves it when dropped.
pub struct Asked {
    broker: Arc<LogBroker>,
    id: u64,
    /// The queries for this session's gateway to answer.
    pub queries: async_channel::Receiver<LogQuery>,
}

impl Drop for Asked {
    fn drop(&mut self) {
        self.broker.lock_sessions().remove(&self.id);
    }
}

impl LogBroker {
    fn lock_sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (String, async_channel::Sender<LogQuery>)>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Answers>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gateway `gateway`'s session answers queries from now on.
    pub fn join(self: &Arc<Self>, gateway: &str) -> Asked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, queries) = async_channel::bounded(QUEUED_PER_SESSION);
        self.lock_sessions()
            .insert(id, (gateway.to_string(), sender));
        Asked {
            broker: self.clone(),
            id,
            queries,
        }
    }

    /// Gateway `gateway` answered query `id`; an answer nobody waits for is dropped.
    pub fn answered(&self, id: u64, gateway: &str, entries: Vec<LogEntry>) {
        if let Some(answers) = self.lock_waiting().get(&id) {
            let _ = answers.try_send((gateway.to_string(), entries));
        }
    }

    /// Ask every gateway for `query`'s entries and gather what answers within `patience`.
    pub async fn ask(&self, query: LogQuery, patience: Duration) -> Gathered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let sessions: Vec<async_channel::Sender<LogQuery>> = self
            .lock_sessions()
            .values()
            .map(|(_, s)| s.clone())
            .collect();
        let (answers, gathered) = async_channel::bounded(sessions.len().max(1));
        self.lock_waiting().insert(id, answers);
        let query = LogQuery { id, ..query };
        let asked = sessions
            .iter()
            .filter(|s| s.try_send(query.clone()).is_ok())
            .count();
        let mut entries = Vec::new();
        let mut answered = 0;
        let deadline = async_io::Timer::after(patience);
        futures_lite::pin!(deadline);
        while answered < asked {
            let next = futures_lite::future::or(async { gathered.recv().await.ok() }, async {
                (&mut deadline).await;
                None
            });
            let Some((gateway, found)) = next.await else {
                break;
            };
            answered += 1;
            entries.extend(found.into_iter().map(|entry| Found {
                gateway: gateway.clone(),
                entry,
            }));
        }
        self.lock_waiting().remove(&id);
        entries.sort_by_key(|f| std::cmp::Reverse(f.entry.time_ms));
        entries.truncate(query.limit());
        Gathered {
            entries,
            asked,
            answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_a_query_and_bad_ones_name_themselves() {
        let given = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let query = query_of(
            given(&[("status", "5"), ("minutes", "10"), ("client", " ")]),
            3_600_000,
        )
        .unwrap();
        assert_eq!(query.status_class, Some(5));
        assert_eq!(query.since_ms, Some(3_000_000));
        assert_eq!(query.client, None, "an empty field asks nothing");
        assert_eq!(query.limit, DEFAULT_LIMIT);
        let bad = query_of(given(&[("status", "9")]), 0).unwrap_err();
        assert!(bad.to_string().contains("status"), "{bad}");
        assert!(query_of(given(&[("limit", "100000")]), 0).is_err());
    }

    fn entry(time_ms: u64) -> LogEntry {
        LogEntry {
            time_ms,
            ..LogEntry::default()
        }
    }

    #[test]
    fn answers_of_every_gateway_merge_newest_first_and_a_silent_one_is_waited_for_briefly() {
        let broker = Arc::new(LogBroker::default());
        let (first, second, silent) = (
            broker.join("gw_1"),
            broker.join("gw_2"),
            broker.join("gw_3"),
        );
        let answer = |asked: &Asked, gateway: &str, times: Vec<u64>| {
            let broker = broker.clone();
            let queries = asked.queries.clone();
            let gateway = gateway.to_string();
            std::thread::spawn(move || {
                let query = queries.recv_blocking().unwrap();
                broker.answered(query.id, &gateway, times.into_iter().map(entry).collect());
            })
        };
        let a = answer(&first, "gw_1", vec![5, 3, 1]);
        let b = answer(&second, "gw_2", vec![4, 2]);
        let query = LogQuery {
            limit: 4,
            ..LogQuery::default()
        };
        let started = std::time::Instant::now();
        let gathered = smol::block_on(broker.ask(query, Duration::from_millis(300)));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!((gathered.asked, gathered.answered), (3, 2));
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the silent one is waited for"
        );
        let times: Vec<u64> = gathered.entries.iter().map(|f| f.entry.time_ms).collect();
        assert_eq!(times, [5, 4, 3, 2]);
        assert_eq!(gathered.entries[1].gateway, "gw_2");
        drop((first, second, silent));
        assert!(broker.lock_sessions().is_empty());
        assert!(broker.lock_waiting().is_empty());
    }
}
