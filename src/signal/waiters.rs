//! The async waits of an in-process signal target: a set of wakers that every change
//! wakes all at once.
//!
//! A target's waits may want different numbers, so a change wakes every registered wait
//! (see the module docs of [`crate::signal`]), and a woken wait that finds nothing for
//! itself registers again. The channels' wait queue ([`crate::chan::signal::Signal`])
//! wakes one waiter at a time and keeps the accounting that needs (counts consumed per
//! wake-up, an ordered list with keys, passing a wake-up on): a waker that wakes
//! everyone needs none of it. Here a wake-up takes every entry out at once and starts a
//! new *epoch*; a wait knows it was woken when the epoch moved past the one it
//! registered in, and a wait that leaves after being woken owes nobody anything (every
//! other wait registered then was woken too). With one task waiting, as a
//! target's owner usually is, a wait costs one short critical section to register (one
//! RMW: the lock's, which also marks the set as having waits), a wake-up one to take
//! the entry, and the woken poll a single load. (The first version waited on the
//! channels' queue, `notify_waiting`: callgrind counted about 2 050 instructions per
//! round trip of the async raise-to-wake ping-pong between two tasks, against
//! `tokio::sync::Notify`'s 1 510; the numbers of this one are in the CHANGELOG.)
//!
//! # The lock and the mark
//! The entries sit behind a [`MarkLock`]: one word holds their lock and the mark that
//! raisers look at. A registration takes the lock raising the mark with one SeqCst CAS;
//! every unlock is a Release store that keeps the mark if an entry is left and lowers
//! it otherwise. So the mark is up from the moment a registration takes the lock until
//! the unlock after its entry left (woken or removed). The lock is the set's own rather
//! than a mutex so that a registration costs one RMW, not three (lock, count, unlock).
//!
//! # The no-lost-wake-up argument
//! A wait (1) takes the lock raising the mark (SeqCst RMW) and pushes its entry;
//! (2) re-checks the target (SeqCst loads of its words). A raiser (a) changes the words
//! with a SeqCst RMW, (b) loads the mark (SeqCst) and, if the mark is up, takes the lock
//! (waiting for the registration's unlock), takes every entry out and wakes it. In the
//! single total order of SeqCst operations either (1) precedes (b), so the raiser sees
//! the mark, which stays up until the entry leaves, and finds the entry, or (a)
//! precedes the re-check, which then sees the change.
//!
//! # Epochs
//! `epoch` only changes under the lock, when a wake-up takes the entries out: it is
//! stored (Release) before the lock is released, and a wait records the epoch it
//! registered in, under the lock too. So a wait whose entry a wake-up took sees a later
//! epoch (lock-free, with an Acquire load that pairs with the store: the raiser's change
//! is then visible to its re-check), and one registered after that wake-up sees its own
//! epoch until the next. A wait that sees its own epoch still holds its entry, and
//! under the lock that answer is final while it refreshes or removes the entry.

use core::task::{Context, Poll, Waker};

use crate::chan::mark_lock::{Held, MarkLock, Marks};
use crate::sync::{AtomicU64, Ordering};

/// The registered async waits of one target.
#[derive(Debug)]
pub(crate) struct AsyncWaiters {
    /// The entries, behind the lock whose mark is the raisers' fast check (see the
    /// module docs).
    entries: MarkLock<Entries>,
    /// Bumped by every wake-up that took entries out; stored under the lock only.
    epoch: AtomicU64,
}

/// The registered waits: the first inline (a lone waiter's registration and wake-up
/// touch no other memory), the rest in a list. `first` is empty only if `rest` is.
#[derive(Debug, Default)]
struct Entries {
    first: Option<Entry>,
    rest: Vec<Entry>,
    /// The key the next registration gets.
    next_key: u64,
}

impl Marks for Entries {
    fn keeps_mark(&self) -> bool {
        self.first.is_some()
    }
}

impl Entries {
    fn push(&mut self, entry: Entry) {
        if self.first.is_none() {
            self.first = Some(entry);
        } else {
            self.rest.push(entry);
        }
    }

    fn find(&mut self, key: u64) -> Option<&mut Entry> {
        self.first
            .iter_mut()
            .chain(self.rest.iter_mut())
            .find(|e| e.key == key)
    }

    fn remove(&mut self, key: u64) -> Option<Entry> {
        if self.first.as_ref().is_some_and(|e| e.key == key) {
            let removed = self.first.take();
            self.first = self.rest.pop();
            return removed;
        }
        let i = self.rest.iter().position(|e| e.key == key)?;
        Some(self.rest.swap_remove(i))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }
}

#[derive(Debug)]
struct Entry {
    key: u64,
    waker: Waker,
}

