//! The one synchronization shim.
//!
//! Every atomic, cell, lock, thread and park that conduit's algorithms use comes from
//! here: `loom`'s versions under `cfg(loom)`, `std`'s otherwise. The same algorithm
//! code therefore runs in production and under the model checker.
//!
//! `std`'s [`UnsafeCell`](core::cell::UnsafeCell) is wrapped to offer loom's
//! `with`/`with_mut` API, so cell accesses are visible to loom as reads and writes.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::{self, Thread};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::{self, Thread};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` with loom's closure-based access API.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Loads `a` with SeqCst, ordered after this thread's earlier SeqCst RMWs: the "re-check"
/// and "any waiters?" loads of the no-lost-wake-up argument in `chan::signal`.
///
/// In production this is a plain SeqCst load (on x86 an ordinary `mov`, unlike a fence):
/// SeqCst operations form one total order consistent with each thread's program order,
/// which is all the argument needs. loom models SeqCst *accesses* as acquire/release
/// only, too weak to check that argument, so under loom the same ordering is expressed
/// with a SeqCst fence before the load, which loom does model.
#[inline(always)]
pub(crate) fn load_seqcst(a: &AtomicUsize) -> usize {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
    a.load(Ordering::SeqCst)
}

/// [`load_seqcst`] for a 64-bit word (the signal targets' pending and mask words).
#[inline(always)]
pub(crate) fn load_seqcst_u64(a: &AtomicU64) -> u64 {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
    a.load(Ordering::SeqCst)
}

/// Orders what follows after this thread's preceding SeqCst read-modify-write the way a
/// SeqCst fence would, for the same kind of argument as [`load_seqcst`]: in production
/// nothing is needed, since the RMW itself takes its place in the single total order of
/// SeqCst operations (on x86 it is a locked instruction, already a full barrier), and the
/// loads that the argument needs ordered after it are SeqCst. loom models SeqCst RMWs as
/// acquire/release only, so under loom this is a SeqCst fence.
#[inline(always)]
pub(crate) fn after_seqcst_rmw() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// Locks a mutex, ignoring poisoning: conduit's critical sections never leave a
/// state half-updated when they panic (they only move values in and out of queues).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The calling thread's key: nonzero, below `usize::MAX - 1`, and never the same for
/// two threads of a process (a counter, drawn once per thread, so a key outlives its
/// thread unused rather than passing to another). Under loom, per model thread.
#[inline]
pub(crate) fn thread_key() -> usize {
    #[cfg(not(loom))]
    std::thread_local! {
        static KEY: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static KEY: core::cell::Cell<usize> = core::cell::Cell::new(0);
    }
    KEY.with(|key| match key.get() {
        0 => {
            let new = next_thread_key();
            key.set(new);
            new
        }
        known => known,
    })
}

/// A fresh [`thread_key`].
#[cold]
fn next_thread_key() -> usize {
    // A std atomic under loom too: keys need only be distinct, not modelled.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Exponential backoff for spin loops.
///
/// Outside loom this is `crossbeam_utils::Backoff`. Under loom, spinning must yield to
/// the model's scheduler or the model would never terminate, so every step yields and
/// the backoff reports itself completed at once (waiters go straight to parking).
#[cfg(not(loom))]
pub(crate) use crossbeam_utils::Backoff;

#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Backoff;

#[cfg(loom)]
impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff
    }
    pub(crate) fn spin(&self) {
        loom::thread::yield_now();
    }
    pub(crate) fn snooze(&self) {
        loom::thread::yield_now();
    }
    pub(crate) fn is_completed(&self) -> bool {
        true
    }
}

/// A spin that polls `quick` times a single spin-loop hint apart, then backs off
/// exponentially ([`Backoff`]): a change that comes within the first few hundred
/// nanoseconds of a wait is seen about one hint after it happens, rather than after a
/// backoff step that may be as long as the wait so far. The waits that use it pick
/// their own `quick` (and measured it). Under loom there are no quick polls: spinning
/// must yield to the model's scheduler.
pub(crate) struct QuickBackoff {
    quick: u32,
    backoff: Backoff,
}

