//! The pending-signal state of a target: fixed-width atomic words, generic over where
//! they live ([`SignalStorage`]), so that the heap target and a later shared-memory twin
//! share one algorithm and loom checks it once, on the heap.
//!
//! # Words
//!
//! | word | width | meaning |
//! |---|---|---|
//! | `pending` | `u64` | bit `n - 1`: number `n` may have something pending |
//! | `mask` | `u64` | bit `n - 1`: number `n` is masked (held pending) |
//! | `running` | `u64` | bit `n - 1`: a handler for `n` is running (held pending meanwhile) |
//! | `ignore` | `u64` | bit `n - 1`: raises of `n` are discarded (and counted) |
//! | `catch` | `u64` | bit `n - 1`: deliveries of `n` run its handler |
//! | `closed` | `u64` | nonzero once the target is gone: raises fail |
//! | `count[n]` | `u64` per standard number | raises of `n` not yet delivered |
//! | `origin[n]` | `u64` per standard number | the origin of a recent raise of `n` |
//! | `ignored[n]` | `u64` per number | raises of `n` discarded because `n` was ignored |
//! | `queue[n]` | a [`Ring`] per queued number | `(payload, origin)` of each raise, in order |
//!
//! # Raise
//!
//! A raise checks `closed` and `ignore`, then records itself: a standard number adds to
//! its count (after storing its origin), a queued number claims a slot of its ring,
//! writes payload and origin and commits (or fails [`Full`](RaiseFail::Full) when the
//! ring has no free slot). Only then does it set the number's `pending` bit, with a
//! SeqCst `fetch_or`: the change that the no-lost-wake-up argument announces.
//!
//! A raise of a standard number that finds its bit set already (a flood, coalescing)
//! stops after its count: no `fetch_or`, and its caller announces nothing. Its count
//! increment is SeqCst, and it looks at the bit with a SeqCst load after it. Seeing the
//! bit set means that no taker's clearing `fetch_and` comes before that load in the
//! single total order of SeqCst operations (the load would see the clear, or a later
//! set), so the clear of every taker still to come follows the increment, and so does
//! that taker's swap of the count (after its clear in program order): the increment is
//! delivered by the next taker, exactly once, as if the raise had set the bit itself.
//! And nobody needs waking for it: the raise that set the bit announced it (or will,
//! its `fetch_or` done), and a waiter that registered after that announcement
//! re-checks the bit and finds it. (Under loom the SeqCst orderings are written as
//! fences: `after_seqcst_rmw`, `load_seqcst_u64`.)
//!
//! # Take
//!
//! A taker of number `n` (one that saw its bit deliverable):
//! - standard: clears the bit (`fetch_and`; only the taker that finds it set goes on),
//!   then swaps the count to zero. Every raise's increment is taken by exactly one swap,
//!   so the counts delivered add up to the raises made, exactly. A swap that finds zero
//!   (an earlier taker's swap took this raise's increment before the raise set the bit
//!   again) delivers nothing.
//! - queued: receives from the ring. Finding it empty, it clears the bit and receives
//!   once more: a raise whose commit that second try misses sets the bit after the
//!   clear (its `fetch_or` follows its commit, and the clear, an acquire RMW, would
//!   otherwise have read from it and made the commit visible). If the second try finds
//!   an entry after all, the taker sets the bit again (entries may remain) and reports
//!   the re-arm, which its caller announces like a raise.
//!
//! The count's origin is read after the swap: the origin of one of the raises taken
//! (the latest whose store the swap made visible).

use crossbeam_utils::CachePadded;

use crate::chan::ring::{Ring, RingStorage, Stall, initial_stamp};
use crate::shm::protocol::{self, Lane};
use crate::sync::{AtomicU64, AtomicUsize, Backoff, Ordering, after_seqcst_rmw, load_seqcst_u64};

/// Signal numbers: `1..=SIGNALS`.
pub(crate) const SIGNALS: u8 = 64;
/// The first queued number; `1..FIRST_QUEUED` are standard.
pub(crate) const FIRST_QUEUED: u8 = 32;
/// How many numbers are standard.
pub(crate) const STANDARD: usize = FIRST_QUEUED as usize - 1;
/// How many numbers are queued.
pub(crate) const QUEUED: usize = (SIGNALS - FIRST_QUEUED + 1) as usize;

