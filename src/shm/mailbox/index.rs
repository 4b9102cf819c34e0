//! The selection index of a shared-memory mailbox, and its robust lock: the layout in
//! the segment and every operation on it. The argument is in the [module
//! docs](super); this file states, at each step, which words it reads and how they are
//! checked.

use core::ptr::NonNull;
use std::time::Instant;

use rustix::fd::AsFd;

use super::super::futex::{self, Woke};
use super::super::header::{MAX_PEERS, SLOT_LEN};
use super::super::lock::{self, Lock, lock_byte};
use super::super::mailbox_words::LockWords;
pub(crate) use super::super::mailbox_words::{
    ABANDONED, DONE, GONE, OWNER_SLOT, PENDING, REPLIED, SLEEPING, mark_sleeping, owner_word,
    retire, settle,
};
use super::super::ring::ShmSlots;
use super::super::segment::Segment;
use super::super::table::{LIVE, unpack};
use crate::sync::{AtomicU32, AtomicU64, Backoff, Ordering};

/// "No slot": the end of a list (slot indices are below the capacity, at most 2²²).
pub(crate) const NIL: u32 = u32::MAX;

// The control block, at the start of the index region (128 bytes).
/// The lock word: 0 when free, else [`owner_word`] of the holder.
const LOCK: usize = 0;
/// How many threads (of any process) may be asleep on [`LOCK`].
const LOCK_WAITERS: usize = 4;
/// Nonzero once the mailbox is closed.
const CLOSED: usize = 8;
/// Messages queued.
const LEN: usize = 12;
/// [`LEN`]'s offset in the index region, for `shm::inspect`.
pub(crate) const LEN_OFFSET: usize = LEN;
/// Entries in the tag table.
const N_TAGS: usize = 16;
/// Entries in the sender table.
const N_SENDERS: usize = 20;
/// First slot of the free list (chained through the slots' `All` next links).
const FREE_HEAD: usize = 24;
/// The global list (every queued message, oldest first).
const ALL_HEAD: usize = 28;
const ALL_TAIL: usize = 32;
/// [`BUILT`] once the index describes the slots (a new segment's zeroes do not).
const STATE: usize = 36;
/// The next message's sequence number.
const NEXT_SEQ: usize = 40;
/// The held list: slots of requests taken by a replier and not released yet (chained
/// through their `All` links, which they no longer use).
const HELD_HEAD: usize = 48;
const HELD_TAIL: usize = 52;
/// The bytes queued (byte mailboxes: the queued messages' lengths summed; held request
/// slots do not count), at most the layout's `max_bytes`.
const BYTES: usize = 56;
/// [`BYTES`]'s offset in the index region, for `shm::inspect`.
pub(crate) const BYTES_OFFSET: usize = BYTES;
/// The size of the control block; the tag table follows it, then the sender table.
const CONTROL: usize = 128;
/// The value of [`STATE`] once the index is built.
const BUILT: u32 = 0x4d42_5831;

/// One lane record: key (two words), head and tail slot.
const ENTRY: usize = 24;
const E_KEY_HI: usize = 0;
const E_KEY_LO: usize = 8;
const E_HEAD: usize = 16;
const E_TAIL: usize = 20;

// Each slot's mailbox words (after the channel's stamp and length words; see
// `header::MAILBOX_SLOT_CONTROL`).
/// [`QUEUED`] while the slot holds a message, anything else when free.
const S_STATE: usize = 12;
const S_SEQ: usize = 16;
const S_TAG: usize = 24;
const S_FROM_ID: usize = 32;
const S_FROM_PID: usize = 40;
/// For a request, the requester's [`owner_word`]; 0 for a plain message.
const S_REPLY_TO: usize = 44;
/// Three pairs of (prev, next) links, one per [`List`].
const S_LINKS: usize = 48;
/// For a request taken by a replier, the replier's [`owner_word`].
const S_TAKER: usize = 72;
/// For a request, its reply state: [`PENDING`], [`REPLIED`], [`ABANDONED`], [`GONE`]
/// or [`DONE`]; the requester sleeps on it.
const S_RSTATE: usize = 76;
/// The value of a slot's state word while it holds a message.
const QUEUED: u32 = 1;
/// The value of a slot's state word while it holds a request taken by a replier: out of
/// the index, on the held list, until the side that ends the exchange releases it.
const HELD: u32 = 2;

const HELD_LANE: Lane = Lane {
    head: HELD_HEAD,
    tail: HELD_TAIL,
};

const _: () = assert!(S_RSTATE + 4 <= super::super::header::MAILBOX_SLOT_CONTROL);
const _: () = assert!(SLOT_LEN + 4 == S_STATE);

/// The size of the index region of a mailbox of `capacity` slots.
pub(crate) fn index_size(capacity: usize) -> Option<usize> {
    capacity.checked_mul(2 * ENTRY)?.checked_add(CONTROL)
}

/// The lists a slot is on.
#[derive(Clone, Copy)]
enum List {
    All = 0,
    Tag = 1,
    From = 2,
}

