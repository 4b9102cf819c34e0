//! Waiting across processes: a futex word per side in the segment, with waiter counts so
//! that a wake-up system call is only made when someone sleeps.
//!
//! Each side (receivers waiting for messages, senders waiting for room) has two futex
//! words, each with its own count of sleepers:
//! - `seq`/`waiters` for blocking waiters: a commit wakes **one** of them;
//! - `async_seq`/`async_waiters` for the per-process async helper threads (see
//!   [`super::hub`]): a commit wakes **all** of them, and each helper wakes its registered
//!   tasks.
//!
//! # The no-lost-wake-up argument
//! A waiter (1) increments its count (SeqCst RMW), (2) loads `seq` (SeqCst), (3) issues
//! a SeqCst fence and re-checks the ring, (4) sleeps in `FUTEX_WAIT` only if `seq`
//! still holds the value from (2). A waker (a) commits its slot with a SeqCst CAS
//! ([`super::protocol::send`] / `recv`), (b) loads the count with SeqCst and, if
//! non-zero, (c) increments `seq` and calls `FUTEX_WAKE`. Either (b) sees (1), and then
//! (c) either precedes (2) (whose load then synchronizes with it, so (3) sees the
//! commit) or follows it (so the kernel's check in (4) fails, or the wake finds the
//! sleeper); or (3) sees the commit. Were neither so, the single total order of SeqCst
//! operations would have a cycle: the fence in (3) before the commit (the re-check read
//! an older stamp), the commit before (b) (program order), (b) before (1) (it read an
//! older count), and (1) before the fence (program order). The waker needs no fence of
//! its own: on x86 its commit is a locked instruction and its loads are plain ones. The
//! re-check in (3) may be a claim attempt or just a load of the stamp of the slot at
//! the waiter's position ([`Ring::may_proceed`](crate::chan::ring::Ring::may_proceed)):
//! either way its loads come after the fence. Sleeps are also bounded by a timeout
//! slice, so that peer death is noticed even without a wake-up. (Modelled in
//! `loom-tests/tests/loom_shm_ring.rs`, `*_recheck_never_sleeps_through_*`, and with
//! these words and the production wait loop in `loom-tests/tests/loom_shm_wait.rs`, where
//! the kernel's side of the futex is `model::Sleepers`.)
//!
//! In a single-producer channel created with light fences (`super::asym`), the commit in
//! (a) is a Release store followed by a light fence, and the waiter issues a heavy fence
//! after (3)'s SeqCst fence: the pair stands in for the waker's missing store-load order,
//! so the same argument holds with (a) and (b) ordered by it.
//!
//! A process killed while asleep leaves its count raised: later commits then make a
//! (harmless, wasted) `FUTEX_WAKE` call each, until the name is unlinked.

use std::time::Duration;

#[cfg(not(loom))]
use rustix::io::Errno;
#[cfg(not(loom))]
use rustix::thread::futex;

use crate::sync::{AtomicU32, Ordering};

/// One side's wait words (a 128-byte block of the header).
#[repr(C, align(128))]
pub(crate) struct SideSignal {
    /// Bumped by every wake-up of blocking waiters; they sleep on it.
    pub(crate) seq: AtomicU32,
    /// How many blocking waiters may be sleeping on `seq`.
    pub(crate) waiters: AtomicU32,
    /// Bumped by every wake-up of async helpers; they sleep on it.
    pub(crate) async_seq: AtomicU32,
    /// How many async waits (tasks of any process) are registered on this side.
    pub(crate) async_waiters: AtomicU32,
    /// Under loom, the kernel's queue of sleepers on `seq` (`model::Sleepers`).
    #[cfg(loom)]
    sleepers: model::Sleepers,
}

/// How a bounded sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// A wake-up, a changed word, or a signal: re-check.
    Early,
    /// The timeout elapsed.
    TimedOut,
}

impl SideSignal {
    /// Announces one change (a commit) to one blocking waiter and every async helper, if
    /// any sleeps. The change was a SeqCst RMW (see the module docs).
    #[inline]
    pub(crate) fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            self.wake_seq(1);
        }
        super::hub::notify(self);
    }

    /// Announces one change (a SeqCst RMW, see the module docs) to *every* blocking
    /// waiter and every async helper, if any sleeps: for waits that may each wait for
    /// something else (a signal target's waits for different sets, a mailbox's receivers
    /// with their own selections), where one woken waiter would not do. No system call
    /// when nobody sleeps.
    #[inline]
    pub(crate) fn notify_waiting(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            self.wake_seq(u32::MAX);
        }
        super::hub::notify(self);
    }

    /// Wakes every waiter of this side, in every process (a peer came or went).
    pub(crate) fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        self.wake_seq(u32::MAX);
        self.async_seq.fetch_add(1, Ordering::SeqCst);
        self.wake_async_seq();
    }

    /// Registers a blocking waiter and returns the `seq` value to sleep on; the caller
    /// re-checks the ring next, then calls [`SideSignal::sleep`] and
    /// [`SideSignal::unregister`].
    pub(crate) fn register(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let seq = self.seq.load(Ordering::SeqCst);
        crate::sync::fence(Ordering::SeqCst);
        seq
    }

    /// Undoes [`SideSignal::register`].
    pub(crate) fn unregister(&self) {
        self.waiters.fetch_sub(1, Ordering::Release);
    }

    /// Sleeps while `seq` still holds `seen`, for at most `timeout`.
    #[cfg(not(loom))]
    pub(crate) fn sleep(&self, seen: u32, timeout: Duration) -> Woke {
        wait(&self.seq, seen, timeout)
    }

    /// `FUTEX_WAKE` of up to `n` blocking waiters.
    #[cfg(not(loom))]
    fn wake_seq(&self, n: u32) {
        wake(&self.seq, n);
    }

    /// `FUTEX_WAKE` of every async helper.
    #[cfg(not(loom))]
    fn wake_async_seq(&self) {
        wake(&self.async_seq, u32::MAX);
    }
}

