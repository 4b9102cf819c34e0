//! Signal targets in shared memory: the cross-process twin of [`crate::signal`].
//!
//! A [`Target`] owns a named segment (the same namespace, file and validation rules as
//! the channels of [`crate::shm`]) holding a signal set: any process that knows the name
//! opens a [`Raiser`] and raises signals on it, and the target's owner waits for them.
//! Numbers, kinds (standard numbers coalesce with a count, queued numbers queue a
//! payload), dispositions, masks, ordering and the types ([`Signal`], [`SigSet`],
//! [`SigInfo`], [`Disposition`], [`RaiseError`]) are those of [`crate::signal`]; the
//! owner's side is one piece of code for both (`signal::owner`).
//!
//! ```
//! use conduit::shm::signal::{Raiser, Target};
//! use conduit::signal::Signal;
//!
//! let name = format!("doc-shm-signal-{}", std::process::id());
//! let target = Target::create(&name)?;
//! // Usually in another process:
//! let raiser = Raiser::open(&name)?;
//! let usr1 = Signal::new(10).unwrap();
//! raiser.raise(usr1).unwrap();
//! raiser.raise(usr1).unwrap();
//! let info = target.wait();
//! assert_eq!((info.signal(), info.count()), (usr1, 2));
//! assert_eq!(info.pid(), std::process::id());
//! assert_eq!(info.raiser_id(), raiser.id());
//! conduit::shm::unlink(&name)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Ownership, step by step
//!
//! 1. **One owner.** A target's segment has one owner at a time: the [`Target`] that
//!    holds it waits, dispatches and sets dispositions. The segment records the owner in
//!    an *owner word*: the owner's peer slot and that slot's generation (peer slots and
//!    their liveness locks are the channels', see [`crate::shm`] "Peers and crashes").
//! 2. **A live owner is exclusive.** [`Target::open`] of a name whose owner is alive
//!    fails with [`io::ErrorKind::ResourceBusy`], naming the owner's pid. Whether the
//!    owner is alive is decided by its liveness lock (a probe, not a guess from a pid).
//! 3. **Takeover.** When the owner died (even by `kill -9`), the next
//!    [`Target::open`] takes over: pending signals and queued entries are kept, so is
//!    the mask and every ignored number (like `exec`), while caught numbers go back to
//!    [`Disposition::Deliver`] (handlers are closures of the dead process) and a handler
//!    that was running when it died no longer holds its number back. The waiter counts
//!    the dead owner left raised are reset (only the owner waits).
//! 4. **Dropping** the target marks the signal set closed (raises fail with
//!    [`RaiseError::Disconnected`] at once) and clears the owner word; the segment stays
//!    (unless created with [`Options::unlink_on_drop`](super::Options::unlink_on_drop)),
//!    and a later [`Target::open`] reopens it, pending signals included.
//! 5. **Raisers** are handle families like the channels' senders: each
//!    [`Raiser::open`] attaches one (up to [`MAX_PEERS`](super::MAX_PEERS) families in
//!    all, the owner's included) and gets a raiser id of its own, shared by its clones.
//!
//! # Raising, step by step
//!
//! A raise runs the heap target's algorithm (`signal::state`) on the segment's words:
//! 1. it loads `closed` (the owner dropped it: [`RaiseError::Disconnected`]) and
//!    `ignore` (an ignored number is counted and dropped, in the raiser's process: the
//!    words live in the segment, so every raiser honours the owner's `Ignore`);
//! 2. a standard number adds to its count, a queued number claims a slot of its ring,
//!    writes payload and origin and commits. The claim is recorded in the raiser's
//!    intent lane first, tagged with the queue, so a raiser killed between claim and
//!    commit is recovered like a dead channel sender: a survivor (the owner's waits, or
//!    anyone's maintenance) publishes the slot as a skip, which the owner's take
//!    consumes. The queue never wedges, and every raise that returned `Ok` is
//!    delivered;
//! 3. it sets the pending bit (SeqCst `fetch_or`) and, only if the owner's waiter
//!    counts say someone sleeps, bumps the futex word and wakes every sleeper
//!    (blocking waits and the process's async helper).
//!
//! So a raise never blocks and, when nobody sleeps, makes no system call: a few atomic
//! operations on the segment.
//!
//! # When the owner is gone
//!
//! A raise on a target whose owner dropped it fails at once (step 1). An owner killed
//! with `kill -9` cannot mark anything, and probing its liveness lock costs system
//! calls, so a raise probes only when it has reason to: when the number it raises is
//! still pending from an earlier raise (the owner has not taken it) or its queue is
//! full. Then it reads the owner word and its peer slot's state (two loads) and the
//! coarse monotonic clock (through the vDSO: no system call), and runs the segment's
//! maintenance at most every 10 ms of that clock; maintenance probes the peer locks at
//! most every 100 ms per mapping (the channels' rate) and reaps the dead owner's peer
//! slot, and from then on the owner word names a dead slot and raises fail with
//! [`RaiseError::Disconnected`]. (Measured: a raise that finds its number pending
//! costs about 6 ns more than the in-process target's.) A raiser that
//! keeps raising thus sees `Disconnected` within about 100 ms of the owner's death
//! (well under 1 s), from its second raise of a number after the death on. Its first
//! raise of a number the dead owner had taken succeeds and stays pending for a new
//! owner (`kill` of a process that is dying may also succeed). [`Raiser::is_disconnected`]
//! probes the same way, whenever asked. A raise that failed with `Disconnected`
//! recorded nothing.
//!
//! # Origin
//!
//! Each delivery carries the raising process's pid and its raiser's id: a queued entry
//! and a standard number's origin word hold `pid << 32 | id`. Raiser ids are drawn from
//! a counter in the segment (32 bits, never 0), so they are unique among the raiser
//! families of one target until 2³² of them have opened.
//!
//! # Waiting
//!
//! The owner's waits sleep on the receive-side futex words of the segment header, with
//! the channels' wait loop (`shm::wait::block`: spin briefly, then sleep in slices of at
//! most 100 ms, re-checking and running maintenance between them) and, for async waits,
//! the process's one helper thread (`shm::hub`). The no-lost-wake-up argument is the
//! futex module's, with the raise's `fetch_or` of the pending bit (and the owner's
//! unmask, handler end and queue re-arm, see [`crate::signal`]) as the change, and the
//! wait's SeqCst loads of `pending`, `mask` and `running` as the re-check; a change
//! wakes *every* sleeper, since waits may be for different sets.
//!
//! # Hostile peers
//!
//! The layout is fixed at open from the validated header; nothing read later is
//! trusted. Signal numbers index the words only after a [`Signal`] validated them;
//! ring positions and stamps go through the channels' bounded ring protocol; a take
//! that finds a pending bit with nothing behind it gives up after a bounded number of
//! rounds (a blocking wait then goes back to sleeping and re-checking), and so does a
//! raise or a take that finds a slot busy for longer than a short backoff (reported
//! [`RaiseError::Full`] and "nothing yet"). Garbage in the words can make raises fail,
//! deliveries go missing or arrive with wrong counts, payloads or origins, but cannot
//! cause a panic, undefined behaviour or an unbounded loop.
//!
//! # Layout
//!
//! The segment is a channel segment's header and peer table (kind 3, "signal target";
//! capacity is the queue depth, the slot entry two `u64` words), whose ring is the first
//! queued number's; after its slots, each 128-aligned: the other 32 queued numbers'
//! rings (head and tail in 128 bytes each, then `depth` slots of 32 bytes), then the
//! words: `pending`, `mask`, `running`, `ignore`, `catch`, `closed` (128 bytes), the
//! owner word and the raiser-id counter (128), standard counts (256), standard origins
//! (256), ignored counts (512).
//!
//! # Limits
//!
//! Queue depth 1 to [`MAX_QUEUE_DEPTH`](crate::signal::MAX_QUEUE_DEPTH), rounded up to a
//! power of two ([`QUEUE_DEPTH`] by default, or
//! [`Options::capacity`](super::Options::capacity)); a queue's positions wrap after 2⁵⁶
//! raises of its number (its intents keep 56 bits of a position).

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::endpoint::{attach, open_or_create};
use super::header::{Expect, Fingerprint, Kind, Layout, MAX_PEERS, MAX_TOTAL, RING_OFFSET};
use super::hub::AsyncWait;
use super::name;
use super::options::Options;
use super::peers::Peer;
use super::protocol;
use super::ring::ShmSlots;
use super::segment::{Segment, Side};
use super::table::{self, LIVE};
use super::wait;
use crate::chan::ring::{Reclaim, Ring, RingStorage, initial_stamp};
use crate::signal::state::{
    FIRST_QUEUED, QUEUED, QueueLane, QueueStorage, RaiseFail, STANDARD, SignalStorage, State,
    Taken, Words, bit, untag,
};
use crate::signal::{Backend, Owner, QUEUE_DEPTH, Want};
pub use crate::signal::{Disposition, RaiseError, SigInfo, SigSet, Signal};
use crate::sync::{AtomicU64, Ordering, after_seqcst_rmw};

