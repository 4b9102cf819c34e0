//! The in-process flavors and the one place where blocking and async waiting meet them.
//!
//! `array` and `list` are lock-free queues that know nothing about waiting: each exposes
//! the same small [`Queue`] method set, and [`signal`] turns their `try_` operations into
//! blocking, timed and async ones. `zero` (rendezvous) pairs senders with receivers
//! itself, because a hand-off is a wait by nature. [`Flavor`] dispatches between them.

pub(crate) mod array;
pub(crate) mod list;
pub(crate) mod mark_lock;
pub(crate) mod ring;
pub(crate) mod signal;
pub(crate) mod unwind;
pub(crate) mod zero;

use core::task::{Context, Poll};
use std::time::Instant;

use self::signal::{ASYNC_SEND_YIELDS, AsyncWait, Attempt, Signal, SpinWait, block_on};
use crate::error::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

/// The wait queues of a lock-free flavor.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// Senders waiting for room.
    pub(crate) senders: Signal,
    /// Receivers waiting for a message.
    pub(crate) receivers: Signal,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Waiters {
            senders: Signal::new(),
            receivers: Signal::new(),
        }
    }

    /// Wakes every waiter on both sides (disconnection), all of them even if some
    /// wakers panic; then resumes the first panic (see [`unwind`]).
    pub(crate) fn notify_all(&self) {
        let mut unwind = unwind::Unwind::new();
        unwind.run(|| self.senders.notify_all());
        unwind.run(|| self.receivers.notify_all());
        unwind.finish();
    }
}

/// Why a lock-free queue could not claim a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Full (for a send) or empty (for a receive): worth waiting.
    Wait,
    /// Disconnected (for a receive: and empty).
    Disconnected,
}

