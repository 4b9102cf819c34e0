//! One mailbox's state and its waiting: the index, the waiters of both sides, and the
//! blocking and async wait loops, all behind one short lock.
//!
//! # Why a lock
//! A selective receive must find *the* oldest matching message and remove it from every
//! structure of the index at once, and a waiter must be matched against the message
//! that arrives; both are multi-word updates. One mutex over the whole state keeps them
//! simple and is short: every critical section does O(log t) index work (see
//! `index`) plus, only when someone waits, a walk over the waiters. No
//! user code runs under the lock: messages and wakers that leave the state are dropped,
//! and wake-ups issued, after unlocking (they are gathered in an [`After`]); the one
//! piece of executor code inside is a registering task's waker clone (a reference
//! count, cloned under a lock as `chan::signal` does too).
//!
//! # Waiters that want different things
//! A channel may wake *any* one receiver for a new message; a mailbox may not: a
//! receiver waiting for tag 3 must not swallow the wake-up meant for one waiting for
//! tag 5. So each waiting receiver registers its selection, and wake-ups are aimed:
//! - a **send** wakes the first registered, unnotified receiver whose selection matches
//!   the new message (and nothing if none matches);
//! - a **receive** from a bounded mailbox frees a place and wakes the first unnotified
//!   waiting sender;
//! - a **notified waiter that finishes** (it took a message, found nothing and waits
//!   again, timed out, or was cancelled) **passes on**: it wakes the first unnotified
//!   receiver that has a matching message queued now (receivers), or, if there is room,
//!   the first unnotified sender (senders);
//! - **close** wakes everyone.
//!
//! # The no-lost-wake-up argument
//! Registration, the re-check before it, and every change to the index happen in one
//! critical section of the same lock, so (unlike `chan::signal`) no ordering argument
//! about separate atomics is needed; what remains is to show that a waiter never sleeps
//! while it could proceed and nobody is on the way to let it. Call a waiter *in flight*
//! from the moment a waker marks it notified until its next critical section. For
//! receivers the invariant is:
//!
//! > (J) if some registered, unnotified receiver has a matching message queued, some
//! > receiver is in flight.
//!
//! 1. Registering keeps (J): a waiter registers in the critical section in which it
//!    found no matching message.
//! 2. A send keeps (J): if an unnotified receiver matches the new message, one of them
//!    is notified (in flight); otherwise the set of waiters with a match is unchanged.
//! 3. A receive by anyone keeps (J): it only removes messages.
//! 4. An in-flight waiter's next critical section ends with the pass-on, which notifies
//!    an unnotified receiver with a match if there is one, so (J) holds after it
//!    whatever else is in flight.
//! 5. An in-flight waiter always reaches that critical section: a woken thread re-locks;
//!    a woken task is polled (and re-locks) or dropped (and re-locks to leave).
//!
//! So a sleeping receiver with a match always has an in-flight waiter ahead of it, and
//! each in-flight waiter either takes a message or passes on: messages are finite, so
//! the chain ends with the sleeper woken or its match taken. The senders' invariant is
//! the same with "a matching message" replaced by "room" (a receive adds one place and
//! notifies one sender). Wake-ups are issued after the unlock; `unpark` before `park`
//! is remembered and a `Waker` may be woken before the task sleeps, so the order of
//! "mark notified, unlock, wake" against "register, unlock, sleep" does not matter.
//!
//! # Spinning before registering
//! A blocking wait that finds nothing to do spins briefly before it registers, as the
//! channels' waits do (`chan::signal`): between two threads that keep up with each other
//! the change usually comes within a microsecond, and a park and unpark cost several.
//! The spin does not lock: every critical section that queues or takes a message, or
//! closes, publishes a count of those changes before it unlocks (`Progress`), and the
//! spinner locks for another attempt only when the count of its side moved. A spinning
//! waiter is not registered, so nothing in the argument above concerns it (nobody owes
//! it a wake-up); it registers, as before, in the critical section of an attempt that
//! failed once the spin is over. The counts are hints, read and written relaxed: no
//! decision is taken on them alone. Under loom there is no spin.
//!
//! Spinning pays when the two sides run at once and keep up (a stream through a roomy
//! mailbox); it wastes the spinner's time slice when the change it waits for needs the
//! other side to be scheduled first (a ping-pong on a busy machine). So each side keeps
//! a credit (`SpinRecord`, under the lock): spins that see their change raise it, spins
//! that end in a park halve it, and a wait without credit registers at once, except
//! one in 64 that spins to notice a change of pattern.
//!
//! Costs: a send or receive with nobody waiting touches no waiter; with `w` waiters, a
//! send scans at most `w` entries (O(1) each) and a pass-on at most `w` selections
//! (O(log t) each). Woken waiters only ever re-check their own selection.

