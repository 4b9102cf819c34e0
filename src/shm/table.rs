//! The peer table's state machine (attach, reap, settle, detach) and a handle family's
//! intent lanes, generic over where the table lives and how an owner's liveness is
//! proven.
//!
//! Production keeps the table in the mapped segment and proves liveness with byte-range
//! locks on the segment file ([`super::peers`], [`super::lock`]); the loom models keep it
//! on the heap, with an atomic stand-in for each slot's lock (`conduit::__loom_shm`).
//! Both run exactly this code.
//!
//! # States
//! Slot `n`'s state word is `generation << 32 | state << 8 | roles`:
//! - FREE: nobody's. An attach holding the slot's lock exclusively resets the entry and
//!   stores LIVE with the generation bumped;
//! - LIVE: attached, with the owner's roles. The owner stores FREE when it detaches, and
//!   then releases its lock;
//! - DEAD: a reaper proved the owner dead (with the lock) and some of its intents are not
//!   settled yet; it counts for neither side. Once all are settled, FREE.
//!
//! # Exclusion
//! The owner holds its slot's lock exclusively from before it stores LIVE until after it
//! stores FREE (or until its process dies, when the kernel releases it). Anyone else
//! changes the slot only under the lock:
//! 1. an attach takes the lock exclusively before it reads the state, so no reaper is at
//!    work on the slot while it settles what a previous owner left, resets the entry and
//!    stores LIVE, and none can be until it releases the lock;
//! 2. a reaper takes it shared, so it acts only while no owner holds it, and its CASes
//!    from the state word it read fail if the word changed meanwhile;
//! 3. several reapers may hold it at once: every transition is a CAS from the word read,
//!    and settling an intent is idempotent ([`protocol::resolve`], then a CAS clearing the
//!    lane word only if it still holds that intent).
//!
//! A LIVE slot is therefore never reaped while its owner lives, and an intent the owner
//! records is never cleared by anyone else.
//!
//! # Lanes
//! A handle family's threads each take one of its intent lanes per operation
//! ([`Lanes`]). The first thread to find lane 0 free keeps it for good (its key is
//! stored in `owner`, and only it stores that key), so a family used from one thread
//! takes its lane with one relaxed load; every other thread takes a free lane among the
//! others with a swap and gives it back with a Release store. No lane is ever held by two
//! threads at once.

use crate::chan::ring::{Reclaim, Ring, RingStorage};
use crate::shm::protocol::{self, NO_INTENT};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Backoff, Ordering};

/// A slot nobody owns.
pub(crate) const FREE: u64 = 0;
/// A slot an attached peer owns.
pub(crate) const LIVE: u64 = 1;
/// A slot whose owner died, with intents still to settle.
pub(crate) const DEAD: u64 = 2;

/// A state word from its parts.
pub(crate) fn pack(generation: u32, state: u64, roles: u64) -> u64 {
    (u64::from(generation) << 32) | ((state & 0xff) << 8) | (roles & 0xff)
}

/// A state word's parts: generation, state, roles.
pub(crate) fn unpack(word: u64) -> (u32, u64, u64) {
    ((word >> 32) as u32, (word >> 8) & 0xff, word & 0xff)
}

/// Where a peer table lives: its state words, its entries' intent words, and the ring
/// whose claims the intents record.
pub(crate) trait Table {
    /// The ring's slot storage.
    type Slots: RingStorage;
    /// How many peer slots there are.
    fn slots(&self) -> usize;
    /// The state word of slot `n` (`n < slots()`).
    fn state(&self, n: usize) -> &AtomicU64;
    /// The intent words of slot `n` (`n < slots()`).
    fn intents(&self, n: usize) -> &[AtomicUsize];
    /// The ring.
    fn ring(&self) -> &Ring<Self::Slots>;
    /// Settles `intent`, recorded by a peer known to be dead ([`protocol::resolve`] on
    /// [`Table::ring`]; a segment whose intents name one of several rings, a signal
    /// target's, picks the ring first).
    fn resolve(&self, intent: usize, live_claim: impl FnOnce() -> bool) -> Reclaim {
        protocol::resolve(self.ring(), intent, live_claim)
    }
    /// Records the attaching process's identity in slot `n`'s entry (diagnostics).
    fn record_owner(&self, n: usize);
    /// Wakes every waiter of both sides (something they wait for may have changed).
    fn wake_all(&self);
}

