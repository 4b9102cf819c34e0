//! Request/reply: a one-shot reply slot per request, shared by the requester and the
//! request's [`Reply`] capability, so a reply goes straight to its requester (no shared
//! reply queue, nothing to correlate or scan).
//!
//! # The slot
//! One allocation per request: the slot is shared by the requester and the envelope,
//! which carries it type-erased ([`Capability`]) until the replier takes it as a
//! [`Reply`]; dropping the capability, erased or not, marks the replier gone. No lock:
//! one state word and two cells, the reply value and the requester's wake-up, each
//! owned by one side at a time as the word says (the protocol of a one-shot channel):
//! - `COMPLETE`: the replier is done (it replied, or its `Reply` was dropped
//!   unanswered: with the envelope, with the mailbox, or by a replier that panicked).
//!   Set once, by the replier, with an AcqRel RMW.
//! - `WAKE_SET`: the requester's wake-up is in its cell.
//! - `CLOSED`: the requester is gone (it timed out, or its future was dropped). Set
//!   once, by the requester, with an AcqRel RMW.
//!
//! **The value** belongs to the replier until it sets `COMPLETE`: it writes the value,
//! then sets the bit. If the requester had closed first (the RMW returns `CLOSED`), the
//! requester never reads the value, and the replier takes it back (`Err(value)`).
//! Otherwise it belongs to the requester from then on: a requester that sees `COMPLETE`
//! (Acquire, after the replier's Release) takes it, or finds none (`Unanswered`); one
//! that closes after it (its RMW returns `COMPLETE`) takes and drops it, or, timing out,
//! returns it (the reply won the race).
//!
//! **The wake-up** is written by the requester only while `WAKE_SET` is clear: it
//! writes its wake-up, then sets the bit; to replace it (an async wait polled with
//! another waker) or to drop it (leaving), it clears the bit first. The replier only
//! reads the cell, and only if its `COMPLETE` RMW returned `WAKE_SET`: it wakes the
//! wake-up by reference, and a requester whose clearing RMW returns `COMPLETE` leaves
//! the cell alone. A requester may read the cell while the bit is set (to see whether
//! the stored waker still wakes its task): reads only, on both sides.
//!
//! # The no-lost-wake-up argument
//! The requester's `WAKE_SET` RMW and the replier's `COMPLETE` RMW are ordered on the
//! word: if `WAKE_SET` comes first, the replier sees it and wakes the requester; if
//! `COMPLETE` comes first, the requester's RMW returns it and the requester takes the
//! outcome at once instead of sleeping. (An `unpark` before the `park` is remembered,
//! and a `Waker` may be woken before the task sleeps.)
//!
//! # Nothing hangs, nothing leaks
//! A `Reply` is consumed by [`Reply::reply`] or dropped; either way the slot records the
//! replier gone and wakes the requester, who then has the value or
//! [`RequestError::Unanswered`]. A requester that leaves first marks itself gone, so a
//! late reply is handed back to the replier (`Err(value)`) instead of being stored, and a
//! value that raced in just before is dropped by the leaving requester. Whatever is left
//! in the cells is dropped with the slot.

use core::any::Any;
#[cfg(not(loom))]
use core::any::TypeId;
use core::fmt;
use core::task::{Context, Poll};
use std::time::Instant;

use crate::chan::zero::{Wake, park_until};
use crate::sync::{Arc, AtomicUsize, Deadline, Ordering, UnsafeCell, thread};

/// The state word's bits (see the module docs).
const COMPLETE: usize = 1;
const WAKE_SET: usize = 2;
const CLOSED: usize = 4;

/// A request's reply slot (see the module docs).
pub(crate) struct Slot<R> {
    state: AtomicUsize,
    value: UnsafeCell<Option<R>>,
    wake: UnsafeCell<Option<Wake>>,
}

