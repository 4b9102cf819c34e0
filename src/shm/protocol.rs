//! The shared ring's message protocol on top of [`Ring`]: intents, skip tags and
//! reclaiming, generic over where the slots live.
//!
//! Production keeps the slots in the mapped segment ([`super::ring`]); the loom models
//! keep them on the heap (`conduit::__loom_shm`). Both run exactly this code.
//!
//! # Intents
//! Every operation runs with one *intent lane* of its peer: an atomic word in the
//! segment's peer table. The ring's `intent` hook stores `VALID | kind | pos` there
//! before each CAS that tries to claim `pos`; the lane is cleared after the commit (and a
//! SeqCst fence) or when the claim attempt gives up. A survivor that finds the peer dead
//! therefore knows every position it may have claimed and not committed.
//!
//! # Tags and seals
//! Each slot carries a tag next to its stamp. A sender that claimed position `pos` reads
//! the tag, writes the payload, and then CASes the tag from the value it read to `pos`:
//! that CAS *completes* the message. A survivor reclaiming the slot of a dead sender
//! *seals* it first: if the tag is already `pos`, the message is complete and is left to
//! be delivered; otherwise it CASes the tag to [`skip_mark`]`(pos)`, and receivers drop
//! the slot. Then the survivor publishes the slot with the ring's CAS commit. A receiver
//! delivers a slot only if its tag equals the position it claimed.
//!
//! The two tag CASes decide, exactly once, whether the message at `pos` is delivered.
//! So even a sender wrongly taken for dead (which the peer locks rule out, but the
//! protocol does not rely on it) never duplicates or loses a message: if its tag CAS
//! won, the message is delivered by whichever commit wins; if the seal won, a skip is
//! published (by whichever commit wins) and the sender retries at a new position. Tags
//! never match by accident: positions only grow, and fresh slots hold [`NO_TAG`].

use crate::chan::ring::{Reclaim, Ring, RingStorage, Stall};
use crate::sync::{AtomicUsize, Ordering, fence};

/// The tag of a fresh slot: never a position, nor a skip mark of one.
pub(crate) const NO_TAG: usize = usize::MAX;

/// The high bit that turns a position into its skip mark.
const SKIPPED: usize = 1 << 63;

/// The tag of a slot reclaimed at `pos` from a dead sender before its message was
/// complete.
#[inline]
pub(crate) const fn skip_mark(pos: usize) -> usize {
    pos | SKIPPED
}

/// An empty intent lane.
pub(crate) const NO_INTENT: usize = 0;
/// Set in every recorded intent.
const VALID: usize = 1 << 63;
/// Set in a receiver's intent.
const RECV: usize = 1 << 62;
/// The position bits of an intent.
const POS: usize = RECV - 1;

/// How many skipped slots one receive attempt consumes before giving up (only hostile
/// memory produces long runs of them).
const SKIP_LIMIT: usize = 1 << 12;

/// Which side recorded an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A sender's claim of a `tail` position.
    Send,
    /// A receiver's claim of a `head` position.
    Recv,
}

/// Encodes an intent for the lane word.
#[inline]
pub(crate) fn encode(kind: Kind, pos: usize) -> usize {
    VALID
        | (pos & POS)
        | match kind {
            Kind::Send => 0,
            Kind::Recv => RECV,
        }
}

/// Decodes a lane word; `None` for an empty lane.
#[inline]
pub(crate) fn decode(word: usize) -> Option<(Kind, usize)> {
    if word & VALID == 0 {
        return None;
    }
    let kind = if word & RECV != 0 {
        Kind::Recv
    } else {
        Kind::Send
    };
    Some((kind, word & POS))
}

/// Ring storage whose slots also carry a tag.
pub(crate) trait Slots: RingStorage {
    /// The tag of slot `index`, or `None` when out of range.
    fn tag(&self, index: usize) -> Option<&AtomicUsize>;
}

