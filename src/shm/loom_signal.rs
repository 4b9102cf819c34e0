//! A signal target whose owner waits the way `shm::signal::Target` does, for the loom
//! models (`loom-tests/tests/loom_shm_signal.rs`): the generic owner (`signal::owner`)
//! over the heap words (loom cannot map a segment) and the production wait words of a
//! segment side ([`SideSignal`], with the kernel's futex modelled) and wait loop
//! ([`wait::block`]); raises announce themselves with [`SideSignal::notify_waiting`],
//! as `shm::signal::Raiser` does. Exposed through `conduit::__loom_shm` under
//! `--cfg loom` only.
#![allow(missing_docs, missing_debug_implementations)]

use core::task::{Context, Poll};
use std::time::Instant;

use super::futex::SideSignal;
use super::wait;
use crate::signal::state::{Heap, QueueLane, State, Taken};
use crate::signal::{Backend, Owner, SigInfo, SigSet, Signal, Want};
use crate::sync::{Arc, Ordering};

/// The words and the receivers' wait words of one target.
struct Words {
    state: State<Heap>,
    waits: SideSignal,
}

/// The owner's backend: [`shm::signal`](super::signal)'s, with heap words.
#[derive(Clone)]
struct Segmentish(Arc<Words>);

impl Backend for Segmentish {
    type Storage = Heap;
    type AsyncWait = ();

    fn state(&self) -> &State<Heap> {
        &self.0.state
    }

    fn with_lane<R>(&self, f: impl FnOnce(QueueLane<'_>) -> R) -> R {
        f(QueueLane::NONE)
    }

    fn notify(&self) {
        self.0.waits.notify_waiting();
    }

    fn info(&self, n: u8, taken: Taken) -> SigInfo {
        SigInfo::from_parts(Signal::new(n).unwrap(), taken, 0, taken.origin)
    }

    fn origin_of(&self, info: &SigInfo) -> u64 {
        info.raiser_id()
    }

    fn block(
        &self,
        deadline: Option<Instant>,
        attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Option<SigInfo> {
        let pending = &self.0.state.words().pending;
        wait::block(
            &self.0.waits,
            false,
            deadline,
            || {},
            || pending.load(Ordering::Relaxed) != 0,
            attempt,
        )
    }

    /// Async waits are the hub's (modelled in `loom_hub.rs`); these models block.
    fn poll(
        &self,
        _wait: &mut (),
        _cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Poll<SigInfo> {
        attempt().map_or(Poll::Pending, Poll::Ready)
    }

    fn cancel(&self, _wait: &mut ()) {}
}

/// A target (queue depth 1) and its raisers, for the models.
pub struct ShmSignalTarget {
    owner: Owner<Segmentish>,
}

impl Default for ShmSignalTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl ShmSignalTarget {
    pub fn new() -> Self {
        ShmSignalTarget {
            owner: Owner::new(Segmentish(Arc::new(Words {
                state: State::new(Heap::new(1)),
                waits: SideSignal::new(),
            }))),
        }
    }

    /// A raise of `n` as `shm::signal::Raiser` makes it: record, then wake every
    /// sleeper if any sleeps.
    pub fn raise(&self, n: u8) {
        let words = &self.owner.backend().0;
        words.state.raise(n, 0, 0, 1, QueueLane::NONE).unwrap();
        words.waits.notify_waiting();
    }

    /// `Target::wait_for` of one number: the number and count delivered.
    pub fn wait_for(&self, n: u8) -> (u8, u64) {
        let set: SigSet = [Signal::new(n).unwrap()].into_iter().collect();
        let info = self.owner.wait_until(Want::set(&set), None).unwrap();
        (info.signal().number(), info.count())
    }

    /// `Target::mask`.
    pub fn mask(&self, n: u8) {
        self.owner
            .mask(&[Signal::new(n).unwrap()].into_iter().collect());
    }

    /// `Target::unmask`.
    pub fn unmask(&self, n: u8) {
        self.owner
            .unmask(&[Signal::new(n).unwrap()].into_iter().collect());
    }

    /// Blocking waiters registered (and not yet unregistered).
    pub fn waiters(&self) -> u32 {
        self.owner.backend().0.waits.waiters.load(Ordering::SeqCst)
    }
}