/// Bytes of the words block at the end of the segment.
const WORDS_BYTES: usize = 1280;
/// Offsets within the words block.
const OWNER: usize = 128;
const NEXT_RAISER: usize = 136;
const COUNTS: usize = 256;
const ORIGINS: usize = 512;
const IGNORED: usize = 768;

const _: () = {
    assert!(size_of::<Words>() <= OWNER);
    assert!(COUNTS + STANDARD * 8 <= ORIGINS);
    assert!(ORIGINS + STANDARD * 8 <= IGNORED);
    assert!(IGNORED + 64 * 8 <= WORDS_BYTES);
};

fn round128(n: usize) -> Option<usize> {
    Some(n.checked_add(127)? & !127)
}

/// Where a signal target's queues and words lie, from its validated layout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Area {
    /// Slot 0 of the first queue (the segment's ring).
    first_slots: usize,
    /// The second queue's ring.
    rest: usize,
    /// Bytes per queue after the first: head, tail, slots.
    block: usize,
    /// The words block.
    words: usize,
    /// The end of the segment.
    pub(crate) end: usize,
}

impl Area {
    /// The area of a target whose first queue's slots (`depth` of `slot_size` bytes)
    /// start at `slots_offset`; `None` if the segment would be too large.
    pub(crate) fn new(slots_offset: usize, depth: usize, slot_size: usize) -> Option<Area> {
        let slots = depth.checked_mul(slot_size)?;
        let rest = round128(slots_offset.checked_add(slots)?)?;
        let block = round128(slots.checked_add(256)?)?;
        let words = rest.checked_add(block.checked_mul(QUEUED - 1)?)?;
        let end = words.checked_add(WORDS_BYTES)?;
        (end <= MAX_TOTAL).then_some(Area {
            first_slots: slots_offset,
            rest,
            block,
            words,
            end,
        })
    }

    /// The area of a layout that [`Layout::new`] made for [`Kind::Signal`] (which
    /// checked that it exists).
    fn of(layout: &Layout) -> Area {
        Area::new(layout.slots_offset, layout.capacity, layout.slot_size)
            .expect("Layout::new checked the signal area")
    }

    /// Queue `q`'s (ring offset, slots offset).
    fn queue(&self, q: usize) -> (usize, usize) {
        if q == 0 {
            (RING_OFFSET, self.first_slots)
        } else {
            let ring = self.rest + (q - 1) * self.block;
            (ring, ring + 256)
        }
    }
}

/// One queued number's ring in the segment: the channel ring's slots, whose payload
/// holds the entry's two words.
#[derive(Debug)]
pub(crate) struct ShmQueue(ShmSlots);

