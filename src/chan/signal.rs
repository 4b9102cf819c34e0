//! Waiting, written once: per side, the waiters registered for a change plus a count of
//! them, and the blocking and async wait loops that every queue flavor shares.
//!
//! Blocking waiters park on an `event-listener` [`Event`] (a stack listener each, with
//! timeouts). Async waiters keep their wakers in a small list of our own ([`WakerList`]):
//! registering is a push under an uncontended lock, with no allocation and no reference
//! count, and a wait whose re-check succeeds (the common case under load: the peer was
//! mid-operation) costs two short critical sections. A notified async waiter learns
//! that it was notified from one atomic load (the list's watermark, below), without the
//! lock: the wait that a wake-up ends takes the lock once, to register. Each kind has
//! its own count, so a waker always knows which of the two to notify.
//!
//! The fast path of a send or receive never locks: a wake-up is only issued when a count
//! says someone is registered, which is one extra load of a read-mostly line.
//!
//! # The no-lost-wake-up argument
//! A waiter (1) registers (a listener, or an entry in the waker list), (2) increments its
//! kind's count (SeqCst RMW), (3) re-checks the queue, (4) sleeps. A waker (a) changes the
//! queue with a SeqCst RMW (the ring's or list's claim CAS, a disconnect `fetch_or`),
//! (b) loads the counts (SeqCst). In the single total order of SeqCst operations either
//! (2) precedes (b), so the waker sees a waiter and notifies one that (1) already
//! registered, or (a) precedes (3)'s SeqCst load ([`load_seqcst`]), so the re-check sees
//! the change and does not sleep. A claimed but not yet committed operation is seen by
//! the re-check as busy, and the checker spins until it commits instead of sleeping.
//!
//! # Timed waits
//! A timed waiter that gives up makes one last attempt first, whether or not it was
//! notified: a waker that claimed its count notifies nobody else, so a waiter that left
//! without looking would strand the message (or room) announced while another waiter
//! sleeps. One that was not notified withdraws its count; a notification that reaches
//! its listener afterwards passes on when the listener is dropped. (Modelled, the
//! deadline passing at every point, in `loom-tests/tests/loom_timeout.rs`.)
//!
//! # Counts and entries of async waiters
//! The list holds the unnotified entries only, oldest (lowest key) first: a waker takes
//! an entry out of the list as it notifies it. The async count is the number of entries,
//! less the claims in flight (a waker that has decremented the count and not yet taken
//! the list's lock), plus the list's `excess` (claims in flight that no entry is left
//! for); counts are not tied to particular waiters. Step by step, each under the list's
//! lock unless said otherwise:
//! 1. A waiter registers: it pushes its entry, with the next key, and increments the
//!    count (SeqCst RMW, inside the same critical section, so the count never lags the
//!    entries it counts).
//! 2. A waker claims (decrements, outside the lock; only a count above zero), then
//!    under the lock either consumes one `excess`, or takes the *oldest* entry out,
//!    raises the watermark `notified_below` past its key (Release store), and wakes it.
//!    An entry registered before the count the waker read is always found (the count's
//!    RMW chain makes the push happen before the waker's lock).
//! 3. A waiter that leaves unnotified removes its entry and withdraws a count; if the
//!    count is already zero, a claim in flight took it, and that claim has no entry left
//!    to serve: `excess` grows by one instead.
//! 4. [`Signal::notify_all`] (disconnection) and [`Signal::notify_waiting`] (once it saw
//!    the async count above zero) take every entry out, raise the watermark past the
//!    last, and settle each as in step 3, so a notified entry's count is consumed however
//!    it was notified.
//! 5. A waiter knows it was notified when its key is below the watermark: entries leave
//!    the list in key order (steps 2 and 4 take the oldest first; step 3 takes only its
//!    own entry, which is then no longer looked up), so every key below the watermark
//!    was taken out by a waker or by its own waiter, and the watermark only grows. The
//!    load is Acquire, paired with the waker's Release store, so the waker's change (made
//!    before it claimed) is visible to the re-check that follows; no lock is taken. Above
//!    the watermark, the waiter takes the lock and loads the watermark again there (it
//!    is only stored under the lock), so the answer is final while it updates or
//!    removes its entry. A notified waiter re-checks (its count was consumed); one that
//!    leaves notified without having looked (it was cancelled, or its re-check
//!    succeeded first) passes the notification on (step 2 again).
//!
//! Each step keeps `count + in flight = unnotified entries + excess`, and `excess` never
//! exceeds the claims in flight (step 2 consumes an excess before it wakes anyone, and an
//! excess is only made while the count is zero), so once no wake-up is in flight the
//! count equals the unnotified entries exactly: zero when no async wait is pending. A
//! claim that consumes an excess wakes no one, and loses nothing: the waiter whose count
//! it took has left, every entry still unnotified then has a claim of its own in flight
//! (the counts say so), and a waiter registering after the claim re-checks after the
//! change it announces (the no-lost-wake-up argument above).