use core::any::Any;
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::time::Instant;

use super::Stored;
use super::index::{Index, MAX_QUEUED, Sel};
use crate::chan::zero::{Wake, park_until};
#[cfg(not(loom))]
use crate::sync::{AtomicU64, Backoff, Ordering};
use crate::sync::{Deadline, Mutex, MutexGuard, lock, thread};

/// The spin of a blocking wait before it registers: polls of the progress count a
/// single spin-loop hint apart, then steps of an exponential spin (1, 2, 4, … hints).
/// It never yields: on a busy machine a `sched_yield` hands the CPU to another process
/// for its whole time slice, where a parked thread that is woken is scheduled soon.
#[cfg(not(loom))]
const QUICK_POLLS: u32 = 16;
#[cfg(not(loom))]
const SPIN_STEPS: u32 = 7;

/// A blocking wait's spin (see [`QUICK_POLLS`]).
#[cfg(not(loom))]
struct Spin {
    left: u32,
    backoff: Backoff,
}

#[cfg(not(loom))]
impl Spin {
    fn new() -> Self {
        Spin {
            left: QUICK_POLLS + SPIN_STEPS,
            backoff: Backoff::new(),
        }
    }

    /// One step; `false` once the spin is over.
    fn step(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        if self.left > SPIN_STEPS {
            core::hint::spin_loop();
        } else {
            self.backoff.spin();
        }
        self.left -= 1;
        true
    }
}

/// The two sides that wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Recv = 0,
    Send = 1,
}

/// One registered wait.
struct Waiter {
    key: u64,
    /// What a receiver takes (`None` for senders).
    sel: Option<Sel>,
    /// `None` once notified (the waker took it to wake this waiter).
    wake: Option<Wake>,
}

/// Work to do after unlocking: wake-ups to issue and values to drop.
///
/// Most critical sections issue at most one wake-up and drop at most one unused waker
/// (their own): those are kept inline, so that the common case allocates nothing; more
/// (a close, the last receiver detaching) go to the vectors.
#[derive(Default)]
pub(crate) struct After {
    wake: Option<Wake>,
    wakes: Vec<Wake>,
    /// The unused waker of a wait that left (its drop is executor code).
    waker: Option<Waker>,
    drops: Vec<Box<dyn Any + Send>>,
}

impl After {
    fn wake(&mut self, w: Option<Wake>) {
        if let Some(w) = w {
            match self.wake {
                None => self.wake = Some(w),
                Some(_) => self.wakes.push(w),
            }
        }
    }

    /// Drops `v` after unlocking (it may run user code).
    pub(crate) fn drop_later(&mut self, v: Box<dyn Any + Send>) {
        self.drops.push(v);
    }

    fn drop_waker(&mut self, w: Waker) {
        match self.waker {
            None => self.waker = Some(w),
            Some(_) => self.drops.push(Box::new(w)),
        }
    }

    /// Issues the wake-ups and drops the values. Call with the lock released.
    pub(crate) fn run(self) {
        if let Some(w) = self.wake {
            w.wake();
        }
        for w in self.wakes {
            w.wake();
        }
        drop(self.waker);
        drop(self.drops);
    }
}

/// The state behind a mailbox's lock.
pub(crate) struct State<T> {
    pub(crate) index: Index<Stored<T>>,
    pub(crate) closed: bool,
    /// Handle families attached as receivers (see `Mailbox`'s docs on requests).
    pub(crate) receivers: usize,
    recv_waiters: VecDeque<Waiter>,
    send_waiters: VecDeque<Waiter>,
    next_key: u64,
    /// The progress counts last published (`sent`, `taken`).
    #[cfg(not(loom))]
    published: (u64, u64),
    /// How the recent spins of each side went (receivers, senders).
    #[cfg(not(loom))]
    spins: [SpinRecord; 2],
}