impl ShmQueue {
    /// Queue `q` (`q < QUEUED`) of the mapping at `base`.
    ///
    /// # Safety
    /// `base` is a live mapping of `layout.total_size` bytes that outlives the queue, and
    /// `layout` a [`Kind::Signal`] layout.
    unsafe fn new(base: NonNull<u8>, layout: &Layout, q: usize) -> ShmQueue {
        let (ring, slots) = Area::of(layout).queue(q.min(QUEUED - 1));
        let queue_layout = Layout {
            slots_offset: slots,
            ..*layout
        };
        // SAFETY: the area puts `ring + 256 <= slots` and `slots + depth * slot_size` inside
        // the mapping, 128-aligned from a page-aligned base (what `ShmSlots::new` relies
        // on, as for the channel's ring); the caller keeps the mapping alive.
        ShmQueue(unsafe { ShmSlots::new(base, &queue_layout, ring) })
    }
}

// SAFETY: delegated to `ShmSlots`, whose stamps are distinct words of distinct slots.
unsafe impl RingStorage for ShmQueue {
    const SHARED: bool = true;

    #[inline]
    fn head(&self) -> &crate::sync::AtomicUsize {
        self.0.head()
    }

    #[inline]
    fn tail(&self) -> &crate::sync::AtomicUsize {
        self.0.tail()
    }

    #[inline]
    fn stamp(&self, index: usize) -> Option<&crate::sync::AtomicUsize> {
        self.0.stamp(index)
    }
}

// SAFETY: the entry is payload words 0 and 1 of slot `index`, whose stamp `stamp(index)`
// returns; distinct slots' payloads are distinct.
unsafe impl QueueStorage for ShmQueue {
    #[inline]
    fn entry(&self, index: usize) -> Option<(&AtomicU64, &AtomicU64)> {
        Some((self.0.entry_word(index, 0)?, self.0.entry_word(index, 1)?))
    }
}

/// Writes the initial stamps of every queue but the first (whose slots are the
/// segment's ring, initialised by `Segment::create`).
///
/// # Safety
/// As [`ShmQueue::new`], and nobody else uses the mapping yet.
pub(crate) unsafe fn init_queues(base: NonNull<u8>, layout: &Layout) {
    for q in 1..QUEUED {
        // SAFETY: the caller's guarantee.
        let queue = unsafe { ShmQueue::new(base, layout, q) };
        for i in 0..layout.capacity {
            if let Some(stamp) = queue.stamp(i) {
                stamp.store(initial_stamp(i), Ordering::Relaxed);
            }
        }
    }
}

/// Settles `intent` (tagged with its queue, see `signal::state::QueueLane`) of a dead
/// peer of the signal target `seg`.
pub(crate) fn resolve(seg: &Segment, intent: usize, live_claim: impl FnOnce() -> bool) -> Reclaim {
    let (q, intent) = untag(intent);
    if q >= QUEUED {
        // Only hostile memory: nothing we could settle.
        return Reclaim::Settled;
    }
    // SAFETY: `seg` is a live mapping of its validated signal layout, borrowed for the
    // whole use of the queue.
    let queue = unsafe { ShmQueue::new(seg.base(), seg.layout(), q) };
    protocol::resolve(&Ring::new(queue, seg.layout().capacity), intent, live_claim)
}

/// How often (ms, coarse clock) such raises look at the mapping's maintenance.
const LOOK_MS: u64 = 10;

/// The coarse monotonic clock in ms (a few ns through the vDSO; ticks of a few ms).
fn coarse_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (t.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_nsec as u64 / 1_000_000)
}

/// A target's words in a mapped segment.
pub(crate) struct ShmSignal {
    seg: Arc<Segment>,
    words: NonNull<u8>,
    queues: Box<[Ring<ShmQueue>]>,
    /// Process-local: when (coarse ms) such a raise last looked at maintenance.
    last_look: AtomicU64,
}

// SAFETY: the pointers are into the mapping `seg` keeps alive, accessed only atomically.
unsafe impl Send for ShmSignal {}
// SAFETY: as above.
unsafe impl Sync for ShmSignal {}

impl ShmSignal {
    /// The storage of `seg`, a validated signal target.
    fn new(seg: Arc<Segment>) -> ShmSignal {
        let layout = *seg.layout();
        let area = Area::of(&layout);
        let queues = (0..QUEUED)
            // SAFETY: `seg`'s mapping is its validated signal layout, kept alive by the
            // `Arc` stored next to the queues.
            .map(|q| {
                Ring::new(
                    unsafe { ShmQueue::new(seg.base(), &layout, q) },
                    layout.capacity,
                )
            })
            .collect();
        // SAFETY: the words block lies inside the mapping (`area.words + WORDS_BYTES ==
        // total_size`), 128-aligned.
        let words = unsafe { seg.base().add(area.words) };
        ShmSignal {
            seg,
            words,
            queues,
            last_look: AtomicU64::new(0),
        }
    }