/// The bit of number `n` in the 64-bit words.
#[inline]
pub(crate) const fn bit(n: u8) -> u64 {
    1u64 << (n - 1)
}

/// The scalar words (see the module docs).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Words {
    pub(crate) pending: AtomicU64,
    pub(crate) mask: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) ignore: AtomicU64,
    pub(crate) catch: AtomicU64,
    pub(crate) closed: AtomicU64,
}

impl Words {
    fn new() -> Self {
        Words {
            pending: AtomicU64::new(0),
            mask: AtomicU64::new(0),
            running: AtomicU64::new(0),
            ignore: AtomicU64::new(0),
            catch: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }
}

/// One slot of a queued number's ring: the ring's stamp plus the raise's two words,
/// written (Relaxed) between the claim and the commit that publishes them.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct QueueSlot {
    stamp: AtomicUsize,
    payload: AtomicU64,
    origin: AtomicU64,
}

/// A queued number's ring storage that also holds each slot's payload words.
///
/// # Safety
/// As [`RingStorage`]; `entry(i)` returns the payload and origin words of the slot
/// whose stamp `stamp(i)` returns, distinct from every other slot's words.
pub(crate) unsafe trait QueueStorage: RingStorage {
    /// The `(payload, origin)` words of slot `index`, if it is in range.
    fn entry(&self, index: usize) -> Option<(&AtomicU64, &AtomicU64)>;
}

/// The intent lane a queued number's claims are recorded in: none for heap storage (no
/// other process can die holding a claim), the operation's lane of its peer for a
/// shared-memory target, tagged with the queue (see `shm::signal`).
#[derive(Clone, Copy)]
pub(crate) struct QueueLane<'a> {
    word: Option<&'a AtomicUsize>,
    queue: usize,
}

impl<'a> QueueLane<'a> {
    /// No lane (heap storage).
    pub(crate) const NONE: QueueLane<'static> = QueueLane {
        word: None,
        queue: 0,
    };

    /// `word`, a peer's lane in a segment.
    #[cfg_attr(
        any(loom, not(all(unix, target_pointer_width = "64"))),
        allow(dead_code)
    )]
    pub(crate) fn new(word: &'a AtomicUsize) -> Self {
        QueueLane {
            word: Some(word),
            queue: 0,
        }
    }

    fn for_number(self, n: u8) -> Self {
        QueueLane {
            word: self.word,
            queue: usize::from(n - FIRST_QUEUED),
        }
    }
}

/// Where a tagged intent keeps its queue (6 bits below the protocol's flag bits); the
/// position keeps the bits below.
pub(crate) const QUEUE_TAG_SHIFT: u32 = 56;
const TAG_MASK: usize = 0x3f << QUEUE_TAG_SHIFT;

#[cfg_attr(
    any(loom, not(all(unix, target_pointer_width = "64"))),
    allow(dead_code)
)]
/// Splits a tagged intent word into its queue and the intent the ring's protocol
/// knows (flags and position).
pub(crate) fn untag(word: usize) -> (usize, usize) {
    ((word & TAG_MASK) >> QUEUE_TAG_SHIFT, word & !TAG_MASK)
}

impl Lane for QueueLane<'_> {
    #[inline]
    fn record(&self, word: usize) {
        if let Some(lane) = self.word {
            lane.record((word & !TAG_MASK) | (self.queue << QUEUE_TAG_SHIFT));
        }
    }

    #[inline]
    fn clear(&self) {
        if let Some(lane) = self.word {
            lane.clear();
        }
    }
}

