//! Async waits: one helper thread per process sleeps on the async futex words of every
//! side that a task waits on, and wakes those tasks' `Waker`s.
//!
//! The protocol is written once, generic over what it waits on ([`Watched`], whose
//! [`WaitWords`] are a segment side's `async_seq` and `async_waiters` in production) and
//! over how the helper sleeps on several words at once ([`Sleeper`]: `futex_waitv` in
//! production, a stand-in for the kernel in the loom models of `loom-tests/tests/loom_hub.rs`,
//! through `conduit::__loom_shm::AsyncHub`). A [`Hub`] is an instance: production uses
//! one process-wide static whose helper thread runs for the life of the process; a model
//! makes its own, runs [`Hub::run`] on a thread of the model and ends it with
//! [`Hub::stop`].
//!
//! # Arming and disarming
//! Step by step (a [`Wait`] is one future's state; the committer is any sender or
//! receiver of any process whose commit may let the future proceed):
//! 0. A poll tries the operation. If it cannot proceed and the future is not counted yet
//!    (below), it first waits briefly without the hub ([`Wait::spin`]): it polls the
//!    ring for up to [`SPIN_POLLS`] spin-loop hints (a couple of microseconds) within the
//!    poll, then, until [`SPIN_FOR`] has passed since that first spin, *yields* (wakes its
//!    own task and returns `Pending`, so the executor runs its other tasks before polling
//!    it again). Nothing in shared memory changes meanwhile: a committer sees no async
//!    waiter and makes no system call, and nothing is there to lose.
//! 1. After that, if it still cannot proceed, the future counts itself in the
//!    side's `async_waiters` (SeqCst RMW; once per future, until it completes or is
//!    dropped), loads `async_seq` (SeqCst) as `seen`, issues a SeqCst fence (and, where
//!    committers publish with light fences, a heavy one: `super::asym`) and tries
//!    again (the re-check).
//! 2. If that fails too, it *arms*: under the hub's lock it inserts (or refreshes) a
//!    registration `(target, seen, waker)`, then bumps the hub's private control word
//!    and wakes it, so that the helper, which may be asleep on an older set of words,
//!    starts a new round.
//! 3. A committer commits with a SeqCst RMW and then, in [`notify`], loads
//!    `async_waiters` (SeqCst); if it is not zero it bumps `async_seq` and wakes every
//!    helper sleeping on it (in every process).
//! 4. Each round the helper loads the control word, then under the lock loads the
//!    `async_seq` of every registration: a registration whose word differs from its
//!    `seen` is removed and its waker woken (outside the lock); the others' words, each
//!    with the value just loaded, and the control word make up the next sleep, which
//!    returns as soon as any of them differs (the kernel checks each word against its
//!    value and queues the sleeper atomically, as for `FUTEX_WAIT`).
//! 5. A woken task polls again (step 1, already counted); a future that completes or is
//!    dropped *disarms* (removes its registration, if the helper has not) and then
//!    un-counts itself, exactly once ([`Wait::cancel`]).
//!
//! No wake-up is lost: by the futex module's argument (steps 1 and 3 are its (1)-(3)
//! and (a)-(c)), either the re-check sees the commit, or the committer sees the count
//! and bumps `async_seq` after the waiter loaded `seen`. In the second case the bump
//! reaches the helper: if the helper's round that reads the registration (after step 2's
//! insert) loads the bumped word, it wakes the task at once; if it loads the old value,
//! its sleep includes the word with that value, so the bump either makes the kernel's
//! check fail or finds the helper queued. A round that ran before the insert took the
//! lock before step 2 did, so its control load precedes step 2's bump of the control
//! word, and its sleep returns at once or is woken by the control wake.
//!
//! Step 0 is there for round trips between processes. Without it, each hop of a
//! ping-pong between two async tasks in two processes paid two cross-CPU wake-ups (the
//! committer's `FUTEX_WAKE` of the helper, then the helper's wake of the task's
//! executor): 13.7 µs per round trip, where a blocking pipe takes about 7.7. A task that
//! is still polling when the reply lands takes it at once. The window ([`SPIN_FOR`])
//! is longer than one such slow hop, so that a ping-pong that fell into the slow mode
//! (both sides asleep in the hub) finds its way out: the side that sent last is still
//! polling when the other side's reply arrives. The bounds on an executor thread: one
//! poll spins at most [`SPIN_POLLS`] hints (and the bounded attempts among them), and a
//! future's spins add up to at most [`SPIN_FOR`] and one spin, however often or seldom
//! it is polled; between spins the yields let the executor run its other tasks. Under
//! loom there is no step 0 (the models cover the protocol of steps 1 to 5).
//!
//! The decrement of step 5 needs no ordering of its own: every value the count takes
//! between a future's increment and its decrement (in the count's modification order, a
//! chain of RMWs) includes that future, so a committer's load that misses the increment
//! read an older value, which makes the load precede the increment in the SeqCst order,
//! the case the argument already covers. Its Release pairs with nothing; a Relaxed
//! decrement would do as well.
//!
//! Without `futex_waitv` (Linux < 5.16) the production helper polls the words every
//! millisecond, as it does for words past the 127 that one `futex_waitv` takes. It also
//! runs peer maintenance for the segments it watches, so tasks learn of dead peers.