/// Whether slot `n` is LIVE with a role in `role`.
#[inline]
pub(crate) fn is_live(t: &impl Table, n: usize, role: u64) -> bool {
    let (_, state, roles) = unpack(t.state(n).load(Ordering::Acquire));
    state == LIVE && roles & role != 0
}

/// Takes a slot for a peer with `roles`: for each slot in turn, tries its lock
/// exclusively (`lock`, `Ok(false)` if held elsewhere), settles what a dead previous
/// owner left, and stores LIVE. Returns the slot, whose lock the caller then holds, or
/// `None` if every slot was held (or kept by a pending claim). A slot given up is
/// unlocked with `unlock`.
pub(crate) fn attach<T: Table, E>(
    t: &T,
    roles: u64,
    mut lock: impl FnMut(usize) -> Result<bool, E>,
    mut unlock: impl FnMut(usize) -> Result<(), E>,
) -> Result<Option<usize>, E> {
    for n in 0..t.slots() {
        if !lock(n)? {
            // An owner, one moving in or out, or a reaper: not ours to take now.
            continue;
        }
        let word = t.state(n);
        let (generation, state, _) = unpack(word.load(Ordering::Acquire));
        if state == LIVE || state == DEAD {
            // Its previous owner died (we hold its lock): settle what it left.
            reap(t, n);
            let (_, state, _) = unpack(word.load(Ordering::Acquire));
            if state != FREE {
                // A live peer may be the real claimant of one of its claims.
                unlock(n)?;
                continue;
            }
            t.wake_all();
        }
        t.record_owner(n);
        for lane in t.intents(n) {
            lane.store(NO_INTENT, Ordering::Relaxed);
        }
        // Sync point: Release publishes the entry to probes (Acquire state loads).
        word.store(
            pack(generation.wrapping_add(1), LIVE, roles),
            Ordering::SeqCst,
        );
        return Ok(Some(n));
    }
    Ok(None)
}

/// Marks slot `n` FREE when its owner detaches (every operation of the owner has
/// finished, so no intent is recorded), and wakes everyone: the other side re-checks for
/// disconnection. The caller releases the slot's lock after this.
pub(crate) fn detach(t: &impl Table, n: usize) {
    let word = t.state(n);
    let (generation, ..) = unpack(word.load(Ordering::Acquire));
    word.store(pack(generation, FREE, 0), Ordering::SeqCst);
    t.wake_all();
}

/// One maintenance pass: for each LIVE or DEAD slot whose lock `probe` takes shared
/// (`true`: nobody owns it), reaps it, then `release`s the lock. Wakes everyone if
/// anything changed; returns whether anything did.
pub(crate) fn maintain(
    t: &impl Table,
    mut probe: impl FnMut(usize) -> bool,
    mut release: impl FnMut(usize),
) -> bool {
    let mut changed = false;
    for n in 0..t.slots() {
        let (_, state, _) = unpack(t.state(n).load(Ordering::Acquire));
        if state != LIVE && state != DEAD {
            continue;
        }
        if probe(n) {
            changed |= reap(t, n);
            release(n);
        }
    }
    if changed {
        t.wake_all();
    }
    changed
}

