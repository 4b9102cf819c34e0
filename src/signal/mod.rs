//! Signal-style notifications: numbered signals that coalesce or queue, raised from any
//! thread and delivered to a [`Target`], with mask, ignore and catch as in POSIX.
//!
//! ```
//! use conduit::signal::{Signal, Target};
//!
//! let target = Target::new();
//! let raiser = target.raiser();
//! let hup = Signal::new(1).unwrap();
//! for _ in 0..3 {
//!     raiser.raise(hup).unwrap();
//! }
//! let info = target.wait();
//! assert_eq!((info.signal(), info.count()), (hup, 3)); // three raises, one delivery
//! ```
//!
//! # The model
//!
//! **Kinds.** A target has 64 numbers. *Standard* numbers `1..=31` coalesce like POSIX
//! standard signals: raises made while the number is pending make one delivery, and
//! [`SigInfo::count`] says how many raises it absorbed (so a flood loses no information
//! about its size, like an `eventfd` counter). *Queued* numbers `32..=64` queue every
//! raise with a `u64` payload ([`Raiser::raise_with`]) like realtime signals, up to
//! [`QUEUE_DEPTH`] entries per number ([`Target::with_depth`] picks another depth); a
//! raise beyond it fails with [`RaiseError::Full`], never a silent drop.
//!
//! **Dispositions** ([`Target::set_disposition`]), per number:
//! - [`Disposition::Deliver`] (the default): the signal stays pending until a wait takes it;
//! - [`Disposition::Ignore`]: raises are discarded when they are made and counted
//!   ([`Target::ignored`]); setting it discards what is pending (counted too);
//! - [`Disposition::catch`]: each delivery runs the handler, on the thread of a wait or
//!   of [`Target::dispatch`], never inside an OS signal handler, with the number held
//!   back (as if masked) while the handler runs, so one number's handler never runs
//!   twice at once.
//!
//! **Mask** ([`Target::mask`], [`Target::unmask`]): a masked number stays pending (its
//! raises still coalesce or queue) and is delivered once unmasked.
//! [`Target::unmask_and_wait`] waits as if the given numbers were unmasked, like
//! `sigsuspend`, with no window between unmasking and waiting.
//!
//! **Ordering.** Among the pending numbers a wait may take, the lowest is delivered
//! first; the entries of one queued number come in raise order. A wait runs the handler
//! of every caught number it takes and goes on; it returns the first delivery that is
//! not caught. `wait` and its forms consider every number; [`Target::wait_for`] and its
//! forms only those in a [`SigSet`] (others stay pending).
//!
//! **Origin.** Each delivery carries the raiser's [`pid`](SigInfo::pid) (for an
//! in-process target, this process) and [`raiser_id`](SigInfo::raiser_id): every
//! [`Target::raiser`] call makes a raiser with a new id, shared by its clones. A
//! coalesced delivery carries the origin of one of the raises it absorbed (the latest
//! one recorded before it was taken).
//!
//! **Lifetime.** The [`Target`] is the owner (not `Clone`); raisers keep its memory
//! alive. Once the target is dropped, raises fail with [`RaiseError::Disconnected`], like
//! `kill` with `ESRCH`. Waits never fail: a target whose raisers are all gone just
//! waits (a timeout or a raiser kept by the target's owner ends such a wait).
//!
//! **Across processes** (64-bit Unix): [`crate::shm::signal`] has the same target and
//! raiser over a named shared-memory segment, with this module's types and the same
//! owner-side code (dispositions, handlers, masks and waits are written once, over
//! where the words live and how waits sleep).
//!
//! **From OS signals** (Unix): [`forward_os`] turns deliveries of a real signal
//! (`SIGINT`, `SIGTERM`, `SIGHUP`, `SIGUSR1`, realtime signals, …) into raises on a
//! target. The OS handler only bumps a per-signal counter and wakes a forwarder thread,
//! so handlers run by the target are never in an async-signal context, and a flood of
//! one OS signal never hides another. Dropping the returned [`ForwardGuard`] restores
//! the disposition that was there before (see [`forward_os`] for exactly what that
//! means next to other users of `signal-hook-registry`).
//!
//! # Costs and limits
//!
//! - A raise is a few atomic operations on the target's words: a load of the `closed`
//!   and `ignore` words, an add (standard) or a ring slot claim and commit (queued), a
//!   `fetch_or` of the pending bit, and three loads (the blocking waiters' counts and the
//!   async waits' mark). It never blocks, never allocates and makes no system call when
//!   nobody sleeps in a wait; when someone does, it wakes every sleeping waiter of the
//!   target (waits may be for different sets, so one woken waiter would not do), which
//!   is one `event-listener` notification for blocking waits and, for async waits, one
//!   CAS to take them all out of their set plus one waker each.
//! - An async wait that must sleep registers with one CAS and a clone of its waker;
//!   woken, it knows so from one load. Between two tasks on tokio's multi-thread
//!   runtime a raise-to-wake round trip costs about what two `tokio::sync::Notify` do
//!   (0.79–0.93× in the bench here, `benches/README.md`).
//! - A queued raise that finds a taker mid-read in the slot it needs spins until that
//!   taker frees it (a few instructions); standard raises never spin.
//! - Memory: about 3 KiB of words and ring headers plus, per queued number, `depth`
//!   slots of 24 bytes (≈ 25 KiB more at the default depth), allocated once when the
//!   target is made; nothing is allocated afterwards.
//! - Counts are `u64` and wrap only after 2⁶⁴ raises.
//!
//! # The no-lost-wake-up argument
//!
//! Blocking waits reuse the channels' wait queue (`chan::signal`; its module docs give
//! the argument for one change and one waiter); async waits register in a set of their
//! own that a change wakes all at once (`waiters`, with its own statement of the same
//! argument). Here the changes that can make a sleeping wait's attempt succeed are: a
//! raise (the SeqCst `fetch_or` of the pending bit), an unmask (a SeqCst `fetch_and` of
//! `mask`), the end of a handler (a SeqCst `fetch_and` of `running`), and a queued
//! taker setting a bit again (SeqCst `fetch_or`). Each change is followed by SeqCst
//! loads of the blocking waiters' count and the async set's mark and, for each kind
//! that has waits, a wake-up of *every* registered wait (`notify_waiting`,
//! `AsyncWaiters::wake_all`). A wait registers and counts or marks itself (SeqCst RMW),
//! then re-checks by loading `pending`, `mask` and `running` with SeqCst loads. In the
//! single total order of SeqCst operations, either the count or mark precedes the
//! changer's load (the wait is seen, and woken with the others, having registered no
//! later than its RMW), or the changer's RMW precedes the re-check's loads (the re-check
//! sees the change). Waking every wait matters here: a single wake-up could land on a
//! wait for another set, which would sleep again.
//!
//! The state itself (words, counts, queued rings, take and raise) is described in the
//! `state` module, written generically over its storage so that a shared-memory target
//! can reuse it.