// SAFETY: the slot hands an `R` from the replier's thread to the requester's (so `R:
// Send`), and a `Wake` (`Send + Sync`) the other way; each cell is accessed by one side
// at a time, as the state word says (module docs), so sharing `&Slot` gives no
// concurrent access to an `R`: `Sync` needs `R: Send` only, as for a mutex.
unsafe impl<R: Send> Send for Slot<R> {}
// SAFETY: see `Send` above.
unsafe impl<R: Send> Sync for Slot<R> {}

impl<R> Slot<R> {
    fn new() -> Self {
        Slot {
            state: AtomicUsize::new(0),
            value: UnsafeCell::new(None),
            wake: UnsafeCell::new(None),
        }
    }

    /// The replier is done: `value` is its reply (`None`: it gives up). Hands the value
    /// back when the requester is gone.
    fn complete(&self, value: Option<R>) -> Result<(), R> {
        let answering = value.is_some();
        if let Some(v) = value {
            if self.state.load(Ordering::Acquire) & CLOSED != 0 {
                return Err(v);
            }
            // SAFETY: the value cell is the replier's until it sets `COMPLETE` (module
            // docs), and only the one `Reply` (or capability) completes a slot.
            self.value.with_mut(|p| unsafe { *p = Some(v) });
        }
        // Release: the value (and the cell's emptiness) to the requester that sees the
        // bit; Acquire: the requester's wake-up, written before its `WAKE_SET`.
        let prev = self.state.fetch_or(COMPLETE, Ordering::AcqRel);
        if prev & CLOSED != 0 {
            if !answering {
                return Ok(());
            }
            // SAFETY: the requester closed before `COMPLETE`: it never reads the value
            // (module docs), which stays the replier's.
            let v = self.value.with_mut(|p| unsafe { (*p).take() });
            return v.map_or(Ok(()), Err);
        }
        if prev & WAKE_SET != 0 {
            // SAFETY: `WAKE_SET` was set when `COMPLETE` went in: the requester writes
            // the cell no more (module docs); reads only, here and there.
            self.wake
                .with(|p| unsafe { (*p).as_ref().map(Wake::wake_by_ref) });
        }
        Ok(())
    }

    /// The outcome, for the requester once it has seen `COMPLETE` set before any
    /// `CLOSED` of its own.
    fn outcome(&self) -> Result<R, NoReply> {
        // SAFETY: the requester (one `Waiting`) saw `COMPLETE` (Acquire, after the
        // replier's Release) set before any `CLOSED`: the replier saw no `CLOSED` in its
        // RMW and never touches the value again, which is the requester's (module docs).
        self.value
            .with_mut(|p| unsafe { (*p).take() })
            .ok_or(NoReply::Unanswered)
    }
}

/// The right to answer one request, carried by its [`Envelope`](super::Envelope) and
/// taken with [`Envelope::take_reply`](super::Envelope::take_reply). Dropping it without
/// replying fails the request with [`RequestError::Unanswered`] at once.
///
/// ```
/// use std::thread;
/// use conduit::mailbox::PostOffice;
///
/// let po = PostOffice::new();
/// let server = po.open::<u32>("square").unwrap();
/// let client = po.open::<u32>("square").unwrap();
/// server.try_recv().ok(); // attach the server as a receiver
/// let t = thread::spawn(move || {
///     let mut env = server.recv().unwrap();
///     let reply = env.take_reply::<u64>().unwrap();
///     let n = *env.body() as u64;
///     reply.reply(n * n).unwrap();
/// });
/// assert_eq!(client.request::<u64>(12), Ok(144));
/// t.join().unwrap();
/// ```
pub struct Reply<R> {
    slot: Option<Arc<Slot<R>>>,
    /// A shared-memory mailbox's request (`shm::Mailbox`): the reply goes into the
    /// segment instead.
    remote: Option<Box<dyn Remote<R>>>,
}

