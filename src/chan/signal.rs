//! Waiting, written once: per side, the waiters registered for a change plus a count of
//! them, and the blocking and async wait loops that every queue flavor shares.
//!
//! Blocking waiters park on an `event-listener` [`Event`] (a stack listener each, with
//! timeouts) and are counted. Async waiters keep their wakers in a small list of our own
//! ([`WakerList`]) behind a [`MarkLock`], whose mark says whether the list holds any:
//! registering is a push under the lock, taken raising the mark with one CAS, and a
//! notification takes an entry out under the lock, one CAS again. A notified async
//! waiter learns that it was notified from one atomic load (the list's watermark,
//! below), without the lock: the wait that a wake-up ends takes the lock once, to
//! register. Each kind has its own word, so a waker always knows which of the two to
//! notify.
//!
//! The fast path of a send or receive never locks: a wake-up is only issued when the
//! blocking count or the async list's mark says someone is registered, two loads of
//! read-mostly lines.
//!
//! # The no-lost-wake-up argument
//! A waiter (1) registers (a listener, or an entry in the waker list), (2) announces it
//! with a SeqCst RMW (a blocking waiter increments its count; an async waiter's lock
//! raised the list's mark, before its push), (3) re-checks the queue, (4) sleeps. A waker
//! (a) changes the queue with a SeqCst RMW (the ring's or list's claim CAS, a disconnect
//! `fetch_or`), (b) loads the count and the mark (SeqCst). In the single total order of
//! SeqCst operations either (2) precedes (b), so the waker sees a waiter and notifies one
//! that (1) registered (the mark stays up until the list is empty, and a waker takes the
//! list's lock, so it waits for a registration's push), or (a) precedes (3)'s SeqCst load
//! ([`load_seqcst`]), so the re-check sees the change and does not sleep. A claimed but
//! not yet committed operation is seen by the re-check as busy, and the checker spins
//! until it commits instead of sleeping.
//!
//! # Timed waits
//! A timed waiter that gives up makes one last attempt first, whether or not it was
//! notified: a waker that claimed its count notifies nobody else, so a waiter that left
//! without looking would strand the message (or room) announced while another waiter
//! sleeps. One that was not notified withdraws its count; a notification that reaches
//! its listener afterwards passes on when the listener is dropped. (Modelled, the
//! deadline passing at every point, in `loom-tests/tests/loom_timeout.rs`.)
//!
//! # Entries of async waiters
//! The list holds the unnotified entries only, oldest (lowest key) first: a waker takes
//! an entry out as it notifies it. Each step under the list's lock:
//! 1. A waiter registers: it takes the lock raising the mark (a SeqCst CAS, step (2)
//!    above) and pushes its entry, with the next key. (It cloned its waker before: user
//!    code stays out of the critical section where it can.)
//! 2. A waker that saw the mark takes the *oldest* entry out, raises the watermark
//!    `notified_below` past its key (Release store), and wakes it after unlocking. An
//!    entry registered before the waker's load of the mark is always found: its
//!    registration held the lock from raising the mark until after the push.
//! 3. A waiter that leaves unnotified removes its entry.
//! 4. [`Signal::notify_all`] (disconnection) and [`Signal::notify_waiting`] (once it saw
//!    the mark) take every entry out and raise the watermark past the last.
//! 5. A waiter knows it was notified when its key is below the watermark: entries leave
//!    the list in key order (steps 2 and 4 take the oldest first; step 3 takes only its
//!    own entry, which is then no longer looked up), so every key below the watermark
//!    was taken out by a waker or by its own waiter, and the watermark only grows. The
//!    load is Acquire, paired with the waker's Release store, so the waker's change (made
//!    before it took the entry) is visible to the re-check that follows; no lock is
//!    taken. Above the watermark, the waiter takes the lock and loads the watermark again
//!    there (it is only stored under the lock), so the answer is final while it updates
//!    or removes its entry. A notified waiter re-checks; one that leaves notified
//!    without having looked (it was cancelled, or its re-check succeeded first) passes
//!    the notification on (step 2 again).
//!
//! Every unlock lowers the mark once the list is empty (see [`MarkLock`]), so with no
//! async wait pending a change costs the waker one load of the mark. (An earlier version
//! kept a count beside a mutex: three RMWs to register and three to notify, against one
//! each here; callgrind, an async mailbox request/reply between two tasks: 2 110 → 2 081
//! instructions and 30 → 26 locked instructions a round trip.)

use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use super::mark_lock::{MarkLock, Marks};
use crate::sync::{
    AtomicU64, AtomicUsize, Deadline, Event, Listener, Ordering, listener, load_seqcst, thread,
};

/// One side's wait queue: waiters for room (senders) or for messages (receivers).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    inner: CachePadded<SignalInner>,
}

