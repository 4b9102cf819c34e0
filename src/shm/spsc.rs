//! The single-producer single-consumer mode of the shared ring
//! ([`Options::spsc`](super::Options::spsc)): one sender handle family and one receiver
//! handle family at a time, and two cache-line transfers per message instead of three.
//!
//! Generic over where the slots live, like [`super::protocol`]: production keeps them in
//! the mapped segment, the loom models on the heap, and both run exactly this code.
//!
//! # Why a mode of its own
//! In the many-to-many ring ([`crate::chan::ring`]) every slot changes hands twice per
//! lap: the sender's commit publishes it (its line goes to the receiver), and the
//! receiver's commit frees it by rewriting its stamp (the line comes back writable, for
//! the receiver). When the sender then reuses the slot, or, in a ping-pong, the reply's
//! slot is polled by the peer, the line moves a third time. Here only the producer ever
//! writes a slot: it writes the payload and publishes it with one stamp store, so one
//! transfer carries the data and its publication; the consumer frees slots by moving
//! `head`, a word of its own, which the producer reads only when its cached copy says the
//! ring is full, that is, about once a lap.
//!
//! # Positions and stamps
//! The ring's positions, stamps and layout are the many-to-many ring's (so `len`,
//! `shm::inspect` and the tools read them the same way):
//! - `tail` is the producer's next position; it is only ever written by the producer,
//!   *after* the stamp that publishes the position before it;
//! - the stamp of the slot at position `pos` is `pos + 1` once the producer published a
//!   message there (its initial value, and every earlier lap's, differs);
//! - `head` is the consumer's next position; the consumer moves it past a slot after
//!   reading it, and the producer reuses a slot only once `head` is past it (a slot is
//!   free while `tail` is less than a lap past `head`).
//!
//! # Steps
//! - [`send`]: with the cached `head` (or, if that says full, `head` loaded with
//!   Acquire, which pairs with the consumer's commit, so the consumer's reads of the slot
//!   happen before this write), write the payload, publish it with a SeqCst swap of the
//!   stamp (Release for the consumer's Acquire; SeqCst for the futex waiter check that
//!   follows, see [`super::futex`]), then store `tail`.
//! - [`recv`]: load the stamp at `head` with Acquire (pairs with the publish); if it is
//!   `head + 1`, read the payload, then commit with a SeqCst swap of `head` (Release for
//!   the producer's Acquire; SeqCst for the waiter check, as above).
//!
//! Threads of one handle family take turns through a process-local flag ([`Family`]);
//! no other process ever sees it, and a process that dies takes its turn with it.
//!
//! # Crashes
//! Each side changes the shared state with one store that completes its operation (the
//! producer's stamp, the consumer's `head`), so a process killed at any instruction
//! leaves the ring consistent: a message is published whole or not at all, and read and
//! freed, or still queued. There are no claims to reclaim (no intents are recorded, and
//! the peer table's recovery leaves this ring alone). One step is left to the next
//! producer: a producer killed between its publish and its `tail` store leaves `tail`
//! one position short; a producer that attaches first moves `tail` past every published
//! position ([`recover_tail`]), so it never writes a slot the consumer has yet to read. A
//! consumer killed after reading a message and before its commit leaves the message
//! queued: the next consumer receives it (the dead one's `recv` never returned it).
//!
//! Only one family per side may be attached, and that is enforced at attach time by an
//! exclusive lock per side (see `shm::peers`), which the kernel releases when its holder
//! dies: a second sender (receiver) is refused while the first lives, and takes over
//! from a dead one.
//!
//! # Hostile memory
//! Every position read is checked ([`Ring::index_of`], [`Ring::distance`]) before a slot
//! is addressed: a corrupt one is [`Stall::Corrupt`]. A stamp that reads anything but
//! the one published value is "nothing here yet". A receive that finds messages whose
//! `read` fails consumes at most [`SKIP_LIMIT`] of them before reporting
//! [`Stall::Busy`]; every other loop runs at most once per slot of the ring.

use crate::chan::ring::{Ring, RingStorage, Stall};
use crate::sync::{AtomicBool, AtomicUsize, Backoff, Ordering, after_seqcst_rmw};

/// How many messages one receive consumes whose `read` returned `None` (only a hostile
/// peer writes such messages) before giving up.
const SKIP_LIMIT: usize = 1 << 12;

/// The process-local state of one handle family of a single-producer ring: its threads'
/// turn flag and, for the producer, the last `head` it loaded.
#[derive(Debug)]
pub(crate) struct Family {
    /// Set while a thread of this family is inside an operation.
    busy: AtomicBool,
    /// The producer's copy of the consumer's `head`: the consumer is at least this far.
    head: AtomicUsize,
}

