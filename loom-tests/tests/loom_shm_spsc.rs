//! loom models of the shared ring's single-producer single-consumer mode
//! (`conduit::shm`, `Options::spsc`), on heap storage, with payloads in plain cells so
//! that loom reports a slot written while it is read (or read before it is written):
//! send/receive races across a lap, wake-ups never lost in either direction,
//! disconnection after the last message, a producer that dies between its publish and
//! its `tail` store, a consumer that dies between its read and its commit (the queued
//! messages then go to the next consumer), and two threads of one family taking turns
//! (the bias revoked). The fences are modelled as SeqCst fences on both sides (see
//! `shm::asym`); the wake-up models also run with SeqCst publishes and commits.
//!
//! As in `loom_shm_ring.rs`, every racing actor runs on a spawned thread and the
//! model's main thread only joins. The two blocking models run at
//! `LOOM_MAX_PREEMPTIONS` (under 1 s each at 6), the spinning ones under
//! `race_model_bounded`; the whole file takes about 10 s with CI's settings.
#![cfg(loom)]

use conduit::__loom_shm::{Presence, Sides, SpscFamily, SpscRing, Stall};
use conduit::RecvTimeoutError;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, race_model_bounded};

/// Sends `v`, retrying (and yielding to the model) while the ring is full.
fn send_spinning(ring: &SpscRing, me: &SpscFamily, v: usize, sides: &Sides) {
    loop {
        match ring.send(me, v, sides) {
            Ok(()) => return,
            Err(Stall::Blocked) => thread::yield_now(),
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
}

/// Receives one message, retrying (and yielding) while the ring is empty.
fn recv_spinning(ring: &SpscRing, me: &SpscFamily, sides: &Sides) -> usize {
    loop {
        match ring.recv(me, sides) {
            Ok(v) => return v,
            Err(Stall::Blocked) => thread::yield_now(),
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
}

/// A receiver blocks on an empty ring (the futex modelled) while the producer publishes
/// and wakes a sleeper only if the waiter count is non-zero: the receiver gets the
/// message (no lost wake-up between its re-check and its sleep).
#[test]
fn spsc_blocked_receiver_woken_by_publish() {
    blocked_receiver_woken_by_publish(true);
}

/// The same with SeqCst publishes and commits (a channel created where `membarrier` is
/// not available).
#[test]
fn spsc_blocked_receiver_woken_by_publish_seqcst() {
    blocked_receiver_woken_by_publish(false);
}

fn blocked_receiver_woken_by_publish(light: bool) {
    model(move || {
        let ring = Arc::new(SpscRing::with_fences(1, light));
        let sides = Arc::new(Sides::new());
        let r = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                let senders = Presence::new();
                ring.recv_blocking(&ring.consumer(), &sides, &senders, false)
            })
        };
        let s = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || ring.send(&ring.producer(), 7, &sides))
        };
        s.join().unwrap().unwrap();
        assert_eq!(r.join().unwrap(), Ok(7));
        assert_eq!(sides.recv_waiters(), 0);
    });
}

/// A producer blocks on a full ring while the consumer takes the message and wakes it:
/// the producer's write of the next lap's message into the slot is ordered after the
/// consumer's read of it (loom checks the cell), and the producer is woken.
#[test]
fn spsc_blocked_sender_woken_by_free() {
    blocked_sender_woken_by_free(true);
}

/// The same with SeqCst publishes and commits.
#[test]
fn spsc_blocked_sender_woken_by_free_seqcst() {
    blocked_sender_woken_by_free(false);
}

fn blocked_sender_woken_by_free(light: bool) {
    model(move || {
        let ring = Arc::new(SpscRing::with_fences(1, light));
        let sides = Arc::new(Sides::new());
        let me = ring.producer();
        ring.send(&me, 1, &sides).unwrap();
        let s = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || ring.send_blocking(&me, 2, &sides, false))
        };
        let r = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                let me = ring.consumer();
                let first = ring.recv(&me, &sides);
                (me, first)
            })
        };
        let (me, first) = r.join().unwrap();
        assert_eq!(first, Ok(1));
        s.join().unwrap().unwrap();
        assert_eq!(ring.recv(&me, &sides), Ok(2));
    });
}

/// Three messages through two slots, both sides spinning: every message arrives once
/// and in order, and the producer reuses a slot only after the consumer has read it.
/// (Under 1 s at a bound of 6.)
#[test]
fn spsc_send_recv_across_a_lap() {
    race_model_bounded(6, || {
        let ring = Arc::new(SpscRing::new(2));
        let sides = Arc::new(Sides::new());
        let p = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                let me = ring.producer();
                for v in 1..=3 {
                    send_spinning(&ring, &me, v, &sides);
                }
            })
        };
        let c = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                let me = ring.consumer();
                [(); 3].map(|()| recv_spinning(&ring, &me, &sides))
            })
        };
        p.join().unwrap();
        assert_eq!(c.join().unwrap(), [1, 2, 3]);
        assert!(ring.is_empty());
    });
}