    /// The `u64` at `offset` of the words block (`offset + 8 <= WORDS_BYTES`, 8-aligned).
    #[inline]
    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= WORDS_BYTES && offset.is_multiple_of(8));
        // SAFETY: in bounds and aligned (checked above), in a mapping `self.seg` keeps
        // alive, only ever accessed atomically.
        unsafe { self.words.add(offset).cast::<AtomicU64>().as_ref() }
    }

    /// The owner word: `generation << 32 | slot + 1` of the owner's peer slot, 0 if none.
    fn owner(&self) -> &AtomicU64 {
        self.word(OWNER)
    }

    fn seg(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// Whether the owner word names a LIVE peer slot of its generation with the owner's
    /// role (no probe: see [`ShmSignal::owner_gone`]).
    fn owner_live(&self) -> Option<usize> {
        let word = self.owner().load(Ordering::Acquire);
        let slot = (word & 0xffff_ffff) as usize;
        if slot == 0 || slot > MAX_PEERS {
            return None;
        }
        let (generation, state, roles) =
            table::unpack(self.seg.peer_state(slot - 1).load(Ordering::Acquire));
        (generation == (word >> 32) as u32 && state == LIVE && roles & Side::Recv.role() != 0)
            .then_some(slot - 1)
    }

    /// Whether the owner is gone, after the mapping's maintenance if it is due (so a
    /// dead owner is found within about 100 ms; see the module docs).
    fn owner_gone(&self) -> bool {
        self.seg.maintain_if_due();
        self.owner_live().is_none()
    }

    /// [`ShmSignal::owner_gone`] for the raise path: the owner word and its slot's state
    /// are read every time (two loads of lines that change only when peers come and
    /// go), then the coarse clock (a few ns, no system call), and the mapping's
    /// maintenance (which reads the precise clock, and probes locks at most every
    /// 100 ms) only when that clock says [`LOOK_MS`] passed since this mapping's last
    /// look. A raise that finds its number pending thus costs a few loads and a vDSO
    /// clock read more than one that does not, and a dead owner is still found within
    /// about 100 ms of the first such raise after its death, at any raise rate.
    #[inline]
    fn owner_gone_if_due(&self) -> bool {
        if self.owner_live().is_none() {
            return true;
        }
        let now = coarse_ms();
        if now
            < self
                .last_look
                .load(Ordering::Relaxed)
                .saturating_add(LOOK_MS)
        {
            return false;
        }
        self.owner_gone_slow(now)
    }

    #[cold]
    #[inline(never)]
    fn owner_gone_slow(&self, now: u64) -> bool {
        self.last_look.store(now, Ordering::Relaxed);
        self.owner_gone()
    }
}

// SAFETY: every word is at a fixed offset of the words block chosen by number (standard
// numbers `1..FIRST_QUEUED`, clamped into their arrays), distinct for distinct numbers;
// queues are fixed rings of the mapping.
unsafe impl SignalStorage for ShmSignal {
    type Queue = ShmQueue;

    #[inline]
    fn words(&self) -> &Words {
        // SAFETY: `Words` is `repr(C)` of six `AtomicU64`s, which fit the first 128 bytes
        // of the words block (checked above), 8-aligned, in the live mapping.
        unsafe { self.words.cast::<Words>().as_ref() }
    }

    #[inline]
    fn count(&self, n: u8) -> &AtomicU64 {
        self.word(COUNTS + (usize::from(n).clamp(1, STANDARD) - 1) * 8)
    }

    #[inline]
    fn origin(&self, n: u8) -> &AtomicU64 {
        self.word(ORIGINS + (usize::from(n).clamp(1, STANDARD) - 1) * 8)
    }

    #[inline]
    fn ignored(&self, n: u8) -> &AtomicU64 {
        self.word(IGNORED + (usize::from(n).clamp(1, 64) - 1) * 8)
    }

    #[inline]
    fn queue(&self, n: u8) -> &Ring<ShmQueue> {
        let q = usize::from(n.saturating_sub(FIRST_QUEUED)).min(QUEUED - 1);
        &self.queues[q]
    }
}

/// An origin word: the raising process's pid and its raiser's id.
fn origin(pid: u32, raiser_id: u64) -> u64 {
    (u64::from(pid) << 32) | (raiser_id & 0xffff_ffff)
}

/// The owner's backend: the segment's words and its receive-side wait words.
pub(crate) struct ShmBackend {
    peer: Peer,
    state: State<ShmSignal>,
}

impl ShmBackend {
    fn seg(&self) -> &Arc<Segment> {
        self.state.storage().seg()
    }
}

impl Backend for ShmBackend {
    type Storage = ShmSignal;
    type AsyncWait = AsyncWait;

    #[inline]
    fn state(&self) -> &State<ShmSignal> {
        &self.state
    }

    #[inline]
    fn with_lane<R>(&self, f: impl FnOnce(QueueLane<'_>) -> R) -> R {
        let lane = self.peer.lane();
        f(QueueLane::new(lane.word()))
    }

    #[inline]
    fn notify(&self) {
        self.seg().signal(Side::Recv).notify_waiting();
    }

    fn info(&self, n: u8, taken: Taken) -> SigInfo {
        SigInfo::from_parts(
            Signal::new(n).expect("numbers come from bits of a 64-bit word"),
            taken,
            (taken.origin >> 32) as u32,
            taken.origin & 0xffff_ffff,
        )
    }

    fn origin_of(&self, info: &SigInfo) -> u64 {
        origin(info.pid(), info.raiser_id())
    }

    fn block(
        &self,
        deadline: Option<Instant>,
        attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Option<SigInfo> {
        let seg = self.seg();
        let pending = &self.state.words().pending;
        wait::block(
            seg.signal(Side::Recv),
            false,
            deadline,
            || {
                seg.maintain_if_due();
            },
            || pending.load(Ordering::Relaxed) != 0,
            attempt,
        )
    }

    fn poll(
        &self,
        wait: &mut AsyncWait,
        cx: &mut Context<'_>,
        attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Poll<SigInfo> {
        let pending = &self.state.words().pending;
        wait.poll(
            self.seg(),
            Side::Recv,
            cx,
            || pending.load(Ordering::Relaxed) != 0,
            attempt,
        )
    }

    fn cancel(&self, wait: &mut AsyncWait) {
        wait.cancel(self.seg());
    }
}

/// What an opener of a signal target expects.
fn expect() -> Expect {
    Expect {
        kind: Kind::Signal,
        fingerprint: Fingerprint::signal_entry(),
        max_message: None,
        capacity: None,
        max_bytes: None,
        any_type: false,
        spsc: None,
        light: None,
    }
}

/// Opens or creates the segment `name` as `options` say (capacity: the queue depth).
fn open_segment(name: &str, options: &Options) -> io::Result<(Segment, bool)> {
    name::validate(name)?;
    options.check_modes(Kind::Signal)?;
    let depth = options.slots()?.unwrap_or(QUEUE_DEPTH);
    let mut expect = expect();
    expect.capacity = options.slots()?;
    open_or_create(name, options, &expect, || {
        let layout = Layout::new(Kind::Signal, depth, Fingerprint::signal_entry())?;
        Segment::create(name, layout, options.mode)
    })
}

/// The owner of a signal set in a named shared-memory segment: the cross-process
/// [`crate::signal::Target`] (see the [module docs](self) for ownership and takeover).
/// `Send + Sync`, so several threads of the owner's process may wait on it; not `Clone`.
///
/// ```
/// use conduit::shm::signal::{Raiser, Target};
/// use conduit::signal::Signal;
///
/// let name = format!("doc-shm-target-{}", std::process::id());
/// let target = Target::create(&name)?;
/// let raiser = Raiser::open(&name)?;
/// let rt = Signal::new(40).unwrap();
/// raiser.raise_with(rt, 7).unwrap();
/// raiser.raise_with(rt, 8).unwrap();
/// assert_eq!(target.wait().payload(), Some(7));
/// assert_eq!(target.wait().payload(), Some(8));
/// conduit::shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Target {
    owner: Owner<ShmBackend>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.owner.fmt(f)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let storage = self.storage();
        // Closed first (raises fail from now on), then no owner; the peer slot is
        // released when the backend drops, after this.
        storage.words().closed.store(1, Ordering::SeqCst);
        storage.owner().store(0, Ordering::SeqCst);
    }
}

/// Opening attempts while other processes race to take over the same target.
const TAKEOVER_RETRIES: usize = 16;

impl Target {
    /// Creates the signal target `name` and owns it: [`io::ErrorKind::AlreadyExists`]
    /// if the name exists, [`io::ErrorKind::InvalidInput`] for a bad name. Queued
    /// numbers hold [`QUEUE_DEPTH`] entries each.
    ///
    /// ```
    /// use conduit::shm::signal::Target;
    /// let name = format!("doc-shm-target-create-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(Target::create(&name).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    /// assert_eq!(Target::create("a/b").unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// # drop(target);
    /// conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str) -> io::Result<Target> {
        Target::with(name, &Options::new().create_new(true))
    }