/// Where a target's words live.
///
/// # Safety
/// Every method returns the same words for the same arguments for the storage's
/// lifetime, distinct words for distinct arguments in range.
pub(crate) unsafe trait SignalStorage {
    type Queue: QueueStorage;
    fn words(&self) -> &Words;
    /// Standard numbers `1..FIRST_QUEUED`.
    fn count(&self, n: u8) -> &AtomicU64;
    /// Standard numbers `1..FIRST_QUEUED`.
    fn origin(&self, n: u8) -> &AtomicU64;
    /// Every number.
    fn ignored(&self, n: u8) -> &AtomicU64;
    /// Queued numbers `FIRST_QUEUED..=SIGNALS`.
    fn queue(&self, n: u8) -> &Ring<Self::Queue>;
}

/// Why a raise failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RaiseFail {
    Disconnected,
    Full,
}

/// One delivery taken from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) count: u64,
    pub(crate) payload: Option<u64>,
    pub(crate) origin: u64,
}

/// The algorithm over a storage.
#[derive(Debug)]
pub(crate) struct State<S> {
    storage: S,
}

impl<S: SignalStorage> State<S> {
    pub(crate) fn new(storage: S) -> Self {
        State { storage }
    }

    /// The storage.
    #[cfg_attr(
        any(loom, not(all(unix, target_pointer_width = "64"))),
        allow(dead_code)
    )]
    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    #[inline]
    pub(crate) fn words(&self) -> &Words {
        self.storage.words()
    }

    /// Records `times` raises of `n` (`times` is 1 for a queued number) from `origin`,
    /// recording queue claims in `lane`. On success the pending bit was set with a
    /// SeqCst RMW (or the raise was ignored); the caller then announces it to waiters.
    /// The `bool` says that the bit was set already (the owner has not taken an
    /// earlier raise yet; `false` for an ignored raise).
    #[inline]
    pub(crate) fn raise(
        &self,
        n: u8,
        payload: u64,
        origin: u64,
        times: u64,
        lane: QueueLane<'_>,
    ) -> Result<bool, RaiseFail> {
        let w = self.words();
        if w.closed.load(Ordering::Acquire) != 0 {
            return Err(RaiseFail::Disconnected);
        }
        let b = bit(n);
        if w.ignore.load(Ordering::Acquire) & b != 0 {
            self.storage.ignored(n).fetch_add(times, Ordering::Relaxed);
            return Ok(false);
        }
        if n < FIRST_QUEUED {
            self.storage.origin(n).store(origin, Ordering::Relaxed);
            // Sync point: Release publishes the origin to the taker whose swap reads
            // this increment (Acquire); SeqCst orders it before the look at the bit.
            self.storage.count(n).fetch_add(times, Ordering::SeqCst);
            after_seqcst_rmw();
            // Already pending: the next taker's swap takes this increment, and the
            // raise that set the bit announces it (module docs).
            if load_seqcst_u64(&w.pending) & b != 0 {
                return Ok(true);
            }
        } else {
            self.push(n, payload, origin, lane.for_number(n))?;
        }
        // SeqCst: the change of the no-lost-wake-up argument; Release (part of it)
        // publishes the count or the committed entry to the taker that clears the bit.
        let before = w.pending.fetch_or(b, Ordering::SeqCst);
        after_seqcst_rmw();
        Ok(before & b != 0)
    }

    /// Appends `(payload, origin)` to queued number `n`'s ring.
    ///
    /// Through the shm ring protocol (`shm::protocol`), which records the claim in
    /// `lane` (nothing for the heap), and publishes a slot that a survivor reclaimed as a
    /// skip and claims anew. For shared storage every wait here is bounded: a slot that
    /// stays busy past the backoff (a stuck or hostile peer) makes the raise `Full`.
    #[inline(never)]
    fn push(&self, n: u8, payload: u64, origin: u64, lane: QueueLane<'_>) -> Result<(), RaiseFail> {
        let ring = self.storage.queue(n);
        let backoff = Backoff::new();
        loop {
            let sent = protocol::send(ring, &lane, |index| {
                if let Some((p, o)) = ring.storage().entry(index) {
                    p.store(payload, Ordering::Relaxed);
                    o.store(origin, Ordering::Relaxed);
                }
                // Sync point: the commit's Release publishes the two words to the
                // receiver whose claim reads the stamp (Acquire).
            });
            match sent {
                Ok(()) => return Ok(()),
                // No free slot: the queue is at its depth. (The ring is never marked
                // disconnected; corruption is only possible for shared storage, and
                // reporting it as `Full` keeps the raise bounded.)
                Err(Stall::Blocked | Stall::Disconnected | Stall::Corrupt) => {
                    return Err(RaiseFail::Full);
                }
                Err(Stall::Busy) if S::Queue::SHARED && backoff.is_completed() => {
                    return Err(RaiseFail::Full);
                }
                // A taker is reading the slot at our position, a few instructions from
                // freeing it.
                Err(Stall::Busy) => backoff.snooze(),
            }
        }
    }

    /// Takes one delivery of `n`. The `bool` says that the queued bit was set again
    /// (see the module docs): the caller announces it like a raise.
    ///
    /// A standard number's take is inlined into the wait that makes it (two RMWs and a
    /// load; returned through memory from a call, its result cost a stall at the
    /// caller's reload); a queued number's runs out of line.
    #[inline]
    pub(crate) fn take(&self, n: u8, lane: QueueLane<'_>) -> (Option<Taken>, bool) {
        if n < FIRST_QUEUED {
            (self.take_standard(n), false)
        } else {
            self.take_queued(n, lane)
        }
    }

    /// [`State::take`] of a standard number.
    #[inline]
    fn take_standard(&self, n: u8) -> Option<Taken> {
        let w = self.words();
        let b = bit(n);
        // Sync point: Acquire pairs with the raises' Release `fetch_or`.
        if w.pending.fetch_and(!b, Ordering::SeqCst) & b == 0 {
            return None;
        }
        after_seqcst_rmw();
        // SeqCst (Acquire for the origin): after the clear in the total order, so a
        // raise that found the bit still set and skipped its `fetch_or` has its
        // increment taken here (module docs, "Raise").
        let count = self.storage.count(n).swap(0, Ordering::SeqCst);
        if count == 0 {
            return None;
        }
        let origin = self.storage.origin(n).load(Ordering::Relaxed);
        Some(Taken {
            count,
            payload: None,
            origin,
        })
    }

    /// [`State::take`] of a queued number.
    #[inline(never)]
    fn take_queued(&self, n: u8, lane: QueueLane<'_>) -> (Option<Taken>, bool) {
        let w = self.words();
        let b = bit(n);
        let ring = self.storage.queue(n);
        let lane = lane.for_number(n);
        let backoff = Backoff::new();
        let mut cleared = false;
        loop {
            // Skips (slots a survivor reclaimed from a dead raiser) are consumed on the
            // way, within the protocol's bound.
            let received = protocol::recv(ring, &lane, |index| {
                Some(match ring.storage().entry(index) {
                    Some((p, o)) => (p.load(Ordering::Relaxed), o.load(Ordering::Relaxed)),
                    None => (0, 0),
                })
            });
            match received {
                Ok((payload, origin)) => {
                    let taken = Taken {
                        count: 1,
                        payload: Some(payload),
                        origin,
                    };
                    if cleared {
                        w.pending.fetch_or(b, Ordering::SeqCst);
                        after_seqcst_rmw();
                    }
                    return (Some(taken), cleared);
                }
                Err(Stall::Blocked | Stall::Disconnected | Stall::Corrupt) => {
                    if cleared {
                        return (None, false);
                    }
                    // Sync point: Acquire pairs with the raises' Release `fetch_or`, so
                    // a commit whose bit we clear is visible to the second try.
                    w.pending.fetch_and(!b, Ordering::SeqCst);
                    cleared = true;
                }
                // A stuck or hostile peer: give up, with the bit set again if we had
                // cleared it (what is there stays deliverable for a later take).
                Err(Stall::Busy) if S::Queue::SHARED && backoff.is_completed() => {
                    if cleared {
                        w.pending.fetch_or(b, Ordering::SeqCst);
                        after_seqcst_rmw();
                    }
                    return (None, cleared);
                }
                // A raiser claimed the slot and is writing it.
                Err(Stall::Busy) => backoff.snooze(),
            }
        }
    }

    /// Adds `n` to the ignored count (a delivery discarded when `n` became ignored).
    pub(crate) fn add_ignored(&self, n: u8, count: u64) {
        self.storage.ignored(n).fetch_add(count, Ordering::Relaxed);
    }

    /// Raises of `n` discarded because `n` was ignored.
    pub(crate) fn ignored(&self, n: u8) -> u64 {
        self.storage.ignored(n).load(Ordering::Relaxed)
    }
}