use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::sync::{
    AtomicU64, AtomicUsize, Deadline, Event, Listener, Mutex, Ordering, listener, load_seqcst,
    lock, thread,
};

/// One side's wait queue: waiters for room (senders) or for messages (receivers).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    inner: CachePadded<SignalInner>,
}

#[derive(Debug, Default)]
struct SignalInner {
    /// Blocking waiters park here.
    event: Event,
    /// Registered blocking waiters not yet claimed by a waker.
    waiters: AtomicUsize,
    /// Registered async waiters not yet claimed by a waker.
    async_waiters: AtomicUsize,
    /// Every async wait whose key is below this was notified (or has left): see the
    /// module docs, step 5. Stored under the list's lock only.
    notified_below: AtomicU64,
    /// The async waiters' wakers.
    wakers: Mutex<WakerList>,
}

/// The wakers of pending async waits not yet notified, oldest (lowest key) first.
#[derive(Debug, Default)]
struct WakerList {
    entries: VecDeque<Entry>,
    /// The key the next registration gets.
    next_key: u64,
    /// Claims in flight whose waiter has left (see the module docs, step 3): the next
    /// waker to reach the list consumes one instead of waking anyone.
    excess: usize,
}

impl WakerList {
    /// Where the entry of the unnotified wait registered as `key` is: such a wait keeps
    /// its entry until a waker takes it out or the wait leaves.
    fn index_of(&self, key: u64) -> usize {
        self.entries
            .iter()
            .position(|e| e.key == key)
            .expect("an unnotified async wait has an entry")
    }

    /// Consumes the counts of `n` entries that leave the unnotified set without a waker's
    /// claim (their waiter leaves, or [`Signal::notify_all`] notifies them): withdraws
    /// them from `count` as far as it goes; each that a claim in flight already took is
    /// recorded as excess. Called with the list locked (`self` is the locked list).
    fn settle(&mut self, count: &AtomicUsize, n: usize) {
        let before = count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or_else(|c| c);
        self.excess += n - before.min(n);
    }
}

/// One pending, unnotified async wait.
#[derive(Debug)]
struct Entry {
    key: u64,
    waker: Waker,
}

/// How [`Signal::poll_async`] found a registered async wait.
enum AsyncState {
    /// Notified (the entry is gone and its count consumed): re-check the queue.
    Notified,
    /// Still waiting; the stored waker is up to date.
    Waiting,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes one more waiter, if one is registered and not yet woken.
    ///
    /// Called after the change being announced was made with a SeqCst RMW. The counts
    /// hold registered waiters that no notification has been claimed for: a waker claims
    /// one (decrements) before notifying, so while a woken waiter is on its way, further
    /// changes do not take a lock to notify nobody. Async waiters are served first; the
    /// two kinds rarely wait on one channel at once.
    #[inline]
    pub(crate) fn notify_one(&self) {
        if Self::has(&self.inner.async_waiters) || Self::has(&self.inner.waiters) {
            self.notify_one_registered();
        }
    }

    /// [`Signal::notify_one`] once it has seen a waiter count above zero: out of line, so
    /// that the check stays small where it is inlined (every send and receive).
    #[cold]
    #[inline(never)]
    fn notify_one_registered(&self) {
        if Self::has(&self.inner.async_waiters)
            && Self::claim(&self.inner.async_waiters)
            && self.wake_async()
        {
            return;
        }
        // No async waiter (a claimed async count that finds no entry was high: its waiter
        // left, and then this change may be a blocking waiter's to see).
        if Self::has(&self.inner.waiters) && Self::claim(&self.inner.waiters) {
            // `relaxed`: `has` already ordered the change we announce before this
            // notification, and the event's own lock orders the rest.
            self.inner
                .event
                .notify(event_listener::IntoNotification::relaxed(
                    event_listener::IntoNotification::additional(1),
                ));
        }
    }

