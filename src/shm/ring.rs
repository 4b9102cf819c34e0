//! The ring in the segment: [`RingStorage`] over offsets into the mapping, and the
//! payload copies in and out of slots.
//!
//! Every index is checked against the capacity before a slot address is formed, and
//! every payload copy is bounded by the layout's payload size, so corrupted positions or
//! lengths can only select an in-bounds slot or be rejected. Payloads are copied with
//! relaxed atomic loads and stores (8 bytes at a time, then single bytes), so a peer
//! writing the same bytes concurrently is a race on atomics, never a data race.

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::header::{Layout, SLOT_LEN, SLOT_STAMP, SLOT_TAG};
use super::protocol::Slots;
use crate::chan::ring::RingStorage;
use crate::sync::AtomicUsize;

/// The ring's storage: pointers into a mapping that outlives it (the `Segment` owning
/// both unmaps only when dropped).
#[derive(Debug)]
pub(crate) struct ShmSlots {
    head: NonNull<AtomicUsize>,
    tail: NonNull<AtomicUsize>,
    /// Slot 0.
    slots: NonNull<u8>,
    cap: usize,
    slot_size: usize,
    payload_offset: usize,
    payload_size: usize,
}

// SAFETY: the pointers refer to a shared mapping whose contents are only accessed through
// atomics; nothing is tied to the creating thread.
unsafe impl Send for ShmSlots {}
// SAFETY: as above: all access through `&self` is atomic.
unsafe impl Sync for ShmSlots {}

impl ShmSlots {
    /// # Safety
    /// `base` must be the start of a live mapping of at least `layout.total_size` bytes,
    /// aligned to at least `layout.slot_align` (a page), that outlives the returned value.
    pub(crate) unsafe fn new(base: NonNull<u8>, layout: &Layout, ring_offset: usize) -> Self {
        // SAFETY (all three `add`s): `ring_offset + 128 < slots_offset` and
        // `slots_offset < total_size` by construction of the layout, so every pointer is
        // inside the mapping, and each offset is a multiple of 8 (the layout rounds them)
        // from a page-aligned base, as `AtomicUsize` needs.
        unsafe {
            ShmSlots {
                head: base.add(ring_offset).cast(),
                tail: base.add(ring_offset + 128).cast(),
                slots: base.add(layout.slots_offset),
                cap: layout.capacity,
                slot_size: layout.slot_size,
                payload_offset: layout.payload_offset,
                payload_size: layout.fingerprint.size,
            }
        }
    }

    /// The address of slot `index`'s byte `offset`, if `index` is in range.
    #[inline]
    fn at(&self, index: usize, offset: usize) -> Option<NonNull<u8>> {
        if index >= self.cap {
            return None;
        }
        // SAFETY: `index < cap`, so `index * slot_size + offset < cap * slot_size` for any
        // `offset < slot_size` (callers pass control-word offsets or the payload offset),
        // and the slots area of `cap * slot_size` bytes lies inside the mapping.
        Some(unsafe { self.slots.add(index * self.slot_size + offset) })
    }

    /// The atomic at `offset` in slot `index`.
    #[inline]
    fn word<A>(&self, index: usize, offset: usize) -> Option<&A> {
        // SAFETY: `at` checked the index; the control-word offsets are 8-aligned within an
        // 8-aligned slot, the mapping lives as long as `self`, and the memory is only ever
        // accessed atomically.
        self.at(index, offset)
            .map(|p| unsafe { p.cast::<A>().as_ref() })
    }

    /// The message length word of slot `index`.
    pub(crate) fn len_word(&self, index: usize) -> Option<&AtomicU32> {
        self.word(index, SLOT_LEN)
    }

    /// The payload capacity of a slot, in bytes.
    pub(crate) fn payload_size(&self) -> usize {
        self.payload_size
    }

    /// Copies `src` into the payload of slot `index`. `src` longer than the payload, or an
    /// index out of range, copies nothing (callers check lengths first).
    ///
    /// # Safety
    /// `src` must point to `len` initialised bytes.
    pub(crate) unsafe fn write_payload(&self, index: usize, src: *const u8, len: usize) {
        if len > self.payload_size {
            return;
        }
        let Some(dst) = self.at(index, self.payload_offset) else {
            return;
        };
        let words = len / 8;
        for w in 0..words {
            // SAFETY: `w * 8 + 8 <= len` bytes of `src` are readable (the caller's
            // contract); the destination word is inside the payload (`len <=
            // payload_size`) and 8-aligned (the payload offset is a multiple of 8).
            unsafe {
                let v = src.add(w * 8).cast::<u64>().read_unaligned();
                dst.add(w * 8)
                    .cast::<AtomicU64>()
                    .as_ref()
                    .store(v, Ordering::Relaxed);
            }
        }
        for b in words * 8..len {
            // SAFETY: `b < len`, in bounds of both, as above.
            unsafe {
                let v = src.add(b).read();
                dst.add(b)
                    .cast::<AtomicU8>()
                    .as_ref()
                    .store(v, Ordering::Relaxed);
            }
        }
    }

    /// Copies `len` bytes of the payload of slot `index` to `dst`; `false` (nothing
    /// copied) if `len` exceeds the payload or the index is out of range.
    ///
    /// # Safety
    /// `dst` must be valid for writing `len` bytes.
    pub(crate) unsafe fn read_payload(&self, index: usize, dst: *mut u8, len: usize) -> bool {
        if len > self.payload_size {
            return false;
        }
        let Some(src) = self.at(index, self.payload_offset) else {
            return false;
        };
        let words = len / 8;
        for w in 0..words {
            // SAFETY: mirror of `write_payload`: both ranges are in bounds, the source
            // word is 8-aligned, the destination may be unaligned.
            unsafe {
                let v = src
                    .add(w * 8)
                    .cast::<AtomicU64>()
                    .as_ref()
                    .load(Ordering::Relaxed);
                dst.add(w * 8).cast::<u64>().write_unaligned(v);
            }
        }
        for b in words * 8..len {
            // SAFETY: `b < len`, in bounds of both.
            unsafe {
                let v = src
                    .add(b)
                    .cast::<AtomicU8>()
                    .as_ref()
                    .load(Ordering::Relaxed);
                dst.add(b).write(v);
            }
        }
        true
    }
}

// SAFETY: `stamp(i)` returns the stamp word of slot `i`, a fixed address in the mapping,
// for `i < cap` (distinct slots, distinct words) and `None` otherwise.
unsafe impl RingStorage for ShmSlots {
    const SHARED: bool = true;

    #[inline]
    fn head(&self) -> &AtomicUsize {
        // SAFETY: in bounds and aligned (see `new`); the mapping outlives `self`.
        unsafe { self.head.as_ref() }
    }

    #[inline]
    fn tail(&self) -> &AtomicUsize {
        // SAFETY: as for `head`.
        unsafe { self.tail.as_ref() }
    }

    #[inline]
    fn stamp(&self, index: usize) -> Option<&AtomicUsize> {
        self.word(index, SLOT_STAMP)
    }
}

impl Slots for ShmSlots {
    #[inline]
    fn tag(&self, index: usize) -> Option<&AtomicUsize> {
        self.word(index, SLOT_TAG)
    }
}