/// A lane: the offsets (in the index region) of its head and tail words.
#[derive(Clone, Copy)]
struct Lane {
    head: usize,
    tail: usize,
}

const ALL: Lane = Lane {
    head: ALL_HEAD,
    tail: ALL_TAIL,
};

/// The index (or a slot) says something impossible: a peer wrote garbage, or the
/// holder of the lock died half-way. The cure is [`Locked::rebuild`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// A key of the sender table: (pid, address id).
pub(crate) type Sender = (u32, u64);

/// What a receive selects, with the sender reduced to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Any,
    Tag(u64),
    TagAtMost(u64),
    TagExcept(u64),
    From(Sender),
}

/// A queued message's envelope fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) tag: u64,
    pub(crate) from: Sender,
    /// For a request, the requester's [`owner_word`]; 0 otherwise.
    pub(crate) reply_to: u32,
}

/// The longest a thread waiting for the lock sleeps before it probes the holder.
const LOCK_SLICE: std::time::Duration = std::time::Duration::from_millis(50);

/// The index region of one segment (a mailbox's).
#[derive(Clone, Copy)]
pub(crate) struct Index<'a> {
    seg: &'a Segment,
    /// The region's start (8-aligned) and the bytes mapped from there
    /// ([`Segment::index_region`]): each word's check is one comparison.
    base: NonNull<u8>,
    len: usize,
    cap: u32,
    /// Byte mailboxes: the bound on [`BYTES`] (from the validated layout); others:
    /// `u64::MAX` (their messages count 0 bytes).
    max_bytes: u64,
}

impl<'a> Index<'a> {
    #[inline]
    pub(crate) fn new(seg: &'a Segment) -> Self {
        let layout = seg.layout();
        let (base, len) = seg.index_region();
        Index {
            seg,
            base,
            len,
            cap: layout.capacity as u32,
            max_bytes: if layout.kind.is_bytes() {
                layout.max_bytes as u64
            } else {
                u64::MAX
            },
        }
    }

    /// The bytes queued (a hint, read without the lock).
    pub(crate) fn bytes(&self) -> u64 {
        self.w64(BYTES).load(Ordering::Relaxed)
    }