mod owner;
pub(crate) mod state;
mod waiters;

#[cfg(all(unix, not(loom)))]
mod os;
#[cfg(all(unix, not(loom)))]
pub use os::{ForwardGuard, ForwardTo, forward_os};

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::chan::signal::{Attempt, Signal as WaitQueue, block_on};
use crate::sync::{Arc, AtomicU64, Ordering};
pub(crate) use owner::{Backend, Owner, Want};
use state::{FIRST_QUEUED, Heap, QueueLane, RaiseFail, SIGNALS, State, Taken, bit};
use waiters::{AsyncWait, AsyncWaiters};

/// How many entries each queued number holds by default before a raise fails with
/// [`RaiseError::Full`].
///
/// ```
/// use conduit::signal::{QUEUE_DEPTH, RaiseError, Signal, Target};
///
/// let target = Target::new();
/// let raiser = target.raiser();
/// let rt = Signal::new(40).unwrap();
/// for i in 0..QUEUE_DEPTH as u64 {
///     raiser.raise_with(rt, i).unwrap();
/// }
/// assert_eq!(raiser.raise_with(rt, 99), Err(RaiseError::Full));
/// ```
pub const QUEUE_DEPTH: usize = 32;

/// The most entries [`Target::with_depth`] accepts per queued number.
///
/// ```
/// assert!(conduit::signal::MAX_QUEUE_DEPTH >= conduit::signal::QUEUE_DEPTH);
/// ```
pub const MAX_QUEUE_DEPTH: usize = 1 << 16;

/// A signal number, `1..=64`: `1..=31` standard (coalescing), `32..=64` queued.
///
/// ```
/// use conduit::signal::Signal;
///
/// let term = Signal::new(15).unwrap();
/// assert_eq!(term.number(), 15);
/// assert!(!term.is_queued());
/// assert!(Signal::new(33).unwrap().is_queued());
/// assert!(Signal::new(0).is_none() && Signal::new(65).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signal(u8);

impl Signal {
    /// The signal numbered `n`, if `n` is in `1..=64`.
    ///
    /// ```
    /// assert!(conduit::signal::Signal::new(64).is_some());
    /// ```
    pub const fn new(n: u8) -> Option<Signal> {
        if n >= 1 && n <= SIGNALS {
            Some(Signal(n))
        } else {
            None
        }
    }

    /// The number, `1..=64`.
    ///
    /// ```
    /// assert_eq!(conduit::signal::Signal::new(2).unwrap().number(), 2);
    /// ```
    pub const fn number(self) -> u8 {
        self.0
    }