use core::task::{Context, Poll, Waker};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, fence, lock};

/// One side's async wait words (a segment side's, in production).
pub(crate) trait WaitWords {
    /// Bumped by every wake-up of async helpers; they sleep on it.
    fn async_seq(&self) -> &AtomicU32;
    /// How many async waits (of any process) are counted on this side.
    fn async_waiters(&self) -> &AtomicU32;
    /// Wakes every helper thread sleeping on `async_seq` (in every process).
    fn wake_helpers(&self);
}

/// What a registration keeps: the words it waits on, and whatever keeps them alive.
pub(crate) trait Watched: Clone {
    /// The words.
    type Words: WaitWords;
    /// The words waited on.
    fn words(&self) -> &Self::Words;
    /// Whether `self` and `other` belong to one segment (maintained once per round).
    fn same_segment(&self, other: &Self) -> bool;
    /// The helper's periodic work for the segment (production: peer maintenance).
    fn maintain(&self);
}

/// How the helper sleeps on several words at once, and how it is woken for a new round.
pub(crate) trait Sleeper {
    /// Buffers a sleep may keep from one round to the next.
    type Scratch: Default;
    /// Sleeps while every word of `watched` holds its value and `control` holds
    /// `control_seen`, until woken (on one of them), or a timeout. May return early.
    fn sleep<T: Watched>(
        &self,
        scratch: &mut Self::Scratch,
        watched: &[(T, u32)],
        control: &AtomicU32,
        control_seen: u32,
    );
    /// Wakes the helper sleeping on `control` (which was just bumped).
    fn wake_control(&self, control: &AtomicU32);
}

/// Announces a commit (a SeqCst RMW) to the async waits of the side of `words`: step 3
/// of the module docs.
#[inline]
pub(crate) fn notify<W: WaitWords>(words: &W) {
    if words.async_waiters().load(Ordering::SeqCst) != 0 {
        words.async_seq().fetch_add(1, Ordering::SeqCst);
        words.wake_helpers();
    }
}

struct Registration<T> {
    target: T,
    seen: u32,
    waker: Waker,
}

/// The registrations of pending async waits and the helper thread's loop over them.
pub(crate) struct Hub<T, S> {
    /// By id (ordered: a model's runs must not depend on a hasher's seed).
    registrations: Mutex<BTreeMap<u64, Registration<T>>>,
    /// Bumped (and woken) when a registration is added or re-armed, and by `stop`.
    control: AtomicU32,
    next_id: AtomicU64,
    /// Set by [`Hub::stop`]: the helper's loop returns.
    stop: AtomicBool,
    sleeper: S,
}

