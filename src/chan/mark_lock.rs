//! A spin lock in one word that also carries a *mark*: a bit that wakers read without
//! taking the lock, to learn whether anyone waits.
//!
//! The async wait sets (the channels' [`Signal`](super::signal::Signal) and the signal
//! targets' `AsyncWaiters`, in `signal::waiters`) keep their wakers behind one. A
//! registration takes the lock and raises the mark with a single SeqCst CAS, and every
//! unlock is a Release store (SeqCst under miri: see [`UNLOCK`]) that keeps the mark if
//! the guarded value says so ([`Marks::keeps_mark`]: an entry is left) and lowers it
//! otherwise. So the mark is up from the moment a registration takes the lock until the
//! unlock after the last entry left, and a waker that changed its queue with a SeqCst
//! RMW and then loads the mark (SeqCst, [`MarkLock::is_marked`]) either sees it, and
//! then finds the entry once it holds the lock, or comes before the registration in the
//! single total order of SeqCst operations, and then the waiter's re-check, after its
//! registration, sees the change.
//! A registration costs one RMW (a mutex and a separate count: three), and so does a
//! wake-up.
//!
//! The critical sections are a few instructions, plus at most a waker's `clone` or
//! `drop` (user code, which may panic: the unlock is a guard's drop), so a thread that
//! finds the lock held spins for it rather than sleeping.
//!
//! Under loom the lock is a loom `Mutex` beside a word that holds only the mark, raised
//! with a SeqCst RMW once a registration holds the mutex and stored by an unlock that
//! changes it, before the mutex is released: the same order of events for the waiters'
//! argument (the mark up, with a SeqCst RMW, from a registration's lock until an unlock
//! that leaves nothing), while the model checker handles the lock itself as a lock. A
//! spin lock's every failed CAS and yield is a branch of the search: `loom_array` over
//! the spin lock ran for more than eleven minutes, against two with this.

use crate::sync::{AtomicUsize, Ordering, load_seqcst};
#[cfg(not(loom))]
use crate::sync::{Backoff, UnsafeCell};
#[cfg(loom)]
use crate::sync::{Mutex, MutexGuard, after_seqcst_rmw, lock};

/// The state word's bit: a thread holds the value.
#[cfg(not(loom))]
const LOCKED: usize = 1;
/// The state word's bit: the mark (see the module docs).
const MARK: usize = 2;

/// The unlock's ordering: Release, except under miri (SeqCst).
///
/// The waiters' argument (module docs) needs a waker's SeqCst load of the mark, made
/// after the waker's SeqCst change of its queue, to read a registration's CAS or a later
/// store whenever the registration's re-check missed that change: the C++20 rules of
/// SeqCst operations ([atomics.order] p3–p4) order the re-check before the change, so
/// the registration before the load, and forbid the load to read a store that precedes
/// the registration in the word's modification order. Miri's weak-memory emulation
/// lets such a load read an earlier Release unlock (one the registration's CAS read
/// from, which happens before it), and a waker then skips a registered waiter: CI's
/// miri run of `tests/async_cancel.rs` hung so, a `bounded(1)` receiver asleep beside a
/// full queue. A two-thread program of the same shape (a Release unlock, a SeqCst CAS
/// reading it and a SeqCst load on one word; a SeqCst RMW and a SeqCst load on another)
/// shows the forbidden outcome under miri in about one run in a hundred. With SeqCst
/// unlocks miri keeps to the rule, so that is what it runs; natively the Release store
/// stays (a plain store on x86, where SeqCst would be a locked exchange on every unlock).
#[cfg(not(loom))]
const UNLOCK: Ordering = if cfg!(miri) {
    Ordering::SeqCst
} else {
    Ordering::Release
};

/// What a [`MarkLock`] guards: it says, at each unlock, whether the mark stays up.
pub(crate) trait Marks {
    /// Whether the mark stays up at this unlock (an entry is left).
    fn keeps_mark(&self) -> bool;
}

/// A value behind a spin lock whose word also carries a mark (see the module docs).
#[derive(Debug)]
pub(crate) struct MarkLock<T> {
    /// [`LOCKED`] and [`MARK`] (under loom, [`MARK`] only).
    state: AtomicUsize,
    /// Accessed only while holding [`LOCKED`] (through a [`Held`]).
    #[cfg(not(loom))]
    value: UnsafeCell<T>,
    /// Under loom: the value, and whether the word's mark is up (changed under the
    /// mutex only), so that an unlock stores the mark only when it changes (every store
    /// is one more value for the model's loads to choose from).
    #[cfg(loom)]
    value: Mutex<(T, bool)>,
}

// SAFETY: `value` is only accessed by the thread that holds the `LOCKED` bit, which one
// thread at a time holds (taken by an Acquire CAS, released by a Release store), so the
// accesses never overlap and each holder sees the previous holder's writes; a `T: Send`
// may therefore be reached from any thread, as through a mutex.
#[cfg(not(loom))]
unsafe impl<T: Send> Sync for MarkLock<T> {}