/// A queued number's ring on the heap.
#[derive(Debug)]
pub(crate) struct HeapQueue {
    head: AtomicUsize,
    tail: AtomicUsize,
    slots: Box<[QueueSlot]>,
}

// SAFETY: `stamp(i)` is the stamp of `slots[i]`, a fixed element of a boxed slice that
// lives as long as the storage; distinct indices are distinct elements.
unsafe impl RingStorage for HeapQueue {
    const SHARED: bool = false;

    #[inline]
    fn head(&self) -> &AtomicUsize {
        &self.head
    }

    #[inline]
    fn tail(&self) -> &AtomicUsize {
        &self.tail
    }

    #[inline]
    fn stamp(&self, index: usize) -> Option<&AtomicUsize> {
        self.slots.get(index).map(|s| &s.stamp)
    }
}

// SAFETY: `entry(i)` is the words of `slots[i]`, whose stamp `stamp(i)` returns.
unsafe impl QueueStorage for HeapQueue {
    #[inline]
    fn entry(&self, index: usize) -> Option<(&AtomicU64, &AtomicU64)> {
        self.slots.get(index).map(|s| (&s.payload, &s.origin))
    }
}

/// A standard number's two words on the heap, side by side: a raise writes both and
/// the take reads both, so they travel between the two in one cache line.
#[derive(Debug)]
#[repr(C)]
struct StandardWords {
    count: AtomicU64,
    origin: AtomicU64,
}

