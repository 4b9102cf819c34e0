//! loom models of the shm async hub (`conduit::shm`'s `hub` module): a future counts
//! itself in its side's `async_waiters`, re-checks the channel and arms a registration; a
//! committer bumps `async_seq` and wakes the helper when the count is not zero; the
//! helper thread wakes the registered tasks; completion and cancellation disarm and
//! un-count exactly once.
//!
//! The hub is the production code (`conduit::__loom_shm::AsyncHub`), over one side's
//! words and a one-message mailbox that stands for the ring (its commit is a SeqCst RMW
//! as the ring's are; the ring's own interplay with the wait words is modelled in
//! `loom_shm_ring.rs`). The helper thread runs in the model; its multi-word
//! wait (`futex_waitv` in production) is a stand-in for the kernel without a timeout, so
//! a lost wake-up hangs the model and loom reports the deadlock. Each model stops the
//! helper and joins it at the end: a helper that kept waking itself would never block,
//! and the model would run into loom's branch limit.
//!
//! Every racing actor runs on a spawned thread and the model's main thread only sets up
//! and joins (as in `loom_peers.rs`).
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use conduit::__loom_shm::AsyncHub;
use loom::future::AtomicWaker;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use loom_tests::race_model_bounded;

/// A hub and its helper thread running.
struct Setup {
    hub: Arc<AsyncHub>,
    helper: thread::JoinHandle<()>,
}

impl Setup {
    fn new() -> Self {
        let hub = Arc::new(AsyncHub::new());
        let helper = {
            let hub = hub.clone();
            thread::spawn(move || hub.run())
        };
        Setup { hub, helper }
    }

    /// A sender on its own thread: one send, announced to async receivers.
    fn sender(&self, value: usize) -> thread::JoinHandle<()> {
        let hub = self.hub.clone();
        thread::spawn(move || hub.send(value))
    }

    /// Stops the helper, joins it, and checks the accounting: no wait counted or armed.
    fn finish(self) {
        self.hub.stop();
        self.helper.join().unwrap();
        assert_eq!(self.hub.async_waiters(), 0, "async_waiters drifted");
        assert_eq!(self.hub.armed(), 0, "a registration was left armed");
    }
}

/// Polls `fut` once with `cx`.
fn poll_once<F: Future + Unpin>(fut: &mut F, cx: &mut Context<'_>) -> Poll<F::Output> {
    Pin::new(fut).poll(cx)
}

/// (a) An async receive registers while a sender commits and notifies: the helper
/// wakes the task (no lost wake-up: `block_on` would sleep forever otherwise) and it
/// gets the message.
#[test]
fn async_recv_woken_through_helper() {
    race_model_bounded(2, || {
        let s = Setup::new();
        let receiver = {
            let hub = s.hub.clone();
            thread::spawn(move || loom::future::block_on(hub.recv_async()))
        };
        let sender = s.sender(7);
        assert_eq!(receiver.join().unwrap(), 7);
        sender.join().unwrap();
        s.finish();
    });
}

/// (b) A registered wait is cancelled (its future dropped) while a notification races
/// it: the count returns to exactly 0, nothing stays armed, and the helper goes back to
/// sleep (it is joined). The message stays in the mailbox.
#[test]
fn cancelled_wait_races_notification() {
    race_model_bounded(2, || {
        let s = Setup::new();
        let receiver = {
            let hub = s.hub.clone();
            thread::spawn(move || {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut fut = hub.recv_async();
                let got = poll_once(&mut fut, &mut cx);
                drop(fut);
                match got {
                    Poll::Ready(v) => Some(v),
                    Poll::Pending => None,
                }
            })
        };
        let sender = s.sender(7);
        let got = receiver.join().unwrap();
        sender.join().unwrap();
        match got {
            Some(v) => assert_eq!(v, 7),
            None => assert!(s.hub.has_message(), "the cancelled wait took the message"),
        }
        s.finish();
    });
}

/// (c) Two async receives wait on one side; a send wakes them, and one (the leaver) is
/// cancelled after its wake without being polled again. The other (the stayer) still
/// completes: the helper wakes every registration of the side, not just one that may
/// leave. The leaver also ends if the stayer took the message first (the stayer tells
/// it so and wakes it: no commit would), and if the leaver took the message at its first poll, a second
/// one is sent for the stayer.
#[test]
fn cancelled_after_wake_other_completes() {
    race_model_bounded(1, || {
        let s = Setup::new();
        let leaver_waker = Arc::new(AtomicWaker::new());
        let stayer_done = Arc::new(AtomicBool::new(false));
        let leaver = {
            let hub = s.hub.clone();
            let (waker, done) = (leaver_waker.clone(), stayer_done.clone());
            thread::spawn(move || {
                let mut fut = hub.recv_async();
                // Polled once; if pending, waits for a wake and is then dropped.
                let mut polled = false;
                let got = loom::future::block_on(std::future::poll_fn(|cx| {
                    if polled {
                        return Poll::Ready(None);
                    }
                    polled = true;
                    waker.register_by_ref(cx.waker());
                    match poll_once(&mut fut, cx) {
                        Poll::Ready(v) => Poll::Ready(Some(v)),
                        Poll::Pending if done.load(Ordering::SeqCst) => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    }
                }));
                drop(fut);
                got
            })
        };
        let stayer = {
            let hub = s.hub.clone();
            thread::spawn(move || {
                let got = loom::future::block_on(hub.recv_async());
                stayer_done.store(true, Ordering::SeqCst);
                leaver_waker.wake();
                got
            })
        };
        s.sender(1).join().unwrap();
        if let Some(v) = leaver.join().unwrap() {
            assert_eq!(v, 1);
            // On the main thread: the model's thread limit (5) is reached.
            s.hub.send(2);
        }
        let got = stayer.join().unwrap();
        assert!(got == 1 || got == 2);
        s.finish();
    });
}
