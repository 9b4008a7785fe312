//! Hellos on their way to the store, written in batches. A fleet reconnects at once (Control
//! restarted, a power cut, a network back): one write transaction per hello meant two
//! fsyncs each and a new revision that every session looked at, so 10,000 nodes queued on
//! the disk for over a minute. One writer takes every hello waiting and records them in one
//! transaction, off the executor's threads.

use crate::error::Error;
use crate::store::Store;
use kakuremichi_proto::messages::Hello;
use std::sync::Arc;

/// The most hellos in one transaction: a batch's commit stays short.
const BATCH: usize = 2000;

/// The queue of hellos to record and the writer that records them (stopped when dropped).
pub struct Hellos {
    queue: async_channel::Sender<Pending>,
    _writer: smol::Task<()>,
}

struct Pending {
    node_id: String,
    hello: Hello,
    answer: async_channel::Sender<Result<(), Error>>,
}

impl Hellos {
    /// A writer for `store`.
    pub fn new(store: Arc<Store>) -> Hellos {
        let (queue, waiting) = async_channel::unbounded();
        Hellos {
            queue,
            _writer: smol::spawn(write(store, waiting)),
        }
    }

    /// Record what node `node_id` said in `hello`; whether anything changed (the revision
    /// then moved, and other nodes may need it).
    pub async fn record(&self, store: &Store, node_id: &str, hello: &Hello) -> Result<bool, Error> {
        if store.hello_changes_nothing(node_id, hello)? {
            return Ok(false);
        }
        let stopped = || Error::Store("the hello writer stopped".into());
        let (answer, answered) = async_channel::bounded(1);
        let pending = Pending {
            node_id: node_id.to_string(),
            hello: hello.clone(),
            answer,
        };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        answered.recv().await.map_err(|_| stopped())??;
        Ok(true)
    }
}

/// Record what waits in `waiting`, a batch at a time, until the queue is dropped.
async fn write(store: Arc<Store>, waiting: async_channel::Receiver<Pending>) {
    while let Ok(first) = waiting.recv().await {
        let mut batch = vec![first];
        while let (true, Ok(next)) = (batch.len() < BATCH, waiting.try_recv()) {
            batch.push(next);
        }
        let store = store.clone();
        let (batch, answers) = smol::unblock(move || {
            let hellos: Vec<(&str, &Hello)> = batch
                .iter()
                .map(|p| (p.node_id.as_str(), &p.hello))
                .collect();
            let answers = store.record_hellos(&hellos);
            (batch, answers)
        })
        .await;
        match answers {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let _ = pending.answer.try_send(answer);
                }
            }
            Err(e) => {
                log::error!("recording {} hellos: {e}", batch.len());
                for pending in batch {
                    let _ = pending.answer.try_send(Err(Error::Store(e.to_string())));
                }
            }
        }
    }
}