    /// Notifies the oldest unnotified async waiter, for a count just claimed, and says
    /// whether it did. It does not when the claim is an excess (its waiter left: module
    /// docs, step 3), nor when no unnotified entry is left.
    #[cold]
    fn wake_async(&self) -> bool {
        let waker = {
            let mut list = lock(&self.inner.wakers);
            if list.excess > 0 {
                list.excess -= 1;
                None
            } else {
                list.entries.pop_front().map(|e| {
                    self.mark_notified(e.key);
                    e.waker
                })
            }
        };
        // Outside the lock: waking may run arbitrary executor code.
        match waker {
            Some(w) => {
                w.wake();
                true
            }
            None => false,
        }
    }

    /// Records (under the list's lock) that every async wait up to `key` was notified or
    /// has left: `key` is that of the newest entry a waker took out (module docs, step 5).
    fn mark_notified(&self, key: u64) {
        // Release: the change a waker announces, made before it claimed, happens before
        // the re-check of a waiter whose Acquire load sees its key below the mark.
        self.inner.notified_below.store(key + 1, Ordering::Release);
    }

    /// Whether the wait registered as `key` was notified, as far as the watermark says
    /// (module docs, step 5): lock-free, and final when `true`; under the list's lock,
    /// final either way.
    fn notified(&self, key: u64) -> bool {
        key < self.inner.notified_below.load(Ordering::Acquire)
    }

    /// Whether a waiter of the kind `count` counts is registered, ordered after the
    /// caller's SeqCst RMW: if the load misses a waiter's registration (an SC RMW), that
    /// registration, and the re-check the waiter makes after it, come later in the single
    /// total order of SeqCst operations, so the re-check observes our change (the
    /// argument in the module docs).
    #[inline]
    fn has(count: &AtomicUsize) -> bool {
        load_seqcst(count) != 0
    }

    /// Wakes every registered waiter, if any is registered: for waiters that wait for
    /// different changes on one queue (a signal target's blocking waits for different
    /// sets of numbers; its async waits have a wake-all set of their own,
    /// `signal::waiters`), where the one waiter [`Signal::notify_one`] would pick may not
    /// be the one a change concerns.
    ///
    /// Called, like `notify_one`, after the change was made with a SeqCst RMW; the fast
    /// path is the same two count loads. Otherwise it is [`Signal::notify_all`], whose
    /// accounting keeps the counts exact: every waiter it notifies re-checks, and one
    /// that finds nothing for itself registers again (a blocking waiter's notification
    /// that a withdrawing waiter took is passed on when that waiter's listener drops).
    ///
    /// Each kind is checked on its own, as `notify_one` does: a kind whose count is zero
    /// has no registered waiter that this change must wake (the argument of
    /// [`Signal::has`]), so its half of `notify_all` is skipped (with only async waits
    /// registered, no RMW on the blocking count and no event notification).
    #[inline]
    pub(crate) fn notify_waiting(&self) {
        if Self::has(&self.inner.async_waiters) {
            self.wake_all_async();
        }
        if Self::has(&self.inner.waiters) {
            self.notify_all_blocking();
        }
    }

    /// Wakes every waiter (disconnection, which is final): every woken waiter re-checks
    /// and finds the disconnection.
    ///
    /// The counts are consumed with the notifications, so that they return to zero once
    /// the waiters are gone (left high, every later change would take the slow path to
    /// notify nobody). Blocking waiters: the count is taken to zero *before* the event
    /// notifies every listener, so each waiter it took a count from is notified (its
    /// listener was inserted before its increment) and does not withdraw it again. A
    /// waiter that withdraws anyway (its re-check succeeded, or it timed out) finds a
    /// zero count, or takes one from a waiter that registered after the swap; such a
    /// waiter's listener was inserted before its increment, so the withdrawing waiter's
    /// notification, passed on when its listener drops, reaches it (or another
    /// unnotified waiter, which then registers again): after a disconnection its re-check
    /// finds the disconnection; after a [`Signal::notify_waiting`] change, it sleeps
    /// counted. Async waiters: each entry notified here is settled under the list's lock
    /// (module docs, step 4).
    pub(crate) fn notify_all(&self) {
        self.notify_all_blocking();
        self.wake_all_async();
    }

