//! The shared ring's message protocol on top of [`Ring`]: intents, skips and
//! reclaiming, generic over where the slots live.
//!
//! Production keeps the slots in the mapped segment ([`super::ring`]); the loom models
//! keep them on the heap (`conduit::__loom_shm`). Both run exactly this code.
//!
//! # Intents
//! Every operation runs with one *intent lane* of its peer: an atomic word in the
//! segment's peer table. The ring's `intent` hook stores `VALID | kind | pos` there
//! before each CAS that tries to claim `pos`; the lane is cleared after the commit or when
//! the claim attempt gives up. Every store to a lane is a Release store, so a survivor
//! that reads one (and then fences) sees the commits made before it (see
//! [`Ring::reclaim_send`], step 3). A survivor that finds the peer dead therefore knows
//! every position it may have claimed and not committed.
//!
//! # Skips
//! A survivor reclaiming the slot of a dead sender publishes it as a *skip*
//! ([`Ring::reclaim_send`]): receivers claim and free it without reading it. The sender's
//! commit and the survivor's skip are CASes of the same stamp from the same claimed
//! value, so exactly one of them wins. Even a sender wrongly taken for dead (which the
//! peer locks rule out, but the protocol does not rely on it) therefore never duplicates
//! or loses a message: if its commit won, the message is delivered; if the skip won, the
//! sender's commit fails and it retries at a new position.

use crate::chan::ring::{Reclaim, Ring, RingStorage, Stall, Token};
use crate::sync::{AtomicUsize, Ordering, after_seqcst_rmw};

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

/// How many claims one send attempt makes in all before giving up, while its commits
/// fail. A commit fails only when a survivor published the slot as a skip, that is, only
/// if this process was wrongly taken for dead (which the peer locks rule out) or a peer
/// rewrites stamps: a second claim is rare, a run of them hostile.
const COMMIT_LIMIT: usize = 1 << 4;

/// Which side recorded an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A sender's claim of a `tail` position.
    Send,
    /// A receiver's claim of a `head` position.
    Recv,
}

/// Where an operation records its intents: a lane word of the segment's peer table
/// (`AtomicUsize`), or a wrapper that adds to what is recorded (the signal targets'
/// queues tag each intent with their queue, see `shm::signal`), or nothing at all (a
/// heap ring, which no other process can die holding a claim of).
pub(crate) trait Lane {
    /// Records intent `word` (an [`encode`]d claim) with a Release store.
    fn record(&self, word: usize);
    /// Clears the lane ([`NO_INTENT`]) with a Release store.
    fn clear(&self);
}

impl Lane for AtomicUsize {
    #[inline]
    fn record(&self, word: usize) {
        self.store(word, Ordering::Release);
    }

    #[inline]
    fn clear(&self) {
        self.store(NO_INTENT, Ordering::Release);
    }
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

/// Claims a slot for `kind`, recording each position tried in `lane`. The common case
/// (the slot is ready and the CAS wins) is one inline attempt ([`Ring::try_claim_send`]);
/// the full claim runs out of line. On a stall the lane is cleared.
#[inline]
fn claim<'r, S: RingStorage, L: Lane + ?Sized>(
    ring: &'r Ring<S>,
    lane: &L,
    kind: Kind,
) -> Result<Token<'r>, Stall> {
    let record = recorder(lane, kind);
    let fast = match kind {
        Kind::Send => ring.try_claim_send(record),
        Kind::Recv => ring.try_claim_recv(record),
    };
    match fast {
        Some(token) => Ok(token),
        None => claim_loop(ring, lane, kind),
    }
}

/// The ring's `intent` hook for a claim of `kind`: records each position tried in
/// `lane`, with a Release store (see the module docs).
#[inline]
fn recorder<L: Lane + ?Sized>(lane: &L, kind: Kind) -> impl Fn(usize) + Copy + '_ {
    move |pos| lane.record(encode(kind, pos))
}

/// [`claim`] in every case.
#[inline(never)]
fn claim_loop<'r, S: RingStorage, L: Lane + ?Sized>(
    ring: &'r Ring<S>,
    lane: &L,
    kind: Kind,
) -> Result<Token<'r>, Stall> {
    let record = recorder(lane, kind);
    let claimed = match kind {
        Kind::Send => ring.start_send(record),
        Kind::Recv => ring.start_recv(record),
    };
    if claimed.is_err() {
        lane.clear();
    }
    claimed
}

/// Claims a slot, runs `write(index)` to fill it and commits it. Retries at a new
/// position if a survivor published the slot as a skip first (only possible if this
/// process was wrongly taken for dead), up to [`COMMIT_LIMIT`] claims in all: then
/// [`Stall::Busy`], with nothing sent (every failed commit left its slot a skip), so
/// that a peer that keeps rewriting stamps cannot keep a send here forever. On a stall,
/// the lane is cleared and the stall returned.
#[inline]
pub(crate) fn send<S: RingStorage, L: Lane + ?Sized>(
    ring: &Ring<S>,
    lane: &L,
    mut write: impl FnMut(usize),
) -> Result<(), Stall> {
    if send_once(ring, lane, &mut write)? {
        return Ok(());
    }
    send_retry(ring, lane, write)
}

