//! loom models of the shared-memory ring's claim / commit / reclaim protocol
//! (`conduit::shm`), on heap storage with `SHARED = true`.
//!
//! A "dead" peer is a thread that claims a slot and returns without committing; a
//! survivor settles its recorded intent once that thread has been joined (the models'
//! stand-in for the kernel releasing the dead peer's lock).
//!
//! Every racing actor runs on a spawned thread and the model's main thread only joins:
//! loom 0.7 does not explore schedules in which a spawned thread's operations overtake
//! operations that the main thread performs before its first blocking point.
#![cfg(loom)]

use conduit::__loom_shm::{Lane, Reclaim, Ring, Stall};
use loom::sync::Arc;
use loom::thread;

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(f);
}

/// Sends `msg` from a live peer of its own, settling `dead`'s intent whenever the ring
/// is stuck (full, or its slot still claimed) until the send goes through.
fn send_settling(ring: &Ring, dead: &Lane, msg: usize) {
    let live = Lane::new();
    loop {
        match ring.send(&live, msg) {
            Ok(()) => return,
            Err(Stall::Busy | Stall::Blocked) => {
                ring.resolve(dead, &[&live]);
                thread::yield_now();
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
}

/// Receives one message, settling `dead`'s intent whenever the ring is stuck.
fn recv_settling(ring: &Ring, me: &Lane, dead: &Lane, live: &[&Lane]) -> usize {
    loop {
        match ring.recv(me) {
            Ok(v) => return v,
            Err(Stall::Busy) => {
                ring.resolve(dead, live);
                thread::yield_now();
            }
            Err(Stall::Blocked) => thread::yield_now(),
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
}

/// A sender dies between claiming and committing, racing a live sender for the same
/// positions. The receiver gets the live sender's message exactly once and never the
/// dead one's (its payload was written, its commit never happened).
#[test]
fn dead_sender_slot_is_skipped() {
    model(|| {
        let ring = Arc::new(Ring::new(2));
        let (dead, live) = (Arc::new(Lane::new()), Arc::new(Lane::new()));
        let d = {
            let (ring, dead) = (ring.clone(), dead.clone());
            thread::spawn(move || {
                let _ = ring.claim_send_and_die(&dead, 99);
            })
        };
        let s = {
            let (ring, live) = (ring.clone(), live.clone());
            thread::spawn(move || ring.send(&live, 7))
        };
        let r = {
            let (ring, dead, live) = (ring.clone(), dead.clone(), live.clone());
            thread::spawn(move || {
                d.join().unwrap();
                let me = Lane::new();
                let got = recv_settling(&ring, &me, &dead, &[&live]);
                (got, me)
            })
        };
        assert_eq!(s.join().unwrap(), Ok(()));
        let (got, me) = r.join().unwrap();
        assert_eq!(got, 7);
        // Nothing else is delivered: once settled, the dead claim is skipped.
        assert_ne!(ring.resolve(&dead, &[]), Reclaim::Pending);
        assert_eq!(ring.recv(&me), Err(Stall::Blocked));
        assert!(ring.is_empty());
    });
}

/// A receiver dies holding the only slot; a blocked sender gets it back once the dead
/// receiver's claim is settled, and its message goes through.
#[test]
fn dead_receiver_slot_is_freed() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        ring.send(&Lane::new(), 1).unwrap();
        let dead = Arc::new(Lane::new());
        let d = {
            let (ring, dead) = (ring.clone(), dead.clone());
            thread::spawn(move || {
                let _ = ring.claim_recv_and_die(&dead);
            })
        };
        let s = {
            let (ring, dead) = (ring.clone(), dead.clone());
            // Full until the receiver's claim; stuck until settled.
            thread::spawn(move || send_settling(&ring, &dead, 2))
        };
        d.join().unwrap();
        s.join().unwrap();
        assert_eq!(ring.recv(&Lane::new()), Ok(2));
    });
}

/// A peer recorded an intent for position 0 and died before its claim CAS. A live
/// sender claims position 0 while a survivor settles the dead intent: the live
/// sender's message is never reclaimed (the survivor sees its intent, or its commit).
#[test]
fn stale_intent_never_robs_a_live_sender() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let dead = Arc::new(Lane::new());
        dead.record_send_intent(0);
        let live = Arc::new(Lane::new());
        let s = {
            let (ring, live) = (ring.clone(), live.clone());
            thread::spawn(move || ring.send(&live, 7))
        };
        let v = {
            let (ring, dead, live) = (ring.clone(), dead.clone(), live.clone());
            thread::spawn(move || ring.resolve(&dead, &[&live]))
        };
        assert_eq!(s.join().unwrap(), Ok(()));
        assert_ne!(
            v.join().unwrap(),
            Reclaim::Reclaimed,
            "a live claim was reclaimed"
        );
        assert_eq!(ring.recv(&Lane::new()), Ok(7));
    });
}