/// The replier's end of a request made through a shared-memory mailbox
/// (`shm::Mailbox::request`); its contract is [`Reply`]'s. Dropped without a reply
/// (with its `Reply`, or with the envelope before the reply capability was taken), it
/// gives the request up.
#[cfg_attr(any(loom, not(unix)), allow(dead_code))]
pub(crate) trait Remote<R>: Send + Sync {
    /// Answers; `Err(value)` when the requester no longer waits.
    fn reply(&mut self, value: R) -> Result<(), R>;
    /// Whether the requester no longer waits.
    fn is_abandoned(&self) -> bool;
}

/// A [`Remote`] with its reply type erased, as an envelope carries it: one allocation
/// from the receive to the reply, since [`Capability::take`] turns the box into a
/// [`Reply`]'s `Box<dyn Remote<R>>` by coercion.
#[cfg_attr(any(loom, not(unix)), allow(dead_code))]
pub(crate) trait ErasedRemote: Send + Sync {
    /// Moves this end into `out` if `out` is an `Option<Box<dyn Remote<R>>>` of the
    /// reply type `R` it answers with; otherwise hands it back.
    fn typed(self: Box<Self>, out: &mut dyn Any) -> Result<(), Box<dyn ErasedRemote>>;
}

/// The requester's end of a reply slot.
pub(crate) struct Waiting<R> {
    slot: Arc<Slot<R>>,
    /// The outcome was taken (the replier was gone by then): nothing left to settle
    /// when this end is dropped, and no lock to take for it.
    settled: bool,
}

/// A fresh slot: the capability for the envelope, the waiting end for the requester.
pub(crate) fn pair<R: Send + 'static>() -> (Capability, Waiting<R>) {
    let slot = Arc::new(Slot::new());
    #[cfg(not(loom))]
    let cap = {
        let erased: Arc<dyn Erased> = slot.clone();
        Capability::Local(LocalCap(Some(erased)))
    };
    // loom's `Arc` does not coerce to a trait object: under loom the capability is a
    // boxed `Reply`, as for shared-memory requests (the slot's protocol is the same).
    #[cfg(loom)]
    let cap = Capability::Boxed(Box::new(Reply {
        slot: Some(slot.clone()),
        remote: None,
    }));
    (
        cap,
        Waiting {
            slot,
            settled: false,
        },
    )
}

/// A request's reply capability as an envelope carries it, its reply type erased.
pub(crate) enum Capability {
    /// In process: the request's slot itself.
    #[cfg(not(loom))]
    Local(LocalCap),
    /// A shared-memory mailbox's request.
    #[cfg_attr(any(loom, not(unix)), allow(dead_code))]
    Remote(Box<dyn ErasedRemote>),
    /// Under loom, an in-process request's boxed [`Reply`].
    #[cfg(loom)]
    Boxed(Box<dyn Any + Send + Sync>),
}

/// An in-process capability: the slot, with its reply type erased; dropped untaken, it
/// marks the replier gone (as a dropped [`Reply`] does).
#[cfg(not(loom))]
pub(crate) struct LocalCap(Option<Arc<dyn Erased>>);

/// A reply slot with its reply type erased.
///
/// # Safety
/// `slot_type` must return the `TypeId` of the implementing type itself:
/// [`Capability::take`] casts the erased `Arc` back to the type it names.
#[cfg(not(loom))]
pub(crate) unsafe trait Erased: Send + Sync {
    /// The slot's concrete type, `Slot<R>`: one virtual call tells
    /// [`Capability::take`] whether the requester expects an `R`.
    fn slot_type(&self) -> TypeId;
    /// The capability was dropped without a reply.
    fn give_up(&self);
}

// SAFETY: `slot_type` returns `Slot<R>`'s own `TypeId`.
#[cfg(not(loom))]
unsafe impl<R: Send + 'static> Erased for Slot<R> {
    fn slot_type(&self) -> TypeId {
        TypeId::of::<Slot<R>>()
    }
    fn give_up(&self) {
        give_up(self);
    }
}

