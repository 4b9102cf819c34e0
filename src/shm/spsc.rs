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
//! - the producer's next position is process-local ([`Family`]); the shared `tail` is
//!   only ever written by the producer, *after* the stamp that publishes the position
//!   before it, and only once every [`TAIL_STRIDE`] positions, so it may lag: observers
//!   walk the published stamps past it ([`len`], [`recover_tail`]);
//! - the stamp of the slot at position `pos` is `pos + 1` once the producer published a
//!   message there (its initial value, and every earlier lap's, differs);
//! - `head` is the consumer's next position; the consumer moves it past a slot after
//!   reading it, and the producer reuses a slot only once `head` is past it (a slot is
//!   free while the producer's position is less than a lap past `head`).
//!
//! # Steps
//! - [`send`]: with the cached `head` (or, if that says full, `head` loaded with
//!   Acquire, which pairs with the consumer's commit, so the consumer's reads of the slot
//!   happen before this write), write the payload, publish it with a Release store of
//!   the stamp (for the consumer's Acquire) followed by a light fence, or a SeqCst swap
//!   (for the futex waiter check that follows, see [`super::futex`] and [`super::asym`]),
//!   then, at the end of a stride, store `tail`.
//! - [`recv`]: load the stamp at `head` with Acquire (pairs with the publish); if it is
//!   `head + 1`, read the payload, then commit with a Release store of `head` (for the
//!   producer's Acquire) and a light fence, or a SeqCst swap (for the waiter check, as
//!   above).
//!
//! Which of the two a channel uses is fixed when it is created (the header's
//! `LIGHT_FLAG`): light fences wherever this process can issue heavy ones, since its
//! waiters must. With light fences, neither side executes a locked instruction per
//! message, which a streaming producer pays for with a stall on every message's slot
//! lines (see [`super::asym`]). Threads of one handle family take turns through
//! process-local words ([`Family`]), biased towards the thread that uses the family
//! (no locked instruction either); no other process ever sees them, and a process that
//! dies takes its turn with it.
//!
//! # Crashes
//! Each side changes the shared state with one store that completes its operation (the
//! producer's stamp, the consumer's `head`), so a process killed at any instruction
//! leaves the ring consistent: a message is published whole or not at all, and read and
//! freed, or still queued. There are no claims to reclaim (no intents are recorded, and
//! the peer table's recovery leaves this ring alone). The shared `tail` may be left
//! short by a stride (and one position), which the next producer repairs as it attaches
//! ([`recover_tail`]), so it never writes a slot the consumer has yet to read. A
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

use super::asym;
use crate::chan::ring::{Laps, Ring, RingStorage, Stall};
use crate::sync::{AtomicBool, AtomicUsize, Backoff, Ordering, after_seqcst_rmw, thread_key};

/// How many messages one receive consumes whose `read` returned `None` (only a hostile
/// peer writes such messages) before giving up.
const SKIP_LIMIT: usize = 1 << 12;

/// The producer stores the shared `tail` once every this many positions (or every
/// position, for rings with fewer slots), when it has published the last index of such a
/// stride. A store to a line of its own still costs a streaming producer about 11 ns a
/// message (two pinned processes, 64-byte messages, bare ring: 21 ns a message without
/// it, 32 with it), and only observers read `tail`: [`len`], `shm::inspect` and the next
/// producer's [`recover_tail`], which all walk the published stamps past it.
const TAIL_STRIDE: usize = 16;

/// [`Family::owner`] before any thread took a turn.
const NOBODY: usize = 0;
/// [`Family::owner`] while a thread revokes the owner's bias.
const REVOKING: usize = usize::MAX;
/// [`Family::owner`] once turns go through the lock ([`Family::busy`]).
const SHARED: usize = usize::MAX - 1;

