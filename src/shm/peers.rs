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

use core::cell::Cell;
use core::ptr::NonNull;
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
    /// Process-local: which intent lanes are in use. Lane 0, once taken, stays with
    /// `owner`.
    lanes: [AtomicBool; LANES],
    /// The [`thread_key`] of the thread that owns lane 0 for good, or 0 before any
    /// thread took it: the first thread to find lane 0 free keeps it, so that a handle
    /// used from one thread takes its lane without a read-modify-write.
    owner: AtomicUsize,
    /// This peer's intent words in the segment (its entry's `intents`), located once at
    /// attach: an operation takes one per call.
    intents: NonNull<[AtomicUsize; LANES]>,
    /// Unlink the name when this handle family is dropped.
    unlink_on_drop: bool,
}

// SAFETY: the only field that is not `Send`/`Sync` by itself, `intents`, points into the
// shared mapping that `seg` keeps alive and is only accessed atomically: nothing in a
// `Peer` is tied to the thread that attached it.
unsafe impl Send for Peer {}
// SAFETY: as above; every access through `&Peer` is atomic.
unsafe impl Sync for Peer {}

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
            let intents = NonNull::from(&seg.peer_entry(n).intents);
            return Ok(Peer {
                seg,
                index: n,
                side,
                lock: Some(fd),
                lanes: [const { AtomicBool::new(false) }; LANES],
                owner: AtomicUsize::new(0),
                intents,
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
    /// threads of this handle family).
    ///
    /// The thread that owns lane 0 (the first to take it) gets it with one thread-local
    /// read and one relaxed load, and never gives it back; any other thread takes one of
    /// the others with an atomic swap and gives it back with a store. A swap is a locked
    /// instruction, a full barrier on x86: two pinned threads streaming 64-byte messages
    /// took 8.6 ns per message less (54.7 → 45.2, 30 of 30 interleaved blocks) with
    /// neither side swapping nor fencing after its commit (see `protocol`).
    #[inline]
    pub(crate) fn lane(&self) -> Lane<'_> {
        let key = thread_key();
        // Only this thread ever stores its own key (keys are never reused), so a match
        // means lane 0 is ours, and nobody else uses it.
        if self.owner.load(Ordering::Relaxed) == key {
            return self.owned_lane();
        }
        self.lane_slow(key)
    }

    /// [`Peer::lane`] for a thread that does not own lane 0: it takes lane 0 for good if
    /// nobody has, or else the first free lane of the others, waiting for one if need be.
    /// The `used` flags are this process's own memory, not the segment's, and a lane is
    /// held for one attempt of one operation, which is bounded: the wait ends.
    #[cold]
    fn lane_slow(&self, key: usize) -> Lane<'_> {
        // Sync point (both swaps): Acquire pairs with the Release store of the lane's
        // previous holder (in `Lane::drop`), so its use of the intent word happens
        // before ours. Lane 0 had no previous holder: its word was last written at
        // attach, which happens before any use of the handle.
        if self.owner.load(Ordering::Relaxed) == 0 && !self.lanes[0].swap(true, Ordering::Acquire) {
            self.owner.store(key, Ordering::Relaxed);
            return self.owned_lane();
        }
        let backoff = Backoff::new();
        loop {
            for (lane, used) in self.lanes.iter().enumerate().skip(1) {
                if !used.load(Ordering::Relaxed) && !used.swap(true, Ordering::Acquire) {
                    return Lane {
                        used: Some(used),
                        word: &self.intents()[lane],
                    };
                }
            }
            backoff.snooze();
        }
    }

    /// Lane 0, for its owner: kept, never given back.
    #[inline]
    fn owned_lane(&self) -> Lane<'_> {
        Lane {
            used: None,
            word: &self.intents()[0],
        }
    }

    /// This peer's intent words in the segment.
    #[inline]
    fn intents(&self) -> &[AtomicUsize; LANES] {
        // SAFETY: the pointer is to this peer's entry in the mapping of `self.seg`, which
        // `self` keeps alive (the mapping is unmapped only when the last `Arc` to the
        // segment goes); the words are only accessed atomically.
        unsafe { self.intents.as_ref() }
    }
}

/// An intent lane taken for one operation.
pub(crate) struct Lane<'a> {
    /// The lane's in-use flag, to clear when the operation ends; `None` for lane 0,
    /// which its owner keeps.
    used: Option<&'a AtomicBool>,
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
        if let Some(used) = self.used {
            used.store(false, Ordering::Release);
        }
    }
}

/// The calling thread's key for [`Peer::lane`]: nonzero, and never the same for two
/// threads of a process (a counter, drawn once per thread, so a key outlives its
/// thread unused rather than passing to another).
#[inline]
fn thread_key() -> usize {
    std::thread_local! {
        static KEY: Cell<usize> = const { Cell::new(0) };
    }
    KEY.with(|key| match key.get() {
        0 => {
            let new = next_thread_key();
            key.set(new);
            new
        }
        known => known,
    })
}

/// A fresh [`thread_key`].
#[cold]
fn next_thread_key() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Barrier;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::shm::header::{Fingerprint, Kind, Layout};

    /// A sender peer attached to a fresh segment, unlinked when the peer drops.
    fn attached(tag: &str) -> Peer {
        let name = format!("unit-peers-{tag}-{}", std::process::id());
        let layout = Layout::new(Kind::Typed, 4, Fingerprint::of::<u64>()).unwrap();
        let seg = Segment::create(&name, layout, 0o600).unwrap();
        Peer::attach(Arc::new(seg), Side::Send, true).unwrap()
    }

    fn word(lane: &Lane<'_>) -> usize {
        lane.word() as *const AtomicUsize as usize
    }

    /// The first thread to take a lane keeps lane 0 and gets it back without the in-use
    /// flags; `LANES - 1` other threads holding lanes at once each hold another one of
    /// their own, and give it back. (A lane given to two threads at once would let one's
    /// intent overwrite the other's, and a crash would then lose a claim.)
    #[test]
    #[cfg_attr(miri, ignore = "shm_open and mmap")]
    fn first_user_keeps_lane_zero_and_the_others_are_exclusive() {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let peer = attached("lanes");
            let zero = &peer.intents()[0] as *const AtomicUsize as usize;
            assert_eq!(word(&peer.lane()), zero);
            assert!(peer.lanes[0].load(Ordering::Relaxed), "lane 0 stays taken");
            assert_eq!(word(&peer.lane()), zero, "and comes back to its owner");
            let barrier = Barrier::new(LANES - 1);
            let held: Vec<usize> = std::thread::scope(|s| {
                let holders: Vec<_> = (1..LANES)
                    .map(|_| {
                        s.spawn(|| {
                            let lane = peer.lane();
                            barrier.wait();
                            word(&lane)
                        })
                    })
                    .collect();
                holders.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let distinct: HashSet<usize> = held.iter().copied().collect();
            assert_eq!(distinct.len(), LANES - 1, "a lane held twice at once");
            assert!(!distinct.contains(&zero), "lane 0 lent to another thread");
            assert!(
                peer.lanes[1..]
                    .iter()
                    .all(|used| !used.load(Ordering::Relaxed)),
                "a lane not given back"
            );
            done.send(()).unwrap();
        });
        // A watchdog: lanes that are not exclusive or not given back hang the holders.
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("lane test hung or failed");
    }
}