#[cfg(not(loom))]
impl Drop for LocalCap {
    #[inline]
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.give_up();
        }
    }
}

impl Capability {
    /// The capability as a `Reply<R>` if the requester expects an `R`; otherwise it is
    /// handed back.
    #[inline]
    pub(crate) fn take<R: Send + 'static>(self) -> Result<Reply<R>, Self> {
        match self {
            #[cfg(not(loom))]
            Capability::Local(mut cap) => {
                let is_r = cap
                    .0
                    .as_ref()
                    .is_some_and(|slot| slot.slot_type() == TypeId::of::<Slot<R>>());
                if !is_r {
                    return Err(Capability::Local(cap));
                }
                let erased = cap.0.take().expect("checked above");
                // SAFETY: the pointer comes from `Arc::into_raw` of an `Arc<dyn Erased>`
                // whose value is a `Slot<R>` (its `slot_type` says so, which the
                // `Erased` contract makes the value's own type): that `Arc` was made as
                // an `Arc<Slot<R>>` in `pair` and coerced, so the data pointer, cast
                // back, is one `Arc::from_raw` accepts for `Slot<R>`, and ownership of
                // the one reference moves over unchanged.
                let slot = unsafe { Arc::from_raw(Arc::into_raw(erased).cast::<Slot<R>>()) };
                Ok(Reply {
                    slot: Some(slot),
                    remote: None,
                })
            }
            Capability::Remote(erased) => {
                let mut out: Option<Box<dyn Remote<R>>> = None;
                match erased.typed(&mut out) {
                    Ok(()) => Ok(Reply {
                        slot: None,
                        remote: out,
                    }),
                    Err(erased) => Err(Capability::Remote(erased)),
                }
            }
            #[cfg(loom)]
            Capability::Boxed(b) => match b.downcast::<Reply<R>>() {
                Ok(r) => Ok(*r),
                Err(b) => Err(Capability::Boxed(b)),
            },
        }
    }
}

/// The replier is gone without answering: record it and wake the requester.
fn give_up<R>(slot: &Slot<R>) {
    let _ = slot.complete(None);
}

impl<R> Reply<R> {
    /// Answers the request. `Err(value)` hands the value back when the requester is no
    /// longer waiting (it timed out or was cancelled).
    ///
    /// ```
    /// # use conduit::mailbox::PostOffice;
    /// # let po = PostOffice::new();
    /// # let mb = po.open::<&str>("echo").unwrap();
    /// # mb.try_recv().ok();
    /// # let t = { let mb = mb.clone(); std::thread::spawn(move || {
    /// let mut env = mb.recv().unwrap();
    /// let reply = env.take_reply::<String>().unwrap();
    /// reply.reply(env.body().to_uppercase()).unwrap();
    /// # })};
    /// # assert_eq!(mb.request::<String>("hi").unwrap(), "HI");
    /// # t.join().unwrap();
    /// ```
    pub fn reply(mut self, value: R) -> Result<(), R> {
        if let Some(mut remote) = self.remote.take() {
            return remote.reply(value);
        }
        let slot = self.slot.take().expect("a Reply holds its slot until used");
        slot.complete(Some(value))
    }

    /// Whether the requester has stopped waiting (a reply would be handed back).
    ///
    /// ```
    /// # use conduit::mailbox::PostOffice;
    /// # use std::time::Duration;
    /// let po = PostOffice::new();
    /// let mb = po.open::<u8>("late").unwrap();
    /// mb.try_recv().ok();
    /// // Nobody answers within the timeout.
    /// assert!(mb.request_timeout::<u8>(1, Duration::from_millis(1)).is_err());
    /// let mut env = mb.try_recv().unwrap();
    /// let reply = env.take_reply::<u8>().unwrap();
    /// assert!(reply.is_abandoned());
    /// assert_eq!(reply.reply(2), Err(2));
    /// ```
    pub fn is_abandoned(&self) -> bool {
        if let Some(remote) = &self.remote {
            return remote.is_abandoned();
        }
        self.slot
            .as_ref()
            .is_some_and(|slot| slot.state.load(Ordering::Acquire) & CLOSED != 0)
    }
}