/// A target's words on the heap.
#[derive(Debug)]
pub(crate) struct Heap {
    words: CachePadded<Words>,
    standard: Box<[StandardWords]>,
    ignored: Box<[AtomicU64]>,
    queues: Box<[Ring<HeapQueue>]>,
}

impl Heap {
    /// Storage whose queued numbers hold up to `depth` entries each (`depth ≥ 1`).
    pub(crate) fn new(depth: usize) -> Self {
        let zeros = |len: usize| (0..len).map(|_| AtomicU64::new(0)).collect();
        let queues = (0..QUEUED)
            .map(|_| {
                let slots = (0..depth)
                    .map(|i| QueueSlot {
                        stamp: AtomicUsize::new(initial_stamp(i)),
                        payload: AtomicU64::new(0),
                        origin: AtomicU64::new(0),
                    })
                    .collect();
                let storage = HeapQueue {
                    head: AtomicUsize::new(0),
                    tail: AtomicUsize::new(0),
                    slots,
                };
                Ring::new(storage, depth)
            })
            .collect();
        Heap {
            words: CachePadded::new(Words::new()),
            standard: (0..STANDARD)
                .map(|_| StandardWords {
                    count: AtomicU64::new(0),
                    origin: AtomicU64::new(0),
                })
                .collect(),
            ignored: zeros(SIGNALS as usize),
            queues,
        }
    }
}

// SAFETY: each method indexes a boxed slice allocated once with `n - 1` (or
// `n - FIRST_QUEUED`), distinct for distinct `n`; out-of-range numbers panic (callers pass
// numbers a `Signal` validated).
unsafe impl SignalStorage for Heap {
    type Queue = HeapQueue;

    #[inline]
    fn words(&self) -> &Words {
        &self.words
    }

    #[inline]
    fn count(&self, n: u8) -> &AtomicU64 {
        &self.standard[usize::from(n) - 1].count
    }

    #[inline]
    fn origin(&self, n: u8) -> &AtomicU64 {
        &self.standard[usize::from(n) - 1].origin
    }

    #[inline]
    fn ignored(&self, n: u8) -> &AtomicU64 {
        &self.ignored[usize::from(n) - 1]
    }

    #[inline]
    fn queue(&self, n: u8) -> &Ring<HeapQueue> {
        &self.queues[usize::from(n - FIRST_QUEUED)]
    }
}
