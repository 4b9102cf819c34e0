//! User code that runs inside the channel, and what a panic from it may not break.
//!
//! The channel runs code it does not control in a few places: the `Drop` of a message it
//! discards (the last receiver is gone) and a [`Waker`](core::task::Waker)'s `wake`,
//! `clone` and `drop`. Any of them may panic. The rules, step by step:
//!
//! 1. *No user code runs while a structure is half updated.* Where the channel must run
//!    a batch of user calls (drop every queued message, wake every waiter on
//!    disconnection), each call is made with the channel's state already consistent
//!    for the calls that follow, so nothing depends on the call returning.
//! 2. *A batch runs to its end.* [`Unwind::run`] catches each call's panic, keeps the
//!    first, and lets the batch go on: every queued message is dropped exactly once and
//!    every waiter is woken even if some of those calls panic. The alternative, a guard
//!    that finishes the batch while unwinding, turns a second panic into an abort (as
//!    dropping a `Vec` does); the reproduction that found the defect panics in two
//!    messages.
//! 3. *The first panic reaches the caller whose call started the batch*
//!    ([`Unwind::finish`]), after the batch: the last `Receiver`'s drop for discarded
//!    messages, the disconnecting handle's drop for the wake-ups. Later panics of the
//!    same batch are dropped (their hook has already reported them).
//! 4. *No lock is held across a user call*, except a `Waker`'s `clone` or `drop` under
//!    a waiter list's lock, where each such call happens before (clone) or as the last
//!    step of (the drop of a replaced or removed waker) an update that stays consistent
//!    either way; every lock in the crate ignores poisoning.
//!
//! A single wake-up issued by a send or a receive (not a batch) propagates its panic
//! directly, after the operation has completed: a sent message is queued; a received
//! one is dropped with the unwinding call. A blocking rendezvous send whose wake of an
//! async receiver panics first withdraws its offer, which points into its stack frame.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// The first panic of a batch of user calls that must all run; see the module docs.
#[derive(Default)]
#[must_use = "a caught panic must be resumed with `finish`"]
pub(crate) struct Unwind {
    first: Option<Box<dyn Any + Send>>,
}

impl Unwind {
    pub(crate) fn new() -> Self {
        Unwind { first: None }
    }

    /// Runs `f`, keeping its panic (if it is the batch's first) for [`Unwind::finish`].
    ///
    /// `f` must leave the channel consistent whether it returns or unwinds (rule 1 of the
    /// module docs): that is why asserting unwind safety is sound here.
    #[inline]
    pub(crate) fn run(&mut self, f: impl FnOnce()) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
            // Later panics are dropped (the hook has reported them).
            self.first.get_or_insert(panic);
        }
    }

    /// Resumes the batch's first panic, if any.
    pub(crate) fn finish(self) {
        if let Some(panic) = self.first {
            resume_unwind(panic);
        }
    }
}

/// Wakes each of `wakes` (calling `wake` on it), all of them even if some panic; then
/// resumes the first panic.
pub(crate) fn wake_all<W>(wakes: impl IntoIterator<Item = W>, wake: impl Fn(W)) {
    let mut unwind = Unwind::new();
    for w in wakes {
        unwind.run(|| wake(w));
    }
    unwind.finish();
}
