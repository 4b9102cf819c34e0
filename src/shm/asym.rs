//! Asymmetric fences: a *light* fence on a fast path, which costs no instruction, paired
//! with a *heavy* one on the matching slow path, `membarrier(2)`'s
//! `MEMBARRIER_CMD_GLOBAL_EXPEDITED`.
//!
//! # Why
//! The single-producer mode's publish and commit ([`super::spsc`]) are each followed by
//! a check for sleeping waiters, and the check must not be ordered before the store
//! (a store-load, the pattern of Dekker's algorithm): with a SeqCst RMW, as the
//! many-to-many ring does it, each message costs each side a locked instruction. On
//! x86 a locked instruction waits for every earlier store to reach the cache, so a
//! producer streaming messages stalls on each message's slot lines, which the consumer
//! holds, one message at a time. Measured with two pinned processes streaming 64-byte
//! messages through a bare single-producer ring: 21 ns a message with plain Release
//! stores, 41 with the SeqCst swaps.
//!
//! # How
//! The fast side (a publish, a commit, a biased turn, see [`super::spsc::Family`]) stores,
//! issues a [`light`] fence (a compiler barrier only) and loads. The slow side (a waiter
//! about to sleep, a thread revoking another's bias) stores, issues a [`heavy`] fence and
//! loads. `membarrier` returns only once every running thread of every process that
//! registered for it ([`available`] registers this one) has executed a full memory
//! barrier (a thread not running passes one when it is switched out), so the fast side's
//! program order is cut at some point by a full barrier, and whichever side that point
//! falls, the two stores are not both missed by the two loads: if it falls before the
//! fast side's store, that side's load sees the slow side's store (which preceded the
//! `membarrier` call); if after its load, the slow side's load, which follows the call,
//! sees the fast side's store; in between, it is a full fence between them.
//!
//! The heavy fence costs a system call and an inter-processor interrupt to every CPU
//! running a registered process: about 10 µs on this project's 2-CPU virtual machine,
//! against 0 ns a message on the fast path. It is only paid on the way to sleep and once
//! per revoked bias.
//!
//! # Where it is not available
//! A kernel older than 4.16, a seccomp filter that refuses the call, or the
//! `CONDUIT_NO_MEMBARRIER` environment variable (set to anything but `0`) makes
//! [`available`] false: this process then creates single-producer channels whose sides
//! publish and commit with SeqCst RMWs (a header flag records which), and refuses to
//! attach to one created with light fences, whose waiters would need the heavy fence
//! (`Unsupported`, naming the cause). Under loom and miri both fences are SeqCst
//! fences, the guarantee the pair gives, which the models and miri check.

use crate::sync::Ordering;

/// Why [`available`] says no, for the errors that refuse light fences: what the heavy
/// fence needs, and the usual reasons a process cannot have it.
pub(crate) const UNAVAILABLE: &str = "membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which this \
     process cannot use (Linux < 4.16, a seccomp filter, or CONDUIT_NO_MEMBARRIER set)";

/// Whether this process may publish with [`light`] fences and issue [`heavy`] ones: the
/// kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` and this process is registered for
/// it. Registration happens at the first call in each process (the answer is kept with
/// the process id, so a forked child registers anew rather than trust its parent's);
/// it lasts for the life of the process. Called as handles attach, not per message.
#[cfg(not(any(loom, miri)))]
pub(crate) fn available() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier, membarrier_query};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    /// `pid << 1 | available` of the process that registered; 0 before any.
    static KNOWN: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(
        rustix::process::getpid()
            .as_raw_nonzero()
            .get()
            .unsigned_abs(),
    );
    let known = KNOWN.load(Relaxed);
    if known >> 1 == pid {
        return known & 1 != 0;
    }
    let available = std::env::var_os("CONDUIT_NO_MEMBARRIER").is_none_or(|v| v == "0") && {
        let offered = membarrier_query();
        offered.contains_command(MembarrierCommand::GlobalExpedited)
            && offered.contains_command(MembarrierCommand::RegisterGlobalExpedited)
            && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
    };
    KNOWN.store(pid << 1 | u64::from(available), Relaxed);
    available
}

/// Under loom and miri the fences are modelled (SeqCst fences on both sides), so they
/// are always available.
#[cfg(any(loom, miri))]
pub(crate) fn available() -> bool {
    true
}

/// The fast side's fence: orders nothing at run time by itself (a compiler barrier); a
/// [`heavy`] fence on the other side supplies the barrier. Under loom and miri a SeqCst
/// fence, which is what the pair guarantees.
#[inline(always)]
pub(crate) fn light() {
    #[cfg(any(loom, miri))]
    crate::sync::fence(Ordering::SeqCst);
    #[cfg(not(any(loom, miri)))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// The slow side's fence: a full barrier in every running thread of every registered
/// process, this one's included. `false` if the system call failed (it does not, once
/// [`available`] said yes, short of a kernel bug); the caller then bounds its sleep.
#[cold]
pub(crate) fn heavy() -> bool {
    crate::sync::fence(Ordering::SeqCst);
    #[cfg(not(any(loom, miri)))]
    {
        use rustix::thread::{MembarrierCommand, membarrier};
        membarrier(MembarrierCommand::GlobalExpedited).is_ok()
    }
    #[cfg(any(loom, miri))]
    true
}

#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::*;

    /// On a kernel that offers the command (every CI and development machine of this
    /// project), the process registers and the heavy fence succeeds.
    #[test]
    fn heavy_fence_works_where_available() {
        if available() {
            assert!(heavy());
        } else {
            eprintln!("membarrier(GLOBAL_EXPEDITED) is not available here");
        }
    }
}