/// One claim, write and commit of [`send`]: `Ok(false)` if the commit failed.
#[inline]
fn send_once<S: RingStorage, L: Lane + ?Sized>(
    ring: &Ring<S>,
    lane: &L,
    write: &mut impl FnMut(usize),
) -> Result<bool, Stall> {
    let token = claim(ring, lane, Kind::Send)?;
    if ring.still_claimed(token) {
        write(token.index);
    }
    // The commit is a SeqCst CAS: (a) the intent is cleared after it with a Release
    // store (see `Ring::reclaim_send`, step 3); (b) the caller's following SeqCst
    // waiter-count loads come after it in the SeqCst order (the futex module's
    // no-lost-wake-up argument), with no fence between. If it fails, a survivor
    // published a skip here.
    let committed = ring.commit_send(token);
    after_seqcst_rmw();
    lane.clear();
    Ok(committed)
}

/// [`send`] after a failed commit, out of line: its loop would cost every send the
/// setup of a loop that almost never runs twice.
#[cold]
#[inline(never)]
fn send_retry<S: RingStorage, L: Lane + ?Sized>(
    ring: &Ring<S>,
    lane: &L,
    mut write: impl FnMut(usize),
) -> Result<(), Stall> {
    // The first attempt, in `send`, made one claim.
    for _ in 1..COMMIT_LIMIT {
        if send_once(ring, lane, &mut write)? {
            return Ok(());
        }
    }
    Err(Stall::Busy)
}

/// Claims a slot, reads it with `read(index)` unless it is a skip, and frees it. Skips
/// (and messages whose read returned `None`, or whose commit found the slot reclaimed)
/// are consumed and the next slot tried, up to [`SKIP_LIMIT`] slots in all.
#[inline]
pub(crate) fn recv<S: RingStorage, R, L: Lane + ?Sized>(
    ring: &Ring<S>,
    lane: &L,
    mut read: impl FnMut(usize) -> Option<R>,
) -> Result<R, Stall> {
    match recv_once(ring, lane, &mut read)? {
        Some(msg) => Ok(msg),
        None => recv_retry(ring, lane, read),
    }
}

/// One claim, read and free of [`recv`]: `Ok(None)` if the slot held nothing to
/// deliver (a skip, a read that returned `None`, or a commit that failed).
#[inline]
fn recv_once<S: RingStorage, R, L: Lane + ?Sized>(
    ring: &Ring<S>,
    lane: &L,
    read: &mut impl FnMut(usize) -> Option<R>,
) -> Result<Option<R>, Stall> {
    let token = claim(ring, lane, Kind::Recv)?;
    let msg = if token.skipped {
        None
    } else {
        read(token.index)
    };
    // As in `send`: the intent is cleared after the SeqCst commit; the senders' waiter
    // counts are loaded after it.
    let committed = ring.commit_recv(token);
    after_seqcst_rmw();
    lane.clear();
    Ok(msg.filter(|_| committed))
}

/// [`recv`] after a slot with nothing to deliver, out of line (see [`send_retry`]).
#[cold]
#[inline(never)]
fn recv_retry<S: RingStorage, R, L: Lane + ?Sized>(
    ring: &Ring<S>,
    lane: &L,
    mut read: impl FnMut(usize) -> Option<R>,
) -> Result<R, Stall> {
    // The first attempt, in `recv`, consumed one slot.
    for _ in 1..SKIP_LIMIT {
        if let Some(msg) = recv_once(ring, lane, &mut read)? {
            return Ok(msg);
        }
    }
    Err(Stall::Busy)
}