    /// Opens the existing signal target `name` and owns it, taking over from an owner
    /// that died (pending signals kept). [`io::ErrorKind::NotFound`] if missing,
    /// [`io::ErrorKind::InvalidData`] if the name holds a channel (or another layout),
    /// [`io::ErrorKind::ResourceBusy`] if its owner is alive.
    ///
    /// ```
    /// use conduit::shm::signal::{Raiser, Target};
    /// use conduit::signal::Signal;
    /// let name = format!("doc-shm-target-open-{}", std::process::id());
    /// let first = Target::create(&name)?;
    /// assert_eq!(Target::open(&name).unwrap_err().kind(), std::io::ErrorKind::ResourceBusy);
    /// Raiser::open(&name)?.raise(Signal::new(1).unwrap()).unwrap();
    /// drop(first);
    /// let second = Target::open(&name)?; // pending signals kept
    /// assert_eq!(second.try_wait().unwrap().signal().number(), 1);
    /// conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(name: &str) -> io::Result<Target> {
        Target::with(name, &Options::new())
    }

    /// Opens or creates the signal target `name` as `options` say;
    /// [`Options::capacity`] is the depth of each queued number's queue (rounded up to a
    /// power of two, at most [`MAX_QUEUE_DEPTH`](crate::signal::MAX_QUEUE_DEPTH)), and
    /// [`Options::max_message`] does not apply.
    ///
    /// ```
    /// use conduit::shm::{Options, signal::{Raiser, Target}};
    /// use conduit::signal::{RaiseError, Signal};
    /// let name = format!("doc-shm-target-with-{}", std::process::id());
    /// let opts = Options::new().create(true).capacity(2).unlink_on_drop(true);
    /// let target = Target::with(&name, &opts)?;
    /// let raiser = Raiser::open(&name)?;
    /// let rt = Signal::new(33).unwrap();
    /// raiser.raise(rt).unwrap();
    /// raiser.raise(rt).unwrap();
    /// assert_eq!(raiser.raise(rt), Err(RaiseError::Full));
    /// # drop(target);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, options: &Options) -> io::Result<Target> {
        let (seg, created) = open_segment(name, options)?;
        let peer = attach(seg, created, options, Side::Recv)?;
        let seg = Arc::clone(peer.segment());
        let storage = ShmSignal::new(Arc::clone(&seg));
        take_ownership(&storage, &peer)?;
        Ok(Target {
            owner: Owner::new(ShmBackend {
                peer,
                state: State::new(storage),
            }),
        })
    }

    fn storage(&self) -> &ShmSignal {
        self.owner.backend().state.storage()
    }

    /// A new raiser of this target in this process (a handle family of its own, with
    /// its own id; [`Raiser::open`] with this target's name).
    ///
    /// ```
    /// use conduit::shm::signal::Target;
    /// let name = format!("doc-shm-target-raiser-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_ne!(target.raiser()?.id(), target.raiser()?.id());
    /// conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn raiser(&self) -> io::Result<Raiser> {
        Raiser::open(self.name())
    }

    /// The target's name.
    ///
    /// ```
    /// use conduit::shm::signal::Target;
    /// let name = format!("doc-shm-target-name-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(target.name(), name);
    /// conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.storage().seg().name()
    }

    /// How many entries each queued number holds.
    ///
    /// ```
    /// use conduit::shm::signal::Target;
    /// let name = format!("doc-shm-target-depth-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(target.depth(), conduit::signal::QUEUE_DEPTH);
    /// conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn depth(&self) -> usize {
        self.storage().seg().layout().capacity
    }

    /// Waits for the next delivery of any number, as [`crate::signal::Target::wait`].
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::Signal;
    /// # let name = format!("doc-shm-wait-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// target.raiser()?.raise(Signal::new(2).unwrap()).unwrap();
    /// assert_eq!(target.wait().signal().number(), 2);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&self) -> SigInfo {
        self.owner.wait_until(Want::ALL, None).expect("no deadline")
    }

    /// Takes the next delivery if one is pending, as [`crate::signal::Target::try_wait`].
    ///
    /// ```
    /// # use conduit::shm::signal::Target;
    /// # let name = format!("doc-shm-try-wait-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(target.try_wait(), None);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_wait(&self) -> Option<SigInfo> {
        self.owner.attempt(Want::ALL)
    }

    /// [`Target::wait`], giving up after `timeout`.
    ///
    /// ```
    /// # use std::time::Duration; use conduit::shm::signal::Target;
    /// # let name = format!("doc-shm-wait-timeout-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(target.wait_timeout(Duration::from_millis(1)), None);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<SigInfo> {
        self.owner
            .wait_until(Want::ALL, Instant::now().checked_add(timeout))
    }

    /// [`Target::wait`] as a future (cancel-safe: dropped before completing, it took
    /// nothing, and a wake-up it received passes on).
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::Signal;
    /// # let name = format!("doc-shm-wait-async-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// target.raiser()?.raise(Signal::new(3).unwrap()).unwrap();
    /// let info = futures::executor::block_on(target.wait_async());
    /// assert_eq!(info.signal().number(), 3);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_async(&self) -> WaitFut<'_> {
        WaitFut::new(self, Want::ALL)
    }

    /// Waits for the next delivery of a number in `set`; others stay pending.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{SigSet, Signal};
    /// # let name = format!("doc-shm-wait-for-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let raiser = target.raiser()?;
    /// let (one, two) = (Signal::new(1).unwrap(), Signal::new(2).unwrap());
    /// raiser.raise(one).unwrap();
    /// raiser.raise(two).unwrap();
    /// assert_eq!(target.wait_for(&[two].into_iter().collect()).signal(), two);
    /// assert_eq!(target.wait().signal(), one);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for(&self, set: &SigSet) -> SigInfo {
        self.owner
            .wait_until(Want::set(set), None)
            .expect("no deadline")
    }

    /// [`Target::try_wait`] for the numbers in `set`.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{SigSet, Signal};
    /// # let name = format!("doc-shm-try-wait-for-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// target.raiser()?.raise(Signal::new(1).unwrap()).unwrap();
    /// assert_eq!(target.try_wait_for(&[Signal::new(2).unwrap()].into_iter().collect()), None);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_wait_for(&self, set: &SigSet) -> Option<SigInfo> {
        self.owner.attempt(Want::set(set))
    }

    /// [`Target::wait_for`], giving up after `timeout`.
    ///
    /// ```
    /// # use std::time::Duration; use conduit::shm::signal::Target; use conduit::signal::SigSet;
    /// # let name = format!("doc-shm-wait-for-timeout-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(target.wait_for_timeout(&SigSet::all(), Duration::from_millis(1)), None);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for_timeout(&self, set: &SigSet, timeout: Duration) -> Option<SigInfo> {
        self.owner
            .wait_until(Want::set(set), Instant::now().checked_add(timeout))
    }

    /// [`Target::wait_for`] as a future (cancel-safe, as [`Target::wait_async`]).
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{SigSet, Signal};
    /// # let name = format!("doc-shm-wait-for-async-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let sig = Signal::new(33).unwrap();
    /// target.raiser()?.raise_with(sig, 5).unwrap();
    /// let set: SigSet = [sig].into_iter().collect();
    /// assert_eq!(futures::executor::block_on(target.wait_for_async(&set)).payload(), Some(5));
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_for_async(&self, set: &SigSet) -> WaitFut<'_> {
        WaitFut::new(self, Want::set(set))
    }

    /// Waits as if the numbers in `set` were not masked, like `sigsuspend` (see
    /// [`crate::signal::Target::unmask_and_wait`]).
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{SigSet, Signal};
    /// # let name = format!("doc-shm-unmask-and-wait-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let sig = Signal::new(17).unwrap();
    /// let set: SigSet = [sig].into_iter().collect();
    /// target.mask(&set);
    /// target.raiser()?.raise(sig).unwrap();
    /// assert_eq!(target.try_wait(), None);
    /// assert_eq!(target.unmask_and_wait(&set).signal(), sig);
    /// assert_eq!(target.masked(), set);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unmask_and_wait(&self, set: &SigSet) -> SigInfo {
        self.owner
            .wait_until(Want::unmasking(set), None)
            .expect("no deadline")
    }

    /// A stream of deliveries of every number (it never ends).
    ///
    /// ```
    /// use futures::StreamExt;
    /// # use conduit::shm::signal::Target; use conduit::signal::Signal;
    /// # let name = format!("doc-shm-stream-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// target.raiser()?.raise(Signal::new(8).unwrap()).unwrap();
    /// let info = futures::executor::block_on(target.stream().next()).unwrap();
    /// assert_eq!(info.signal().number(), 8);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream(&self) -> SigStream<'_> {
        SigStream {
            target: self,
            wait: AsyncWait::new(),
        }
    }

    /// Sets what the target does with `sig`, as
    /// [`crate::signal::Target::set_disposition`]. `Ignore` is honoured by raisers in
    /// every process; a handler runs in this process only.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{Disposition, Signal};
    /// # let name = format!("doc-shm-disposition-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let sig = Signal::new(4).unwrap();
    /// target.set_disposition(sig, Disposition::Ignore);
    /// target.raiser()?.raise(sig).unwrap();
    /// assert_eq!((target.try_wait(), target.ignored(sig)), (None, 1));
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_disposition(&self, sig: Signal, disposition: Disposition) {
        self.owner.set_disposition(sig, disposition);
    }

    /// How many raises of `sig` were discarded because it was ignored.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::Signal;
    /// # let name = format!("doc-shm-ignored-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// assert_eq!(target.ignored(Signal::new(1).unwrap()), 0);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ignored(&self, sig: Signal) -> u64 {
        self.owner.ignored(sig)
    }

    /// Masks the numbers in `set` (held pending until unmasked).
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{SigSet, Signal};
    /// # let name = format!("doc-shm-mask-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let sig = Signal::new(1).unwrap();
    /// target.mask(&[sig].into_iter().collect());
    /// target.raiser()?.raise(sig).unwrap();
    /// assert_eq!(target.try_wait(), None);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn mask(&self, set: &SigSet) {
        self.owner.mask(set);
    }

    /// Unmasks the numbers in `set`; what is pending of them becomes deliverable.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{SigSet, Signal};
    /// # let name = format!("doc-shm-unmask-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let sig = Signal::new(1).unwrap();
    /// let set: SigSet = [sig].into_iter().collect();
    /// target.mask(&set);
    /// target.raiser()?.raise(sig).unwrap();
    /// target.unmask(&set);
    /// assert_eq!(target.try_wait().unwrap().signal(), sig);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unmask(&self, set: &SigSet) {
        self.owner.unmask(set);
    }

    /// The masked numbers.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::SigSet;
    /// # let name = format!("doc-shm-masked-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// target.mask(&SigSet::all());
    /// assert_eq!(target.masked(), SigSet::all());
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn masked(&self) -> SigSet {
        self.owner.masked()
    }

    /// Runs the handlers of the caught signals that are pending and deliverable, as
    /// [`crate::signal::Target::dispatch`]; returns how many ran.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{Disposition, Signal};
    /// # let name = format!("doc-shm-dispatch-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let sig = Signal::new(2).unwrap();
    /// target.set_disposition(sig, Disposition::catch(|_| {}));
    /// target.raiser()?.raise(sig).unwrap();
    /// assert_eq!(target.dispatch(), 1);
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dispatch(&self) -> usize {
        self.owner.dispatch()
    }
}

