//! Draining: Control asks a gateway to go out of service gently. New requests and tcp-tunnel
//! connections are refused at once (503, `Connection: close`; `/readyz` fails so a load
//! balancer moves clients); those in flight, WebSockets included, may finish until the
//! deadline, when every connection still open is cut.

use async_io::Timer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Whether the gateway drains, and the signal that cuts what is still open at the deadline.
pub struct Drain {
    draining: AtomicBool,
    deadline: Duration,
    /// The current drain's signal, and which drain it belongs to. It is only ever closed
    /// explicitly, at a deadline: every waiter holds a sender too, so the channel never
    /// closes by itself when a drain ends and the next one gets a fresh channel.
    cut: Mutex<(u64, Signal)>,
}

type Signal = (async_channel::Sender<()>, async_channel::Receiver<()>);

impl Drain {
    /// Not draining; a drain cuts what is left after `deadline`.
    pub fn new(deadline: Duration) -> Self {
        Drain {
            draining: AtomicBool::new(false),
            deadline,
            cut: Mutex::new((0, async_channel::bounded(1))),
        }
    }

    /// Whether new work is refused.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn signal(&self) -> std::sync::MutexGuard<'_, (u64, Signal)> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follow Control's word. Starting a drain starts its deadline; ending one before the
    /// deadline keeps every connection.
    pub fn set(self: &Arc<Self>, draining: bool) {
        if self.draining.swap(draining, Ordering::Relaxed) == draining {
            return;
        }
        if !draining {
            log::warn!("no longer draining: serving new requests");
            let mut signal = self.signal();
            *signal = (signal.0 + 1, async_channel::bounded(1));
            return;
        }
        log::warn!(
            "draining: new requests get a 503; those in flight may finish within {:?}",
            self.deadline
        );
        let generation = self.signal().0;
        let drain = self.clone();
        kakuremichi_rt::spawn(async move {
            Timer::after(drain.deadline).await;
            let signal = drain.signal();
            // Only if this drain is still on: one ended in time spares every connection.
            if signal.0 == generation && drain.is_draining() {
                log::warn!("drain deadline: closing the connections still open");
                signal.1 .0.close();
            }
        })
        .detach();
    }

    /// Resolves when the current drain's deadline passes: a connection races its work
    /// against it.
    pub fn cut(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (sender, receiver) = self.signal().1.clone();
        async move {
            // Nothing is ever sent: the channel only closes, at the deadline.
            let _ = receiver.recv().await;
            drop(sender);
        }
    }
}