/// The process-local state of one handle family of a single-producer ring: how its
/// threads take turns, how its side publishes (producer) or commits (consumer), and,
/// for the producer, its position and the last `head` it loaded.
///
/// # Turns
/// Only one thread of the family may be inside an operation at a time. The turn is
/// *biased* ([`asym`]): the first thread to take one becomes the family's owner and
/// takes every later turn with a store, a compiler barrier and a load (no locked
/// instruction, which would cost a streaming side as much as a SeqCst publish). Another
/// thread that wants a turn revokes the bias once: it marks the owner word
/// [`REVOKING`], issues a heavy fence, waits for the owner to leave its operation, and
/// sets [`SHARED`]; from then on every thread, the old owner included, takes turns
/// through the lock word `busy` (an atomic swap). By the asymmetric fence argument,
/// either the revoker sees the owner's `active` flag set (and waits for it to clear),
/// or the owner's re-check of the owner word sees the revocation (and it backs out).
/// Where heavy fences are not available ([`asym::available`]) the family starts shared.
#[derive(Debug)]
pub(crate) struct Family {
    /// The owner's [`thread_key`], or [`NOBODY`], [`REVOKING`], [`SHARED`].
    owner: AtomicUsize,
    /// Set by the owner (only) while it is inside an operation under its bias.
    active: AtomicBool,
    /// The lock once shared: set while a thread of this family is inside an operation.
    busy: AtomicBool,
    /// Under loom, the lock once shared: loom cannot explore spin locks (its scheduler
    /// keeps a yielding waiter running), so the models take this mutex instead.
    #[cfg(loom)]
    lock: crate::sync::Mutex<()>,
    /// The producer's copy of the consumer's `head`: the consumer is at least this far.
    head: AtomicUsize,
    /// The producer's next position (the shared `tail` lags it, see [`TAIL_STRIDE`]).
    tail: AtomicUsize,
    /// Whether the segment's sides publish and commit with light fences (see
    /// [`asym`] and the header's `LIGHT_FLAG`); otherwise with SeqCst RMWs.
    light: bool,
}

/// One thread's turn at the family's operations; gives it back when dropped: clears the
/// owner's `active` flag, or the shared lock.
enum Turn<'a> {
    Flag(&'a AtomicBool),
    #[cfg(loom)]
    Locked(crate::sync::MutexGuard<'a, ()>),
}

impl Drop for Turn<'_> {
    #[inline]
    fn drop(&mut self) {
        match self {
            // Release: this operation's accesses happen before the next holder's
            // (through its Acquire of the lock, or a revoker's Acquire of `active`).
            Turn::Flag(flag) => flag.store(false, Ordering::Release),
            #[cfg(loom)]
            Turn::Locked(_) => {}
        }
    }
}

impl Family {
    /// A producer family attaching to `ring` (holding its side's lock, see
    /// `shm::peers`): repairs `tail` ([`recover_tail`]) and starts from there.
    /// `light`: the segment's fences; `biased`: whether turns may be biased (heavy
    /// fences available in this process).
    pub(crate) fn producer<S: RingStorage>(ring: &Ring<S>, light: bool, biased: bool) -> Self {
        let (head, tail) = recover_tail(ring);
        Family::new(head, tail, light, biased)
    }

    /// A consumer family (see [`Family::producer`] for the flags).
    pub(crate) fn consumer(light: bool, biased: bool) -> Self {
        Family::new(0, 0, light, biased)
    }

    fn new(head: usize, tail: usize, light: bool, biased: bool) -> Self {
        Family {
            owner: AtomicUsize::new(if biased { NOBODY } else { SHARED }),
            active: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            #[cfg(loom)]
            lock: crate::sync::Mutex::new(()),
            head: AtomicUsize::new(head),
            tail: AtomicUsize::new(tail),
            light,
        }
    }

