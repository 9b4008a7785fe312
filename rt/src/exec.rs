//! hyper's executor and timer on smol.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Runs hyper's background tasks (HTTP/2 streams, connection drivers) on smol's executor.
/// hyper owns these tasks' lifetimes through their connections, so they are detached here.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolExecutor;

impl<F> hyper::rt::Executor<F> for SmolExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        smol::spawn(future).detach();
    }
}

/// hyper's timer (header read timeouts, keep-alive) over `async_io::Timer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolTimer;

struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for SmolTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(async_io::Timer::after(duration)))
    }
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(async_io::Timer::at(deadline)))
    }
}

/// Run smol's global executor on one thread per core, unless `SMOL_THREADS` says how many.
/// smol's default is one thread, and one busy Control task (a gateway's snapshot) then held
/// up every other node's session until its heartbeats looked missed. (The gateway stays on
/// one: on two cores more threads did not raise its requests per second, since its data
/// path shares one network stack.) Call first in `main`, before anything spawns: smol reads
/// the variable once, when its executor starts, and no other thread exists yet to read the
/// environment meanwhile.
pub fn use_every_core() {
    if std::env::var_os("SMOL_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("SMOL_THREADS", cores.to_string());
    }
}
