//! A line of requests for a limited number of slots, served strictly in arrival order.
//!
//! A semaphore that lets a newcomer try its luck before queueing (async-lock's does) starves
//! the queue under sustained overload: every freed permit goes to whoever arrives at that
//! moment, and some of those waiting time out (h2load at 100 × 100 streams for 60 s: a few
//! hundred 503s in a million requests). Here a freed slot goes to the head of the line, and
//! a newcomer only takes a free slot when no one waits.

use async_io::Timer;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

struct State {
    free: usize,
    /// One sender per waiter; a slot is handed over by sending on it.
    queue: VecDeque<async_channel::Sender<()>>,
}

/// Slots, and the line of those waiting for one.
pub struct Line {
    state: Mutex<State>,
}

/// A slot held; dropping it hands it to the head of the line.
pub struct Slot {
    line: Arc<Line>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.line.release();
    }
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The line already had its maximum length.
    LineFull,
    /// The wait was longer than allowed.
    TimedOut,
}

impl Line {
    /// `slots` free slots and no one waiting.
    pub fn new(slots: usize) -> Arc<Line> {
        Arc::new(Line {
            state: Mutex::new(State {
                free: slots,
                queue: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters and senders only: a panic elsewhere leaves nothing half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self) {
        let mut state = self.lock();
        // Waiters that gave up left a closed channel behind: skip them.
        while let Some(waiter) = state.queue.pop_front() {
            if waiter.try_send(()).is_ok() {
                return;
            }
        }
        state.free += 1;
    }

    /// How many wait (including any that gave up and are not yet skipped).
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// A slot, once one is ours: at once if one is free and no one waits, else in turn;
    /// refused if `max_waiting` already wait or none came within `timeout`.
    pub async fn take(
        self: &Arc<Self>,
        timeout: Duration,
        max_waiting: usize,
    ) -> Result<Slot, Refused> {
        let turn = {
            let mut state = self.lock();
            if state.free > 0 && state.queue.is_empty() {
                state.free -= 1;
                return Ok(Slot { line: self.clone() });
            }
            if state.queue.len() >= max_waiting {
                return Err(Refused::LineFull);
            }
            let (handover, turn) = async_channel::bounded(1);
            state.queue.push_back(handover);
            turn
        };
        let mut waiter = Waiter {
            line: self.clone(),
            turn,
            served: false,
        };
        let served = futures_lite::future::or(async { waiter.turn.recv().await.is_ok() }, async {
            Timer::after(timeout).await;
            false
        })
        .await;
        if served || waiter.withdraw() {
            waiter.served = true;
            return Ok(Slot { line: self.clone() });
        }
        Err(Refused::TimedOut)
    }
}

/// A place in line. Dropped without being served (its request went away), it leaves the
/// line, and a slot handed to it in that very moment goes on to the next in line.
struct Waiter {
    line: Arc<Line>,
    turn: async_channel::Receiver<()>,
    served: bool,
}

impl Waiter {
    /// Leave the line; returns whether a slot had been handed over meanwhile (then it is
    /// ours after all).
    fn withdraw(&self) -> bool {
        // Under the lock no slot can be handed over between closing and looking.
        let _state = self.line.lock();
        self.turn.close();
        self.turn.try_recv().is_ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.served && self.withdraw() {
            self.line.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(5);

    #[test]
    fn slots_go_in_arrival_order_and_newcomers_queue_behind() {
        smol::block_on(async {
            let line = Line::new(1);
            let first = line.take(LONG, 10).await.unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            let waiters: Vec<_> = (0..5)
                .map(|i| {
                    let (line, order) = (line.clone(), order.clone());
                    let task = kakuremichi_rt::spawn(async move {
                        let slot = line.take(LONG, 10).await.unwrap();
                        order.lock().unwrap().push(i);
                        Timer::after(Duration::from_millis(5)).await;
                        drop(slot);
                    });
                    // Let each one join the line before the next.
                    std::thread::sleep(Duration::from_millis(10));
                    task
                })
                .collect();
            assert_eq!(line.waiting(), 5);
            drop(first);
            for waiter in waiters {
                waiter.await;
            }
            assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
            // All back: one free slot.
            let again = line.take(Duration::ZERO, 0).await;
            assert!(again.is_ok());
        });
    }

    #[test]
    fn a_full_line_and_a_long_wait_are_refused_and_lose_nothing() {
        smol::block_on(async {
            let line = Line::new(1);
            let held = line.take(LONG, 1).await.unwrap();
            assert_eq!(
                line.take(Duration::from_millis(20), 1).await.err(),
                Some(Refused::TimedOut)
            );
            assert_eq!(
                line.take(Duration::from_millis(20), 0).await.err(),
                Some(Refused::LineFull)
            );
            // A waiter whose request went away leaves the line.
            let gone = kakuremichi_rt::spawn({
                let line = line.clone();
                async move { line.take(LONG, 10).await.map(|_| ()) }
            });
            Timer::after(Duration::from_millis(20)).await;
            drop(gone.cancel());
            drop(held);
            // The slot came back rather than going to the one that left.
            assert!(line.take(Duration::from_millis(20), 10).await.is_ok());
        });
    }
}