/// Makes the peer `peer` (just attached to `storage`'s segment) the target's owner, or
/// fails if a live peer owns it (see the module docs, "Ownership").
fn take_ownership(storage: &ShmSignal, peer: &Peer) -> io::Result<()> {
    let seg = storage.seg();
    let index = peer.index();
    let (generation, ..) = table::unpack(seg.peer_state(index).load(Ordering::Acquire));
    let mine = (u64::from(generation) << 32) | (index as u64 + 1);
    for _ in 0..TAKEOVER_RETRIES {
        let current = storage.owner().load(Ordering::Acquire);
        if let Some(slot) = storage.owner_live() {
            // Alive as far as the table says: prove it (maintenance reaps a dead one).
            seg.maintain();
            if storage.owner_live() == Some(slot) {
                let pid = seg.peer_entry(slot).pid.load(Ordering::Relaxed);
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "signal target {:?} has a live owner (pid {pid}); a target has one \
                         owner at a time",
                        seg.name()
                    ),
                ));
            }
        }
        if storage
            .owner()
            .compare_exchange(current, mine, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            let w = storage.words();
            // Exec-like: caught numbers back to deliver, nothing held back by a handler
            // of the dead owner; the mask and ignored numbers stay.
            w.catch.store(0, Ordering::SeqCst);
            w.running.store(0, Ordering::SeqCst);
            let waits = seg.signal(Side::Recv);
            waits.waiters.store(0, Ordering::SeqCst);
            waits.async_waiters.store(0, Ordering::SeqCst);
            w.closed.store(0, Ordering::SeqCst);
            after_seqcst_rmw();
            return Ok(());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "signal target {:?}: other processes keep taking it over",
            seg.name()
        ),
    ))
}

