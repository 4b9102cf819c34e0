//! The ring in the segment: [`RingStorage`] over offsets into the mapping, and the
//! payload copies in and out of slots.
//!
//! Every index is checked against the capacity before a slot address is formed, and
//! every payload copy is bounded by the layout's payload size, so corrupted positions or
//! lengths can only select an in-bounds slot or be rejected. Payloads are copied with
//! relaxed atomic loads and stores of whole 8-byte words only (the layout pads every
//! payload to whole words, see [`Layout::new`]), so a peer or another thread accessing
//! the same bytes concurrently is a race of atomics of one size, never a data race and
//! never a race of atomics of different sizes (see [`ShmSlots::write_payload`]).

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::header::{Layout, SLOT_LEN, SLOT_STAMP};
use crate::chan::ring::RingStorage;
use crate::sync::AtomicUsize;

/// The cache line size assumed by the layout and the prefetches.
pub(crate) const CACHE_LINE: usize = 64;
/// How many lines of a slot an operation prefetches (the control words and the start
/// of the payload; longer payloads stream in by themselves).
const PREFETCH_LINES: usize = 4;

/// Whether this CPU has `PREFETCHW` (CPUID leaf `0x8000_0001`, ECX bit 8).
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn has_prefetchw() -> bool {
    use core::arch::x86_64::__cpuid;
    #[allow(unused_unsafe)]
    // SAFETY: `CPUID` exists on every x86_64 CPU; leaf `0x8000_0000` reports the highest
    // extended leaf, so `0x8000_0001` is only queried where it exists.
    unsafe {
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    }
}

/// Elsewhere, and under miri (which runs no inline assembly), prefetches are skipped.
#[cfg(any(not(target_arch = "x86_64"), miri))]
fn has_prefetchw() -> bool {
    false
}

