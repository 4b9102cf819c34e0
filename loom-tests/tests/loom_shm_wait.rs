//! loom models of the shared-memory channels' blocking waits (`conduit::shm` `wait` and
//! `futex` modules) with the production wait words (`SideSignal`): the waiting loop,
//! registration, re-check and sleep are the production code; only the kernel's futex is
//! modelled (a queue of sleepers under a lock standing for the hash-bucket lock), and its
//! sleeps have no timeout slice, so a wake-up the protocol loses hangs the model (loom
//! reports the deadlock) instead of being covered up by the slice.
//!
//! Every racing actor runs on a spawned thread (see `loom_shm_ring.rs` for why).
#![cfg(loom)]

use conduit::__loom_shm::{Lane, Presence, Ring, Sides, Stall};
use conduit::RecvTimeoutError;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, race_model_bounded};

/// A receiver blocks on an empty ring (registers, re-checks, sleeps) while a sender
/// commits and wakes a sleeper only if the waiter count is non-zero: the receiver gets the
/// message (no lost wake-up between its re-check and its sleep).
#[test]
fn blocked_receiver_woken_by_commit() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let sides = Arc::new(Sides::new());
        let senders = Arc::new(Presence::new());
        let r = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), senders.clone());
            thread::spawn(move || ring.recv_blocking(&Lane::new(), &sides, &senders, false))
        };
        let s = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || ring.send_notify(&Lane::new(), 7, &sides))
        };
        s.join().unwrap().unwrap();
        assert_eq!(r.join().unwrap(), Ok(7));
        assert_eq!(sides.recv_waiters(), 0);
    });
}

/// A sender blocks on a full ring while a receiver frees the slot and wakes it.
#[test]
fn blocked_sender_woken_by_free() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let sides = Arc::new(Sides::new());
        ring.send(&Lane::new(), 1).unwrap();
        let s = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || ring.send_blocking(&Lane::new(), 2, &sides, false))
        };
        let r = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), Presence::new());
            thread::spawn(move || ring.recv_blocking(&Lane::new(), &sides, &senders, false))
        };
        assert_eq!(r.join().unwrap(), Ok(1));
        s.join().unwrap().unwrap();
        assert_eq!(ring.recv(&Lane::new()), Ok(2));
    });
}

/// The last sender commits a message and detaches while the receiver waits: the
/// receiver's "all senders gone" check races both, and it must get the message before it
/// reports the disconnection (the detach's SeqCst store, read with Acquire, makes the
/// commit visible to the second look `wait::try_recv` takes). At the default bound of 4
/// this takes about 6 s (35 s at 6).
#[test]
fn last_commit_then_detach_is_received_before_disconnect() {
    race_model_bounded(4, || {
        let ring = Arc::new(Ring::new(1));
        let sides = Arc::new(Sides::new());
        let senders = Arc::new(Presence::new());
        let r = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), senders.clone());
            thread::spawn(move || {
                let lane = Lane::new();
                let first = ring.recv_blocking(&lane, &sides, &senders, false);
                let second = ring.recv_blocking(&lane, &sides, &senders, false);
                (first, second)
            })
        };
        let s = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), senders.clone());
            thread::spawn(move || {
                ring.send_notify(&Lane::new(), 7, &sides).unwrap();
                senders.detach(&sides);
            })
        };
        s.join().unwrap();
        assert_eq!(
            r.join().unwrap(),
            (Ok(7), Err(RecvTimeoutError::Disconnected))
        );
    });
}

/// A timed and a blocking receiver wait; one message is committed. If the timed one gives
/// up (its deadline is a thread of the model, so it may pass at any point, also just as
/// the commit's wake-up lands), the message stays for the blocking one, which gets it;
/// otherwise the blocking one sees the disconnection once the sender detaches.
#[test]
fn timed_and_blocking_receivers() {
    race_model_bounded(1, || {
        let ring = Arc::new(Ring::new(1));
        let sides = Arc::new(Sides::new());
        let senders = Arc::new(Presence::new());
        let spawn_recv = |timed: bool| {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), senders.clone());
            thread::spawn(move || ring.recv_blocking(&Lane::new(), &sides, &senders, timed))
        };
        let timed = spawn_recv(true);
        let blocking = spawn_recv(false);
        let s = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || ring.send_notify(&Lane::new(), 7, &sides))
        };
        s.join().unwrap().unwrap();
        match timed.join().unwrap() {
            Ok(m) => {
                assert_eq!(m, 7);
                senders.detach(&sides);
                assert_eq!(
                    blocking.join().unwrap(),
                    Err(RecvTimeoutError::Disconnected)
                );
            }
            Err(e) => {
                assert_eq!(e, RecvTimeoutError::Timeout);
                assert_eq!(blocking.join().unwrap(), Ok(7));
            }
        }
    });
}

/// A timed sender waiting for room gives up at any point, or gets the slot; a receive
/// frees one slot. Either its message is sent or it keeps it, never both (the ring then
/// holds exactly what was sent).
#[test]
fn timed_sender_gives_up_or_sends() {
    race_model_bounded(1, || {
        let ring = Arc::new(Ring::new(1));
        let sides = Arc::new(Sides::new());
        ring.send(&Lane::new(), 1).unwrap();
        let s = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || ring.send_blocking(&Lane::new(), 2, &sides, true))
        };
        let r = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), Presence::new());
            thread::spawn(move || ring.recv_blocking(&Lane::new(), &sides, &senders, false))
        };
        assert_eq!(r.join().unwrap(), Ok(1));
        match s.join().unwrap() {
            Ok(()) => assert_eq!(ring.recv(&Lane::new()), Ok(2)),
            Err(e) => {
                assert_eq!(e, Stall::Blocked);
                assert_eq!(ring.recv(&Lane::new()), Err(Stall::Blocked));
            }
        }
    });
}
