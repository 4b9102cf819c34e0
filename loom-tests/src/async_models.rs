//! loom models of async waiting: the waiter protocol of `chan::signal` (arm, disarm,
//! re-poll, notifications passed on, counts exact) and disconnections while async
//! senders and receivers are pending, shared by the flavors' test files.
//!
//! The models of `chan::signal` that predate this file are in the crate root: a woken
//! receive dropped before polling passes its wake-up on to a sleeping one
//! (`dropped_recv_passes_wakeup_to_sleeper`, which now also checks the counts), and
//! async and blocking waiters together.
//!
//! Futures are polled by hand with [`poll_once`] where a model needs a poll to race
//! something, and then finished with `loom::future::block_on`, which parks until woken:
//! a lost wake-up is a deadlock, which loom reports. Every model ends by checking that
//! the channel's waiter counts are back to zero (`__waiter_counts`, a test-only
//! accessor compiled under `--cfg loom`).

use std::future::Future;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use crate::{Counted, Make, model, poll_once};

/// A waker that counts its wake-ups (in a loom atomic).
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts, and the handle to read the count.
fn counting_waker() -> (Waker, std::sync::Arc<CountingWaker>) {
    let count = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
    (Waker::from(count.clone()), count)
}

/// Arm and disarm, then re-poll with another waker: a receiver thread registers an
/// async receive and drops it (disarm), registers a second one with waker `a`, and
/// then waits for it in `block_on`, whose waker is another. A send races all of it. The
/// send's wake-up must reach the waker of the latest poll (a stale `a` would leave
/// `block_on` asleep: a deadlock), the message arrives once, and no count is left.
pub fn arm_disarm_repoll(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let r = thread::spawn(move || {
            let (a, a_count) = counting_waker();
            let mut cx = Context::from_waker(&a);
            let mut cancelled = rx.recv_async();
            if let Poll::Ready(got) = poll_once(&mut cancelled, &mut cx) {
                drop(cancelled);
                return (got, rx);
            }
            drop(cancelled);
            let mut f = rx.recv_async();
            let got = match poll_once(&mut f, &mut cx) {
                Poll::Ready(got) => got,
                Poll::Pending => {
                    let woken_before = a_count.0.load(Ordering::SeqCst);
                    let got = loom::future::block_on(&mut f);
                    // Once the stored waker was replaced, `a` is never woken again.
                    assert!(a_count.0.load(Ordering::SeqCst) <= woken_before + 1);
                    got
                }
            };
            drop(f);
            (got, rx)
        });
        tx.send(1).unwrap();
        let (got, rx) = r.join().unwrap();
        assert_eq!(got, Ok(1));
        assert_eq!(rx.__waiter_counts(), [0, 0]);
        drop(tx);
    });
}

/// Which side waits in [`disconnect_with_pending_async`]; the other side disconnects.
#[derive(Clone, Copy, Debug)]
pub enum Pending {
    /// Async receives wait on an empty channel; the last sender goes.
    Receivers,
    /// Async sends wait on a full channel (`prefill` messages fill it); the last
    /// receiver goes.
    Senders {
        /// Messages that fill the channel (0 for rendezvous).
        prefill: usize,
    },
}

