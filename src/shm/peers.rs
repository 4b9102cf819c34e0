//! The peer table: who is attached, whether they are alive, and recovery from those
//! that died.
//!
//! # Entries
//! The segment holds [`MAX_PEERS`] peer slots. Slot `n` has a state word
//! (`generation << 32 | state << 8 | roles`, state one of FREE / LIVE / DEAD, roles the
//! sender and receiver bits) and an entry with the owner's pid, the identity of its lock
//! object and [`LANES`] intent words (see [`super::protocol`]). Every attached handle
//! family (one `open`/`create` and its clones) owns one slot.
//!
//! # Liveness
//! The owner of slot `n` holds an exclusive `flock` on the lock object
//! `/conduit-peer.<name>.<n>` for as long as it is attached. The kernel drops the lock
//! when the process dies, however it dies, so a *probe* that manages to take a shared
//! lock on that object (non-blocking) has proof that nobody owns the slot. A slot is
//! only ever taken over or reaped under that lock: the new owner holds the exclusive
//! lock, a reaper the shared one, so the two exclude each other. A probe that cannot
//! identify the lock object (it was unlinked, or replaced: its device/inode differ from
//! the ones the owner recorded) treats the peer as alive.
//!
//! # Reaping
//! A dead owner's slot is marked DEAD (it no longer counts as a sender or receiver) and
//! each of its recorded intents is settled with [`protocol::resolve`]: a slot it claimed
//! and never committed is published as skipped (dead sender) or freed (dead receiver).
//! An intent that a LIVE peer also records is left pending (that peer may be the real
//! claimant); the slot stays DEAD until a later pass settles it, then becomes FREE.
//!
//! # Bounds
//! Waiting threads (blocking waits, the async helper thread, and `try_` operations that
//! find the ring empty or full) run maintenance at most every [`MAINTENANCE_INTERVAL`]
//! per mapping, and blocking waits sleep at most [`super::wait::SLICE`] at a time, so a
//! dead peer is reaped, and its claims reclaimed, within about 200 ms of its death by
//! any process that waits on the channel.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::fd::OwnedFd;
use rustix::fs::{FlockOperation, fchmod, flock};
use rustix::io::Errno;
use rustix::shm;

use super::header::{LANES, MAX_PEERS};
use super::name;
use super::protocol::{self, NO_INTENT};
use super::segment::{self, Segment, Side, stat_of};
use crate::chan::ring::Reclaim;
use crate::sync::{AtomicUsize, Backoff};

/// How often (at most) one mapping runs maintenance.
pub(crate) const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(100);

const FREE: u64 = 0;
const LIVE: u64 = 1;
const DEAD: u64 = 2;

fn pack(generation: u32, state: u64, roles: u64) -> u64 {
    (u64::from(generation) << 32) | ((state & 0xff) << 8) | (roles & 0xff)
}

fn unpack(word: u64) -> (u32, u64, u64) {
    ((word >> 32) as u32, (word >> 8) & 0xff, word & 0xff)
}

/// What a probe of a peer slot's lock found.
enum Probe {
    /// Someone holds the lock: the owner is alive (or a new owner is moving in).
    Held,
    /// Nobody holds it; the returned descriptor holds a shared lock until dropped.
    Free(#[allow(dead_code)] OwnedFd),
    /// The lock object is missing or not the owner's: assume alive.
    Unknown,
}

impl Segment {
    /// Whether `side` ever had a peer attached.
    pub(crate) fn ever(&self, side: Side) -> bool {
        let h = self.header();
        let word = match side {
            Side::Send => &h.ever_senders,
            Side::Recv => &h.ever_receivers,
        };
        word.load(Ordering::Acquire) != 0
    }

    /// How many LIVE peers have `side`'s role (dead ones not yet reaped included).
    pub(crate) fn live_count(&self, side: Side) -> usize {
        (0..MAX_PEERS).filter(|&n| self.is_live(n, side)).count()
    }