/// One thread's turn at the family's operations; gives it back when dropped.
struct Turn<'a>(&'a AtomicBool);

impl Drop for Turn<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Family {
    /// A family whose producer last saw the consumer at `head`.
    pub(crate) fn new(head: usize) -> Self {
        Family {
            busy: AtomicBool::new(false),
            head: AtomicUsize::new(head),
        }
    }

    /// Waits for this thread's turn. The flag is process-local and only held for one
    /// bounded operation, so the wait is bounded by other threads' operations.
    #[inline]
    fn turn(&self) -> Turn<'_> {
        // Acquire: the previous holder's accesses (its cached `head`) happen before ours.
        if self.busy.swap(true, Ordering::Acquire) {
            self.wait_turn();
        }
        Turn(&self.busy)
    }

    #[cold]
    #[inline(never)]
    fn wait_turn(&self) {
        let backoff = Backoff::new();
        loop {
            backoff.snooze();
            if !self.busy.load(Ordering::Relaxed) && !self.busy.swap(true, Ordering::Acquire) {
                return;
            }
        }
    }
}

/// Whether the producer has room at `tail`, judged by the cached `head` first and, if
/// that says full, by `head` itself, loaded with Acquire (and cached if `cache`):
/// `Ok(false)` when full, [`Stall::Corrupt`] for positions no ring holds.
///
/// Only a thread holding the family's turn caches (`cache`): a cached `head` was loaded
/// with Acquire by a holder of the turn, so the consumer's reads of the slots before it
/// happen before every later holder's writes (through the turn's Release and Acquire).
#[inline]
fn room<S: RingStorage>(
    ring: &Ring<S>,
    family: &Family,
    tail: usize,
    cache: bool,
) -> Result<bool, Stall> {
    let cached = family.head.load(Ordering::Relaxed);
    if ring
        .distance(cached, tail)
        .is_some_and(|d| d < ring.capacity())
    {
        return Ok(true);
    }
    let head = ring.storage().head().load(Ordering::Acquire);
    match ring.distance(head, tail) {
        Some(d) => {
            if cache {
                family.head.store(head, Ordering::Relaxed);
            }
            Ok(d < ring.capacity())
        }
        None => Err(Stall::Corrupt),
    }
}

/// Sends: writes the payload with `write(index)` into the slot at `tail` and publishes
/// it. [`Stall::Blocked`] when the ring is full, [`Stall::Corrupt`] for a position no
/// ring holds. The caller checks the futex waiter count afterwards.
#[inline]
pub(crate) fn send<S: RingStorage>(
    ring: &Ring<S>,
    family: &Family,
    write: impl FnOnce(usize),
) -> Result<(), Stall> {
    let _turn = family.turn();
    let storage = ring.storage();
    let tail = storage.tail().load(Ordering::Relaxed);
    let index = ring.index_of(tail).ok_or(Stall::Corrupt)?;
    let stamp = storage.stamp(index).ok_or(Stall::Corrupt)?;
    // Sync point: Acquire (when `head` is loaded) pairs with the consumer's commit, so
    // its read of this slot, a lap ago, happens before our write.
    if !room(ring, family, tail, true)? {
        return Err(Stall::Blocked);
    }
    write(index);
    // Sync point: the publish. Release for the consumer's Acquire stamp load; a SeqCst
    // RMW for the waiter-count check that follows (`shm::futex`).
    stamp.swap(tail.wrapping_add(1), Ordering::SeqCst);
    after_seqcst_rmw();
    // After the publish: a producer that dies before this store leaves `tail` short,
    // which the next one repairs (`recover_tail`), never ahead of a published slot.
    storage.tail().store(ring.next_pos(tail), Ordering::Release);
    Ok(())
}

/// Receives: reads the message at `head` with `read(index)` and frees its slot.
/// [`Stall::Blocked`] when nothing is published there. Messages whose `read` returns
/// `None` are consumed and the next one tried, up to [`SKIP_LIMIT`], then
/// [`Stall::Busy`].
#[inline]
pub(crate) fn recv<S: RingStorage, R>(
    ring: &Ring<S>,
    family: &Family,
    mut read: impl FnMut(usize) -> Option<R>,
) -> Result<R, Stall> {
    let _turn = family.turn();
    let storage = ring.storage();
    for _ in 0..SKIP_LIMIT {
        let head = storage.head().load(Ordering::Relaxed);
        let index = ring.index_of(head).ok_or(Stall::Corrupt)?;
        let stamp = storage.stamp(index).ok_or(Stall::Corrupt)?;
        // Sync point: Acquire pairs with the producer's publish: its payload is visible.
        if stamp.load(Ordering::Acquire) != head.wrapping_add(1) {
            return Err(Stall::Blocked);
        }
        let msg = read(index);
        // Sync point: the commit. Release for the producer's Acquire `head` load (our
        // read happens before its reuse of the slot); a SeqCst RMW for the waiter check.
        storage.head().swap(ring.next_pos(head), Ordering::SeqCst);
        after_seqcst_rmw();
        if let Some(msg) = msg {
            return Ok(msg);
        }
    }
    Err(Stall::Busy)
}