    /// Whether raises queue with a payload (`32..=64`) rather than coalesce (`1..=31`).
    ///
    /// ```
    /// use conduit::signal::Signal;
    /// assert!(!Signal::new(31).unwrap().is_queued());
    /// assert!(Signal::new(32).unwrap().is_queued());
    /// ```
    pub const fn is_queued(self) -> bool {
        self.0 >= FIRST_QUEUED
    }

    const fn bit(self) -> u64 {
        bit(self.0)
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signal({})", self.0)
    }
}

/// A set of signal numbers (a 64-bit mask, like `sigset_t`).
///
/// ```
/// use conduit::signal::{SigSet, Signal};
///
/// let a = Signal::new(1).unwrap();
/// let b = Signal::new(40).unwrap();
/// let mut set: SigSet = [a].into_iter().collect();
/// set.insert(b);
/// assert!(set.contains(a) && set.contains(b));
/// set.remove(a);
/// assert!(!set.contains(a));
/// assert!(SigSet::all().contains(a) && !SigSet::empty().contains(a));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SigSet(u64);

impl SigSet {
    /// The empty set.
    ///
    /// ```
    /// assert_eq!(conduit::signal::SigSet::empty(), Default::default());
    /// ```
    pub const fn empty() -> SigSet {
        SigSet(0)
    }

    /// Every number, `1..=64`.
    ///
    /// ```
    /// use conduit::signal::{SigSet, Signal};
    /// assert!(SigSet::all().contains(Signal::new(64).unwrap()));
    /// ```
    pub const fn all() -> SigSet {
        SigSet(u64::MAX)
    }

    /// Adds `sig`.
    ///
    /// ```
    /// use conduit::signal::{SigSet, Signal};
    /// let mut set = SigSet::empty();
    /// set.insert(Signal::new(3).unwrap());
    /// assert!(set.contains(Signal::new(3).unwrap()));
    /// ```
    pub fn insert(&mut self, sig: Signal) {
        self.0 |= sig.bit();
    }

    /// Removes `sig`.
    ///
    /// ```
    /// use conduit::signal::{SigSet, Signal};
    /// let mut set = SigSet::all();
    /// set.remove(Signal::new(3).unwrap());
    /// assert!(!set.contains(Signal::new(3).unwrap()));
    /// ```
    pub fn remove(&mut self, sig: Signal) {
        self.0 &= !sig.bit();
    }

    /// Whether `sig` is in the set.
    ///
    /// ```
    /// use conduit::signal::{SigSet, Signal};
    /// assert!(!SigSet::empty().contains(Signal::new(1).unwrap()));
    /// ```
    pub const fn contains(&self, sig: Signal) -> bool {
        self.0 & sig.bit() != 0
    }

    /// The signals in the set, lowest first.
    ///
    /// ```
    /// use conduit::signal::{SigSet, Signal};
    /// let set: SigSet = [Signal::new(9).unwrap(), Signal::new(2).unwrap()].into_iter().collect();
    /// let numbers: Vec<u8> = set.iter().map(Signal::number).collect();
    /// assert_eq!(numbers, [2, 9]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Signal> + '_ {
        let bits = self.0;
        (1..=SIGNALS).filter_map(move |n| (bits & bit(n) != 0).then_some(Signal(n)))
    }
}

impl FromIterator<Signal> for SigSet {
    fn from_iter<I: IntoIterator<Item = Signal>>(iter: I) -> Self {
        let mut set = SigSet::empty();
        for sig in iter {
            set.insert(sig);
        }
        set
    }
}

impl fmt::Debug for SigSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Signal::number))
            .finish()
    }
}

/// One delivery: the signal, its payload (queued) or coalesced count (standard), and
/// its origin.
///
/// ```
/// use conduit::signal::{Signal, Target};
///
/// let target = Target::new();
/// let raiser = target.raiser();
/// let rt = Signal::new(34).unwrap();
/// raiser.raise_with(rt, 7).unwrap();
/// let info = target.try_wait().unwrap();
/// assert_eq!(info.signal(), rt);
/// assert_eq!(info.payload(), Some(7));
/// assert_eq!(info.count(), 1);
/// assert_eq!(info.pid(), std::process::id());
/// assert_eq!(info.raiser_id(), raiser.id());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigInfo {
    signal: Signal,
    payload: Option<u64>,
    count: u64,
    pid: u32,
    raiser_id: u64,
}

