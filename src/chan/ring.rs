//! The bounded ring: a lock-free MPMC queue of stamped slots, generic over where its
//! positions and stamps live.
//!
//! This is the one implementation of the bounded algorithm. The in-process bounded
//! channel ([`super::array`]) keeps it on the heap; the shared-memory channel keeps it in
//! a mapped segment. Both call the same reserve/commit steps below, so loom checks the
//! algorithm once.
//!
//! # Positions and stamps
//!
//! `head` and `tail` are positions that only grow: `lap | index`, where `index` is below
//! `mark_bit` and the lap counts in units of `one_lap = 2 * mark_bit`. The `mark_bit` in
//! `tail` means *disconnected*. Each slot carries a stamp:
//! - `stamp == tail`: the slot is free for the sender claiming position `tail`;
//! - `stamp == head + 1`: the slot holds the message for position `head`;
//! - anything else: another thread is ahead of us, reload and retry.
//!
//! Stamps never carry `mark_bit` (an index stays below `cap < mark_bit`), except in
//! shared storage, where `head + 1 + mark_bit` is a *skip*: a slot published on behalf
//! of a sender that died before committing it (see [`Ring::reclaim_send`]). Receivers
//! claim and free a skip like a message, without reading it.
//!
//! # Reserve, then commit
//!
//! A sender claims a slot by moving `tail` forward with a CAS ([`Ring::start_send`]), writes
//! its payload, then publishes by storing the stamp ([`Ring::commit_send`]). A receiver
//! claims by moving `head` ([`Ring::start_recv`]), reads, and frees the slot for the next
//! lap ([`Ring::commit_recv`]). Between claim and commit the slot belongs to the claimant
//! alone; the peer side observes it as [`Stall::Busy`] and waits.
//!
//! When the storage is shared with other processes ([`RingStorage::SHARED`]), commits are
//! CASes rather than stores, so a survivor that has reclaimed the slot of a dead claimant
//! wins cleanly and the late claimant learns that its slot is gone.
//!
//! # Shared storage: hostile memory and dead claimants
//!
//! For shared storage only (the branches are compiled out for the heap):
//! - a claim loop gives up after [`SHARED_SPIN_LIMIT`] failed rounds and reports
//!   [`Stall::Busy`]; every round that neither claims nor returns counts, whether its
//!   stamp was neither "ours" nor "the previous lap's" or its CAS lost. A peer that
//!   corrupts positions or stamps, or keeps moving a position so that every CAS loses,
//!   can therefore never spin a caller forever (the counting is on the failure branches
//!   only: a claim that succeeds at once pays nothing for it);
//! - [`Ring::len_untrusted`] never panics or loops on corrupted positions;
//! - [`Ring::reclaim_send`] and [`Ring::reclaim_recv`] finish, on behalf of a claimant
//!   known to be dead, a slot it claimed but never committed: a dead sender's slot is
//!   published as a skip, a dead receiver's slot is freed for the next lap. Both are
//!   single CASes on the stamp that only succeed while the slot is still in its claimed
//!   state, so they are idempotent and lose cleanly against a late commit, and a late
//!   commit loses cleanly against them: its CAS fails, and the claimant learns that its
//!   message was not delivered (a sender then retries at a new position).

use crate::sync::{AtomicUsize, Ordering, fence, load_seqcst};

/// The most free slots a sender waiting on a full ring spins for ([`Ring::send_batch_free`]);
/// more gains little once sender and receiver are that far apart.
const MAX_SEND_BATCH: usize = 512;

/// Where a ring keeps its two positions and its slot stamps.
///
/// # Safety
/// `stamp(i)` must return the same atomic for the same `i` for the ring's lifetime and
/// distinct atomics for distinct `i < capacity`.
pub(crate) unsafe trait RingStorage {
    /// Whether other processes share the storage: commits become CASes.
    const SHARED: bool;
    /// The receivers' position.
    fn head(&self) -> &AtomicUsize;
    /// The senders' position, with the disconnect mark bit.
    fn tail(&self) -> &AtomicUsize;
    /// The stamp of slot `index`, or `None` if `index` is out of range (only possible when
    /// hostile memory corrupted a position).
    fn stamp(&self, index: usize) -> Option<&AtomicUsize>;

    /// Prepares slot `index` for a claim that is about to be tried (shared storage
    /// prefetches the slot's lines for writing); nothing by default. Called by
    /// [`Ring::may_claim_send`] and [`Ring::may_claim_recv`] only, so once per attempt of
    /// the callers that use them; the claims, commits and waiters' checks themselves
    /// leave the slot alone.
    #[inline]
    fn prepare_claim(&self, index: usize) {
        let _ = index;
    }
}

/// Why an operation could not claim a slot right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// Full (for senders) or empty (for receivers).
    Blocked,
    /// The ring is marked disconnected (for receivers: and empty).
    Disconnected,
    /// The slot at our position is claimed by a peer that has not committed yet.
    Busy,
    /// A position or stamp read from storage is out of range (shared storage only).
    Corrupt,
}

