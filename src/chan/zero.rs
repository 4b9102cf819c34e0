//! The rendezvous flavor (`bounded(0)`): direct hand-off from a sender to a receiver.
//!
//! # A short lock, and why
//! A hand-off always pairs one particular sender with one particular receiver and wakes
//! it, so there is no lock-free fast path to protect: the pairing is done under one
//! mutex over two wait queues (waiting senders' offers, waiting receivers). The critical
//! sections only push, pop and move one message; wake-ups are issued after unlocking.
//!
//! # Who completes a hand-off
//! - A receiver that finds an offer takes the message out of the sender's packet, inside
//!   its own call or poll, and wakes the sender, whose send then counts as done.
//! - A sender that finds a *blocked thread* waiting to receive writes the message into
//!   that thread's packet: a blocking receive cannot be cancelled, so the message cannot
//!   be lost. (A receiver that times out re-checks its packet under the lock first.)
//! - A sender never writes into an *async* receiver, whose future could be dropped with
//!   the message in it. It queues its offer and wakes one async receiver, which takes the
//!   offer in its next poll. A woken `RecvFut` dropped before polling passes the wake-up
//!   to another async receiver.
//!
//! So `try_send` succeeds only when a receiver thread is blocked in `recv` at that moment;
//! an async receiver that is merely pending is served by `send`/`send_async` instead.
//!
//! Packets of blocking operations live on the waiting thread's stack (no allocation);
//! async operations box theirs once per wait. A queue entry points at its packet, and
//! the owner removes the entry (under the lock) before the packet goes away.

use core::mem;
use core::ops::Deref;
use core::ptr::NonNull;
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use super::unwind::wake_all;
use crate::error::{SendTimeoutError, TryRecvError, TrySendError};
use crate::sync::{
    AtomicBool, Backoff, Deadline, Mutex, MutexGuard, Ordering, Thread, UnsafeCell, lock, thread,
};

/// A message slot shared by a waiting operation and its counterpart. Only accessed with
/// the channel's lock held.
pub(crate) struct Packet<T> {
    state: UnsafeCell<PacketState<T>>,
    /// Mirrors `state.done` so the waiting owner can spin on it without the lock
    /// before parking. Set under the lock, with `done`.
    ready: AtomicBool,
}

struct PacketState<T> {
    msg: Option<T>,
    /// The hand-off happened: a receiver took the offer, or a sender filled the slot.
    done: bool,
}

