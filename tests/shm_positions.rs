//! A hostile peer keeps a channel's positions moving: a child process maps the segment
//! and, without end, advances `tail` (or `head`) and rewrites the slot stamps so that
//! every slot looks ready for the position this process is about to claim, yet the
//! position has moved on by the time its CAS runs, and a slot it did claim is rewritten
//! before its commit (a byte send's long copy leaves the child plenty of time). Every
//! `try_` call must still return, and every timed call must return (by its deadline,
//! give or take one bounded attempt): the loops over shared state are bounded.
//!
//! The assertions are that each call returns at all (the watchdog fails a test that
//! hangs) and that nothing panics; timings are not asserted.
//!
//! Before the loops were bounded, the CAS-failure branches of the claim loops and the
//! retry of a failed commit spun for as long as the child kept winning its races, which
//! it does while it runs in parallel with this process. Where the two share too few
//! cores, the child is descheduled from time to time and a call then gets through, so
//! on such a machine this test may not hang the unbounded code (on a loaded 2-core
//! machine calls were held for tens of milliseconds at a time); the deterministic
//! versions of these attacks, which do, are the unit tests in `src/shm/protocol.rs`.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use conduit::shm::{ByteReceiver, ByteSender, Options, Receiver, Sender};
use shm_support::*;

/// How long the parent keeps calling while the child hammers.
const RUN: Duration = Duration::from_millis(1000);
/// The timeout of the timed calls.
const OP: Duration = Duration::from_millis(5);
/// How long a hammering child goes on if nobody kills it.
const HAMMER_LIMIT: Duration = Duration::from_secs(60);

/// The byte channels' `max_message`: long enough that a send's copy takes a while
/// between its claim and its commit, which the child then makes fail.
const MAX_MESSAGE: usize = 1 << 18;

/// Header offsets of the documented layout: capacity and slot size.
const CAPACITY: usize = 16;
const SLOT_SIZE: usize = 24;

#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let raw = Raw::map(&arg("name"));
    let cap = raw.word(CAPACITY).load(Ordering::SeqCst);
    let slot_size = raw.word(SLOT_SIZE).load(Ordering::SeqCst) as usize;
    let one_lap = 2 * (cap + 1).next_power_of_two();
    let mark = one_lap / 2;
    let slot = |pos: u64| SLOTS + (pos & (mark - 1)) as usize * slot_size;
    let stamp = |pos: u64| raw.word(slot(pos));
    // The side's position, and the stamp that makes a slot ready for position `pos`
    // (free for a sender, published for a receiver).
    let (at, ready) = match role.as_str() {
        "bump_tail" => (raw.word(TAIL), 0),
        "bump_head" => (raw.word(HEAD), 1),
        other => panic!("unknown role {other}"),
    };
    // Every slot ready for its position in the lap ahead, byte messages as long as they
    // can be (so that a receive that does claim one has a long copy before its commit).
    let start = at.load(Ordering::SeqCst) & !mark;
    let mut pos = start;
    for _ in 0..cap {
        stamp(pos).store(pos + ready, Ordering::SeqCst);
        raw.word(slot(pos) + 8).store(num("len"), Ordering::SeqCst);
        pos = next_pos(pos, cap);
    }
    // Positions this child moved past, made ready for the next lap only half a ring
    // later, so that the parent, however late it looks at a slot after loading the
    // position, finds it ready: it goes on to its CAS, which the next move makes lose.
    let mut passed = std::collections::VecDeque::new();
    let mut last = start;
    let stop = Instant::now() + HAMMER_LIMIT;
    let mut rounds = 0u64;
    while Instant::now() < stop {
        let now = at.load(Ordering::SeqCst) & !mark;
        // Positions the parent claimed since our last move: their slots are made ready
        // for the next lap at once, so that the parent's commit fails.
        let mut p = last;
        for _ in 0..cap {
            if p == now {
                break;
            }
            stamp(p).store(p + one_lap + ready, Ordering::SeqCst);
            p = next_pos(p, cap);
        }
        let next = next_pos(now, cap);
        at.store(next, Ordering::SeqCst);
        last = next;
        passed.push_back(now);
        if passed.len() as u64 > cap / 2 {
            let p = passed.pop_front().unwrap();
            stamp(p).store(p + one_lap + ready, Ordering::SeqCst);
        }
        rounds += 1;
        if rounds == 1000 {
            say("ready");
        }
    }
}

/// Starts the child hammering `name` as `role` and waits until it is under way.
fn hammer(name: &Name, role: &str) -> Proc {
    let len = MAX_MESSAGE.to_string();
    let child = Proc::spawn(role, &[("name", &name.0), ("len", &len)]);
    child.expect("ready");
    child
}

/// Calls `op` for [`RUN`], each call returning at all being the test; returns how many
/// calls were made and the longest one.
fn keep_calling(mut op: impl FnMut()) -> (usize, Duration) {
    let end = Instant::now() + RUN;
    let mut calls = 0;
    let mut longest = Duration::ZERO;
    while Instant::now() < end {
        let start = Instant::now();
        op();
        longest = longest.max(start.elapsed());
        calls += 1;
    }
    (calls, longest)
}

fn opts() -> Options {
    Options::new()
        .capacity(8)
        .max_message(MAX_MESSAGE)
        .create_new(true)
}

#[test]
fn typed_sends_return_while_tail_is_bumped() {
    watchdog(|| {
        let name = Name::new("bump-tail-typed");
        let _rx = Receiver::<u64>::with(&name, &opts()).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        let child = hammer(&name, "bump_tail");
        let r = keep_calling(|| {
            let _ = tx.try_send(1);
            let _ = tx.send_timeout(2, OP);
        });
        eprintln!("typed sends: {r:?}");
        drop(child);
    });
}

#[test]
fn typed_receives_return_while_head_is_bumped() {
    watchdog(|| {
        let name = Name::new("bump-head-typed");
        let rx = Receiver::<u64>::with(&name, &opts()).unwrap();
        let _tx = Sender::<u64>::open(&name).unwrap();
        let child = hammer(&name, "bump_head");
        let r = keep_calling(|| {
            let _ = rx.try_recv();
            let _ = rx.recv_timeout(OP);
        });
        eprintln!("typed receives: {r:?}");
        drop(child);
    });
}

#[test]
fn byte_sends_return_while_tail_is_bumped() {
    watchdog(|| {
        let name = Name::new("bump-tail-bytes");
        let _rx = ByteReceiver::with(&name, &opts()).unwrap();
        let tx = ByteSender::open(&name).unwrap();
        let child = hammer(&name, "bump_tail");
        let long = vec![7; MAX_MESSAGE];
        let r = keep_calling(|| {
            let _ = tx.try_send(&long[..MAX_MESSAGE - 3]);
            let _ = tx.send_timeout(&long, OP);
        });
        eprintln!("byte sends: {r:?}");
        drop(child);
    });
}

#[test]
fn byte_receives_return_while_head_is_bumped() {
    watchdog(|| {
        let name = Name::new("bump-head-bytes");
        let rx = ByteReceiver::with(&name, &opts()).unwrap();
        let _tx = ByteSender::open(&name).unwrap();
        let child = hammer(&name, "bump_head");
        let r = keep_calling(|| {
            let _ = rx.try_recv();
            let _ = rx.recv_timeout(OP);
        });
        eprintln!("byte receives: {r:?}");
        drop(child);
    });
}
