//! What dropping a send or receive future releases, in every state it can be dropped
//! in: unpolled, pending (holding its message, or for rendezvous its offer), and
//! completed; with a borrowed handle and with an owned one (`into_send_async`,
//! `into_recv_async`). The futures drop their fields themselves, and skip that where it
//! would do nothing (`src/future.rs`): every message must still be dropped exactly once
//! and every owned handle released.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Counted, all, poll_noop, watchdog};
use conduit::{RecvError, TryRecvError, TrySendError};

/// Whether a send on this flavor can wait (all but unbounded).
fn sends_wait(name: &str) -> bool {
    name != "unbounded"
}

/// Fills a channel whose sends can wait (rendezvous: sends with no receiver waiting),
/// so that the next send waits; returns how many messages it queued. The `try_send`
/// that found it full drops its message.
fn fill<T>(tx: &conduit::Sender<T>, mut msg: impl FnMut(usize) -> T) -> usize {
    let mut queued = 0;
    while tx.try_send(msg(1000 + queued)).is_ok() {
        queued += 1;
    }
    queued
}

#[test]
fn send_futures_drop_their_message_exactly_once() {
    for (name, make) in all::<Counted>() {
        watchdog(move || {
            let drops = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = make();
            // Unpolled, borrowed and owned: the message goes with the future.
            drop(tx.send_async(Counted::new(1, &drops)));
            drop(tx.clone().into_send_async(Counted::new(2, &drops)));
            assert_eq!(drops.load(Ordering::SeqCst), 2, "{name}");

            // Pending (rendezvous: with its offer queued), borrowed and owned.
            let mut queued = 0;
            if sends_wait(name) {
                queued = fill(&tx, |id| Counted::new(id, &drops));
                assert_eq!(drops.load(Ordering::SeqCst), 3, "{name}");
                let mut pending = tx.send_async(Counted::new(3, &drops));
                assert!(poll_noop(&mut pending).is_pending(), "{name}");
                let mut owned = tx.clone().into_send_async(Counted::new(4, &drops));
                assert!(poll_noop(&mut owned).is_pending(), "{name}");
                drop(pending);
                drop(owned);
                assert_eq!(drops.load(Ordering::SeqCst), 5, "{name}");
            } else {
                drops.fetch_add(3, Ordering::SeqCst);
            }
            // Nothing of theirs was delivered.
            for _ in 0..queued {
                assert!(rx.try_recv().is_ok_and(|m| m.id >= 1000), "{name}");
            }
            assert_eq!(
                rx.try_recv().map(|m| m.id),
                Err(TryRecvError::Empty),
                "{name}"
            );
            assert_eq!(drops.load(Ordering::SeqCst), 5 + queued, "{name}");

            // Completed: the message was delivered, the future drops nothing.
            let t = std::thread::spawn(move || {
                let m = rx.recv().expect("a message");
                assert_eq!(m.id, 6);
                rx
            });
            futures::executor::block_on(tx.send_async(Counted::new(6, &drops)))
                .expect("the receiver is there");
            let rx = t.join().expect("receiver thread");
            assert_eq!(drops.load(Ordering::SeqCst), 6 + queued, "{name}");
            drop((tx, rx));
            assert_eq!(Arc::strong_count(&drops), 1, "{name}: a message leaked");
        });
    }
}

#[test]
fn owned_futures_release_their_handle_in_every_state() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            // Unpolled owned send: its sender was the last one.
            let (tx, rx) = make();
            drop(tx.into_send_async(1));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");

            // Pending owned send.
            if sends_wait(name) {
                let (tx, rx) = make();
                fill(&tx, |_| 0);
                let mut fut = tx.into_send_async(1);
                assert!(poll_noop(&mut fut).is_pending(), "{name}");
                drop(fut);
                while rx.try_recv() == Ok(0) {}
                assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
            }

            // Completed owned send (rendezvous: to a receiver already waiting).
            let (tx, rx) = make();
            let t = std::thread::spawn(move || (rx.recv(), rx));
            futures::executor::block_on(tx.into_send_async(7)).expect("the receiver is there");
            let (got, rx) = t.join().expect("receiver thread");
            assert_eq!(got, Ok(7), "{name}");
            assert_eq!(rx.recv(), Err(RecvError), "{name}");

            // Unpolled, pending and completed owned receives: the last receiver goes.
            let (tx, rx) = make();
            drop(rx.into_recv_async());
            assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)), "{name}");
            let (tx, rx) = make();
            let mut fut = rx.into_recv_async();
            assert!(poll_noop(&mut fut).is_pending(), "{name}");
            drop(fut);
            assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)), "{name}");
            let (tx, rx) = make();
            let t = std::thread::spawn(move || tx.send(5).map(|()| tx));
            assert_eq!(
                futures::executor::block_on(rx.into_recv_async()),
                Ok(5),
                "{name}"
            );
            let tx = t.join().expect("sender thread").expect("sent");
            assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)), "{name}");
        });
    }
}