impl<T> Packet<T> {
    fn new(msg: Option<T>) -> Self {
        Packet {
            state: UnsafeCell::new(PacketState { msg, done: false }),
            ready: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the packet's state.
    ///
    /// # Safety
    /// The channel's lock is held (by `_guard`), which serializes every access.
    unsafe fn with<R>(
        &self,
        _guard: &MutexGuard<'_, Inner<T>>,
        f: impl FnOnce(&mut PacketState<T>) -> R,
    ) -> R {
        // SAFETY: by the caller's contract the lock is held, so no other access runs.
        self.state.with_mut(|p| f(unsafe { &mut *p }))
    }
}

/// The heap packet of a pending async send, owned by its future's state.
///
/// Held as a raw pointer rather than a `Box`: the queued offer keeps a shared pointer to
/// the packet while the future's state moves around, and moving a `Box` asserts unique
/// ownership, which would invalidate that pointer (miri's Stacked Borrows reports it).
pub(crate) struct OfferBox<T>(NonNull<Packet<T>>);

impl<T> OfferBox<T> {
    fn new(packet: Packet<T>) -> Self {
        OfferBox(NonNull::from(Box::leak(Box::new(packet))))
    }

    /// The pointer the queued offer keeps.
    fn as_ptr(&self) -> *const Packet<T> {
        self.0.as_ptr()
    }
}

impl<T> Deref for OfferBox<T> {
    type Target = Packet<T>;

    fn deref(&self) -> &Packet<T> {
        // SAFETY: the pointer came from `Box::leak` and is freed only in `drop`; only
        // shared references are ever made from it (the state mutates through its cell).
        unsafe { self.0.as_ref() }
    }
}

impl<T> Drop for OfferBox<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` and is dropped once, here. The offer
        // is off the queue by now (completed, or withdrawn by `cancel_send`), so no
        // receiver holds the pointer any more.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: an `OfferBox` owns its packet as a `Box` would, so it may cross threads on
// the same terms as `Box<Packet<T>>`.
unsafe impl<T> Send for OfferBox<T> where Box<Packet<T>>: Send {}
// SAFETY: as above, on the terms of `Box<Packet<T>>`.
unsafe impl<T> Sync for OfferBox<T> where Box<Packet<T>>: Sync {}

/// How to wake a waiting operation.
pub(crate) enum Wake {
    Thread(Thread),
    Task(Waker),
}

impl Wake {
    pub(crate) fn wake(self) {
        match self {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => w.wake(),
        }
    }

    /// Wakes without consuming (the mailboxes' reply slot, whose wake-up stays where
    /// its requester may still look at it).
    pub(crate) fn wake_by_ref(&self) {
        match self {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(w) => w.wake_by_ref(),
        }
    }
}

struct Entry<T> {
    id: u64,
    /// Senders: the offer. Receivers: the slot of a blocked thread; `None` for async.
    packet: Option<*const Packet<T>>,
    wake: Wake,
}

struct Inner<T> {
    senders: VecDeque<Entry<T>>,
    receivers: VecDeque<Entry<T>>,
    disconnected: bool,
    next_id: u64,
}

impl<T> Inner<T> {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn remove(queue: &mut VecDeque<Entry<T>>, id: u64) -> bool {
        match queue.iter().position(|e| e.id == id) {
            Some(i) => {
                queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Pops the first receiver blocked in a thread (it has a packet to fill).
    fn pop_blocked_receiver(&mut self) -> Option<Entry<T>> {
        let i = self.receivers.iter().position(|e| e.packet.is_some())?;
        self.receivers.remove(i)
    }

    /// Pops the first async receiver, to come and take an offer.
    fn pop_async_receiver(&mut self) -> Option<Entry<T>> {
        let i = self.receivers.iter().position(|e| e.packet.is_none())?;
        self.receivers.remove(i)
    }
}

/// A rendezvous channel.
pub(crate) struct Channel<T> {
    inner: Mutex<Inner<T>>,
}

// SAFETY: messages move between threads through packets (`T: Send`); the raw packet
// pointers are only dereferenced under the lock while their owner keeps them alive.
unsafe impl<T: Send> Send for Channel<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Channel<T> {}

/// Fills a blocked receiver's packet and returns its wake-up.
///
/// # Safety
/// `entry` was just popped from `g.receivers` and has a packet, which its owner keeps
/// alive until it sees its entry gone under the lock.
unsafe fn deliver<T>(g: &MutexGuard<'_, Inner<T>>, entry: Entry<T>, msg: T) -> Wake {
    let packet = entry.packet.expect("blocked receivers have packets");
    // SAFETY: by the contract above the packet is alive; the lock is held.
    unsafe {
        (*packet).with(g, |p| {
            p.msg = Some(msg);
            p.done = true;
        });
        (*packet).ready.store(true, Ordering::Release);
    }
    entry.wake
}

/// Takes the message out of a sender's offer and returns its wake-up.
///
/// # Safety
/// `entry` was just popped from `g.senders`; its owner keeps the packet alive until it
/// sees its entry gone under the lock.
unsafe fn take_offer<T>(g: &MutexGuard<'_, Inner<T>>, entry: Entry<T>) -> (T, Wake) {
    let packet = entry.packet.expect("offers have packets");
    // SAFETY: by the contract above the packet is alive; the lock is held.
    let msg = unsafe {
        (*packet).ready.store(true, Ordering::Release);
        (*packet).with(g, |p| {
            p.done = true;
            p.msg.take()
        })
    };
    (msg.expect("an offer holds its message"), entry.wake)
}

/// Waits for `packet`'s hand-off: spins briefly (the counterpart is often just about to
/// arrive), then parks until woken or `deadline`. The caller re-checks under the lock.
fn wait_for<T>(packet: &Packet<T>, deadline: &mut Deadline) {
    let backoff = Backoff::new();
    while !backoff.is_completed() {
        if packet.ready.load(Ordering::Acquire) {
            return;
        }
        backoff.snooze();
    }
    park_until(deadline);
}

type Guard<'a, T> = MutexGuard<'a, Inner<T>>;

/// Completes the hand-off from the first queued offer, if any, waking its sender after
/// unlocking. Without an offer, the guard is handed back.
fn take_first_offer<T>(mut g: Guard<'_, T>) -> Result<T, Guard<'_, T>> {
    let Some(entry) = g.senders.pop_front() else {
        return Err(g);
    };
    // SAFETY: just popped from the senders queue.
    let (msg, wake) = unsafe { take_offer(&g, entry) };
    drop(g);
    wake.wake();
    Ok(msg)
}

/// Hands `msg` to the first receiver blocked in a thread, if any, waking it after
/// unlocking. Without one, the guard and the message are handed back.
#[allow(clippy::type_complexity)]
fn deliver_to_blocked<T>(mut g: Guard<'_, T>, msg: T) -> Result<(), (Guard<'_, T>, T)> {
    let Some(entry) = g.pop_blocked_receiver() else {
        return Err((g, msg));
    };
    // SAFETY: just popped from the receivers queue.
    let wake = unsafe { deliver(&g, entry, msg) };
    drop(g);
    wake.wake();
    Ok(())
}

/// Parks until woken or `deadline` passes.
pub(crate) fn park_until(deadline: &mut Deadline) {
    #[cfg(not(loom))]
    match deadline.at() {
        Some(d) => thread::park_timeout(d.saturating_duration_since(Instant::now())),
        None => thread::park(),
    }
    // Under loom the model's deadline cannot unpark us (a stray unpark would reach a
    // thread blocked elsewhere): a timed wait yields instead, and the caller's loop
    // re-checks the packet and the deadline until one of them ends it.
    #[cfg(loom)]
    match deadline.model() {
        Some(_) => thread::yield_now(),
        None => thread::park(),
    }
}

impl<T> Channel<T> {
    pub(crate) fn new() -> Self {
        Channel {
            inner: Mutex::new(Inner {
                senders: VecDeque::new(),
                receivers: VecDeque::new(),
                disconnected: false,
                next_id: 0,
            }),
        }
    }

    pub(crate) fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let g = lock(&self.inner);
        if g.disconnected {
            return Err(TrySendError::Disconnected(msg));
        }
        deliver_to_blocked(g, msg).map_err(|(_, msg)| TrySendError::Full(msg))
    }

    pub(crate) fn send(
        &self,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let g = lock(&self.inner);
        if g.disconnected {
            return Err(SendTimeoutError::Disconnected(msg));
        }
        let (mut g, msg) = match deliver_to_blocked(g, msg) {
            Ok(()) => return Ok(()),
            Err(back) => back,
        };
        let mut deadline = Deadline::new(deadline);
        if deadline.passed() {
            return Err(SendTimeoutError::Timeout(msg));
        }
        let packet = Packet::new(Some(msg));
        let id = g.id();
        g.senders.push_back(Entry {
            id,
            packet: Some(&packet),
            wake: Wake::Thread(thread::current()),
        });
        let woken = g.pop_async_receiver();
        drop(g);
        if let Some(r) = woken {
            // The queued offer points at `packet`, on this stack frame: a waker that
            // panics must not unwind past it while it is queued. Withdraw the offer
            // first (if a receiver took it meanwhile, the message was delivered), then
            // let the panic go on; an untaken message is dropped with `packet`.
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| r.wake.wake())) {
                Inner::remove(&mut lock(&self.inner).senders, id);
                resume_unwind(panic);
            }
        }
        loop {
            wait_for(&packet, &mut deadline);
            let mut g = lock(&self.inner);
            // SAFETY: the lock is held; `packet` lives on this stack frame.
            let (done, msg) = unsafe {
                packet.with(&g, |p| {
                    if p.done {
                        (true, None)
                    } else if g_needs_exit(&g, &deadline) {
                        (false, p.msg.take())
                    } else {
                        (false, None)
                    }
                })
            };
            if done {
                return Ok(());
            }
            if let Some(msg) = msg {
                Inner::remove(&mut g.senders, id);
                return Err(if g.disconnected {
                    SendTimeoutError::Disconnected(msg)
                } else {
                    SendTimeoutError::Timeout(msg)
                });
            }
        }
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let g = match take_first_offer(lock(&self.inner)) {
            Ok(msg) => return Ok(msg),
            Err(g) => g,
        };
        Err(if g.disconnected {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        })
    }

    /// Blocking receive; `Err(true)` = disconnected, `Err(false)` = timed out.
    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<T, bool> {
        let mut g = match take_first_offer(lock(&self.inner)) {
            Ok(msg) => return Ok(msg),
            Err(g) => g,
        };
        if g.disconnected {
            return Err(true);
        }
        let mut deadline = Deadline::new(deadline);
        if deadline.passed() {
            return Err(false);
        }
        let packet = Packet::new(None);
        let id = g.id();
        g.receivers.push_back(Entry {
            id,
            packet: Some(&packet),
            wake: Wake::Thread(thread::current()),
        });
        drop(g);
        loop {
            wait_for(&packet, &mut deadline);
            let mut g = lock(&self.inner);
            // SAFETY: the lock is held; `packet` lives on this stack frame.
            let msg = unsafe { packet.with(&g, |p| p.msg.take()) };
            if let Some(msg) = msg {
                return Ok(msg);
            }
            if g_needs_exit(&g, &deadline) {
                Inner::remove(&mut g.receivers, id);
                return Err(g.disconnected);
            }
        }
    }

    /// One poll of an async receive. `id` is 0 until the future registers.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>, id: &mut u64) -> Poll<Result<T, ()>> {
        let mut g = lock(&self.inner);
        if !g.senders.is_empty() || g.disconnected {
            // Done either way: withdraw our registration first.
            if *id != 0 {
                Inner::remove(&mut g.receivers, *id);
                *id = 0;
            }
            return Poll::Ready(take_first_offer(g).map_err(|_| ()));
        }
        let waker = cx.waker().clone();
        if let Some(e) = g.receivers.iter_mut().find(|e| *id != 0 && e.id == *id) {
            e.wake = Wake::Task(waker);
            return Poll::Pending;
        }
        *id = g.id();
        let entry = Entry {
            id: *id,
            packet: None,
            wake: Wake::Task(waker),
        };
        g.receivers.push_back(entry);
        Poll::Pending
    }

    /// A pending async receive is dropped: deregister, or pass on a wake-up it got.
    pub(crate) fn cancel_recv(&self, id: u64) {
        if id == 0 {
            return;
        }
        let mut g = lock(&self.inner);
        if !Inner::remove(&mut g.receivers, id) && !g.senders.is_empty() {
            // We were woken to take an offer and will not: wake someone else.
            if let Some(r) = g.pop_async_receiver() {
                drop(g);
                r.wake.wake();
            }
        }
    }

    /// One poll of an async send. `offer` is the boxed packet once the message is queued.
    pub(crate) fn poll_send(
        &self,
        cx: &mut Context<'_>,
        msg: &mut Option<T>,
        offer: &mut Option<(u64, OfferBox<T>)>,
    ) -> Poll<Result<(), T>> {
        let mut g = lock(&self.inner);
        if let Some((id, packet)) = offer {
            // SAFETY: the lock is held; the box is alive while we hold it.
            let (done, back) = unsafe {
                packet.with(&g, |p| {
                    if p.done {
                        (true, None)
                    } else if g.disconnected {
                        (false, p.msg.take())
                    } else {
                        (false, None)
                    }
                })
            };
            if done {
                drop(g);
                *offer = None;
                return Poll::Ready(Ok(()));
            }
            if let Some(m) = back {
                Inner::remove(&mut g.senders, *id);
                drop(g);
                *offer = None;
                return Poll::Ready(Err(m));
            }
            let id = *id;
            if let Some(e) = g.senders.iter_mut().find(|e| e.id == id) {
                e.wake = Wake::Task(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let m = msg.take().expect("SendFut polled after completion");
        if g.disconnected {
            return Poll::Ready(Err(m));
        }
        let (mut g, m) = match deliver_to_blocked(g, m) {
            Ok(()) => return Poll::Ready(Ok(())),
            Err(back) => back,
        };
        // The waker is cloned (user code, which may panic) while the future still holds
        // the message, so such a panic loses nothing.
        *msg = Some(m);
        let waker = cx.waker().clone();
        let packet = OfferBox::new(Packet::new(msg.take()));
        let id = g.id();
        g.senders.push_back(Entry {
            id,
            packet: Some(packet.as_ptr()),
            wake: Wake::Task(waker),
        });
        let woken = g.pop_async_receiver();
        drop(g);
        *offer = Some((id, packet));
        if let Some(r) = woken {
            r.wake.wake();
        }
        Poll::Pending
    }

    /// A pending async send is dropped: withdraw the offer unless it was taken (then it
    /// counts as sent). Returns the boxed packet's message, if withdrawn.
    pub(crate) fn cancel_send(&self, offer: (u64, OfferBox<T>)) -> Option<T> {
        let (id, packet) = offer;
        let mut g = lock(&self.inner);
        Inner::remove(&mut g.senders, id);
        // SAFETY: the lock is held and the entry is gone; the packet is ours.
        let msg = unsafe { packet.with(&g, |p| p.msg.take()) };
        drop(g);
        msg
    }

    /// The waits still queued, senders' and receivers': zero once no wait is pending.
    /// For tests only.
    #[cfg(any(test, loom))]
    pub(crate) fn queued_waits(&self) -> [usize; 2] {
        let g = lock(&self.inner);
        [g.senders.len(), g.receivers.len()]
    }

    pub(crate) fn is_disconnected(&self) -> bool {
        lock(&self.inner).disconnected
    }

    /// Disconnects (either side) and wakes everyone waiting.
    pub(crate) fn disconnect(&self) {
        let mut g = lock(&self.inner);
        if g.disconnected {
            return;
        }
        g.disconnected = true;
        // Tasks' wakers are taken, not cloned, so no user code runs under the lock. The
        // no-op left in an entry's place is never used: the side that disconnected has
        // no operation in flight (each holds a handle), so no hand-off will wake a
        // waiter of the other side again, and each of those re-checks `disconnected`
        // under the lock once woken here.
        let Inner {
            senders, receivers, ..
        } = &mut *g;
        let wakes: Vec<Wake> = senders
            .iter_mut()
            .chain(receivers.iter_mut())
            .map(|e| match &mut e.wake {
                Wake::Thread(t) => Wake::Thread(t.clone()),
                Wake::Task(w) => Wake::Task(mem::replace(w, Waker::noop().clone())),
            })
            .collect();
        // Async receivers hold no packet and re-register if polled again: drop them.
        g.receivers.retain(|e| e.packet.is_some());
        drop(g);
        // Every waiter, even if a waker panics (see `chan::unwind`).
        wake_all(wakes, Wake::wake);
    }
}

/// Whether a waiting operation must give up: disconnected, or its deadline passed.
fn g_needs_exit<T>(g: &MutexGuard<'_, Inner<T>>, deadline: &Deadline) -> bool {
    g.disconnected || deadline.passed()
}
