//! The shared ring protocol ([`super::protocol`]) over heap storage with
//! `SHARED = true`, for loom models of claim / commit / reclaim; the peer table's state
//! machine ([`super::table`]) over heap storage with an atomic stand-in for each slot's
//! liveness lock; the blocking waits ([`super::wait`]) over the production wait words
//! ([`SideSignal`], with the kernel's futex modelled); and the async hub
//! ([`super::hub`]) with the kernel's multi-word wait modelled. Not part of the API:
//! exposed as `conduit::__loom_shm` under `--cfg loom` only.
#![allow(missing_docs, missing_debug_implementations)]

use std::time::{Duration, Instant};

pub use super::loom_signal::ShmSignalTarget;

use super::futex::SideSignal;
use super::futex::model::Sleepers;
use super::hub;
use super::mailbox_words::{self, LockWords};
use super::protocol::{self, Kind};
use super::spsc;
use super::table::{self, Table};
use super::wait;
use crate::chan::ring::{self, RingStorage};
use crate::error::{RecvTimeoutError, TryRecvError};
use crate::sync::{Arc, AtomicU32, AtomicU64, AtomicUsize, Ordering, UnsafeCell};

pub(crate) struct Heap {
    head: AtomicUsize,
    tail: AtomicUsize,
    stamps: Box<[AtomicUsize]>,
    payloads: Box<[AtomicUsize]>,
}

// SAFETY: `stamp(i)` is element `i` of a boxed slice that lives as long as the storage.
unsafe impl RingStorage for Heap {
    const SHARED: bool = true;

    fn head(&self) -> &AtomicUsize {
        &self.head
    }

    fn tail(&self) -> &AtomicUsize {
        &self.tail
    }

    fn stamp(&self, index: usize) -> Option<&AtomicUsize> {
        self.stamps.get(index)
    }
}

/// Why an operation could not proceed (mirror of the ring's `Stall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    Blocked,
    Disconnected,
    Busy,
    Corrupt,
}

/// The outcome of settling a dead peer's intent (mirror of the ring's `Reclaim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    Unclaimed,
    Settled,
    Pending,
    Reclaimed,
}

fn stall(s: ring::Stall) -> Stall {
    match s {
        ring::Stall::Blocked => Stall::Blocked,
        ring::Stall::Disconnected => Stall::Disconnected,
        ring::Stall::Busy => Stall::Busy,
        ring::Stall::Corrupt => Stall::Corrupt,
    }
}

/// One intent lane (a peer's, or one thread's of a peer).
pub struct Lane(AtomicUsize);

impl Default for Lane {
    fn default() -> Self {
        Self::new()
    }
}

impl Lane {
    pub fn new() -> Self {
        Lane(AtomicUsize::new(protocol::NO_INTENT))
    }

    /// Records a send intent for `pos` without claiming it (a peer that died just
    /// before its claim CAS).
    pub fn record_send_intent(&self, pos: usize) {
        self.0
            .store(protocol::encode(Kind::Send, pos), Ordering::Relaxed);
    }
}

/// Both sides' wait words, as in a segment's header.
pub struct Sides {
    send: SideSignal,
    recv: SideSignal,
}

impl Default for Sides {
    fn default() -> Self {
        Self::new()
    }
}

impl Sides {
    pub fn new() -> Self {
        Sides {
            send: SideSignal::new(),
            recv: SideSignal::new(),
        }
    }

    /// Blocking receivers registered (and not yet unregistered).
    pub fn recv_waiters(&self) -> u32 {
        self.recv.waiters.load(Ordering::SeqCst)
    }
}

/// One side's presence in the peer table, reduced to one peer's state word: `Peer::drop`
/// stores FREE with SeqCst and then wakes both sides; `Segment::side_gone` loads it
/// with Acquire (its `ever` flag is taken as set).
pub struct Presence(AtomicUsize);

const LIVE: usize = 1;
const FREE: usize = 0;

impl Default for Presence {
    fn default() -> Self {
        Self::new()
    }
}

impl Presence {
    /// An attached peer.
    pub fn new() -> Self {
        Presence(AtomicUsize::new(LIVE))
    }

    /// The peer detaches (`Peer::drop`).
    pub fn detach(&self, sides: &Sides) {
        self.0.store(FREE, Ordering::SeqCst);
        sides.send.notify_all();
        sides.recv.notify_all();
    }