impl SigInfo {
    /// A delivery of `signal` with `taken`'s payload and count, from `raiser_id` of
    /// process `pid` (a segment's origin word holds both).
    #[cfg_attr(
        any(loom, not(all(unix, target_pointer_width = "64"))),
        allow(dead_code)
    )]
    pub(crate) fn from_parts(signal: Signal, taken: Taken, pid: u32, raiser_id: u64) -> Self {
        SigInfo {
            signal,
            payload: taken.payload,
            count: taken.count,
            pid,
            raiser_id,
        }
    }

    fn new(signal: Signal, taken: Taken, pid: u32) -> Self {
        SigInfo {
            signal,
            payload: taken.payload,
            count: taken.count,
            pid,
            raiser_id: taken.origin,
        }
    }

    /// The signal delivered.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// # let target = Target::new();
    /// target.raiser().raise(Signal::new(5).unwrap()).unwrap();
    /// assert_eq!(target.wait().signal().number(), 5);
    /// ```
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The payload of a queued signal's raise (`0` for [`Raiser::raise`]); `None` for a
    /// standard signal.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// # let target = Target::new();
    /// target.raiser().raise(Signal::new(5).unwrap()).unwrap();
    /// assert_eq!(target.wait().payload(), None);
    /// ```
    pub fn payload(&self) -> Option<u64> {
        self.payload
    }

    /// How many raises this delivery absorbed: `≥ 1` for a standard signal, `1` for a
    /// queued one.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// # let target = Target::new();
    /// let raiser = target.raiser();
    /// raiser.raise(Signal::new(5).unwrap()).unwrap();
    /// raiser.raise(Signal::new(5).unwrap()).unwrap();
    /// assert_eq!(target.wait().count(), 2);
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The raising process's id (for an in-process target: this process's, also for
    /// signals forwarded from the OS by [`forward_os`]).
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// # let target = Target::new();
    /// target.raiser().raise(Signal::new(5).unwrap()).unwrap();
    /// assert_eq!(target.wait().pid(), std::process::id());
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The id of the raiser (see [`Raiser::id`]; clones share it).
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// # let target = Target::new();
    /// let raiser = target.raiser();
    /// raiser.clone().raise(Signal::new(5).unwrap()).unwrap();
    /// assert_eq!(target.wait().raiser_id(), raiser.id());
    /// ```
    pub fn raiser_id(&self) -> u64 {
        self.raiser_id
    }
}

/// Why a raise failed.
///
/// ```
/// use conduit::signal::{RaiseError, Signal, Target};
///
/// let target = Target::new();
/// let raiser = target.raiser();
/// drop(target);
/// let err = raiser.raise(Signal::new(1).unwrap()).unwrap_err();
/// assert_eq!(err, RaiseError::Disconnected);
/// assert_eq!(err.to_string(), "raising on a target that is gone");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaiseError {
    /// The target was dropped (like `kill` with `ESRCH`).
    Disconnected,
    /// The queued signal's queue holds its depth of undelivered entries.
    Full,
}

impl fmt::Display for RaiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RaiseError::Disconnected => "raising on a target that is gone",
            RaiseError::Full => "raising a queued signal whose queue is full",
        })
    }
}

impl std::error::Error for RaiseError {}

impl From<RaiseFail> for RaiseError {
    fn from(f: RaiseFail) -> Self {
        match f {
            RaiseFail::Disconnected => RaiseError::Disconnected,
            RaiseFail::Full => RaiseError::Full,
        }
    }
}

/// A signal handler, made by [`Disposition::catch`].
///
/// ```
/// use conduit::signal::Disposition;
/// let d = Disposition::catch(|_| {});
/// assert!(matches!(d, Disposition::Catch(_)));
/// ```
#[derive(Clone)]
pub struct Handler(std::sync::Arc<dyn Fn(SigInfo) + Send + Sync>);

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler(..)")
    }
}

/// What a target does with a signal number (see the module docs).
///
/// ```
/// use conduit::signal::{Disposition, Signal, Target};
///
/// let target = Target::new();
/// let sig = Signal::new(3).unwrap();
/// target.set_disposition(sig, Disposition::Ignore);
/// target.raiser().raise(sig).unwrap();
/// assert_eq!(target.try_wait(), None);
/// assert_eq!(target.ignored(sig), 1);
/// ```
#[derive(Clone, Debug)]
pub enum Disposition {
    /// Pending until a wait takes it (the default).
    Deliver,
    /// Discarded at raise time, and counted ([`Target::ignored`]).
    Ignore,
    /// Each delivery runs the handler on the thread of a wait or [`Target::dispatch`].
    Catch(Handler),
}