impl<R> Drop for Reply<R> {
    #[inline]
    fn drop(&mut self) {
        // A remote end gives its request up when dropped (`Remote`).
        drop(self.remote.take());
        if let Some(slot) = self.slot.take() {
            give_up(&slot);
        }
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("abandoned", &self.is_abandoned())
            .finish()
    }
}

/// Why the requester stopped waiting for its reply.
pub(crate) enum NoReply {
    Unanswered,
    Timeout,
}

impl<R> Waiting<R> {
    /// One look at the slot: the outcome if the replier is done; otherwise makes sure a
    /// wake-up is stored (`wake` makes one; `refresh` says whether a stored one must be
    /// replaced, because it would wake someone else) and looks once more.
    #[inline]
    fn check(
        &mut self,
        wake: impl FnOnce() -> Wake,
        refresh: impl FnOnce(&Wake) -> bool,
    ) -> Option<Result<R, NoReply>> {
        let slot = &*self.slot;
        let state = slot.state.load(Ordering::Acquire);
        if state & COMPLETE != 0 {
            return Some(self.settle());
        }
        if state & WAKE_SET != 0 {
            // SAFETY: the bit is set, so nobody writes the cell (module docs): a read.
            let stale = slot
                .wake
                .with(|p| unsafe { (*p).as_ref().is_none_or(refresh) });
            if !stale {
                // The stored wake-up will do: the replier wakes it (the bit is set).
                return None;
            }
            // Take the cell back to replace it.
            if slot.state.fetch_and(!WAKE_SET, Ordering::AcqRel) & COMPLETE != 0 {
                // The replier saw the bit (it may be reading the cell): leave it.
                return Some(self.settle());
            }
        }
        // SAFETY: `WAKE_SET` is clear and no `COMPLETE` saw it set: the cell is ours.
        let old = slot.wake.with_mut(|p| unsafe { (*p).replace(wake()) });
        drop(old); // a waker's drop is executor code; nothing is locked
        // Release: the wake-up to the replier whose `COMPLETE` RMW sees the bit.
        if slot.state.fetch_or(WAKE_SET, Ordering::AcqRel) & COMPLETE != 0 {
            // The replier finished without seeing the bit: it will not wake us, and the
            // outcome is there (the wake-up stays in its cell until the slot goes).
            return Some(self.settle());
        }
        None
    }

    /// Takes the outcome of a completed slot; nothing is left to settle at the drop.
    fn settle(&mut self) -> Result<R, NoReply> {
        self.settled = true;
        self.slot.outcome()
    }

    /// Blocks until the reply comes, the replier goes, or `deadline` passes.
    pub(crate) fn wait(&mut self, deadline: Option<Instant>) -> Result<R, NoReply> {
        let mut deadline = Deadline::new(deadline);
        loop {
            // One thread waits: a stored wake-up is already this thread's.
            if let Some(out) = self.check(|| Wake::Thread(thread::current()), |_| false) {
                return out;
            }
            if deadline.passed() {
                return self.abandon();
            }
            park_until(&mut deadline);
        }
    }

    /// Stops waiting: a reply that races in from now on is handed back to its replier.
    /// A value already stored is still taken (the reply won the race).
    pub(crate) fn abandon(&mut self) -> Result<R, NoReply> {
        self.close().ok_or(NoReply::Timeout)
    }