    /// The blocking half of [`Signal::notify_all`].
    #[cold]
    fn notify_all_blocking(&self) {
        self.inner.waiters.swap(0, Ordering::SeqCst);
        // Additional notifications, as in `notify_one`: a notified listener dropped
        // without waiting (its waiter's re-check succeeded) passes its notification to a
        // listener not yet notified, whatever others are notified meanwhile.
        self.inner
            .event
            .notify(event_listener::IntoNotification::additional(usize::MAX));
    }

    /// The async half of [`Signal::notify_all`]: takes every entry out (notifying it),
    /// settles their counts (module docs, step 4), and wakes them outside the lock.
    ///
    /// The first waker is kept apart from the rest, so that the common case of one
    /// waiting task wakes it without allocating, and directly: a panic of a single
    /// wake-up reaches the caller as it would from the batch.
    #[cold]
    fn wake_all_async(&self) {
        let (first, rest) = {
            let mut list = lock(&self.inner.wakers);
            let Some(first) = list.entries.pop_front() else {
                return;
            };
            // Not even an empty drain for the common single waiter.
            let rest: Vec<Entry> = if list.entries.is_empty() {
                Vec::new()
            } else {
                list.entries.drain(..).collect()
            };
            self.mark_notified(rest.last().unwrap_or(&first).key);
            list.settle(&self.inner.async_waiters, 1 + rest.len());
            (first.waker, rest)
        };
        if rest.is_empty() {
            first.wake();
            return;
        }
        // Each one even if an earlier one panics (see `chan::unwind`): every entry is
        // taken out already, so a waker skipped here would never be woken.
        super::unwind::wake_all(
            core::iter::once(first).chain(rest.into_iter().map(|e| e.waker)),
            Waker::wake,
        );
    }

    /// What this side still accounts for: the blocking and async waiter counts, the
    /// async entries and the excess claims. Zero once no wait is pending and no wake-up
    /// is in flight; anything else is a count that drifted. For tests only.
    #[cfg(any(test, loom))]
    pub(crate) fn accounted(&self) -> usize {
        let list = lock(&self.inner.wakers);
        self.inner.waiters.load(Ordering::SeqCst)
            + self.inner.async_waiters.load(Ordering::SeqCst)
            + list.entries.len()
            + list.excess
    }

    /// Claims one registered waiter of a kind for a notification; `false` if none is
    /// left. Saturates at zero, which is also how a waiter withdraws its own count.
    fn claim(count: &AtomicUsize) -> bool {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .is_ok()
    }

    fn register(&self) {
        self.inner.waiters.fetch_add(1, Ordering::SeqCst);
    }

    /// A blocking waiter leaves without having received a notification (its re-check
    /// succeeded or it timed out): withdraw its count. A waker may already have claimed
    /// it, with a notification in flight; that notification then lands on the next
    /// listener, or is passed on when this listener is dropped, so the count may only err
    /// high (an extra, harmless notify), never low while a listener waits unnotified.
    /// Hence the decrement saturates at zero.
    fn unregister(&self) {
        Self::claim(&self.inner.waiters);
    }

    /// Registers an async waiter: its entry first, then its count (the order the module
    /// docs' argument needs), both under the list's lock (step 1). Returns the entry's
    /// key.
    fn register_async(&self, waker: &Waker) -> u64 {
        let mut list = lock(&self.inner.wakers);
        let key = list.next_key;
        list.next_key += 1;
        list.entries.push_back(Entry {
            key,
            waker: waker.clone(),
        });
        self.inner.async_waiters.fetch_add(1, Ordering::SeqCst);
        key
    }

    /// A later poll of a registered async wait: consumes a notification (without the
    /// lock when the watermark already says so), or refreshes the stored waker.
    fn poll_async(&self, key: u64, waker: &Waker) -> AsyncState {
        if self.notified(key) {
            return AsyncState::Notified;
        }
        let mut list = lock(&self.inner.wakers);
        if self.notified(key) {
            return AsyncState::Notified;
        }
        let i = list.index_of(key);
        let w = &mut list.entries[i].waker;
        if !w.will_wake(waker) {
            w.clone_from(waker);
        }
        AsyncState::Waiting
    }

