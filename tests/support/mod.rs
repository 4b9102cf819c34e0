//! Shared helpers for the integration tests: watchdogs and flavor lists.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conduit::{Receiver, Sender};

/// How long any one test may run before its watchdog fails it.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it has not finished within
/// [`LIMIT`] (a hang becomes a failure). Panics inside `f` propagate.
pub fn watchdog<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let r = f();
        let _ = done_tx.send(());
        r
    });
    match done_rx.recv_timeout(LIMIT) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: test did not finish within {LIMIT:?}")
        }
    }
}

/// Runs an async test body on a tokio runtime under [`watchdog`].
pub fn run_async<F, Fut>(multi_thread: bool, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    watchdog(move || {
        let rt = if multi_thread {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .unwrap();
        rt.block_on(f());
    })
}

/// A channel constructor with a name for messages.
pub type Make<T> = (&'static str, fn() -> (Sender<T>, Receiver<T>));

/// Every flavor that buffers (capacity ≥ 1 or unbounded).
pub fn buffered<T>() -> Vec<Make<T>> {
    vec![
        ("bounded(1)", || conduit::bounded(1)),
        ("bounded(16)", || conduit::bounded(16)),
        ("unbounded", conduit::unbounded),
    ]
}

/// Every flavor, rendezvous included.
pub fn all<T>() -> Vec<Make<T>> {
    let mut v = buffered();
    v.push(("rendezvous", conduit::rendezvous));
    v
}

/// A message that counts its drops.
#[derive(Debug)]
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