    /// Whether the side is gone (`Segment::side_gone`).
    pub fn gone(&self) -> bool {
        self.0.load(Ordering::Acquire) != LIVE
    }
}

/// Any deadline: under loom only whether a wait has one matters (the model decides when
/// it passes).
const TIMEOUT: Duration = Duration::from_secs(1);

/// `Endpoint::recv_with`'s waiting loop, shared by both rings' adapters: `recv` (a
/// receive attempt, peeking or not, as `wait::try_recv` calls it) until it takes a
/// message or the senders are gone, sleeping on the receivers' words; `may_proceed` is
/// the spin's hint; `heavy` as in `wait::block`. `Err(Timeout)` once a deadline
/// (`timed`) passed.
fn recv_waiting(
    sides: &Sides,
    heavy: bool,
    senders: &Presence,
    timed: bool,
    may_proceed: impl FnMut() -> bool,
    mut recv: impl FnMut(bool) -> Result<usize, ring::Stall>,
) -> Result<usize, RecvTimeoutError> {
    let attempt = || match wait::try_recv(&mut recv, || senders.gone()) {
        Ok(msg) => Some(Ok(msg)),
        Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
        Err(TryRecvError::Empty) => None,
    };
    wait::block(
        &sides.recv,
        heavy,
        timed.then(|| Instant::now() + TIMEOUT),
        || {},
        may_proceed,
        attempt,
    )
    .unwrap_or(Err(RecvTimeoutError::Timeout))
}

/// `Endpoint::send_with`'s waiting loop for room, shared by both rings' adapters: `send`
/// until it neither finds the ring full nor its slot busy, sleeping on the senders'
/// words (receivers are taken to stay); `may_proceed` is the spin's hint, `heavy` as in
/// `wait::block`.
/// `Err(Blocked)` once a deadline (`timed`) passed.
fn send_waiting(
    sides: &Sides,
    heavy: bool,
    timed: bool,
    may_proceed: impl FnMut() -> bool,
    mut send: impl FnMut() -> Result<(), Stall>,
) -> Result<(), Stall> {
    let attempt = || match send() {
        Err(Stall::Blocked | Stall::Busy) => None,
        done => Some(done),
    };
    wait::block(
        &sides.send,
        heavy,
        timed.then(|| Instant::now() + TIMEOUT),
        || {},
        may_proceed,
        attempt,
    )
    .unwrap_or(Err(Stall::Blocked))
}

/// A shared-mode ring of `usize` payloads.
pub struct Ring(ring::Ring<Heap>);

impl Ring {
    pub fn new(cap: usize) -> Self {
        let cells = |f: fn(usize) -> usize| (0..cap).map(|i| AtomicUsize::new(f(i))).collect();
        Ring(ring::Ring::new(
            Heap {
                head: AtomicUsize::new(0),
                tail: AtomicUsize::new(0),
                stamps: cells(ring::initial_stamp),
                payloads: cells(|_| 0),
            },
            cap,
        ))
    }

    fn payload(&self, index: usize) -> &AtomicUsize {
        &self.0.storage().payloads[index]
    }

    /// The production waiters' check of whether a claim may make progress
    /// (`Ring::may_proceed`), for a sender (`sender`) or a receiver.
    pub fn may_proceed(&self, sender: bool) -> bool {
        self.0.may_proceed(sender)
    }

    /// A complete send (the production protocol).
    pub fn send(&self, lane: &Lane, value: usize) -> Result<(), Stall> {
        self.send_with(&lane.0, value)
    }

    fn send_with(&self, lane: &AtomicUsize, value: usize) -> Result<(), Stall> {
        protocol::send(&self.0, lane, |i| {
            self.payload(i).store(value, Ordering::Relaxed)
        })
        .map_err(stall)
    }

    /// A complete receive (the production protocol).
    pub fn recv(&self, lane: &Lane) -> Result<usize, Stall> {
        self.recv_with(&lane.0)
    }

    fn recv_with(&self, lane: &AtomicUsize) -> Result<usize, Stall> {
        protocol::recv(&self.0, lane, |i| {
            Some(self.payload(i).load(Ordering::Relaxed))
        })
        .map_err(stall)
    }