/// Two threads of one producer family send a message each: the first to take a turn
/// holds the family's bias, the second revokes it (heavy fence, wait for the owner to
/// leave its operation), and from then on both take turns through the lock. Both
/// messages arrive once, in two slots, and no two writes of a slot race (loom checks
/// the cells): the revoker never enters while the owner is inside. The consumer reads
/// after both joined (the race is the producers' own).
#[test]
fn spsc_two_producer_threads_share_the_family() {
    race_model_bounded(4, || {
        let ring = Arc::new(SpscRing::new(2));
        let sides = Arc::new(Sides::new());
        let me = Arc::new(ring.producer());
        let producers = [1, 2].map(|v| {
            let (ring, sides, me) = (ring.clone(), sides.clone(), me.clone());
            thread::spawn(move || ring.send(&me, v, &sides))
        });
        for p in producers {
            p.join().unwrap().unwrap();
        }
        let me = ring.consumer();
        let mut got = [(); 2].map(|()| ring.recv(&me, &sides).unwrap());
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        assert!(ring.is_empty());
    });
}

/// The producer publishes one message and detaches while the consumer waits: the
/// consumer gets the message, then `Disconnected`, never `Disconnected` first. About 2 s
/// at the default bound of 4.
#[test]
fn spsc_disconnect_after_the_last_message() {
    race_model_bounded(4, || {
        let ring = Arc::new(SpscRing::new(1));
        let sides = Arc::new(Sides::new());
        let senders = Arc::new(Presence::new());
        let r = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), senders.clone());
            thread::spawn(move || {
                let me = ring.consumer();
                let first = ring.recv_blocking(&me, &sides, &senders, false);
                let second = ring.recv_blocking(&me, &sides, &senders, false);
                (first, second)
            })
        };
        let s = {
            let (ring, sides, senders) = (ring.clone(), sides.clone(), senders.clone());
            thread::spawn(move || {
                ring.send(&ring.producer(), 7, &sides).unwrap();
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

/// A producer publishes a message and dies before storing `tail`; the next producer
/// attaches (repairing `tail`) and sends while the consumer receives: the consumer gets
/// the published message, then the new one, and the new producer never writes the slot
/// of a message still queued (loom checks the cells). About 3 s at the default bound of
/// 4 (15 s at 6).
#[test]
fn spsc_producer_dies_between_publish_and_tail() {
    race_model_bounded(4, || {
        let ring = Arc::new(SpscRing::new(2));
        let sides = Arc::new(Sides::new());
        let dead = {
            let ring = ring.clone();
            thread::spawn(move || ring.publish_and_die(1))
        };
        let next = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                // The dead producer's side lock is released once it is gone.
                dead.join().unwrap();
                let me = ring.producer();
                send_spinning(&ring, &me, 2, &sides);
                send_spinning(&ring, &me, 3, &sides);
            })
        };
        let c = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                let me = ring.consumer();
                [(); 3].map(|()| recv_spinning(&ring, &me, &sides))
            })
        };
        next.join().unwrap();
        assert_eq!(c.join().unwrap(), [1, 2, 3]);
    });
}

/// A consumer reads the queued message and dies before its commit, while the producer
/// sends another; the next consumer receives both, in order: messages queued when a
/// consumer goes are neither lost nor duplicated (the one the dead consumer read was
/// never returned by it), and the producer never overwrites a slot the dead consumer
/// did not free. (Under 1 s at a bound of 6.)
#[test]
fn spsc_consumer_dies_between_read_and_commit() {
    race_model_bounded(6, || {
        let ring = Arc::new(SpscRing::new(1));
        let sides = Arc::new(Sides::new());
        let me = ring.producer();
        ring.send(&me, 1, &sides).unwrap();
        let p = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || send_spinning(&ring, &me, 2, &sides))
        };
        let dead = {
            let ring = ring.clone();
            thread::spawn(move || ring.read_and_die())
        };
        let next = {
            let (ring, sides) = (ring.clone(), sides.clone());
            thread::spawn(move || {
                assert_eq!(dead.join().unwrap(), Some(1));
                let me = ring.consumer();
                let got = [(); 2].map(|()| recv_spinning(&ring, &me, &sides));
                assert_eq!(ring.recv(&me, &sides), Err(Stall::Blocked));
                got
            })
        };
        p.join().unwrap();
        assert_eq!(next.join().unwrap(), [1, 2]);
    });
}