    /// Whether peer slot `n` is LIVE with `side`'s role.
    #[inline]
    fn is_live(&self, n: usize, side: Side) -> bool {
        let (_, state, roles) = unpack(self.peer_state(n).load(Ordering::Acquire));
        state == LIVE && roles & side.role() != 0
    }

    /// Whether every peer of `side` is gone after at least one attached. Ordering: the
    /// `ever` flag is read first (a peer sets it after going LIVE), and the state words
    /// with Acquire, so a message committed before a peer's detach is visible to a ring
    /// check made after this returns `true`.
    pub(crate) fn side_gone(&self, side: Side) -> bool {
        // Stops at the first live peer: every empty `try_recv` (and full `try_send`)
        // asks, and a waiter's attempts with it.
        self.ever(side) && !(0..MAX_PEERS).any(|n| self.is_live(n, side))
    }

    /// Runs [`Segment::maintain`] if this mapping has not in the last
    /// [`MAINTENANCE_INTERVAL`]. Returns whether anything changed.
    pub(crate) fn maintain_if_due(&self) -> bool {
        let interval = MAINTENANCE_INTERVAL.as_millis() as u64;
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_maintenance.load(Ordering::Relaxed);
        if now < last.saturating_add(interval) {
            return false;
        }
        if self
            .last_maintenance
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.maintain()
    }

    /// Probes every LIVE or DEAD peer slot and reaps those whose owner is gone. Wakes
    /// every waiter of both sides if anything changed. Returns whether anything did.
    pub(crate) fn maintain(&self) -> bool {
        let mut changed = false;
        for n in 0..MAX_PEERS {
            let (_, state, _) = unpack(self.peer_state(n).load(Ordering::Acquire));
            if state != LIVE && state != DEAD {
                continue;
            }
            if let Probe::Free(lock) = self.probe(n) {
                changed |= self.reap(n);
                drop(lock);
            }
        }
        if changed {
            self.signal(Side::Send).notify_all();
            self.signal(Side::Recv).notify_all();
        }
        changed
    }

    fn probe(&self, n: usize) -> Probe {
        let Ok(fd) = shm::open(
            name::lock_object(self.name(), n).as_str(),
            shm::OFlags::RDWR,
            rustix::fs::Mode::empty(),
        ) else {
            return Probe::Unknown;
        };
        let Ok((_, _, dev, ino)) = stat_of(&fd) else {
            return Probe::Unknown;
        };
        let entry = self.peer_entry(n);
        if entry.lock_dev.load(Ordering::Relaxed) != dev
            || entry.lock_ino.load(Ordering::Relaxed) != ino
        {
            return Probe::Unknown;
        }
        match flock(&fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => Probe::Free(fd),
            Err(Errno::WOULDBLOCK) => Probe::Held,
            Err(_) => Probe::Unknown,
        }
    }