/// The method set shared by the lock-free flavors.
///
/// Sends and receives come in two steps, *claim* a slot, then *write* or *read* it, so
/// the message goes straight between the caller and the slot: it is never moved into
/// a `Result` on the way, which for large messages is a copy per layer.
pub(crate) trait Queue<T> {
    /// A slot claimed for a send: the claimant's alone until [`Queue::write`]. It may
    /// borrow from the queue (the ring's claim keeps a reference to the slot's stamp).
    type SendSlot<'a>
    where
        Self: 'a;
    /// A slot claimed for a receive: the claimant's alone until [`Queue::read`].
    type RecvSlot<'a>
    where
        Self: 'a;
    /// Claims a slot to send into.
    fn claim_send(&self) -> Result<Self::SendSlot<'_>, NoSlot>;
    /// Writes `msg` into a claimed slot, publishes it and wakes a receiver.
    fn write(&self, slot: Self::SendSlot<'_>, msg: T);
    /// Claims a slot holding a message.
    #[inline]
    fn claim_recv(&self) -> Result<Self::RecvSlot<'_>, NoSlot> {
        self.claim_recv_if(|| true)
    }
    /// [`Queue::claim_recv`] while `open()` says so: it is asked before each claim's
    /// read-modify-write of the receivers' position, after the load of the position
    /// that the RMW expects, and that load is Acquire (so `open` sees what the thread
    /// that moved the position there wrote before). `open()` saying no stops the claim
    /// with [`NoSlot::Wait`]; the caller tells that from an empty queue by what its
    /// `open` saw. For the mailbox's inbox (`mailbox::state`).
    fn claim_recv_if(&self, open: impl FnMut() -> bool) -> Result<Self::RecvSlot<'_>, NoSlot>;
    /// How many messages receivers have claimed since the queue was made (wrapping): a
    /// SeqCst load of the receivers' position. For the mailbox's inbox.
    fn received(&self) -> usize;
    /// Takes the message out of a claimed slot, frees the slot and wakes a sender.
    fn read(&self, slot: Self::RecvSlot<'_>) -> T;
    /// [`Queue::write`] without the wake-up (not even the look at the waiter counts),
    /// for a user that never waits on the queue's own waiters (the mailbox's inbox).
    fn write_quiet(&self, slot: Self::SendSlot<'_>, msg: T);
    /// [`Queue::read`] without the wake-up, as [`Queue::write_quiet`].
    fn read_quiet(&self, slot: Self::RecvSlot<'_>) -> T;
    fn waiters(&self) -> &Waiters;
    fn len(&self) -> usize;
    fn capacity(&self) -> Option<usize>;
    fn is_disconnected(&self) -> bool;
    /// The last sender is gone: mark and wake everyone.
    fn disconnect_senders(&self);
    /// The last receiver is gone: mark, wake everyone and drop the queued messages.
    fn disconnect_receivers(&self);

    /// For a sender spinning on a full queue: whether a batch of slots is free again,
    /// so that trying now is worth it (see `array`'s module docs). A hint only: `true`
    /// for queues that are never full.
    #[inline]
    fn send_batch_free(&self) -> bool {
        true
    }

    /// For a receiver spinning on an empty queue: whether a message may be there now,
    /// judged without loading the senders' position (the empty check of a claim does,
    /// and a receiver polling that way would take its cache line from the senders on
    /// every poll). A hint only, like [`Queue::send_batch_free`]: `true` when unsure.
    #[inline]
    fn recv_ready(&self) -> bool {
        true
    }

    #[inline]
    fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        match self.claim_send() {
            Ok(slot) => {
                self.write(slot, msg);
                Ok(())
            }
            Err(NoSlot::Wait) => Err(TrySendError::Full(msg)),
            Err(NoSlot::Disconnected) => Err(TrySendError::Disconnected(msg)),
        }
    }

    #[inline]
    fn try_recv(&self) -> Result<T, TryRecvError> {
        match self.claim_recv() {
            Ok(slot) => Ok(self.read(slot)),
            Err(NoSlot::Wait) => Err(TryRecvError::Empty),
            Err(NoSlot::Disconnected) => Err(TryRecvError::Disconnected),
        }
    }
}

fn send_attempt<T>(q: &impl Queue<T>, msg: T) -> Attempt<Result<(), T>, T> {
    match q.try_send(msg) {
        Ok(()) => Attempt::Done(Ok(())),
        Err(TrySendError::Disconnected(m)) => Attempt::Done(Err(m)),
        Err(TrySendError::Full(m)) => Attempt::Wait(m),
    }
}

fn recv_attempt<T>(q: &impl Queue<T>) -> Attempt<Result<T, ()>, ()> {
    match q.try_recv() {
        Ok(m) => Attempt::Done(Ok(m)),
        Err(TryRecvError::Disconnected) => Attempt::Done(Err(())),
        Err(TryRecvError::Empty) => Attempt::Wait(()),
    }
}

/// Blocking send: one inline claim (the fast path), then the shared wait loop.
#[inline]
fn send_blocking<T>(
    q: &impl Queue<T>,
    msg: T,
    deadline: Option<Instant>,
) -> Result<(), SendTimeoutError<T>> {
    match q.claim_send() {
        Ok(slot) => {
            q.write(slot, msg);
            Ok(())
        }
        Err(NoSlot::Disconnected) => Err(SendTimeoutError::Disconnected(msg)),
        Err(NoSlot::Wait) => send_wait(q, msg, deadline),
    }
}

#[cold]
#[inline(never)]
fn send_wait<T>(
    q: &impl Queue<T>,
    msg: T,
    deadline: Option<Instant>,
) -> Result<(), SendTimeoutError<T>> {
    let batch_free = |_: &SpinWait| q.send_batch_free();
    match block_on(&q.waiters().senders, msg, deadline, batch_free, |m| {
        send_attempt(q, m)
    }) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(m)) => Err(SendTimeoutError::Disconnected(m)),
        Err(m) => Err(SendTimeoutError::Timeout(m)),
    }
}