impl Disposition {
    /// Catch with `f`: it runs once per delivery, on the thread that waits or
    /// dispatches, with the signal held back meanwhile.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use conduit::signal::{Disposition, Signal, Target};
    ///
    /// let target = Target::new();
    /// let sig = Signal::new(2).unwrap();
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let s = seen.clone();
    /// target.set_disposition(sig, Disposition::catch(move |info| {
    ///     s.fetch_add(info.count(), Ordering::Relaxed);
    /// }));
    /// target.raiser().raise(sig).unwrap();
    /// assert_eq!(target.dispatch(), 1);
    /// assert_eq!(seen.load(Ordering::Relaxed), 1);
    /// ```
    pub fn catch(f: impl Fn(SigInfo) + Send + Sync + 'static) -> Disposition {
        Disposition::Catch(Handler(std::sync::Arc::new(f)))
    }
}

/// The state raisers and the target share: the heap [`Backend`].
pub(crate) struct Shared {
    state: State<Heap>,
    /// Blocking waits park here (its async half stays empty).
    waiters: WaitQueue,
    /// Async waits register here (on a line of its own: raisers and the waiting task
    /// both write it).
    async_waiters: crossbeam_utils::CachePadded<AsyncWaiters>,
    /// The id the next [`Target::raiser`] gets.
    next_raiser: AtomicU64,
    /// This process's id, read once (every raise of an in-process target comes from
    /// it), so that a delivery makes no `getpid` call.
    pid: u32,
}

impl Shared {
    /// Records and announces a raise.
    fn raise(&self, sig: Signal, payload: u64, origin: u64, times: u64) -> Result<(), RaiseError> {
        let was_pending = self
            .state
            .raise(sig.0, payload, origin, times, QueueLane::NONE)?;
        // A number pending already was announced by the raise that set it (see
        // `state`'s docs, "Raise").
        if !was_pending {
            self.notify();
        }
        Ok(())
    }

    /// Announces a change to every wait that sleeps, blocking or async (each kind's
    /// check is one load when none does).
    #[inline]
    fn notify(&self) {
        self.waiters.notify_waiting();
        self.async_waiters.wake_all();
    }
}

impl Backend for Arc<Shared> {
    type Storage = Heap;
    type AsyncWait = AsyncWait;

    #[inline]
    fn state(&self) -> &State<Heap> {
        &self.state
    }

    #[inline]
    fn with_lane<R>(&self, f: impl FnOnce(QueueLane<'_>) -> R) -> R {
        f(QueueLane::NONE)
    }

    #[inline]
    fn notify(&self) {
        Shared::notify(self);
    }

    fn info(&self, n: u8, taken: Taken) -> SigInfo {
        SigInfo::new(Signal(n), taken, self.pid)
    }

    fn origin_of(&self, info: &SigInfo) -> u64 {
        info.raiser_id
    }

    fn block(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Option<SigInfo> {
        block_on(
            &self.waiters,
            (),
            deadline,
            |_| true,
            |()| match attempt() {
                Some(info) => Attempt::Done(info),
                None => Attempt::Wait(()),
            },
        )
        .ok()
    }

    fn poll(
        &self,
        wait: &mut AsyncWait,
        cx: &mut Context<'_>,
        attempt: impl FnMut() -> Option<SigInfo>,
    ) -> Poll<SigInfo> {
        self.async_waiters.poll(wait, cx, attempt)
    }

    fn cancel(&self, wait: &mut AsyncWait) {
        self.async_waiters.cancel(wait);
    }
}

/// The owner of a set of signal numbers: it waits for deliveries, sets dispositions and
/// masks, and hands out [`Raiser`]s. `Send + Sync`, so several threads may wait on one
/// target (each delivery goes to one of them); not `Clone`.
///
/// ```
/// use std::thread;
/// use conduit::signal::{Signal, Target};
///
/// let target = Target::new();
/// let raiser = target.raiser();
/// let usr1 = Signal::new(10).unwrap();
/// let t = thread::spawn(move || raiser.raise(usr1).unwrap());
/// assert_eq!(target.wait().signal(), usr1);
/// t.join().unwrap();
/// ```
pub struct Target {
    owner: Owner<Arc<Shared>>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.owner.fmt(f)
    }
}

impl Default for Target {
    fn default() -> Self {
        Target::new()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.shared()
            .state
            .words()
            .closed
            .store(1, Ordering::Release);
    }
}

impl Target {
    /// A target with every number delivered, unmasked, and [`QUEUE_DEPTH`] entries per
    /// queued number.
    ///
    /// ```
    /// let target = conduit::signal::Target::new();
    /// assert_eq!(target.try_wait(), None);
    /// ```
    pub fn new() -> Target {
        Target::with_depth(QUEUE_DEPTH)
    }

