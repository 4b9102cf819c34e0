//! loom models of the timed blocking waits (`recv_timeout`, `send_timeout`) of every
//! in-process flavor: a notification that lands exactly as a timed wait gives up is not
//! lost.
//!
//! loom's parks ignore deadlines, so under `cfg(loom)` conduit makes a deadline a thread
//! of the model's own that lets it pass at a point the model checker picks (conduit's
//! `sync::ModelDeadline`): every point at which the timed wait could give up is
//! explored, including just after a sender claimed its registration for a wake-up. If
//! the timed waiter gives up, the message (or the room) must stay for the other waiter,
//! which blocks without a deadline: a lost wake-up leaves it parked forever, which loom
//! reports as a deadlock.
//!
//! Every racing actor runs on a spawned thread (see `loom_shm_ring.rs` for why); with
//! the deadline's thread that makes loom's maximum of five.
#![cfg(loom)]

use std::time::Duration;

use conduit::{RecvTimeoutError, SendTimeoutError};
use loom::thread;
use loom_tests::{Make, race_model_bounded};

/// Any timeout: under loom only whether it passes matters, and the model decides when.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The default preemption bound of these models (`LOOM_RACE_PREEMPTIONS` overrides it):
/// the interleaving that loses a wake-up in a timed receive that gives up after being
/// notified needs one preemption. At 2 the two-waiter models take several minutes each.
const PREEMPTIONS: usize = 1;

/// A timed and a blocking receiver wait; one message is sent. It is received exactly
/// once: by the timed receiver, or, if that one gives up, by the blocking one (which
/// otherwise sees the disconnection once the sender is gone).
pub fn timed_and_blocking_receivers(make: Make<u32>) {
    race_model_bounded(PREEMPTIONS, move || {
        let (tx, rx) = make();
        let rx2 = rx.clone();
        let timed = thread::spawn(move || rx.recv_timeout(TIMEOUT));
        let blocking = thread::spawn(move || rx2.recv());
        let sender = thread::spawn(move || {
            tx.send(1).unwrap();
            tx
        });
        let tx = sender.join().unwrap();
        let timed = timed.join().unwrap();
        match timed {
            Ok(m) => {
                assert_eq!(m, 1);
                drop(tx);
                assert_eq!(blocking.join().unwrap(), Err(conduit::RecvError));
            }
            Err(e) => {
                assert_eq!(e, RecvTimeoutError::Timeout);
                // Still connected: only the message can end this wait.
                assert_eq!(blocking.join().unwrap(), Ok(1));
                drop(tx);
            }
        }
    });
}

/// A timed and a blocking sender wait for room in a full channel; one receive frees it.
/// If the timed sender gives up, its message comes back and the room goes to the blocking
/// sender; either way every message sent is received once.
pub fn timed_and_blocking_senders(make: Make<u32>, prefill: usize) {
    race_model_bounded(PREEMPTIONS, move || {
        let (tx, rx) = make();
        for i in 0..prefill {
            tx.send(10 + i as u32).unwrap();
        }
        let tx2 = tx.clone();
        let timed = thread::spawn(move || tx.send_timeout(1, TIMEOUT));
        let blocking = thread::spawn(move || tx2.send(2));
        let receiver = thread::spawn(move || {
            let first = rx.recv().unwrap();
            (first, rx)
        });
        let (first, rx) = receiver.join().unwrap();
        let mut got = vec![first];
        let timed = timed.join().unwrap();
        let expected: Vec<u32> = match timed {
            Ok(()) => (10..10 + prefill as u32).chain([1, 2]).collect(),
            Err(e) => {
                assert_eq!(e, SendTimeoutError::Timeout(1));
                (10..10 + prefill as u32).chain([2]).collect()
            }
        };
        while got.len() < expected.len() {
            got.push(rx.recv().unwrap());
        }
        blocking.join().unwrap().unwrap();
        got.sort_unstable();
        let mut expected = expected;
        expected.sort_unstable();
        assert_eq!(got, expected);
    });
}

/// A timed receive racing one send: it gets the message, or gives up and leaves it queued.
pub fn timed_recv_races_send(make: Make<u32>) {
    race_model_bounded(PREEMPTIONS, move || {
        let (tx, rx) = make();
        let timed = thread::spawn(move || (rx.recv_timeout(TIMEOUT), rx));
        let sender = thread::spawn(move || tx.send_timeout(1, TIMEOUT).map(|()| tx));
        let (got, rx) = timed.join().unwrap();
        match (got, sender.join().unwrap()) {
            (Ok(m), Ok(_tx)) => assert_eq!(m, 1),
            (Err(RecvTimeoutError::Timeout), Ok(_tx)) => assert_eq!(rx.try_recv(), Ok(1)),
            // Only a rendezvous send can time out: nobody took the message (and the
            // receive may then see the sender gone).
            (Err(_), Err(SendTimeoutError::Timeout(1))) => {}
            other => panic!("unexpected {other:?}"),
        }
    });
}

fn bounded1<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::bounded(1)
}

#[test]
fn bounded_timed_and_blocking_receivers() {
    timed_and_blocking_receivers(bounded1);
}

#[test]
fn bounded_timed_and_blocking_senders() {
    timed_and_blocking_senders(bounded1, 1);
}

#[test]
fn bounded_timed_recv_races_send() {
    timed_recv_races_send(bounded1);
}

#[test]
fn unbounded_timed_and_blocking_receivers() {
    timed_and_blocking_receivers(conduit::unbounded);
}

#[test]
fn unbounded_timed_recv_races_send() {
    timed_recv_races_send(conduit::unbounded);
}

#[test]
fn rendezvous_timed_and_blocking_receivers() {
    timed_and_blocking_receivers(conduit::rendezvous);
}

#[test]
fn rendezvous_timed_and_blocking_senders() {
    timed_and_blocking_senders(conduit::rendezvous, 0);
}

#[test]
fn rendezvous_timed_recv_races_send() {
    timed_recv_races_send(conduit::rendezvous);
}