/// Blocking receive: one inline claim (the fast path), then the shared wait loop.
///
/// The claim is made only when [`Queue::recv_ready`] says a message may be at the
/// front. A claim that finds the queue empty loads the senders' position to tell an
/// empty queue from a send still being written, and a receiver that keeps up with its
/// sender would do that for nearly every message: each load takes the position's
/// cache line from the sender, which then takes it back for its next claim. Two line
/// transfers a message on the path of both sides, while the message's own slot is
/// crossing too. Without them, a receiver that has caught up waits by polling the
/// front slot's stamp alone (the wait loop below, whose spin makes no attempt until the
/// stamp shows a message, see `signal::block_on`).
///
/// Measured on this project's 2-core VM, two pinned threads, `bounded(1024)`, ns a
/// message, interleaved runs with the machine in its fast state: a stream of 16-, 32-
/// or 48-byte messages (where the receiver keeps up) 58–65 → 38–42; a ping-pong of
/// `u64`s through two channels 276–295 → 175–180 per round trip, through two
/// `bounded(1)` 300–304 → 85–108. A stream of `u64`s, where the sender keeps the ring
/// full, is unchanged (7). See `benches/README.md`.
#[inline]
fn recv_blocking<T>(q: &impl Queue<T>, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
    if q.recv_ready() {
        match q.claim_recv() {
            Ok(slot) => return Ok(q.read(slot)),
            Err(NoSlot::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(NoSlot::Wait) => {}
        }
    }
    recv_wait(q, deadline)
}

#[cold]
#[inline(never)]
fn recv_wait<T>(q: &impl Queue<T>, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
    match block_on(
        &q.waiters().receivers,
        (),
        deadline,
        // Once the spin yields, its polls are far apart: an attempt each time, so that a
        // disconnection (which the front's stamp does not show) is seen within a yield
        // or two rather than at the end of the spin.
        |spin| spin.yielding() || q.recv_ready(),
        |()| recv_attempt(q),
    ) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(())) => Err(RecvTimeoutError::Disconnected),
        Err(()) => Err(RecvTimeoutError::Timeout),
    }
}

/// One poll of an async send on a lock-free queue. Unless a wait is already under way,
/// it first claims a slot inline, as [`send_blocking`] does; only a full queue enters
/// the wait machinery.
#[inline]
fn poll_send_queue<T>(
    q: &impl Queue<T>,
    cx: &mut Context<'_>,
    msg: &mut Option<T>,
    wait: &mut AsyncWait,
) -> Poll<Result<(), T>> {
    if wait.is_fresh() {
        // Checked before claiming: a claimed slot must be written.
        assert!(msg.is_some(), "future polled after completion");
        match q.claim_send() {
            Ok(slot) => {
                q.write(slot, msg.take().expect("checked above"));
                return Poll::Ready(Ok(()));
            }
            Err(NoSlot::Disconnected) => {
                return Poll::Ready(Err(msg.take().expect("checked above")));
            }
            Err(NoSlot::Wait) => {}
        }
    }
    poll_send_wait(q, cx, msg, wait)
}

#[inline(never)]
fn poll_send_wait<T>(
    q: &impl Queue<T>,
    cx: &mut Context<'_>,
    msg: &mut Option<T>,
    wait: &mut AsyncWait,
) -> Poll<Result<(), T>> {
    wait.poll(
        &q.waiters().senders,
        cx,
        msg,
        ASYNC_SEND_YIELDS,
        || q.send_batch_free(),
        |m| send_attempt(q, m),
    )
}

/// One poll of an async receive on a lock-free queue; the receiving counterpart of
/// [`poll_send_queue`].
#[inline]
fn poll_recv_queue<T>(
    q: &impl Queue<T>,
    cx: &mut Context<'_>,
    wait: &mut AsyncWait,
) -> Poll<Result<T, ()>> {
    if !wait.is_waiting() {
        match q.claim_recv() {
            Ok(slot) => return Poll::Ready(Ok(q.read(slot))),
            Err(NoSlot::Disconnected) => return Poll::Ready(Err(())),
            Err(NoSlot::Wait) => {}
        }
    }
    poll_recv_wait(q, cx, wait)
}

#[inline(never)]
fn poll_recv_wait<T>(
    q: &impl Queue<T>,
    cx: &mut Context<'_>,
    wait: &mut AsyncWait,
) -> Poll<Result<T, ()>> {
    wait.poll(
        &q.waiters().receivers,
        cx,
        &mut Some(()),
        0,
        || q.recv_ready(),
        |()| recv_attempt(q),
    )
}

/// The state an async send keeps between polls.
pub(crate) struct SendWait<T> {
    wait: AsyncWait,
    offer: Option<(u64, zero::OfferBox<T>)>,
}

/// The state an async receive keeps between polls.
#[derive(Debug, Default)]
pub(crate) struct RecvWait {
    wait: AsyncWait,
    /// The rendezvous registration id (0: none).
    id: u64,
}