#[derive(Debug)]
struct SignalInner {
    /// Blocking waiters park here.
    event: Event,
    /// Registered blocking waiters not yet claimed by a waker.
    waiters: AtomicUsize,
    /// Every async wait whose key is below this was notified (or has left): see the
    /// module docs, step 5. Stored under the list's lock only.
    notified_below: AtomicU64,
    /// The async waiters' wakers, behind the lock whose mark says the list is not empty.
    wakers: MarkLock<WakerList>,
}

impl Default for SignalInner {
    fn default() -> Self {
        SignalInner {
            event: Event::new(),
            waiters: AtomicUsize::new(0),
            notified_below: AtomicU64::new(0),
            wakers: MarkLock::new(WakerList::default()),
        }
    }
}

/// The wakers of pending async waits not yet notified, oldest (lowest key) first.
#[derive(Debug, Default)]
struct WakerList {
    entries: VecDeque<Entry>,
    /// The key the next registration gets.
    next_key: u64,
}

impl Marks for WakerList {
    fn keeps_mark(&self) -> bool {
        !self.entries.is_empty()
    }
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
    /// Called after the change being announced was made with a SeqCst RMW. The blocking
    /// count holds registered waiters that no notification has been claimed for (a waker
    /// claims one, decrementing, before notifying), and the mark is down once every async
    /// entry was taken out: so while a woken waiter is on its way, further changes do not
    /// take a lock to notify nobody. Async waiters are served first; the two kinds rarely
    /// wait on one channel at once.
    #[inline]
    pub(crate) fn notify_one(&self) {
        if self.inner.wakers.is_marked() || Self::has(&self.inner.waiters) {
            self.notify_one_registered();
        }
    }