/// Whether a send may succeed now (a hint for waiters; `true` for anything unexpected,
/// so that the send itself reports it). The cached `head`, `tail`, and `head` itself
/// only if the cache says full (not cached: this thread may not hold the turn). As a waiter's re-check after its fence
/// (see [`super::futex`]), a `false` is as good as a send's: a commit whose waker missed
/// the registration is ordered before the fence, so this load of `head` sees it.
#[inline]
pub(crate) fn may_send<S: RingStorage>(ring: &Ring<S>, family: &Family) -> bool {
    let tail = ring.storage().tail().load(Ordering::Relaxed);
    room(ring, family, tail, false).unwrap_or(true)
}

/// [`may_send`] for a sender waiting on a full ring: whether a batch of slots (see
/// [`Ring::send_batch_free`]) is free again.
#[inline]
pub(crate) fn batch_free<S: RingStorage>(ring: &Ring<S>) -> bool {
    let storage = ring.storage();
    let tail = storage.tail().load(Ordering::Relaxed);
    let head = storage.head().load(Ordering::Relaxed);
    ring.distance(head, tail)
        .is_none_or(|d| d + ring.send_batch() <= ring.capacity())
}

/// Prepares the slot at `tail` for a send ([`RingStorage::prepare_claim`]: the shared
/// ring prefetches its lines for writing), before the family's turn is taken, so that
/// the fetch overlaps it.
#[inline]
pub(crate) fn prepare_send<S: RingStorage>(ring: &Ring<S>) {
    let tail = ring.storage().tail().load(Ordering::Relaxed);
    if let Some(index) = ring.index_of(tail) {
        ring.storage().prepare_claim(index);
    }
}

/// Whether a receive may succeed now: the stamp at `head` shows a message (`true` also
/// for a position no ring holds). Two relaxed loads, neither of the producer's `tail`;
/// a waiter's re-check, like [`may_send`].
#[inline]
pub(crate) fn may_recv<S: RingStorage>(ring: &Ring<S>) -> bool {
    let storage = ring.storage();
    let head = storage.head().load(Ordering::Relaxed);
    let Some(stamp) = ring.index_of(head).and_then(|i| storage.stamp(i)) else {
        return true;
    };
    stamp.load(Ordering::Relaxed) == head.wrapping_add(1)
}

