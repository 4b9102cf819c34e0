//! Cache prefetch hints for the shared-memory ring.
//!
//! A prefetch never faults and reads or writes no memory, so it is correct for any
//! address; these functions only decide which instruction to issue. Under miri, and off
//! x86_64, they do nothing.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

/// The cache line size assumed by the prefetches and by the shared-memory layout.
pub(crate) const CACHE_LINE: usize = 64;

/// Asks the CPU whether it has `PREFETCHW` (CPUID leaf `0x8000_0001`, ECX bit 8).
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn detect_prefetchw() -> bool {
    use core::arch::x86_64::__cpuid;
    #[allow(unused_unsafe)]
    // SAFETY: `CPUID` exists on every x86_64 CPU; leaf `0x8000_0000` reports the highest
    // extended leaf, so `0x8000_0001` is only queried where it exists.
    unsafe {
        __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
    }
}

/// Elsewhere, and under miri, prefetches are skipped.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
fn detect_prefetchw() -> bool {
    false
}

/// [`has_prefetchw`]'s answer once known: 0 not yet, 1 no, 2 yes.
static PREFETCHW: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU has `PREFETCHW`; the CPU is asked once per process.
#[inline]
pub(crate) fn has_prefetchw() -> bool {
    match PREFETCHW.load(Ordering::Relaxed) {
        0 => {
            let has = detect_prefetchw();
            PREFETCHW.store(if has { 2 } else { 1 }, Ordering::Relaxed);
            has
        }
        known => known == 2,
    }
}

/// Hints the CPU to bring the cache line at `p` into its cache, in a writable
/// (exclusive) state if `for_write` (which requires `PREFETCHW`, see [`has_prefetchw`];
/// callers that have not checked pass `false`).
#[inline]
pub(crate) fn line(p: NonNull<u8>, for_write: bool) {
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
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = (p, for_write);
}
