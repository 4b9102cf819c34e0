//! In-process signal targets: coalescing, queueing, ordering, dispositions, masks, waits
//! in every form, and disconnection.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use common::{Flag, poll_once, waker, watchdog};
use conduit::signal::{Disposition, RaiseError, SigSet, Signal, Target};

fn sig(n: u8) -> Signal {
    Signal::new(n).unwrap()
}

fn set(ns: &[u8]) -> SigSet {
    ns.iter().map(|&n| sig(n)).collect()
}

#[test]
fn numbers_and_sets() {
    assert!(Signal::new(0).is_none() && Signal::new(65).is_none());
    for n in 1..=64 {
        let s = sig(n);
        assert_eq!(s.number(), n);
        assert_eq!(s.is_queued(), n >= 32);
    }
    let mut s = SigSet::empty();
    s.insert(sig(64));
    s.insert(sig(1));
    assert!(s.contains(sig(1)) && s.contains(sig(64)) && !s.contains(sig(2)));
    assert_eq!(format!("{s:?}"), "{1, 64}");
    s.remove(sig(64));
    assert_eq!(s, set(&[1]));
    assert!((1..=64).all(|n| SigSet::all().contains(sig(n))));
}

// Every raise of a standard number is counted once: the counts delivered add up to
// the raises made, under concurrent raisers and a concurrent waiter.
#[test]
fn coalescing_counts_exact_under_concurrent_raisers() {
    watchdog(|| {
        const RAISERS: u64 = 4;
        const EACH: u64 = 20_000;
        let target = Target::new();
        let s = sig(7);
        let start = Arc::new(Barrier::new(RAISERS as usize + 1));
        let raisers: Vec<_> = (0..RAISERS)
            .map(|_| {
                let r = target.raiser();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    for _ in 0..EACH {
                        r.raise(s).unwrap();
                    }
                })
            })
            .collect();
        start.wait();
        let mut total = 0;
        let mut deliveries = 0;
        while total < RAISERS * EACH {
            let info = target.wait();
            assert_eq!(info.signal(), s);
            assert!(info.count() >= 1);
            assert_eq!(info.payload(), None);
            total += info.count();
            deliveries += 1;
        }
        for r in raisers {
            r.join().unwrap();
        }
        assert_eq!(total, RAISERS * EACH);
        assert_eq!(target.try_wait(), None);
        assert!(deliveries <= RAISERS * EACH);
    });
}

#[test]
fn queued_in_raise_order_and_full_at_depth() {
    let target = Target::with_depth(4);
    let r = target.raiser();
    let q = sig(40);
    for p in 0..4 {
        r.raise_with(q, p).unwrap();
    }
    assert_eq!(r.raise_with(q, 99), Err(RaiseError::Full));
    assert_eq!(
        RaiseError::Full.to_string(),
        "raising a queued signal whose queue is full"
    );
    for p in 0..2 {
        let info = target.try_wait().unwrap();
        assert_eq!(
            (info.signal(), info.payload(), info.count()),
            (q, Some(p), 1)
        );
    }
    // Room again, and the order continues.
    r.raise_with(q, 4).unwrap();
    r.raise_with(q, 5).unwrap();
    assert_eq!(r.raise_with(q, 6), Err(RaiseError::Full));
    let rest: Vec<_> = (0..4)
        .map(|_| target.try_wait().unwrap().payload())
        .collect();
    assert_eq!(rest, [Some(2), Some(3), Some(4), Some(5)]);
    assert_eq!(target.try_wait(), None);
    // The default depth.
    let target = Target::new();
    let r = target.raiser();
    for p in 0..conduit::signal::QUEUE_DEPTH as u64 {
        r.raise_with(q, p).unwrap();
    }
    assert_eq!(r.raise(q), Err(RaiseError::Full));
}