/// How many failed rounds (a stamp that matches nothing expected, or a lost CAS) a claim
/// loop over shared storage makes before reporting [`Stall::Busy`] (see the module
/// docs).
pub(crate) const SHARED_SPIN_LIMIT: u32 = 1 << 10;

/// The outcome of [`Ring::reclaim_send`] / [`Ring::reclaim_recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reclaim {
    /// Nobody has claimed the position yet (the dead peer only intended to).
    Unclaimed,
    /// The slot is no longer in the claimed state: committed, or reclaimed by another
    /// survivor, or moved on to a later lap. Nothing to do.
    Settled,
    /// A live peer records the same claim: it may be the real claimant, so the slot was
    /// left alone. Try again later.
    Pending,
    /// This call reclaimed the slot.
    Reclaimed,
}

/// A claimed slot: the slot index, its stamp word and the stamp that commits it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    /// The slot's index, below the ring's capacity.
    pub(crate) index: usize,
    /// The position claimed.
    pub(crate) pos: usize,
    /// The stamp the commit stores.
    stamp: usize,
    /// The slot's stamp word, as the claim found it in the storage: the commit and
    /// [`Ring::still_claimed`] use it rather than look the index up again (a bounds
    /// check and an address computation each, on the shared ring).
    stamp_at: &'a AtomicUsize,
    /// A receiver's claim of a skip (shared storage only): there is nothing to read.
    pub(crate) skipped: bool,
}

impl<'a> Token<'a> {
    /// A sender's claim of position `pos` at slot `index`: its commit publishes the
    /// message for that position (`pos + 1`).
    #[inline]
    fn send(index: usize, pos: usize, stamp_at: &'a AtomicUsize) -> Self {
        Token {
            index,
            pos,
            stamp: pos + 1,
            stamp_at,
            skipped: false,
        }
    }
}

/// A ring's position encoding (see the module docs): its capacity and lap geometry,
/// apart from any storage, so that code reading a ring it does not own (`shm::inspect`,
/// over a read-only map) walks positions as the ring does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Laps {
    cap: usize,
    one_lap: usize,
    mark_bit: usize,
}

impl Laps {
    /// The geometry of a ring of `cap` slots (`cap > 0`).
    pub(crate) const fn new(cap: usize) -> Laps {
        let mark_bit = (cap + 1).next_power_of_two();
        Laps {
            cap,
            one_lap: mark_bit * 2,
            mark_bit,
        }
    }

    /// The number of slots.
    pub(crate) const fn capacity(&self) -> usize {
        self.cap
    }

    /// How many positions lie from `head` to `tail` (which may carry the mark bit), the
    /// ring's length for that pair of positions: `None` if either index is out of range
    /// (corrupted memory). Never panics, for any inputs.
    pub(crate) fn queued(&self, head: usize, tail: usize) -> Option<usize> {
        let hix = head & (self.mark_bit - 1);
        let tix = tail & (self.mark_bit - 1);
        if hix >= self.cap || tix >= self.cap {
            return None;
        }
        Some(if hix < tix {
            tix - hix
        } else if hix > tix {
            self.cap - hix + tix
        } else if tail & !self.mark_bit == head {
            0
        } else {
            self.cap
        })
    }