    /// `Endpoint::send_attempt`: a send, and a wake-up of a waiting receiver if it went
    /// through.
    pub fn send_notify(&self, lane: &Lane, value: usize, sides: &Sides) -> Result<(), Stall> {
        let r = self.send(lane, value);
        if r.is_ok() {
            sides.recv.notify_one();
        }
        r
    }

    /// `Endpoint::recv_attempt`: with `peek`, a ring whose slot holds nothing published
    /// is reported blocked from its stamp alone; a receive that went through wakes a
    /// waiting sender.
    fn recv_attempt(&self, lane: &Lane, peek: bool, sides: &Sides) -> Result<usize, ring::Stall> {
        if peek && !self.0.may_claim_recv() {
            return Err(ring::Stall::Blocked);
        }
        let r = protocol::recv(&self.0, &lane.0, |i| {
            Some(self.payload(i).load(Ordering::Relaxed))
        });
        if r.is_ok() {
            sides.send.notify_one();
        }
        r
    }

    /// `Endpoint::recv_with`'s waiting loop: the production [`wait::block`] over the
    /// production [`wait::try_recv`] (whether the senders are gone: `senders`), sleeping
    /// on the receivers' words; `timed`: with a deadline.
    pub fn recv_blocking(
        &self,
        lane: &Lane,
        sides: &Sides,
        senders: &Presence,
        timed: bool,
    ) -> Result<usize, RecvTimeoutError> {
        recv_waiting(
            sides,
            false,
            senders,
            timed,
            || self.0.may_proceed(false),
            |peek| self.recv_attempt(lane, peek, sides),
        )
    }

    /// `Endpoint::send_with`'s waiting loop for room, sleeping on the senders' words
    /// (receivers are taken to stay); `Err(Blocked)` once a deadline (`timed`) passed.
    pub fn send_blocking(
        &self,
        lane: &Lane,
        value: usize,
        sides: &Sides,
        timed: bool,
    ) -> Result<(), Stall> {
        send_waiting(
            sides,
            false,
            timed,
            || self.0.send_batch_free(),
            || self.send_notify(lane, value, sides),
        )
    }

    /// A sender that claims a slot, writes `value` and dies before committing. Returns the claimed position.
    pub fn claim_send_and_die(&self, lane: &Lane, value: usize) -> Result<usize, Stall> {
        self.claim_send_and_die_with(&lane.0, value)
    }

    fn claim_send_and_die_with(&self, lane: &AtomicUsize, value: usize) -> Result<usize, Stall> {
        let token = self
            .0
            .start_send(|pos| lane.store(protocol::encode(Kind::Send, pos), Ordering::Relaxed))
            .map_err(stall)?;
        self.payload(token.index).store(value, Ordering::Relaxed);
        Ok(token.pos)
    }

    /// A receiver that claims a message and dies before freeing its slot.
    pub fn claim_recv_and_die(&self, lane: &Lane) -> Result<usize, Stall> {
        self.claim_recv_and_die_with(&lane.0)
    }

    fn claim_recv_and_die_with(&self, lane: &AtomicUsize) -> Result<usize, Stall> {
        self.0
            .start_recv(|pos| lane.store(protocol::encode(Kind::Recv, pos), Ordering::Relaxed))
            .map(|token| token.pos)
            .map_err(stall)
    }