    /// [`Signal::notify_one`] once it has seen a waiter count above zero: out of line, so
    /// that the check stays small where it is inlined (every send and receive).
    #[cold]
    #[inline(never)]
    fn notify_one_registered(&self) {
        if self.inner.wakers.is_marked() && self.wake_async() {
            return;
        }
        // No async waiter (the mark was up, and the entry gone by the time we held the
        // lock: its waiter left, or another waker took it; then this change may be a
        // blocking waiter's to see).
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

    /// Notifies the oldest unnotified async waiter and says whether it did: none may be
    /// left by the time this holds the lock.
    #[cold]
    fn wake_async(&self) -> bool {
        let waker = self.inner.wakers.lock(false).with(|list| {
            list.entries.pop_front().map(|e| {
                self.mark_notified(e.key);
                e.waker
            })
        });
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
    /// path is the same two loads (the async list's mark, the blocking count). Otherwise
    /// it is [`Signal::notify_all`], whose accounting keeps the count exact: every
    /// waiter it notifies re-checks, and one that finds nothing for itself registers
    /// again (a blocking waiter's notification that a withdrawing waiter took is passed
    /// on when that waiter's listener drops).
    ///
    /// Each kind is checked on its own, as `notify_one` does: a kind whose mark is down
    /// or whose count is zero has no registered waiter that this change must wake (the
    /// argument of [`Signal::has`] and of the module docs), so its half of `notify_all`
    /// is skipped (with only async waits registered, no RMW on the blocking count and no
    /// event notification).
    #[inline]
    pub(crate) fn notify_waiting(&self) {
        if self.inner.wakers.is_marked() {
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

    /// The async half of [`Signal::notify_all`]: takes every entry out (notifying it,
    /// module docs, step 4), and wakes them outside the lock.
    ///
    /// The first waker is kept apart from the rest, so that the common case of one
    /// waiting task wakes it without allocating, and directly: a panic of a single
    /// wake-up reaches the caller as it would from the batch.
    #[cold]
    fn wake_all_async(&self) {
        let taken = self.inner.wakers.lock(false).with(|list| {
            let first = list.entries.pop_front()?;
            // Not even an empty drain for the common single waiter.
            let rest: Vec<Entry> = if list.entries.is_empty() {
                Vec::new()
            } else {
                list.entries.drain(..).collect()
            };
            self.mark_notified(rest.last().unwrap_or(&first).key);
            Some((first.waker, rest))
        });
        let Some((first, rest)) = taken else {
            return;
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

    /// What this side still accounts for: the blocking waiter count and the async
    /// entries (checked against the mark). Zero once no wait is pending and no wake-up is
    /// in flight; anything else is a count that drifted or an entry left behind. For
    /// tests only.
    #[cfg(any(test, loom))]
    pub(crate) fn accounted(&self) -> usize {
        let entries = self
            .inner
            .wakers
            .lock(false)
            .with(|list| list.entries.len());
        assert_eq!(entries > 0, self.inner.wakers.is_marked(), "the mark");
        self.inner.waiters.load(Ordering::SeqCst) + entries
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

    /// Registers an async waiter: the lock raising the mark (the SeqCst RMW of the
    /// module docs' argument), then its entry (step 1). Returns the entry's key.
    fn register_async(&self, waker: &Waker) -> u64 {
        // User code, before the lock.
        let waker = waker.clone();
        let mut held = self.inner.wakers.lock(true);
        held.with(|list| {
            let key = list.next_key;
            list.next_key += 1;
            list.entries.push_back(Entry { key, waker });
            key
        })
    }

    /// A later poll of a registered async wait: consumes a notification (without the
    /// lock when the watermark already says so), or refreshes the stored waker.
    fn poll_async(&self, key: u64, waker: &Waker) -> AsyncState {
        if self.notified(key) {
            return AsyncState::Notified;
        }
        let mut held = self.inner.wakers.lock(false);
        if self.notified(key) {
            return AsyncState::Notified;
        }
        held.with(|list| {
            let i = list.index_of(key);
            let w = &mut list.entries[i].waker;
            if !w.will_wake(waker) {
                // User code under the lock: a panic leaves the old waker in place.
                w.clone_from(waker);
            }
        });
        AsyncState::Waiting
    }

    /// An async waiter leaves (it finished, or was cancelled) while registered:
    /// unnotified, it removes its entry; notified (its entry is gone), it passes the
    /// notification on (see the module docs).
    #[inline(never)]
    fn leave_async(&self, key: u64) {
        if !self.notified(key) {
            let mut held = self.inner.wakers.lock(false);
            if !self.notified(key) {
                let entry = held.with(|list| {
                    let i = list.index_of(key);
                    list.entries.remove(i)
                });
                drop(held);
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
/// (besides the last spin), given the spin so far: a waiter may wait for more than the
/// smallest change that lets it through (see `array`'s batched refill), and a claim that
/// finds nothing to take loads the other side's position, whose line a poll would take
/// away from the peer each time (see `Ring::send_batch_free`). Not even the first poll
/// attempts unasked: the caller has just made its own attempt, or looked and found
/// nothing (a blocking receive, see `chan::recv_blocking`). Once parking, every attempt
/// is made, so the hint never decides whether a waiter sleeps.
///
/// The spin is a [`SpinWait`].
pub(crate) fn block_on<R, S>(
    signal: &Signal,
    mut state: S,
    deadline: Option<Instant>,
    worth_trying: impl Fn(&SpinWait) -> bool,
    mut attempt: impl FnMut(S) -> Attempt<R, S>,
) -> Result<R, S> {
    // The spin saves a park when the change comes soon. Under loom it would be one more
    // unregistered attempt, the same as the inline claim each caller has just made (or
    // the look at the front that made a receive skip it), and the model would explore
    // every interleaving around it again: skipped (in a user's
    // model of an unbounded channel, a quarter fewer executions; see
    // `loom-tests/README.md`). The waits that can lose a wake-up are all after it.
    if !cfg!(loom) {
        let mut spin = SpinWait::new();
        loop {
            if spin.is_over() || worth_trying(&spin) {
                match attempt(state) {
                    Attempt::Done(r) => return Ok(r),
                    Attempt::Wait(s) => state = s,
                }
            }
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
        // Set once this poll registers: the re-check that follows is the last attempt.
        let mut registered_now = false;
        if self.key.is_none() {
            if self.yields < yields {
                if worth_trying() {
                    let s = state.take().expect("future polled after completion");
                    match attempt(s) {
                        Attempt::Done(r) => {
                            // A stream polls one wait again and again: each item yields
                            // anew.
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
            if yields == 0 && !worth_trying() {
                // A wait that does not yield (a receive), and the hint says an attempt
                // would find nothing: register at once, and let the re-check that must
                // follow a registration be the only attempt. An attempt can cost more
                // than the hint's loads (a mailbox's receive enters and leaves its gate
                // with two RMWs), and in a round trip between two tasks every receive
                // finds its queue empty at first.
                self.key = Some(signal.register_async(cx.waker()));
                registered_now = true;
            }
        }
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
    /// Inline: every async future's drop calls it, nearly always with nothing
    /// registered.
    #[inline]
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
    /// told so (by the watermark) however many waits registered after it; nothing is
    /// left registered (and the mark is down) once every wait has ended.
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
    /// next registered wait; a notification that finds every wait gone wakes nobody.
    #[test]
    fn departures_pass_on() {
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

        // The only wait leaves before a waker that saw the mark reaches the list: the
        // waker finds no entry and wakes nobody.
        let kc = signal.register_async(&aw);
        assert!(signal.inner.wakers.is_marked());
        signal.leave_async(kc);
        assert!(!signal.wake_async());
        assert_eq!(woken(&a), 1, "nobody woken");
        assert_eq!(signal.accounted(), 0);
    }
}