    /// An async waiter leaves (it finished, or was cancelled) while registered:
    /// unnotified, it removes its entry and withdraws a count; notified (its entry is
    /// gone), it passes the notification on (see the module docs).
    fn leave_async(&self, key: u64) {
        if !self.notified(key) {
            let mut list = lock(&self.inner.wakers);
            if !self.notified(key) {
                let i = list.index_of(key);
                let entry = list.entries.remove(i);
                // Under the lock, so that a waker that claimed a count before this
                // withdrawal finds the remaining entries (and excess) as they are now.
                list.settle(&self.inner.async_waiters, 1);
                drop(list);
                // The waker's drop is user code: last, with the list consistent and
                // unlocked (see `chan::unwind`).
                drop(entry);
                return;
            }
        }
        // Notified (a waker took the entry out): pass the notification on.
        self.notify_one();
    }
}

/// The outcome of one non-blocking attempt inside a wait loop.
pub(crate) enum Attempt<R, S> {
    /// Finished (successfully or with a final error).
    Done(R),
    /// Must wait; the state (e.g. the message to send) is handed back.
    Wait(S),
}

/// How many times [`block_on`] polls a single spin-loop hint apart before it starts
/// yielding. Measured by switching it at run time in interleaved blocks of one process
/// (`bounded(1)`, one sender and one receiver, 20,000 messages a block, 30 blocks each way):
/// the median block faster by 1.4–14 ns per message out of about 240 in each of ten runs
/// (17–30 blocks of 30 faster); bounded and unbounded MPSC 4×1 and MPMC 4×4 unchanged
/// within their noise (−2.4 to +0.3 ns). 64 polls gained less on `bounded(1)` and cost
/// MPSC 2 ns; 4 gained less.
const QUICK_POLLS: u32 = 16;

/// How many times [`block_on`] yields the CPU, after its quick polls, before it parks.
///
/// Yielding rather than spinning longer: a waiter whose peer is not running at that
/// moment (more runnable threads than free CPUs, e.g. both ends on one CPU while other
/// work holds the rest) waits for the peer to be scheduled, and spinning only delays
/// that. The exponential spin this replaces (`crossbeam_utils::Backoff`: 127 more
/// spin-loop hints, several microseconds, then 4 yields) took more than half of a
/// `bounded(1)` run's CPU time in such a run, for nothing. A yield with nothing else to
/// run returns at once, so a waiter with an idle CPU next to it still polls every few
/// hundred nanoseconds. Measured in interleaved blocks on this project's 2-core VM while
/// another process kept one CPU busy (median ns per message, old spin → yields):
/// `bounded(1)` SPSC 9,985 → 3,550–3,570 (16, 64 or 256 yields); `bounded(1024)` MPSC 4×1
/// 32 → 12.6, MPMC 4×4 44–88 → 14–20, SPSC 39 → 31 (32 yields). 16, 64 and 256 yields
/// measured the same within the noise; 4 did worse. Such a `bounded(1)` run still costs
/// two context switches per message: the sender cannot run ahead of a receiver that is
/// not running.
const SPIN_YIELDS: u32 = 32;

/// The spin of a blocking wait before it parks: [`QUICK_POLLS`] polls a single
/// spin-loop hint apart, then [`SPIN_YIELDS`] polls a yield of the CPU apart. Shared by
/// every blocking wait that spins before registering ([`block_on`], the mailboxes'):
/// one policy, measured once (see the two constants).
#[derive(Debug, Default)]
pub(crate) struct SpinWait {
    step: u32,
}

impl SpinWait {
    const STEPS: u32 = QUICK_POLLS + SPIN_YIELDS;

    pub(crate) const fn new() -> Self {
        SpinWait { step: 0 }
    }

    /// Whether the spin is over: the poll that follows is the last before parking.
    #[inline]
    pub(crate) fn is_over(&self) -> bool {
        self.step >= Self::STEPS
    }

    /// Whether the spin has come to its yields: polls are far apart now, and a waiter
    /// may afford the loads it skips between quick polls.
    #[inline]
    // Only the mailboxes' spin asks, and loom builds have none.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn yielding(&self) -> bool {
        self.step > QUICK_POLLS
    }

    /// Pauses before the next poll (a hint, or a yield); `false`, without pausing, once
    /// the spin is over.
    #[inline]
    pub(crate) fn pause(&mut self) -> bool {
        if self.is_over() {
            return false;
        }
        if self.step < QUICK_POLLS {
            core::hint::spin_loop();
        } else {
            thread::yield_now();
        }
        self.step += 1;
        true
    }
}

