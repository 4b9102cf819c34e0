//! The unbounded flavor: a lock-free linked list of blocks.
//!
//! Messages live in blocks of `BLOCK_CAP` slots, so allocation is per block, not per
//! message. `head` and `tail` are positions (`index << SHIFT | bit`) plus a pointer to the
//! block they are in. A sender claims a position by CAS on `tail.index`; the sender that
//! claims the last slot of a block installs the next block (allocated beforehand, outside
//! the CAS loop). A receiver claims by CAS on `head.index`.
//!
//! # Freeing blocks while receivers race
//! Each slot's `state` has three bits: `WRITE` (the message is in), `READ` (a receiver has
//! finished with the slot) and `DESTROY` (the block's destroyer passed this slot while it
//! was still being read). The receiver of a block's last slot starts destroying the
//! block: it walks the other slots, and for each one not yet `READ` it sets `DESTROY` and
//! stops; the receiver of that slot, on finishing, sees `DESTROY` and continues the walk
//! from the next slot. Whoever walks past the end frees the block: exactly one thread,
//! and only after every slot is read.

use core::mem::MaybeUninit;
use core::ptr;

use crossbeam_utils::CachePadded;

use super::{Queue, Waiters};
use crate::error::{TryRecvError, TrySendError};
use crate::sync::{AtomicPtr, AtomicUsize, Backoff, Ordering, UnsafeCell, fence};

/// Slot state bit: the message has been written.
const WRITE: usize = 1;
/// Slot state bit: the message has been read (the slot is done).
const READ: usize = 2;
/// Slot state bit: the block's destruction reached this slot while it was being read.
const DESTROY: usize = 4;

/// Positions per block: `BLOCK_CAP` slots plus one "between blocks" position, during
/// which the next block is being installed. Small under loom so models cross blocks.
#[cfg(not(loom))]
const LAP: usize = 32;
#[cfg(loom)]
const LAP: usize = 4;
/// Messages per block.
const BLOCK_CAP: usize = LAP - 1;
/// Low bits of a position reserved for metadata.
const SHIFT: usize = 1;
/// In `tail.index`: the channel is disconnected. In `head.index`: head and tail are in
/// different blocks, so the receiver need not check the tail (it knows a next block exists).
const MARK_BIT: usize = 1;

struct Slot<T> {
    msg: UnsafeCell<MaybeUninit<T>>,
    state: AtomicUsize,
}

impl<T> Slot<T> {
    /// Waits until a sender that claimed this slot has written it.
    fn wait_write(&self) {
        let backoff = Backoff::new();
        while self.state.load(Ordering::Acquire) & WRITE == 0 {
            backoff.snooze();
        }
    }
}

struct Block<T> {
    next: AtomicPtr<Block<T>>,
    slots: [Slot<T>; BLOCK_CAP],
}

impl<T> Block<T> {
    fn new() -> Box<Self> {
        #[cfg(not(loom))]
        {
            // SAFETY: all-zero bytes are a valid `Block`: a null `AtomicPtr`, zero
            // `AtomicUsize` states and uninitialized `MaybeUninit` messages.
            unsafe { Box::<Self>::new_zeroed().assume_init() }
        }
        #[cfg(loom)]
        {
            Box::new(Block {
                next: AtomicPtr::new(ptr::null_mut()),
                slots: core::array::from_fn(|_| Slot {
                    msg: UnsafeCell::new(MaybeUninit::uninit()),
                    state: AtomicUsize::new(0),
                }),
            })
        }
    }

    /// Waits until the next block is installed and returns it.
    fn wait_next(&self) -> *mut Block<T> {
        let backoff = Backoff::new();
        loop {
            let next = self.next.load(Ordering::Acquire);
            if !next.is_null() {
                return next;
            }
            backoff.snooze();
        }
    }