    /// Waits for this thread's turn: the owner's with no locked instruction, anyone
    /// else's through [`Family::turn_slow`]. Process-local, and held for one bounded
    /// operation, so the wait is bounded by other threads' operations.
    #[inline(always)]
    fn turn(&self) -> Turn<'_> {
        let me = thread_key();
        if self.owner.load(Ordering::Relaxed) == me
            && let Some(turn) = self.owner_turn(me)
        {
            return turn;
        }
        self.turn_slow(me)
    }

    /// The owner's turn (`me` read as the owner): marks it `active`, then re-checks that
    /// the bias still stands; `None` (and `active` cleared again) if it was revoked.
    #[inline(always)]
    fn owner_turn(&self, me: usize) -> Option<Turn<'_>> {
        self.active.store(true, Ordering::Relaxed);
        // Sync point: the fast side of the bias's asymmetric fence (`asym`), paired with
        // the revoker's heavy fence in `revoke`.
        asym::light();
        if self.owner.load(Ordering::Relaxed) == me {
            return Some(Turn::Flag(&self.active));
        }
        self.active.store(false, Ordering::Release);
        None
    }

    /// The turn of a thread that is not the owner (or whose bias was revoked): takes the
    /// bias if nobody has it, revokes it if another thread has it, then (shared) takes
    /// the lock.
    #[cold]
    #[inline(never)]
    fn turn_slow(&self, me: usize) -> Turn<'_> {
        let backoff = Backoff::new();
        loop {
            // Acquire: pairs with the Release store of `SHARED` (the old owner's last
            // operation happens before it).
            match self.owner.load(Ordering::Acquire) {
                SHARED => break,
                REVOKING => backoff.snooze(),
                owner if owner == me => {
                    if let Some(turn) = self.owner_turn(me) {
                        return turn;
                    }
                }
                NOBODY => {
                    let _ = self.owner.compare_exchange(
                        NOBODY,
                        me,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    );
                }
                owner => {
                    if self
                        .owner
                        .compare_exchange(owner, REVOKING, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.revoke(&backoff);
                        break;
                    }
                }
            }
        }
        #[cfg(loom)]
        return Turn::Locked(crate::sync::lock(&self.lock));
        #[cfg(not(loom))]
        {
            if self.busy.swap(true, Ordering::Acquire) {
                self.wait_lock();
            }
            Turn::Flag(&self.busy)
        }
    }

    /// Run by the thread that marked the owner word [`REVOKING`]: the heavy fence, the
    /// wait for the owner to leave its operation, then [`SHARED`].
    fn revoke(&self, backoff: &Backoff) {
        // Sync point: the slow side of the asymmetric fence. The system call does not
        // fail once this process registered (which `biased` required); were it to, it
        // is retried rather than trusted.
        while !asym::heavy() {
            crate::sync::thread::yield_now();
        }
        // Acquire: pairs with the owner's Release clear of `active`, so its operations
        // happen before ours. Bounded by the owner's operation (process-local).
        while self.active.load(Ordering::Acquire) {
            backoff.snooze();
        }
        self.owner.store(SHARED, Ordering::Release);
    }

    /// Waits for the lock (shared turns).
    #[cfg(not(loom))]
    #[cold]
    #[inline(never)]
    fn wait_lock(&self) {
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
#[inline(always)]
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

/// Sends: writes the payload with `write(index)` into the slot at the family's `tail`
/// and publishes it. [`Stall::Blocked`] when the ring is full, [`Stall::Corrupt`] for a
/// position no ring holds. The caller checks the futex waiter count afterwards.
///
/// Always inlined (with [`recv`], the turn and the room check), like the endpoint's fast
/// path it is part of: out of line, it was a call per message in the sender's loop, and
/// a streaming sender is bound by its store buffer, which a call's spills fill.
#[inline(always)]
pub(crate) fn send<S: RingStorage>(
    ring: &Ring<S>,
    family: &Family,
    write: impl FnOnce(usize),
) -> Result<(), Stall> {
    let _turn = family.turn();
    let storage = ring.storage();
    let tail = family.tail.load(Ordering::Relaxed);
    let index = ring.index_of(tail).ok_or(Stall::Corrupt)?;
    let stamp = storage.stamp(index).ok_or(Stall::Corrupt)?;
    // Sync point: Acquire (when `head` is loaded) pairs with the consumer's commit, so
    // its read of this slot, a lap ago, happens before our write.
    if !room(ring, family, tail, true)? {
        return Err(Stall::Blocked);
    }
    write(index);
    // Sync point: the publish. Release for the consumer's Acquire stamp load; then, for
    // the waiter-count check that follows (`shm::futex`), the fast side of an asymmetric
    // fence (`asym`), or a SeqCst RMW.
    if family.light {
        stamp.store(tail.wrapping_add(1), Ordering::Release);
        asym::light();
    } else {
        stamp.swap(tail.wrapping_add(1), Ordering::SeqCst);
        after_seqcst_rmw();
    }
    let next = ring.next_pos(tail);
    family.tail.store(next, Ordering::Relaxed);
    // After the publish, at the end of each stride: a producer that dies before this
    // store leaves `tail` short, which observers and the next producer walk past
    // (`published_end`), never ahead of a published slot.
    if (index + 1) % TAIL_STRIDE.min(ring.capacity()) == 0 {
        storage.tail().store(next, Ordering::Release);
    }
    Ok(())
}

/// Receives: reads the message at `head` with `read(index)` and frees its slot.
/// [`Stall::Blocked`] when nothing is published there. Messages whose `read` returns
/// `None` are consumed and the next one tried, up to [`SKIP_LIMIT`], then
/// [`Stall::Busy`].
#[inline(always)]
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
        // read happens before its reuse of the slot); then, for the waiter check, the
        // fast side of an asymmetric fence, or a SeqCst RMW, as in `send`.
        if family.light {
            storage.head().store(ring.next_pos(head), Ordering::Release);
            asym::light();
        } else {
            storage.head().swap(ring.next_pos(head), Ordering::SeqCst);
            after_seqcst_rmw();
        }
        if let Some(msg) = msg {
            return Ok(msg);
        }
    }
    Err(Stall::Busy)
}