/// Run by a producer family as it attaches, holding the producer's lock, before its
/// first send: moves `tail` past every position published at or after it (a producer
/// killed between its publish and its `tail` store left `tail` one short). At most one
/// lap of slots is looked at; a corrupt position stops the walk. Returns the consumer's
/// `head`, the new family's cached one.
pub(crate) fn recover_tail<S: RingStorage>(ring: &Ring<S>) -> usize {
    let storage = ring.storage();
    let mut tail = storage.tail().load(Ordering::Acquire);
    let start = tail;
    for _ in 0..ring.capacity() {
        let Some(stamp) = ring.index_of(tail).and_then(|i| storage.stamp(i)) else {
            break;
        };
        if stamp.load(Ordering::Acquire) != tail.wrapping_add(1) {
            break;
        }
        tail = ring.next_pos(tail);
    }
    if tail != start {
        storage.tail().store(tail, Ordering::Release);
    }
    storage.head().load(Ordering::Acquire)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::chan::ring::initial_stamp;

    /// Heap storage; with `republish`, every stamp lookup first publishes a message at
    /// the current `head`, as a peer that keeps writing stamps would.
    struct Heap {
        head: AtomicUsize,
        tail: AtomicUsize,
        stamps: Vec<AtomicUsize>,
        republish: bool,
    }

    // SAFETY: `stamp(i)` is element `i` of a vector that lives as long as `self`.
    unsafe impl RingStorage for Heap {
        const SHARED: bool = true;

        fn head(&self) -> &AtomicUsize {
            &self.head
        }

        fn tail(&self) -> &AtomicUsize {
            &self.tail
        }

        fn stamp(&self, index: usize) -> Option<&AtomicUsize> {
            let stamp = self.stamps.get(index)?;
            if self.republish {
                stamp.store(self.head.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            Some(stamp)
        }
    }

    fn ring(cap: usize, republish: bool) -> Ring<Heap> {
        let heap = Heap {
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            stamps: (0..cap)
                .map(|i| AtomicUsize::new(initial_stamp(i)))
                .collect(),
            republish,
        };
        Ring::new(heap, cap)
    }

    /// Lap after lap: full at `cap`, empty at 0, in order; the hints agree.
    #[test]
    fn laps_in_order() {
        for cap in [1, 2, 4] {
            let ring = ring(cap, false);
            let (producer, consumer) = (Family::new(0), Family::new(0));
            let mut payloads = vec![0; cap];
            let mut next = 0;
            for lap in 0..5 {
                for _ in 0..cap {
                    assert!(may_send(&ring, &producer));
                    send(&ring, &producer, |i| payloads[i] = next).unwrap();
                    assert!(may_recv(&ring));
                    next += 1;
                }
                assert_eq!(send(&ring, &producer, |_| ()), Err(Stall::Blocked));
                assert!(!may_send(&ring, &producer));
                assert_eq!(ring.len_untrusted(), cap);
                for k in 0..cap {
                    let v = recv(&ring, &consumer, |i| Some(payloads[i])).unwrap();
                    assert_eq!(v, lap * cap + k);
                }
                assert!(!may_recv(&ring));
                assert_eq!(recv(&ring, &consumer, |_| Some(())), Err(Stall::Blocked));
                assert!(batch_free(&ring));
            }
        }
    }

    /// Positions no ring holds are `Corrupt` (never a panic, never an access out of
    /// range), and `distance` is total.
    #[test]
    fn corrupt_positions_are_refused() {
        let ring = ring(4, false);
        let family = Family::new(0);
        for bad in [4, 5, 7, 8, usize::MAX, usize::MAX - 3, (1 << 63) | 4] {
            ring.storage().tail.store(bad, Ordering::Relaxed);
            assert_eq!(
                send(&ring, &family, |_| panic!("wrote")),
                Err(Stall::Corrupt)
            );
            assert!(may_send(&ring, &family));
            ring.storage().tail.store(0, Ordering::Relaxed);
            ring.storage().head.store(bad, Ordering::Relaxed);
            assert_eq!(
                recv(&ring, &family, |_| -> Option<()> { panic!("read") }),
                Err(Stall::Corrupt)
            );
            assert!(may_recv(&ring));
            let fresh = Family::new(bad);
            assert_eq!(
                send(&ring, &fresh, |_| panic!("wrote")),
                Err(Stall::Corrupt)
            );
            ring.storage().head.store(0, Ordering::Relaxed);
            for other in [0, 3, 8, bad] {
                let _ = (ring.distance(bad, other), ring.distance(other, bad));
            }
        }
        // `head` ahead of `tail`: a lap the wrong way round.
        ring.storage().head.store(1, Ordering::Relaxed);
        assert_eq!(send(&ring, &Family::new(1), |_| ()), Err(Stall::Corrupt));
    }

    /// A peer that keeps publishing messages whose `read` fails cannot keep a receive
    /// here: it consumes at most `SKIP_LIMIT` of them and reports `Busy`.
    #[test]
    fn a_recv_of_endless_bad_messages_gives_up() {
        let ring = ring(2, true);
        let mut reads = 0;
        let r = recv(&ring, &Family::new(0), |_| -> Option<()> {
            reads += 1;
            None
        });
        assert_eq!(r, Err(Stall::Busy));
        assert_eq!(reads, SKIP_LIMIT);
    }

    /// The repair of `tail` moves past published positions only, at most a lap.
    #[test]
    fn recover_tail_moves_past_published_positions() {
        let ring = ring(4, false);
        let family = Family::new(0);
        send(&ring, &family, |_| ()).unwrap();
        // Published at 1 and 2, `tail` left at 1 (a producer that died twice over).
        ring.storage().stamps[1].store(2, Ordering::Relaxed);
        ring.storage().stamps[2].store(3, Ordering::Relaxed);
        assert_eq!(recover_tail(&ring), 0);
        assert_eq!(ring.storage().tail.load(Ordering::Relaxed), 3);
        // Every slot published for the first lap (with no receiver): one lap, no more.
        let ring = self::ring(4, false);
        for (i, stamp) in ring.storage().stamps.iter().enumerate() {
            stamp.store(i + 1, Ordering::Relaxed);
        }
        recover_tail(&ring);
        let tail = ring.storage().tail.load(Ordering::Relaxed);
        assert_eq!(ring.distance(0, tail), Some(4));
    }
}