    /// The bound on [`Index::bytes`] (`u64::MAX` for typed mailboxes).
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The atomic at byte `offset` of the region. Panics if it is not inside the mapping
    /// or not aligned: callers compute offsets from the validated layout.
    #[inline]
    fn word<A>(&self, offset: usize) -> &'a A {
        assert!(offset.is_multiple_of(align_of::<A>()) && offset + size_of::<A>() <= self.len);
        // SAFETY: checked above: inside the mapping (`len` bytes from `base`) and aligned
        // (`base` is 8-aligned, `A` an atomic of at most 8 bytes); the mapping lives as
        // long as the segment borrowed for `'a`, and the index region is only ever
        // accessed atomically (`A` is one of the atomic integer types).
        unsafe { self.base.add(offset).cast::<A>().as_ref() }
    }

    #[inline]
    fn w32(&self, offset: usize) -> &'a AtomicU32 {
        self.word(offset)
    }

    #[inline]
    fn w64(&self, offset: usize) -> &'a AtomicU64 {
        self.word(offset)
    }

    /// The number of messages queued (a hint, clamped to the capacity).
    pub(crate) fn len(&self) -> usize {
        self.w32(LEN).load(Ordering::Relaxed).min(self.cap) as usize
    }

    /// Whether the mailbox is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.w32(CLOSED).load(Ordering::SeqCst) != 0
    }

    /// The sequence number the next message will get (a hint, read without the lock):
    /// it changes with every send, and only then.
    pub(crate) fn next_seq(&self) -> u64 {
        self.w64(NEXT_SEQ).load(Ordering::Relaxed)
    }

    /// Whether nothing is queued, seen without the lock: the lock is free, the index
    /// built and its count 0 (a receive then has nothing to take, and need not take the
    /// lock to learn it). Sync point: the SeqCst load of the free lock word reads the
    /// last holder's release swap (or a later holder's), which published its count; a
    /// lock held (by a live holder, or a dead one to take over), an index to rebuild or
    /// a count not 0 sends the receive the locked way.
    pub(crate) fn empty_unlocked(&self) -> bool {
        self.w32(LOCK).load(Ordering::SeqCst) == 0
            && self.w32(STATE).load(Ordering::Relaxed) == BUILT
            && self.w32(LEN).load(Ordering::Relaxed) == 0
    }

    /// Marks the mailbox closed (for good).
    pub(crate) fn close(&self) {
        self.w32(CLOSED).store(1, Ordering::SeqCst);
    }

    /// The reply state word of slot `i`, read without the lock (a requester waiting on
    /// its own request's slot); `None` for an index out of range.
    pub(crate) fn slot_word(&self, i: u32) -> Option<&'a AtomicU32> {
        self.seg.ring().storage().word(i as usize, S_RSTATE)
    }

    /// Whether slot `i` is held by a replier (read without the lock).
    pub(crate) fn slot_is_held(&self, i: u32) -> bool {
        self.seg
            .ring()
            .storage()
            .word::<AtomicU32>(i as usize, S_STATE)
            .is_some_and(|w| w.load(Ordering::Acquire) == HELD)
    }

    /// Whether slot `i` is held for the request numbered `seq` (read without the lock,
    /// by the two ends of that exchange, who alone may change it while it is held;
    /// `false` for an index out of range).
    pub(crate) fn slot_holds(&self, i: u32, seq: u64) -> bool {
        let slots = self.seg.ring().storage();
        self.slot_is_held(i)
            && slots
                .word::<AtomicU64>(i as usize, S_SEQ)
                .is_some_and(|w| w.load(Ordering::Relaxed) == seq)
    }

    /// The replier recorded in slot `i` (read without the lock; 0 if out of range).
    pub(crate) fn slot_taker(&self, i: u32) -> u32 {
        self.seg
            .ring()
            .storage()
            .word::<AtomicU32>(i as usize, S_TAKER)
            .map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Takes the lock for the holder `me` ([`owner_word`]) if it is free now or within a
    /// short spin.
    pub(crate) fn try_lock(&self, me: u32) -> Option<Locked<'a>> {
        let words = self.words();
        if words.try_take(me) {
            return Some(self.locked(false));
        }
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            backoff.snooze();
            if words.word.load(Ordering::Relaxed) == 0 && words.try_take(me) {
                return Some(self.locked(false));
            }
        }
        None
    }

    /// The lock's words.
    fn words(&self) -> LockWords<'a> {
        LockWords {
            word: self.w32(LOCK),
            waiters: self.w32(LOCK_WAITERS),
        }
    }

    fn locked(&self, stolen: bool) -> Locked<'a> {
        Locked { ix: *self, stolen }
    }

    /// Takes the lock for the holder `me` ([`owner_word`]), waiting until `deadline`
    /// (`None` when the lock is held past it). Returns the guard and whether the lock
    /// was taken over from a dead holder (the index must then be rebuilt).
    ///
    /// Bounded: the uncontended path is one CAS; then a short spin; then sleeps of at
    /// most [`LOCK_SLICE`] on the lock word, after each of which the holder is probed
    /// ([`Index::holder_gone`]) and, if gone, the lock taken over by a CAS from the
    /// value that named it. Each round checks the deadline.
    pub(crate) fn lock(&self, me: u32, deadline: Option<Instant>) -> Option<Locked<'a>> {
        let words = self.words();
        if let Some(l) = self.try_lock(me) {
            return Some(l);
        }
        loop {
            let seen = words.announce();
            let woke = if seen == 0 {
                Woke::Early
            } else {
                let slice = deadline.map_or(LOCK_SLICE, |d| {
                    d.saturating_duration_since(Instant::now()).min(LOCK_SLICE)
                });
                futex::wait(words.word, seen, slice)
            };
            words.withdraw();
            if words.try_take(me) {
                return Some(self.locked(false));
            }
            if woke == Woke::TimedOut {
                let held = words.word.load(Ordering::SeqCst);
                if held != 0 && self.holder_gone(held) && words.take_over(held, me) {
                    return Some(self.locked(true));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // A release's wake-up may have picked this waiter: pass it on, so that
                // the others do not sleep out their slice while the lock is free.
                if words.word.load(Ordering::SeqCst) == 0
                    && words.waiters.load(Ordering::SeqCst) != 0
                {
                    futex::wake(words.word, 1);
                }
                return None;
            }
        }
    }

    /// Whether the holder that the lock word `held` names is provably gone: the word
    /// names no peer slot (garbage), or that slot is not LIVE in the holder's generation
    /// (it detached or was reaped), or its liveness lock can be taken (the process
    /// died). A probe that cannot be made proves nothing.
    pub(crate) fn holder_gone(&self, held: u32) -> bool {
        let slot = (held & OWNER_SLOT).wrapping_sub(1) as usize;
        if slot >= MAX_PEERS {
            return true;
        }
        let (generation, state, _) = unpack(self.seg.peer_state(slot).load(Ordering::Acquire));
        if state != LIVE || owner_word(slot, generation) != held {
            return true;
        }
        let Ok(probe) = self.seg.reopen() else {
            return false;
        };
        match lock::try_lock(probe.as_fd(), lock_byte(slot), 1, Lock::Shared) {
            Ok(true) => {
                let _ = lock::unlock(probe.as_fd(), lock_byte(slot), 1);
                true
            }
            _ => false,
        }
    }
}

/// The lock, held: every index operation. Dropping it releases the lock.
pub(crate) struct Locked<'a> {
    ix: Index<'a>,
    /// Taken over from a dead holder.
    pub(crate) stolen: bool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let words = self.ix.words();
        if words.release() {
            futex::wake(words.word, 1);
        }
    }
}