/// Raises signals on a shared-memory [`Target`], from any process. `Clone + Send +
/// Sync`; clones share one handle family (peer slot) and one [id](Raiser::id).
///
/// ```
/// use conduit::shm::signal::{Raiser, Target};
/// use conduit::signal::Signal;
/// let name = format!("doc-shm-raiser-{}", std::process::id());
/// let target = Target::create(&name)?;
/// let raiser = Raiser::open(&name)?;
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         let r = raiser.clone();
///         s.spawn(move || r.raise(Signal::new(1).unwrap()).unwrap());
///     }
/// });
/// assert_eq!(target.wait().count(), 4);
/// conduit::shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Raiser {
    inner: Arc<RaiserInner>,
}

struct RaiserInner {
    peer: Peer,
    state: State<ShmSignal>,
    /// The origin word of this family's raises.
    origin: u64,
    id: u64,
}

impl fmt::Debug for Raiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("shm::signal::Raiser")
            .field("name", &self.inner.state.storage().seg().name())
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Raiser {
    /// Opens the signal target `name` for raising: [`io::ErrorKind::NotFound`] if
    /// missing, [`io::ErrorKind::InvalidData`] if it is not a signal target,
    /// [`io::ErrorKind::InvalidInput`] for a bad name. A target whose owner is gone can
    /// be opened (a new owner may come); raises then fail with
    /// [`RaiseError::Disconnected`].
    ///
    /// ```
    /// use conduit::shm::signal::Raiser;
    /// let err = Raiser::open("doc-shm-raiser-missing").unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> io::Result<Raiser> {
        let opts = Options::new();
        let (seg, created) = open_segment(name, &opts)?;
        let peer = attach(seg, created, &opts, Side::Send)?;
        let storage = ShmSignal::new(Arc::clone(peer.segment()));
        // Ids are 32 bits, never 0 (see the module docs).
        let next = storage.word(NEXT_RAISER);
        let id = loop {
            let id = next.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & 0xffff_ffff;
            if id != 0 {
                break id;
            }
        };
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        Ok(Raiser {
            inner: Arc::new(RaiserInner {
                peer,
                state: State::new(storage),
                origin: origin(pid, id),
                id,
            }),
        })
    }

    /// Raises `sig` (a queued signal with payload 0). Never blocks; no system call
    /// when the owner does not sleep.
    ///
    /// # Errors
    /// [`RaiseError::Disconnected`] once the owner dropped the target or is found dead
    /// (see the module docs for how fast); [`RaiseError::Full`] for a queued signal
    /// whose queue is at its depth.
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::{RaiseError, Signal};
    /// # let name = format!("doc-shm-raise-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let raiser = target.raiser()?;
    /// raiser.raise(Signal::new(1).unwrap()).unwrap();
    /// drop(target);
    /// assert_eq!(raiser.raise(Signal::new(1).unwrap()), Err(RaiseError::Disconnected));
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn raise(&self, sig: Signal) -> Result<(), RaiseError> {
        self.raise_times(sig, 0, 1)
    }

    /// Raises `sig` with `payload` (delivered for a queued signal, dropped for a
    /// standard one).
    ///
    /// # Errors
    /// As [`Raiser::raise`].
    ///
    /// ```
    /// # use conduit::shm::signal::Target; use conduit::signal::Signal;
    /// # let name = format!("doc-shm-raise-with-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// target.raiser()?.raise_with(Signal::new(50).unwrap(), 9).unwrap();
    /// assert_eq!(target.wait().payload(), Some(9));
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn raise_with(&self, sig: Signal, payload: u64) -> Result<(), RaiseError> {
        self.raise_times(sig, payload, 1)
    }

    /// `times` raises at once (queued: one by one, stopping at the first failure).
    pub(crate) fn raise_times(
        &self,
        sig: Signal,
        payload: u64,
        times: u64,
    ) -> Result<(), RaiseError> {
        let n = sig.number();
        let (each, rounds) = if sig.is_queued() {
            (1, times)
        } else {
            (times, u64::from(times != 0))
        };
        for _ in 0..rounds {
            self.raise_once(n, payload, each)?;
        }
        Ok(())
    }

    fn raise_once(&self, n: u8, payload: u64, times: u64) -> Result<(), RaiseError> {
        let inner = &*self.inner;
        let storage = inner.state.storage();
        // Still pending from an earlier raise: the owner may be dead (module docs).
        if inner.state.words().pending.load(Ordering::Relaxed) & bit(n) != 0
            && storage.owner_gone_if_due()
        {
            return Err(RaiseError::Disconnected);
        }
        // Only queued numbers claim slots (and need an intent lane).
        let raised = if n >= FIRST_QUEUED {
            let lane = inner.peer.lane();
            inner
                .state
                .raise(n, payload, inner.origin, times, QueueLane::new(lane.word()))
        } else {
            inner
                .state
                .raise(n, payload, inner.origin, times, QueueLane::NONE)
        };
        match raised {
            Ok(_) => {
                storage.seg().signal(Side::Recv).notify_waiting();
                Ok(())
            }
            Err(RaiseFail::Full) if storage.owner_gone() => Err(RaiseError::Disconnected),
            Err(f) => Err(f.into()),
        }
    }

    /// This raiser's id, reported by [`SigInfo::raiser_id`]: distinct for every
    /// [`Raiser::open`] of a target, shared by clones.
    ///
    /// ```
    /// # use conduit::shm::signal::{Raiser, Target};
    /// # let name = format!("doc-shm-raiser-id-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let (a, b) = (Raiser::open(&name)?, Raiser::open(&name)?);
    /// assert_ne!(a.id(), b.id());
    /// assert_eq!(a.clone().id(), a.id());
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether raises would fail with [`RaiseError::Disconnected`]: the owner dropped
    /// the target, or is dead (probed now, at most every 100 ms per mapping).
    ///
    /// ```
    /// # use conduit::shm::signal::Target;
    /// # let name = format!("doc-shm-raiser-disc-{}", std::process::id());
    /// let target = Target::create(&name)?;
    /// let raiser = target.raiser()?;
    /// assert!(!raiser.is_disconnected());
    /// drop(target);
    /// assert!(raiser.is_disconnected());
    /// # conduit::shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_disconnected(&self) -> bool {
        let storage = self.inner.state.storage();
        storage.words().closed.load(Ordering::Acquire) != 0 || storage.owner_gone()
    }
}