    /// Reaps slot `n`, whose lock the caller holds (shared or exclusive) with nobody else
    /// holding it: LIVE → DEAD, settle its intents, DEAD → FREE once all are settled.
    /// Returns whether the state changed.
    fn reap(&self, n: usize) -> bool {
        let word = self.peer_state(n);
        let w = word.load(Ordering::Acquire);
        let (generation, state, roles) = unpack(w);
        let dead = pack(generation, DEAD, roles);
        let mut changed = false;
        match state {
            LIVE => {
                if word
                    .compare_exchange(w, dead, Ordering::SeqCst, Ordering::Relaxed)
                    .is_err()
                {
                    return false;
                }
                changed = true;
            }
            DEAD => {}
            _ => return false,
        }
        if self.settle(n) {
            changed |= word
                .compare_exchange(
                    dead,
                    pack(generation, FREE, 0),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok();
        }
        changed
    }

    /// Settles every intent of dead slot `n`; returns whether all are settled.
    fn settle(&self, n: usize) -> bool {
        let mut all = true;
        for lane in &self.peer_entry(n).intents {
            let intent = lane.load(Ordering::Acquire);
            if intent == NO_INTENT {
                continue;
            }
            match protocol::resolve(self.ring(), intent, || self.live_claim(intent, n)) {
                Reclaim::Pending => all = false,
                outcome => {
                    let _ = lane.compare_exchange(
                        intent,
                        NO_INTENT,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    if outcome == Reclaim::Reclaimed {
                        // A skipped slot to consume, or a freed one to fill.
                        self.signal(Side::Send).notify_all();
                        self.signal(Side::Recv).notify_all();
                    }
                }
            }
        }
        all
    }

    /// Whether a LIVE slot other than `except` records `intent`.
    fn live_claim(&self, intent: usize, except: usize) -> bool {
        (0..MAX_PEERS).filter(|&m| m != except).any(|m| {
            let (_, state, _) = unpack(self.peer_state(m).load(Ordering::Acquire));
            state == LIVE
                && self
                    .peer_entry(m)
                    .intents
                    .iter()
                    .any(|l| l.load(Ordering::Relaxed) == intent)
        })
    }

    /// The pids recorded by LIVE peers of `side` (diagnostics).
    #[allow(dead_code)]
    pub(crate) fn live_pids(&self, side: Side) -> Vec<u32> {
        (0..MAX_PEERS)
            .filter_map(|n| {
                let (_, state, roles) = unpack(self.peer_state(n).load(Ordering::Acquire));
                (state == LIVE && roles & side.role() != 0)
                    .then(|| self.peer_entry(n).pid.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Whether any peer slot is LIVE with an owner that a probe finds alive (or cannot
    /// tell). Used to decide whether a segment is stale.
    pub(crate) fn any_peer_alive(&self) -> bool {
        (0..MAX_PEERS).any(|n| {
            let (_, state, _) = unpack(self.peer_state(n).load(Ordering::Acquire));
            state == LIVE && !matches!(self.probe(n), Probe::Free(_))
        })
    }
}

/// One attached handle family: a peer slot, its lock, and its intent lanes.
pub(crate) struct Peer {
    seg: Arc<Segment>,
    index: usize,
    side: Side,
    /// Holds the exclusive lock of the slot's lock object while attached.
    lock: Option<OwnedFd>,
    /// Process-local: which intent lanes are in use.
    lanes: [AtomicBool; LANES],
    /// Unlink the name when this handle family is dropped.
    unlink_on_drop: bool,
}

impl core::fmt::Debug for Peer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.seg.name())
            .field("slot", &self.index)
            .field("side", &self.side)
            .finish()
    }
}

impl Peer {
    /// Takes a free peer slot of `seg` for `side`.
    pub(crate) fn attach(seg: Arc<Segment>, side: Side, unlink_on_drop: bool) -> io::Result<Peer> {
        for n in 0..MAX_PEERS {
            let fd = shm::open(
                name::lock_object(seg.name(), n).as_str(),
                shm::OFlags::CREATE | shm::OFlags::RDWR,
                seg.lock_mode(),
            )?;
            // The umask may have narrowed the mode; only the file's owner can widen it.
            let _ = fchmod(&fd, seg.lock_mode());
            match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(e.into()),
            }
            let word = seg.peer_state(n);
            let (generation, state, _) = unpack(word.load(Ordering::Acquire));
            if state == LIVE || state == DEAD {
                // Its previous owner died (we hold its lock): settle what it left.
                seg.reap(n);
                let (_, state, _) = unpack(word.load(Ordering::Acquire));
                if state != FREE {
                    // A live peer may be the real claimant of one of its claims.
                    continue;
                }
                seg.signal(Side::Send).notify_all();
                seg.signal(Side::Recv).notify_all();
            }
            let (_, _, dev, ino) = stat_of(&fd)?;
            let entry = seg.peer_entry(n);
            entry.pid.store(
                rustix::process::getpid().as_raw_nonzero().get() as u32,
                Ordering::Relaxed,
            );
            entry.lock_dev.store(dev, Ordering::Relaxed);
            entry.lock_ino.store(ino, Ordering::Relaxed);
            for lane in &entry.intents {
                lane.store(NO_INTENT, Ordering::Relaxed);
            }
            // Sync point: Release publishes the entry to probes (Acquire state loads).
            word.store(
                pack(generation.wrapping_add(1), LIVE, side.role()),
                Ordering::SeqCst,
            );
            let h = seg.header();
            let ever = match side {
                Side::Send => &h.ever_senders,
                Side::Recv => &h.ever_receivers,
            };
            // After the LIVE store: whoever sees the flag sees the peer (see `side_gone`).
            ever.store(1, Ordering::SeqCst);
            return Ok(Peer {
                seg,
                index: n,
                side,
                lock: Some(fd),
                lanes: [const { AtomicBool::new(false) }; LANES],
                unlink_on_drop,
            });
        }
        Err(io::Error::other(format!(
            "all {MAX_PEERS} peer slots of shm channel {:?} are in use",
            seg.name()
        )))
    }

    /// The segment.
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The side this handle family is on.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// Takes an intent lane for one operation (waits if all [`LANES`] are in use by other
    /// threads of this handle family). One atomic swap when a lane is free; giving it
    /// back is a plain store.
    #[inline]
    pub(crate) fn lane(&self) -> Lane<'_> {
        // Sync point (here and in `lane_slow`): Acquire pairs with the Release store of
        // the lane's previous holder (in `Lane::drop`), so its use of the intent word
        // happens before ours.
        if !self.lanes[0].swap(true, Ordering::Acquire) {
            return self.lane_at(0);
        }
        self.lane_slow()
    }

    /// [`Peer::lane`] when lane 0 is taken: the first free lane, waiting for one if need be.
    #[cold]
    fn lane_slow(&self) -> Lane<'_> {
        let backoff = Backoff::new();
        loop {
            for (lane, used) in self.lanes.iter().enumerate() {
                if !used.load(Ordering::Relaxed) && !used.swap(true, Ordering::Acquire) {
                    return self.lane_at(lane);
                }
            }
            backoff.snooze();
        }
    }

    /// The lane guard for lane `lane`, which the caller has just taken.
    #[inline]
    fn lane_at(&self, lane: usize) -> Lane<'_> {
        Lane {
            used: &self.lanes[lane],
            word: &self.intents()[lane],
        }
    }