/// Blocks until `attempt` finishes or `deadline` passes: spin briefly, then park on
/// `signal`. On timeout, returns `Err(state)`.
///
/// While spinning, `attempt` runs only when the cheap hint `worth_trying` says so
/// (besides the first and the last spin): a waiter may wait for more than the smallest
/// change that lets it through (see `array`'s batched refill), and a claim that finds
/// nothing to take loads the other side's position, whose line a poll would take away
/// from the peer each time (see `Ring::send_batch_free`). Once
/// parking, every attempt is made, so the hint never decides whether a waiter sleeps.
///
/// The spin is a [`SpinWait`].
pub(crate) fn block_on<R, S>(
    signal: &Signal,
    mut state: S,
    deadline: Option<Instant>,
    worth_trying: impl Fn() -> bool,
    mut attempt: impl FnMut(S) -> Attempt<R, S>,
) -> Result<R, S> {
    // The spin saves a park when the change comes soon. Under loom it would be one more
    // unregistered attempt, the same as the inline claim each caller has just made, and
    // the model would explore every interleaving around it again: skipped (in a user's
    // model of an unbounded channel, a quarter fewer executions; see
    // `loom-tests/README.md`). The waits that can lose a wake-up are all after it.
    if !cfg!(loom) {
        let mut spin = SpinWait::new();
        let mut first = true;
        loop {
            let last = spin.is_over();
            if first || last || worth_trying() {
                match attempt(state) {
                    Attempt::Done(r) => return Ok(r),
                    Attempt::Wait(s) => state = s,
                }
            }
            first = false;
            if !spin.pause() {
                break;
            }
        }
    }
    let mut deadline = Deadline::new(deadline);
    if deadline.passed() {
        return Err(state);
    }
    loop {
        listener!(signal.inner.event => waiting);
        signal.register();
        let mut registered = Registered(Some(signal));
        match attempt(state) {
            Attempt::Done(r) => return Ok(r),
            Attempt::Wait(s) => state = s,
        }
        if sleep(waiting, &mut deadline) {
            // The waker claimed our count.
            registered.0 = None;
        }
        if deadline.passed() {
            // Giving up: one last attempt, then the timeout. A change that came with the
            // deadline counts; and a notification this wait took (its waker claimed our
            // count and will not notify anyone else) is acted on, not dropped: giving up
            // without looking would strand the message or room it announced while
            // another waiter sleeps.
            return match attempt(state) {
                Attempt::Done(r) => Ok(r),
                Attempt::Wait(s) => Err(s),
            };
        }
    }
}

/// Sleeps on `waiting` until it is notified (`true`) or `deadline` passes.
fn sleep(waiting: impl Listener, deadline: &mut Deadline) -> bool {
    #[cfg(not(loom))]
    let timed = deadline.at();
    #[cfg(loom)]
    let timed = deadline.model();
    match timed {
        None => {
            waiting.wait();
            true
        }
        #[cfg(not(loom))]
        Some(d) => waiting.wait_deadline(d).is_some(),
        #[cfg(loom)]
        Some(model) => model.wait(waiting).is_some(),
    }
}

/// Withdraws a registration that received no notification, however the wait ends.
struct Registered<'a>(Option<&'a Signal>);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(signal) = self.0 {
            signal.unregister();
        }
    }
}

/// The async counterpart of [`block_on`]'s state: the key of this wait's entry in the
/// side's [`WakerList`] while one is registered. Dropping it before completion (through
/// [`AsyncWait::cancel`]) withdraws the wait; a notification it received is passed on.
#[derive(Debug, Default)]
pub(crate) struct AsyncWait {
    key: Option<u64>,
    /// Polls that yielded to the executor instead of registering ([`ASYNC_SEND_YIELDS`]).
    yields: u32,
}

