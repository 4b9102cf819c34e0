//! The peer table: who is attached, whether they are alive, and recovery from those
//! that died.
//!
//! # Entries
//! The segment holds [`MAX_PEERS`] peer slots. Slot `n` has a state word
//! (`generation << 32 | state << 8 | roles`, state one of FREE / LIVE / DEAD, roles the
//! sender and receiver bits) and an entry with the owner's pid and [`LANES`] intent
//! words (see [`super::protocol`]). Every attached handle family (one
//! `open`/`create` and its clones) owns one slot.
//!
//! # Liveness
//! The owner of slot `n` holds an exclusive lock on byte [`lock_byte`]`(n)` of the
//! segment file, through its family's own open file description, for as long as it is
//! attached (see [`super::lock`]). The kernel drops the lock when the process dies,
//! however it dies, so a *probe* that manages to take a shared lock on that byte
//! (non-blocking, through a description of its own) has proof that nobody owns the slot.
//! A slot is only ever taken over or reaped under that lock: the new owner holds the
//! exclusive lock, a reaper the shared one, so the two exclude each other. A probe that
//! cannot get a description of its own treats every peer as alive.
//!
//! The lock, not the state word, is the proof: an attach takes the lock *before* it
//! stores LIVE, and a detach stores FREE before it releases the lock, so a slot can be
//! locked while FREE (a peer moving in or out). Reapers only act on LIVE and DEAD slots,
//! but [`Segment::prove_all_dead`] (for [`super::remove_stale`]) asks for every slot's
//! lock, whatever its state says.
//!
//! The state machine itself (attach, reap, settle, detach, and the lanes below) is
//! [`super::table`], shared with the loom models; this module binds it to the segment
//! and its locks.
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

use core::ptr::NonNull;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fd::{AsFd, OwnedFd};
use rustix::shm;

use super::asym;
use super::header::{Kind, LANES, MAX_PEERS};
use super::lock::{self, Lock, lock_byte, side_lock_byte};
use super::name;
use super::protocol;
use super::ring::ShmSlots;
use super::segment::{self, Segment, Side, stat_of};
use super::spsc::Family;
use super::table::{self, LIVE, Lanes, Table, unpack};
use crate::chan::ring::{Reclaim, Ring};
use crate::sync::AtomicUsize;

/// How often (at most) one mapping runs maintenance.
pub(crate) const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(100);

