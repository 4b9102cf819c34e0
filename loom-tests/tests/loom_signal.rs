//! loom models of `conduit::signal` targets: the pending words, the queued rings and
//! the wake-ups around them. Small on purpose (two or three threads, a raise or two);
//! targets use a queue depth of 1 to keep the words few.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use conduit::signal::{RaiseError, SigSet, Signal, Target};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, race_model_bounded};

fn sig(n: u8) -> Signal {
    Signal::new(n).unwrap()
}

fn set(s: Signal) -> SigSet {
    [s].into_iter().collect()
}

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

// A raise racing a blocking wait: the wait returns it (loom reports a deadlock if the
// wake-up is lost between the wait's re-check and its sleep).
#[test]
fn raise_racing_wait() {
    model(|| {
        let target = Target::with_depth(1);
        let r = target.raiser();
        let t = thread::spawn(move || r.raise(sig(3)).unwrap());
        let info = target.wait();
        assert_eq!((info.signal(), info.count()), (sig(3), 1));
        t.join().unwrap();
    });
}

// Two raisers of one standard number racing a taker: the counts delivered add up to
// exactly two, whatever the interleaving of increments, bit sets, bit clears and swaps.
// The taker uses `try_wait` (the waiting itself has the other models).
#[test]
fn coalescing_count_exact() {
    model(|| {
        let target = Target::with_depth(1);
        let (r1, r2) = (target.raiser(), target.raiser());
        let a = thread::spawn(move || r1.raise(sig(5)).unwrap());
        let b = thread::spawn(move || r2.raise(sig(5)).unwrap());
        let mut total = target.try_wait().map_or(0, |i| i.count());
        a.join().unwrap();
        b.join().unwrap();
        while let Some(info) = target.try_wait() {
            assert!(info.count() >= 1);
            total += info.count();
        }
        assert_eq!(total, 2);
    });
}

// A raise of a standard number racing the blocking wait of an owner that raised it
// too: whichever raise finds the number pending skips its bit set and its wake-up (the
// coalescing fast path), and the owner must still get both raises, in one delivery or
// two, never sleeping through the second (loom reports the deadlock).
#[test]
fn coalesced_raise_racing_wait() {
    model(|| {
        let target = Target::with_depth(1);
        let (r1, r2) = (target.raiser(), target.raiser());
        let a = thread::spawn(move || r1.raise(sig(5)).unwrap());
        r2.raise(sig(5)).unwrap();
        let mut total = 0;
        while total < 2 {
            total += target.wait().count();
        }
        assert_eq!(total, 2);
        a.join().unwrap();
    });
}

// A raise of a masked number racing the owner's unmask and wait: the wait gets it,
// whether the raise lands before the unmask, between unmask and wait, or while the wait
// sleeps.
#[test]
fn mask_unmask_racing_raise() {
    model(|| {
        let target = Target::with_depth(1);
        target.mask(&set(sig(7)));
        let r = target.raiser();
        let raiser = thread::spawn(move || r.raise(sig(7)).unwrap());
        target.unmask(&set(sig(7)));
        assert_eq!(target.wait().signal(), sig(7));
        raiser.join().unwrap();
    });
}

// A wait that may sleep while its only pending signal is masked is woken by an unmask
// from another thread (the unmask is a change of the no-lost-wake-up argument).
#[test]
fn unmask_wakes_wait() {
    model(|| {
        let target = Arc::new(Target::with_depth(1));
        target.mask(&set(sig(7)));
        target.raiser().raise(sig(7)).unwrap();
        let t2 = target.clone();
        let unmasker = thread::spawn(move || t2.unmask(&set(sig(7))));
        assert_eq!(target.wait().signal(), sig(7));
        unmasker.join().unwrap();
    });
}

// `unmask_and_wait` on a masked number racing its raise: no wake-up is lost, and the
// mask is as it was.
#[test]
fn unmask_and_wait_atomic() {
    model(|| {
        let target = Target::with_depth(1);
        target.mask(&set(sig(9)));
        let r = target.raiser();
        let t = thread::spawn(move || r.raise(sig(9)).unwrap());
        assert_eq!(target.unmask_and_wait(&set(sig(9))).signal(), sig(9));
        assert_eq!(target.masked(), set(sig(9)));
        t.join().unwrap();
    });
}

// Two raisers of a queued number with room for one, racing a taker: every raise that
// succeeded is delivered exactly once, the others failed with `Full`, and nothing is
// left pending without its bit (the final drain finds it all).
#[test]
fn queued_overflow() {
    model(|| {
        let target = Arc::new(Target::with_depth(1));
        let q = sig(40);
        let (r1, r2) = (target.raiser(), target.raiser());
        let a = thread::spawn(move || r1.raise_with(q, 1));
        let b = thread::spawn(move || r2.raise_with(q, 2));
        let mut got = Vec::new();
        got.extend(target.try_wait().map(|i| i.payload().unwrap()));
        let results = [a.join().unwrap(), b.join().unwrap()];
        while let Some(i) = target.try_wait() {
            got.push(i.payload().unwrap());
        }
        let mut ok: Vec<u64> = results
            .iter()
            .zip([1, 2])
            .filter(|(r, _)| r.is_ok())
            .map(|(_, p)| p)
            .collect();
        for r in results {
            assert!(matches!(r, Ok(()) | Err(RaiseError::Full)));
        }
        got.sort();
        ok.sort();
        assert_eq!(got, ok);
        assert!(!ok.is_empty());
    });
}