/// How many times an async send that finds its queue full yields to its executor
/// before it registers: the async counterpart of [`SpinWait`]'s yields, for senders. A
/// poll that finds nothing to do and has yields left wakes its own task
/// (`wake_by_ref`) and returns `Pending`, so the executor polls it again after the
/// tasks already queued; that poll claims a slot only once a batch of slots is free
/// again (`Queue::send_batch_free`, the stamp of a slot ahead, as the blocking spin
/// asks: not the receivers' position, whose line a poll would take from them). Only
/// when the yields are spent does the send register its waker, to be notified and
/// woken by a receive.
///
/// Registering costs both sides: the sender clones its waker into the wait queue under
/// its lock, and each receive then claims it, locks, and wakes the task, which sends
/// one message, finds the queue full again and registers again: a receiver that drains
/// a full queue pays a wake-up per message, and the senders a registration each. While
/// the receiver runs on another worker and keeps draining, a batch frees within a few
/// polls, and the yields save all of that; when it does not, a send spends these
/// polls (each a stamp load and a trip through the executor's queue) before it sleeps
/// as before. A future dropped while yielding is not registered: nothing to withdraw.
///
/// The yields must outlast the time the receiver takes to free a batch (half the ring,
/// at most 512 slots): a sender that registers anyway pays for both. Measured on this
/// project's 2-core VM, tokio multi-thread runtime with 2 workers, through
/// `bounded(1024)`, ns a message (three runs of three, interleaved):
///
/// | yields | 1 producer task | 4 producer tasks |
/// |---:|---:|---:|
/// | 0 | 14–22 | 75–211 (bimodal: every receive woke a registered sender) |
/// | 32 | 16–29 | 13–26 |
/// | 128 | 11–15 | 9–13 |
/// | 256 | 10–14 | 8–12 |
/// | kanal | 11–19 | 9–12 |
///
/// 4 yields did no good (36–40 with four producers). 128 keeps a send that waits for a
/// slow receiver to about 128 trips through the executor before it sleeps. Receivers do
/// not yield:
/// an empty queue waits for its senders' next message, and in a round trip between two
/// tasks the yielding waiter only delays the peer it waits for (measured with the same
/// yields in the signal targets' async waits: a raise-to-wake ping-pong between two
/// tasks went from 1.33–1.40× `tokio::sync::Notify` to 1.78–1.96×).
/// Under loom nothing yields: the models explore the registrations, which the yields
/// only postpone.
pub(crate) const ASYNC_SEND_YIELDS: u32 = 128;

impl AsyncWait {
    pub(crate) const fn new() -> Self {
        AsyncWait {
            key: None,
            yields: 0,
        }
    }

    /// Whether an entry is registered (an earlier poll returned `Pending` registered).
    #[inline]
    pub(crate) fn is_waiting(&self) -> bool {
        self.key.is_some()
    }