impl<T: Watched, S: Sleeper> Hub<T, S> {
    pub(crate) fn new(sleeper: S) -> Self {
        Hub {
            registrations: Mutex::new(BTreeMap::new()),
            control: AtomicU32::new(0),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            sleeper,
        }
    }

    fn nudge(&self) {
        self.control.fetch_add(1, Ordering::Release);
        self.sleeper.wake_control(&self.control);
    }

    /// Adds or refreshes the registration `*id` (0: none yet): step 2 of the module docs.
    /// `target` is called only for a new registration.
    fn arm(&self, id: &mut u64, target: impl FnOnce() -> T, seen: u32, waker: &Waker) {
        let mut regs = lock(&self.registrations);
        let nudge = match regs.get_mut(id) {
            Some(r) if *id != 0 => {
                if !r.waker.will_wake(waker) {
                    r.waker = waker.clone();
                }
                let changed = r.seen != seen;
                r.seen = seen;
                changed
            }
            _ => {
                *id = self.next_id.fetch_add(1, Ordering::Relaxed);
                regs.insert(
                    *id,
                    Registration {
                        target: target(),
                        seen,
                        waker: waker.clone(),
                    },
                );
                true
            }
        };
        drop(regs);
        if nudge {
            self.nudge();
        }
    }

    fn disarm(&self, id: u64) {
        let removed = lock(&self.registrations).remove(&id);
        // Dropped outside the lock: it may unmap a segment.
        drop(removed);
    }

    /// How many registrations are armed (for the models' checks).
    #[cfg(loom)]
    pub(crate) fn armed(&self) -> usize {
        lock(&self.registrations).len()
    }

    /// Ends [`Hub::run`] (at its next round: the helper is woken for it). The process's
    /// hub is never stopped; the models stop theirs to join the helper.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.nudge();
    }

    /// The helper thread's loop (step 4 of the module docs), until [`Hub::stop`].
    pub(crate) fn run(&self) {
        let mut fire = Vec::new();
        let mut watched: Vec<(T, u32)> = Vec::new();
        let mut scratch = S::Scratch::default();
        loop {
            let control = self.control.load(Ordering::Acquire);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            {
                let mut regs = lock(&self.registrations);
                regs.retain(|_, r| {
                    let word = r.target.words().async_seq();
                    let now = word.load(Ordering::SeqCst);
                    if now != r.seen {
                        // Taken, not cloned: no user code runs under the lock (the
                        // registration is dropped here).
                        fire.push(core::mem::replace(&mut r.waker, Waker::noop().clone()));
                        return false;
                    }
                    if !watched
                        .iter()
                        .any(|(t, _)| core::ptr::eq(t.words().async_seq(), word))
                    {
                        watched.push((r.target.clone(), now));
                    }
                    true
                });
            }
            for waker in fire.drain(..) {
                // A task's waker is user code: if it panics, the panic hook has reported
                // it, and this thread, which every async wait of the process relies on,
                // goes on (there is no caller to pass the panic to).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
            for (i, (t, _)) in watched.iter().enumerate() {
                if !watched[..i].iter().any(|(o, _)| o.same_segment(t)) {
                    // Bumps `async_seq` (seen next round) if a peer was reaped.
                    t.maintain();
                }
            }
            // The targets in `watched` keep their words alive during the sleep.
            self.sleeper
                .sleep(&mut scratch, &watched, &self.control, control);
            watched.clear();
        }
    }
}

/// How many spin-loop hints one poll spends polling the ring before it yields (step 0
/// of the module docs): about 2 µs on the CPUs measured (a hint takes about 29 ns on
/// the project's AMD EPYC VM), about the time a cache line takes to cross between CPUs
/// some ten times over, so a reply already on its way is taken without a yield.
pub(crate) const SPIN_POLLS: u32 = if cfg!(loom) { 0 } else { 64 };

