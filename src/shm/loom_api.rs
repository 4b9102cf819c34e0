//! The shared ring protocol ([`super::protocol`]) over heap storage with
//! `SHARED = true`, for loom models of claim / commit / reclaim. Not part of the API:
//! exposed as `conduit::__loom_shm` under `--cfg loom` only.
#![allow(missing_docs, missing_debug_implementations)]

use super::protocol::{self, Kind};
use crate::chan::ring::{self, RingStorage};
use crate::sync::{AtomicUsize, Ordering};

struct Heap {
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
        protocol::send(&self.0, &lane.0, |i| {
            self.payload(i).store(value, Ordering::Relaxed)
        })
        .map_err(stall)
    }

    /// A complete receive (the production protocol).
    pub fn recv(&self, lane: &Lane) -> Result<usize, Stall> {
        protocol::recv(&self.0, &lane.0, |i| {
            Some(self.payload(i).load(Ordering::Relaxed))
        })
        .map_err(stall)
    }

    /// A sender that claims a slot, writes `value` and dies before committing. Returns the claimed position.
    pub fn claim_send_and_die(&self, lane: &Lane, value: usize) -> Result<usize, Stall> {
        let token = self
            .0
            .start_send(|pos| {
                lane.0
                    .store(protocol::encode(Kind::Send, pos), Ordering::Relaxed)
            })
            .map_err(stall)?;
        self.payload(token.index).store(value, Ordering::Relaxed);
        Ok(token.pos)
    }

    /// A receiver that claims a message and dies before freeing its slot.
    pub fn claim_recv_and_die(&self, lane: &Lane) -> Result<usize, Stall> {
        self.0
            .start_recv(|pos| {
                lane.0
                    .store(protocol::encode(Kind::Recv, pos), Ordering::Relaxed)
            })
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