    /// A target whose queued numbers hold `depth` entries each.
    ///
    /// # Panics
    /// If `depth` is 0 or above [`MAX_QUEUE_DEPTH`].
    ///
    /// ```
    /// use conduit::signal::{RaiseError, Signal, Target};
    ///
    /// let target = Target::with_depth(1);
    /// let raiser = target.raiser();
    /// let rt = Signal::new(50).unwrap();
    /// raiser.raise(rt).unwrap();
    /// assert_eq!(raiser.raise(rt), Err(RaiseError::Full));
    /// ```
    pub fn with_depth(depth: usize) -> Target {
        assert!(
            (1..=MAX_QUEUE_DEPTH).contains(&depth),
            "queue depth must be in 1..={MAX_QUEUE_DEPTH}"
        );
        Target {
            owner: Owner::new(Arc::new(Shared {
                state: State::new(Heap::new(depth)),
                waiters: WaitQueue::new(),
                async_waiters: crossbeam_utils::CachePadded::new(AsyncWaiters::new()),
                next_raiser: AtomicU64::new(1),
                pid: std::process::id(),
            })),
        }
    }

    /// A new raiser, with an id of its own (its clones share it).
    ///
    /// ```
    /// let target = conduit::signal::Target::new();
    /// assert_ne!(target.raiser().id(), target.raiser().id());
    /// ```
    pub fn raiser(&self) -> Raiser {
        Raiser {
            id: self.shared().next_raiser.fetch_add(1, Ordering::Relaxed),
            shared: self.shared().clone(),
        }
    }

    /// Waits for the next delivery of any number (running the handlers of caught ones it
    /// takes on the way).
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// target.raiser().raise(Signal::new(1).unwrap()).unwrap();
    /// assert_eq!(target.wait().signal().number(), 1);
    /// ```
    pub fn wait(&self) -> SigInfo {
        self.owner.wait_until(Want::ALL, None).expect("no deadline")
    }

    /// Takes the next delivery if one is pending, after running the handlers of caught
    /// signals pending before it; `None` if nothing deliverable (or only caught signals)
    /// was pending.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// assert_eq!(target.try_wait(), None);
    /// ```
    pub fn try_wait(&self) -> Option<SigInfo> {
        self.owner.attempt(Want::ALL)
    }

    /// [`Target::wait`], giving up after `timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let target = conduit::signal::Target::new();
    /// assert_eq!(target.wait_timeout(Duration::from_millis(1)), None);
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<SigInfo> {
        self.owner
            .wait_until(Want::ALL, Instant::now().checked_add(timeout))
    }

    /// [`Target::wait`] as a future (cancel-safe: a future dropped before it completes
    /// took nothing, and a wake-up it received passes to another wait).
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// target.raiser().raise(Signal::new(1).unwrap()).unwrap();
    /// let info = futures::executor::block_on(target.wait_async());
    /// assert_eq!(info.signal().number(), 1);
    /// ```
    pub fn wait_async(&self) -> WaitFut<'_> {
        WaitFut::new(self, Want::ALL)
    }