    /// Continues destroying `this` from slot `start` (see the module docs).
    ///
    /// # Safety
    /// `this` is a live block whose slots before `start` are all read, and the caller is
    /// the thread the destruction protocol elected to continue.
    unsafe fn destroy(this: *mut Block<T>, start: usize) {
        // The last slot's receiver started the destruction, so it needs no DESTROY bit.
        for i in start..BLOCK_CAP - 1 {
            // SAFETY: the block is live: this thread holds the destruction duty.
            let slot = unsafe { &(*this).slots[i] };
            if slot.state.load(Ordering::Acquire) & READ == 0
                && slot.state.fetch_or(DESTROY, Ordering::AcqRel) & READ == 0
            {
                // That slot's receiver will continue from `i + 1`.
                return;
            }
        }
        // SAFETY: every slot is read and no one else holds the duty: we own the block.
        drop(unsafe { Box::from_raw(this) });
    }
}

struct Position<T> {
    index: AtomicUsize,
    block: AtomicPtr<Block<T>>,
}

/// An unbounded channel.
pub(crate) struct Channel<T> {
    head: CachePadded<Position<T>>,
    tail: CachePadded<Position<T>>,
    waiters: Waiters,
}

// SAFETY: messages move between threads through the slots (`T: Send`); the blocks are
// owned by the channel and freed by the protocol above.
unsafe impl<T: Send> Send for Channel<T> {}
// SAFETY: as above; shared access only goes through the claim protocol.
unsafe impl<T: Send> Sync for Channel<T> {}

/// A claimed slot: its block and offset.
struct Claim<T> {
    block: *mut Block<T>,
    offset: usize,
}

impl<T> Channel<T> {
    pub(crate) fn new() -> Self {
        Channel {
            head: CachePadded::new(Position {
                index: AtomicUsize::new(0),
                block: AtomicPtr::new(ptr::null_mut()),
            }),
            tail: CachePadded::new(Position {
                index: AtomicUsize::new(0),
                block: AtomicPtr::new(ptr::null_mut()),
            }),
            waiters: Waiters::new(),
        }
    }