    /// Settles the intent of `dead`'s lane; `live` are the lanes of live peers.
    pub fn resolve(&self, dead: &Lane, live: &[&Lane]) -> Reclaim {
        let intent = dead.0.load(Ordering::Acquire);
        let r = protocol::resolve(&self.0, intent, || {
            live.iter().any(|l| l.0.load(Ordering::Relaxed) == intent)
        });
        match r {
            ring::Reclaim::Unclaimed => Reclaim::Unclaimed,
            ring::Reclaim::Settled => Reclaim::Settled,
            ring::Reclaim::Pending => Reclaim::Pending,
            ring::Reclaim::Reclaimed => Reclaim::Reclaimed,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len_untrusted()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A ring in the single-producer mode (`shm::spsc`) of `usize` payloads, each kept in a
/// plain cell rather than an atomic, so that loom reports any write of a slot that is
/// not ordered after the previous lap's read of it (and any read not ordered after its
/// write) as a race.
pub struct SpscRing {
    ring: ring::Ring<Heap>,
    cells: Box<[UnsafeCell<usize>]>,
    /// Whether the sides publish and commit with light fences (the waiters then issue
    /// heavy ones), as a channel created where `membarrier` is available does.
    light: bool,
}

// SAFETY: the cells are only accessed by the one producer (writes, between its room
// check and its publish) and the one consumer (reads, between its stamp check and its
// commit), which the protocol orders; loom checks that it does.
unsafe impl Sync for SpscRing {}

/// One handle family's process-local state in an [`SpscRing`] (`spsc::Family`).
pub struct SpscFamily(spsc::Family);

impl SpscRing {
    /// A ring with light fences (see [`SpscRing::with_fences`]).
    pub fn new(cap: usize) -> Self {
        SpscRing::with_fences(cap, true)
    }

    /// A ring whose sides publish and commit with light fences if `light`, else with
    /// SeqCst RMWs.
    pub fn with_fences(cap: usize, light: bool) -> Self {
        let cells = |f: fn(usize) -> usize| (0..cap).map(|i| AtomicUsize::new(f(i))).collect();
        SpscRing {
            ring: ring::Ring::new(
                Heap {
                    head: AtomicUsize::new(0),
                    tail: AtomicUsize::new(0),
                    stamps: cells(ring::initial_stamp),
                    payloads: cells(|_| 0),
                },
                cap,
            ),
            cells: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
            light,
        }
    }

    /// A producer attaching (`Peer::attach`): repairs `tail` first. Its threads' turns
    /// are biased (heavy fences are available in the model).
    pub fn producer(&self) -> SpscFamily {
        SpscFamily(spsc::Family::producer(&self.ring, self.light, true))
    }

    /// A consumer attaching.
    pub fn consumer(&self) -> SpscFamily {
        SpscFamily(spsc::Family::consumer(self.light, true))
    }

    fn write(&self, index: usize, value: usize) {
        // SAFETY: see `Sync`; a race is reported by loom.
        self.cells[index].with_mut(|p| unsafe { *p = value });
    }

    fn read(&self, index: usize) -> usize {
        // SAFETY: as in `write`.
        self.cells[index].with(|p| unsafe { *p })
    }

    /// `Endpoint::send_attempt` in the mode: a send, and a wake-up of a waiting
    /// receiver if it went through.
    pub fn send(&self, family: &SpscFamily, value: usize, sides: &Sides) -> Result<(), Stall> {
        let r = spsc::send(&self.ring, &family.0, |i| self.write(i, value));
        if r.is_ok() {
            sides.recv.notify_one();
        }
        r.map_err(stall)
    }

    /// `Endpoint::recv_attempt` in the mode.
    pub fn recv(&self, family: &SpscFamily, sides: &Sides) -> Result<usize, Stall> {
        self.recv_attempt(family, sides).map_err(stall)
    }

    fn recv_attempt(&self, family: &SpscFamily, sides: &Sides) -> Result<usize, ring::Stall> {
        let r = spsc::recv(&self.ring, &family.0, |i| Some(self.read(i)));
        if r.is_ok() {
            sides.send.notify_one();
        }
        r
    }

    /// `Endpoint::recv_with`'s waiting loop in the mode (see [`Ring::recv_blocking`]).
    pub fn recv_blocking(
        &self,
        family: &SpscFamily,
        sides: &Sides,
        senders: &Presence,
        timed: bool,
    ) -> Result<usize, RecvTimeoutError> {
        recv_waiting(
            sides,
            self.light,
            senders,
            timed,
            || spsc::may_recv(&self.ring),
            |_| self.recv_attempt(family, sides),
        )
    }

    /// `Endpoint::send_with`'s waiting loop in the mode (receivers are taken to stay);
    /// `Err(Blocked)` once a deadline (`timed`) passed.
    pub fn send_blocking(
        &self,
        family: &SpscFamily,
        value: usize,
        sides: &Sides,
        timed: bool,
    ) -> Result<(), Stall> {
        send_waiting(
            sides,
            self.light,
            timed,
            || spsc::may_send(&self.ring, &family.0),
            || self.send(family, value, sides),
        )
    }

    /// A producer that writes `value` into the slot at its position (past every
    /// published one), publishes it, and dies before storing `tail` (the room check is
    /// the caller's: the ring must not be full).
    pub fn publish_and_die(&self, value: usize) {
        let storage = self.ring.storage();
        let tail = spsc::published_end(&self.ring, storage.tail().load(Ordering::Acquire));
        let index = self.ring.index_of(tail).expect("a valid tail");
        self.write(index, value);
        storage.stamps[index].swap(tail + 1, Ordering::SeqCst);
    }

    /// A consumer that reads the message at `head` and dies before its commit: `None`
    /// if nothing is published there.
    pub fn read_and_die(&self) -> Option<usize> {
        let storage = self.ring.storage();
        let head = storage.head().load(Ordering::Relaxed);
        let index = self.ring.index_of(head)?;
        (storage.stamps[index].load(Ordering::Acquire) == head + 1).then(|| self.read(index))
    }

    pub fn len(&self) -> usize {
        spsc::len(&self.ring)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A peer slot's state (mirror of the table's FREE / LIVE / DEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Free,
    Live,
    Dead,
    Other(u64),
}

/// The role bit of senders in a state word.
pub const SENDER: u64 = 1;
/// The role bit of receivers in a state word.
pub const RECEIVER: u64 = 2;

/// The stand-in for a slot's lock word: held exclusively by an owner.
const EXCLUSIVE: usize = usize::MAX;

/// A peer table on the heap over a shared [`Ring`], running the production state machine
/// ([`super::table`]). Each slot's liveness lock (a byte-range lock on the segment file
/// in production) is an atomic word: 0 free, [`EXCLUSIVE`] held by an owner, `k` held
/// shared by `k` reapers, with the kernel's non-blocking semantics (a refused lock
/// changes nothing). A peer that *dies* releases its lock and nothing else, as the kernel
/// does for a killed process.
pub struct Peers {
    ring: Ring,
    states: Box<[AtomicU64]>,
    intents: Box<[Box<[AtomicUsize]>]>,
    locks: Box<[AtomicUsize]>,
}

impl Table for Peers {
    type Slots = Heap;

    fn slots(&self) -> usize {
        self.states.len()
    }

    fn state(&self, n: usize) -> &AtomicU64 {
        &self.states[n]
    }

    fn intents(&self, n: usize) -> &[AtomicUsize] {
        &self.intents[n]
    }

    fn ring(&self) -> &ring::Ring<Heap> {
        &self.ring.0
    }

    fn record_owner(&self, _n: usize) {}

    fn wake_all(&self) {}
}

impl Peers {
    /// `slots` free peer slots of `lanes` intent lanes each, over a ring of `cap` slots.
    pub fn new(slots: usize, lanes: usize, cap: usize) -> Self {
        Peers {
            ring: Ring::new(cap),
            states: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            intents: (0..slots)
                .map(|_| {
                    (0..lanes)
                        .map(|_| AtomicUsize::new(protocol::NO_INTENT))
                        .collect()
                })
                .collect(),
            locks: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    fn try_exclusive(&self, n: usize) -> bool {
        // Sync point: Acquire pairs with the Release of the previous holder's release.
        self.locks[n]
            .compare_exchange(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn try_shared(&self, n: usize) -> bool {
        let lock = &self.locks[n];
        let mut held = lock.load(Ordering::Relaxed);
        loop {
            if held == EXCLUSIVE {
                return false;
            }
            match lock.compare_exchange(held, held + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    fn release_shared(&self, n: usize) {
        self.locks[n].fetch_sub(1, Ordering::Release);
    }

    fn release_exclusive(&self, n: usize) {
        self.locks[n].store(0, Ordering::Release);
    }

    /// Attaches a peer with `roles` (production `Peer::attach`): the slot taken, whose
    /// lock it holds, or `None` if none could be.
    pub fn attach(&self, roles: u64) -> Option<usize> {
        let taken: Result<_, ()> = table::attach(
            self,
            roles,
            |n| Ok(self.try_exclusive(n)),
            |n| {
                self.release_exclusive(n);
                Ok(())
            },
        );
        taken.unwrap()
    }

    /// The owner of slot `n` detaches (production `Peer::drop`): FREE, then the lock.
    pub fn detach(&self, n: usize) {
        table::detach(self, n);
        self.release_exclusive(n);
    }

    /// The owner of slot `n` dies: the kernel releases its lock; nothing else changes.
    pub fn die(&self, n: usize) {
        self.release_exclusive(n);
    }

    /// One maintenance pass (production `Segment::maintain`); whether anything changed.
    pub fn maintain(&self) -> bool {
        table::maintain(self, |n| self.try_shared(n), |n| self.release_shared(n))
    }

    /// Slot `n`'s generation, state and roles.
    pub fn state(&self, n: usize) -> (u32, State, u64) {
        let (generation, state, roles) = table::unpack(self.states[n].load(Ordering::Acquire));
        let state = match state {
            table::FREE => State::Free,
            table::LIVE => State::Live,
            table::DEAD => State::Dead,
            other => State::Other(other),
        };
        (generation, state, roles)
    }

    /// Whether nobody holds slot `n`'s lock.
    pub fn unlocked(&self, n: usize) -> bool {
        self.locks[n].load(Ordering::Acquire) == 0
    }

    /// Intent lane `lane` of slot `n`.
    pub fn intent(&self, n: usize, lane: usize) -> usize {
        self.intents[n][lane].load(Ordering::Acquire)
    }

    /// The owner of slot `n` records a receive intent for `pos` in `lane`, as an operation
    /// does before its claim.
    pub fn record_recv_intent(&self, n: usize, lane: usize, pos: usize) -> usize {
        let word = protocol::encode(Kind::Recv, pos);
        self.intents[n][lane].store(word, Ordering::Release);
        word
    }

    /// The owner of slot `n` clears `lane` (its operation gave up or finished).
    pub fn clear_intent(&self, n: usize, lane: usize) {
        self.intents[n][lane].store(protocol::NO_INTENT, Ordering::Release);
    }

    /// The owner of slot `n` claims a send slot through `lane`, writes `value`, and does
    /// not commit (it is about to die).
    pub fn claim_send(&self, n: usize, lane: usize, value: usize) -> Result<usize, Stall> {
        self.ring
            .claim_send_and_die_with(&self.intents[n][lane], value)
    }

    /// The owner of slot `n` claims a message through `lane` and does not free its slot
    /// (it is about to die).
    pub fn claim_recv(&self, n: usize, lane: usize) -> Result<usize, Stall> {
        self.ring.claim_recv_and_die_with(&self.intents[n][lane])
    }

    /// A complete send by the owner of slot `n` through `lane`.
    pub fn send(&self, n: usize, lane: usize, value: usize) -> Result<(), Stall> {
        self.ring.send_with(&self.intents[n][lane], value)
    }

    /// A complete receive by the owner of slot `n` through `lane`.
    pub fn recv(&self, n: usize, lane: usize) -> Result<usize, Stall> {
        self.ring.recv_with(&self.intents[n][lane])
    }
}

/// A handle family's intent lanes (production `table::Lanes`, three of them).
pub struct LaneSet(table::Lanes<3>);

impl Default for LaneSet {
    fn default() -> Self {
        Self::new()
    }
}

impl LaneSet {
    pub fn new() -> Self {
        LaneSet(table::Lanes::new())
    }

    /// Takes a lane for the thread with `key` (nonzero, distinct per thread): its index,
    /// and whether it must be given back.
    pub fn take(&self, key: usize) -> (usize, bool) {
        self.0.take(key)
    }

    /// Gives back a lane taken with `true`.
    pub fn give_back(&self, index: usize) {
        self.0.give_back(index)
    }
}

/// The kernel's side of the async helper's multi-word wait (`futex_waitv` in
/// production): a sleep checks every word against its value and goes to sleep under one
/// lock, and every wake of any word takes that lock and wakes all sleepers, so a wake
/// either comes after the sleeper queued or before its check (which then sees the
/// change). There is no timeout: a wake-up the protocol loses hangs the model, and loom
/// reports the deadlock.
#[derive(Default)]
struct Kernel {
    lock: crate::sync::Mutex<()>,
    queue: loom::sync::Condvar,
}

impl Kernel {
    fn wake_all(&self) {
        let _bucket = crate::sync::lock(&self.lock);
        self.queue.notify_all();
    }
}

/// One side's async wait words (a segment side's `async_seq` and `async_waiters`), with
/// the kernel whose sleepers a wake reaches.
struct SideWords {
    async_seq: AtomicU32,
    async_waiters: AtomicU32,
    kernel: Arc<Kernel>,
}

impl hub::WaitWords for SideWords {
    fn async_seq(&self) -> &AtomicU32 {
        &self.async_seq
    }

    fn async_waiters(&self) -> &AtomicU32 {
        &self.async_waiters
    }

    fn wake_helpers(&self) {
        self.kernel.wake_all();
    }
}

/// A registration's hold on the side (an `Arc<Segment>` and a side in production).
#[derive(Clone)]
struct Target(Arc<SideWords>);

impl hub::Watched for Target {
    type Words = SideWords;

    fn words(&self) -> &SideWords {
        &self.0
    }

    fn same_segment(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// No peers in the models.
    fn maintain(&self) {}
}

/// The helper's sleep on the [`Kernel`].
struct KernelSleeper(Arc<Kernel>);

impl hub::Sleeper for KernelSleeper {
    type Scratch = ();

    fn sleep<T: hub::Watched>(
        &self,
        _: &mut (),
        watched: &[(T, u32)],
        control: &AtomicU32,
        control_seen: u32,
    ) {
        use hub::WaitWords;
        let bucket = crate::sync::lock(&self.0.lock);
        let changed = control.load(Ordering::SeqCst) != control_seen
            || watched
                .iter()
                .any(|(t, seen)| t.words().async_seq().load(Ordering::SeqCst) != *seen);
        if !changed {
            drop(self.0.queue.wait(bucket).unwrap());
        }
    }

    fn wake_control(&self, _: &AtomicU32) {
        self.0.wake_all();
    }
}

/// The production async hub ([`super::hub`]) over one side's words, the receivers' side
/// of a one-message mailbox that stands for the ring: a send commits with a SeqCst RMW
/// followed by `after_seqcst_rmw`, as the ring protocol's commits do (its own interplay
/// with the wait words is modelled with the ring in `loom_shm_ring.rs`), and a receive
/// takes the message with a CAS after a load (the re-check's loads come after the
/// waiter's fence). The kernel's multi-word wait is modelled ([`Kernel`]). The model runs
/// the helper thread itself ([`AsyncHub::run`]) and ends it with [`AsyncHub::stop`].
pub struct AsyncHub {
    hub: hub::Hub<Target, KernelSleeper>,
    side: Target,
    /// The message (0: none).
    slot: AtomicUsize,
}

impl Default for AsyncHub {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncHub {
    pub fn new() -> Self {
        let kernel = Arc::new(Kernel::default());
        AsyncHub {
            hub: hub::Hub::new(KernelSleeper(kernel.clone())),
            side: Target(Arc::new(SideWords {
                async_seq: AtomicU32::new(0),
                async_waiters: AtomicU32::new(0),
                kernel,
            })),
            slot: AtomicUsize::new(0),
        }
    }

    /// The helper thread's loop (production `Hub::run`), until [`AsyncHub::stop`].
    pub fn run(&self) {
        self.hub.run()
    }

    /// Ends [`AsyncHub::run`].
    pub fn stop(&self) {
        self.hub.stop()
    }

    /// A send of `value` (nonzero) into the empty mailbox, then the production
    /// announcement to async receivers ([`hub::notify`]), as `Endpoint::send_attempt`.
    pub fn send(&self, value: usize) {
        assert_ne!(value, 0);
        let old = self.slot.swap(value, Ordering::SeqCst);
        crate::sync::after_seqcst_rmw();
        assert_eq!(old, 0, "the mailbox holds one message");
        hub::notify(&*self.side.0);
    }

    /// Takes the message, if there is one.
    fn try_recv(&self) -> Option<usize> {
        let v = self.slot.load(Ordering::SeqCst);
        (v != 0
            && self
                .slot
                .compare_exchange(v, 0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok())
        .then_some(v)
    }

    /// Whether a message is waiting.
    pub fn has_message(&self) -> bool {
        self.slot.load(Ordering::SeqCst) != 0
    }

    /// An async receive (production `RecvFut`: polls with `Wait::poll`, cancels on drop).
    pub fn recv_async(&self) -> RecvWait<'_> {
        RecvWait {
            hub: self,
            wait: hub::Wait::new(),
        }
    }

    /// The side's `async_waiters`.
    pub fn async_waiters(&self) -> u32 {
        self.side.0.async_waiters.load(Ordering::SeqCst)
    }

    /// How many registrations are armed with the hub.
    pub fn armed(&self) -> usize {
        self.hub.armed()
    }
}

/// A pending async receive of [`AsyncHub::recv_async`].
pub struct RecvWait<'a> {
    hub: &'a AsyncHub,
    wait: hub::Wait,
}

impl core::future::Future for RecvWait<'_> {
    type Output = usize;

    fn poll(
        self: core::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<usize> {
        let this = self.get_mut();
        let hub = this.hub;
        this.wait.poll(
            || &hub.hub,
            &*hub.side.0,
            false,
            || hub.side.clone(),
            cx,
            || hub.has_message(),
            || hub.try_recv(),
        )
    }
}

impl Drop for RecvWait<'_> {
    fn drop(&mut self) {
        let hub = self.hub;
        self.wait.cancel(|| &hub.hub, &*hub.side.0);
    }
}

/// The shared-memory mailbox's lock words (`shm::mailbox_words::LockWords`), on the
/// heap: the production take, take-over and release.
pub struct MailboxLock {
    word: AtomicU32,
    waiters: AtomicU32,
}

impl MailboxLock {
    /// A lock held by `holder` (0: free).
    pub fn held_by(holder: u32) -> Self {
        MailboxLock {
            word: AtomicU32::new(holder),
            waiters: AtomicU32::new(0),
        }
    }

    /// The lock word of peer slot `slot` in `generation`.
    pub fn owner_word(slot: usize, generation: u32) -> u32 {
        mailbox_words::owner_word(slot, generation)
    }

    fn words(&self) -> LockWords<'_> {
        LockWords {
            word: &self.word,
            waiters: &self.waiters,
        }
    }

    pub fn try_take(&self, me: u32) -> bool {
        self.words().try_take(me)
    }

    pub fn take_over(&self, held: u32, me: u32) -> bool {
        self.words().take_over(held, me)
    }

    /// Releases; whether a sleeper would be woken.
    pub fn release(&self) -> bool {
        self.words().release()
    }

    pub fn holder(&self) -> u32 {
        self.word.load(Ordering::SeqCst)
    }
}

/// A request's reply state word (`shm::mailbox_words`), with the kernel's futex
/// modelled: the production `settle`, `mark_sleeping` and `retire`, and the requester's
/// and the replier's use of them.
pub struct ReplyState {
    word: AtomicU32,
    sleepers: Sleepers,
}

impl Default for ReplyState {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyState {
    /// A pending request.
    pub fn new() -> Self {
        ReplyState {
            word: AtomicU32::new(mailbox_words::PENDING),
            sleepers: Sleepers::default(),
        }
    }

    /// The replier answers: PENDING → REPLIED, waking a sleeping requester. `true` when
    /// the answer is delivered, `false` when it is handed back (the requester left).
    pub fn reply(&self) -> bool {
        match mailbox_words::settle(&self.word, mailbox_words::REPLIED) {
            Ok(sleeper) => {
                if sleeper {
                    self.sleepers.wake(u32::MAX);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The requester's deadline passes: PENDING → GONE. `true` when it left (a reply
    /// will be handed back), `false` when the outcome was in first.
    pub fn give_up(&self) -> bool {
        mailbox_words::settle(&self.word, mailbox_words::GONE).is_ok()
    }

    /// The requester waits without a deadline (no timeout slice: a lost wake-up hangs
    /// the model) and returns the outcome's state.
    pub fn wait(&self) -> u32 {
        loop {
            let cur = self.word.load(Ordering::SeqCst);
            if cur & !mailbox_words::SLEEPING != mailbox_words::PENDING {
                return cur;
            }
            if mailbox_words::mark_sleeping(&self.word, cur) {
                self.sleepers.wait(
                    &self.word,
                    mailbox_words::PENDING | mailbox_words::SLEEPING,
                    None,
                );
            }
        }
    }

    pub fn is_replied(state: u32) -> bool {
        state == mailbox_words::REPLIED
    }

    /// The requester, done with an outcome it waited for (`seen`), retires the slot
    /// (`mailbox_words::retire`): `true` when it is now DONE.
    pub fn retire(&self, seen: u32) -> bool {
        mailbox_words::retire(&self.word, seen)
    }

    /// A lock holder's look before it releases the slot: whether it is DONE.
    pub fn is_done(&self) -> bool {
        self.word.load(Ordering::SeqCst) == mailbox_words::DONE
    }
}