impl<'a> Locked<'a> {
    fn slots(&self) -> &'a ShmSlots {
        self.ix.seg.ring().storage()
    }

    #[inline]
    fn ctl(&self, offset: usize) -> u32 {
        self.ix.w32(offset).load(Ordering::Relaxed)
    }

    #[inline]
    fn set_ctl(&self, offset: usize, v: u32) {
        self.ix.w32(offset).store(v, Ordering::Relaxed);
    }

    /// A slot index read from the segment, checked against the capacity.
    fn check(&self, i: u32) -> Result<u32, Corrupt> {
        if i < self.ix.cap { Ok(i) } else { Err(Corrupt) }
    }

    /// A link or lane end read from the segment: a slot or [`NIL`].
    fn check_link(&self, i: u32) -> Result<u32, Corrupt> {
        if i == NIL { Ok(i) } else { self.check(i) }
    }

    fn s32(&self, i: u32, offset: usize) -> &'a AtomicU32 {
        // Every caller passes a checked index (`check`); a failure here is a bug.
        self.slots()
            .word(i as usize, offset)
            .expect("a checked slot index")
    }

    fn s64(&self, i: u32, offset: usize) -> &'a AtomicU64 {
        self.slots()
            .word(i as usize, offset)
            .expect("a checked slot index")
    }

    fn link(&self, i: u32, list: List, next: bool) -> &'a AtomicU32 {
        self.s32(i, S_LINKS + list as usize * 8 + if next { 4 } else { 0 })
    }

    fn is_queued(&self, i: u32) -> bool {
        self.s32(i, S_STATE).load(Ordering::Relaxed) == QUEUED
    }

    /// The envelope fields of slot `i`.
    pub(crate) fn meta(&self, i: u32) -> Meta {
        Meta {
            tag: self.s64(i, S_TAG).load(Ordering::Relaxed),
            from: (
                self.s32(i, S_FROM_PID).load(Ordering::Relaxed),
                self.s64(i, S_FROM_ID).load(Ordering::Relaxed),
            ),
            reply_to: self.s32(i, S_REPLY_TO).load(Ordering::Relaxed),
        }
    }

    /// The bytes slot `i`'s message counts: its length word in a byte mailbox (checked
    /// against the payload size), 0 in a typed one.
    fn size(&self, i: u32) -> Result<u64, Corrupt> {
        if self.ix.max_bytes == u64::MAX {
            return Ok(0);
        }
        match self.slots().len_word(i as usize) {
            Some(w) if w.load(Ordering::Relaxed) as usize <= self.slots().payload_size() => {
                Ok(u64::from(w.load(Ordering::Relaxed)))
            }
            _ => Err(Corrupt),
        }
    }

    /// The bytes queued, checked against the bound.
    fn queued_bytes(&self) -> Result<u64, Corrupt> {
        let n = self.ix.w64(BYTES).load(Ordering::Relaxed);
        if n <= self.ix.max_bytes {
            Ok(n)
        } else {
            Err(Corrupt)
        }
    }

    fn set_bytes(&self, n: u64) {
        self.ix.w64(BYTES).store(n, Ordering::Relaxed);
    }

    fn seq(&self, i: u32) -> u64 {
        self.s64(i, S_SEQ).load(Ordering::Relaxed)
    }

    /// Whether the mailbox is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.ix.is_closed()
    }

    /// Whether the index has been built (a new segment's has not).
    pub(crate) fn is_built(&self) -> bool {
        self.ctl(STATE) == BUILT
    }

    /// The number of messages queued, checked.
    fn len(&self) -> Result<u32, Corrupt> {
        let len = self.ctl(LEN);
        if len <= self.ix.cap {
            Ok(len)
        } else {
            Err(Corrupt)
        }
    }

    // ---- Lanes ----

    /// Appends slot `i` (checked) to `lane` on `list`. O(1).
    fn append(&self, lane: Lane, i: u32, list: List) -> Result<(), Corrupt> {
        let tail = self.check_link(self.ctl(lane.tail))?;
        self.link(i, list, false).store(tail, Ordering::Relaxed);
        self.link(i, list, true).store(NIL, Ordering::Relaxed);
        if tail == NIL {
            self.set_ctl(lane.head, i);
        } else {
            self.link(tail, list, true).store(i, Ordering::Relaxed);
        }
        self.set_ctl(lane.tail, i);
        Ok(())
    }

    /// Unlinks slot `i` (checked) from `lane` on `list`; says whether the lane is now
    /// empty. O(1). Each neighbour must point back at `i`.
    fn unlink(&self, lane: Lane, i: u32, list: List) -> Result<bool, Corrupt> {
        let prev = self.check_link(self.link(i, list, false).load(Ordering::Relaxed))?;
        let next = self.check_link(self.link(i, list, true).load(Ordering::Relaxed))?;
        let (prev_next, next_prev) = (
            if prev == NIL {
                self.ix.w32(lane.head)
            } else {
                self.link(prev, list, true)
            },
            if next == NIL {
                self.ix.w32(lane.tail)
            } else {
                self.link(next, list, false)
            },
        );
        if prev_next.load(Ordering::Relaxed) != i || next_prev.load(Ordering::Relaxed) != i {
            return Err(Corrupt);
        }
        prev_next.store(next, Ordering::Relaxed);
        next_prev.store(prev, Ordering::Relaxed);
        Ok(self.ctl(lane.head) == NIL)
    }

    // ---- Lane tables (sorted by key, searched by bisection) ----

    /// The tag table (`false`) or the sender table (`true`): the offset of its first
    /// entry and of its count.
    fn table(&self, senders: bool) -> (usize, usize) {
        if senders {
            (CONTROL + self.ix.cap as usize * ENTRY, N_SENDERS)
        } else {
            (CONTROL, N_TAGS)
        }
    }

    fn entries(&self, senders: bool) -> Result<usize, Corrupt> {
        let n = self.ctl(self.table(senders).1);
        if n <= self.ix.cap {
            Ok(n as usize)
        } else {
            Err(Corrupt)
        }
    }

    fn entry(&self, senders: bool, e: usize) -> usize {
        self.table(senders).0 + e * ENTRY
    }

    fn key(&self, senders: bool, e: usize) -> (u64, u64) {
        let at = self.entry(senders, e);
        (
            self.ix.w64(at + E_KEY_HI).load(Ordering::Relaxed),
            self.ix.w64(at + E_KEY_LO).load(Ordering::Relaxed),
        )
    }

    fn lane(&self, senders: bool, e: usize) -> Lane {
        let at = self.entry(senders, e);
        Lane {
            head: at + E_HEAD,
            tail: at + E_TAIL,
        }
    }

    /// Bisection: `Ok(entry)` holding `key`, or `Err(position)` where it would go.
    /// O(log n), bounded by the checked count whatever the keys are.
    fn search(&self, senders: bool, key: (u64, u64)) -> Result<Result<usize, usize>, Corrupt> {
        let (mut lo, mut hi) = (0, self.entries(senders)?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(senders, mid).cmp(&key) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(lo))
    }

    /// Copies entry `from` over entry `to`.
    fn move_entry(&self, senders: bool, from: usize, to: usize) {
        let (src, dst) = (self.entry(senders, from), self.entry(senders, to));
        for w in [E_KEY_HI, E_KEY_LO] {
            let v = self.ix.w64(src + w).load(Ordering::Relaxed);
            self.ix.w64(dst + w).store(v, Ordering::Relaxed);
        }
        for w in [E_HEAD, E_TAIL] {
            let v = self.ix.w32(src + w).load(Ordering::Relaxed);
            self.ix.w32(dst + w).store(v, Ordering::Relaxed);
        }
    }

    /// The entry for `key`, inserted (with an empty lane) if missing: O(log n) to find,
    /// O(n) entry moves to insert.
    fn find_or_insert(&self, senders: bool, key: (u64, u64)) -> Result<usize, Corrupt> {
        let pos = match self.search(senders, key)? {
            Ok(e) => return Ok(e),
            Err(pos) => pos,
        };
        let n = self.entries(senders)?;
        // Each entry has a queued message; one is being added, so a full table is
        // impossible.
        if n >= self.ix.cap as usize {
            return Err(Corrupt);
        }
        for e in (pos..n).rev() {
            self.move_entry(senders, e, e + 1);
        }
        let at = self.entry(senders, pos);
        self.ix.w64(at + E_KEY_HI).store(key.0, Ordering::Relaxed);
        self.ix.w64(at + E_KEY_LO).store(key.1, Ordering::Relaxed);
        self.ix.w32(at + E_HEAD).store(NIL, Ordering::Relaxed);
        self.ix.w32(at + E_TAIL).store(NIL, Ordering::Relaxed);
        self.set_ctl(self.table(senders).1, n as u32 + 1);
        Ok(pos)
    }

    /// Removes entry `pos` (its lane is empty): O(n) entry moves.
    fn remove_entry(&self, senders: bool, pos: usize) -> Result<(), Corrupt> {
        let n = self.entries(senders)?;
        if pos >= n {
            return Err(Corrupt);
        }
        for e in pos + 1..n {
            self.move_entry(senders, e, e - 1);
        }
        self.set_ctl(self.table(senders).1, n as u32 - 1);
        Ok(())
    }

    fn tag_key(tag: u64) -> (u64, u64) {
        (tag, 0)
    }

    fn sender_key((pid, id): Sender) -> (u64, u64) {
        (u64::from(pid), id)
    }

    /// Links the queued slot `i` (its fields written) at the end of its three lists.
    fn link_in(&self, i: u32) -> Result<(), Corrupt> {
        let meta = self.meta(i);
        let t = self.find_or_insert(false, Self::tag_key(meta.tag))?;
        let s = self.find_or_insert(true, Self::sender_key(meta.from))?;
        self.append(ALL, i, List::All)?;
        self.append(self.lane(false, t), i, List::Tag)?;
        self.append(self.lane(true, s), i, List::From)?;
        Ok(())
    }

    // ---- Operations ----

    /// Queues a message: takes a free slot, lets `write` fill its payload (and length),
    /// writes its envelope, marks it queued, links it. `Ok(None)` when full: no free
    /// slot, or its bytes would take the bytes queued over the bound. O(log t + log s)
    /// plus O(t + s) entry moves when its tag or sender is new (t distinct tags, s
    /// distinct senders queued).
    pub(crate) fn push(
        &self,
        meta: Meta,
        write: &mut dyn FnMut(&ShmSlots, usize),
    ) -> Result<Option<(u32, u64)>, Corrupt> {
        let len = self.len()?;
        let bytes = self.queued_bytes()?;
        if len >= self.ix.cap {
            return Ok(None);
        }
        if self.ctl(FREE_HEAD) == NIL {
            // Every free slot is held by a request exchange: reclaim the dead ones'.
            self.reclaim()?;
            if self.ctl(FREE_HEAD) == NIL {
                return Ok(None);
            }
        }
        let i = self.check(self.ctl(FREE_HEAD))?;
        if self.is_queued(i) {
            return Err(Corrupt);
        }
        let next_free = self.check_link(self.link(i, List::All, true).load(Ordering::Relaxed))?;
        self.set_ctl(FREE_HEAD, next_free);
        write(self.slots(), i as usize);
        // The length `write` stored is what the receive subtracts. Over the bound: the
        // slot goes back to the free list (its `All` link still names the next free).
        let size = self.size(i)?;
        if size > self.ix.max_bytes - bytes {
            self.set_ctl(FREE_HEAD, i);
            return Ok(None);
        }
        let seq = self.ix.w64(NEXT_SEQ).load(Ordering::Relaxed);
        self.ix
            .w64(NEXT_SEQ)
            .store(seq.wrapping_add(1), Ordering::Relaxed);
        self.s64(i, S_SEQ).store(seq, Ordering::Relaxed);
        self.s64(i, S_TAG).store(meta.tag, Ordering::Relaxed);
        self.s32(i, S_FROM_PID)
            .store(meta.from.0, Ordering::Relaxed);
        self.s64(i, S_FROM_ID).store(meta.from.1, Ordering::Relaxed);
        self.s32(i, S_REPLY_TO)
            .store(meta.reply_to, Ordering::Relaxed);
        let rstate = if meta.reply_to != 0 { PENDING } else { 0 };
        self.s32(i, S_RSTATE).store(rstate, Ordering::Relaxed);
        // From here on the message exists: a holder that dies now leaves it queued, and
        // the rebuild links it.
        self.s32(i, S_STATE).store(QUEUED, Ordering::Relaxed);
        // The message is sent; an index found inconsistent now is rebuilt by the next
        // operation (not retried here, which would send it twice).
        if self.link_in(i).is_err() {
            self.set_ctl(STATE, 0);
        }
        self.set_ctl(LEN, len + 1);
        self.set_bytes(bytes + size);
        Ok(Some((i, seq)))
    }

    /// The head of lane `e` of a table, checked to be a queued message whose key is the
    /// entry's.
    fn head_of(&self, senders: bool, e: usize) -> Result<u32, Corrupt> {
        let i = self.check(self.ctl(self.lane(senders, e).head))?;
        let meta = self.meta(i);
        let key = if senders {
            Self::sender_key(meta.from)
        } else {
            Self::tag_key(meta.tag)
        };
        if !self.is_queued(i) || key != self.key(senders, e) {
            return Err(Corrupt);
        }
        Ok(i)
    }

    /// The slot that `want` takes now, if any. Costs in the module docs.
    pub(crate) fn find(&self, want: Want) -> Result<Option<u32>, Corrupt> {
        let found = match want {
            Want::Any => {
                let i = self.check_link(self.ctl(ALL_HEAD))?;
                if i == NIL {
                    return Ok(None);
                }
                i
            }
            Want::Tag(x) => match self.search(false, Self::tag_key(x))? {
                Ok(e) => self.head_of(false, e)?,
                Err(_) => return Ok(None),
            },
            Want::TagAtMost(n) => {
                if self.entries(false)? == 0 || self.key(false, 0).0 > n {
                    return Ok(None);
                }
                self.head_of(false, 0)?
            }
            Want::TagExcept(x) => {
                let i = self.check_link(self.ctl(ALL_HEAD))?;
                if i == NIL {
                    return Ok(None);
                }
                if self.meta(i).tag != x {
                    i
                } else {
                    // The oldest message of all has tag `x`: the oldest of the other
                    // lanes' heads (O(t), never looking at a message of tag `x` but the
                    // first).
                    let mut best: Option<(u64, u32)> = None;
                    for e in 0..self.entries(false)? {
                        if self.key(false, e).0 == x {
                            continue;
                        }
                        let h = self.head_of(false, e)?;
                        let seq = self.seq(h);
                        if best.is_none_or(|(s, _)| seq < s) {
                            best = Some((seq, h));
                        }
                    }
                    match best {
                        Some((_, h)) => h,
                        None => return Ok(None),
                    }
                }
            }
            Want::From(a) => match self.search(true, Self::sender_key(a))? {
                Ok(e) => self.head_of(true, e)?,
                Err(_) => return Ok(None),
            },
        };
        if !self.is_queued(found) {
            return Err(Corrupt);
        }
        Ok(Some(found))
    }

    /// Removes the queued slot `i` (found by [`Locked::find`], its payload read): unlinks
    /// it from its three lists (dropping emptied lanes' entries), frees it. O(log t +
    /// log s), plus O(t) or O(s) entry moves when its lane empties.
    pub(crate) fn take(&self, i: u32, taker: u32) -> Result<Option<u64>, Corrupt> {
        let len = self.len()?;
        let bytes = self.queued_bytes()?;
        let size = self.size(i)?;
        if size > bytes {
            return Err(Corrupt);
        }
        let meta = self.meta(i);
        if len == 1
            && self.ctl(ALL_HEAD) == i
            && self.ctl(ALL_TAIL) == i
            && self.ctl(N_TAGS) == 1
            && self.ctl(N_SENDERS) == 1
        {
            // The only queued message: the index empties, with no table record or lane
            // to visit (nothing reads a record past the table's count, nor the links of
            // a slot that is on no list). O(1), and the tables' cache lines stay where
            // the next send will write them.
            for w in [ALL_HEAD, ALL_TAIL] {
                self.set_ctl(w, NIL);
            }
            for w in [N_TAGS, N_SENDERS] {
                self.set_ctl(w, 0);
            }
        } else {
            let Ok(t) = self.search(false, Self::tag_key(meta.tag))? else {
                return Err(Corrupt);
            };
            let Ok(s) = self.search(true, Self::sender_key(meta.from))? else {
                return Err(Corrupt);
            };
            // A failure part-way leaves the index inconsistent: the caller then rebuilds
            // it from the slots, where `i` is still queued (its message was not taken).
            self.unlink(ALL, i, List::All)?;
            if self.unlink(self.lane(false, t), i, List::Tag)? {
                self.remove_entry(false, t)?;
            }
            if self.unlink(self.lane(true, s), i, List::From)? {
                self.remove_entry(true, s)?;
            }
        }
        self.set_ctl(LEN, len.saturating_sub(1));
        // A request's slot stays held for the reply, but its bytes no longer count.
        self.set_bytes(bytes - size);
        if meta.reply_to == 0 {
            self.free(i);
            return Ok(None);
        }
        // A request: the slot is held for the reply.
        // Written only if it changes: the requester polls the reply state on this
        // cache line, and a slot reused by the same two families keeps its taker.
        let word = self.s32(i, S_TAKER);
        if word.load(Ordering::Relaxed) != taker {
            word.store(taker, Ordering::Relaxed);
        }
        self.s32(i, S_STATE).store(HELD, Ordering::Relaxed);
        // Taken; as in `push`, a held list found inconsistent is rebuilt later.
        if self.append(HELD_LANE, i, List::All).is_err() {
            self.set_ctl(STATE, 0);
        }
        Ok(Some(self.seq(i)))
    }

    /// Puts slot `i` (checked, off every list) on the free list.
    fn free(&self, i: u32) {
        self.s32(i, S_STATE).store(0, Ordering::Relaxed);
        self.link(i, List::All, true)
            .store(self.ctl(FREE_HEAD), Ordering::Relaxed);
        self.set_ctl(FREE_HEAD, i);
    }

    /// Whether slot `i` is held (taken by a replier) rather than queued.
    pub(crate) fn is_held(&self, i: u32) -> bool {
        i < self.ix.cap && self.s32(i, S_STATE).load(Ordering::Relaxed) == HELD
    }

    /// The replier that took the request in slot `i` (checked by the caller).
    pub(crate) fn taker(&self, i: u32) -> u32 {
        self.s32(i, S_TAKER).load(Ordering::Relaxed)
    }

    /// Ends a request exchange: frees slot `i` if it is held for request `seq`. O(1).
    pub(crate) fn release(&self, i: u32, seq: u64) -> Result<(), Corrupt> {
        if !self.is_held(i) || self.seq(i) != seq {
            return Ok(());
        }
        self.unlink(HELD_LANE, i, List::All)?;
        self.free(i);
        Ok(())
    }

    /// Releases slot `i` (a slot index from the caller's own records, checked here) if
    /// it is held and its exchange is [`DONE`]: the requester's retired slot, released
    /// in its next locked operation. O(1).
    pub(crate) fn release_done(&self, i: u32) -> Result<(), Corrupt> {
        if self.is_held(i) && self.s32(i, S_RSTATE).load(Ordering::SeqCst) == DONE {
            self.unlink(HELD_LANE, i, List::All)?;
            self.free(i);
        }
        Ok(())
    }

    /// Releases the held slots whose exchange is over ([`DONE`]: the requester retired
    /// it) or that nobody will end: the requester is gone (its pending request becomes
    /// [`GONE`]) and the reply is in or abandoned, or the requester left and the replier
    /// is gone too. O(held slots), with probes (system calls for live peers) of the
    /// slots not DONE; runs only when no slot is free.
    fn reclaim(&self) -> Result<(), Corrupt> {
        let mut i = self.check_link(self.ctl(HELD_HEAD))?;
        for _ in 0..self.ix.cap {
            if i == NIL {
                break;
            }
            let next = self.check_link(self.link(i, List::All, true).load(Ordering::Relaxed))?;
            let rstate = self.s32(i, S_RSTATE);
            let owner_gone = || {
                self.ix
                    .holder_gone(self.s32(i, S_REPLY_TO).load(Ordering::Relaxed))
            };
            let release = match rstate.load(Ordering::SeqCst) & !SLEEPING {
                DONE => true,
                REPLIED | ABANDONED => owner_gone(),
                GONE => self.ix.holder_gone(self.taker(i)),
                // The requester is gone: GONE, so that a live replier releases the slot
                // when it answers; released here if the replier is gone too, or answered
                // meanwhile.
                PENDING => {
                    owner_gone()
                        && match settle(rstate, GONE).map_or_else(|now| now & !SLEEPING, |_| GONE) {
                            GONE => self.ix.holder_gone(self.taker(i)),
                            PENDING => false,
                            _ => true,
                        }
                }
                _ => true,
            };
            if release {
                self.unlink(HELD_LANE, i, List::All)?;
                self.free(i);
            }
            i = next;
        }
        Ok(())
    }

    /// Rebuilds the index from the slots, the source of truth: every slot whose state
    /// is [`QUEUED`] (and, with `valid`, whose contents pass the check) is queued again
    /// in `seq` order, every other slot is freed, and the count and the bytes queued are
    /// summed again from the slots linked. O(capacity · log capacity); runs after
    /// the lock was taken over from a dead holder, when an operation finds the index
    /// inconsistent, and once to initialise a new segment's.
    pub(crate) fn rebuild(&self, valid: fn(&ShmSlots, usize) -> bool) {
        let cap = self.ix.cap;
        let mut queued: Vec<(u64, u32)> = (0..cap)
            .filter(|&i| self.is_queued(i) && valid(self.slots(), i as usize))
            .map(|i| (self.seq(i), i))
            .collect();
        queued.sort_unstable();
        self.set_ctl(STATE, 0);
        for w in [LEN, N_TAGS, N_SENDERS] {
            self.set_ctl(w, 0);
        }
        self.set_bytes(0);
        for w in [ALL_HEAD, ALL_TAIL, HELD_HEAD, HELD_TAIL] {
            self.set_ctl(w, NIL);
        }
        let mut in_use = vec![false; cap as usize];
        for &(_, i) in &queued {
            in_use[i as usize] = true;
        }
        for i in 0..cap {
            // A held slot whose exchange is over is freed with the others.
            let done = self.s32(i, S_RSTATE).load(Ordering::SeqCst) == DONE;
            if !in_use[i as usize] && self.is_held(i) && !done {
                in_use[i as usize] = true;
                // Cannot fail: the list was emptied, and `i` is checked.
                let _ = self.append(HELD_LANE, i, List::All);
            }
        }
        let mut free = NIL;
        for i in (0..cap).rev() {
            if !in_use[i as usize] {
                self.s32(i, S_STATE).store(0, Ordering::Relaxed);
                self.link(i, List::All, true).store(free, Ordering::Relaxed);
                free = i;
            }
        }
        self.set_ctl(FREE_HEAD, free);
        let (mut len, mut bytes) = (0, 0u64);
        for &(_, i) in &queued {
            // The tables were emptied: only a peer writing to them now can make this
            // fail, and the next operation rebuilds again. So can a length changed
            // since `valid` passed it, or a sum over the bound (only a peer's writes
            // make one: every send checked it).
            let Ok(size) = self.size(i) else { return };
            bytes += size;
            if bytes > self.ix.max_bytes || self.link_in(i).is_err() {
                return;
            }
            len += 1;
        }
        self.set_ctl(LEN, len);
        self.set_bytes(bytes);
        let next = queued.last().map_or(0, |&(seq, _)| seq.wrapping_add(1));
        let stored = self.ix.w64(NEXT_SEQ).load(Ordering::Relaxed);
        self.ix
            .w64(NEXT_SEQ)
            .store(stored.max(next), Ordering::Relaxed);
        self.set_ctl(STATE, BUILT);
    }
}

/// The length word of a byte mailbox's slot `i`, if plausible (the rebuild's check).
pub(crate) fn byte_len_ok(slots: &ShmSlots, i: usize) -> bool {
    slots
        .len_word(i)
        .is_some_and(|w| w.load(Ordering::Relaxed) as usize <= slots.payload_size())
}