/// The future of [`Target::wait_async`] and [`Target::wait_for_async`].
///
/// ```
/// # use conduit::shm::signal::Target; use conduit::signal::Signal;
/// # let name = format!("doc-shm-waitfut-{}", std::process::id());
/// let target = Target::create(&name)?;
/// let fut = target.wait_async();
/// target.raiser()?.raise(Signal::new(3).unwrap()).unwrap();
/// assert_eq!(futures::executor::block_on(fut).signal().number(), 3);
/// # conduit::shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct WaitFut<'a> {
    target: &'a Target,
    want: Want,
    wait: AsyncWait,
}

impl<'a> WaitFut<'a> {
    fn new(target: &'a Target, want: Want) -> Self {
        WaitFut {
            target,
            want,
            wait: AsyncWait::new(),
        }
    }
}

impl Future for WaitFut<'_> {
    type Output = SigInfo;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SigInfo> {
        let this = self.get_mut();
        this.target.owner.poll_wait(this.want, &mut this.wait, cx)
    }
}

impl Drop for WaitFut<'_> {
    fn drop(&mut self) {
        self.target.owner.cancel(&mut self.wait);
    }
}

/// The stream of [`Target::stream`]: every delivery, forever.
///
/// ```
/// use futures::StreamExt;
/// # use conduit::shm::signal::Target; use conduit::signal::Signal;
/// # let name = format!("doc-shm-sigstream-{}", std::process::id());
/// let target = Target::create(&name)?;
/// target.raiser()?.raise(Signal::new(6).unwrap()).unwrap();
/// let mut stream = target.stream();
/// assert_eq!(futures::executor::block_on(stream.next()).unwrap().signal().number(), 6);
/// # conduit::shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct SigStream<'a> {
    target: &'a Target,
    wait: AsyncWait,
}

impl futures_core::Stream for SigStream<'_> {
    type Item = SigInfo;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SigInfo>> {
        let this = self.get_mut();
        this.target
            .owner
            .poll_wait(Want::ALL, &mut this.wait, cx)
            .map(Some)
    }
}

impl Drop for SigStream<'_> {
    fn drop(&mut self) {
        self.target.owner.cancel(&mut self.wait);
    }
}
