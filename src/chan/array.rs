//! The in-process bounded flavor: the [`ring`](super::ring) on the heap.
//!
//! Each slot holds its stamp next to its message, so a send or receive touches one cache
//! line for the slot plus the contended position; `head` and `tail` sit on separate cache
//! lines. No allocation happens after construction.
//!
//! Slots start on cache-line boundaries and small ones are padded to a whole line, so
//! two neighbouring slots never share a line. A sender writing slot `i + 1` therefore
//! does not take away the line a receiver is reading slot `i` from, which is what happens
//! when both sides run concurrently close together (a nearly empty or nearly full ring):
//! measured on a two-thread spin loop over `u64`s, 34–44 ns/message became 17–19. The
//! price is memory: a slot takes at least 64 bytes, so a `bounded::<u64>(1024)` ring
//! takes 64 KiB instead of 16 KiB. Rigtorp's `MPMCQueue` pads its slots for the same
//! reason.
//!
//! # A full ring refills in batches
//!
//! A sender that finds the ring full waits, while it spins, until half the ring (at most
//! 512 slots, see [`Ring::send_batch_free`]) is free again, instead of taking each slot
//! the moment a receiver frees it. Taking slots one by one keeps a fast sender right
//! behind the receiver: every slot the receiver frees is one the sender is polling, so
//! each receive has to take its cache line back, and the ring stays full and runs at
//! the speed of that exchange (measured on this project's 2-core VM,
//! `bounded::<u64>(1024)`, one sender and one receiver: 46–60 ns/message, with the
//! sender waiting on about one message in twenty). Waiting for a batch lets the receiver
//! run over slots nobody else touches, then the sender fills the batch behind it: 7–13
//! ns/message in the same test. Linux pipes and TCP windows avoid waking a writer for a
//! sliver of room the same way.
//!
//! It does not delay the sender's message: while the sender waits for its batch the
//! ring is at least half full, so the receiver has that many messages to take before it
//! could get to the new one. The hint is only consulted while spinning; the last spin,
//! and every attempt once the sender parks, take a single free slot, so a receiver that
//! stops after freeing a few slots does not leave the sender waiting for more, and a
//! timed send gets the same attempts as before its deadline.
//!
//! # An empty ring is watched, not claimed
//!
//! The other side of the same exchange: a receiver that keeps up with its sender finds
//! the ring empty at nearly every receive. A claim that finds it empty loads `tail` to
//! tell an empty ring from a send in progress, and so takes the senders' line from the
//! sender once a message. A blocking receive therefore looks at the front slot's stamp
//! first (`recv_ready`) and claims only when it shows a message; while it waits it
//! polls that stamp alone (see `chan::recv_blocking` for the measurements: a stream of
//! 16- to 48-byte messages went from about 60 to 40 ns a message).

use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use super::ring::{Ring, RingStorage, Stall, Token, initial_stamp};
use super::unwind::Unwind;
use super::{NoSlot, Queue, Waiters};
use crate::sync::{AtomicUsize, Backoff, UnsafeCell};

/// One slot: its stamp and its message, aligned to (and so padded to a multiple of) a
/// cache line; see the module docs.
#[repr(align(64))]
struct Slot<T> {
    stamp: AtomicUsize,
    msg: UnsafeCell<MaybeUninit<T>>,
}

/// Heap storage for the ring: two padded positions and the slots.
struct HeapSlots<T> {
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
}

// SAFETY: `stamp(i)` returns the stamp of `slots[i]`, a fixed element of a boxed slice
// that lives as long as the storage; distinct indices are distinct elements.
unsafe impl<T> RingStorage for HeapSlots<T> {
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

/// A bounded channel of capacity ≥ 1.
pub(crate) struct Channel<T> {
    ring: Ring<HeapSlots<T>>,
    waiters: Waiters,
}

// SAFETY: messages move between threads through the slots, so `T: Send` is required; all
// shared state is atomics plus slot cells whose access the ring's claims make exclusive.
unsafe impl<T: Send> Send for Channel<T> {}
// SAFETY: as above; `&Channel` only gives access through the claim protocol.
unsafe impl<T: Send> Sync for Channel<T> {}

impl<T> Channel<T> {
    pub(crate) fn with_capacity(cap: usize) -> Self {
        let slots = (0..cap)
            .map(|i| Slot {
                stamp: AtomicUsize::new(initial_stamp(i)),
                msg: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        let storage = HeapSlots {
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
            slots,
        };
        Channel {
            ring: Ring::new(storage, cap),
            waiters: Waiters::new(),
        }
    }

    #[inline]
    fn slot(&self, token: Token) -> &Slot<T> {
        // SAFETY: the ring only hands out tokens for indices that `stamp` accepted,
        // which are the indices of `slots`.
        unsafe { self.ring.storage().slots.get_unchecked(token.index) }
    }
}

/// A slot claimed for a send.
pub(crate) struct SendSlot<'a>(Token<'a>);
/// A slot claimed for a receive.
pub(crate) struct RecvSlot<'a>(Token<'a>);

impl<T> Queue<T> for Channel<T> {
    type SendSlot<'a>
        = SendSlot<'a>
    where
        Self: 'a;
    type RecvSlot<'a>
        = RecvSlot<'a>
    where
        Self: 'a;