    /// The position after `pos` (without the mark bit, and with its index below `cap`):
    /// the next index, or index 0 of the next lap. [`Ring::advance`] by one, in the form
    /// every claim uses: `pos + 1` unless the lap ends.
    #[inline]
    pub(crate) fn next(&self, pos: usize) -> usize {
        if (pos & (self.mark_bit - 1)) + 1 < self.cap {
            pos + 1
        } else {
            (pos & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// The slot index of position `pos`, if `pos` is a position this ring can hold
    /// (no mark bit, an index below the capacity): `None` only for corrupted memory.
    #[inline]
    pub(crate) fn index_of(&self, pos: usize) -> Option<usize> {
        let index = pos & (self.one_lap - 1);
        (index < self.cap).then_some(index)
    }

    /// How many positions `to` lies past `from`, if both are positions this ring can
    /// hold and `to` is at most a lap past `from`; `None` otherwise (corrupted memory).
    /// Wrapping arithmetic on the positions' sequence numbers (`lap × cap + index`):
    /// never panics, for any inputs.
    #[inline]
    pub(crate) fn distance(&self, from: usize, to: usize) -> Option<usize> {
        let d = self.sequence(to)?.wrapping_sub(self.sequence(from)?);
        (d <= self.cap).then_some(d)
    }

    /// The sequence number of position `pos` (`lap × cap + index`, wrapping): how many
    /// positions come before it since the ring was made. `None` for a position this ring
    /// cannot hold (corrupted memory); never panics.
    #[inline]
    pub(crate) fn sequence(&self, pos: usize) -> Option<usize> {
        // `one_lap` is a power of two: a shift, not a division (a 64-bit `div` costs tens
        // of cycles, and this runs on every send).
        let lap_shift = self.one_lap.trailing_zeros();
        let index = self.index_of(pos)?;
        Some(
            (pos >> lap_shift)
                .wrapping_mul(self.cap)
                .wrapping_add(index),
        )
    }
}

/// The ring's constants plus its storage.
#[derive(Debug)]
pub(crate) struct Ring<S> {
    storage: S,
    laps: Laps,
    /// How many free slots a sender waiting on a full ring spins for (≥ 1).
    send_batch: usize,
}

/// The initial stamp of slot `index`: free for the first lap's sender.
pub(crate) const fn initial_stamp(index: usize) -> usize {
    index
}

impl<S: RingStorage> Ring<S> {
    /// Wraps storage whose `head` and `tail` are 0 and whose stamps are
    /// [`initial_stamp`]s (or that an earlier `Ring` with the same `cap` left behind).
    pub(crate) fn new(storage: S, cap: usize) -> Self {
        assert!(cap > 0, "a ring needs at least one slot");
        Ring {
            storage,
            laps: Laps::new(cap),
            send_batch: (cap / 2).clamp(1, MAX_SEND_BATCH),
        }
    }

    /// The storage.
    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    /// The number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.laps.cap
    }

    /// `stamp` without the skip mark (see the module docs). Only shared storage publishes
    /// skips, so for the heap this is the identity and compiles to nothing.
    #[inline]
    fn unskip(&self, stamp: usize) -> usize {
        if S::SHARED {
            stamp & !self.laps.mark_bit
        } else {
            stamp
        }
    }

    /// A receiver's claim of position `pos` at slot `index`, whose stamp read `stamp` (a
    /// message, or a skip): its commit frees the slot for the next lap's sender.
    #[inline]
    fn recv_token<'a>(
        &self,
        index: usize,
        pos: usize,
        stamp: usize,
        stamp_at: &'a AtomicUsize,
    ) -> Token<'a> {
        Token {
            index,
            pos,
            stamp: pos.wrapping_add(self.laps.one_lap),
            stamp_at,
            skipped: stamp != pos + 1,
        }
    }

    /// For shared storage: counts one more failed round of a claim loop (a CAS that lost,
    /// or a stamp that matched nothing expected) in `spins` and says whether the loop must
    /// give up ([`SHARED_SPIN_LIMIT`]). For the heap it is `false`, and compiles to
    /// nothing: there every round that fails does so because another claim succeeded.
    #[inline(always)]
    fn give_up(spins: &mut u32) -> bool {
        if S::SHARED {
            *spins += 1;
            *spins > SHARED_SPIN_LIMIT
        } else {
            false
        }
    }

    /// The position after `pos` ([`Laps::next`]).
    #[inline]
    fn next(&self, pos: usize) -> usize {
        self.laps.next(pos)
    }

    /// The position `n` after `pos` (`n <= cap`; `pos` without the mark bit), wrapping
    /// into the next lap past the last index.
    #[inline]
    fn advance(&self, pos: usize, n: usize) -> usize {
        debug_assert!(n <= self.laps.cap);
        let index = (pos & (self.laps.mark_bit - 1)) + n;
        let lap = pos & !(self.laps.one_lap - 1);
        if index < self.laps.cap {
            lap + index
        } else {
            lap.wrapping_add(self.laps.one_lap) + (index - self.laps.cap)
        }
    }

