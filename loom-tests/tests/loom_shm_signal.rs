//! loom models of the shared-memory signal target's waits (`conduit::shm::signal`): the
//! generic owner over the production wait words of a segment side (`SideSignal`, the
//! kernel's futex modelled without a timeout slice, so a lost wake-up is a deadlock loom
//! reports) and the production wait loop (`shm::wait::block`). The words themselves
//! are the heap target's (`loom_signal.rs` checks the algorithm on them).
#![cfg(loom)]

use conduit::__loom_shm::ShmSignalTarget;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{model, race_model_bounded};

// Two waits for different numbers sleep on one futex word; a raise of one number must
// wake the wait for it, wherever the other is: raises wake every sleeper (a single
// wake-up could land on the other wait, which would sleep again, and the model would
// deadlock). Three actors in blocking loops: under a race bound (1 by default, see
// `race_model_bounded`); the lost wake-up it guards against needs no preemption at all.
#[test]
fn waits_for_different_numbers_both_woken() {
    race_model_bounded(1, || {
        let target = Arc::new(ShmSignalTarget::new());
        let a = {
            let target = target.clone();
            thread::spawn(move || target.wait_for(1))
        };
        let r = {
            let target = target.clone();
            thread::spawn(move || target.raise(2))
        };
        assert_eq!(target.wait_for(2), (2, 1));
        target.raise(1);
        assert_eq!(a.join().unwrap(), (1, 1));
        r.join().unwrap();
        assert_eq!(target.waiters(), 0);
    });
}

// An unmask racing a wait that sleeps on the masked number: the unmask wakes it.
#[test]
fn unmask_wakes_a_sleeping_wait() {
    model(|| {
        let target = Arc::new(ShmSignalTarget::new());
        target.mask(3);
        target.raise(3);
        let u = {
            let target = target.clone();
            thread::spawn(move || target.unmask(3))
        };
        assert_eq!(target.wait_for(3), (3, 1));
        u.join().unwrap();
    });
}