/// Whether spinning pays on one side of one mailbox: a credit that a spin which saw
/// its change raises and one that ended in a park halves. A wait spins while there is
/// credit, and otherwise once in [`PROBE`] waits, so that a change of pattern is seen.
#[cfg(not(loom))]
#[derive(Clone, Copy, Default)]
struct SpinRecord {
    credit: u8,
    waits: u8,
}

/// Without credit, one wait in `PROBE` spins all the same.
#[cfg(not(loom))]
const PROBE: u8 = 64;

/// The most credit a side builds up.
#[cfg(not(loom))]
const MAX_CREDIT: u8 = 8;

#[cfg(not(loom))]
impl SpinRecord {
    fn should_spin(&mut self) -> bool {
        self.waits = self.waits.wrapping_add(1);
        self.credit > 0 || self.waits.is_multiple_of(PROBE)
    }

    fn paid(&mut self) {
        self.credit = (self.credit + 1).min(MAX_CREDIT);
    }

    fn wasted(&mut self) {
        self.credit /= 2;
    }
}

/// One mailbox: what every handle to it shares.
pub(crate) struct Shared<T> {
    pub(crate) name: std::sync::Arc<str>,
    /// `None`: unbounded.
    pub(crate) capacity: Option<usize>,
    state: Mutex<State<T>>,
    /// What spinning waiters watch (see "Spinning before registering").
    #[cfg(not(loom))]
    progress: Progress,
}

/// The two progress counts a spinning waiter watches, published by every critical
/// section that changed them ([`Locked`]'s drop): receivers watch `sent`, senders
/// `taken`. Each is a count of the operations that may let a waiter of that side
/// through, times two, plus one once the mailbox is closed. Hints only: every decision
/// is taken under the lock, so relaxed accesses do.
#[cfg(not(loom))]
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    taken: AtomicU64,
}

/// A locked mailbox state; on unlocking, it publishes the progress counts that changed
/// (before the lock is released: the guard's fields drop after this).
pub(crate) struct Locked<'a, T> {
    g: MutexGuard<'a, State<T>>,
    #[cfg(not(loom))]
    progress: &'a Progress,
}

impl<T> core::ops::Deref for Locked<'_, T> {
    type Target = State<T>;
    fn deref(&self) -> &State<T> {
        &self.g
    }
}

impl<T> core::ops::DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut State<T> {
        &mut self.g
    }
}

impl<T> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        {
            let st = &mut *self.g;
            let (sent, taken) = (st.progress(Side::Recv), st.progress(Side::Send));
            if sent != st.published.0 {
                self.progress.sent.store(sent, Ordering::Relaxed);
            }
            if taken != st.published.1 {
                self.progress.taken.store(taken, Ordering::Relaxed);
            }
            st.published = (sent, taken);
        }
    }
}

/// Why a send did not queue its message.
pub(crate) enum SendFail {
    /// Full: worth waiting.
    Full,
    Disconnected,
    /// A request found no receiver attached.
    NoResponders,
}

impl<T> State<T> {
    /// The progress count a waiter of `side` watches while it spins (see [`Progress`]).
    #[cfg(not(loom))]
    fn progress(&self, side: Side) -> u64 {
        let n = match side {
            Side::Recv => self.index.pushed(),
            Side::Send => self.index.taken(),
        };
        n.wrapping_mul(2) | u64::from(self.closed)
    }

    #[cfg(not(loom))]
    fn spins(&mut self, side: Side) -> &mut SpinRecord {
        &mut self.spins[side as usize]
    }

    fn waiters(&mut self, side: Side) -> &mut VecDeque<Waiter> {
        match side {
            Side::Send => &mut self.send_waiters,
            Side::Recv => &mut self.recv_waiters,
        }
    }

