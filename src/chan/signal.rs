//! Waiting, written once: an [`Event`] plus a count of registered waiters, and the
//! blocking and async wait loops that every queue flavor shares.
//!
//! `event-listener` takes a lock in every `notify`, so a wake-up is only issued when the
//! waiter count says someone is registered; the fast path of a send or receive is one
//! extra load of a read-mostly word.
//!
//! # The no-lost-wake-up argument
//! A waiter (1) registers a listener, (2) increments `waiters` (SeqCst RMW), (3) re-checks
//! the queue, (4) sleeps. A waker (a) changes the queue with a SeqCst RMW (the ring's or
//! list's claim CAS, a disconnect `fetch_or`), (b) loads `waiters` (SeqCst). In the
//! single total order of SeqCst operations either (2) precedes (b), so the waker sees a
//! waiter and notifies a listener that (1) already registered, or (a) precedes (3)'s
//! SeqCst load ([`load_seqcst`]), so the re-check sees the change and does not sleep. A
//! claimed but not yet committed operation is seen by the re-check as busy, and the
//! checker spins until it commits instead of sleeping.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use crate::sync::{
    AtomicUsize, Backoff, Event, EventListener, Listener, Ordering, listener, load_seqcst,
};

/// One side's wait queue: waiters for room (senders) or for messages (receivers).
#[derive(Debug, Default)]
pub(crate) struct Signal {
    inner: CachePadded<SignalInner>,
}

#[derive(Debug, Default)]
struct SignalInner {
    event: Event,
    waiters: AtomicUsize,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes one more waiter, if one is registered and not yet woken.
    ///
    /// Called after the change being announced was made with a SeqCst RMW. `waiters`
    /// counts registered waiters that no notification has been claimed for: a waker
    /// claims one (decrements) before notifying, so while a woken waiter is on its way,
    /// further changes do not take the event's lock to notify nobody.
    #[inline]
    pub(crate) fn notify_one(&self) {
        if self.has_waiters() && self.claim() {
            // `relaxed`: `has_waiters` already ordered the change we announce before this
            // notification, and the event's own lock orders the rest.
            self.inner
                .event
                .notify(event_listener::IntoNotification::relaxed(
                    event_listener::IntoNotification::additional(1),
                ));
        }
    }

    /// Whether a waiter is registered, ordered after the caller's SeqCst RMW: if the load
    /// misses a waiter's registration (an SC RMW), that registration, and the re-check
    /// the waiter makes after it, come later in the single total order of SeqCst
    /// operations, so the re-check observes our change (the argument in the module docs).
    #[inline]
    fn has_waiters(&self) -> bool {
        load_seqcst(&self.inner.waiters) != 0
    }

    /// Wakes every waiter (disconnection).
    pub(crate) fn notify_all(&self) {
        self.inner.event.notify(usize::MAX);
    }

    /// Claims one registered waiter for a notification; `false` if none is left.
    fn claim(&self) -> bool {
        self.inner
            .waiters
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .is_ok()
    }

    fn register(&self) {
        self.inner.waiters.fetch_add(1, Ordering::SeqCst);
    }

    /// A waiter leaves without having received a notification (its re-check succeeded,
    /// it timed out, or it was cancelled): withdraw its count. A waker may already have
    /// claimed it, with a notification in flight; that notification then lands on the
    /// next listener, or is passed on when this listener is dropped, so the count may
    /// only err high (an extra, harmless notify), never low while a listener waits
    /// unnotified. Hence the decrement saturates at zero.
    fn unregister(&self) {
        self.claim();
    }
}

/// The outcome of one non-blocking attempt inside a wait loop.
pub(crate) enum Attempt<R, S> {
    /// Finished (successfully or with a final error).
    Done(R),
    /// Must wait; the state (e.g. the message to send) is handed back.
    Wait(S),
}

/// Blocks until `attempt` finishes or `deadline` passes: spin briefly, then park on
/// `signal`. On timeout, returns `Err(state)`.
pub(crate) fn block_on<R, S>(
    signal: &Signal,
    mut state: S,
    deadline: Option<Instant>,
    mut attempt: impl FnMut(S) -> Attempt<R, S>,
) -> Result<R, S> {
    let backoff = Backoff::new();
    loop {
        match attempt(state) {
            Attempt::Done(r) => return Ok(r),
            Attempt::Wait(s) => state = s,
        }
        if backoff.is_completed() {
            break;
        }
        backoff.snooze();
    }
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(state);
        }
        listener!(signal.inner.event => waiting);
        signal.register();
        let mut registered = Registered(Some(signal));
        match attempt(state) {
            Attempt::Done(r) => return Ok(r),
            Attempt::Wait(s) => state = s,
        }
        let notified = match deadline {
            None => {
                waiting.wait();
                true
            }
            // On timeout we loop once more: the attempt may still succeed.
            Some(d) => waiting.wait_deadline(d).is_some(),
        };
        if notified {
            // The waker claimed our count.
            registered.0 = None;
        }
    }
}

/// Withdraws a registration that received no notification, however the wait ends.
struct Registered<'a>(Option<&'a Signal>);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(signal) = self.0 {
            signal.unregister();
        }
    }
}

/// The async counterpart of [`block_on`]'s state: at most one listener, allocated once
/// per wait (never per poll). Dropping it before completion cancels the wait; a
/// notification it consumed is passed on to another listener by `event-listener`.
#[derive(Debug, Default)]
pub(crate) struct AsyncWait {
    listener: Option<EventListener>,
}

impl AsyncWait {
    pub(crate) const fn new() -> Self {
        AsyncWait { listener: None }
    }

    /// Whether a listener is registered (an earlier poll returned `Pending`).
    #[inline]
    pub(crate) fn is_waiting(&self) -> bool {
        self.listener.is_some()
    }

    /// One poll: run `attempt` until it finishes or a registered listener is pending.
    pub(crate) fn poll<R, S>(
        &mut self,
        signal: &Signal,
        cx: &mut Context<'_>,
        state: &mut Option<S>,
        mut attempt: impl FnMut(S) -> Attempt<R, S>,
    ) -> Poll<R> {
        loop {
            let s = state.take().expect("future polled after completion");
            match attempt(s) {
                Attempt::Done(r) => {
                    self.cancel(signal);
                    return Poll::Ready(r);
                }
                Attempt::Wait(s) => *state = Some(s),
            }
            match &mut self.listener {
                None => {
                    self.listener = Some(signal.inner.event.listen());
                    signal.register();
                    // Loop: re-check after registering, so no wake-up is lost.
                }
                Some(l) => match Pin::new(l).poll(cx) {
                    Poll::Ready(()) => {
                        // Notified: the waker claimed our count.
                        self.listener = None;
                    }
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    /// Drops the listener, if any (a consumed notification passes on).
    pub(crate) fn cancel(&mut self, signal: &Signal) {
        if self.listener.take().is_some() {
            signal.unregister();
        }
    }
}