// Concurrent raisers of one queued number: every entry delivered once, each raiser's
// in its order.
#[test]
fn queued_concurrent_raisers_keep_per_raiser_order() {
    watchdog(|| {
        let target = Target::with_depth(8);
        let q = sig(33);
        const EACH: u64 = 5_000;
        let raisers: Vec<_> = (0..2u64)
            .map(|k| {
                let r = target.raiser();
                thread::spawn(move || {
                    let mut p = 0;
                    while p < EACH {
                        match r.raise_with(q, (k << 32) | p) {
                            Ok(()) => p += 1,
                            Err(RaiseError::Full) => thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let mut next = [0u64; 2];
        while next != [EACH, EACH] {
            let p = target.wait().payload().unwrap();
            let k = (p >> 32) as usize;
            assert_eq!(p & 0xffff_ffff, next[k]);
            next[k] += 1;
        }
        for r in raisers {
            r.join().unwrap();
        }
    });
}

#[test]
fn lowest_number_first() {
    let target = Target::new();
    let r = target.raiser();
    for n in [50, 3, 64, 31, 1, 32] {
        r.raise(sig(n)).unwrap();
    }
    let got: Vec<u8> = (0..6)
        .map(|_| target.try_wait().unwrap().signal().number())
        .collect();
    assert_eq!(got, [1, 3, 31, 32, 50, 64]);
}

#[test]
fn origin_reports_raiser_and_pid() {
    let target = Target::new();
    let (a, b) = (target.raiser(), target.raiser());
    assert_ne!(a.id(), b.id());
    assert_eq!(a.clone().id(), a.id());
    b.raise_with(sig(60), 1).unwrap();
    a.clone().raise_with(sig(60), 2).unwrap();
    let i1 = target.try_wait().unwrap();
    let i2 = target.try_wait().unwrap();
    assert_eq!((i1.raiser_id(), i2.raiser_id()), (b.id(), a.id()));
    assert_eq!(i1.pid(), std::process::id());
    b.raise(sig(2)).unwrap();
    assert_eq!(target.try_wait().unwrap().raiser_id(), b.id());
}

#[test]
fn mask_holds_back_and_unmask_delivers() {
    let target = Target::new();
    let r = target.raiser();
    let m = set(&[1, 40]);
    target.mask(&m);
    assert_eq!(target.masked(), m);
    r.raise(sig(1)).unwrap();
    r.raise(sig(1)).unwrap();
    r.raise_with(sig(40), 8).unwrap();
    r.raise(sig(9)).unwrap();
    // Only the unmasked one comes, although 1 is lower.
    assert_eq!(target.try_wait().unwrap().signal(), sig(9));
    assert_eq!(target.try_wait(), None);
    assert_eq!(target.wait_timeout(Duration::from_millis(10)), None);
    target.unmask(&set(&[40]));
    assert_eq!(target.try_wait().unwrap().payload(), Some(8));
    assert_eq!(target.try_wait(), None);
    target.unmask(&m);
    let info = target.try_wait().unwrap();
    assert_eq!((info.signal(), info.count()), (sig(1), 2));
    assert_eq!(target.masked(), SigSet::empty());
}

// A wait sleeping while its only pending signal is masked is woken by the unmask.
#[test]
fn unmask_wakes_sleeping_wait() {
    watchdog(|| {
        let target = Arc::new(Target::new());
        target.mask(&set(&[5]));
        target.raiser().raise(sig(5)).unwrap();
        let t2 = target.clone();
        let waiter = thread::spawn(move || t2.wait().signal());
        // Whether or not the waiter already sleeps, the unmask must get it through.
        target.unmask(&set(&[5]));
        assert_eq!(waiter.join().unwrap(), sig(5));
    });
}

#[test]
fn unmask_and_wait_takes_masked_signal_and_keeps_mask() {
    watchdog(|| {
        let target = Arc::new(Target::new());
        let m = set(&[17]);
        target.mask(&m);
        let r = target.raiser();
        let t2 = target.clone();
        let waiter = thread::spawn(move || t2.unmask_and_wait(&m));
        r.raise(sig(17)).unwrap();
        let info = waiter.join().unwrap();
        assert_eq!(info.signal(), sig(17));
        assert_eq!(target.masked(), m);
        // Other waits still see it masked.
        r.raise(sig(17)).unwrap();
        assert_eq!(target.try_wait(), None);
        assert_eq!(target.unmask_and_wait(&m).count(), 1);
    });
}

#[test]
fn ignore_discards_and_counts() {
    let target = Target::new();
    let r = target.raiser();
    r.raise(sig(3)).unwrap();
    r.raise_with(sig(45), 1).unwrap();
    r.raise_with(sig(45), 2).unwrap();
    target.set_disposition(sig(3), Disposition::Ignore);
    target.set_disposition(sig(45), Disposition::Ignore);
    // The pending ones were discarded and counted.
    assert_eq!((target.ignored(sig(3)), target.ignored(sig(45))), (1, 2));
    for _ in 0..5 {
        r.raise(sig(3)).unwrap();
    }
    // An ignored queued number never fills.
    for p in 0..100 {
        r.raise_with(sig(45), p).unwrap();
    }
    assert_eq!(target.try_wait(), None);
    assert_eq!((target.ignored(sig(3)), target.ignored(sig(45))), (6, 102));
    target.set_disposition(sig(3), Disposition::Deliver);
    r.raise(sig(3)).unwrap();
    assert_eq!(target.try_wait().unwrap().count(), 1);
    assert_eq!(target.ignored(sig(3)), 6);
}

// A caught signal's handler runs on the waiting thread, once per delivery, and the
// wait returns the first delivery that is not caught.
#[test]
fn catch_runs_on_waiting_thread_once_per_delivery() {
    watchdog(|| {
        let target = Arc::new(Target::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        target.set_disposition(
            sig(2),
            Disposition::catch(move |info| {
                s2.lock()
                    .unwrap()
                    .push((thread::current().id(), info.count(), info.payload()));
            }),
        );
        let s3 = seen.clone();
        target.set_disposition(
            sig(35),
            Disposition::catch(move |info| {
                s3.lock()
                    .unwrap()
                    .push((thread::current().id(), info.count(), info.payload()));
            }),
        );
        let r = target.raiser();
        r.raise(sig(2)).unwrap();
        r.raise(sig(2)).unwrap();
        r.raise_with(sig(35), 1).unwrap();
        r.raise_with(sig(35), 2).unwrap();
        // Only caught ones pending: try_wait runs them and returns None.
        assert_eq!(target.try_wait(), None);
        let me = thread::current().id();
        assert_eq!(
            *seen.lock().unwrap(),
            [(me, 2, None), (me, 1, Some(1)), (me, 1, Some(2))]
        );
        seen.lock().unwrap().clear();
        // On another thread's wait: the handler runs there, then the wait returns the
        // delivery that is not caught.
        r.raise(sig(2)).unwrap();
        r.raise(sig(9)).unwrap();
        let t2 = target.clone();
        let (id, info) = thread::spawn(move || (thread::current().id(), t2.wait()))
            .join()
            .unwrap();
        assert_eq!(info.signal(), sig(9));
        assert_eq!(*seen.lock().unwrap(), [(id, 1, None)]);
    });
}

// While a handler runs, its signal is held back: a raise from inside the handler is
// not delivered (to this or any other thread) until the handler returns, and then it
// is delivered once more.
#[test]
fn catch_masks_signal_while_handler_runs() {
    watchdog(|| {
        let target = Arc::new(Target::new());
        let r = target.raiser();
        let depth = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(AtomicU64::new(0));
        let (d, n, r2) = (depth.clone(), runs.clone(), r.clone());
        let t2 = target.clone();
        target.set_disposition(
            sig(4),
            Disposition::catch(move |_| {
                assert_eq!(d.fetch_add(1, Ordering::SeqCst), 0, "handler re-entered");
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    r2.raise(sig(4)).unwrap();
                    // Neither a nested dispatch nor another thread's try may run it now.
                    assert_eq!(t2.dispatch(), 0);
                    let t3 = t2.clone();
                    assert_eq!(thread::spawn(move || t3.dispatch()).join().unwrap(), 0);
                }
                d.fetch_sub(1, Ordering::SeqCst);
            }),
        );
        r.raise(sig(4)).unwrap();
        assert_eq!(target.dispatch(), 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(target.dispatch(), 0);
    });
}

// A panicking handler: the panic reaches the caller, the delivery was made, the signal
// is not held back afterwards, and the target keeps working.
#[test]
fn panicking_handler_leaves_target_consistent() {
    watchdog(|| {
        let target = Target::new();
        let r = target.raiser();
        let runs = Arc::new(AtomicU64::new(0));
        let n = runs.clone();
        target.set_disposition(
            sig(6),
            Disposition::catch(move |_| {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("handler failure");
                }
            }),
        );
        r.raise(sig(6)).unwrap();
        r.raise(sig(8)).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.wait()));
        assert!(caught.is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The uncaught one is still there; the caught one was consumed.
        assert_eq!(target.try_wait().unwrap().signal(), sig(8));
        assert_eq!(target.try_wait(), None);
        r.raise(sig(6)).unwrap();
        assert_eq!(target.dispatch(), 1);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn wait_for_leaves_others_pending() {
    let target = Target::new();
    let r = target.raiser();
    r.raise(sig(1)).unwrap();
    r.raise_with(sig(50), 5).unwrap();
    assert_eq!(target.try_wait_for(&set(&[2, 3])), None);
    assert_eq!(
        target.wait_for_timeout(&set(&[2]), Duration::from_millis(5)),
        None
    );
    assert_eq!(target.wait_for(&set(&[50])).payload(), Some(5));
    assert_eq!(target.try_wait().unwrap().signal(), sig(1));
}

// Two blocking waits for different sets: each raise reaches the wait it concerns,
// although the other wait sleeps too.
#[test]
fn waits_for_different_sets_each_woken() {
    watchdog(|| {
        let target = Arc::new(Target::new());
        let (t1, t2) = (target.clone(), target.clone());
        let a = thread::spawn(move || t1.wait_for(&set(&[1])).signal());
        let b = thread::spawn(move || t2.wait_for(&set(&[2])).signal());
        let r = target.raiser();
        r.raise(sig(2)).unwrap();
        assert_eq!(b.join().unwrap(), sig(2));
        r.raise(sig(1)).unwrap();
        assert_eq!(a.join().unwrap(), sig(1));
    });
}

#[test]
fn raise_wakes_blocked_wait_and_timeouts_expire() {
    watchdog(|| {
        let target = Arc::new(Target::new());
        assert_eq!(target.wait_timeout(Duration::from_millis(20)), None);
        let t2 = target.clone();
        let waiter = thread::spawn(move || t2.wait_timeout(Duration::from_secs(60)));
        target.raiser().raise(sig(12)).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap().signal(), sig(12));
    });
}

#[test]
fn disconnected_after_target_drops() {
    let target = Target::new();
    let r = target.raiser();
    let r2 = r.clone();
    assert!(!r.is_disconnected());
    drop(target);
    assert!(r.is_disconnected());
    assert_eq!(r.raise(sig(1)), Err(RaiseError::Disconnected));
    assert_eq!(r2.raise_with(sig(40), 1), Err(RaiseError::Disconnected));
    assert_eq!(
        RaiseError::Disconnected.to_string(),
        "raising on a target that is gone"
    );
    let e: Box<dyn std::error::Error> = Box::new(RaiseError::Full);
    assert!(format!("{e:?}").contains("Full"));
}

#[test]
fn async_wait_woken_by_raise() {
    watchdog(|| {
        let target = Target::new();
        let flag = Flag::new();
        let w = waker(&flag);
        let mut fut = Box::pin(target.wait_async());
        assert!(poll_once(&mut fut, &w).is_pending());
        assert!(!flag.woken());
        target.raiser().raise(sig(3)).unwrap();
        assert!(flag.woken());
        match poll_once(&mut fut, &w) {
            Poll::Ready(info) => assert_eq!(info.signal(), sig(3)),
            Poll::Pending => panic!("woken but not ready"),
        }
    });
}

// Cancellation: a wait woken and then dropped before it is polled took nothing, and
// the other wait still gets the signal (it was woken too, or gets the wake-up passed
// on).
#[test]
fn async_wait_cancelled_after_wake_passes_it_on() {
    watchdog(|| {
        let target = Target::new();
        let (f1, f2) = (Flag::new(), Flag::new());
        let (w1, w2) = (waker(&f1), waker(&f2));
        let mut a = Box::pin(target.wait_async());
        let mut b = Box::pin(target.wait_async());
        assert!(poll_once(&mut a, &w1).is_pending());
        assert!(poll_once(&mut b, &w2).is_pending());
        target.raiser().raise(sig(20)).unwrap();
        assert!(f1.woken());
        drop(a);
        assert!(f2.woken());
        match poll_once(&mut b, &w2) {
            Poll::Ready(info) => assert_eq!(info.signal(), sig(20)),
            Poll::Pending => panic!("the wake-up was lost with the cancelled wait"),
        }
    });
}

// A cancelled async wait leaves the signal pending for the next wait.
#[test]
fn async_wait_cancelled_takes_nothing() {
    let target = Target::new();
    let flag = Flag::new();
    let w = waker(&flag);
    let mut fut = Box::pin(target.wait_for_async(&set(&[44])));
    assert!(poll_once(&mut fut, &w).is_pending());
    target.raiser().raise_with(sig(44), 9).unwrap();
    drop(fut);
    assert_eq!(target.try_wait().unwrap().payload(), Some(9));
}

#[test]
fn async_waits_on_tokio() {
    common::run_tokio(common::Rt::MultiThread, 30, || async {
        let target = Arc::new(Target::new());
        let r = target.raiser();
        let t2 = target.clone();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(t2.wait_for_async(&SigSet::all()).await.payload());
            }
            got
        });
        for p in 0..3 {
            r.raise_with(sig(33), p).unwrap();
            tokio::task::yield_now().await;
        }
        assert_eq!(task.await.unwrap(), [Some(0), Some(1), Some(2)]);
    });
}

/// Async waits, each for a number of its own, on a multi-thread runtime, while raiser
/// threads raise every number many times: every wait gets exactly its raises, however
/// the wake-all set's registrations, wake-ups and departures interleave across tasks and
/// threads. Standard numbers (coalesced: the counts add up) and queued ones (one
/// delivery per raise, so nearly every raise finds its wait registered and wakes it; a
/// raise that finds the queue full retries). With all waits on one target, the set holds
/// several entries at once; with a target per wait, a lost wake-up hangs the test (no
/// other number's raise wakes the wait, and a raise that finds its bit set announces
/// nothing), and the watchdog fails it.
#[test]
fn async_waits_for_own_numbers_under_concurrent_raisers() {
    const WAITS: u8 = 4;
    const RAISERS: u64 = 2;
    const RAISES: u64 = 2_000;
    for (first, shared) in [(1, true), (1, false), (40, true), (40, false)] {
        common::run_tokio(common::Rt::MultiThread, 30, move || async move {
            let targets: Vec<Arc<Target>> = (0..if shared { 1 } else { WAITS })
                .map(|_| Arc::new(Target::new()))
                .collect();
            let of = |i: u8| targets[usize::from(i) % targets.len()].clone();
            let tasks: Vec<_> = (0..WAITS)
                .map(|i| {
                    let (t, n) = (of(i), first + i);
                    tokio::spawn(async move {
                        let mut total = 0;
                        while total < RAISERS * RAISES {
                            let info = t.wait_for_async(&set(&[n])).await;
                            assert_eq!(info.signal(), sig(n));
                            total += info.count();
                        }
                        total
                    })
                })
                .collect();
            let raisers: Vec<_> = (0..RAISERS)
                .map(|_| {
                    let ends: Vec<_> = (0..WAITS).map(|i| (of(i).raiser(), first + i)).collect();
                    thread::spawn(move || {
                        for _ in 0..RAISES {
                            for (r, n) in &ends {
                                while let Err(e) = r.raise(sig(*n)) {
                                    assert_eq!(e, RaiseError::Full);
                                    thread::yield_now();
                                }
                            }
                        }
                    })
                })
                .collect();
            // Each wait ends only once every raise of its number was delivered, so the
            // raisers are done by then (joined after, not blocking a worker meanwhile).
            for task in tasks {
                assert_eq!(task.await.unwrap(), RAISERS * RAISES);
            }
            for r in raisers {
                r.join().unwrap();
            }
            for t in &targets {
                assert!(t.try_wait().is_none());
            }
        });
    }
}

#[test]
fn stream_yields_deliveries() {
    use futures::StreamExt;
    watchdog(|| {
        let target = Arc::new(Target::new());
        let r = target.raiser();
        let raiser = thread::spawn(move || {
            for p in 0..10 {
                r.raise_with(sig(60), p).unwrap();
                r.raise(sig(1)).unwrap();
            }
        });
        let got: Vec<(u8, Option<u64>)> = futures::executor::block_on(
            target
                .stream()
                .filter(|i| std::future::ready(i.signal() == sig(60)))
                .take(10)
                .map(|i| (i.signal().number(), i.payload()))
                .collect(),
        );
        raiser.join().unwrap();
        assert_eq!(got, (0..10).map(|p| (60, Some(p))).collect::<Vec<_>>());
    });
}

#[test]
fn target_and_raiser_traits() {
    fn send_sync<T: Send + Sync + std::fmt::Debug>() {}
    send_sync::<Target>();
    send_sync::<conduit::signal::Raiser>();
    fn clone<T: Clone>() {}
    clone::<conduit::signal::Raiser>();
    clone::<conduit::signal::SigInfo>();
    let target = Target::new();
    assert!(format!("{target:?}").starts_with("Target"));
    assert!(format!("{:?}", target.raiser()).contains("id"));
}
