//! A hostile peer keeps a channel's positions moving: a child process maps the segment
//! and, without end, advances `tail` (or `head`) and rewrites the slot stamps so that
//! every slot always looks ready for the position this process is about to claim, yet
//! the position has moved on by the time its CAS runs (and the stamp by the time its
//! commit runs). Every `try_` call must still return (an error), and every timed call
//! must return (by its deadline, give or take a bounded overshoot): the loops over
//! shared state are bounded. Before they were, the CAS-failure branches of the claim
//! loops and the retry of a failed commit spun for as long as the peer kept going.
//!
//! The assertions are that each call returns at all (the watchdog fails a test that
//! hangs) and that nothing panics; timings are not asserted.
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
    let stamp = |pos: u64| raw.word(SLOTS + (pos & (mark - 1)) as usize * slot_size);
    let stop = Instant::now() + HAMMER_LIMIT;
    let mut said = false;
    let mut rounds = 0u64;
    match role.as_str() {
        // Senders' side: the ring looks empty, the slot at `tail` free; `tail` moves on
        // by one (its old slot made free for the next lap) after each look.
        "bump_tail" => {
            while Instant::now() < stop {
                let tail = raw.word(TAIL).load(Ordering::SeqCst) & !mark;
                raw.word(TAIL).store(next_pos(tail, cap), Ordering::SeqCst);
                stamp(tail).store(tail + one_lap, Ordering::SeqCst);
                rounds += 1;
                if !said && rounds == 1000 {
                    say("ready");
                    said = true;
                }
            }
        }
        // Receivers' side: every slot holds a message for the position at `head`, which
        // moves on by one (its old slot published for the next lap) after each look.
        "bump_head" => {
            let head = raw.word(HEAD).load(Ordering::SeqCst);
            for k in 0..cap {
                let pos = advance(head, k, cap);
                stamp(pos).store(pos + 1, Ordering::SeqCst);
            }
            while Instant::now() < stop {
                let head = raw.word(HEAD).load(Ordering::SeqCst);
                raw.word(HEAD).store(next_pos(head, cap), Ordering::SeqCst);
                stamp(head).store(head + one_lap + 1, Ordering::SeqCst);
                rounds += 1;
                if !said && rounds == 1000 {
                    say("ready");
                    said = true;
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// The position `n` after `pos`.
fn advance(mut pos: u64, n: u64, cap: u64) -> u64 {
    for _ in 0..n {
        pos = next_pos(pos, cap);
    }
    pos
}

/// Starts the child hammering `name` as `role` and waits until it is under way.
fn hammer(name: &Name, role: &str) -> Proc {
    let child = Proc::spawn(role, &[("name", &name.0)]);
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
    Options::new().capacity(4).max_message(64).create_new(true)
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
        let r = keep_calling(|| {
            let _ = tx.try_send(b"thirteen byte");
            let _ = tx.send_timeout(&[7; 64], OP);
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