    /// One attempt of [`Ring::start_send`] for the common case only: the slot at `tail`
    /// is free and the CAS wins. `None` for anything else (full, a lost race,
    /// disconnection, corruption), which `start_send` then sorts out from the start.
    /// Written out apart from the loop so that a caller that inlines it pays none of the
    /// loop's setup (the shared ring's protocol; for the heap ring the compiler already
    /// makes the loop's first pass as short).
    #[inline]
    pub(crate) fn try_claim_send(&self, mut intent: impl FnMut(usize)) -> Option<Token<'_>> {
        let tail_pos = self.storage.tail();
        let tail = tail_pos.load(Ordering::Relaxed);
        let index = tail & (self.laps.mark_bit - 1);
        if tail & self.laps.mark_bit != 0 {
            return None;
        }
        let stamp_at = self.storage.stamp(index)?;
        // Sync point and SeqCst: as in `start_send`.
        if stamp_at.load(Ordering::Acquire) != tail {
            return None;
        }
        intent(tail);
        tail_pos
            .compare_exchange_weak(tail, self.next(tail), Ordering::SeqCst, Ordering::Relaxed)
            .ok()?;
        Some(Token::send(index, tail, stamp_at))
    }

    /// Claims the slot at `tail` for a sender. `intent(pos)` runs before each CAS that
    /// tries to claim `pos` (the shared ring records it for crash recovery). For shared
    /// storage, a slot that still holds the previous lap's message is [`Stall::Blocked`]
    /// whether or not a receiver is reading it, and the claim reports [`Stall::Busy`]
    /// after [`SHARED_SPIN_LIMIT`] failed rounds (inconsistent stamps or lost CASes).
    #[inline]
    pub(crate) fn start_send(&self, mut intent: impl FnMut(usize)) -> Result<Token<'_>, Stall> {
        let tail_pos = self.storage.tail();
        let mut tail = tail_pos.load(Ordering::Relaxed);
        let mut spins = 0u32;
        loop {
            if tail & self.laps.mark_bit != 0 {
                return Err(Stall::Disconnected);
            }
            let index = tail & (self.laps.mark_bit - 1);
            let Some(stamp_at) = self.storage.stamp(index) else {
                return Err(Stall::Corrupt);
            };
            // Sync point: Acquire pairs with the receiver's Release in `commit_recv`, so
            // the previous lap's read of this slot happens before our write.
            let stamp = stamp_at.load(Ordering::Acquire);
            if stamp == tail {
                intent(tail);
                // SeqCst: the claim is the send's linearization point; receivers deciding
                // "empty" load `tail` after a SeqCst fence, and wakers load the waiter
                // count after this RMW (see `chan::signal`).
                match tail_pos.compare_exchange_weak(
                    tail,
                    self.next(tail),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        return Ok(Token::send(index, tail, stamp_at));
                    }
                    Err(t) => {
                        // Another sender claimed `tail` first, or (shared storage) a
                        // peer keeps moving it: bounded, see the module docs.
                        if Self::give_up(&mut spins) {
                            return Err(Stall::Busy);
                        }
                        tail = t;
                    }
                }
            } else if self.unskip(stamp).wrapping_add(self.laps.one_lap) == tail + 1 {
                // The slot still holds the previous lap's message (or skip).
                if S::SHARED {
                    // Full, or a receiver is still reading: shared storage says `Blocked`
                    // from the stamp alone. Loading `head`, the word every receive
                    // writes, would take its cache line away from the receivers each time
                    // a sender finds the ring full; its waiters judge by the stamp too
                    // (`may_proceed`).
                    return Err(Stall::Blocked);
                }
                // SeqCst: ordered after a waiting sender's registration (`chan::signal`).
                let head = load_seqcst(self.storage.head());
                if head.wrapping_add(self.laps.one_lap) == tail {
                    return Err(Stall::Blocked);
                }
                // A receiver has claimed it and is still reading.
                return Err(Stall::Busy);
            } else {
                // Another sender moved past us; catch up.
                if Self::give_up(&mut spins) {
                    return Err(Stall::Busy);
                }
                crate::sync::Backoff::new().spin();
                tail = tail_pos.load(Ordering::Relaxed);
            }
        }
    }

    /// Whether a sender (`sender`) or receiver may make progress with a claim now,
    /// judged by its side's position and the stamp of the slot there alone: `false` while
    /// that slot plainly cannot be claimed (for a sender: it still holds the previous
    /// lap's message, possibly being read; for a receiver: nothing is published in it,
    /// though a sender may have claimed it), `true` otherwise, including for anything
    /// unexpected (the claim then finds out). Two relaxed loads, and neither is of the
    /// other side's position: the full and empty checks of [`Ring::start_send`] and
    /// [`Ring::start_recv`] load `head` (`tail`), the word every receive (send) writes,
    /// which takes its cache line away from the other side.
    ///
    /// As the re-check of a waiter (after registering and a SeqCst fence, see
    /// `shm::futex`), a `false` here is as good as a claim's: a commit whose waker missed
    /// the registration is ordered before the fence, so the stamp load sees it. A stale
    /// position (another thread of this side moved on) only ever gives `true`: the slot at
    /// an old position holds a stamp of a later state, never the one looked for.
    #[inline]
    pub(crate) fn may_proceed(&self, sender: bool) -> bool {
        if sender {
            return self.is_free_ahead(0);
        }
        self.published_at_head()
            .is_none_or(|(_, published)| published)
    }

    /// The index of the slot at `head` and whether it no longer reads as empty for this
    /// lap (a message or skip is published there, or anything unexpected); `None` for an
    /// index out of range. Two relaxed loads: `head` and the slot's stamp.
    #[inline]
    fn published_at_head(&self) -> Option<(usize, bool)> {
        let pos = self.storage.head().load(Ordering::Relaxed);
        let index = pos & (self.laps.mark_bit - 1);
        let stamp = self.storage.stamp(index)?;
        // Nothing published at `pos` yet (the same test as in `start_recv`).
        Some((index, stamp.load(Ordering::Relaxed) != pos))
    }

    /// [`Ring::may_proceed`] for a sender about to claim: storage that prepares slots for
    /// claims ([`RingStorage::prepare_claim`]) prepares the slot at `tail` first, whether
    /// or not it is free, so that the stamp load brings its line over writable at once.
    /// Otherwise the check would bring the line over shared and the claim that follows
    /// would have to take it from the receiver a second time to write it.
    #[inline]
    // Only the shm endpoints use it, and loom builds leave them out.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn may_claim_send(&self) -> bool {
        let tail = self.storage.tail().load(Ordering::Relaxed);
        self.storage.prepare_claim(tail & (self.laps.mark_bit - 1));
        self.is_free_at(tail, 0)
    }

    /// [`Ring::may_proceed`] for a receiver about to claim: if a message is published at
    /// `head`, the slot is prepared for the claim ([`RingStorage::prepare_claim`]). Only
    /// then: a slot that a sender may still be writing is left alone.
    #[inline]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn may_claim_recv(&self) -> bool {
        let Some((index, published)) = self.published_at_head() else {
            return true;
        };
        if published {
            self.storage.prepare_claim(index);
        }
        published
    }

    /// Whether the slot `ahead` positions past `tail` (`ahead < cap`) no longer holds
    /// the previous lap's message, or `tail` is marked disconnected; `true` for anything
    /// unexpected. Like [`Ring::may_proceed`] (which is `ahead == 0` for a sender), two
    /// relaxed loads that leave the receivers' lines alone: the sender's own `tail`, and
    /// the stamp of a slot that no receiver writes until it gets there. Receivers free
    /// slots in order, so `true` means (barring a stale `tail`) that `ahead + 1` slots
    /// are free.
    #[inline]
    pub(crate) fn is_free_ahead(&self, ahead: usize) -> bool {
        self.is_free_at(self.storage.tail().load(Ordering::Relaxed), ahead)
    }

    /// [`Ring::is_free_ahead`] from a `tail` already loaded.
    #[inline]
    fn is_free_at(&self, tail: usize, ahead: usize) -> bool {
        if tail & self.laps.mark_bit != 0 {
            return true;
        }
        // `advance(tail, 0)` is `tail` for any tail a ring can hold; skipping it keeps the
        // checks before every claim (`may_claim_send`, `may_proceed`) a few loads.
        let pos = if ahead == 0 {
            tail
        } else {
            self.advance(tail, ahead)
        };
        let index = pos & (self.laps.mark_bit - 1);
        let Some(stamp) = self.storage.stamp(index) else {
            return true;
        };
        // Still the previous lap's message (the same test as in `start_send`).
        self.unskip(stamp.load(Ordering::Relaxed))
            .wrapping_add(self.laps.one_lap)
            != pos.wrapping_add(1)
    }

    /// For a sender waiting on a full ring: whether a batch of slots (half the ring, at
    /// most [`MAX_SEND_BATCH`]) is free again. Senders that retry only then, while they
    /// spin, refill the ring in batches instead of trailing the receiver slot by slot,
    /// which makes them fight over each slot's cache line (see `chan::array`'s module
    /// docs for the measurements). A hint, like [`Ring::is_free_ahead`]. With a batch of
    /// one it still asks the stamp rather than leaving the test to the claim: a claim that
    /// finds the ring full loads `head` to tell full from a read in progress, and a sender
    /// polling that way would take `head`'s line from the receiver on every poll.
    #[inline]
    pub(crate) fn send_batch_free(&self) -> bool {
        // Slots are freed in order, so the batch's last slot being free means all are.
        self.is_free_ahead(self.send_batch - 1)
    }

    /// Publishes a slot claimed by [`Ring::start_send`] after its payload was written.
    /// Returns `false` only for shared storage, when a survivor reclaimed the slot because
    /// it took this process for dead; the payload was then not delivered.
    #[inline]
    pub(crate) fn commit_send(&self, token: Token<'_>) -> bool {
        self.commit(token, token.pos)
    }

    /// Whether the slot of a claim that [`Ring::start_send`] made is still claimed by it.
    /// For shared storage only: `false` once a survivor that took this process for dead
    /// has published a skip in it; writing a payload there would then be in vain (the
    /// commit fails) and could race the next lap's sender.
    #[inline]
    pub(crate) fn still_claimed(&self, token: Token<'_>) -> bool {
        token.stamp_at.load(Ordering::Relaxed) == token.pos
    }

    /// One attempt of [`Ring::start_recv`] for the common case only: a message (or skip)
    /// is published at `head` and the CAS wins; `None` for anything else. See
    /// [`Ring::try_claim_send`].
    #[inline]
    pub(crate) fn try_claim_recv(&self, mut intent: impl FnMut(usize)) -> Option<Token<'_>> {
        let head_pos = self.storage.head();
        let head = head_pos.load(Ordering::Relaxed);
        let index = head & (self.laps.mark_bit - 1);
        let stamp_at = self.storage.stamp(index)?;
        // Sync point: as in `start_recv`.
        let stamp = stamp_at.load(Ordering::Acquire);
        if head + 1 != self.unskip(stamp) {
            return None;
        }
        intent(head);
        head_pos
            .compare_exchange_weak(head, self.next(head), Ordering::SeqCst, Ordering::Relaxed)
            .ok()?;
        Some(self.recv_token(index, head, stamp, stamp_at))
    }

    /// Claims the slot at `head` for a receiver; `intent` as in [`Ring::start_send`].
    #[inline]
    pub(crate) fn start_recv(&self, intent: impl FnMut(usize)) -> Result<Token<'_>, Stall> {
        self.start_recv_if(intent, || true)
    }

    /// [`Ring::start_recv`] for a receiver that may claim only while `open()` says so:
    /// `open` is asked before each claim CAS, after the load of the `head` that the CAS
    /// expects, and before reporting [`Stall::Busy`] (a claimed slot still being written,
    /// which the caller would wait for), and a `false` stops the claim with
    /// [`Stall::Blocked`] (the caller tells that from an empty ring by what its `open`
    /// saw). Every load of `head` that a CAS
    /// uses is Acquire (so is a failed CAS's), so `open` sees whatever the thread whose
    /// claim moved `head` to that value wrote before its claim: the mailbox's inbox
    /// relies on it (`mailbox::state`, "The inbox and the messages aside").
    #[inline]
    pub(crate) fn start_recv_if(
        &self,
        mut intent: impl FnMut(usize),
        mut open: impl FnMut() -> bool,
    ) -> Result<Token<'_>, Stall> {
        let head_pos = self.storage.head();
        let mut head = head_pos.load(Ordering::Acquire);
        let mut spins = 0u32;
        loop {
            let index = head & (self.laps.mark_bit - 1);
            let Some(stamp_at) = self.storage.stamp(index) else {
                return Err(Stall::Corrupt);
            };
            // Sync point: Acquire pairs with the sender's Release in `commit_send`, so the
            // payload written before the commit is visible to our read.
            let stamp = stamp_at.load(Ordering::Acquire);
            if head + 1 == self.unskip(stamp) {
                if !open() {
                    return Err(Stall::Blocked);
                }
                intent(head);
                match head_pos.compare_exchange_weak(
                    head,
                    self.next(head),
                    Ordering::SeqCst,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        return Ok(self.recv_token(index, head, stamp, stamp_at));
                    }
                    Err(h) => {
                        // As in `start_send`.
                        if Self::give_up(&mut spins) {
                            return Err(Stall::Busy);
                        }
                        head = h;
                    }
                }
            } else if stamp == head {
                // Nothing published here yet. SeqCst: either we see a sender's claim of
                // this position, or that sender sees our waiter registration.
                let tail = load_seqcst(self.storage.tail());
                if tail & !self.laps.mark_bit == head {
                    return Err(if tail & self.laps.mark_bit != 0 {
                        Stall::Disconnected
                    } else {
                        Stall::Blocked
                    });
                }
                // A sender has claimed it and is still writing: the caller waits for the
                // write, unless its gate closed meanwhile (it then has another way).
                if !open() {
                    return Err(Stall::Blocked);
                }
                return Err(Stall::Busy);
            } else {
                if Self::give_up(&mut spins) {
                    return Err(Stall::Busy);
                }
                crate::sync::Backoff::new().spin();
                head = head_pos.load(Ordering::Acquire);
            }
        }
    }

    /// How many positions receivers have claimed since the ring was made: the sequence
    /// number of `head` ([`Laps::sequence`]; 0 for a corrupted one, which only shared
    /// storage can hold). SeqCst: a waiter's re-check in the mailbox's argument (its
    /// step S) loads it after registering.
    pub(crate) fn received(&self) -> usize {
        self.laps
            .sequence(load_seqcst(self.storage.head()))
            .unwrap_or(0)
    }

    /// Frees a slot claimed by [`Ring::start_recv`] after its payload was read, for the
    /// next lap's sender. Returns `false` only for shared storage, when a survivor
    /// reclaimed the slot first (the payload read may then be torn and must be dropped).
    #[inline]
    pub(crate) fn commit_recv(&self, token: Token<'_>) -> bool {
        self.commit(token, self.published(token.pos, token.skipped))
    }

    /// The stamp of a slot published at `pos`: a message, or a skip.
    #[inline]
    fn published(&self, pos: usize, skipped: bool) -> usize {
        if skipped {
            pos + 1 + self.laps.mark_bit
        } else {
            pos + 1
        }
    }

    #[inline]
    fn commit(&self, token: Token<'_>, expected: usize) -> bool {
        let stamp_at = token.stamp_at;
        // Sync point: Release publishes the payload access before the stamp (paired with
        // the Acquire stamp loads in `start_send`/`start_recv`). For shared storage the
        // commit is a SeqCst CAS: the waker's no-lost-wake-up argument (`shm::futex`)
        // orders its waiter-count loads after it in the SeqCst total order, without a
        // fence of its own.
        if S::SHARED {
            stamp_at
                .compare_exchange(expected, token.stamp, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        } else {
            stamp_at.store(token.stamp, Ordering::Release);
            true
        }
    }

    /// Marks the ring disconnected; returns whether this call did it.
    pub(crate) fn disconnect(&self) -> bool {
        self.storage
            .tail()
            .fetch_or(self.laps.mark_bit, Ordering::SeqCst)
            & self.laps.mark_bit
            == 0
    }

    /// Whether the ring is marked disconnected.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.storage.tail().load(Ordering::SeqCst) & self.laps.mark_bit != 0
    }

    /// The number of messages queued (claimed slots included).
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.storage.tail().load(Ordering::SeqCst);
            let head = self.storage.head().load(Ordering::SeqCst);
            if self.storage.tail().load(Ordering::SeqCst) != tail {
                continue;
            }
            // Always `Some` for positions this ring wrote.
            return self.laps.queued(head, tail).unwrap_or(0);
        }
    }

    /// [`Ring::len`] for storage that another process may corrupt: reads each position
    /// once, never panics and never loops, and returns at most the capacity. A
    /// consistent snapshot is not guaranteed (nor needed: the value is a hint).
    pub(crate) fn len_untrusted(&self) -> usize {
        let tail = self.storage.tail().load(Ordering::SeqCst);
        let head = self.storage.head().load(Ordering::SeqCst);
        self.laps.queued(head, tail).unwrap_or(0)
    }

    /// Shared storage only: publishes, on behalf of a sender that died between claiming
    /// position `pos` and committing it, the slot as a skip (whatever the dead sender had
    /// written: its send never returned, so its message was never promised).
    ///
    /// `live_claim()` must report whether any live peer records a claim of `pos` (its
    /// `intent`). The steps, and why a live claimant is never robbed:
    /// 1. `tail` is loaded with Acquire: if `pos` is not behind it, nobody claimed `pos`
    ///    ([`Reclaim::Unclaimed`]). Otherwise the load synchronizes with the claiming CAS
    ///    (or a later RMW of its release sequence), so the claimant's `intent(pos)`, written
    ///    before that CAS, is visible to step 2.
    /// 2. If the stamp is no longer `pos` the slot was committed or reclaimed
    ///    ([`Reclaim::Settled`]). If `live_claim()` sees a live intent for `pos`, a live
    ///    claimant may be writing ([`Reclaim::Pending`]).
    /// 3. A SeqCst fence, then the stamp is re-checked. A live claimant clears its intent
    ///    only after its commit, and writes its intent word with Release stores only, so
    ///    if step 2 read the cleared intent (or anything written to that word later), the
    ///    fence synchronizes with that store: the commit happens before this re-check,
    ///    which then sees the stamp moved and reports [`Reclaim::Settled`].
    /// 4. A CAS of the stamp from `pos` to the skip. It fails if another survivor, or
    ///    the claimant itself, got there first ([`Reclaim::Settled`]). A claimant wrongly
    ///    taken for dead whose commit comes later finds its CAS failing, and retries its
    ///    message at a new position: delivered exactly once either way.
    pub(crate) fn reclaim_send(&self, pos: usize, live_claim: impl FnOnce() -> bool) -> Reclaim {
        let tail = self.storage.tail().load(Ordering::Acquire) & !self.laps.mark_bit;
        if pos >= tail {
            return Reclaim::Unclaimed;
        }
        let index = pos & (self.laps.mark_bit - 1);
        let Some(stamp_at) = self.storage.stamp(index) else {
            return Reclaim::Settled;
        };
        if stamp_at.load(Ordering::Relaxed) != pos {
            return Reclaim::Settled;
        }
        if live_claim() {
            return Reclaim::Pending;
        }
        fence(Ordering::SeqCst);
        if stamp_at.load(Ordering::Acquire) != pos {
            return Reclaim::Settled;
        }
        // Sync point: Release, as a commit's (a skip carries no payload, but the slot's
        // chain of Release stamps and Acquire claims stays the same for every state).
        match stamp_at.compare_exchange(
            pos,
            self.published(pos, true),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Reclaim::Reclaimed,
            Err(_) => Reclaim::Settled,
        }
    }

    /// Shared storage only: frees, on behalf of a receiver that died between claiming
    /// position `pos` and committing it, the slot for the next lap's sender. The message
    /// it held is lost. The steps mirror [`Ring::reclaim_send`], with `head` for `tail`
    /// and the claimed stamp `pos + 1` (or the skip, which receivers claim too).
    pub(crate) fn reclaim_recv(&self, pos: usize, live_claim: impl FnOnce() -> bool) -> Reclaim {
        let head = self.storage.head().load(Ordering::Acquire);
        if pos >= head {
            return Reclaim::Unclaimed;
        }
        let index = pos & (self.laps.mark_bit - 1);
        let Some(stamp_at) = self.storage.stamp(index) else {
            return Reclaim::Settled;
        };
        let claimed = stamp_at.load(Ordering::Relaxed);
        if self.unskip(claimed) != pos.wrapping_add(1) {
            return Reclaim::Settled;
        }
        if live_claim() {
            return Reclaim::Pending;
        }
        fence(Ordering::SeqCst);
        if stamp_at.load(Ordering::Acquire) != claimed {
            return Reclaim::Settled;
        }
        // Sync point: Release, as in `commit_recv` (the dead receiver's reads are over).
        match stamp_at.compare_exchange(
            claimed,
            pos.wrapping_add(self.laps.one_lap),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Reclaim::Reclaimed,
            Err(_) => Reclaim::Settled,
        }
    }

    /// Takes every published message out of the ring once no receiver is left, calling
    /// `discard(index)` for each so the caller can drop its payload. Waits for senders
    /// that claimed a slot before the disconnect to finish writing it.
    ///
    /// Progress is published before each `discard`: the slot is freed and `head` moved
    /// past it first, so if `discard` panics (a message's `Drop` is user code) the ring
    /// is consistent, the slot is never handed to `discard` again, and a later call
    /// resumes with the next message. Freeing the slot before its payload is dropped is
    /// safe because the ring is disconnected: no sender can claim the slot again.
    ///
    /// Must only run after [`Ring::disconnect`] (no new claims) and with no receiver
    /// running concurrently.
    pub(crate) fn discard_all(&self, mut discard: impl FnMut(usize)) {
        let tail = self.storage.tail().load(Ordering::SeqCst) & !self.laps.mark_bit;
        let mut head = self.storage.head().load(Ordering::Relaxed);
        let backoff = crate::sync::Backoff::new();
        while head != tail {
            let index = head & (self.laps.mark_bit - 1);
            let Some(stamp_at) = self.storage.stamp(index) else {
                break;
            };
            let stamp = stamp_at.load(Ordering::Acquire);
            if self.unskip(stamp) == head + 1 {
                stamp_at.store(head.wrapping_add(self.laps.one_lap), Ordering::Release);
                let pos = head;
                head = self.next(head);
                self.storage.head().store(head, Ordering::Release);
                if stamp == pos + 1 {
                    discard(index);
                }
            } else {
                // A sender claimed this position before the disconnect and is writing.
                backoff.snooze();
            }
        }
        self.storage.head().store(head, Ordering::Release);
    }
}

