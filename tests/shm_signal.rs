//! Shared-memory signal targets (`conduit::shm::signal`) with real processes: the test
//! binary re-executes itself as children (see `shm_support`). Raises across processes
//! (coalescing counts, queued payloads in order, lowest number first, origin), owners
//! and raisers killed with `kill -9`, a raiser killed between claim and commit, a
//! hostile segment, and open's validation.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use conduit::shm::signal::{Raiser, Target};
use conduit::shm::{Options, Sender};
use conduit::signal::{Disposition, RaiseError, SigSet, Signal};
use shm_support::*;

/// A generous bound for one blocking step inside a test (the watchdog bounds the rest).
const STEP: Duration = Duration::from_secs(20);

fn sig(n: u8) -> Signal {
    Signal::new(n).unwrap()
}

fn set(n: u8) -> SigSet {
    [sig(n)].into_iter().collect()
}

/// Every child process starts here and dispatches on its role.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let name = arg("name");
    match role.as_str() {
        "raise_some" => {
            let r = Raiser::open(&name).unwrap();
            say(format!("id={}", r.id()));
            for _ in 0..3 {
                r.raise(sig(5)).unwrap();
            }
            r.raise(sig(7)).unwrap();
            for p in [1, 2, 3] {
                r.raise_with(sig(40), p).unwrap();
            }
            r.raise_with(sig(33), 9).unwrap();
        }
        "raise_after_go" => {
            let r = Raiser::open(&name).unwrap();
            say("ready");
            r.raise(sig(9)).unwrap();
        }
        "own_and_wait" => {
            // Owns the target and waits for a number nobody raises: what is raised stays
            // pending in the segment.
            let target = Target::create(&name).unwrap();
            say("owning");
            let _ = target.wait_for(&set(20));
            hang();
        }
        "claim_queued_and_hang" => {
            // Raises 0, 1, 2 on number 32 (whose queue is the segment's ring), then
            // claims the next slot the way a raiser does (intent, then the tail CAS) and
            // never commits: killed here, it is a raiser that died between the two.
            let r = Raiser::open(&name).unwrap();
            for p in 0..3 {
                r.raise_with(sig(32), p).unwrap();
            }
            let raw = Raw::map(&name);
            let me = raw.my_peer_slot(1);
            let tail = raw.word(TAIL);
            let pos = tail.load(Ordering::SeqCst);
            raw.intent(me, 0)
                .store(intent_word(false, pos), Ordering::SeqCst);
            let next = next_pos(pos, num("depth"));
            tail.compare_exchange(pos, next, Ordering::SeqCst, Ordering::SeqCst)
                .unwrap();
            say("claimed");
            hang();
        }
        "raise_loop" => {
            // Iteration i: standard 5 once, then queued 40 with payload i (retried while
            // full). Reports progress every 64 iterations until killed.
            let r = Raiser::open(&name).unwrap();
            for i in 0u64.. {
                r.raise(sig(5)).unwrap();
                loop {
                    match r.raise_with(sig(40), i) {
                        Ok(()) => break,
                        Err(RaiseError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                if i % 64 == 0 {
                    say(format!("done {}", i + 1));
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn raises_across_processes() {
    watchdog(|| {
        let name = Name::new("sig-across");
        let target = Target::create(&name).unwrap();
        let child = Proc::spawn("raise_some", &[("name", &name)]);
        let pid = child.pid();
        let id: u64 = child
            .line(STEP)
            .and_then(|l| l.strip_prefix("id=").map(str::to_string))
            .expect("child id")
            .parse()
            .unwrap();
        child.success();
        // Everything is pending now: lowest number first, queued entries in order, each
        // with the raising process and raiser.
        let mut got = Vec::new();
        while let Some(info) = target.try_wait() {
            assert_eq!((info.pid(), info.raiser_id()), (pid, id), "{info:?}");
            got.push((info.signal().number(), info.count(), info.payload()));
        }
        assert_eq!(
            got,
            [
                (5, 3, None),
                (7, 1, None),
                (33, 1, Some(9)),
                (40, 1, Some(1)),
                (40, 1, Some(2)),
                (40, 1, Some(3)),
            ]
        );
        // A waiting (async) owner is woken by a raise from another process.
        let child = Proc::spawn("raise_after_go", &[("name", &name)]);
        let info = futures::executor::block_on(target.wait_async());
        assert_eq!((info.signal(), info.pid()), (sig(9), child.pid()));
        child.success();
    });
}

#[test]
fn owner_killed_while_waiting() {
    watchdog(|| {
        let name = Name::new("sig-owner-killed");
        let mut owner = Proc::spawn("own_and_wait", &[("name", &name)]);
        owner.expect("owning");
        // A live owner is exclusive.
        let err = Target::open(&name).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy, "{err}");
        let raiser = Raiser::open(&name).unwrap();
        raiser.raise(sig(3)).unwrap();
        raiser.raise(sig(3)).unwrap();
        raiser.raise_with(sig(45), 7).unwrap();
        assert!(!raiser.is_disconnected());
        owner.kill9();
        // Raisers find out (within about 100 ms: no timing is asserted here, the
        // watchdog bounds the loop); every raise that succeeded stays pending.
        let mut raised = 2;
        let deadline = Instant::now() + STEP;
        loop {
            match raiser.raise(sig(3)) {
                Ok(()) => raised += 1,
                Err(e) => {
                    assert_eq!(e, RaiseError::Disconnected);
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "raises never saw the owner's death"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(raiser.is_disconnected());
        // A new owner takes over, pending signals kept.
        let target = Target::open(&name).unwrap();
        let info = target.try_wait().unwrap();
        assert_eq!((info.signal(), info.count()), (sig(3), raised));
        let info = target.try_wait().unwrap();
        assert_eq!((info.signal(), info.payload()), (sig(45), Some(7)));
        assert_eq!(target.try_wait(), None);
        // And raisers reach it again.
        raiser.raise(sig(4)).unwrap();
        assert_eq!(target.wait_timeout(STEP).unwrap().signal(), sig(4));
    });
}

#[test]
fn raiser_killed_between_claim_and_commit() {
    watchdog(|| {
        let name = Name::new("sig-dead-claim");
        let depth = 8;
        let opts = Options::new().create_new(true).capacity(depth);
        let target = Target::with(&name, &opts).unwrap();
        let mut child = Proc::spawn(
            "claim_queued_and_hang",
            &[("name", &name), ("depth", &depth.to_string())],
        );
        for p in 0..3 {
            assert_eq!(target.wait_timeout(STEP).unwrap().payload(), Some(p));
        }
        child.expect("claimed");
        // Raises behind the dead claim succeed, and wait behind it.
        let raiser = Raiser::open(&name).unwrap();
        for p in 3..6 {
            raiser.raise_with(sig(32), p).unwrap();
        }
        assert_eq!(target.try_wait(), None, "stuck behind the claim");
        child.kill9();
        // A survivor (the owner's wait, through maintenance) reclaims the claim as a
        // skip: the rest arrives, in order.
        for p in 3..6 {
            let info = target.wait_timeout(STEP).expect("the queue is wedged");
            assert_eq!((info.signal(), info.payload()), (sig(32), Some(p)));
        }
        assert_eq!(target.try_wait(), None);
    });
}

#[test]
fn raiser_killed_in_a_loop_of_raises() {
    watchdog(|| {
        let name = Name::new("sig-kill-raiser");
        let target = Target::create(&name).unwrap();
        let mut child = Proc::spawn("raise_loop", &[("name", &name)]);
        let (mut standard, mut queued) = (0u64, Vec::new());
        let mut take = |info: conduit::signal::SigInfo| match info.signal().number() {
            5 => standard += info.count(),
            40 => queued.push(info.payload().unwrap()),
            other => panic!("unexpected signal {other}"),
        };
        let mut reported = 0;
        while reported < 2000 {
            if let Some(info) = target.wait_timeout(Duration::from_millis(10)) {
                take(info);
            }
            while let Some(line) = child.line(Duration::ZERO) {
                reported = line.strip_prefix("done ").unwrap().parse().unwrap();
            }
        }
        child.kill9();
        while let Some(info) = target.try_wait() {
            take(info);
        }
        // Every completed iteration is delivered, exactly once and in order; the one the
        // kill interrupted made at most its standard raise (its queued claim, if any,
        // is reclaimed, never delivered).
        let m = queued.len() as u64;
        assert!(m >= reported, "{m} queued < {reported} completed");
        assert_eq!(queued, (0..m).collect::<Vec<_>>());
        assert!(standard == m || standard == m + 1, "{standard} vs {m}");
        // Nothing is wedged: a new raise of the same number gets through.
        let raiser = Raiser::open(&name).unwrap();
        raiser.raise_with(sig(40), u64::MAX).unwrap();
        let info = target.wait_for_timeout(&set(40), STEP).expect("wedged");
        assert_eq!(info.payload(), Some(u64::MAX));
    });
}

#[test]
fn hostile_segment_gives_errors_not_panics_or_hangs() {
    watchdog(|| {
        for seed in 1..=8u64 {
            let name = Name::new(&format!("sig-hostile-{seed}"));
            let target = Target::with(&name, &Options::new().create_new(true).capacity(4)).unwrap();
            let raiser = Raiser::open(&name).unwrap();
            let caught = sig(2);
            target.set_disposition(caught, Disposition::catch(|_| {}));
            for n in [1, 2, 5, 32, 40, 64] {
                raiser.raise_with(sig(n), 1).unwrap();
            }
            let raw = Raw::map(&name);
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // Everything after the peer table: every queue's positions and slots, and
            // the words (pending, mask, running, ignore, catch, closed, owner, counts).
            match seed % 3 {
                0 => raw.scribble(HEAD, raw.len() - HEAD, || rng.next()),
                1 => raw.scribble(raw.len() - 1280, 1280, || rng.next()),
                _ => raw.scribble(HEAD, raw.len() - HEAD, || {
                    // Mostly small values: plausible positions and stamps.
                    let v = rng.next();
                    if v & 1 == 0 { v % 64 } else { v }
                }),
            }
            // Every operation returns; results may be wrong, never a panic or a hang.
            for _ in 0..4 {
                let _ = target.try_wait();
                let _ = target.wait_timeout(Duration::from_millis(5));
                let _ = target.try_wait_for(&set(40));
                let _ = target.dispatch();
                for n in 1..=64 {
                    let _ = raiser.raise_with(sig(n), 3);
                }
                target.mask(&set(1));
                target.unmask(&SigSet::all());
                target.set_disposition(sig(40), Disposition::Ignore);
                target.set_disposition(sig(40), Disposition::Deliver);
                let _ = raiser.is_disconnected();
                let _ = futures::executor::block_on(async {
                    let fut = target.wait_async();
                    futures::pin_mut!(fut);
                    futures::poll!(fut)
                });
            }
            drop(raw);
        }
    });
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<Target>();
    check::<Raiser>();
}

#[test]
fn open_validates_kind_name_and_presence() {
    watchdog(|| {
        let name = Name::new("sig-kind");
        let tx = Sender::<u64>::create(&name, 4).unwrap();
        // A channel's name is not a signal target, in either direction.
        let err = Target::open(&name).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("kind mismatch"), "{err}");
        assert!(err.to_string().contains("signal target"), "{err}");
        let err = Raiser::open(&name).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        drop(tx);
        let sig_name = Name::new("sig-kind-target");
        let _target = Target::create(&sig_name).unwrap();
        let err = Sender::<u64>::open(&sig_name).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("signal target"), "{err}");
        // Bad names and missing names.
        for bad in ["", "a/b", "..", "sp ace"] {
            assert_eq!(
                Raiser::open(bad).unwrap_err().kind(),
                std::io::ErrorKind::InvalidInput
            );
            assert_eq!(
                Target::create(bad).unwrap_err().kind(),
                std::io::ErrorKind::InvalidInput
            );
        }
        let missing = Name::new("sig-missing");
        assert_eq!(
            Target::open(&missing).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        assert_eq!(
            Raiser::open(&missing).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        // inspect knows the kind.
        let info = conduit::shm::inspect(&sig_name).unwrap();
        assert_eq!(info.kind, Some(conduit::shm::ObjectKind::Signal));
        assert!(info.is_valid(), "{:?}", info.problems);
    });
}
