//! loom models for conduit, shared by the per-flavor test files in `tests/`.
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
//! (bound the search with `LOOM_MAX_PREEMPTIONS=2` or `3`). Without `--cfg loom` this
//! crate is empty.
//!
//! Each model is written once, generic over how the channel is made, and every flavor's
//! test file runs the ones that apply to it.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use conduit::{Receiver, Sender};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Runs a model with a branch budget large enough for event-listener's internals.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(f);
}

/// Makes a channel for a model.
pub type Make<T> = fn() -> (Sender<T>, Receiver<T>);

/// Two senders, one receiver: every message arrives exactly once, FIFO per sender.
pub fn two_senders_one_receiver(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let tx2 = tx.clone();
        let a = thread::spawn(move || tx.send(1).unwrap());
        let b = thread::spawn(move || {
            tx2.send(10).unwrap();
            tx2.send(11).unwrap();
        });
        let mut got = vec![rx.recv().unwrap(), rx.recv().unwrap(), rx.recv().unwrap()];
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(rx.try_recv(), Err(conduit::TryRecvError::Disconnected));
        let pos10 = got.iter().position(|&m| m == 10).unwrap();
        let pos11 = got.iter().position(|&m| m == 11).unwrap();
        assert!(pos10 < pos11, "per-sender FIFO: {got:?}");
        got.sort_unstable();
        assert_eq!(got, [1, 10, 11]);
    });
}

/// One sender, two receivers racing: each message goes to exactly one receiver.
pub fn one_sender_two_receivers(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let a = thread::spawn(move || rx.recv().ok());
        let b = thread::spawn(move || rx2.recv().ok());
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        drop(tx);
        let mut got: Vec<u32> = [a.join().unwrap(), b.join().unwrap()]
            .into_iter()
            .flatten()
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// The last sender is dropped while a receiver parks: the receiver wakes and sees
/// the disconnection (no lost wake-up), after draining what was queued.
pub fn last_sender_drop_wakes_receiver(make: Make<u32>, queued: bool) {
    model(move || {
        let (tx, rx) = make();
        let r = thread::spawn(move || {
            let mut got = vec![];
            while let Ok(m) = rx.recv() {
                got.push(m);
            }
            got
        });
        if queued {
            tx.send(7).unwrap();
        }
        drop(tx);
        let got = r.join().unwrap();
        assert_eq!(got, if queued { vec![7] } else { vec![] });
    });
}

/// The last receiver is dropped while a sender is blocked (full, or no receiver for a
/// rendezvous): the sender wakes with its message handed back.
pub fn last_receiver_drop_wakes_sender(make: Make<u32>, prefill: usize) {
    model(move || {
        let (tx, rx) = make();
        for i in 0..prefill {
            tx.send(100 + i as u32).unwrap();
        }
        let s = thread::spawn(move || tx.send(1));
        drop(rx);
        assert_eq!(s.join().unwrap(), Err(conduit::SendError(1)));
    });
}

/// A sender blocked on a full channel is woken by a receive (no lost wake-up).
pub fn blocked_sender_woken_by_recv(make: Make<u32>, prefill: usize) {
    model(move || {
        let (tx, rx) = make();
        for i in 0..prefill {
            tx.send(i as u32).unwrap();
        }
        let s = thread::spawn(move || tx.send(99));
        let mut got = vec![];
        for _ in 0..=prefill {
            got.push(rx.recv().unwrap());
        }
        s.join().unwrap().unwrap();
        assert_eq!(got.last(), Some(&99));
    });
}

/// A message type that counts its drops.
#[derive(Debug)]
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Messages queued when the last receiver goes are dropped exactly once, at that
/// moment, even while a sender races to send more.
pub fn queued_messages_dropped_once(make: Make<Counted>, sends: usize) {
    model(move || {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = make();
        for _ in 0..sends {
            tx.send(Counted(drops.clone())).unwrap();
        }
        let tx2 = tx.clone();
        let d = drops.clone();
        let s = thread::spawn(move || {
            // Either queued (then dropped with the queue) or handed back and dropped here.
            let _ = tx2.try_send(Counted(d));
        });
        let taken = rx.try_recv().ok();
        drop(taken);
        drop(rx);
        s.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), sends + 1);
        drop(tx);
        assert_eq!(drops.load(Ordering::SeqCst), sends + 1);
    });
}

/// Polls a future once with the given context.
fn poll_once<F: Future + Unpin>(fut: &mut F, cx: &mut Context<'_>) -> Poll<F::Output> {
    Pin::new(fut).poll(cx)
}

/// Two async receives are pending; one message is sent; the first future is dropped
/// without being polled again. The wake-up it may have consumed must pass to the other,
/// which then completes (loom reports a deadlock otherwise).
pub fn cancelled_recv_passes_wakeup(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let r = thread::spawn(move || {
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut first = rx.recv_async();
            let first_got = match poll_once(&mut first, &mut cx) {
                Poll::Ready(res) => Some(res),
                Poll::Pending => None,
            };
            let mut second = rx2.recv_async();
            let second_got = match poll_once(&mut second, &mut cx) {
                Poll::Ready(res) => res,
                Poll::Pending => {
                    drop(first);
                    loom::future::block_on(second)
                }
            };
            (first_got, second_got)
        });
        tx.send(5).unwrap();
        drop(tx);
        match r.join().unwrap() {
            (Some(first), second) => {
                assert_eq!(first, Ok(5));
                assert_eq!(second, Err(conduit::RecvError));
            }
            (None, second) => assert_eq!(second, Ok(5)),
        }
    });
}