// Two async waits are pending; one signal is raised; the first is dropped without being
// polled again. A wake-up it received must reach the other, which then completes
// (loom reports a deadlock otherwise).
#[test]
fn async_wait_cancelled_after_wake_passes_it_on() {
    model(|| {
        let target = Arc::new(Target::with_depth(1));
        let r = target.raiser();
        let t2 = target.clone();
        let waiter = thread::spawn(move || {
            let mut first = t2.wait_async();
            if let Poll::Ready(info) = poll_once(&mut first) {
                return info;
            }
            let mut second = t2.wait_async();
            match poll_once(&mut second) {
                Poll::Ready(info) => info,
                Poll::Pending => {
                    drop(first);
                    loom::future::block_on(second)
                }
            }
        });
        r.raise(sig(2)).unwrap();
        assert_eq!(waiter.join().unwrap().signal(), sig(2));
    });
}

// Two blocking waits for different numbers, one raise each: each wait is woken by the
// raise it waits for, although the other also sleeps (a single wake-up per raise could
// land on the wrong wait, which would sleep again: with `notify_one` this model
// deadlocks at bound 2). Three threads, two of them parking: a race model (preemption bound 2 by
// default; `LOOM_RACE_PREEMPTIONS` raises it).
#[test]
fn waits_for_different_sets() {
    race_model_bounded(2, || {
        let target = Arc::new(Target::with_depth(1));
        let r = target.raiser();
        let t2 = target.clone();
        let a = thread::spawn(move || t2.wait_for(&set(sig(1))).signal());
        let raiser = thread::spawn(move || {
            r.raise(sig(2)).unwrap();
            r.raise(sig(1)).unwrap();
        });
        assert_eq!(target.wait_for(&set(sig(2))).signal(), sig(2));
        assert_eq!(a.join().unwrap(), sig(1));
        raiser.join().unwrap();
    });
}

// An async wait racing a raise from another thread: the wait completes with it, however
// the registration, its re-check and the raiser's look at the registered waits
// interleave (loom reports a deadlock if the wake-up is lost).
#[test]
fn async_wait_racing_raise() {
    model(|| {
        let target = Target::with_depth(1);
        let r = target.raiser();
        let t = thread::spawn(move || r.raise(sig(4)).unwrap());
        let info = loom::future::block_on(target.wait_async());
        assert_eq!((info.signal(), info.count()), (sig(4), 1));
        t.join().unwrap();
    });
}

// Two async waits for different numbers, one raise each from another thread: each
// completes with its own number (every raise wakes every registered wait; the one it
// does not concern registers again). Both raises and both waits take the wait set's
// spin lock, and every spin is a yield the model explores: preemption bound 3 (4.5 s
// here; the default 6 ran for six minutes; `LOOM_RACE_PREEMPTIONS` raises it).
#[test]
fn async_waits_for_different_sets() {
    race_model_bounded(3, || {
        let target = Arc::new(Target::with_depth(1));
        let r = target.raiser();
        let raiser = thread::spawn(move || {
            r.raise(sig(2)).unwrap();
            r.raise(sig(1)).unwrap();
        });
        let mut one = target.wait_for_async(&set(sig(1)));
        let mut two = target.wait_for_async(&set(sig(2)));
        let (mut got_one, mut got_two) = (None, None);
        // Both are registered (or done) before either blocks.
        if let Poll::Ready(i) = poll_once(&mut one) {
            got_one = Some(i.signal());
        }
        if let Poll::Ready(i) = poll_once(&mut two) {
            got_two = Some(i.signal());
        }
        let got_two = got_two.unwrap_or_else(|| loom::future::block_on(&mut two).signal());
        let got_one = got_one.unwrap_or_else(|| loom::future::block_on(&mut one).signal());
        assert_eq!((got_one, got_two), (sig(1), sig(2)));
        raiser.join().unwrap();
    });
}

// An async wait dropped while a raise races its registration: the raise stays pending
// for the next wait, and the dropped wait's entry is gone whether the raiser took it or
// the drop removed it (a later wait registers and completes).
#[test]
fn async_wait_dropped_racing_raise() {
    model(|| {
        let target = Target::with_depth(1);
        let r = target.raiser();
        let t = thread::spawn(move || r.raise(sig(6)).unwrap());
        let mut first = target.wait_async();
        let early = match poll_once(&mut first) {
            Poll::Ready(info) => Some(info),
            Poll::Pending => None,
        };
        drop(first);
        let info = early.unwrap_or_else(|| loom::future::block_on(target.wait_async()));
        assert_eq!(info.signal(), sig(6));
        t.join().unwrap();
        assert!(target.try_wait().is_none());
    });
}