    fn register(&mut self, side: Side, sel: Option<Sel>, wake: Wake) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.waiters(side).push_back(Waiter {
            key,
            sel,
            wake: Some(wake),
        });
        key
    }

    /// Removes a registered wait; says whether it had been notified (then the caller
    /// passes on, step 4 of the argument). An unused wake-up is dropped after unlocking.
    fn leave(&mut self, side: Side, key: u64, after: &mut After) -> bool {
        let list = self.waiters(side);
        let i = list
            .iter()
            .position(|w| w.key == key)
            .expect("a registered wait keeps its entry until it leaves");
        let w = list.remove(i).expect("index in range");
        match w.wake {
            None => true,
            Some(Wake::Task(waker)) => {
                after.drop_waker(waker);
                false
            }
            Some(Wake::Thread(_)) => false,
        }
    }

    /// Step 4: a notified waiter of `side` has finished; notify the next one that can
    /// proceed now, if any.
    fn pass_on(&mut self, side: Side, capacity: Option<usize>, after: &mut After) {
        match side {
            Side::Recv => {
                let index = &self.index;
                let w = self
                    .recv_waiters
                    .iter_mut()
                    .filter(|w| w.wake.is_some())
                    .find(|w| index.find(w.sel.expect("receivers select")).is_some());
                if let Some(w) = w {
                    after.wake(w.wake.take());
                }
            }
            Side::Send => {
                if self.has_room(capacity) {
                    self.notify_sender(after);
                }
            }
        }
    }

    fn notify_sender(&mut self, after: &mut After) {
        if let Some(w) = self.send_waiters.iter_mut().find(|w| w.wake.is_some()) {
            after.wake(w.wake.take());
        }
    }

    fn has_room(&self, capacity: Option<usize>) -> bool {
        self.index.len() < capacity.map_or(MAX_QUEUED, |c| c.min(MAX_QUEUED))
    }

    /// One send attempt under the lock.
    pub(crate) fn try_push(
        &mut self,
        capacity: Option<usize>,
        tag: u64,
        msg: Stored<T>,
        need_receiver: bool,
        after: &mut After,
    ) -> Result<(), (SendFail, Stored<T>)> {
        if self.closed {
            return Err((SendFail::Disconnected, msg));
        }
        if need_receiver && self.receivers == 0 {
            return Err((SendFail::NoResponders, msg));
        }
        if !self.has_room(capacity) {
            return Err((SendFail::Full, msg));
        }
        let from = msg.from.id;
        self.index.push(tag, from, msg);
        // Step 2: aim the wake-up at a receiver that can take this message.
        if let Some(w) = self
            .recv_waiters
            .iter_mut()
            .filter(|w| w.wake.is_some())
            .find(|w| w.sel.expect("receivers select").matches(tag, from))
        {
            after.wake(w.wake.take());
        }
        Ok(())
    }

    /// One receive attempt under the lock: the message `sel` takes, `Err(true)` when
    /// there is none and the mailbox is closed, `Err(false)` when there is none yet.
    pub(crate) fn try_take(
        &mut self,
        sel: Sel,
        capacity: Option<usize>,
        after: &mut After,
    ) -> Result<(u64, Stored<T>), bool> {
        match self.index.find(sel) {
            Some(found) => {
                let taken = self.index.take(found);
                if capacity.is_some() {
                    self.notify_sender(after);
                }
                Ok(taken)
            }
            None => Err(self.closed),
        }
    }

    /// Marks the mailbox closed and wakes every waiter.
    pub(crate) fn close(&mut self, after: &mut After) {
        self.closed = true;
        for w in self
            .recv_waiters
            .iter_mut()
            .chain(self.send_waiters.iter_mut())
        {
            after.wake(w.wake.take());
        }
    }
}

/// The outcome of one attempt inside a wait loop.
pub(crate) enum Attempt<R> {
    Done(R),
    Wait,
}

impl<T> Shared<T> {
    pub(crate) fn new(name: std::sync::Arc<str>, capacity: Option<usize>) -> Self {
        Shared {
            name,
            capacity,
            state: Mutex::new(State {
                index: Index::default(),
                closed: false,
                receivers: 0,
                recv_waiters: VecDeque::new(),
                send_waiters: VecDeque::new(),
                next_key: 0,
                #[cfg(not(loom))]
                published: (0, 0),
                #[cfg(not(loom))]
                spins: [SpinRecord::default(); 2],
            }),
            #[cfg(not(loom))]
            progress: Progress::default(),
        }
    }