/// One async wait's registration, between polls: its entry's key and the epoch it was
/// registered in.
#[derive(Debug, Default)]
pub(crate) struct AsyncWait {
    registered: Option<(u64, u64)>,
}

impl AsyncWait {
    pub(crate) const fn new() -> Self {
        AsyncWait { registered: None }
    }
}

impl AsyncWaiters {
    pub(crate) fn new() -> Self {
        AsyncWaiters {
            entries: MarkLock::new(Entries::default()),
            epoch: AtomicU64::new(0),
        }
    }

    /// Takes the lock, raising the mark with it for a registration.
    #[inline]
    fn lock(&self, register: bool) -> Held<'_, Entries> {
        self.entries.lock(register)
    }

    /// Wakes every registered wait, if any. Called after the change being announced
    /// was made with a SeqCst RMW (see the module docs).
    #[inline]
    pub(crate) fn wake_all(&self) {
        if self.entries.is_marked() {
            self.wake_registered();
        }
    }

    /// [`AsyncWaiters::wake_all`] once the mark is up: takes every entry out under the
    /// lock, starts a new epoch, and wakes them after unlocking.
    #[inline]
    fn wake_registered(&self) {
        let mut held = self.lock(false);
        let (first, rest) = held.with(|e| {
            // The lone waiter's case allocates nothing (and keeps the list's capacity).
            let rest = if e.rest.is_empty() {
                None
            } else {
                Some(std::mem::take(&mut e.rest))
            };
            (e.first.take(), rest)
        });
        let Some(first) = first else {
            return;
        };
        // Release: the raiser's change, made before, is visible to a wait that sees the
        // new epoch (Acquire).
        let epoch = self.epoch.load(Ordering::Relaxed);
        self.epoch.store(epoch.wrapping_add(1), Ordering::Release);
        drop(held);
        // Outside the lock: waking runs executor code.
        match rest {
            None => first.waker.wake(),
            // Each one even if an earlier one panics (see `chan::unwind`): every entry
            // is out already.
            Some(rest) => {
                crate::chan::unwind::wake_all(core::iter::once(first).chain(rest), |e: Entry| {
                    e.waker.wake()
                })
            }
        }
    }

    /// Whether the wait registered in `epoch` was woken: lock-free, and final when
    /// `true`.
    #[inline]
    fn woken(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) != epoch
    }

    /// Registers a wait: the lock raising the mark (the SeqCst RMW of the module docs'
    /// argument), then its entry. Returns the key and the epoch.
    fn register(&self, waker: &Waker) -> (u64, u64) {
        let mut held = self.lock(true);
        // The clone is user code and may panic: nothing is changed yet (the unlock
        // lowers the mark again if no entry is left).
        let waker = waker.clone();
        let key = held.with(|e| {
            let key = e.next_key;
            e.next_key += 1;
            e.push(Entry { key, waker });
            key
        });
        (key, self.epoch.load(Ordering::Relaxed))
    }

    /// A poll of a registered wait that was not woken: refreshes its waker. `false` if
    /// it turns out to have been woken after all (under the lock, final).
    fn refresh(&self, key: u64, epoch: u64, waker: &Waker) -> bool {
        let mut held = self.lock(false);
        if self.epoch.load(Ordering::Relaxed) != epoch {
            return false;
        }
        held.with(|e| {
            if let Some(entry) = e.find(key)
                && !entry.waker.will_wake(waker)
            {
                // User code under the lock: a panic leaves the old waker in place.
                entry.waker.clone_from(waker);
            }
        });
        true
    }

    /// One poll of an async wait running `attempt`: the target's try-wait, whose `None`
    /// after registering is the re-check (SeqCst loads).
    ///
    /// Every poll attempts first, woken or not: a poll that finds a delivery takes it,
    /// whoever polled (a `select!` may poll a wait that was not woken).
    ///
    /// Always inlined into the future's `poll`: called, it passed the attempt's result
    /// and the wait through memory and saved most registers on every poll (callgrind,
    /// async raise-to-wake between two tasks: 1 560 → 1 500 instructions a round trip).
    #[inline(always)]
    pub(crate) fn poll<R>(
        &self,
        wait: &mut AsyncWait,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        if let Some(r) = attempt() {
            self.cancel(wait);
            return Poll::Ready(r);
        }
        if let Some((key, epoch)) = wait.registered {
            if !self.woken(epoch) && self.refresh(key, epoch, cx.waker()) {
                // Still registered, and not woken: no change since the registration's
                // re-check (every change wakes every registered wait).
                return Poll::Pending;
            }
            // Woken, the entry gone: look again, after the wake-up this time.
            wait.registered = None;
            if let Some(r) = attempt() {
                return Poll::Ready(r);
            }
        }
        wait.registered = Some(self.register(cx.waker()));
        match attempt() {
            Some(r) => {
                self.cancel(wait);
                Poll::Ready(r)
            }
            None => Poll::Pending,
        }
    }

    /// Ends an async wait (it finished, or its future was dropped): a registered wait
    /// that was not woken removes its entry. A woken one leaves nothing behind and
    /// passes nothing on: every wait registered at its wake-up was woken with it.
    #[inline]
    pub(crate) fn cancel(&self, wait: &mut AsyncWait) {
        if let Some((key, epoch)) = wait.registered.take()
            && !self.woken(epoch)
        {
            self.remove(key, epoch);
        }
    }

    /// [`AsyncWaiters::cancel`] of a wait not seen woken.
    #[cold]
    #[inline(never)]
    fn remove(&self, key: u64, epoch: u64) {
        let mut held = self.lock(false);
        if self.epoch.load(Ordering::Relaxed) != epoch {
            return;
        }
        let removed = held.with(|e| e.remove(key));
        drop(held);
        // The waker's drop is user code: after unlocking.
        drop(removed);
    }

    /// The registered entries (tests only).
    #[cfg(test)]
    fn registered(&self) -> usize {
        let n = self.lock(false).with(|e| e.len());
        assert_eq!(n > 0, self.entries.is_marked());
        n
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::chan::signal::tests::{counting, woken};

    /// One poll of `wait` with `waker`, whose attempt finds nothing.
    fn poll_nothing(set: &AsyncWaiters, wait: &mut AsyncWait, waker: &Waker) -> Poll<()> {
        set.poll(wait, &mut Context::from_waker(waker), || None)
    }

    /// Every registered wait is woken once by one wake-up, each polls ready (or
    /// registers again), and the set is empty afterwards; a wake-up with nobody
    /// registered does nothing.
    #[test]
    fn one_wake_up_wakes_every_wait() {
        for n in [1, 3] {
            let set = AsyncWaiters::new();
            set.wake_all();
            let waits: Vec<_> = (0..n).map(|_| counting()).collect();
            let mut states: Vec<AsyncWait> = (0..n).map(|_| AsyncWait::default()).collect();
            for ((_, waker), st) in waits.iter().zip(&mut states) {
                assert!(poll_nothing(&set, st, waker).is_pending());
            }
            assert_eq!(set.registered(), n);
            set.wake_all();
            assert_eq!(set.registered(), 0);
            for ((c, waker), st) in waits.iter().zip(&mut states) {
                assert_eq!(woken(c), 1, "{n} waits");
                let mut cx = Context::from_waker(waker);
                assert_eq!(set.poll(st, &mut cx, || Some(7)), Poll::Ready(7));
                set.cancel(st);
            }
            assert_eq!(set.registered(), 0);
        }
    }

    /// A wait that leaves unwoken removes its entry, leaving the others; one that leaves
    /// woken removes nothing; a registration after a wake-up is not taken for woken.
    #[test]
    fn leaving_removes_only_its_own_entry() {
        let set = AsyncWaiters::new();
        let (a, aw) = counting();
        let (b, bw) = counting();
        let (mut sa, mut sb) = (AsyncWait::default(), AsyncWait::default());
        assert!(poll_nothing(&set, &mut sa, &aw).is_pending());
        assert!(poll_nothing(&set, &mut sb, &bw).is_pending());
        set.cancel(&mut sa);
        assert_eq!(set.registered(), 1);
        set.wake_all();
        assert_eq!((woken(&a), woken(&b)), (0, 1));
        set.cancel(&mut sb);
        assert_eq!(set.registered(), 0);
        // Registered after the wake-up: a poll without a change stays pending.
        assert!(poll_nothing(&set, &mut sa, &aw).is_pending());
        assert!(poll_nothing(&set, &mut sa, &aw).is_pending());
        assert_eq!(set.registered(), 1);
        set.cancel(&mut sa);
        assert_eq!(set.registered(), 0);
    }

    /// A poll with a new waker replaces the stored one: the wake-up reaches the new.
    #[test]
    fn a_later_poll_refreshes_the_waker() {
        let set = AsyncWaiters::new();
        let (old, ow) = counting();
        let (new, nw) = counting();
        let mut st = AsyncWait::default();
        assert!(poll_nothing(&set, &mut st, &ow).is_pending());
        assert!(poll_nothing(&set, &mut st, &nw).is_pending());
        set.wake_all();
        assert_eq!((woken(&old), woken(&new)), (0, 1));
    }
}
