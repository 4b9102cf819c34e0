//! Helpers shared by the integration tests: watchdogs (a hang becomes a test failure),
//! flavor lists, a drop-counting message and wakers that record being woken.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use conduit::{Receiver, Sender};

/// The default watchdog limit, in seconds, for one test body: 30, and twenty times that
/// under miri, which interprets every thread of every test of a suite on one core.
pub const LIMIT_SECS: u64 = if cfg!(miri) { 20 * 30 } else { 30 };

/// Runs `f` on its own thread and fails the test if it has not returned within `secs`
/// seconds. A panic inside `f` is propagated as is; its return value is handed back.
///
/// The wait is a `recv_timeout` on a std channel that `f`'s thread signals when done,
/// so nothing here sleeps to synchronize.
pub fn with_timeout<R, F>(secs: u64, f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = std::thread::Builder::new()
        .name("watchdog-body".into())
        .spawn(move || {
            // Dropped on return *and* on unwind, so a panic also ends the wait.
            let _done = DoneOnDrop(done_tx);
            f()
        })
        .expect("spawn test body");
    match done_rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test body did not finish within {secs} s (hang?)")
        }
    }
}

struct DoneOnDrop(mpsc::Sender<()>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// [`with_timeout`] with the default limit.
pub fn watchdog<R, F>(f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    with_timeout(LIMIT_SECS, f)
}

/// Awaits `fut`, failing the test if it does not complete within `secs` seconds
/// (tokio's timer; needs a tokio runtime with time enabled).
pub async fn async_timeout<F: Future>(secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("async watchdog: the future did not complete within {secs} s (hang?)"),
    }
}

/// Which tokio runtime to run an async test body on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    CurrentThread,
    MultiThread,
}

pub const RUNTIMES: [Rt; 2] = [Rt::CurrentThread, Rt::MultiThread];

/// Builds a tokio runtime of the given kind and runs `make()` on it, under both an
/// async watchdog (tokio timer) and a thread watchdog (which also catches a body that
/// blocks the runtime's only thread, where the tokio timer could never fire).
pub fn run_tokio<F, Fut>(rt: Rt, secs: u64, make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_timeout(secs + 5, move || {
        let runtime = match rt {
            Rt::CurrentThread => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            Rt::MultiThread => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .expect("build tokio runtime");
        runtime.block_on(async_timeout(secs, make()));
    })
}

/// A channel constructor with a name for assertion messages.
pub type Make<T> = (&'static str, fn() -> (Sender<T>, Receiver<T>));

/// The flavors that buffer messages: bounded(1), bounded(16), unbounded.
pub fn buffered<T>() -> Vec<Make<T>> {
    vec![
        ("bounded(1)", || conduit::bounded(1)),
        ("bounded(16)", || conduit::bounded(16)),
        ("unbounded", conduit::unbounded),
    ]
}

/// Every flavor: the buffered ones and rendezvous.
pub fn all<T>() -> Vec<Make<T>> {
    let mut v = buffered();
    v.push(("rendezvous", conduit::rendezvous));
    v
}

/// A message that counts its drops in a shared counter. Each holds a clone of the
/// counter's `Arc`, so `Arc::strong_count(&counter) == 1` at the end means no message
/// was leaked.
#[derive(Debug)]
pub struct Counted {
    pub id: usize,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    pub fn new(id: usize, drops: &Arc<AtomicUsize>) -> Self {
        Counted {
            id,
            drops: drops.clone(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that records that it was woken (and how often).
#[derive(Default)]
pub struct Flag {
    woken: AtomicBool,
    count: AtomicUsize,
}

impl Flag {
    pub fn new() -> Arc<Self> {
        Arc::new(Flag::default())
    }

    pub fn woken(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.woken.store(true, Ordering::SeqCst);
    }
}

/// A waker for `flag`.
pub fn waker(flag: &Arc<Flag>) -> Waker {
    Waker::from(flag.clone())
}

/// Polls `fut` once with `waker`.
pub fn poll_once<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    let mut cx = Context::from_waker(waker);
    std::pin::Pin::new(fut).poll(&mut cx)
}

/// Polls `fut` until it waits registered, then once more with `waker`, which it then
/// holds. An async send on a full channel first yields to its executor a few times
/// (each such poll wakes its own task and returns `Pending`) before it registers: a
/// poll that returns `Pending` without waking the task has registered.
pub fn poll_registered<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    let own = Flag::new();
    let w = self::waker(&own);
    for _ in 0..1000 {
        own.reset();
        match poll_once(fut, &w) {
            Poll::Ready(r) => return Poll::Ready(r),
            Poll::Pending if !own.woken() => return poll_once(fut, waker),
            Poll::Pending => {}
        }
    }
    panic!("the future never registered");
}

/// Polls `fut` once with a waker that does nothing.
pub fn poll_noop<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_once(fut, Waker::noop())
}

/// Spins (yielding the thread) until `cond()` holds. Only ever used under a watchdog:
/// it waits for an event that a correct library must produce, it does not time it.
pub fn spin_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        std::thread::yield_now();
    }
}