    /// Waits for the next delivery of a number in `set`; others stay pending.
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Signal, Target};
    /// let target = Target::new();
    /// let (one, two) = (Signal::new(1).unwrap(), Signal::new(2).unwrap());
    /// let raiser = target.raiser();
    /// raiser.raise(one).unwrap();
    /// raiser.raise(two).unwrap();
    /// let only_two: SigSet = [two].into_iter().collect();
    /// assert_eq!(target.wait_for(&only_two).signal(), two);
    /// assert_eq!(target.wait().signal(), one);
    /// ```
    pub fn wait_for(&self, set: &SigSet) -> SigInfo {
        self.owner
            .wait_until(Want::set(set), None)
            .expect("no deadline")
    }

    /// [`Target::try_wait`] for the numbers in `set`.
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Signal, Target};
    /// let target = Target::new();
    /// target.raiser().raise(Signal::new(1).unwrap()).unwrap();
    /// let set: SigSet = [Signal::new(2).unwrap()].into_iter().collect();
    /// assert_eq!(target.try_wait_for(&set), None);
    /// ```
    pub fn try_wait_for(&self, set: &SigSet) -> Option<SigInfo> {
        self.owner.attempt(Want::set(set))
    }

    /// [`Target::wait_for`], giving up after `timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use conduit::signal::{SigSet, Target};
    /// let target = Target::new();
    /// assert_eq!(target.wait_for_timeout(&SigSet::all(), Duration::from_millis(1)), None);
    /// ```
    pub fn wait_for_timeout(&self, set: &SigSet, timeout: Duration) -> Option<SigInfo> {
        self.owner
            .wait_until(Want::set(set), Instant::now().checked_add(timeout))
    }

    /// [`Target::wait_for`] as a future (cancel-safe, as [`Target::wait_async`]).
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Signal, Target};
    /// let target = Target::new();
    /// let sig = Signal::new(33).unwrap();
    /// target.raiser().raise_with(sig, 5).unwrap();
    /// let set: SigSet = [sig].into_iter().collect();
    /// let info = futures::executor::block_on(target.wait_for_async(&set));
    /// assert_eq!(info.payload(), Some(5));
    /// ```
    pub fn wait_for_async(&self, set: &SigSet) -> WaitFut<'_> {
        WaitFut::new(self, Want::set(set))
    }

    /// Waits for the next delivery of any number as if the numbers in `set` were not
    /// masked, like `sigsuspend`: the mask itself is left as it is (other waits still
    /// hold those numbers back), so there is no window between unmasking and waiting in
    /// which a delivery could go elsewhere, and nothing to restore afterwards.
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Signal, Target};
    /// let target = Target::new();
    /// let sig = Signal::new(17).unwrap();
    /// let set: SigSet = [sig].into_iter().collect();
    /// target.mask(&set);
    /// target.raiser().raise(sig).unwrap();
    /// assert_eq!(target.try_wait(), None); // masked
    /// assert_eq!(target.unmask_and_wait(&set).signal(), sig);
    /// assert_eq!(target.masked(), set); // still masked
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
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// let raiser = target.raiser();
    /// raiser.raise(Signal::new(1).unwrap()).unwrap();
    /// raiser.raise(Signal::new(2).unwrap()).unwrap();
    /// let got: Vec<u8> = futures::executor::block_on(
    ///     target.stream().take(2).map(|i| i.signal().number()).collect(),
    /// );
    /// assert_eq!(got, [1, 2]);
    /// ```
    pub fn stream(&self) -> SigStream<'_> {
        SigStream {
            target: self,
            wait: AsyncWait::new(),
        }
    }

    /// Sets what the target does with `sig` from now on. `Ignore` discards (and counts)
    /// what is pending of `sig`; switching away from `Catch` lets a handler already
    /// running finish.
    ///
    /// ```
    /// # use conduit::signal::{Disposition, Signal, Target};
    /// let target = Target::new();
    /// let sig = Signal::new(4).unwrap();
    /// target.raiser().raise(sig).unwrap();
    /// target.set_disposition(sig, Disposition::Ignore); // discards the pending one
    /// assert_eq!(target.ignored(sig), 1);
    /// target.set_disposition(sig, Disposition::Deliver);
    /// target.raiser().raise(sig).unwrap();
    /// assert_eq!(target.try_wait().unwrap().signal(), sig);
    /// ```
    pub fn set_disposition(&self, sig: Signal, disposition: Disposition) {
        self.owner.set_disposition(sig, disposition);
    }

    /// How many raises of `sig` were discarded because it was ignored.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// assert_eq!(target.ignored(Signal::new(1).unwrap()), 0);
    /// ```
    pub fn ignored(&self, sig: Signal) -> u64 {
        self.owner.ignored(sig)
    }

    /// Masks the numbers in `set`: they stay pending (raises still coalesce or queue)
    /// until unmasked.
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Signal, Target};
    /// let target = Target::new();
    /// let sig = Signal::new(1).unwrap();
    /// target.mask(&[sig].into_iter().collect());
    /// target.raiser().raise(sig).unwrap();
    /// assert_eq!(target.try_wait(), None);
    /// ```
    pub fn mask(&self, set: &SigSet) {
        self.owner.mask(set);
    }

    /// Unmasks the numbers in `set`; what is pending of them becomes deliverable (and
    /// sleeping waits are woken).
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Signal, Target};
    /// let target = Target::new();
    /// let sig = Signal::new(1).unwrap();
    /// let set: SigSet = [sig].into_iter().collect();
    /// target.mask(&set);
    /// target.raiser().raise(sig).unwrap();
    /// target.unmask(&set);
    /// assert_eq!(target.try_wait().unwrap().signal(), sig);
    /// ```
    pub fn unmask(&self, set: &SigSet) {
        self.owner.unmask(set);
    }

    /// The masked numbers.
    ///
    /// ```
    /// # use conduit::signal::{SigSet, Target};
    /// let target = Target::new();
    /// target.mask(&SigSet::all());
    /// assert_eq!(target.masked(), SigSet::all());
    /// ```
    pub fn masked(&self) -> SigSet {
        self.owner.masked()
    }

    /// Runs the handlers of the caught signals that are pending and deliverable, lowest
    /// first, once per delivery, without waiting and without taking signals that are
    /// not caught; returns how many handlers ran. Use it where the owner has no wait to
    /// run them in (a loop that polls, or a dispatcher thread that waits on a set of
    /// numbers that are not caught).
    ///
    /// A handler that panics: its delivery counts as made, the signal is no longer held
    /// back, and the panic propagates out of `dispatch` (or the wait that ran it).
    ///
    /// If the disposition changes away from `Catch` between `dispatch` choosing a signal
    /// and running its handler, the delivery is put back as a raise with the same count
    /// (a queued entry goes to the end of its queue; if the target is gone or the queue
    /// full by then, it is counted as ignored).
    ///
    /// ```
    /// # use conduit::signal::{Disposition, Signal, Target};
    /// let target = Target::new();
    /// target.set_disposition(Signal::new(1).unwrap(), Disposition::catch(|_| {}));
    /// assert_eq!(target.dispatch(), 0);
    /// ```
    pub fn dispatch(&self) -> usize {
        self.owner.dispatch()
    }

    fn shared(&self) -> &Arc<Shared> {
        self.owner.backend()
    }
}