/// Claims a slot, runs `write(index)` to fill it, completes its tag and commits it.
/// Retries at a new position if a survivor sealed the slot as skipped first (only
/// possible if this process was wrongly taken for dead). On a stall, the lane is cleared
/// and the stall returned.
#[inline]
pub(crate) fn send<S: Slots>(
    ring: &Ring<S>,
    lane: &AtomicUsize,
    mut write: impl FnMut(usize),
) -> Result<(), Stall> {
    loop {
        let token =
            match ring.start_send(|pos| lane.store(encode(Kind::Send, pos), Ordering::Relaxed)) {
                Ok(token) => token,
                Err(stall) => {
                    lane.store(NO_INTENT, Ordering::Relaxed);
                    return Err(stall);
                }
            };
        let mut complete = false;
        if let Some(tag) = ring.storage().tag(token.index) {
            let seen = tag.load(Ordering::Acquire);
            if seen != skip_mark(token.pos) {
                write(token.index);
                // Sync point: Release orders the payload before the completed tag, for a
                // reclaimer that reads it with Acquire and commits on our behalf.
                complete = tag
                    .compare_exchange(seen, token.pos, Ordering::Release, Ordering::Relaxed)
                    .is_ok();
            }
        }
        // Commit even when sealed: it publishes the skip if the sealer died before its
        // own commit. If our commit fails, a survivor committed for us.
        ring.commit_send(token);
        // SeqCst fence: (a) the intent is cleared only after the commit is ordered (see
        // `Ring::reclaim_send`, step 3); (b) the caller's following waiter-count load is
        // ordered after the commit (the futex module's no-lost-wake-up argument).
        fence(Ordering::SeqCst);
        lane.store(NO_INTENT, Ordering::Relaxed);
        if complete {
            return Ok(());
        }
    }
}

/// Claims a slot, reads it with `read(index)` if its tag says it holds the message for
/// the claimed position, and frees it. Skipped slots (and messages whose read returned
/// `None`, or whose commit found the slot reclaimed) are consumed and the next one tried.
#[inline]
pub(crate) fn recv<S: Slots, R>(
    ring: &Ring<S>,
    lane: &AtomicUsize,
    mut read: impl FnMut(usize) -> Option<R>,
) -> Result<R, Stall> {
    let mut skipped = 0;
    loop {
        let token =
            match ring.start_recv(|pos| lane.store(encode(Kind::Recv, pos), Ordering::Relaxed)) {
                Ok(token) => token,
                Err(stall) => {
                    lane.store(NO_INTENT, Ordering::Relaxed);
                    return Err(stall);
                }
            };
        let tag = ring
            .storage()
            .tag(token.index)
            .map(|t| t.load(Ordering::Relaxed));
        let msg = if tag == Some(token.pos) {
            read(token.index)
        } else {
            None
        };
        let committed = ring.commit_recv(token);
        // SeqCst fence: as in `send` (the intent is cleared after the commit; the
        // senders' waiter count is loaded after it).
        fence(Ordering::SeqCst);
        lane.store(NO_INTENT, Ordering::Relaxed);
        match msg {
            Some(msg) if committed => return Ok(msg),
            _ => {
                skipped += 1;
                if skipped >= SKIP_LIMIT {
                    return Err(Stall::Busy);
                }
            }
        }
    }
}

/// Settles one intent of a peer known to be dead. `live_claim()` reports whether a live
/// peer records the same intent word.
pub(crate) fn resolve<S: Slots>(
    ring: &Ring<S>,
    intent: usize,
    live_claim: impl FnOnce() -> bool,
) -> Reclaim {
    match decode(intent) {
        None => Reclaim::Settled,
        Some((Kind::Send, pos)) => ring.reclaim_send(pos, live_claim, |index| {
            if let Some(tag) = ring.storage().tag(index) {
                // Sync point: Acquire pairs with the sender's Release tag CAS, so a
                // complete message's payload is visible before we commit it.
                let seen = tag.load(Ordering::Acquire);
                if seen != pos {
                    // Fails only if the sender completes the tag meanwhile: then the
                    // message is complete and our commit delivers it.
                    let _ = tag.compare_exchange(
                        seen,
                        skip_mark(pos),
                        Ordering::Relaxed,
                        Ordering::Acquire,
                    );
                }
            }
        }),
        Some((Kind::Recv, pos)) => ring.reclaim_recv(pos, live_claim),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip() {
        for kind in [Kind::Send, Kind::Recv] {
            for pos in [0, 1, 4095, 1 << 40] {
                assert_eq!(decode(encode(kind, pos)), Some((kind, pos)));
            }
        }
        assert_eq!(decode(NO_INTENT), None);
        assert_ne!(encode(Kind::Send, 0), NO_INTENT);
    }
}