/// The safety net: a live sender wrongly taken for dead (its own lane is settled as if
/// dead, with no live lanes to protect it) races the reclaimer. Its message is
/// delivered exactly once: either its commit won (the message is delivered) or the
/// reclaim won (a skip is published, the commit fails and the sender retries).
#[test]
fn wrongly_reclaimed_sender_is_exactly_once() {
    model(|| {
        let ring = Arc::new(Ring::new(2));
        let lane = Arc::new(Lane::new());
        let s = {
            let (ring, lane) = (ring.clone(), lane.clone());
            thread::spawn(move || ring.send(&lane, 7))
        };
        let v = {
            let (ring, lane) = (ring.clone(), lane.clone());
            thread::spawn(move || ring.resolve(&lane, &[]))
        };
        assert_eq!(s.join().unwrap(), Ok(()));
        v.join().unwrap();
        let me = Lane::new();
        assert_eq!(ring.recv(&me), Ok(7));
        assert_eq!(ring.recv(&me), Err(Stall::Blocked));
    });
}

/// Two survivors settle the same dead sender's claim at once: exactly one publishes it,
/// and the next message is received normally.
#[test]
fn concurrent_reclaims_settle_once() {
    model(|| {
        let ring = Arc::new(Ring::new(2));
        let dead = Arc::new(Lane::new());
        ring.claim_send_and_die(&dead, 99).unwrap();
        let survivors: Vec<_> = (0..2)
            .map(|_| {
                let (ring, dead) = (ring.clone(), dead.clone());
                thread::spawn(move || ring.resolve(&dead, &[]))
            })
            .collect();
        let outcomes: Vec<Reclaim> = survivors.into_iter().map(|t| t.join().unwrap()).collect();
        let reclaimed = outcomes
            .iter()
            .filter(|&&r| r == Reclaim::Reclaimed)
            .count();
        assert_eq!(reclaimed, 1, "{outcomes:?}");
        ring.send(&Lane::new(), 5).unwrap();
        assert_eq!(ring.recv(&Lane::new()), Ok(5));
    });
}

/// A skip from a dead sender holds the only slot: a sender of the next lap waits behind
/// it (it neither overwrites it nor spins on it as corrupt) until a receiver consumes
/// it, and a receiver gets the live message and never the dead payload.
#[test]
fn sender_waits_behind_a_skip() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let dead = Lane::new();
        ring.claim_send_and_die(&dead, 99).unwrap();
        assert_eq!(ring.resolve(&dead, &[]), Reclaim::Reclaimed);
        // Full, as with a message (not a stamp it cannot make sense of).
        assert_eq!(ring.send(&Lane::new(), 5), Err(Stall::Blocked));
        assert!(!ring.may_proceed(true));
        let s = {
            let ring = ring.clone();
            thread::spawn(move || {
                let me = Lane::new();
                loop {
                    match ring.send(&me, 7) {
                        Ok(()) => return,
                        Err(Stall::Blocked | Stall::Busy) => thread::yield_now(),
                        Err(s) => panic!("unexpected {s:?}"),
                    }
                }
            })
        };
        let r = {
            let ring = ring.clone();
            thread::spawn(move || recv_settling(&ring, &Lane::new(), &Lane::new(), &[]))
        };
        s.join().unwrap();
        assert_eq!(r.join().unwrap(), 7);
        assert!(ring.is_empty());
    });
}

/// A receiver dies after claiming a skip: settling its claim frees the slot, and the
/// ring goes on with the next lap.
#[test]
fn dead_receiver_of_a_skip_is_freed() {
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let (dead_tx, dead_rx) = (Lane::new(), Arc::new(Lane::new()));
        ring.claim_send_and_die(&dead_tx, 99).unwrap();
        assert_eq!(ring.resolve(&dead_tx, &[]), Reclaim::Reclaimed);
        ring.claim_recv_and_die(&dead_rx).unwrap();
        let s = {
            let (ring, dead_rx) = (ring.clone(), dead_rx.clone());
            thread::spawn(move || send_settling(&ring, &dead_rx, 7))
        };
        s.join().unwrap();
        assert_eq!(ring.recv(&Lane::new()), Ok(7));
    });
}