impl QuickBackoff {
    pub(crate) fn new(quick: u32) -> Self {
        QuickBackoff {
            quick: if cfg!(loom) { 0 } else { quick },
            backoff: Backoff::new(),
        }
    }

    /// Whether the spin is over: the quick polls done and the backoff completed.
    pub(crate) fn is_completed(&self) -> bool {
        self.quick == 0 && self.backoff.is_completed()
    }

    /// One step of the spin: a single spin-loop hint while quick polls are left, a
    /// backoff step after.
    pub(crate) fn snooze(&mut self) {
        if self.quick > 0 {
            self.quick -= 1;
            core::hint::spin_loop();
        } else {
            self.backoff.snooze();
        }
    }
}

/// The wait queue blocking waits park on.
pub(crate) use event_listener::{Event, Listener, listener};

/// A timed wait's deadline under loom, where real time means nothing to the model and
/// `park_until` ignores deadlines: a thread of the model's own that makes the deadline
/// pass once, at whatever point of the waiter's run the model checker schedules it, so
/// that every point at which a timed wait could give up is explored (including "exactly
/// as a notification lands"). The waiter starts it when it first sleeps.
#[cfg(loom)]
pub(crate) struct ModelDeadline(Arc<ModelDeadlineState>);

#[cfg(loom)]
struct ModelDeadlineState {
    passed: AtomicBool,
    /// The waker of a [`ModelDeadline::wait`] in progress.
    waker: loom::future::AtomicWaker,
}

#[cfg(loom)]
impl ModelDeadline {
    /// Starts the timer thread (detached: it only sets the flag and wakes the waiter).
    pub(crate) fn start() -> Self {
        let state = Arc::new(ModelDeadlineState {
            passed: AtomicBool::new(false),
            waker: loom::future::AtomicWaker::new(),
        });
        let timer = state.clone();
        drop(thread::spawn(move || {
            timer.passed.store(true, Ordering::SeqCst);
            timer.waker.wake();
        }));
        ModelDeadline(state)
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.0.passed.load(Ordering::SeqCst)
    }

    /// Blocks on `fut` until it completes (`Some`) or the deadline passes first (`None`).
    pub(crate) fn wait<F: core::future::Future>(&self, fut: F) -> Option<F::Output> {
        use core::task::Poll;
        let mut fut = core::pin::pin!(fut);
        loom::future::block_on(core::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            // Registered before the check, so a deadline passing after it wakes us.
            self.0.waker.register_by_ref(cx.waker());
            if self.passed() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }))
    }
}

/// A blocking wait's deadline: an [`Instant`](std::time::Instant) in production; under
/// loom, where time means nothing to the model, a `ModelDeadline` started when the
/// wait first sleeps, so that the model checker picks the point at which it gives up.
pub(crate) struct Deadline {
    at: Option<std::time::Instant>,
    #[cfg(loom)]
    model: Option<ModelDeadline>,
}

impl Deadline {
    pub(crate) fn new(at: Option<std::time::Instant>) -> Self {
        Deadline {
            at,
            #[cfg(loom)]
            model: None,
        }
    }

    /// Whether the deadline has passed (never, without one).
    pub(crate) fn passed(&self) -> bool {
        #[cfg(loom)]
        return self.model.as_ref().is_some_and(ModelDeadline::passed);
        #[cfg(not(loom))]
        self.at.is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// The deadline, if any.
    #[cfg(not(loom))]
    pub(crate) fn at(&self) -> Option<std::time::Instant> {
        self.at
    }

    /// The model's deadline, started by the first call, if the wait has one.
    #[cfg(loom)]
    pub(crate) fn model(&mut self) -> Option<&ModelDeadline> {
        self.at?;
        Some(self.model.get_or_insert_with(ModelDeadline::start))
    }
}
