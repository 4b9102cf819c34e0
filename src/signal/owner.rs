//! The owner's side of a target, written once over where its words live and how its
//! waits sleep ([`Backend`]): the in-process [`Target`](super::Target) runs it over the
//! heap and the channels' wait queue, `shm::signal::Target` over a segment and its futex
//! words. Dispositions, handlers, masks and the wait loops are this one piece of code.
//!
//! What a backend must provide, step by step:
//! 1. the [`State`] (the pending words and queues) and the intent lane its queue claims
//!    are recorded in ([`Backend::with_lane`]);
//! 2. [`Backend::notify`]: after a change of the no-lost-wake-up argument (a SeqCst RMW
//!    of `pending`, `mask` or `running`), wake *every* sleeping wait, if any sleeps
//!    (waits may be for different sets, so one woken waiter would not do);
//! 3. a blocking loop ([`Backend::block`]) and an async one ([`Backend::poll`],
//!    [`Backend::cancel`]) that count themselves as waiters, then re-check with SeqCst
//!    loads (the attempt given them, which loads `pending`, `mask` and `running` with
//!    SeqCst), then sleep: the argument of the `signal` module docs for the heap, of the
//!    `shm::futex` module docs for a segment;
//! 4. [`Backend::info`]: the delivery's origin decoded (the heap knows its pid; a segment
//!    stores the raiser's pid in the origin word).

use core::fmt;
use core::task::{Context, Poll};
use std::time::Instant;

use super::state::{QueueLane, SIGNALS, SignalStorage, State, Taken, bit};
use super::{Disposition, Handler, SigInfo, SigSet, Signal};
use crate::chan::ring::RingStorage;
use crate::sync::{Mutex, Ordering, after_seqcst_rmw, load_seqcst_u64, lock};