    #[inline]
    fn claim_send(&self) -> Result<SendSlot<'_>, NoSlot> {
        let backoff = Backoff::new();
        loop {
            match self.ring.start_send(|_| {}) {
                Ok(token) => return Ok(SendSlot(token)),
                Err(Stall::Blocked) => return Err(NoSlot::Wait),
                Err(Stall::Disconnected) => return Err(NoSlot::Disconnected),
                // In-process storage is never corrupt; Busy: a receiver is mid-read.
                Err(Stall::Busy | Stall::Corrupt) => backoff.snooze(),
            }
        }
    }

    #[inline]
    fn write(&self, slot: SendSlot<'_>, msg: T) {
        self.write_quiet(slot, msg);
        self.waiters.receivers.notify_one();
    }

    #[inline]
    fn write_quiet(&self, SendSlot(token): SendSlot<'_>, msg: T) {
        // SAFETY: the claim made this slot ours until `commit_send`; it holds no message
        // (its previous message was read before the stamp let us claim it).
        self.slot(token)
            .msg
            .with_mut(|p| unsafe { p.write(MaybeUninit::new(msg)) });
        self.ring.commit_send(token);
    }

    #[inline]
    fn claim_recv_if(&self, mut open: impl FnMut() -> bool) -> Result<RecvSlot<'_>, NoSlot> {
        let backoff = Backoff::new();
        loop {
            match self.ring.start_recv_if(|_| {}, &mut open) {
                Ok(token) => return Ok(RecvSlot(token)),
                Err(Stall::Blocked) => return Err(NoSlot::Wait),
                Err(Stall::Disconnected) => return Err(NoSlot::Disconnected),
                Err(Stall::Busy | Stall::Corrupt) => backoff.snooze(),
            }
        }
    }

    #[inline]
    fn read(&self, slot: RecvSlot<'_>) -> T {
        let msg = self.read_quiet(slot);
        self.waiters.senders.notify_one();
        msg
    }

    #[inline]
    fn read_quiet(&self, RecvSlot(token): RecvSlot<'_>) -> T {
        // SAFETY: the claim made this slot ours until `commit_recv`; its stamp said a
        // committed message is in it, and the Acquire load made the write visible.
        let msg = self
            .slot(token)
            .msg
            .with(|p| unsafe { p.read().assume_init() });
        self.ring.commit_recv(token);
        msg
    }

    #[inline]
    fn send_batch_free(&self) -> bool {
        self.ring.send_batch_free()
    }

    #[inline]
    fn recv_ready(&self) -> bool {
        self.ring.may_proceed(false)
    }

    #[inline]
    fn received(&self) -> usize {
        self.ring.received()
    }

    fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    fn len(&self) -> usize {
        self.ring.len()
    }

    fn capacity(&self) -> Option<usize> {
        Some(self.ring.capacity())
    }

    fn is_disconnected(&self) -> bool {
        self.ring.is_disconnected()
    }

    fn disconnect_senders(&self) {
        if self.ring.disconnect() {
            self.waiters.notify_all();
        }
    }

    fn disconnect_receivers(&self) {
        let mut unwind = Unwind::new();
        if self.ring.disconnect() {
            unwind.run(|| self.waiters.notify_all());
        }
        self.discard_all(&mut unwind);
        unwind.finish();
    }
}