    pub(crate) fn lock(&self) -> Locked<'_, T> {
        Locked {
            g: lock(&self.state),
            #[cfg(not(loom))]
            progress: &self.progress,
        }
    }

    /// Spins while the progress count of `side` is `seen`, until `spin` is over; says
    /// whether it changed (worth another attempt).
    #[cfg(not(loom))]
    fn spin_while(&self, side: Side, seen: u64, spin: &mut Spin) -> bool {
        let count = match side {
            Side::Recv => &self.progress.sent,
            Side::Send => &self.progress.taken,
        };
        while spin.step() {
            if count.load(Ordering::Relaxed) != seen {
                return true;
            }
        }
        false
    }

    /// Blocks until `attempt` (run under the lock) finishes or `deadline` passes
    /// (`None` then). `sel` is what a receiver registers (`None` for senders).
    pub(crate) fn block<R>(
        &self,
        side: Side,
        sel: Option<Sel>,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut State<T>, &mut After) -> Attempt<R>,
    ) -> Option<R> {
        let mut deadline = Deadline::new(deadline);
        let mut key: Option<u64> = None;
        // The spin before the first registration: `Some` while it may go on. Not under
        // loom, where it would only multiply the interleavings before the waits that
        // matter.
        #[cfg(not(loom))]
        let mut spin: Option<Spin> = None;
        #[cfg(not(loom))]
        let (mut first, mut spun_out) = (true, false);
        loop {
            let mut after = After::default();
            let mut g = self.lock();
            let notified = key.take().is_some_and(|k| g.leave(side, k, &mut after));
            #[cfg(not(loom))]
            let mut seen = None;
            let out = match attempt(&mut g, &mut after) {
                Attempt::Done(r) => {
                    #[cfg(not(loom))]
                    if spin.is_some() {
                        g.spins(side).paid();
                    }
                    Some(Some(r))
                }
                Attempt::Wait if deadline.passed() => Some(None),
                #[cfg(not(loom))]
                Attempt::Wait if spin.is_some() || (first && g.spins(side).should_spin()) => {
                    // Not registered yet: nobody will wake us, and nothing in the
                    // argument above concerns us until we register.
                    first = false;
                    spin.get_or_insert_with(Spin::new);
                    seen = Some(g.progress(side));
                    None
                }
                Attempt::Wait => {
                    #[cfg(not(loom))]
                    {
                        if core::mem::take(&mut spun_out) {
                            g.spins(side).wasted();
                        }
                        first = false;
                    }
                    key = Some(g.register(side, sel, Wake::Thread(thread::current())));
                    None
                }
            };
            if notified {
                g.pass_on(side, self.capacity, &mut after);
            }
            drop(g);
            after.run();
            if let Some(out) = out {
                return out;
            }
            #[cfg(not(loom))]
            if let (Some(seen), Some(s)) = (seen, spin.as_mut()) {
                if !self.spin_while(side, seen, s) {
                    // Nothing changed: one more attempt, which registers.
                    spin = None;
                    spun_out = true;
                }
                continue;
            }
            park_until(&mut deadline);
        }
    }

    /// One poll of an async wait whose registration is `key`. A poll that must wait
    /// registers a clone of its waker in the critical section of its failed attempt:
    /// cloning a waker is the executor's reference count, cloned under a lock as the
    /// channels' async waits do (`chan::signal`); the waker's wake and drop, which may
    /// run more of the executor, come after unlocking.
    pub(crate) fn poll<R>(
        &self,
        side: Side,
        sel: Option<Sel>,
        key: &mut Option<u64>,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&mut State<T>, &mut After) -> Attempt<R>,
    ) -> Poll<R> {
        let mut after = After::default();
        let mut g = self.lock();
        let notified = key.take().is_some_and(|k| g.leave(side, k, &mut after));
        let out = match attempt(&mut g, &mut after) {
            Attempt::Done(r) => Poll::Ready(r),
            Attempt::Wait => {
                *key = Some(g.register(side, sel, Wake::Task(cx.waker().clone())));
                Poll::Pending
            }
        };
        if notified {
            g.pass_on(side, self.capacity, &mut after);
        }
        drop(g);
        after.run();
        out
    }

    /// Withdraws an async wait (its future was dropped); a wake-up it received passes on.
    pub(crate) fn cancel(&self, side: Side, key: &mut Option<u64>) {
        if let Some(k) = key.take() {
            let mut after = After::default();
            let mut g = self.lock();
            if g.leave(side, k, &mut after) {
                g.pass_on(side, self.capacity, &mut after);
            }
            drop(g);
            after.run();
        }
    }
}