/// Proof that no peer is attached to a segment, nor attaching: a shared lock on every
/// peer slot's byte, held through a description of its own until this is dropped. While
/// it is held, no attach can take a slot (it fails as if all were in use).
pub(crate) struct AllDead(#[allow(dead_code)] OwnedFd);

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
        table::is_live(self, n, side.role())
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
        // One description for the pass, private to this call (two threads probing
        // through one description would share, and release, each other's locks), closed
        // at the end, which drops any lock an unlock failed to release. Without one,
        // nothing can be proven: every peer counts as alive.
        let Ok(probe) = self.reopen() else {
            return false;
        };
        let probe = probe.as_fd();
        table::maintain(
            self,
            // An error (rather than a refusal) proves nothing either: alive.
            |n| lock::try_lock(probe, lock_byte(n), 1, Lock::Shared).unwrap_or(false),
            |n| {
                let _ = lock::unlock(probe, lock_byte(n), 1);
            },
        )
    }

    /// The pids recorded by LIVE peers of `side` (diagnostics).
    pub(crate) fn live_pids(&self, side: Side) -> Vec<u32> {
        (0..MAX_PEERS)
            .filter_map(|n| {
                let (_, state, roles) = unpack(self.peer_state(n).load(Ordering::Acquire));
                (state == LIVE && roles & side.role() != 0)
                    .then(|| self.peer_entry(n).pid.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Proves that no peer is attached or attaching, whatever the peer table says: takes
    /// a shared lock on every slot's byte at once (one call, through a description of its
    /// own). `Ok(None)` if any slot's lock is held exclusively (by an owner, or one
    /// moving in or out; a reaper's shared lock does not conflict, and proves nothing
    /// alive); an error if no description could be opened. The two side locks of the
    /// single-producer mode ([`side_lock_byte`], right after the slots' bytes) are
    /// taken with them: a family of that mode takes its side's lock before its slot's,
    /// so one caught between the two is attaching too.
    pub(crate) fn prove_all_dead(&self) -> io::Result<Option<AllDead>> {
        let fd = self.reopen()?;
        const _: () = assert!(side_lock_byte(true) == MAX_PEERS as u64);
        const _: () = assert!(side_lock_byte(false) == MAX_PEERS as u64 + 1);
        let bytes = MAX_PEERS as u64 + 2;
        let all = lock::try_lock(fd.as_fd(), lock_byte(0), bytes, Lock::Shared)?;
        Ok(all.then_some(AllDead(fd)))
    }
}

impl Table for Segment {
    type Slots = ShmSlots;

    fn slots(&self) -> usize {
        MAX_PEERS
    }

    fn state(&self, n: usize) -> &AtomicU64 {
        self.peer_state(n)
    }

    fn intents(&self, n: usize) -> &[AtomicUsize] {
        &self.peer_entry(n).intents
    }

    fn ring(&self) -> &Ring<ShmSlots> {
        Segment::ring(self)
    }

    fn resolve(&self, intent: usize, live_claim: impl FnOnce() -> bool) -> Reclaim {
        if self.layout().spsc {
            // The single-producer mode records no intents and has no claims to settle
            // (see `shm::spsc`): only a hostile peer's fake intents reach here.
            return Reclaim::Settled;
        }
        match self.layout().kind {
            Kind::Signal => super::signal::resolve(self, intent, live_claim),
            // Mailboxes record no intents (only a hostile peer's fake ones reach here):
            // resolved on the ring, whose stamps they do not use.
            Kind::Typed | Kind::Bytes | Kind::Mailbox | Kind::ByteMailbox => {
                protocol::resolve(Segment::ring(self), intent, live_claim)
            }
        }
    }

    fn record_owner(&self, n: usize) {
        self.peer_entry(n).pid.store(
            rustix::process::getpid().as_raw_nonzero().get() as u32,
            Ordering::Relaxed,
        );
    }

    fn wake_all(&self) {
        self.signal(Side::Send).notify_all();
        self.signal(Side::Recv).notify_all();
    }
}

/// One attached handle family: a peer slot, its lock, and its intent lanes.
pub(crate) struct Peer {
    seg: Arc<Segment>,
    index: usize,
    side: Side,
    /// Process-local: which intent lanes are in use, keyed by
    /// [`thread_key`](crate::sync::thread_key).
    lanes: Lanes<LANES>,
    /// This peer's intent words in the segment (its entry's `intents`), located once at
    /// attach: an operation takes one per call.
    intents: NonNull<[AtomicUsize; LANES]>,
    /// Unlink the name when this handle family is dropped.
    unlink_on_drop: bool,
    /// In a single-producer channel: the family's process-local state (it holds its
    /// side's lock, [`side_lock_byte`], for as long as it is attached).
    family: Option<Family>,
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
    /// Takes a free peer slot of `seg` for `side`. `seg` must be this family's own (see
    /// [`Segment`]): the slot's lock is taken through its description.
    ///
    /// In a single-producer channel the family first takes its side's lock
    /// ([`side_lock_byte`]): [`io::ErrorKind::ResourceBusy`] while another family of
    /// its side holds it. A sender then repairs `tail`
    /// ([`recover_tail`](super::spsc::recover_tail)) before its first send. A channel
    /// created with light fences is [`io::ErrorKind::Unsupported`] in a process that
    /// cannot issue heavy ones (see `super::asym`).
    pub(crate) fn attach(seg: Arc<Segment>, side: Side, unlink_on_drop: bool) -> io::Result<Peer> {
        let fd = seg.fd().as_fd();
        let spsc = seg.layout().spsc;
        if seg.layout().light && !asym::available() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "shm channel {:?} was created in the single-producer mode with light \
                     fences, whose waiters need {}; a channel created by such a process \
                     uses SeqCst fences and opens anywhere",
                    seg.name(),
                    asym::UNAVAILABLE
                ),
            ));
        }
        let side_byte = side_lock_byte(side == Side::Send);
        if spsc && !lock::try_lock(fd, side_byte, 1, Lock::Exclusive)? {
            let pids = seg.live_pids(side);
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "shm channel {:?} is single-producer single-consumer and another {} is                      attached (pid {pids:?})",
                    seg.name(),
                    match side {
                        Side::Send => "sender",
                        Side::Recv => "receiver",
                    }
                ),
            ));
        }
        let taken = table::attach(
            &*seg,
            side.role(),
            |n| lock::try_lock(fd, lock_byte(n), 1, Lock::Exclusive),
            |n| lock::unlock(fd, lock_byte(n), 1),
        );
        if spsc && !matches!(taken, Ok(Some(_))) {
            let _ = lock::unlock(fd, side_byte, 1);
        }
        if let Some(n) = taken? {
            // Holding the side's lock: no other sender runs (a dead one's last publish
            // may have left `tail` short).
            let (light, biased) = (seg.layout().light, asym::available());
            let family = spsc.then(|| match side {
                Side::Send => Family::producer(seg.ring(), light, biased),
                Side::Recv => Family::consumer(light, biased),
            });
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
                lanes: Lanes::new(),
                intents,
                unlink_on_drop,
                family,
            });
        }
        Err(io::Error::other(format!(
            "all {MAX_PEERS} peer slots of shm channel {:?} are in use (or it is being \
             removed as stale)",
            seg.name()
        )))
    }

    /// The segment.
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The index of the peer slot this handle family holds.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The family's process-local state in a single-producer channel; `None` in the
    /// many-to-many mode.
    #[inline]
    pub(crate) fn family(&self) -> Option<&Family> {
        self.family.as_ref()
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
        let (index, borrowed) = self.lanes.take(crate::sync::thread_key());
        Lane {
            give_back: borrowed.then_some((&self.lanes, index)),
            word: &self.intents()[index],
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
    /// The family's lanes and this lane's index, to give it back when the operation
    /// ends; `None` for lane 0, which its owner keeps.
    give_back: Option<(&'a Lanes<LANES>, usize)>,
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
        if let Some((lanes, index)) = self.give_back {
            lanes.give_back(index);
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Every operation has finished (no handle is left), so no intent is recorded.
        table::detach(&*self.seg, self.index);
        if self.unlink_on_drop && same_object(&self.seg) {
            let _ = segment::unlink(self.seg.name());
        }
        // Last, release the slot's lock (the segment's description may stay open a while,
        // e.g. in the async helper's hands; were the unlock to fail, closing it releases
        // the lock).
        let _ = lock::unlock(self.seg.fd().as_fd(), lock_byte(self.index), 1);
        if self.family.is_some() {
            let _ = lock::unlock(
                self.seg.fd().as_fd(),
                side_lock_byte(self.side == Side::Send),
                1,
            );
        }
    }
}

/// Whether the channel's name still refers to the segment `seg` mapped (so that a
/// handle does not unlink a newer segment of the same name).
pub(crate) fn same_object(seg: &Segment) -> bool {
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
    use crate::shm::table::{FREE, pack};

    /// A sender peer attached to a fresh segment, unlinked when the peer drops.
    fn attached(tag: &str) -> Peer {
        let name = format!("unit-peers-{tag}-{}", std::process::id());
        let layout = Layout::new(Kind::Typed, 4, Fingerprint::of::<u64>()).unwrap();
        let seg = Segment::create(&name, layout, 0o600).unwrap();
        Peer::attach(Arc::new(seg), Side::Send, true).unwrap()
    }

    /// Two handle families of one process each hold their own slot's lock (through
    /// their own descriptions): a probe finds both held, neither's maintenance reaps
    /// the other or itself, a slot marked LIVE without a lock is reaped, and the proof
    /// that all are dead comes only once both detached.
    #[test]
    #[cfg_attr(miri, ignore = "shm_open and mmap")]
    fn families_of_one_process_hold_their_own_locks() {
        let a = attached("families");
        let expect = crate::shm::header::Expect::any(Kind::Typed);
        let seg = Segment::open(a.seg.name(), &expect).unwrap();
        let b = Peer::attach(Arc::new(seg), Side::Recv, false).unwrap();
        assert_ne!(a.index, b.index);
        assert!(a.seg.prove_all_dead().unwrap().is_none());
        // A slot marked LIVE whose lock nobody holds: its owner died.
        let ghost = MAX_PEERS - 1;
        a.seg
            .peer_state(ghost)
            .store(pack(1, LIVE, Side::Send.role()), Ordering::SeqCst);
        assert_eq!(a.seg.live_count(Side::Send), 2);
        assert!(b.seg.maintain(), "the ghost is reaped");
        assert!(!a.seg.maintain(), "and nothing else");
        assert_eq!(
            unpack(a.seg.peer_state(ghost).load(Ordering::SeqCst)).1,
            FREE
        );
        assert_eq!(a.seg.live_count(Side::Send), 1);
        assert_eq!(a.seg.live_count(Side::Recv), 1);
        let probe = Arc::clone(&b.seg);
        drop(a);
        assert!(
            probe.prove_all_dead().unwrap().is_none(),
            "b still holds its lock"
        );
        assert!(!probe.maintain());
        assert_eq!(probe.live_count(Side::Recv), 1);
        drop(b);
        assert!(probe.prove_all_dead().unwrap().is_some(), "both released");
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
            assert!(peer.lanes.in_use(0), "lane 0 stays taken");
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
                (1..LANES).all(|lane| !peer.lanes.in_use(lane)),
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