#[cfg(loom)]
impl SideSignal {
    /// Fresh words, for the loom models (in production they live in a segment).
    pub(crate) fn new() -> Self {
        SideSignal {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            async_seq: AtomicU32::new(0),
            async_waiters: AtomicU32::new(0),
            sleepers: model::Sleepers::default(),
        }
    }

    /// [`SideSignal::sleep`] under loom: sleeps while `seq` holds `seen`, until woken or,
    /// with a `deadline`, until the model lets it pass. Without one the sleep has no
    /// timeout slice: a wake-up the protocol loses then hangs the model (loom reports the
    /// deadlock) instead of being covered up by the slice.
    pub(crate) fn sleep_model(
        &self,
        seen: u32,
        deadline: Option<&crate::sync::ModelDeadline>,
    ) -> Woke {
        self.sleepers.wait(&self.seq, seen, deadline)
    }

    fn wake_seq(&self, n: u32) {
        self.sleepers.wake(n);
    }

    /// No async helper threads are modelled; the `async_seq` word still changes.
    fn wake_async_seq(&self) {}
}

/// The async hub's view of the side ([`super::hub`]): its `async_seq` and
/// `async_waiters`, and the wake-up of every helper sleeping on `async_seq`.
impl super::hub::WaitWords for SideSignal {
    fn async_seq(&self) -> &AtomicU32 {
        &self.async_seq
    }

    fn async_waiters(&self) -> &AtomicU32 {
        &self.async_waiters
    }

    fn wake_helpers(&self) {
        self.wake_async_seq();
    }
}

/// The kernel's side of a futex, under loom.
#[cfg(loom)]
pub(crate) mod model {
    use core::cell::Cell;
    use core::task::{Poll, Waker};
    use std::collections::VecDeque;

    use super::Woke;
    use crate::sync::{AtomicU32, ModelDeadline, Mutex, Ordering, lock};

    /// The sleepers on one futex word, oldest first, each with the waker of the
    /// `block_on` it sleeps in. The lock stands for the kernel's hash-bucket lock:
    /// `FUTEX_WAIT` checks the word and queues under it, `FUTEX_WAKE` dequeues under it.
    #[derive(Default)]
    pub(crate) struct Sleepers(Mutex<Queue>);

    #[derive(Default)]
    struct Queue {
        next: u64,
        sleepers: VecDeque<(u64, Waker)>,
    }

    impl Sleepers {
        /// `FUTEX_WAIT` on `word` while it holds `seen`; with a `deadline`, a sleeper still
        /// queued when it passes leaves the queue and reports [`Woke::TimedOut`].
        pub(crate) fn wait(
            &self,
            word: &AtomicU32,
            seen: u32,
            deadline: Option<&ModelDeadline>,
        ) -> Woke {
            let key = Cell::new(None);
            let sleep = core::future::poll_fn(|cx| {
                let mut q = lock(&self.0);
                match key.get() {
                    None => {
                        if word.load(Ordering::SeqCst) != seen {
                            return Poll::Ready(());
                        }
                        let k = q.next;
                        q.next += 1;
                        q.sleepers.push_back((k, cx.waker().clone()));
                        key.set(Some(k));
                        Poll::Pending
                    }
                    Some(k) => match q.sleepers.iter_mut().find(|(id, _)| *id == k) {
                        // Dequeued by a wake.
                        None => Poll::Ready(()),
                        Some((_, waker)) => {
                            waker.clone_from(cx.waker());
                            Poll::Pending
                        }
                    },
                }
            });
            let Some(deadline) = deadline else {
                loom::future::block_on(sleep);
                return Woke::Early;
            };
            if deadline.wait(sleep).is_some() {
                return Woke::Early;
            }
            let mut q = lock(&self.0);
            match q.sleepers.iter().position(|(id, _)| Some(*id) == key.get()) {
                Some(i) => {
                    q.sleepers.remove(i);
                    Woke::TimedOut
                }
                // Never queued (the word had changed), or woken as the deadline passed.
                None => Woke::Early,
            }
        }

        /// `FUTEX_WAKE` of up to `n` sleepers, oldest first.
        pub(crate) fn wake(&self, n: u32) {
            let woken: Vec<Waker> = {
                let mut q = lock(&self.0);
                let n = (n as usize).min(q.sleepers.len());
                q.sleepers.drain(..n).map(|(_, w)| w).collect()
            };
            for w in woken {
                w.wake();
            }
        }
    }
}

/// `FUTEX_WAIT` (shared) on `word` while it holds `seen`, for at most `timeout`.
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, seen: u32, timeout: Duration) -> Woke {
    let ts = futex::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match futex::wait(word, futex::Flags::empty(), seen, Some(&ts)) {
        Err(Errno::TIMEDOUT) => Woke::TimedOut,
        _ => Woke::Early,
    }
}

/// `FUTEX_WAKE` (shared) of up to `n` sleepers on `word`.
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    // Errors (EFAULT cannot happen for a live reference) are ignored: a missed wake-up
    // is bounded by the sleepers' timeout slice.
    let _ = futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32));
}