impl<T> SendWait<T> {
    pub(crate) const fn new() -> Self {
        SendWait {
            wait: AsyncWait::new(),
            offer: None,
        }
    }

    /// Whether a rendezvous offer is held (dropping the state then frees it).
    #[inline]
    pub(crate) fn holds_offer(&self) -> bool {
        self.offer.is_some()
    }
}

impl RecvWait {
    pub(crate) const fn new() -> Self {
        RecvWait {
            wait: AsyncWait::new(),
            id: 0,
        }
    }
}

/// One of the three flavors.
// It lives once per channel inside an `Arc`, so variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Flavor<T> {
    Array(array::Channel<T>),
    List(list::Channel<T>),
    Zero(zero::Channel<T>),
}

/// Runs `$body` with `$q` bound to the lock-free queue, or `$zero` for rendezvous.
macro_rules! dispatch {
    ($self:expr, $q:ident => $body:expr, $z:ident => $zero:expr) => {
        match $self {
            Flavor::Array($q) => $body,
            Flavor::List($q) => $body,
            Flavor::Zero($z) => $zero,
        }
    };
}

impl<T> Flavor<T> {
    #[inline]
    pub(crate) fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        dispatch!(self, q => q.try_send(msg), z => z.try_send(msg))
    }

    #[inline]
    pub(crate) fn send(
        &self,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        dispatch!(self, q => send_blocking(q, msg, deadline), z => z.send(msg, deadline))
    }

    #[inline]
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        dispatch!(self, q => q.try_recv(), z => z.try_recv())
    }

    #[inline]
    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        dispatch!(self, q => recv_blocking(q, deadline), z => z.recv(deadline).map_err(|disconnected| {
            if disconnected {
                RecvTimeoutError::Disconnected
            } else {
                RecvTimeoutError::Timeout
            }
        }))
    }

    /// One poll of an async send; `Err(msg)` = disconnected.
    #[inline]
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        msg: &mut Option<T>,
        state: &mut SendWait<T>,
    ) -> Poll<Result<(), T>> {
        dispatch!(self,
            q => poll_send_queue(q, cx, msg, &mut state.wait),
            z => z.poll_send(cx, msg, &mut state.offer))
    }

    /// An async send is dropped before completion.
    pub(crate) fn cancel_send(&self, state: &mut SendWait<T>) {
        dispatch!(self,
        q => state.wait.cancel(&q.waiters().senders),
        z => if let Some(offer) = state.offer.take() {
            drop(z.cancel_send(offer));
        })
    }

    /// One poll of an async receive; `Err(())` = disconnected.
    #[inline]
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        state: &mut RecvWait,
    ) -> Poll<Result<T, ()>> {
        dispatch!(self,
            q => poll_recv_queue(q, cx, &mut state.wait),
            z => z.poll_recv(cx, &mut state.id))
    }

    /// An async receive is dropped before completion.
    pub(crate) fn cancel_recv(&self, state: &mut RecvWait) {
        dispatch!(self,
        q => state.wait.cancel(&q.waiters().receivers),
        z => {
            z.cancel_recv(state.id);
            state.id = 0;
        })
    }

    pub(crate) fn len(&self) -> usize {
        dispatch!(self, q => q.len(), _z => 0)
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        dispatch!(self, q => q.capacity(), _z => Some(0))
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        dispatch!(self, q => q.is_disconnected(), z => z.is_disconnected())
    }

    /// The waits each side (senders, receivers) still accounts for; see
    /// [`Signal::accounted`]. For tests only.
    #[cfg(any(test, loom))]
    pub(crate) fn waiter_counts(&self) -> [usize; 2] {
        dispatch!(self,
            q => [q.waiters().senders.accounted(), q.waiters().receivers.accounted()],
            z => z.queued_waits())
    }

    pub(crate) fn disconnect_senders(&self) {
        dispatch!(self, q => q.disconnect_senders(), z => z.disconnect())
    }

    pub(crate) fn disconnect_receivers(&self) {
        dispatch!(self, q => q.disconnect_receivers(), z => z.disconnect())
    }
}

#[cfg(test)]
mod tests;