/// Where a target's words live and how its waits sleep (see the module docs).
pub(crate) trait Backend {
    type Storage: SignalStorage;
    /// The state an async wait keeps between polls.
    type AsyncWait: fmt::Debug;
    /// The words.
    fn state(&self) -> &State<Self::Storage>;
    /// Runs `f` with the intent lane the owner's queue claims are recorded in.
    fn with_lane<R>(&self, f: impl FnOnce(QueueLane<'_>) -> R) -> R;
    /// Announces a change to every sleeping wait (none woken if none sleeps).
    fn notify(&self);
    /// The delivery `taken` of number `n`.
    fn info(&self, n: u8, taken: Taken) -> SigInfo;
    /// The origin word `info` was made from (to put a delivery back as a raise).
    fn origin_of(&self, info: &SigInfo) -> u64;
    /// Runs `attempt` until it returns `Some` or `deadline` passes.
    fn block(
        &self,
        deadline: Option<Instant>,
        attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Option<SigInfo>;
    /// One poll of an async wait running `attempt`.
    fn poll(
        &self,
        wait: &mut Self::AsyncWait,
        cx: &mut Context<'_>,
        attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Poll<SigInfo>;
    /// Ends an async wait (completion or drop); a wake-up it received passes on.
    fn cancel(&self, wait: &mut Self::AsyncWait);
}

/// Which numbers one wait considers: `set`, with `unmasked` treated as unmasked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Want {
    set: u64,
    unmasked: u64,
}

impl Want {
    pub(crate) const ALL: Want = Want {
        set: u64::MAX,
        unmasked: 0,
    };

    /// The numbers in `set`.
    pub(crate) fn set(set: &SigSet) -> Want {
        Want {
            set: set.0,
            unmasked: 0,
        }
    }

    /// Every number, with those in `set` unmasked (`sigsuspend`).
    pub(crate) fn unmasking(set: &SigSet) -> Want {
        Want {
            set: u64::MAX,
            unmasked: set.0,
        }
    }
}

/// What [`Owner::deliver`] did.
enum Delivered {
    /// Took a delivery that is not caught.
    Take(SigInfo),
    /// Ran a handler.
    Ran,
    /// Found nothing to take (another thread was first).
    Nothing,
}

/// The owner's side of a target over backend `B`.
pub(crate) struct Owner<B> {
    backend: B,
    /// The handlers of caught numbers, by `n - 1`; read (cloned) under the lock by the
    /// thread that runs a handler, never by raisers. Local to the owner's process.
    handlers: Mutex<Vec<Option<Handler>>>,
}

impl<B: Backend> fmt::Debug for Owner<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.backend.state().words();
        f.debug_struct("Target")
            .field("pending", &SigSet(w.pending.load(Ordering::Relaxed)))
            .field("masked", &SigSet(w.mask.load(Ordering::Relaxed)))
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Owner<B> {
    /// Whether the words are shared with other processes (and so may be hostile).
    const SHARED: bool = <<B::Storage as SignalStorage>::Queue as RingStorage>::SHARED;

    pub(crate) fn new(backend: B) -> Self {
        Owner {
            backend,
            handlers: Mutex::new(vec![None; usize::from(SIGNALS)]),
        }
    }

    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    fn state(&self) -> &State<B::Storage> {
        self.backend.state()
    }

    /// The blocking wait, with an optional deadline.
    pub(crate) fn wait_until(&self, want: Want, deadline: Option<Instant>) -> Option<SigInfo> {
        self.backend.block(deadline, || self.attempt(want))
    }

    /// One poll of an async wait for `want`.
    pub(crate) fn poll_wait(
        &self,
        want: Want,
        wait: &mut B::AsyncWait,
        cx: &mut Context<'_>,
    ) -> Poll<SigInfo> {
        self.backend.poll(wait, cx, || self.attempt(want))
    }

    /// Ends an async wait.
    pub(crate) fn cancel(&self, wait: &mut B::AsyncWait) {
        self.backend.cancel(wait);
    }

    /// `Target::set_disposition`.
    pub(crate) fn set_disposition(&self, sig: Signal, disposition: Disposition) {
        let w = self.state().words();
        let b = sig.bit();
        match disposition {
            Disposition::Deliver => {
                w.ignore.fetch_and(!b, Ordering::SeqCst);
                w.catch.fetch_and(!b, Ordering::SeqCst);
                lock(&self.handlers)[usize::from(sig.0) - 1] = None;
            }
            Disposition::Ignore => {
                w.catch.fetch_and(!b, Ordering::SeqCst);
                w.ignore.fetch_or(b, Ordering::SeqCst);
                lock(&self.handlers)[usize::from(sig.0) - 1] = None;
                // Raises from now on see the ignore bit; discard what came before
                // (bounded: at most what the queue holds, and raises are ignored now;
                // a hostile peer that keeps refilling it is cut off after a lap's worth).
                let limit = crate::signal::MAX_QUEUE_DEPTH + 1;
                for _ in 0..limit {
                    let (taken, _) = self
                        .backend
                        .with_lane(|lane| self.state().take(sig.0, lane));
                    let Some(t) = taken else { break };
                    self.state().add_ignored(sig.0, t.count);
                }
            }
            Disposition::Catch(h) => {
                lock(&self.handlers)[usize::from(sig.0) - 1] = Some(h);
                w.ignore.fetch_and(!b, Ordering::SeqCst);
                w.catch.fetch_or(b, Ordering::SeqCst);
            }
        }
    }

    /// `Target::ignored`.
    pub(crate) fn ignored(&self, sig: Signal) -> u64 {
        self.state().ignored(sig.0)
    }

    /// `Target::mask`.
    pub(crate) fn mask(&self, set: &SigSet) {
        self.state().words().mask.fetch_or(set.0, Ordering::SeqCst);
    }

    /// `Target::unmask`.
    pub(crate) fn unmask(&self, set: &SigSet) {
        // SeqCst: a change of the no-lost-wake-up argument (module docs).
        self.state()
            .words()
            .mask
            .fetch_and(!set.0, Ordering::SeqCst);
        after_seqcst_rmw();
        self.backend.notify();
    }

    /// `Target::masked`.
    pub(crate) fn masked(&self) -> SigSet {
        SigSet(self.state().words().mask.load(Ordering::SeqCst))
    }

    /// `Target::dispatch`.
    pub(crate) fn dispatch(&self) -> usize {
        let w = self.state().words();
        let mut ran = 0;
        loop {
            let catch = w.catch.load(Ordering::Acquire);
            let d = w.pending.load(Ordering::Acquire)
                & catch
                & !w.mask.load(Ordering::Acquire)
                & !w.running.load(Ordering::Acquire);
            if d == 0 {
                return ran;
            }
            let n = d.trailing_zeros() as u8 + 1;
            match self.deliver(n, true) {
                Delivered::Ran => ran += 1,
                // Nothing to take after all (another thread was first; in a segment,
                // maybe a bit a peer set with nothing behind it): a hostile peer can
                // keep setting bits, so there, give up rather than spin.
                Delivered::Nothing if Self::SHARED => return ran,
                Delivered::Nothing => {}
                Delivered::Take(_) => unreachable!("dispatch takes caught signals only"),
            }
        }
    }

    /// One non-blocking attempt of a wait: run handlers of caught signals met, return
    /// the first delivery that is not caught.
    pub(crate) fn attempt(&self, want: Want) -> Option<SigInfo> {
        let w = self.state().words();
        // Bounded in a segment: each round takes a delivery or finds a bit with nothing
        // behind it; a hostile peer setting bits forever cannot keep us here (65 rounds
        // of nothing, then `None`, and a blocking wait goes on sleeping and
        // re-checking). On the heap, nothing only means another thread was first.
        let mut empty_rounds = 0;
        loop {
            // SeqCst loads: the re-check of the no-lost-wake-up argument.
            let pending = load_seqcst_u64(&w.pending) & want.set;
            if pending == 0 {
                return None;
            }
            let mask = load_seqcst_u64(&w.mask) & !want.unmasked;
            let d = pending & !mask & !load_seqcst_u64(&w.running);
            if d == 0 {
                return None;
            }
            let n = d.trailing_zeros() as u8 + 1;
            match self.deliver(n, false) {
                Delivered::Take(info) => return Some(info),
                Delivered::Ran => {}
                Delivered::Nothing => {
                    empty_rounds += 1;
                    if Self::SHARED && empty_rounds > usize::from(SIGNALS) {
                        return None;
                    }
                }
            }
        }
    }

    /// Takes one delivery of `n`; if `n` is caught, runs its handler (holding `n` back
    /// meanwhile). `caught_only`: leave `n` alone if it is not caught.
    ///
    /// Inlined into the waits: a delivery that is not caught (the common case) is a
    /// load and the take; a caught one runs out of line.
    #[inline]
    fn deliver(&self, n: u8, caught_only: bool) -> Delivered {
        let w = self.state().words();
        let b = bit(n);
        if w.catch.load(Ordering::Acquire) & b == 0 {
            if caught_only {
                return Delivered::Nothing;
            }
            return match self.take(n) {
                Some(info) => Delivered::Take(info),
                None => Delivered::Nothing,
            };
        }
        self.deliver_caught(n, caught_only)
    }

    /// [`Owner::deliver`] of a caught number.
    #[inline(never)]
    fn deliver_caught(&self, n: u8, caught_only: bool) -> Delivered {
        let w = self.state().words();
        let b = bit(n);
        // Hold `n` back for everyone else before taking it: one handler of a number at a
        // time.
        if w.running.fetch_or(b, Ordering::SeqCst) & b != 0 {
            return Delivered::Nothing;
        }
        let running = Running {
            backend: &self.backend,
            bit: b,
        };
        let Some(info) = self.take(n) else {
            drop(running);
            return Delivered::Nothing;
        };
        let handler = lock(&self.handlers)[usize::from(n) - 1].clone();
        match handler {
            Some(Handler(f)) => {
                f(info);
                drop(running);
                Delivered::Ran
            }
            // The disposition changed away from `Catch` since we looked (it clears the
            // bit before the handler), or (in a segment) a peer set the catch bit.
            None => {
                drop(running);
                if caught_only {
                    // `dispatch` takes nothing that is not caught: put the delivery back
                    // (a queued entry goes to the end of its queue).
                    let times = info.count;
                    let payload = info.payload.unwrap_or(0);
                    let state = self.state();
                    let origin = self.backend.origin_of(&info);
                    let put = self
                        .backend
                        .with_lane(|lane| state.raise(n, payload, origin, times, lane));
                    if put.is_err() {
                        state.add_ignored(n, times);
                    }
                    self.backend.notify();
                    Delivered::Nothing
                } else {
                    Delivered::Take(info)
                }
            }
        }
    }

    #[inline(always)]
    fn take(&self, n: u8) -> Option<SigInfo> {
        let (taken, rearmed) = self.backend.with_lane(|lane| self.state().take(n, lane));
        if rearmed {
            self.backend.notify();
        }
        taken.map(|t| self.backend.info(n, t))
    }
}

/// Holds a number back while its handler runs; releasing (also on unwind) is a change
/// of the no-lost-wake-up argument.
struct Running<'a, B: Backend> {
    backend: &'a B,
    bit: u64,
}

impl<B: Backend> Drop for Running<'_, B> {
    fn drop(&mut self) {
        self.backend
            .state()
            .words()
            .running
            .fetch_and(!self.bit, Ordering::SeqCst);
        after_seqcst_rmw();
        self.backend.notify();
    }
}
