//! loom models of the shm peer table (`conduit::shm`'s `table` module): attach, reap,
//! settle and detach over FREE / LIVE / DEAD with generations, the exclusion between an
//! owner's lock and a reaper's, and lane-0 ownership.
//!
//! The table runs the production code on the heap (`conduit::__loom_shm::Peers`). The
//! liveness lock of each slot (a byte-range lock on the segment file in production) is
//! an atomic stand-in with the kernel's non-blocking semantics: an owner holds it
//! exclusively, reapers share it, and a peer that *dies* releases it and changes nothing
//! else, as the kernel does for a killed process.
//!
//! Every racing actor runs on a spawned thread and the model's main thread only sets up
//! and joins (loom 0.7 does not explore schedules in which a spawned thread overtakes
//! what the main thread does before its first blocking point).
#![cfg(loom)]

use conduit::__loom_shm::{LaneSet, Peers, RECEIVER, SENDER, Stall, State};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A sender attached at slot 0 claimed a ring slot and died before committing. A new
/// peer attaches while a reaper runs a maintenance pass. Whoever settles the dead
/// owner's claim (the attach, if it takes slot 0, or the reaper), exactly one does it
/// right: the new peer ends LIVE in its slot with the next generation there, the reaper
/// never touches it (its recorded intent survives), slot 0 ends FREE or the new peer's,
/// the dead claim is published as a skip (the ring is empty, not stuck), and the ring
/// works afterwards.
#[test]
fn attach_races_a_reaper_of_a_dead_owner() {
    model(|| {
        let peers = Arc::new(Peers::new(2, 2, 2));
        assert_eq!(peers.attach(SENDER), Some(0));
        peers.claim_send(0, 0, 7).unwrap();
        peers.die(0);

        let attacher = {
            let peers = peers.clone();
            thread::spawn(move || {
                let n = peers.attach(RECEIVER).expect("a slot");
                // Starts an operation: records an intent a reaper must not clear.
                let intent = peers.record_recv_intent(n, 1, 1);
                (n, intent)
            })
        };
        let reaper = {
            let peers = peers.clone();
            thread::spawn(move || peers.maintain())
        };
        let (n, intent) = attacher.join().unwrap();
        reaper.join().unwrap();

        let (generation, state, roles) = peers.state(n);
        assert_eq!(
            (state, roles),
            (State::Live, RECEIVER),
            "the live peer was reaped"
        );
        assert_eq!(
            peers.intent(n, 1),
            intent,
            "the live peer's intent was cleared"
        );
        assert!(!peers.unlocked(n), "the owner holds its lock");
        match n {
            0 => assert_eq!(generation, 2, "slot 0 taken over: next generation"),
            1 => {
                assert_eq!(generation, 1);
                let (_, dead, _) = peers.state(0);
                assert_eq!(dead, State::Free, "the reaper settled slot 0");
                assert!(peers.unlocked(0), "the reaper released its lock");
            }
            _ => unreachable!(),
        }
        assert_eq!(peers.intent(0, 0), 0, "the dead claim is settled");
        // The dead sender's slot was skipped: nothing to receive, and the ring works.
        peers.clear_intent(n, 1);
        assert_eq!(peers.recv(n, 0), Err(Stall::Blocked));
        peers.send(n, 0, 9).unwrap();
        assert_eq!(peers.recv(n, 0), Ok(9));
    });
}

/// A live owner works and detaches while a reaper runs a pass: the owner's lock keeps
/// the reaper off its slot until it has stored FREE, so the pass changes nothing, and
/// the slot ends FREE, unlocked, with its generation kept.
#[test]
fn a_live_owner_is_never_reaped() {
    model(|| {
        let peers = Arc::new(Peers::new(1, 1, 1));
        assert_eq!(peers.attach(SENDER | RECEIVER), Some(0));
        let owner = {
            let peers = peers.clone();
            thread::spawn(move || {
                peers.send(0, 0, 5).unwrap();
                assert_eq!(peers.recv(0, 0), Ok(5));
                peers.detach(0);
            })
        };
        let reaper = {
            let peers = peers.clone();
            thread::spawn(move || peers.maintain())
        };
        owner.join().unwrap();
        assert!(!reaper.join().unwrap(), "a pass reaped a live owner");
        assert_eq!(peers.state(0), (1, State::Free, 0));
        assert!(peers.unlocked(0));
    });
}

/// Two reapers race over a dead receiver's claimed message: each settles it through
/// the production protocol, exactly one frees the slot, and the slot ends FREE with the
/// message consumed once (the ring has room again and nothing to receive).
#[test]
fn two_reapers_settle_a_dead_owner_once() {
    model(|| {
        let peers = Arc::new(Peers::new(2, 1, 1));
        assert_eq!(peers.attach(SENDER), Some(0));
        peers.send(0, 0, 3).unwrap();
        peers.detach(0);
        assert_eq!(peers.attach(RECEIVER), Some(0));
        peers.claim_recv(0, 0).unwrap();
        peers.die(0);

        let reapers: Vec<_> = (0..2)
            .map(|_| {
                let peers = peers.clone();
                thread::spawn(move || peers.maintain())
            })
            .collect();
        let changed: Vec<bool> = reapers.into_iter().map(|r| r.join().unwrap()).collect();
        assert!(changed.contains(&true));
        assert_eq!(peers.state(0), (2, State::Free, 0));
        assert!(peers.unlocked(0));
        assert_eq!(peers.intent(0, 0), 0);
        assert_eq!(peers.attach(SENDER), Some(0));
        assert_eq!(
            peers.recv(0, 0),
            Err(Stall::Blocked),
            "the claimed message is gone"
        );
        peers.send(0, 0, 4).unwrap();
    });
}

/// One loom cell per lane, written by the lane's holder.
struct Cells([UnsafeCell<usize>; 3]);

// SAFETY: a cell is only written by the thread holding its lane; loom checks that claim
// (a second concurrent writer is a data race it reports), which is what the model tests.
unsafe impl Sync for Cells {}

/// Lane 0 goes to the first thread that takes a lane and stays with it; no lane is ever
/// used by two threads at once (each lane guards a loom cell that its holder writes,
/// so a lane lent twice is a data race loom reports).
#[test]
fn lane_zero_stays_with_its_first_user() {
    model(|| {
        let lanes = Arc::new(LaneSet::new());
        let cells = Arc::new(Cells([
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
        ]));
        let user = |key: usize, times: usize| {
            let lanes = lanes.clone();
            let cells = cells.clone();
            thread::spawn(move || {
                (0..times)
                    .map(|_| {
                        let (index, borrowed) = lanes.take(key);
                        cells.0[index].with_mut(|c| {
                            // SAFETY: the lane is this thread's until given back.
                            unsafe { *c = key };
                        });
                        if borrowed {
                            lanes.give_back(index);
                        }
                        (index, borrowed)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let a = user(1, 2);
        let b = user(2, 2);
        let a = a.join().unwrap();
        let b = b.join().unwrap();
        for took in [&a, &b] {
            for &(index, borrowed) in took {
                assert_eq!(
                    index == 0,
                    !borrowed,
                    "lane 0 is kept, the others given back"
                );
            }
            // A thread that got lane 0 once keeps getting it.
            if took[0].0 == 0 {
                assert!(took.iter().all(|&(index, _)| index == 0));
            }
        }
        let zero_users = [&a, &b]
            .iter()
            .filter(|took| took.iter().any(|&(index, _)| index == 0))
            .count();
        assert_eq!(zero_users, 1, "lane 0 has exactly one owner");
    });
}
