//! loom models of user code that panics inside the channel (issue 18, defect 1): a
//! message `Drop` in each flavor's discard path, where the last receiver's drop races a
//! sender and every message is dropped exactly once, whichever side ends up dropping it,
//! with the first panic reaching the caller whose drop ran it; and a `Waker` that panics
//! while a disconnection wakes the waiters, which must not keep the others asleep.
#![cfg(loom)]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Wake, Waker};

use conduit::{Receiver, Sender};
use loom::thread;

/// Per message id, how often it was dropped. Plain std atomics: each model iteration
/// makes its own, and they are read only after the threads are joined.
#[derive(Default)]
struct Drops([AtomicUsize; 5]);

impl Drops {
    fn assert_once(&self, ids: usize, what: &str) {
        for (id, n) in self.0.iter().enumerate() {
            let expected = usize::from(id < ids);
            assert_eq!(n.load(Ordering::SeqCst), expected, "{what}: message {id}");
        }
    }
}

/// A message whose `Drop` counts itself, then panics.
struct Boom {
    id: usize,
    drops: std::sync::Arc<Drops>,
}

impl Drop for Boom {
    fn drop(&mut self) {
        self.drops.0[self.id].fetch_add(1, Ordering::SeqCst);
        panic!("boom {}", self.id);
    }
}

/// The panics these models cause on purpose would print once per explored execution:
/// keep them quiet, and report every other panic as usual.
fn quiet_booms() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let boom = message(info.payload()).is_some_and(|m| m.starts_with("boom "));
            if !boom {
                default(info);
            }
        }));
    });
}

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    quiet_booms();
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(f);
}

/// The message of a panic payload, if it has one.
fn message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|m| m.to_string()))
}

/// The message of a caught panic.
fn panic_message(r: std::thread::Result<()>) -> Option<String> {
    r.err()
        .map(|p| message(&*p).unwrap_or_else(|| "a panic without a message".into()))
}

/// `queued` messages (ids `0..queued`) are queued, then a second sender's `try_send` of
/// message `queued` races the last receiver's drop. Each message panics when dropped.
/// The message the sender raced with is either queued in time (and discarded with the
/// rest) or handed back and dropped by the sender; the receiver's drop panics with the
/// first queued message's panic; every message is dropped exactly once, and the last
/// sender's drop then finds nothing left.
fn discard_races_a_send(make: fn() -> (Sender<Boom>, Receiver<Boom>), queued: usize) {
    model(move || {
        let drops = std::sync::Arc::new(Drops::default());
        let (tx, rx) = make();
        for id in 0..queued {
            let msg = Boom {
                id,
                drops: drops.clone(),
            };
            assert!(tx.try_send(msg).is_ok());
        }
        let tx2 = tx.clone();
        let racing = Boom {
            id: queued,
            drops: drops.clone(),
        };
        let sender = thread::spawn(move || {
            let sent = catch_unwind(AssertUnwindSafe(|| tx2.try_send(racing).is_ok()));
            // Handed back: its drop panicked here. Sent: it did not drop it here.
            sent.unwrap_or(false)
        });
        let discarded = panic_message(catch_unwind(AssertUnwindSafe(|| drop(rx))));
        let sent = sender.join().unwrap();
        if queued > 0 || sent {
            assert_eq!(discarded.as_deref(), Some("boom 0"));
        }
        drops.assert_once(queued + 1, "after the race");
        drop(tx);
        drops.assert_once(queued + 1, "after the last sender's drop");
    });
}

/// Unbounded: three queued messages fill a block (three slots under loom), so the
/// racing send crosses into the next block while the discard walks the list.
#[test]
fn unbounded_discard_races_a_send() {
    discard_races_a_send(conduit::unbounded, 3);
}

/// Bounded: one queued message, and the racing send claims the ring's second slot.
#[test]
fn bounded_discard_races_a_send() {
    discard_races_a_send(|| conduit::bounded(2), 1);
}

/// Bounded, full: the racing send finds the ring full or disconnected.
#[test]
fn bounded_full_discard_races_a_send() {
    discard_races_a_send(|| conduit::bounded(1), 1);
}

/// Rendezvous: a sender parked in `send` holds its message while the last receiver is
/// dropped; the receiver's drop discards nothing, and the sender gets its message back
/// (its drop panics in the sender's thread), once.
#[test]
fn rendezvous_parked_sender_races_the_last_receiver_drop() {
    model(|| {
        let drops = std::sync::Arc::new(Drops::default());
        let (tx, rx) = conduit::rendezvous::<Boom>();
        let msg = Boom {
            id: 0,
            drops: drops.clone(),
        };
        let sender = thread::spawn(move || {
            panic_message(catch_unwind(AssertUnwindSafe(|| {
                assert!(tx.send(msg).is_err(), "no receiver takes it");
            })))
        });
        assert_eq!(
            panic_message(catch_unwind(AssertUnwindSafe(|| drop(rx)))),
            None
        );
        assert_eq!(sender.join().unwrap().as_deref(), Some("boom 0"));
        drops.assert_once(1, "rendezvous");
    });
}

/// A waker whose `wake` panics.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("boom wake");
    }
}

/// An async receive registered with a waker that panics, and another parked in
/// `block_on` on another thread, both wait when the last sender is dropped. The drop
/// panics with the waker's panic, and the parked receive still wakes and sees the
/// disconnection (loom reports a deadlock otherwise), whichever registered first.
fn disconnect_wakes_past_a_panicking_waker(make: fn() -> (Sender<u32>, Receiver<u32>)) {
    model(move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let parked = thread::spawn(move || loom::future::block_on(rx2.recv_async()));
        let waker = Waker::from(std::sync::Arc::new(PanickingWaker));
        let mut fut = rx.recv_async();
        let polled = std::pin::Pin::new(&mut fut).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        let dropped = panic_message(catch_unwind(AssertUnwindSafe(|| drop(tx))));
        assert_eq!(dropped.as_deref(), Some("boom wake"));
        assert_eq!(parked.join().unwrap(), Err(conduit::RecvError));
        drop(fut);
    });
}

#[test]
fn unbounded_disconnect_wakes_past_a_panicking_waker() {
    disconnect_wakes_past_a_panicking_waker(conduit::unbounded);
}

#[test]
fn bounded_disconnect_wakes_past_a_panicking_waker() {
    disconnect_wakes_past_a_panicking_waker(|| conduit::bounded(1));
}

#[test]
fn rendezvous_disconnect_wakes_past_a_panicking_waker() {
    disconnect_wakes_past_a_panicking_waker(conduit::rendezvous);
}