/// How many attempts one spin makes that fail although `may_proceed` said they might go
/// through, before it yields: an attempt is bounded, but on a corrupt segment a bounded
/// attempt can take long (it waits out a claim that never commits), and a spin must
/// cost about what [`SPIN_POLLS`] hints cost, not that many such attempts.
const SPIN_FAILED_ATTEMPTS: u32 = 1;

/// How long a wait keeps polling (in [`SPIN_POLLS`] spins and yields), counted from the
/// end of its first spin, before it counts itself and arms the hub (step 0 of the module
/// docs): longer than a hop through the hub (two cross-CPU wake-ups, about 7 µs on the
/// project's VM), so that a ping-pong between processes that slipped into the hub
/// returns to the fast path at the next hop.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(if cfg!(loom) { 0 } else { 25 });

/// What step 0 of the module docs decided.
enum Spun<R> {
    /// The operation went through.
    Done(R),
    /// The task was woken again; return `Pending`.
    Yield,
    /// The window is over: count and arm.
    Arm,
}

/// The state an async wait keeps between polls: counted in its side's `async_waiters`,
/// and armed with a hub.
#[derive(Debug, Default)]
pub(crate) struct Wait {
    /// The registration id (0: none).
    id: u64,
    /// Whether the side's `async_waiters` counts this wait.
    counted: bool,
    /// When the first spin of step 0 (spinning and yielding before counting) ended, if
    /// it has.
    since: Option<Instant>,
}

impl Wait {
    pub(crate) const fn new() -> Self {
        Wait {
            id: 0,
            counted: false,
            since: None,
        }
    }

    /// Step 0 of the module docs: unless the window is over, poll the ring for
    /// [`SPIN_POLLS`] hints, trying `attempt` whenever `may_proceed` says it may go
    /// through (at most [`SPIN_FAILED_ATTEMPTS`] failed attempts), then yield. Bounded:
    /// one call spins at most [`SPIN_POLLS`] times (each
    /// attempt is bounded in turn), and a poll that finds the window over spins no
    /// more, so a future's spins add up to at most [`SPIN_FOR`] and one spin however
    /// seldom it is polled (a task polling many futures pays for each of them once).
    fn spin<R>(
        &mut self,
        cx: &mut Context<'_>,
        may_proceed: &mut impl FnMut() -> bool,
        attempt: &mut impl FnMut() -> Option<R>,
    ) -> Spun<R> {
        if SPIN_FOR.is_zero() || self.since.is_some_and(|t| t.elapsed() >= SPIN_FOR) {
            return Spun::Arm;
        }
        let mut failed = 0;
        // Under loom `SPIN_POLLS` is 0 and the loop is empty, on purpose.
        #[allow(clippy::reversed_empty_ranges)]
        for _ in 0..SPIN_POLLS {
            core::hint::spin_loop();
            if may_proceed() {
                if let Some(r) = attempt() {
                    return Spun::Done(r);
                }
                failed += 1;
                if failed == SPIN_FAILED_ATTEMPTS {
                    break;
                }
            }
        }
        // The clock is read only once the first spin has failed: a reply that lands
        // within it costs no clock read.
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        cx.waker().wake_by_ref();
        Spun::Yield
    }

    /// Whether the wait is counted in its side's `async_waiters`.
    pub(crate) fn is_counted(&self) -> bool {
        self.counted
    }