/// Two async operations wait (unless the disconnection comes first); the other side's
/// last handle is dropped while the waiting thread polls the first one again (so the disconnection's notification can land
/// between that poll's failed attempt and its look at its registration). Both complete
/// with the disconnection (a send hands its message back), and the waiter counts
/// return to exactly zero: the entries the disconnection notified had their counts
/// consumed, however their futures then ended.
pub fn disconnect_with_pending_async(make: Make<u32>, pending: Pending) {
    model(move || {
        let (tx, rx) = make();
        match pending {
            Pending::Receivers => {
                let w = thread::spawn(move || {
                    let mut a = rx.recv_async();
                    let mut b = rx.recv_async();
                    let (a_got, b_got) = finish_both(&mut a, &mut b);
                    drop((a, b));
                    assert_eq!(
                        (a_got, b_got),
                        (Err(conduit::RecvError), Err(conduit::RecvError))
                    );
                    rx
                });
                drop(tx);
                let rx = w.join().unwrap();
                assert_eq!(rx.__waiter_counts(), [0, 0]);
            }
            Pending::Senders { prefill } => {
                for i in 0..prefill {
                    tx.try_send(100 + i as u32).unwrap();
                }
                let w = thread::spawn(move || {
                    let mut a = tx.send_async(1);
                    let mut b = tx.send_async(2);
                    let (a_got, b_got) = finish_both(&mut a, &mut b);
                    drop((a, b));
                    assert_eq!(a_got, Err(conduit::SendError(1)));
                    assert_eq!(b_got, Err(conduit::SendError(2)));
                    tx
                });
                drop(rx);
                let tx = w.join().unwrap();
                assert_eq!(tx.__waiter_counts(), [0, 0]);
            }
        }
    });
}

/// Polls `a` and `b` once each, then `a` again (each unless already finished; the
/// polls race whatever the other threads do), then waits for each in `block_on`.
fn finish_both<F: Future + Unpin>(a: &mut F, b: &mut F) -> (F::Output, F::Output) {
    let mut cx = Context::from_waker(Waker::noop());
    let first_a = poll_once(a, &mut cx);
    let first_b = poll_once(b, &mut cx);
    let a_got = match first_a {
        Poll::Ready(got) => got,
        Poll::Pending => match poll_once(a, &mut cx) {
            Poll::Ready(got) => got,
            Poll::Pending => loom::future::block_on(&mut *a),
        },
    };
    let b_got = match first_b {
        Poll::Ready(got) => got,
        Poll::Pending => loom::future::block_on(&mut *b),
    };
    (a_got, b_got)
}

/// A blocked receiver woken by the last sender's drop leaves no count behind.
pub fn blocking_waiter_count_after_disconnect(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let r = thread::spawn(move || {
            assert_eq!(rx.recv(), Err(conduit::RecvError));
            rx
        });
        drop(tx);
        let rx = r.join().unwrap();
        assert_eq!(rx.__waiter_counts(), [0, 0]);
    });
}

/// Rendezvous: an async send is polled (its offer queued), polled again, and dropped,
/// while an async receive takes offers. The message is delivered exactly once: either
/// the receiver got it (then a `Ready(Ok)` second poll, or the drop, counts it as
/// sent), or the drop withdrew it and dropped it, once. The sender's drop is the last
/// sender's, so a receiver still waiting then sees the disconnection.
pub fn dropped_send_offer_delivered_once(make: Make<Counted>) {
    // Which outcomes the search reached, across its executions: both must be.
    static DELIVERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static WITHDRAWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    model(move || {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = make();
        let d = drops.clone();
        let s = thread::spawn(move || {
            let mut cx = Context::from_waker(Waker::noop());
            let mut f = tx.send_async(Counted(d));
            let mut sent = poll_once(&mut f, &mut cx).is_ready();
            if !sent {
                match poll_once(&mut f, &mut cx) {
                    Poll::Ready(res) => {
                        assert!(res.is_ok(), "no disconnection while the sender lives");
                        sent = true;
                    }
                    Poll::Pending => {}
                }
            }
            drop(f);
            sent
        });
        let got = loom::future::block_on(rx.recv_async()).ok();
        let sent = s.join().unwrap();
        if sent {
            assert!(got.is_some(), "a completed send was delivered");
        }
        assert_eq!(drops.load(Ordering::SeqCst) + usize::from(got.is_some()), 1);
        let seen = if got.is_some() {
            &DELIVERED
        } else {
            &WITHDRAWN
        };
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(got);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(rx.__waiter_counts(), [0, 0]);
    });
    assert!(DELIVERED.load(std::sync::atomic::Ordering::Relaxed));
    assert!(WITHDRAWN.load(std::sync::atomic::Ordering::Relaxed));
}
