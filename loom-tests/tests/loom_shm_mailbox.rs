//! loom models of the shared-memory mailbox's word protocols (`conduit::shm`
//! `mailbox_words`, the production code through `conduit::__loom_shm`): its robust lock
//! (mutual exclusion; a dead holder's lock taken over by exactly one survivor) and a
//! request's reply state (a reply racing the requester's timeout is delivered or handed
//! back, never both, never neither; a sleeping requester is woken, with the kernel's
//! futex modelled and no timeout slice, so a lost wake-up hangs the model; the reply
//! written and read without the lock, and the slot released by a lock holder once the
//! requester retired it).
//!
//! Every racing actor runs on a spawned thread (see `loom_shm_ring.rs` for why).
#![cfg(loom)]

use conduit::__loom_shm::{MailboxLock, ReplyState};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use loom_tests::model;

/// Two lockers, one of which finds the lock held by a dead holder (`dead`, proven gone)
/// and both of which may try to take it over: the critical sections never overlap (the
/// counter is a plain cell, so loom reports any overlap), and at most one take-over
/// succeeds.
fn lockers(dead: u32) {
    let lock = Arc::new(MailboxLock::held_by(dead));
    let count = Arc::new(UnsafeCell::new(0u32));
    let takeovers = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|n| {
            let (lock, count, takeovers) = (lock.clone(), count.clone(), takeovers.clone());
            thread::spawn(move || {
                let me = MailboxLock::owner_word(n, 1);
                loop {
                    if lock.try_take(me) {
                        break;
                    }
                    if lock.take_over(dead, me) {
                        takeovers.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    thread::yield_now();
                }
                assert_eq!(lock.holder(), me);
                count.with_mut(|c| unsafe { *c += 1 });
                lock.release();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(count.with(|c| unsafe { *c }), 2);
    assert!(takeovers.load(Ordering::SeqCst) <= usize::from(dead != 0));
    assert_eq!(lock.holder(), 0);
}

#[test]
fn lock_excludes() {
    model(|| lockers(0));
}

#[test]
fn dead_holders_lock_taken_over_once() {
    model(|| lockers(MailboxLock::owner_word(5, 3)));
}

/// A reply racing the requester's timeout: delivered exactly when the requester did
/// not leave first.
#[test]
fn reply_races_requester_timeout() {
    model(|| {
        let state = Arc::new(ReplyState::new());
        let replier = {
            let state = state.clone();
            thread::spawn(move || state.reply())
        };
        let requester = {
            let state = state.clone();
            thread::spawn(move || state.give_up())
        };
        let delivered = replier.join().unwrap();
        let left = requester.join().unwrap();
        assert_ne!(
            delivered, left,
            "delivered {delivered}, requester left {left}"
        );
    });
}

/// A requester that sleeps (marking the state) is woken by the reply, however the two
/// interleave.
#[test]
fn sleeping_requester_woken_by_reply() {
    model(|| {
        let state = Arc::new(ReplyState::new());
        let requester = {
            let state = state.clone();
            thread::spawn(move || state.wait())
        };
        let replier = {
            let state = state.clone();
            thread::spawn(move || state.reply())
        };
        assert!(replier.join().unwrap());
        assert!(ReplyState::is_replied(requester.join().unwrap()));
    });
}

/// The reply's payload is written by the replier and read by the requester without the
/// lock, and the slot is released (its payload overwritten by the next message) by a
/// lock holder once it finds the exchange DONE, here the replier's own next send: the
/// payload cell is a plain cell, so loom reports any of the accesses racing another.
#[test]
fn reply_read_without_lock_then_slot_released() {
    model(|| {
        let state = Arc::new(ReplyState::new());
        let payload = Arc::new(UnsafeCell::new(0u32));
        let replier = {
            let (state, payload) = (state.clone(), payload.clone());
            thread::spawn(move || {
                payload.with_mut(|p| unsafe { *p = 7 });
                assert!(state.reply());
                if state.is_done() {
                    payload.with_mut(|p| unsafe { *p = 0 });
                }
            })
        };
        let requester = {
            let (state, payload) = (state.clone(), payload.clone());
            thread::spawn(move || {
                let seen = state.wait();
                assert!(ReplyState::is_replied(seen));
                assert_eq!(payload.with(|p| unsafe { *p }), 7);
                assert!(state.retire(seen));
            })
        };
        replier.join().unwrap();
        requester.join().unwrap();
    });
}