    /// Whether no wait is under way yet (not registered, no poll yielded): the first
    /// poll of a future, whose caller may make its first attempt inline.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.key.is_none() && self.yields == 0
    }

    /// One poll: while fewer than `yields` polls have yielded (see
    /// [`ASYNC_SEND_YIELDS`]), try `attempt` if `worth_trying` says so, and yield to the
    /// executor; then run `attempt` until it finishes or a registered wait is pending.
    ///
    /// Always inlined into the futures' polls, as the signal targets' wait set's is: an
    /// async mailbox request/reply between two tasks went 2 390 → 2 320 instructions a
    /// round trip (callgrind); an async SPSC channel, which rarely waits, is unchanged.
    #[inline(always)]
    pub(crate) fn poll<R, S>(
        &mut self,
        signal: &Signal,
        cx: &mut Context<'_>,
        state: &mut Option<S>,
        yields: u32,
        worth_trying: impl FnOnce() -> bool,
        mut attempt: impl FnMut(S) -> Attempt<R, S>,
    ) -> Poll<R> {
        let yields = if cfg!(loom) { 0 } else { yields };
        if self.key.is_none() && self.yields < yields {
            if worth_trying() {
                let s = state.take().expect("future polled after completion");
                match attempt(s) {
                    Attempt::Done(r) => {
                        // A stream polls one wait again and again: each item yields anew.
                        self.yields = 0;
                        return Poll::Ready(r);
                    }
                    Attempt::Wait(s) => *state = Some(s),
                }
            }
            self.yields += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Set once this poll registers: the re-check that follows is the last attempt.
        let mut registered_now = false;
        loop {
            let s = state.take().expect("future polled after completion");
            match attempt(s) {
                Attempt::Done(r) => {
                    self.cancel(signal);
                    self.yields = 0;
                    return Poll::Ready(r);
                }
                Attempt::Wait(s) => *state = Some(s),
            }
            if registered_now {
                // The re-check after registering failed; the waker stored is this
                // poll's, so a notification from now on re-polls us.
                return Poll::Pending;
            }
            match self.key {
                None => {
                    self.key = Some(signal.register_async(cx.waker()));
                    // Loop: re-check after registering, so no wake-up is lost.
                    registered_now = true;
                }
                Some(key) => match signal.poll_async(key, cx.waker()) {
                    // Our count was consumed with the notification: loop to re-check,
                    // and register again if we must still wait.
                    AsyncState::Notified => self.key = None,
                    AsyncState::Waiting => return Poll::Pending,
                },
            }
        }
    }

    /// Withdraws the registered wait, if any (a notification it received passes on).
    pub(crate) fn cancel(&mut self, signal: &Signal) {
        if let Some(key) = self.key.take() {
            signal.leave_async(key);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize as StdCount, Ordering as StdOrdering};
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups (shared with the signal targets' wait set's
    /// tests).
    pub(crate) struct Counting(StdCount);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, StdOrdering::Relaxed);
        }
    }

    /// A counting waker and its count.
    pub(crate) fn counting() -> (Arc<Counting>, Waker) {
        let c = Arc::new(Counting(StdCount::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// How many times `c`'s waker was woken.
    pub(crate) fn woken(c: &Counting) -> usize {
        c.0.load(StdOrdering::Relaxed)
    }

    fn is_notified(signal: &Signal, key: u64, waker: &Waker) -> bool {
        matches!(signal.poll_async(key, waker), AsyncState::Notified)
    }

    /// Notifications go oldest first, around waits that left, and a notified wait is
    /// told so (by the watermark) however many waits registered after it; the counts
    /// come back to zero once every wait has ended.
    #[test]
    fn notified_in_order_around_departures() {
        let signal = Signal::new();
        let w: Vec<_> = (0..4).map(|_| counting()).collect();
        let keys: Vec<u64> = w.iter().map(|(_, wk)| signal.register_async(wk)).collect();
        // The oldest leaves unnotified; the next notification goes to the second.
        signal.leave_async(keys[0]);
        signal.notify_one();
        assert_eq!(woken(&w[1].0), 1);
        assert!(is_notified(&signal, keys[1], &w[1].1));
        assert!(!is_notified(&signal, keys[2], &w[2].1));
        assert!(!is_notified(&signal, keys[3], &w[3].1));
        // The third leaves; the fourth is next.
        signal.leave_async(keys[2]);
        signal.notify_one();
        assert_eq!(woken(&w[3].0), 1);
        assert!(is_notified(&signal, keys[3], &w[3].1));
        assert_eq!([0, 2].map(|i| woken(&w[i].0)), [0, 0]);
        assert_eq!(signal.accounted(), 0);
    }

    /// `notify_waiting` notifies every registered wait (each once, the lone-waiter
    /// shortcut included); a later registration is not notified by it.
    #[test]
    fn notify_waiting_notifies_everyone_registered() {
        for n in [1, 3] {
            let signal = Signal::new();
            let w: Vec<_> = (0..n).map(|_| counting()).collect();
            let keys: Vec<u64> = w.iter().map(|(_, wk)| signal.register_async(wk)).collect();
            signal.notify_waiting();
            let (late, late_waker) = counting();
            let late_key = signal.register_async(&late_waker);
            for (key, (c, wk)) in keys.iter().zip(&w) {
                assert_eq!(woken(c), 1, "{n} waits");
                assert!(is_notified(&signal, *key, wk), "{n} waits");
            }
            assert!(!is_notified(&signal, late_key, &late_waker));
            assert_eq!(woken(&late), 0);
            signal.leave_async(late_key);
            assert_eq!(signal.accounted(), 0, "{n} waits");
        }
    }

    /// A notified wait that leaves without looking passes its notification on to the
    /// next registered wait; an unnotified wait that leaves after a claim took its count
    /// leaves an excess that the claim's waker consumes without waking anyone.
    #[test]
    fn departures_pass_on_or_settle() {
        let signal = Signal::new();
        let (a, aw) = counting();
        let (b, bw) = counting();
        let ka = signal.register_async(&aw);
        let kb = signal.register_async(&bw);
        signal.notify_one();
        assert_eq!((woken(&a), woken(&b)), (1, 0));
        signal.leave_async(ka);
        assert_eq!(woken(&b), 1, "passed on");
        assert!(is_notified(&signal, kb, &bw));
        assert_eq!(signal.accounted(), 0);

        // A claim in flight (the count taken, the list not yet reached) while the only
        // wait leaves: the claim finds an excess, not an entry.
        let kc = signal.register_async(&aw);
        assert!(Signal::claim(&signal.inner.async_waiters));
        signal.leave_async(kc);
        assert_eq!(signal.accounted(), 1, "the excess");
        assert!(!signal.wake_async());
        assert_eq!(woken(&a), 1, "nobody woken for the excess");
        assert_eq!(signal.accounted(), 0);
    }
}