/// A receiver racing a reclaim of a dead sender's slot: it either consumes the skip
/// after the reclaim, or finds the slot busy; it never delivers the dead payload, and
/// the live sender's later message arrives.
#[test]
fn receiver_races_reclaim() {
    model(|| {
        let ring = Arc::new(Ring::new(2));
        let dead = Arc::new(Lane::new());
        ring.claim_send_and_die(&dead, 99).unwrap();
        ring.send(&Lane::new(), 7).unwrap();
        let v = {
            let (ring, dead) = (ring.clone(), dead.clone());
            thread::spawn(move || ring.resolve(&dead, &[]))
        };
        let r = {
            let (ring, dead) = (ring.clone(), dead.clone());
            thread::spawn(move || recv_settling(&ring, &Lane::new(), &dead, &[]))
        };
        v.join().unwrap();
        assert_eq!(r.join().unwrap(), 7);
    });
}

/// The futex waiters' protocol (`conduit::shm` `futex` module) with the stamp-only
/// re-check (`may_proceed`): a receiver registers (waiter count, then the wake-up
/// sequence, then a SeqCst fence) and re-checks; a sender commits (a SeqCst CAS, which
/// under loom is followed by a SeqCst fence: loom models SeqCst RMWs as acquire/release
/// only) and bumps the sequence if its SeqCst load of the count sees a waiter. A receiver that
/// decides to sleep must never sleep on a sequence value that the sender's commit left
/// unchanged (it would sleep through the message).
#[test]
fn receiver_recheck_never_sleeps_through_a_commit() {
    use loom::sync::atomic::{AtomicUsize, Ordering, fence};
    model(|| {
        let ring = Arc::new(Ring::new(1));
        let waiters = Arc::new(AtomicUsize::new(0));
        let seq = Arc::new(AtomicUsize::new(0));
        let receiver = {
            let (ring, waiters, seq) = (ring.clone(), waiters.clone(), seq.clone());
            thread::spawn(move || {
                waiters.fetch_add(1, Ordering::SeqCst);
                let seen = seq.load(Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if ring.may_proceed(false) {
                    assert_eq!(ring.recv(&Lane::new()), Ok(7));
                    None
                } else {
                    Some(seen)
                }
            })
        };
        let sender = {
            let (ring, waiters, seq) = (ring.clone(), waiters.clone(), seq.clone());
            thread::spawn(move || {
                ring.send(&Lane::new(), 7).unwrap();
                if waiters.load(Ordering::SeqCst) != 0 {
                    seq.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        sender.join().unwrap();
        if let Some(seen) = receiver.join().unwrap() {
            assert_ne!(seq.load(Ordering::SeqCst), seen, "slept through a commit");
            assert_eq!(ring.recv(&Lane::new()), Ok(7));
        }
    });
}

/// The same for a sender waiting for room in a full ring while a receiver frees it.
#[test]
fn sender_recheck_never_sleeps_through_a_free() {
    use loom::sync::atomic::{AtomicUsize, Ordering, fence};
    model(|| {
        let ring = Arc::new(Ring::new(1));
        ring.send(&Lane::new(), 1).unwrap();
        let waiters = Arc::new(AtomicUsize::new(0));
        let seq = Arc::new(AtomicUsize::new(0));
        let sender = {
            let (ring, waiters, seq) = (ring.clone(), waiters.clone(), seq.clone());
            thread::spawn(move || {
                waiters.fetch_add(1, Ordering::SeqCst);
                let seen = seq.load(Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if ring.may_proceed(true) {
                    ring.send(&Lane::new(), 2).unwrap();
                    None
                } else {
                    Some(seen)
                }
            })
        };
        let receiver = {
            let (ring, waiters, seq) = (ring.clone(), waiters.clone(), seq.clone());
            thread::spawn(move || {
                assert_eq!(ring.recv(&Lane::new()), Ok(1));
                if waiters.load(Ordering::SeqCst) != 0 {
                    seq.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        receiver.join().unwrap();
        if let Some(seen) = sender.join().unwrap() {
            assert_ne!(seq.load(Ordering::SeqCst), seen, "slept through a free");
        }
    });
}