/// Settles one intent of a peer known to be dead. `live_claim()` reports whether a live
/// peer records the same intent word.
pub(crate) fn resolve<S: RingStorage>(
    ring: &Ring<S>,
    intent: usize,
    live_claim: impl FnOnce() -> bool,
) -> Reclaim {
    match decode(intent) {
        None => Reclaim::Settled,
        Some((Kind::Send, pos)) => ring.reclaim_send(pos, live_claim),
        Some((Kind::Recv, pos)) => ring.reclaim_recv(pos, live_claim),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::chan::ring::SHARED_SPIN_LIMIT;
    use std::sync::mpsc;
    use std::time::Duration;

    /// What [`Hostile`]'s stamp lookups do, as a peer would between a claim's load of a
    /// position and its CAS.
    #[derive(Clone, Copy)]
    enum Peer {
        /// Makes the slot free for the `tail` just loaded, then moves `tail` a lap on:
        /// every claim finds its slot free and loses its CAS.
        BumpTail,
        /// Likewise for receivers: publishes the slot for the `head` just loaded, then
        /// moves `head` a lap on.
        BumpHead,
        /// Makes the slot free for the current `tail` (the test's `write` then rewrites
        /// the stamp, so that the commit fails).
        KeepFree,
    }

    /// Shared storage on the heap whose `stamp` lookups act as a hostile peer
    /// ([`Peer`]), deterministically, on one thread.
    struct Hostile {
        head: AtomicUsize,
        tail: AtomicUsize,
        stamps: Vec<AtomicUsize>,
        one_lap: usize,
        peer: Peer,
        lookups: AtomicUsize,
    }

    impl Hostile {
        fn ring(cap: usize, peer: Peer) -> Ring<Hostile> {
            let storage = Hostile {
                head: AtomicUsize::new(0),
                tail: AtomicUsize::new(0),
                stamps: (0..cap).map(AtomicUsize::new).collect(),
                one_lap: 2 * (cap + 1).next_power_of_two(),
                peer,
                lookups: AtomicUsize::new(0),
            };
            Ring::new(storage, cap)
        }
    }

    // SAFETY: `stamp(i)` is the `i`th element of a vector that lives as long as `self`.
    unsafe impl RingStorage for Hostile {
        const SHARED: bool = true;

        fn head(&self) -> &AtomicUsize {
            &self.head
        }

        fn tail(&self) -> &AtomicUsize {
            &self.tail
        }

        fn stamp(&self, index: usize) -> Option<&AtomicUsize> {
            let stamp = self.stamps.get(index)?;
            self.lookups.fetch_add(1, Ordering::Relaxed);
            match self.peer {
                Peer::BumpTail => {
                    let tail = self.tail.load(Ordering::Relaxed);
                    stamp.store(tail, Ordering::Relaxed);
                    self.tail.store(tail + self.one_lap, Ordering::Relaxed);
                }
                Peer::BumpHead => {
                    let head = self.head.load(Ordering::Relaxed);
                    stamp.store(head + 1, Ordering::Relaxed);
                    self.head.store(head + self.one_lap, Ordering::Relaxed);
                }
                Peer::KeepFree => stamp.store(self.tail.load(Ordering::Relaxed), Ordering::Relaxed),
            }
            Some(stamp)
        }
    }

    /// Runs `f` on a thread of its own and returns its result, failing if it has not
    /// returned within a generous bound (a claim loop that never gives up).
    fn returns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(20))
            .expect("watchdog: the operation never returned")
    }

    /// A peer that moves `tail` on after each look, so that every claiming CAS loses,
    /// cannot keep a send in its claim loop: it gives up ([`Stall::Busy`]) after
    /// [`SHARED_SPIN_LIMIT`] lost rounds, with its intent cleared. Before, the lost CASes
    /// were not counted and the send spun for as long as the peer went on.
    #[test]
    fn a_send_whose_cas_always_loses_gives_up() {
        let (r, lookups, lane) = returns(|| {
            let ring = Hostile::ring(2, Peer::BumpTail);
            let lane = AtomicUsize::new(NO_INTENT);
            let r = send(&ring, &lane, |_| panic!("nothing was claimed"));
            let lookups = ring.storage().lookups.load(Ordering::Relaxed);
            (r, lookups, lane.into_inner())
        });
        assert_eq!(r, Err(Stall::Busy));
        assert_eq!(lane, NO_INTENT);
        // The inline attempt, then the loop's rounds, each of which looked a slot up.
        assert!(lookups <= 2 + SHARED_SPIN_LIMIT as usize, "{lookups}");
    }

    /// The same for a receive, with a peer that moves `head` on.
    #[test]
    fn a_recv_whose_cas_always_loses_gives_up() {
        let (r, lane) = returns(|| {
            let ring = Hostile::ring(2, Peer::BumpHead);
            let lane = AtomicUsize::new(NO_INTENT);
            let r = recv(&ring, &lane, |_| -> Option<()> {
                panic!("nothing was claimed")
            });
            (r, lane.into_inner())
        });
        assert_eq!(r, Err(Stall::Busy));
        assert_eq!(lane, NO_INTENT);
    }

    /// A peer that rewrites the stamp of each slot a send has claimed, so that every
    /// commit fails, cannot keep the send retrying: it gives up ([`Stall::Busy`]) after
    /// [`COMMIT_LIMIT`] claims. Before, it retried for as long as the peer went on.
    #[test]
    fn a_send_whose_commits_always_fail_gives_up() {
        let (r, writes, lane) = returns(|| {
            let ring = Hostile::ring(2, Peer::KeepFree);
            let lane = AtomicUsize::new(NO_INTENT);
            let mut writes = 0;
            let r = send(&ring, &lane, |index| {
                writes += 1;
                ring.storage().stamps[index].store(usize::MAX, Ordering::Relaxed);
            });
            (r, writes, lane.into_inner())
        });
        assert_eq!(r, Err(Stall::Busy));
        assert_eq!(writes, COMMIT_LIMIT);
        assert_eq!(lane, NO_INTENT);
    }

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