/// Raises signals on a [`Target`]. `Clone + Send + Sync`; clones share one
/// [id](Raiser::id).
///
/// ```
/// use conduit::signal::{Signal, Target};
///
/// let target = Target::new();
/// let raiser = target.raiser();
/// std::thread::scope(|s| {
///     for _ in 0..4 {
///         let r = raiser.clone();
///         s.spawn(move || r.raise(Signal::new(1).unwrap()).unwrap());
///     }
/// });
/// assert_eq!(target.wait().count(), 4);
/// ```
#[derive(Clone)]
pub struct Raiser {
    shared: Arc<Shared>,
    id: u64,
}

impl fmt::Debug for Raiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raiser").field("id", &self.id).finish()
    }
}

impl Raiser {
    /// Raises `sig`: a standard signal coalesces with its pending raises, a queued one
    /// queues with payload 0. Never blocks.
    ///
    /// # Errors
    /// [`RaiseError::Disconnected`] once the target is dropped; [`RaiseError::Full`]
    /// for a queued signal whose queue is at its depth.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// target.raiser().raise(Signal::new(1).unwrap()).unwrap();
    /// ```
    pub fn raise(&self, sig: Signal) -> Result<(), RaiseError> {
        self.raise_with(sig, 0)
    }

    /// Raises `sig` with `payload`; the payload is delivered for a queued signal and
    /// dropped for a standard one (which carries only its number and count).
    ///
    /// # Errors
    /// As [`Raiser::raise`].
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target};
    /// let target = Target::new();
    /// let rt = Signal::new(40).unwrap();
    /// let raiser = target.raiser();
    /// raiser.raise_with(rt, 1).unwrap();
    /// raiser.raise_with(rt, 2).unwrap();
    /// assert_eq!(target.wait().payload(), Some(1));
    /// assert_eq!(target.wait().payload(), Some(2));
    /// ```
    pub fn raise_with(&self, sig: Signal, payload: u64) -> Result<(), RaiseError> {
        self.shared.raise(sig, payload, self.id, 1)
    }

    /// `times` raises of a standard signal at once (queued: `times` raises with payload
    /// `payload`, stopping at the first that fails). For the OS bridge.
    #[cfg_attr(any(not(unix), loom), allow(dead_code))]
    pub(crate) fn raise_times(
        &self,
        sig: Signal,
        payload: u64,
        times: u64,
    ) -> Result<(), RaiseError> {
        if times == 0 {
            return Ok(());
        }
        if sig.is_queued() {
            for _ in 0..times {
                self.shared.raise(sig, payload, self.id, 1)?;
            }
            Ok(())
        } else {
            self.shared.raise(sig, payload, self.id, times)
        }
    }

    /// This raiser's id, reported by [`SigInfo::raiser_id`]: distinct for every
    /// [`Target::raiser`] call on a target, shared by clones.
    ///
    /// ```
    /// let target = conduit::signal::Target::new();
    /// let r = target.raiser();
    /// assert_eq!(r.clone().id(), r.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the target is gone (raises would fail with
    /// [`RaiseError::Disconnected`]).
    ///
    /// ```
    /// let target = conduit::signal::Target::new();
    /// let r = target.raiser();
    /// assert!(!r.is_disconnected());
    /// drop(target);
    /// assert!(r.is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        self.shared.state.words().closed.load(Ordering::Acquire) != 0
    }
}

/// The future of [`Target::wait_async`] and [`Target::wait_for_async`].
///
/// ```
/// # use conduit::signal::{Signal, Target};
/// let target = Target::new();
/// let fut = target.wait_async();
/// target.raiser().raise(Signal::new(3).unwrap()).unwrap();
/// assert_eq!(futures::executor::block_on(fut).signal().number(), 3);
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
/// # use conduit::signal::{Signal, Target};
/// let target = Target::new();
/// target.raiser().raise(Signal::new(8).unwrap()).unwrap();
/// let mut stream = target.stream();
/// let info = futures::executor::block_on(stream.next()).unwrap();
/// assert_eq!(info.signal().number(), 8);
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
