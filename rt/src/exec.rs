//! The executor every task runs on, and hyper's executor and timer over it.

use async_executor::{Executor, Task};
use futures_lite::future;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Runs hyper's background tasks (HTTP/2 streams, connection drivers) on [`spawn`]'s
/// executor. hyper owns these tasks' lifetimes through their connections, so they are
/// detached here.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolExecutor;

impl<F> hyper::rt::Executor<F> for SmolExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        spawn(future).detach();
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

/// The executor every task of the binaries runs on, and the threads that run it.
///
/// Two ways to run it, chosen by what `main` calls:
/// - [`block_on`], for the data path (gateway, agent): every thread runs tasks and, after
///   every [`BATCH`] of them, collects readiness events itself, so a task woken by I/O mostly
///   runs where its event was seen. With smol's arrangement (below) every event was handed
///   to another thread, a futex wake and a context switch each; under a concurrent load that
///   halved a gateway's requests per second.
/// - [`wait_on`], smol's own arrangement, for Control: task threads run the executor's loop
///   while the calling thread waits on the reactor and wakes them. Its thousands of sessions
///   are each woken rarely, and when 10,000 nodes connected at once the other way took 18 to
///   59 s to give them all their configs, against 5 s this way.
static EXECUTOR: Executor<'static> = Executor::new();
/// Threads that run tasks; 0 until [`set_threads`].
static THREADS: AtomicUsize = AtomicUsize::new(0);
static STARTED: OnceLock<()> = OnceLock::new();
/// Tasks run between two looks at the reactor in [`block_on`]'s threads. The executor's own
/// loop looks every 200, which was long enough for async-io's helper thread to take the
/// reactor over.
const BATCH: usize = 32;

/// Run `future` as a task; it is cancelled when the returned handle is dropped (or runs on
/// after [`Task::detach`]).
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    // A library user (a test) that neither blocks on nor waits on: as smol does.
    start_threads(0, Loop::Executor);
    EXECUTOR.spawn(future)
}

/// Set how many threads run tasks (at least 1), before anything is spawned: later calls
/// change nothing. A binary that never calls it gets one thread, as with smol.
pub fn set_threads(threads: usize) {
    let _ = THREADS.compare_exchange(0, threads.max(1), Ordering::SeqCst, Ordering::SeqCst);
}

/// One thread per core this process may use (its CPU affinity and cgroup quota count).
pub fn every_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `main` to its end as a task on this thread, which runs other tasks too (and is one of
/// the [`set_threads`] threads), each thread collecting I/O events between batches.
pub fn block_on<T: Send + 'static>(main: impl Future<Output = T> + Send + 'static) -> T {
    let main = EXECUTOR.spawn(main);
    start_threads(1, Loop::Batches);
    async_io::block_on(run_batches_until(main))
}

/// Run `main` to its end on this thread, which waits on the reactor for the [`set_threads`]
/// threads that run the tasks.
pub fn wait_on<T>(main: impl Future<Output = T>) -> T {
    start_threads(0, Loop::Executor);
    async_io::block_on(main)
}

/// How a task thread runs.
#[derive(Clone, Copy)]
enum Loop {
    /// `run_batches_until`.
    Batches,
    /// The executor's own.
    Executor,
}

/// Start the task threads, once: all but `here` of them (those the caller is).
fn start_threads(here: usize, kind: Loop) {
    STARTED.get_or_init(|| {
        let threads = THREADS.load(Ordering::SeqCst).max(1);
        (here..threads).for_each(|n| start_thread(n, kind));
    });
}

fn start_thread(n: usize, kind: Loop) {
    let spawned = std::thread::Builder::new()
        .name(format!("tasks-{n}"))
        .spawn(move || match kind {
            Loop::Batches => async_io::block_on(run_batches_until(future::pending::<()>())),
            Loop::Executor => async_io::block_on(EXECUTOR.run(future::pending::<()>())),
        });
    if let Err(e) = spawned {
        // The threads already running still run every task, only on fewer cores.
        log::error!("cannot start a task thread: {e}");
    }
}

/// Run tasks until `until` is ready, returning to `async_io::block_on` after each batch so
/// that it polls the reactor (without waiting) before the next.
async fn run_batches_until<T>(until: impl Future<Output = T>) -> T {
    let run = async {
        loop {
            EXECUTOR.tick().await;
            for _ in 1..BATCH {
                if !EXECUTOR.try_tick() {
                    break;
                }
            }
            future::yield_now().await;
        }
    };
    future::or(until, run).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_task_runs_without_anyone_in_block_on() {
        let task = spawn(async { 6 * 7 });
        assert_eq!(future::block_on(task), 42);
    }

    /// Tasks woken by timers and by sockets (the reactor's two sources) all run to the end,
    /// many at once, while block_on's own thread runs tasks too.
    #[test]
    fn tasks_woken_by_timers_and_sockets_all_finish() {
        let echoed = block_on(async {
            let server = async_io::Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
            let address = server.get_ref().local_addr().unwrap();
            let echo = spawn(async move {
                let mut buffer = [0u8; 16];
                loop {
                    let (n, from) = server.recv_from(&mut buffer).await.unwrap();
                    server.send_to(&buffer[..n], from).await.unwrap();
                }
            });
            let clients: Vec<Task<bool>> = (0..300u16)
                .map(|i| {
                    spawn(async move {
                        async_io::Timer::after(Duration::from_millis(u64::from(i % 7))).await;
                        let socket =
                            async_io::Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
                        socket.send_to(&i.to_be_bytes(), address).await.unwrap();
                        let mut answer = [0u8; 2];
                        let n = socket.recv(&mut answer).await.unwrap();
                        n == 2 && u16::from_be_bytes(answer) == i
                    })
                })
                .collect();
            let mut echoed = 0;
            for client in clients {
                echoed += usize::from(client.await);
            }
            drop(echo);
            echoed
        });
        assert_eq!(echoed, 300);
    }
}