    /// One poll (steps 0 and 1 of the module docs): `attempt`, and if it must wait, spin
    /// and yield for a while (`may_proceed`, a cheap look at the ring, says when to
    /// attempt again), then count the wait, re-check, and arm a wake-up with `hub` for
    /// `words` (`target` makes the registration's copy). `hub` is called only if the
    /// wait arms or disarms.
    // One more than clippy's default: the segment side's words and whether they need a
    // heavy fence travel separately (the words are shared memory, the flag is the
    // segment's layout).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn poll<'h, T: Watched + 'h, S: Sleeper + 'h, R>(
        &mut self,
        hub: impl FnOnce() -> &'h Hub<T, S>,
        words: &T::Words,
        heavy: bool,
        target: impl FnOnce() -> T,
        cx: &mut Context<'_>,
        mut may_proceed: impl FnMut() -> bool,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        if let Some(r) = attempt() {
            self.cancel(hub, words);
            return Poll::Ready(r);
        }
        if !self.counted {
            match self.spin(cx, &mut may_proceed, &mut attempt) {
                Spun::Done(r) => {
                    self.cancel(hub, words);
                    return Poll::Ready(r);
                }
                Spun::Yield => return Poll::Pending,
                Spun::Arm => {}
            }
            words.async_waiters().fetch_add(1, Ordering::SeqCst);
            self.counted = true;
        }
        let seen = words.async_seq().load(Ordering::SeqCst);
        // SeqCst fence before the re-check: the futex module's no-lost-wake-up argument;
        // with `heavy` (the other side publishes with light fences), the slow side of an
        // asymmetric fence (`super::asym`).
        fence(Ordering::SeqCst);
        let fenced = !heavy || super::asym::heavy();
        if let Some(r) = attempt() {
            self.cancel(hub, words);
            return Poll::Ready(r);
        }
        if !fenced {
            // A commit may have missed this registration: poll again rather than arm
            // (the heavy fence does not fail once registered, short of a kernel bug).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        hub().arm(&mut self.id, target, seen, cx.waker());
        Poll::Pending
    }