impl<T> Channel<T> {
    /// Drops every queued message (the last receiver is gone). A message whose `Drop`
    /// panics does not stop the others: its panic is kept in `unwind` (see
    /// `chan::unwind`).
    fn discard_all(&self, unwind: &mut Unwind) {
        self.ring.discard_all(|index| {
            let slot = &self.ring.storage().slots[index];
            // SAFETY: `discard_all` calls us only for committed slots, with no receiver
            // left to race with, after it has freed the slot (so no later walk calls us
            // for it again); the message is dropped once, here, whether or not its
            // `Drop` panics.
            unwind.run(|| slot.msg.with_mut(|p| unsafe { (*p).assume_init_drop() }));
        });
    }
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        self.ring.disconnect();
        // Normally empty: the last receiver's `discard_all` emptied it.
        let mut unwind = Unwind::new();
        self.discard_all(&mut unwind);
        unwind.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ring::discard_all` frees each slot and moves `head` before handing the slot to
    /// `discard`: if `discard` panics, the ring is consistent, and a later call goes on
    /// with the next message without handing any slot over twice.
    #[test]
    fn discard_publishes_progress_before_each_message() {
        let ring = &Channel::<()>::with_capacity(4).ring;
        // Move the positions on, so the queued messages wrap around.
        for _ in 0..3 {
            ring.commit_send(ring.start_send(|_| {}).unwrap());
            ring.commit_recv(ring.start_recv(|_| {}).unwrap());
        }
        for _ in 0..3 {
            ring.commit_send(ring.start_send(|_| {}).unwrap());
        }
        ring.disconnect();
        let mut seen = vec![];
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ring.discard_all(|index| {
                seen.push(index);
                assert_ne!(index, 0, "the second message panics");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(ring.len(), 1);
        ring.discard_all(|index| seen.push(index));
        assert_eq!(seen, [3, 0, 1]);
        assert_eq!(ring.len(), 0);
    }

    /// The claims' shortcut for the next position agrees with the general one, for
    /// capacities with and without spare index bits.
    #[test]
    fn next_is_advance_by_one() {
        for cap in 1..=9 {
            Channel::<()>::with_capacity(cap)
                .ring
                .assert_next_is_advance_by_one(4);
        }
    }

    /// The spinning receiver's hint, `recv_ready`, is true exactly when a message is
    /// queued, from every offset of `head` within a lap, across laps; capacities with (3)
    /// and without (1, 4) spare index bits.
    #[test]
    fn recv_ready_when_a_message_is_queued() {
        for cap in [1, 3, 4] {
            let chan = Channel::<u32>::with_capacity(cap);
            for round in 0..3 * cap as u32 {
                assert!(!chan.recv_ready(), "cap {cap}, empty, round {round}");
                for i in 0..=round % cap as u32 {
                    chan.try_send(i).unwrap();
                    assert!(chan.recv_ready(), "cap {cap}, round {round}");
                }
                while chan.recv_ready() {
                    chan.try_recv().unwrap();
                }
                assert_eq!(chan.len(), 0, "cap {cap}, round {round}");
            }
        }
    }

    /// `Ring::is_free_ahead(a)` is true exactly when more than `a` slots are free, and
    /// `Ring::send_batch_free` when a batch (half the ring, at least one slot) is, from
    /// every offset of `head` and `tail` within a lap, across laps; capacities with (3, 5)
    /// and without (1, 4) spare index bits.
    #[test]
    fn free_ahead_counts_free_slots() {
        for cap in [1, 3, 4, 5] {
            let ring = &Channel::<()>::with_capacity(cap).ring;
            let mut queued = 0;
            for _offset in 0..2 * cap + 1 {
                for target in (0..=cap).chain((0..cap).rev()) {
                    while queued < target {
                        ring.commit_send(ring.start_send(|_| {}).unwrap());
                        queued += 1;
                    }
                    while queued > target {
                        ring.commit_recv(ring.start_recv(|_| {}).unwrap());
                        queued -= 1;
                    }
                    let free = cap - queued;
                    for ahead in 0..cap {
                        assert_eq!(
                            ring.is_free_ahead(ahead),
                            ahead < free,
                            "cap {cap}, {queued} queued, {ahead} ahead"
                        );
                    }
                    let batch = (cap / 2).max(1);
                    assert_eq!(ring.send_batch_free(), free >= batch);
                }
                // Shift both positions one slot on.
                ring.commit_send(ring.start_send(|_| {}).unwrap());
                ring.commit_recv(ring.start_recv(|_| {}).unwrap());
            }
        }
    }
}
