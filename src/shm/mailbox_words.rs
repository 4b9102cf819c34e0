//! The word protocols of the shared-memory mailbox ([`super::Mailbox`]) that race
//! between processes without its lock, written over [`crate::sync`] so that the loom
//! models (`loom-tests/tests/loom_shm_mailbox.rs`, through `conduit::__loom_shm`) run
//! this very code:
//! - the **robust lock**'s words: the lock word (0 free, else the holder's
//!   [`owner_word`]) and its waiter count; the waiting, sleeping and probing around them
//!   are `mailbox::index::Index::lock`'s;
//! - a request's **reply state** word, which the requester, the replier and a reclaimer
//!   move out of PENDING with [`settle`]: whichever CAS wins decides the exchange; the
//!   requester then moves an outcome to DONE with [`retire`], after which whoever holds
//!   the lock may release the slot.
//!
//! The arguments are in the mailbox's module docs ("The lock, and why it is enough",
//! "Requests").

use crate::sync::{AtomicU32, Ordering};

/// The bits of [`owner_word`] that hold a peer slot + 1.
pub(crate) const OWNER_SLOT: u32 = 0x7f;
/// The bits of a peer slot's generation that [`owner_word`] keeps (above the slot).
const OWNER_GEN: u32 = (1 << 24) - 1;

/// The lock word of the holder in peer slot `slot` (below 127), generation
/// `generation`: never 0.
pub(crate) fn owner_word(slot: usize, generation: u32) -> u32 {
    debug_assert!(slot < OWNER_SLOT as usize);
    ((generation & OWNER_GEN) << 7) | (slot as u32 + 1)
}

/// The robust lock's two words.
#[derive(Clone, Copy)]
pub(crate) struct LockWords<'a> {
    /// 0 when free, else the holder's [`owner_word`].
    pub(crate) word: &'a AtomicU32,
    /// How many threads (of any process) may be asleep on `word`.
    pub(crate) waiters: &'a AtomicU32,
}

impl LockWords<'_> {
    /// Takes the lock if it is free. Sync point: the SeqCst CAS acquires what the
    /// previous holder's release published.
    #[inline]
    pub(crate) fn try_take(&self, me: u32) -> bool {
        self.word
            .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock over from the holder that `held` names (proven gone by the
    /// caller): a CAS from that very value, so that of two survivors that both found
    /// the holder gone, one takes the lock and the other finds it held (by the first).
    #[inline]
    pub(crate) fn take_over(&self, held: u32, me: u32) -> bool {
        held != 0
            && self
                .word
                .compare_exchange(held, me, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// Counts the caller as a sleeper and returns the value to sleep on (the futex
    /// handshake: count, then load; the releaser swaps, then loads the count).
    #[inline]
    pub(crate) fn announce(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.word.load(Ordering::SeqCst)
    }

    /// Undoes [`LockWords::announce`].
    #[inline]
    pub(crate) fn withdraw(&self) {
        self.waiters.fetch_sub(1, Ordering::Release);
    }

    /// Releases the lock; returns whether a sleeper may need a wake-up. Sync point: the
    /// SeqCst swap publishes every write made under the lock, and orders the count's
    /// load after it.
    #[inline]
    pub(crate) fn release(&self) -> bool {
        self.word.swap(0, Ordering::SeqCst);
        self.waiters.load(Ordering::SeqCst) != 0
    }
}

/// Reply states: no answer yet.
pub(crate) const PENDING: u32 = 1;
/// The reply is in the slot's payload; the requester releases the slot.
pub(crate) const REPLIED: u32 = 2;
/// The replier gave up (or was found dead); the requester releases the slot.
pub(crate) const ABANDONED: u32 = 3;
/// The requester stopped waiting (or was found dead); the replier releases the slot.
pub(crate) const GONE: u32 = 4;
/// The requester has read the outcome ([`REPLIED`] or [`ABANDONED`]) and is done with
/// the slot: whoever holds the lock next may release it.
pub(crate) const DONE: u32 = 5;
/// Set in a pending reply state while its requester sleeps on it (or is about to): the
/// replier then issues a futex wake; without it, no system call.
pub(crate) const SLEEPING: u32 = 1 << 8;

/// Moves a pending reply state (with or without [`SLEEPING`]) to `to`: `Ok(sleeper)`
/// when it did, `Err(current)` when the state was not pending (or kept changing: only
/// a hostile peer makes a pending state change more than once, by the requester's
/// setting [`SLEEPING`]). Bounded: at most four CAS attempts.
pub(crate) fn settle(state: &AtomicU32, to: u32) -> Result<bool, u32> {
    let mut cur = state.load(Ordering::SeqCst);
    for _ in 0..4 {
        if cur & !SLEEPING != PENDING {
            return Err(cur);
        }
        match state.compare_exchange(cur, to, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Ok(cur & SLEEPING != 0),
            Err(now) => cur = now,
        }
    }
    Err(cur)
}

/// Marks a pending state (seen as `cur`) as having a sleeper: `true` when the state is
/// now `PENDING | SLEEPING`, so the requester may sleep on that value; `false` when it
/// changed (the caller looks again).
pub(crate) fn mark_sleeping(state: &AtomicU32, cur: u32) -> bool {
    cur == PENDING | SLEEPING
        || (cur == PENDING
            && state
                .compare_exchange(cur, cur | SLEEPING, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok())
}

/// The requester's last step: moves an outcome it has read (`seen`, [`REPLIED`] or
/// [`ABANDONED`]) to [`DONE`]. Sync point: the SeqCst CAS releases the requester's reads
/// of the reply to whoever releases the slot after loading DONE. `false` if the word
/// changed meanwhile (only a hostile peer or a reclaim that found the requester dead
/// changes an outcome): the slot is then left to the reclaim.
pub(crate) fn retire(state: &AtomicU32, seen: u32) -> bool {
    (seen == REPLIED || seen == ABANDONED)
        && state
            .compare_exchange(seen, DONE, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
}