/// Whether a send may succeed now (a hint for waiters; `true` for anything unexpected,
/// so that the send itself reports it): the family's `tail` against the cached `head`,
/// and `head` itself only if the cache says full (not cached: this thread may not hold
/// the turn). As a waiter's re-check after its fence (see [`super::futex`]), a `false`
/// is as good as a send's: a commit whose waker missed the registration is ordered
/// before the fence, so this load of `head` sees it.
#[inline]
pub(crate) fn may_send<S: RingStorage>(ring: &Ring<S>, family: &Family) -> bool {
    let tail = family.tail.load(Ordering::Relaxed);
    room(ring, family, tail, false).unwrap_or(true)
}

/// [`may_send`] for a sender waiting on a full ring: whether a batch of slots (see
/// [`Ring::send_batch_free`]) is free again.
#[inline]
pub(crate) fn batch_free<S: RingStorage>(ring: &Ring<S>, family: &Family) -> bool {
    let tail = family.tail.load(Ordering::Relaxed);
    let head = ring.storage().head().load(Ordering::Relaxed);
    ring.distance(head, tail)
        .is_none_or(|d| d + ring.send_batch() <= ring.capacity())
}

/// Prepares the slot at the family's `tail` for a send
/// ([`RingStorage::prepare_claim`]: the shared ring prefetches its lines for writing),
/// before the family's turn is taken, so that the fetch overlaps it.
#[inline]
pub(crate) fn prepare_send<S: RingStorage>(ring: &Ring<S>, family: &Family) {
    let tail = family.tail.load(Ordering::Relaxed);
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

/// The position after the last one published at or after `tail` (the shared `tail`,
/// loaded with Acquire): moved past every slot whose stamp shows it published (the
/// shared `tail` lags the producer's by less than a stride, and by one more position if
/// a producer died after a publish). At most one lap of slots is looked at; a corrupt
/// position stops the walk.
pub(crate) fn published_end<S: RingStorage>(ring: &Ring<S>, tail: usize) -> usize {
    let storage = ring.storage();
    walk_published(ring.laps(), tail, |i| {
        storage.stamp(i).map(|s| s.load(Ordering::Acquire))
    })
}

/// [`published_end`] over any reading of the stamps (`stamp_of`: the stamp of slot
/// `index`, `None` if it cannot be read): also `shm::inspect`'s, over a read-only map.
pub(crate) fn walk_published(
    laps: Laps,
    mut tail: usize,
    stamp_of: impl Fn(usize) -> Option<usize>,
) -> usize {
    for _ in 0..laps.capacity() {
        let Some(stamp) = laps.index_of(tail).and_then(&stamp_of) else {
            break;
        };
        if stamp != tail.wrapping_add(1) {
            break;
        }
        tail = laps.next(tail);
    }
    tail
}

/// How many messages are queued (a hint under concurrent use; 0 for positions no ring
/// holds): from `head` to the end of the published positions ([`published_end`]).
pub(crate) fn len<S: RingStorage>(ring: &Ring<S>) -> usize {
    let tail = published_end(ring, ring.storage().tail().load(Ordering::Acquire));
    let head = ring.storage().head().load(Ordering::Acquire);
    ring.distance(head, tail).unwrap_or(0)
}

/// Run by a producer family as it attaches, holding the producer's lock, before its
/// first send: moves `tail` past every position published at or after it
/// ([`published_end`]). Returns the consumer's `head` and the new `tail`, the new
/// family's cached `head` and position.
pub(crate) fn recover_tail<S: RingStorage>(ring: &Ring<S>) -> (usize, usize) {
    let storage = ring.storage();
    let start = storage.tail().load(Ordering::Acquire);
    let tail = published_end(ring, start);
    if tail != start {
        storage.tail().store(tail, Ordering::Release);
    }
    (storage.head().load(Ordering::Acquire), tail)
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
        for (cap, light, biased) in [
            (1, true, true),
            (2, false, false),
            (4, true, false),
            (32, false, true),
        ] {
            let ring = ring(cap, false);
            let (producer, consumer) = (
                Family::producer(&ring, light, biased),
                Family::consumer(light, biased),
            );
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
                assert_eq!(len(&ring), cap);
                for k in 0..cap {
                    let v = recv(&ring, &consumer, |i| Some(payloads[i])).unwrap();
                    assert_eq!(v, lap * cap + k);
                }
                assert!(!may_recv(&ring));
                assert_eq!(len(&ring), 0);
                assert_eq!(recv(&ring, &consumer, |_| Some(())), Err(Stall::Blocked));
                assert!(batch_free(&ring, &producer));
            }
        }
    }

    /// Positions no ring holds are `Corrupt` (never a panic, never an access out of
    /// range), and `distance` is total.
    #[test]
    fn corrupt_positions_are_refused() {
        let ring = ring(4, false);
        for bad in [4, 5, 7, 8, usize::MAX, usize::MAX - 3, (1 << 63) | 4] {
            // A producer attaching to a corrupt `tail` keeps it, and refuses to send.
            ring.storage().tail.store(bad, Ordering::Relaxed);
            let family = Family::producer(&ring, true, true);
            assert_eq!(
                send(&ring, &family, |_| panic!("wrote")),
                Err(Stall::Corrupt)
            );
            assert!(may_send(&ring, &family));
            assert_eq!(len(&ring), 0);
            ring.storage().tail.store(0, Ordering::Relaxed);
            ring.storage().head.store(bad, Ordering::Relaxed);
            let consumer = Family::consumer(true, true);
            assert_eq!(
                recv(&ring, &consumer, |_| -> Option<()> { panic!("read") }),
                Err(Stall::Corrupt)
            );
            assert!(may_recv(&ring));
            assert_eq!(len(&ring), 0);
            // A corrupt `head` seen by a producer that needs it.
            let fresh = Family::producer(&ring, false, false);
            fresh.head.store(bad, Ordering::Relaxed);
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
        let family = Family::producer(&ring, true, true);
        assert_eq!(send(&ring, &family, |_| ()), Err(Stall::Corrupt));
    }

    /// A peer that keeps publishing messages whose `read` fails cannot keep a receive
    /// here: it consumes at most `SKIP_LIMIT` of them and reports `Busy`.
    #[test]
    fn a_recv_of_endless_bad_messages_gives_up() {
        let ring = ring(2, true);
        let mut reads = 0;
        let r = recv(&ring, &Family::consumer(true, true), |_| -> Option<()> {
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
        let family = Family::producer(&ring, true, true);
        send(&ring, &family, |_| ()).unwrap();
        // Mid-stride: the shared `tail` is not stored yet, the walk finds the message.
        assert_eq!(ring.storage().tail.load(Ordering::Relaxed), 0);
        assert_eq!(len(&ring), 1);
        // Published at 1 and 2 as well (a producer that died twice over).
        ring.storage().stamps[1].store(2, Ordering::Relaxed);
        ring.storage().stamps[2].store(3, Ordering::Relaxed);
        assert_eq!(recover_tail(&ring), (0, 3));
        assert_eq!(ring.storage().tail.load(Ordering::Relaxed), 3);
        assert_eq!(len(&ring), 3);
        // Every slot published for the first lap (with no receiver): one lap, no more.
        let ring = self::ring(4, false);
        for (i, stamp) in ring.storage().stamps.iter().enumerate() {
            stamp.store(i + 1, Ordering::Relaxed);
        }
        recover_tail(&ring);
        let tail = ring.storage().tail.load(Ordering::Relaxed);
        assert_eq!(ring.distance(0, tail), Some(4));
        assert_eq!(len(&ring), 4);
    }

    /// The shared `tail` is stored at the end of each stride, and `len` is exact in
    /// between.
    #[test]
    fn tail_is_stored_once_a_stride() {
        let ring = ring(64, false);
        let family = Family::producer(&ring, true, true);
        for n in 1..=40 {
            send(&ring, &family, |_| ()).unwrap();
            let shared = ring.storage().tail.load(Ordering::Relaxed);
            assert_eq!(shared, n / TAIL_STRIDE * TAIL_STRIDE);
            assert_eq!(len(&ring), n);
        }
    }

    /// A second thread of a family revokes the first one's bias; turns then go
    /// through the lock, for both, and every message arrives once, in order.
    #[test]
    fn a_second_thread_revokes_the_bias() {
        let ring = ring(8, false);
        let producer = Family::producer(&ring, true, true);
        let consumer = Family::consumer(true, true);
        send(&ring, &producer, |_| ()).unwrap();
        let owner = producer.owner.load(Ordering::Relaxed);
        assert!(owner != NOBODY && owner != SHARED);
        std::thread::scope(|s| {
            s.spawn(|| send(&ring, &producer, |_| ()).unwrap());
        });
        assert_eq!(producer.owner.load(Ordering::Relaxed), SHARED);
        send(&ring, &producer, |_| ()).unwrap();
        assert!(!producer.busy.load(Ordering::Relaxed));
        assert!(!producer.active.load(Ordering::Relaxed));
        for _ in 0..3 {
            recv(&ring, &consumer, |_| Some(())).unwrap();
        }
        assert_eq!(recv(&ring, &consumer, |_| Some(())), Err(Stall::Blocked));
        // Without heavy fences a family starts shared.
        assert_eq!(
            Family::consumer(false, false).owner.load(Ordering::Relaxed),
            SHARED
        );
    }
}
