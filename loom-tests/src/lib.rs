//! loom models for conduit, shared by the per-flavor test files in `tests/`.
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`
//! (bound the search with `LOOM_MAX_PREEMPTIONS`: CI uses 6, which takes about four
//! minutes on two cores; 3 takes under one). Without `--cfg loom` this crate is empty.
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
/// The preemption bound comes from `LOOM_MAX_PREEMPTIONS`.
pub fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(f);
}

/// Runs a race model, whose spin-waiting threads make the search grow steeply with the
/// preemption bound: it uses `LOOM_RACE_PREEMPTIONS` (default 1) instead, so CI stays
/// fast while a deeper search stays one variable away. (At 2, the bounded flavor's
/// blocking two-receiver models alone ran for over ten minutes without finishing.)
fn race_model<F: Fn() + Sync + Send + 'static>(f: F) {
    race_model_bounded(1, f);
}

/// [`race_model`] with another default preemption bound, for models small enough to
/// search deeper (`LOOM_RACE_PREEMPTIONS` still overrides it).
pub fn race_model_bounded<F: Fn() + Sync + Send + 'static>(default: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.preemption_bound = Some(
        std::env::var("LOOM_RACE_PREEMPTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    );
    builder.check(f);
}

/// Makes a channel for a model.
pub type Make<T> = fn() -> (Sender<T>, Receiver<T>);

/// How the race models wait: `Spin` retries `try_` operations, yielding to the model's
/// scheduler, so the models explore the queue algorithm rather than the waiting
/// machinery (which has models of its own); `Block` uses the blocking calls (needed for
/// rendezvous, where `try_` alone never pairs up).
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// Spin on `try_send`/`try_recv`.
    Spin,
    /// Call `send`/`recv`.
    Block,
}

fn recv_with<T>(rx: &Receiver<T>, wait: Wait) -> Option<T> {
    if let Wait::Block = wait {
        return rx.recv().ok();
    }
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(conduit::TryRecvError::Disconnected) => return None,
            Err(conduit::TryRecvError::Empty) => thread::yield_now(),
        }
    }
}

fn send_with<T>(tx: &Sender<T>, mut msg: T, wait: Wait) {
    if let Wait::Block = wait {
        return tx.send(msg).map_err(|_| ()).expect("disconnected");
    }
    loop {
        match tx.try_send(msg) {
            Ok(()) => return,
            Err(conduit::TrySendError::Full(m)) => {
                msg = m;
                thread::yield_now();
            }
            Err(conduit::TrySendError::Disconnected(_)) => panic!("disconnected"),
        }
    }
}

/// Two senders, one receiver: every message arrives exactly once, FIFO per sender.
pub fn two_senders_one_receiver(make: Make<u32>, wait: Wait) {
    race_model(move || {
        let (tx, rx) = make();
        let tx2 = tx.clone();
        let a = thread::spawn(move || send_with(&tx, 1, wait));
        let b = thread::spawn(move || {
            send_with(&tx2, 10, wait);
            send_with(&tx2, 11, wait);
        });
        let mut got: Vec<u32> = (0..3).map(|_| recv_with(&rx, wait).unwrap()).collect();
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
pub fn one_sender_two_receivers(make: Make<u32>, wait: Wait) {
    race_model(move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let a = thread::spawn(move || recv_with(&rx, wait));
        let b = thread::spawn(move || recv_with(&rx2, wait));
        send_with(&tx, 1, wait);
        send_with(&tx, 2, wait);
        drop(tx);
        let mut got: Vec<u32> = [a.join().unwrap(), b.join().unwrap()]
            .into_iter()
            .flatten()
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// One sender streams `n` messages while `receivers` receivers take them: every message
/// arrives exactly once, and each receiver sees increasing values. Past two blocks of the
/// unbounded flavor, the blocks emptied by the receivers are recycled while they race.
/// `preemptions` is the default preemption bound (see [`race_model_bounded`]).
pub fn stream(make: Make<u32>, n: u32, receivers: usize, preemptions: usize) {
    race_model_bounded(preemptions, move || {
        let (tx, rx) = make();
        let takers: Vec<_> = (0..receivers)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(m) = recv_with(&rx, Wait::Spin) {
                        got.push(m);
                    }
                    got
                })
            })
            .collect();
        drop(rx);
        for i in 0..n {
            send_with(&tx, i, Wait::Spin);
        }
        drop(tx);
        let mut all = Vec::new();
        for t in takers {
            let got = t.join().unwrap();
            assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
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

/// An async receive on an empty channel completes once a message is sent: no wake-up is
/// lost between its registration and the sender's look at the waiter counts.
pub fn async_recv_woken_by_send(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let r = thread::spawn(move || loom::future::block_on(rx.recv_async()));
        tx.send(3).unwrap();
        assert_eq!(r.join().unwrap(), Ok(3));
    });
}

/// An async receive is woken by the last sender's drop and reports the disconnection.
pub fn async_recv_woken_by_disconnect(make: Make<u32>) {
    model(move || {
        let (tx, rx) = make();
        let r = thread::spawn(move || loom::future::block_on(rx.recv_async()));
        drop(tx);
        assert_eq!(r.join().unwrap(), Err(conduit::RecvError));
    });
}

/// An async send on a full channel completes once a message is received.
pub fn async_send_woken_by_recv(make: Make<u32>, prefill: usize) {
    model(move || {
        let (tx, rx) = make();
        for i in 0..prefill {
            tx.send(i as u32).unwrap();
        }
        let s = thread::spawn(move || loom::future::block_on(tx.send_async(99)));
        let mut got = vec![];
        for _ in 0..=prefill {
            got.push(rx.recv().unwrap());
        }
        s.join().unwrap().unwrap();
        assert_eq!(got.last(), Some(&99));
    });
}

/// Two receivers wait at once, the first with `recv_async`, the second with `recv_b`,
/// and two messages are sent: both receivers complete.
fn two_receivers_both_served(make: Make<u32>, recv_b: fn(Receiver<u32>) -> u32) {
    race_model(move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let a = thread::spawn(move || loom::future::block_on(rx.recv_async()).unwrap());
        let b = thread::spawn(move || recv_b(rx2));
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let mut got = [a.join().unwrap(), b.join().unwrap()];
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

/// An async and a blocking receiver wait at once and two messages are sent: both
/// complete. Each kind of waiter has its own count, and a notification claimed from
/// one count reaches a waiter of that kind.
pub fn async_and_blocking_receivers(make: Make<u32>) {
    two_receivers_both_served(make, |rx| rx.recv().unwrap());
}

/// Two async receivers wait at once and two messages are sent: both complete, so the
/// waker list's accounting (counts claimed and withdrawn, notifications passed on by a
/// waiter whose re-check succeeded first) loses nothing.
pub fn two_async_receivers(make: Make<u32>) {
    two_receivers_both_served(make, |rx| loom::future::block_on(rx.recv_async()).unwrap());
}

/// Two async receives wait: the older is polled once and then dropped, the younger
/// sleeps in `block_on` (polled again only when woken); one message is sent meanwhile.
/// The send notifies the older wait if it is still registered, and then its drop must
/// pass the notification on, or the sleeper never wakes (loom reports the deadlock).
/// That interleaving takes two preemptions; a search bounded at one misses it.
pub fn dropped_recv_passes_wakeup_to_sleeper(make: Make<u32>) {
    race_model_bounded(2, move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut older = rx.recv_async();
        assert!(poll_once(&mut older, &mut cx).is_pending());
        let b = thread::spawn(move || loom::future::block_on(rx2.recv_async()));
        let s = thread::spawn(move || {
            tx.send(5).unwrap();
            tx // kept alive: a disconnection would wake the sleeper anyway
        });
        drop(older);
        let tx = s.join().unwrap();
        assert_eq!(b.join().unwrap(), Ok(5));
        drop(tx);
    });
}