    /// This peer's intent words in the segment.
    #[inline]
    fn intents(&self) -> &[AtomicUsize; LANES] {
        &self.seg.peer_entry(self.index).intents
    }
}

/// An intent lane taken for one operation.
pub(crate) struct Lane<'a> {
    /// The lane's in-use flag.
    used: &'a AtomicBool,
    /// The lane's intent word in the segment.
    word: &'a AtomicUsize,
}

impl Lane<'_> {
    /// The lane's intent word in the segment.
    #[inline]
    pub(crate) fn word(&self) -> &AtomicUsize {
        self.word
    }
}

impl Drop for Lane<'_> {
    #[inline]
    fn drop(&mut self) {
        self.used.store(false, Ordering::Release);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let word = self.seg.peer_state(self.index);
        let (generation, ..) = unpack(word.load(Ordering::Acquire));
        // Every operation has finished (no handle is left), so no intent is recorded.
        // SeqCst, then wake everyone: the other side re-checks for disconnection.
        word.store(pack(generation, FREE, 0), Ordering::SeqCst);
        self.seg.signal(Side::Send).notify_all();
        self.seg.signal(Side::Recv).notify_all();
        // Closing the descriptor releases the lock.
        let lock = self.lock.take();
        if self.unlink_on_drop && same_object(&self.seg) {
            let _ = segment::unlink(self.seg.name());
        }
        drop(lock);
    }
}

/// Whether the channel's name still refers to the segment `seg` mapped (so that a
/// handle does not unlink a newer segment of the same name).
fn same_object(seg: &Segment) -> bool {
    let Ok(fd) = shm::open(
        name::segment_object(seg.name()).as_str(),
        shm::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    match (stat_of(&fd), stat_of(seg.fd())) {
        (Ok((_, _, d1, i1)), Ok((_, _, d2, i2))) => (d1, i1) == (d2, i2),
        _ => false,
    }
}