/// Reaps slot `n`, whose lock the caller holds (shared or exclusive) with no owner
/// holding it: LIVE → DEAD, settle its intents, DEAD → FREE once all are settled.
/// Returns whether the state changed.
pub(crate) fn reap(t: &impl Table, n: usize) -> bool {
    let word = t.state(n);
    let w = word.load(Ordering::Acquire);
    let (generation, state, roles) = unpack(w);
    let dead = pack(generation, DEAD, roles);
    let mut changed = false;
    match state {
        LIVE => {
            if word
                .compare_exchange(w, dead, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                return false;
            }
            changed = true;
        }
        DEAD => {}
        _ => return false,
    }
    if settle(t, n) {
        changed |= word
            .compare_exchange(
                dead,
                pack(generation, FREE, 0),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok();
    }
    changed
}

/// Settles every intent of dead slot `n`; returns whether all are settled.
fn settle(t: &impl Table, n: usize) -> bool {
    let mut all = true;
    for lane in t.intents(n) {
        let intent = lane.load(Ordering::Acquire);
        if intent == NO_INTENT {
            continue;
        }
        match t.resolve(intent, || live_claim(t, intent, n)) {
            Reclaim::Pending => all = false,
            outcome => {
                let _ =
                    lane.compare_exchange(intent, NO_INTENT, Ordering::Relaxed, Ordering::Relaxed);
                if outcome == Reclaim::Reclaimed {
                    // A skipped slot to consume, or a freed one to fill.
                    t.wake_all();
                }
            }
        }
    }
    all
}

/// Whether a LIVE slot other than `except` records `intent`.
fn live_claim(t: &impl Table, intent: usize, except: usize) -> bool {
    (0..t.slots()).filter(|&m| m != except).any(|m| {
        let (_, state, _) = unpack(t.state(m).load(Ordering::Acquire));
        state == LIVE
            && t.intents(m)
                .iter()
                .any(|l| l.load(Ordering::Relaxed) == intent)
    })
}

/// A handle family's intent lanes: which are in use by its threads (process-local).
#[derive(Debug)]
pub(crate) struct Lanes<const N: usize> {
    /// Whether each lane is in use. Lane 0, once taken, stays with `owner`.
    used: [AtomicBool; N],
    /// The key of the thread that owns lane 0 for good, or 0 before any thread took it:
    /// the first thread to find lane 0 free keeps it, so that a handle used from one
    /// thread takes its lane without a read-modify-write.
    owner: AtomicUsize,
}

impl<const N: usize> Lanes<N> {
    /// No lane in use.
    pub(crate) fn new() -> Self {
        Lanes {
            used: core::array::from_fn(|_| AtomicBool::new(false)),
            owner: AtomicUsize::new(0),
        }
    }

    /// Takes a lane for one operation of the thread with `key` (nonzero, and never the
    /// same for two threads). Returns its index and whether it must be given back
    /// ([`Lanes::give_back`]); lane 0 is kept by its owner and never given back. Waits
    /// if all lanes are in use by other threads.
    #[inline]
    pub(crate) fn take(&self, key: usize) -> (usize, bool) {
        // Only this thread ever stores its own key (keys are never reused), so a match
        // means lane 0 is ours, and nobody else uses it.
        if self.owner.load(Ordering::Relaxed) == key {
            return (0, false);
        }
        self.take_slow(key)
    }

    /// [`Lanes::take`] for a thread that does not own lane 0: it takes lane 0 for good
    /// if nobody has, or else the first free lane of the others, waiting for one if need
    /// be. The `used` flags are this process's own memory, not the segment's, and a lane
    /// is held for one attempt of one operation, which is bounded: the wait ends.
    #[cold]
    fn take_slow(&self, key: usize) -> (usize, bool) {
        // Sync point (both swaps): Acquire pairs with the Release store of the lane's
        // previous holder (in `give_back`), so its use of the intent word happens before
        // ours. Lane 0 had no previous holder: its word was last written at attach, which
        // happens before any use of the handle.
        if self.owner.load(Ordering::Relaxed) == 0 && !self.used[0].swap(true, Ordering::Acquire) {
            self.owner.store(key, Ordering::Relaxed);
            return (0, false);
        }
        let backoff = Backoff::new();
        loop {
            for (lane, used) in self.used.iter().enumerate().skip(1) {
                if !used.load(Ordering::Relaxed) && !used.swap(true, Ordering::Acquire) {
                    return (lane, true);
                }
            }
            backoff.snooze();
        }
    }

    /// Gives back lane `index` (taken with `true` from [`Lanes::take`]).
    #[inline]
    pub(crate) fn give_back(&self, index: usize) {
        self.used[index].store(false, Ordering::Release);
    }

    /// Whether lane `index` is in use (tests).
    #[cfg(test)]
    pub(crate) fn in_use(&self, index: usize) -> bool {
        self.used[index].load(Ordering::Relaxed)
    }
}