    /// Ends the wait (completion or drop): disarm, then un-count (step 5 of the module
    /// docs). Idempotent: a second call does nothing.
    pub(crate) fn cancel<'h, T: Watched + 'h, S: Sleeper + 'h>(
        &mut self,
        hub: impl FnOnce() -> &'h Hub<T, S>,
        words: &T::Words,
    ) {
        self.since = None;
        if self.id != 0 {
            hub().disarm(self.id);
            self.id = 0;
        }
        if self.counted {
            self.counted = false;
            // No ordering needed (module docs, last paragraph).
            words.async_waiters().fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(not(loom))]
pub(crate) use production::AsyncWait;

/// The process-wide hub over segments, with `futex_waitv`.
#[cfg(not(loom))]
mod production {
    use core::task::{Context, Poll};
    use std::sync::OnceLock;
    use std::time::Duration;

    use rustix::io::Errno;
    use rustix::thread::futex;

    use super::{Hub, Sleeper, Wait, WaitWords, Watched};
    use crate::shm::futex::SideSignal;
    use crate::shm::segment::{Segment, Side};
    use crate::shm::wait::SLICE;
    use crate::sync::{Arc, AtomicBool, AtomicU32, Ordering};

    /// `futex_waitv` takes at most this many words.
    const WAITV_MAX: usize = 128;

    /// One side of a mapped segment.
    #[derive(Clone)]
    pub(super) struct SegmentSide {
        seg: Arc<Segment>,
        side: Side,
    }

    impl Watched for SegmentSide {
        type Words = SideSignal;

        fn words(&self) -> &SideSignal {
            self.seg.signal(self.side)
        }

        fn same_segment(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.seg, &other.seg)
        }

        fn maintain(&self) {
            self.seg.maintain_if_due();
        }
    }

    /// `futex_waitv` over the words, with a timeout slice; polling every millisecond
    /// where it is unavailable.
    #[derive(Default)]
    pub(super) struct Futex {
        /// `futex_waitv` is unavailable: poll.
        polling: AtomicBool,
    }

    impl Sleeper for Futex {
        type Scratch = Vec<futex::Wait>;

        fn sleep<T: Watched>(
            &self,
            waits: &mut Vec<futex::Wait>,
            watched: &[(T, u32)],
            control: &AtomicU32,
            control_seen: u32,
        ) {
            // Words beyond what one `futex_waitv` takes are polled.
            let overflow = watched.len() >= WAITV_MAX - 1;
            for (t, now) in watched.iter().take(WAITV_MAX - 1) {
                let addr = t.words().async_seq() as *const AtomicU32 as *mut core::ffi::c_void;
                let mut w = futex::Wait::new();
                w.val = u64::from(*now);
                w.uaddr = futex::WaitPtr::new(addr);
                w.flags = futex::WaitFlags::SIZE_U32;
                waits.push(w);
            }
            let mut control_wait = futex::Wait::new();
            control_wait.val = u64::from(control_seen);
            control_wait.uaddr =
                futex::WaitPtr::new(control as *const AtomicU32 as *mut core::ffi::c_void);
            control_wait.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
            waits.push(control_wait);
            let polling = self.polling.load(Ordering::Relaxed);
            let timeout = if overflow || polling {
                Duration::from_millis(1)
            } else {
                SLICE
            };
            if polling {
                std::thread::sleep(timeout);
            } else {
                let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
                let mut deadline = now;
                let nanos = now.tv_nsec + timeout.as_nanos() as i64;
                deadline.tv_sec += nanos / 1_000_000_000;
                deadline.tv_nsec = nanos % 1_000_000_000;
                // The words stay mapped during the wait: the caller holds their segments'
                // `Arc`s until after it.
                if let Err(Errno::NOSYS) = futex::waitv(
                    waits,
                    futex::WaitvFlags::empty(),
                    Some(&deadline),
                    futex::ClockId::Monotonic,
                ) {
                    self.polling.store(true, Ordering::Relaxed);
                }
            }
            waits.clear();
        }

        fn wake_control(&self, control: &AtomicU32) {
            let _ = futex::wake(control, futex::Flags::PRIVATE, 1);
        }
    }

    type ProcessHub = Hub<SegmentSide, Futex>;

    /// The process's hub; the first call starts its helper thread, which runs for the
    /// life of the process. (`std`'s `OnceLock` directly: this static is the production
    /// glue around the protocol, not part of it; the loom models make hubs of their own.)
    fn hub() -> &'static ProcessHub {
        static HUB: OnceLock<&'static ProcessHub> = OnceLock::new();
        HUB.get_or_init(|| {
            let hub: &'static ProcessHub = Box::leak(Box::new(Hub::new(Futex::default())));
            crate::sync::thread::Builder::new()
                .name("conduit-shm-waker".into())
                .spawn(move || hub.run())
                .expect("conduit: cannot start the shm async helper thread");
            hub
        })
    }

    /// The state an async wait keeps between polls: a [`Wait`] with the process's hub,
    /// and the side it counts in.
    #[derive(Debug, Default)]
    pub(crate) struct AsyncWait {
        wait: Wait,
        /// The side whose `async_waiters` counts this wait (once counted).
        side: Option<Side>,
    }

    impl AsyncWait {
        pub(crate) const fn new() -> Self {
            AsyncWait {
                wait: Wait::new(),
                side: None,
            }
        }

        /// One poll: `attempt`, and if it must wait, spin and yield a while (asking
        /// `may_proceed` when to attempt again), then arm a wake-up and re-check first.
        pub(crate) fn poll<R>(
            &mut self,
            seg: &Arc<Segment>,
            side: Side,
            cx: &mut Context<'_>,
            may_proceed: impl FnMut() -> bool,
            attempt: impl FnMut() -> Option<R>,
        ) -> Poll<R> {
            // A wait counts in the side it first counted in (a future polls one side).
            let side = *self.side.get_or_insert(side);
            let res = self.wait.poll(
                hub,
                seg.signal(side),
                seg.layout().light,
                || SegmentSide {
                    seg: seg.clone(),
                    side,
                },
                cx,
                may_proceed,
                attempt,
            );
            if !self.wait.is_counted() {
                self.side = None;
            }
            res
        }

        /// Ends the wait (completion or drop): disarm and uncount.
        pub(crate) fn cancel(&mut self, seg: &Segment) {
            if let Some(side) = self.side.take() {
                self.wait.cancel(hub, seg.signal(side));
            }
        }
    }
}