/// The value, held: the lock is released when this drops (a panicking user call under
/// the lock included), keeping the mark if [`Marks::keeps_mark`] says so.
pub(crate) struct Held<'a, T: Marks> {
    lock: &'a MarkLock<T>,
    /// Under loom, the mutex's guard: released after the unlock's store of the mark.
    #[cfg(loom)]
    guard: MutexGuard<'a, (T, bool)>,
}

impl<T: Marks> Held<'_, T> {
    /// Runs `f` on the value.
    #[inline]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(not(loom))]
        {
            // SAFETY: this thread holds `LOCKED` while the `Held` lives, and `&mut self`
            // keeps the access unique within it (see the `Sync` impl).
            self.lock.value.with_mut(|p| f(unsafe { &mut *p }))
        }
        #[cfg(loom)]
        {
            f(&mut self.guard.0)
        }
    }
}

impl<T: Marks> Drop for Held<'_, T> {
    #[inline]
    fn drop(&mut self) {
        let keep = self.with(|v| v.keeps_mark());
        #[cfg(loom)]
        {
            // The mutex is released after this, when the guard drops.
            if keep != self.guard.1 {
                self.guard.1 = keep;
                self.lock
                    .state
                    .store(if keep { MARK } else { 0 }, Ordering::Release);
            }
        }
        // Release: the next holder (Acquire) sees our changes to the value. A store, not
        // an RMW: while `LOCKED` is set nobody else writes the word (every other change
        // is a CAS from a state without it).
        #[cfg(not(loom))]
        self.lock.state.store(if keep { MARK } else { 0 }, UNLOCK);
    }
}

impl<T: Marks> MarkLock<T> {
    pub(crate) fn new(value: T) -> Self {
        MarkLock {
            state: AtomicUsize::new(0),
            #[cfg(not(loom))]
            value: UnsafeCell::new(value),
            #[cfg(loom)]
            value: Mutex::new((value, false)),
        }
    }

    /// Whether the mark is up, as a SeqCst load: for a waker, after the SeqCst RMW that
    /// made the change it announces (see the module docs).
    #[inline]
    pub(crate) fn is_marked(&self) -> bool {
        load_seqcst(&self.state) & MARK != 0
    }

    /// Takes the lock, raising the mark with it if `mark` (a registration).
    #[cfg(loom)]
    pub(crate) fn lock(&self, mark: bool) -> Held<'_, T> {
        let mut guard = lock(&self.value);
        if mark {
            // SeqCst: the registration's change, as the production CAS; loom models a
            // SeqCst RMW as AcqRel only, so a SeqCst fence follows it (for every
            // registration, here rather than at each caller).
            self.state.fetch_or(MARK, Ordering::SeqCst);
            after_seqcst_rmw();
            guard.1 = true;
        }
        Held { lock: self, guard }
    }

    /// Takes the lock, raising the mark with it if `mark` (a registration).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn lock(&self, mark: bool) -> Held<'_, T> {
        let mark = if mark { MARK } else { 0 };
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & LOCKED == 0 {
                // SeqCst: a registration's mark is the change of the no-lost-wake-up
                // argument; Acquire: the previous holder's changes are visible.
                match self.state.compare_exchange(
                    s,
                    s | LOCKED | mark,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Held { lock: self },
                    Err(now) => s = now,
                }
            } else {
                s = self.lock_contended();
            }
        }
    }

    /// Waits, spinning, until the lock is free; returns the state seen then.
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> usize {
        let backoff = Backoff::new();
        loop {
            backoff.snooze();
            let s = self.state.load(Ordering::Relaxed);
            if s & LOCKED == 0 {
                return s;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Count(usize);

    impl Marks for Count {
        fn keeps_mark(&self) -> bool {
            self.0 > 0
        }
    }

    /// The mark follows the value at every unlock, whichever way the lock was taken, and
    /// a registration raises it while it holds the lock.
    #[test]
    fn mark_follows_the_value() {
        let lock = MarkLock::new(Count(0));
        assert!(!lock.is_marked());
        let mut held = lock.lock(true);
        assert!(lock.is_marked(), "raised with the lock");
        held.with(|c| c.0 += 1);
        drop(held);
        assert!(lock.is_marked(), "kept: an entry is left");
        lock.lock(false).with(|c| c.0 -= 1);
        assert!(!lock.is_marked(), "lowered: nothing left");
        drop(lock.lock(true));
        assert!(
            !lock.is_marked(),
            "a registration that left nothing lowers it again"
        );
    }

    /// A panic under the lock unlocks it (the guard's drop), with the mark as the value
    /// says.
    #[test]
    fn a_panic_under_the_lock_unlocks() {
        let lock = MarkLock::new(Count(1));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.lock(false).with(|_| panic!("user code"));
        }));
        assert!(caught.is_err());
        assert!(lock.is_marked());
        assert_eq!(lock.lock(false).with(|c| c.0), 1, "the lock is free again");
    }
}