/// Hints the CPU to bring the cache line at `p` into its cache, in a writable
/// (exclusive) state if `for_write` (which requires `PREFETCHW`, see [`has_prefetchw`]).
#[inline]
fn prefetch_line(p: NonNull<u8>, for_write: bool) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if for_write {
        // SAFETY: the caller checked that the CPU has `PREFETCHW`; like every prefetch it
        // only hints the cache: it never faults and reads or writes no memory.
        unsafe {
            core::arch::asm!(
                "prefetchw [{0}]",
                in(reg) p.as_ptr(),
                options(nostack, preserves_flags, readonly)
            );
        }
    } else {
        // SAFETY: `PREFETCHT0` (SSE, part of the x86_64 baseline) only hints the cache:
        // it never faults and reads or writes no memory.
        unsafe {
            use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(p.as_ptr().cast::<i8>().cast_const());
        }
    }
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    let _ = (p, for_write);
}

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
    /// The CPU has `PREFETCHW`.
    prefetchw: bool,
    /// How many bytes of a slot [`ShmSlots::prefetch`] covers (at least one line's
    /// worth, at most [`PREFETCH_LINES`]).
    prefetch_end: usize,
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
                prefetchw: has_prefetchw(),
                prefetch_end: layout.slot_size.min(PREFETCH_LINES * CACHE_LINE),
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

    /// The `k`th 8-byte word of slot `index`'s payload, if the slot and the word are in
    /// range (a signal target's queue entries are two such words: payload and origin).
    #[inline]
    pub(crate) fn entry_word(&self, index: usize, k: usize) -> Option<&AtomicU64> {
        if k.checked_add(1)?.checked_mul(8)? > self.payload_size {
            return None;
        }
        self.word(index, self.payload_offset + k * 8)
    }

    /// The atomic at `offset` in slot `index`; `offset` is a control word's, before the
    /// payload, or a payload word's, and aligned for `A` (the channels' stamp and length,
    /// a mailbox's words, a signal queue entry's words).
    #[inline]
    pub(crate) fn word<A>(&self, index: usize, offset: usize) -> Option<&A> {
        // SAFETY: `at` checked the index; the control-word offsets are aligned for `A`
        // (the callers' contract) within an 8-aligned slot, the mapping lives as long as `self`, and the memory is only ever
        // accessed atomically.
        self.at(index, offset)
            .map(|p| unsafe { p.cast::<A>().as_ref() })
    }

    /// Asks the CPU to fetch the first [`PREFETCH_LINES`] cache lines of slot `index`,
    /// writable where the CPU can, so that the lines a claim is about to read and then
    /// write (stamp CAS, payload) come over from the peer's cache once and in parallel,
    /// rather than one after another, each behind the previous locked instruction of the
    /// claim, and then once more for the upgrade to writable.
    ///
    /// Only the checks that the endpoints make before a claim ask for it
    /// ([`RingStorage::prepare_claim`]), once per attempt and before the intent lane is
    /// taken, so that the fetch overlaps the lane's locked swap. Commits find the lines
    /// there, and waiters poll with [`RingStorage::stamp`], so as not to take the lines
    /// from a peer still working on the slot. A receiver's check prefetches only a slot
    /// it found published; a sender's whether or not the slot is free: on a full ring it
    /// may take the line from a receiver reading it, once per attempt.
    ///
    /// Measured on two pinned threads streaming 64-byte messages (aligned builds, order
    /// rotating, see `benches/README.md`): prefetching in the claim itself, after the lane
    /// is taken, instead of in the sender's check before it made the stream 8–10 ns per
    /// message slower (1 of 8 rounds faster), though it ran 20% fewer instructions.
    #[inline]
    fn prefetch(&self, index: usize) {
        let Some(slot) = self.at(index, 0) else {
            return;
        };
        let mut offset = 0;
        loop {
            // SAFETY: `offset < prefetch_end <= slot_size` (a slot is never empty), so
            // the address is inside slot `index` (which `at` checked); a prefetch reads
            // nothing and cannot fault anyway.
            prefetch_line(unsafe { slot.add(offset) }, self.prefetchw);
            offset += CACHE_LINE;
            if offset >= self.prefetch_end {
                break;
            }
        }
    }

    /// The message length word of slot `index`.
    pub(crate) fn len_word(&self, index: usize) -> Option<&AtomicU32> {
        self.word(index, SLOT_LEN)
    }

    /// The payload capacity of a slot, in bytes.
    pub(crate) fn payload_size(&self) -> usize {
        self.payload_size
    }

    /// Payload word `w` (bytes `8 * w .. 8 * w + 8`) of the payload starting at
    /// `payload`: the only way payload bytes are ever accessed, so that every location
    /// of a payload area is accessed with one size, 8 bytes, whatever the lengths of the
    /// messages that pass through it (see [`ShmSlots::write_payload`]).
    ///
    /// # Safety
    /// `payload` must be a slot's payload address ([`ShmSlots::at`] with the payload
    /// offset) and `w < payload_size.div_ceil(8)`: the layout pads the payload to whole
    /// words inside the slot ([`Layout::new`]).
    #[inline]
    unsafe fn payload_word(&self, payload: NonNull<u8>, w: usize) -> &AtomicU64 {
        debug_assert!(w < self.payload_size.div_ceil(8));
        #[cfg(test)]
        access_log::record(w * 8, 8);
        // SAFETY: the payload offset is a multiple of 8 from an 8-aligned slot, so the
        // word is aligned; it lies inside the slot, within the mapping, which outlives
        // `self` (the caller's contract and the layout's padding); the memory is only
        // ever accessed atomically.
        unsafe { payload.add(w * 8).cast::<AtomicU64>().as_ref() }
    }

    /// Copies `src` into the payload of slot `index`. `src` longer than the payload, or an
    /// index out of range, copies nothing (callers check lengths first).
    ///
    /// The copy stores whole 8-byte words only, with relaxed `AtomicU64` stores: `len / 8`
    /// words from `src`, then, if `len` is not a multiple of 8, the last word assembled
    /// from the remaining bytes and zeros (the bytes past `len` up to the word's end are
    /// padding that belongs to the slot). It never stores single bytes: a hostile peer
    /// that rewrites stamps or positions can make two threads of this process own the same
    /// slot at once, and if one copied a 16-byte message as two `u64` stores while the
    /// other read a 13-byte one as a `u64` and five `u8` loads, the two would race
    /// atomics of different sizes on the same bytes, which Rust's memory model leaves
    /// undefined. With one access size everywhere such a race is only a race of relaxed
    /// atomics: the message is garbled, the behaviour defined.
    ///
    /// # Safety
    /// `src` must point to `len` initialised bytes.
    #[inline]
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
            // contract).
            let v = unsafe { src.add(w * 8).cast::<u64>().read_unaligned() };
            // SAFETY: `w < len / 8 <= payload_size.div_ceil(8)`, and `dst` is the payload.
            unsafe { self.payload_word(dst, w) }.store(v, Ordering::Relaxed);
        }
        let rest = len % 8;
        if rest != 0 {
            let mut last = [0u8; 8];
            for (i, byte) in last.iter_mut().enumerate().take(rest) {
                // SAFETY: `words * 8 + i < len`: a byte of `src` (the caller's contract).
                *byte = unsafe { src.add(words * 8 + i).read() };
            }
            // SAFETY: `words = len.div_ceil(8) - 1 < payload_size.div_ceil(8)`.
            unsafe { self.payload_word(dst, words) }
                .store(u64::from_ne_bytes(last), Ordering::Relaxed);
        }
    }

    /// Copies `len` bytes of the payload of slot `index` to `dst`; `false` (nothing
    /// copied) if `len` exceeds the payload or the index is out of range.
    ///
    /// Like [`ShmSlots::write_payload`], and for the same reason, it loads whole 8-byte
    /// words only: the last word is loaded whole when `len` is not a multiple of 8, and
    /// only its first `len % 8` bytes are copied out.
    ///
    /// # Safety
    /// `dst` must be valid for writing `len` bytes.
    #[inline]
    pub(crate) unsafe fn read_payload(&self, index: usize, dst: *mut u8, len: usize) -> bool {
        if len > self.payload_size {
            return false;
        }
        let Some(src) = self.at(index, self.payload_offset) else {
            return false;
        };
        let words = len / 8;
        for w in 0..words {
            // SAFETY: `w < len / 8 <= payload_size.div_ceil(8)`, and `src` is the payload.
            let v = unsafe { self.payload_word(src, w) }.load(Ordering::Relaxed);
            // SAFETY: `w * 8 + 8 <= len` bytes of `dst` are writable (the caller's
            // contract); it may be unaligned.
            unsafe { dst.add(w * 8).cast::<u64>().write_unaligned(v) };
        }
        let rest = len % 8;
        if rest != 0 {
            // SAFETY: `words = len.div_ceil(8) - 1 < payload_size.div_ceil(8)`.
            let last = unsafe { self.payload_word(src, words) }
                .load(Ordering::Relaxed)
                .to_ne_bytes();
            for (i, byte) in last.into_iter().enumerate().take(rest) {
                // SAFETY: `words * 8 + i < len`: a byte of `dst` (the caller's contract).
                unsafe { dst.add(words * 8 + i).write(byte) };
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

    #[inline]
    fn prepare_claim(&self, index: usize) {
        self.prefetch(index);
    }
}

/// For tests: every payload word access ([`ShmSlots::payload_word`]) of this thread, as
/// (byte offset in the payload, access size).
#[cfg(test)]
mod access_log {
    use std::cell::RefCell;

    thread_local! {
        static LOG: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn record(offset: usize, size: usize) {
        LOG.with(|l| l.borrow_mut().push((offset, size)));
    }

    /// The accesses recorded since the last call.
    pub(super) fn take() -> Vec<(usize, usize)> {
        LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chan::ring::{Ring, Stall, initial_stamp};
    use crate::shm::header::{Fingerprint, Kind, Layout, RING_OFFSET};

    /// Every payload copy, of every length from 0 to 40 bytes (the whole payload) and in
    /// both directions, accesses the slot with whole, aligned 8-byte words only, exactly
    /// the words that hold the message; a short last word is written whole, its bytes
    /// past the message zeroed; and the bytes round-trip. Before, the copy ended with
    /// single-byte accesses, so the access size at a location depended on each
    /// message's length.
    #[test]
    fn payload_copies_use_whole_words_only() {
        let layout = Layout::new(Kind::Bytes, 2, Fingerprint::bytes(40)).unwrap();
        let mut memory = vec![0u64; layout.total_size.div_ceil(8)];
        let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `memory` covers `total_size` bytes, is 8-aligned (the layout's slot
        // alignment for byte channels) and outlives `slots`.
        let slots = unsafe { ShmSlots::new(base, &layout, RING_OFFSET) };
        let ones = [0xffu8; 40];
        let src: Vec<u8> = (1..=40).collect();
        for len in 0..=40usize {
            // SAFETY: `ones` holds 40 bytes.
            unsafe { slots.write_payload(1, ones.as_ptr(), 40) };
            access_log::take();
            // SAFETY: `src` holds 40 bytes.
            unsafe { slots.write_payload(1, src.as_ptr(), len) };
            let words: Vec<(usize, usize)> = (0..len.div_ceil(8)).map(|w| (w * 8, 8)).collect();
            assert_eq!(access_log::take(), words, "write of {len} bytes");
            let mut out = vec![0u8; 40];
            // SAFETY: `out` has room for 40 bytes.
            assert!(unsafe { slots.read_payload(1, out.as_mut_ptr(), 40) });
            access_log::take();
            let padded = len.next_multiple_of(8);
            assert_eq!(out[..len], src[..len], "{len} bytes");
            assert!(out[len..padded].iter().all(|&b| b == 0), "{len}: {out:?}");
            assert!(out[padded..].iter().all(|&b| b == 0xff), "{len}: {out:?}");
            let mut out = vec![0u8; len];
            // SAFETY: `out` has room for `len` bytes.
            assert!(unsafe { slots.read_payload(1, out.as_mut_ptr(), len) });
            assert_eq!(access_log::take(), words, "read of {len} bytes");
            assert_eq!(out, src[..len]);
        }
        // Longer than the payload: nothing is accessed.
        // SAFETY: `src` holds 40 bytes; 41 are not read (the length is refused).
        unsafe { slots.write_payload(1, src.as_ptr(), 41) };
        assert!(!unsafe { slots.read_payload(1, [0u8; 41].as_mut_ptr(), 41) });
        assert_eq!(access_log::take(), []);
    }

    /// Typed payloads whose size is not a multiple of 8 are copied in whole words too.
    #[test]
    fn typed_payloads_use_whole_words_only() {
        fn check<T: crate::shm::ShmSafe + PartialEq + core::fmt::Debug>(value: T) {
            let layout = Layout::new(Kind::Typed, 1, Fingerprint::of::<T>()).unwrap();
            let mut memory = vec![0u64; layout.total_size.div_ceil(8)];
            let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: as above (the types here align to at most 8).
            let slots = unsafe { ShmSlots::new(base, &layout, RING_OFFSET) };
            access_log::take();
            crate::shm::channel::write_typed(&slots, 0, &value);
            let read = crate::shm::channel::read_typed::<T>(&slots, 0);
            let words: Vec<(usize, usize)> = (0..size_of::<T>().div_ceil(8))
                .map(|w| (w * 8, 8))
                .collect();
            let log = access_log::take();
            assert_eq!(log.len(), 2 * words.len(), "{log:?}");
            assert_eq!(log[..words.len()], words[..]);
            assert_eq!(log[words.len()..], words[..]);
            assert_eq!(read, Some(value));
        }
        check(7u8);
        check(0x0102_0304u32);
        check([1u8, 2, 3]);
        check([9u16; 7]);
        check([5u32; 5]);
        check(u64::MAX);
        check([1u8; 0]);
    }

    /// `Ring::may_proceed`, and the endpoints' checks before a claim
    /// (`may_claim_send`, `may_claim_recv`), agree with the ring's own claims, lap after
    /// lap, for capacities whose position encoding does (4) and does not (1) leave spare
    /// index bits.
    #[test]
    fn may_proceed_matches_the_ring() {
        for cap in [1, 4] {
            let layout = Layout::new(Kind::Typed, cap, Fingerprint::of::<u64>()).unwrap();
            let mut memory = vec![0u64; layout.total_size.div_ceil(8)];
            let base = NonNull::new(memory.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: `memory` covers `total_size` bytes, is 8-aligned (the layout's
            // slot alignment for `u64`) and outlives `ring`.
            let slots = unsafe { ShmSlots::new(base, &layout, RING_OFFSET) };
            for i in 0..cap {
                slots
                    .stamp(i)
                    .unwrap()
                    .store(initial_stamp(i), Ordering::Relaxed);
            }
            let ring = Ring::new(slots, cap);
            let may_proceed = |sender: bool| {
                let claim = if sender {
                    ring.may_claim_send()
                } else {
                    ring.may_claim_recv()
                };
                let proceed = ring.may_proceed(sender);
                assert_eq!(claim, proceed, "cap {cap}, sender {sender}");
                proceed
            };
            for _lap in 0..3 {
                for queued in 0..cap {
                    assert!(may_proceed(true), "cap {cap}: room for {queued}");
                    assert_eq!(may_proceed(false), queued > 0);
                    let token = ring.start_send(|_| {}).unwrap();
                    // Claimed, not committed: a receiver still has nothing to take.
                    assert_eq!(may_proceed(false), queued > 0);
                    assert!(ring.commit_send(token));
                }
                assert!(!may_proceed(true), "cap {cap}: full");
                assert_eq!(ring.start_send(|_| {}).unwrap_err(), Stall::Blocked);
                for left in (0..cap).rev() {
                    assert!(may_proceed(false));
                    let token = ring.start_recv(|_| {}).unwrap();
                    // Claimed, not freed: a sender of the next lap must still wait.
                    assert_eq!(may_proceed(true), left + 1 < cap);
                    if left + 1 == cap {
                        // From the stamp alone, without loading `head`: `Blocked`.
                        assert_eq!(ring.start_send(|_| {}).unwrap_err(), Stall::Blocked);
                    }
                    assert!(ring.commit_recv(token));
                    assert!(may_proceed(true));
                }
                assert!(!may_proceed(false), "cap {cap}: empty");
                assert_eq!(ring.start_recv(|_| {}).unwrap_err(), Stall::Blocked);
            }
        }
    }
}
