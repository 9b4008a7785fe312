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
        Hellos::batched(store, BATCH)
    }

    /// A writer for `store` that records at most `most` hellos at a time.
    fn batched(store: Arc<Store>, most: usize) -> Hellos {
        let (queue, waiting) = async_channel::unbounded();
        Hellos {
            queue,
            _writer: kakuremichi_rt::spawn(write(store, waiting, most)),
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

/// Record what waits in `waiting`, at most `most` at a time, until the queue is dropped.
async fn write(store: Arc<Store>, waiting: async_channel::Receiver<Pending>, most: usize) {
    while let Ok(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < most {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use kakuremichi_proto::ids::{NodeKind, PublicKey};

    #[test]
    fn hellos_waiting_together_are_each_answered_in_batches_of_at_most_the_limit() {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).unwrap();
        let dir = std::env::temp_dir().join(format!("kk-hellos-{}", u64::from_le_bytes(nonce)));
        let store = Arc::new(Store::open(&dir, "10.77.0.0/16".parse().unwrap()).unwrap());
        let ids: Vec<String> = (0..10)
            .map(|_| store.create_node(NodeKind::Agent, "n".into()).unwrap().0.id)
            .collect();
        let hello = |i: usize| Hello {
            public_key: PublicKey([i as u8 + 1; 32]),
            version: "test".into(),
            wireguard_endpoint: None,
            instance: i as u64,
            ports: None,
            https_port: None,
            http_port: None,
            allow_targets: None,
            features: Vec::new(),
        };
        // Ten waiting at once, written at most three at a time: four commits, ten answers.
        let (queue, waiting) = async_channel::unbounded();
        let answers: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (answer, answered) = async_channel::bounded(1);
                let (node_id, hello) = (id.clone(), hello(i));
                queue
                    .try_send(Pending {
                        node_id,
                        hello,
                        answer,
                    })
                    .unwrap();
                answered
            })
            .collect();
        drop(queue);
        let before = store.revision().unwrap();
        smol::block_on(write(store.clone(), waiting, 3));
        assert_eq!(
            store.revision().unwrap() - before,
            4,
            "one commit per batch"
        );
        for answered in answers {
            let answer = answered.try_recv();
            assert!(matches!(answer, Ok(Ok(()))), "{answer:?}");
        }
        let hellos = Hellos::batched(store.clone(), 3);
        // The same hello again changes nothing, and a clash is refused on its own.
        let again = smol::block_on(hellos.record(&store, &ids[0], &hello(0)));
        assert!(matches!(again, Ok(false)), "{again:?}");
        let clash = smol::block_on(hellos.record(&store, &ids[1], &hello(0)));
        assert!(matches!(clash, Err(Error::Conflict { .. })), "{clash:?}");
        drop(hellos);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