    /// Claims a slot for a send; `None` if disconnected.
    fn start_send(&self) -> Option<Claim<T>> {
        let backoff = Backoff::new();
        let mut tail = self.tail.index.load(Ordering::Acquire);
        let mut block = self.tail.block.load(Ordering::Acquire);
        let mut next_block = None;
        loop {
            if tail & MARK_BIT != 0 {
                return None;
            }
            let offset = (tail >> SHIFT) % LAP;
            if offset == BLOCK_CAP {
                // Another sender is installing the next block.
                backoff.snooze();
                tail = self.tail.index.load(Ordering::Acquire);
                block = self.tail.block.load(Ordering::Acquire);
                continue;
            }
            // About to fill the block: allocate its successor before claiming, so the
            // window in which others wait for it stays short.
            if offset + 1 == BLOCK_CAP && next_block.is_none() {
                next_block = Some(Block::<T>::new());
            }
            if block.is_null() {
                // The very first message installs the first block.
                let new = Box::into_raw(Block::<T>::new());
                if self
                    .tail
                    .block
                    .compare_exchange(block, new, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    self.head.block.store(new, Ordering::Release);
                    block = new;
                } else {
                    // SAFETY: `new` came from `Box::into_raw` above and was not published.
                    next_block = Some(unsafe { Box::from_raw(new) });
                    tail = self.tail.index.load(Ordering::Acquire);
                    block = self.tail.block.load(Ordering::Acquire);
                    continue;
                }
            }
            let new_tail = tail + (1 << SHIFT);
            // SeqCst: the send's linearization point (see `chan::signal`).
            match self.tail.index.compare_exchange_weak(
                tail,
                new_tail,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if offset + 1 == BLOCK_CAP {
                        let next = Box::into_raw(next_block.take().expect("allocated above"));
                        self.tail.block.store(next, Ordering::Release);
                        self.tail.index.fetch_add(1 << SHIFT, Ordering::Release);
                        // SAFETY: `block` is live: it cannot be freed before its last
                        // slot (ours, not yet written) is read.
                        unsafe { (*block).next.store(next, Ordering::Release) };
                    }
                    return Some(Claim { block, offset });
                }
                Err(t) => {
                    tail = t;
                    block = self.tail.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Claims a slot for a receive: `Ok(None)` if empty, `Err` if empty and disconnected.
    fn start_recv(&self) -> Result<Option<Claim<T>>, TryRecvError> {
        let backoff = Backoff::new();
        let mut head = self.head.index.load(Ordering::Acquire);
        let mut block = self.head.block.load(Ordering::Acquire);
        loop {
            let offset = (head >> SHIFT) % LAP;
            if offset == BLOCK_CAP {
                // Another receiver is moving head to the next block.
                backoff.snooze();
                head = self.head.index.load(Ordering::Acquire);
                block = self.head.block.load(Ordering::Acquire);
                continue;
            }
            let mut new_head = head + (1 << SHIFT);
            if new_head & MARK_BIT == 0 {
                // SeqCst fence: see a sender's claim, or be seen by its waiter check.
                fence(Ordering::SeqCst);
                let tail = self.tail.index.load(Ordering::Relaxed);
                if head >> SHIFT == tail >> SHIFT {
                    return if tail & MARK_BIT != 0 {
                        Err(TryRecvError::Disconnected)
                    } else {
                        Ok(None)
                    };
                }
                if (head >> SHIFT) / LAP != (tail >> SHIFT) / LAP {
                    new_head |= MARK_BIT;
                }
            }
            if block.is_null() {
                // The first sender is still installing the first block.
                backoff.snooze();
                head = self.head.index.load(Ordering::Acquire);
                block = self.head.block.load(Ordering::Acquire);
                continue;
            }
            match self.head.index.compare_exchange_weak(
                head,
                new_head,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if offset + 1 == BLOCK_CAP {
                        // SAFETY: `block` is live until its last slot (ours) is read.
                        let next = unsafe { (*block).wait_next() };
                        let mut next_index = (new_head & !MARK_BIT).wrapping_add(1 << SHIFT);
                        // SAFETY: `next` was installed and cannot be freed before its
                        // slots are read, which needs head to move into it first.
                        if !unsafe { (*next).next.load(Ordering::Relaxed) }.is_null() {
                            next_index |= MARK_BIT;
                        }
                        self.head.block.store(next, Ordering::Release);
                        self.head.index.store(next_index, Ordering::Release);
                    }
                    return Ok(Some(Claim { block, offset }));
                }
                Err(h) => {
                    head = h;
                    block = self.head.block.load(Ordering::Acquire);
                    backoff.spin();
                }
            }
        }
    }

    /// Drops every queued message and frees the blocks (the last receiver is gone and
    /// the tail is marked, so no new claims happen).
    fn discard_all(&self) {
        let backoff = Backoff::new();
        let mut tail = self.tail.index.load(Ordering::Acquire);
        // Wait for a sender installing the next block to finish.
        while (tail >> SHIFT) % LAP == BLOCK_CAP {
            backoff.snooze();
            tail = self.tail.index.load(Ordering::Acquire);
        }
        let mut head = self.head.index.load(Ordering::Acquire);
        let mut block = self.head.block.swap(ptr::null_mut(), Ordering::AcqRel);
        if head >> SHIFT != tail >> SHIFT {
            // A sender advanced the tail into a first block that is still being
            // installed: wait for it.
            while block.is_null() {
                backoff.snooze();
                block = self.head.block.swap(ptr::null_mut(), Ordering::AcqRel);
            }
        }
        while head >> SHIFT != tail >> SHIFT {
            let offset = (head >> SHIFT) % LAP;
            if offset < BLOCK_CAP {
                // SAFETY: `block` is live (we own every remaining block now) and the slot
                // at `offset` was claimed by a sender; `wait_write` waits for its message.
                unsafe {
                    let slot = &(*block).slots[offset];
                    slot.wait_write();
                    slot.msg.with_mut(|p| (*p).assume_init_drop());
                }
            } else {
                // SAFETY: as above; the next block exists because the tail is past it.
                unsafe {
                    let next = (*block).wait_next();
                    drop(Box::from_raw(block));
                    block = next;
                }
            }
            head = head.wrapping_add(1 << SHIFT);
        }
        if !block.is_null() {
            // SAFETY: the last block, now empty and unreachable.
            drop(unsafe { Box::from_raw(block) });
        }
        self.head.index.store(head & !MARK_BIT, Ordering::Release);
    }
}

impl<T> Queue<T> for Channel<T> {
    #[inline]
    fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let Some(claim) = self.start_send() else {
            return Err(TrySendError::Disconnected(msg));
        };
        // SAFETY: the claim makes the slot ours to write; the block is live because its
        // slot (ours) has not been read.
        unsafe {
            let slot = &(*claim.block).slots[claim.offset];
            slot.msg.with_mut(|p| p.write(MaybeUninit::new(msg)));
            slot.state.fetch_or(WRITE, Ordering::Release);
        }
        self.waiters.receivers.notify_one();
        Ok(())
    }

    #[inline]
    fn try_recv(&self) -> Result<T, TryRecvError> {
        let claim = match self.start_recv()? {
            Some(claim) => claim,
            None => return Err(TryRecvError::Empty),
        };
        // SAFETY: the claim makes the slot ours to read; the block is live until we mark
        // the slot READ (or start its destruction).
        unsafe {
            let block = claim.block;
            let slot = &(*block).slots[claim.offset];
            slot.wait_write();
            let msg = slot.msg.with(|p| p.read().assume_init());
            if claim.offset + 1 == BLOCK_CAP {
                Block::destroy(block, 0);
            } else if slot.state.fetch_or(READ, Ordering::AcqRel) & DESTROY != 0 {
                Block::destroy(block, claim.offset + 1);
            }
            Ok(msg)
        }
    }

    fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    fn len(&self) -> usize {
        loop {
            let mut tail = self.tail.index.load(Ordering::SeqCst);
            let mut head = self.head.index.load(Ordering::SeqCst);
            if self.tail.index.load(Ordering::SeqCst) != tail {
                continue;
            }
            tail &= !((1 << SHIFT) - 1);
            head &= !((1 << SHIFT) - 1);
            // A position on a block's end is the start of the next block.
            if (tail >> SHIFT) & (LAP - 1) == LAP - 1 {
                tail = tail.wrapping_add(1 << SHIFT);
            }
            if (head >> SHIFT) & (LAP - 1) == LAP - 1 {
                head = head.wrapping_add(1 << SHIFT);
            }
            // Rebase both on head's block, then discount the end-of-block positions.
            let lap = (head >> SHIFT) / LAP;
            tail = tail.wrapping_sub((lap * LAP) << SHIFT) >> SHIFT;
            head = head.wrapping_sub((lap * LAP) << SHIFT) >> SHIFT;
            return tail - head - tail / LAP;
        }
    }

    fn capacity(&self) -> Option<usize> {
        None
    }

    fn is_disconnected(&self) -> bool {
        self.tail.index.load(Ordering::SeqCst) & MARK_BIT != 0
    }

    fn disconnect_senders(&self) {
        if self.tail.index.fetch_or(MARK_BIT, Ordering::SeqCst) & MARK_BIT == 0 {
            self.waiters.notify_all();
        }
    }

    fn disconnect_receivers(&self) {
        if self.tail.index.fetch_or(MARK_BIT, Ordering::SeqCst) & MARK_BIT == 0 {
            self.waiters.notify_all();
        }
        // Runs once: the receiver count reaches zero once. Even if the senders left
        // first, a `WeakSender` may keep the channel alive, so drop the messages now.
        self.discard_all();
    }
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        let mut head = self.head.index.load(Ordering::Relaxed) & !((1 << SHIFT) - 1);
        let tail = self.tail.index.load(Ordering::Relaxed) & !((1 << SHIFT) - 1);
        let mut block = self.head.block.load(Ordering::Relaxed);
        // SAFETY: `&mut self`: no other thread touches the channel; every position
        // between head and tail holds a written message (all senders are gone).
        unsafe {
            while head != tail {
                let offset = (head >> SHIFT) % LAP;
                if offset < BLOCK_CAP {
                    (*block).slots[offset]
                        .msg
                        .with_mut(|p| (*p).assume_init_drop());
                } else {
                    let next = (*block).next.load(Ordering::Relaxed);
                    drop(Box::from_raw(block));
                    block = next;
                }
                head = head.wrapping_add(1 << SHIFT);
            }
            if !block.is_null() {
                drop(Box::from_raw(block));
            }
        }
    }
}