/// Position arithmetic for the single-producer mode of the shared ring
/// (`shm::spsc`), which keeps this ring's positions, stamps and layout but claims and
/// frees slots its own way.
// The shm endpoints and the loom API use these; other loom builds leave them out.
#[cfg_attr(loom, allow(dead_code))]
impl<S: RingStorage> Ring<S> {
    /// The slot index of position `pos` ([`Laps::index_of`]).
    #[inline]
    pub(crate) fn index_of(&self, pos: usize) -> Option<usize> {
        self.laps.index_of(pos)
    }

    /// The position after `pos` (see [`Ring::next`]).
    #[inline]
    pub(crate) fn next_pos(&self, pos: usize) -> usize {
        self.next(pos)
    }

    /// How many positions `to` lies past `from` ([`Laps::distance`]).
    #[inline]
    pub(crate) fn distance(&self, from: usize, to: usize) -> Option<usize> {
        self.laps.distance(from, to)
    }

    /// The ring's position encoding.
    pub(crate) fn laps(&self) -> Laps {
        self.laps
    }

    /// How many free slots a sender waiting on a full ring spins for (see
    /// [`Ring::send_batch_free`]).
    #[inline]
    pub(crate) fn send_batch(&self) -> usize {
        self.send_batch
    }
}

#[cfg(test)]
impl<S: RingStorage> Ring<S> {
    /// For tests: asserts that [`Ring::next`], the claims' shortcut, agrees with
    /// `advance(pos, 1)` at every index of `laps` laps.
    pub(crate) fn assert_next_is_advance_by_one(&self, laps: usize) {
        for lap in 0..laps {
            for index in 0..self.laps.cap {
                let pos = lap * self.laps.one_lap + index;
                assert_eq!(
                    self.next(pos),
                    self.advance(pos, 1),
                    "cap {}, pos {pos}",
                    self.laps.cap
                );
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod laps_tests {
    use super::Laps;

    /// `queued` and `distance` count from `head` to `tail` for every pair of positions at
    /// most a lap apart, over three laps (with `tail`'s mark bit, `queued` too), and
    /// `queued` refuses an index out of range.
    #[test]
    fn queued_counts_every_pair() {
        for cap in [1, 3, 4, 7] {
            let laps = Laps::new(cap);
            let mut positions = vec![0usize];
            for _ in 0..3 * cap {
                positions.push(laps.next(*positions.last().unwrap()));
            }
            for (i, &head) in positions.iter().enumerate() {
                for (d, &tail) in positions[i..].iter().take(cap + 1).enumerate() {
                    assert_eq!(laps.queued(head, tail), Some(d), "cap {cap}");
                    assert_eq!(laps.queued(head, tail | laps.mark_bit), Some(d));
                    assert_eq!(laps.distance(head, tail), Some(d));
                }
            }
            assert_eq!(laps.queued(cap, 0), None);
            assert_eq!(laps.queued(0, cap), None);
        }
    }
}