    /// Marks the requester gone; returns a value that was stored before. The stored
    /// wake-up, if the cell is still ours, is dropped here.
    fn close(&mut self) -> Option<R> {
        self.settled = true;
        let slot = &*self.slot;
        let prev = slot.state.fetch_and(!WAKE_SET, Ordering::AcqRel);
        if prev & COMPLETE != 0 {
            return slot.outcome().ok();
        }
        if prev & WAKE_SET != 0 {
            // SAFETY: we cleared `WAKE_SET` before any `COMPLETE`: the cell is ours.
            drop(slot.wake.with_mut(|p| unsafe { (*p).take() }));
        }
        let prev = slot.state.fetch_or(CLOSED, Ordering::AcqRel);
        if prev & COMPLETE != 0 {
            // Completed between our two RMWs: it saw neither bit, and left the value.
            return slot.outcome().ok();
        }
        None
    }

    /// One poll of an async wait: one look, which stores a clone of the waker when
    /// there is nothing yet (kept across polls while it would wake the same task).
    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<R, NoReply>> {
        let waker = cx.waker();
        let refresh = |w: &Wake| match w {
            Wake::Task(old) => !old.will_wake(waker),
            Wake::Thread(_) => true,
        };
        match self.check(|| Wake::Task(waker.clone()), refresh) {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}

impl<R> Drop for Waiting<R> {
    fn drop(&mut self) {
        if !self.settled {
            drop(self.close());
        }
    }
}

/// An error from a request ([`Mailbox::request`](super::Mailbox::request) and its
/// timed and async forms). `Debug` hides the message.
///
/// ```
/// use conduit::mailbox::{PostOffice, RequestError};
/// let po = PostOffice::new();
/// let mb = po.open::<i32>("nobody").unwrap();
/// // No handle of this mailbox has ever received: nobody would answer.
/// assert_eq!(mb.request::<i32>(1), Err(RequestError::NoResponders(1)));
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum RequestError<T> {
    /// No receiver is attached to the mailbox; the request was not sent (handed back).
    NoResponders(T),
    /// The mailbox is closed; the request was not sent (handed back).
    Disconnected(T),
    /// The deadline passed. `Some(msg)`: the mailbox stayed full and the request was
    /// not sent; `None`: it was sent and no reply came in time (a later reply is handed
    /// back to its replier).
    Timeout(Option<T>),
    /// The request was received but its reply capability was dropped without an answer
    /// (dropped envelope, closed-and-dropped mailbox, panicking replier, or every
    /// receiver detached while it was queued).
    Unanswered,
}

impl<T> RequestError<T> {
    /// The request's message, when it was not sent.
    ///
    /// ```
    /// # use conduit::mailbox::{PostOffice, RequestError};
    /// # let mb = PostOffice::new().open::<i32>("x").unwrap();
    /// assert_eq!(mb.request::<()>(7).unwrap_err().into_inner(), Some(7));
    /// ```
    pub fn into_inner(self) -> Option<T> {
        match self {
            RequestError::NoResponders(m) | RequestError::Disconnected(m) => Some(m),
            RequestError::Timeout(m) => m,
            RequestError::Unanswered => None,
        }
    }

    pub(crate) fn from_no_reply(e: NoReply) -> Self {
        match e {
            NoReply::Unanswered => RequestError::Unanswered,
            NoReply::Timeout => RequestError::Timeout(None),
        }
    }
}

impl<T> fmt::Debug for RequestError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NoResponders(_) => f.write_str("NoResponders(..)"),
            RequestError::Disconnected(_) => f.write_str("Disconnected(..)"),
            RequestError::Timeout(Some(_)) => f.write_str("Timeout(Some(..))"),
            RequestError::Timeout(None) => f.write_str("Timeout(None)"),
            RequestError::Unanswered => f.write_str("Unanswered"),
        }
    }
}

impl<T> fmt::Display for RequestError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::NoResponders(_) => "no receiver attached to the mailbox",
            RequestError::Disconnected(_) => "sending on a closed mailbox",
            RequestError::Timeout(Some(_)) => "timed out sending a request",
            RequestError::Timeout(None) => "timed out waiting for a reply",
            RequestError::Unanswered => "the request was dropped without a reply",
        })
    }
}

impl<T> std::error::Error for RequestError<T> {}
