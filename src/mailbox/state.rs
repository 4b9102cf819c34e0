//! One mailbox's state and its waiting: a lock-free inbox that sends go into, the index
//! of the messages moved aside, the waiters of both sides, and the blocking and async
//! wait loops.
//!
//! # The inbox and the messages aside
//! A channel's send and receive touch a few cache lines and no lock; a mailbox whose
//! every operation took one lock over its whole state passed that lock and a dozen lines
//! of state between a sender and a receiver for each message (issue #19: 38× the
//! channel). So the common operations do not lock:
//! - **Sends** go into the **inbox**, conduit's own lock-free queue (`chan::array`'s ring
//!   for capacities up to [`RING_MAX`], `chan::list` beyond and when unbounded), after
//!   reserving a place in the senders' **count word** (`sent`: messages ever counted
//!   in, and the `CLOSED` bit).
//! - An **`Any` receive** pops the inbox's first message while nothing is aside.
//! - A **selective receive** needs the index (`index`): under the lock it moves
//!   everything in the inbox **aside**, into the index, in inbox order, and selects
//!   there. Each message is moved at most once, at O(log t); a selection still never
//!   *scans* messages it does not take.
//! - An `Any` receive when messages are aside takes the index's oldest under the lock.
//!
//! **Order.** Messages leave the inbox in the order they entered it, and the mover takes
//! them from its front, all of them, one mover at a time (under the lock): so
//! (A) *every message aside is older than every message in the inbox*, and the oldest
//! message of the mailbox is the index's oldest if anything is aside, the inbox's first
//! otherwise. What remains is a lock-free `Any` receive racing a mover. Every claim at
//! the inbox's front, a receive's or a mover's, is a CAS on the front's position, so the
//! claims are totally ordered, and the load of the position a claim expects is Acquire
//! ([`Queue::claim_recv_if`]): it synchronizes with the claim that moved the front there.
//! The **gate** is two words, written only under the lock: `aside`, the number of
//! messages aside plus one while a mover claims the next, and `moves`, odd while a
//! mover is at work.
//! 1. A lock-free receive loads `moves` (Acquire: it then sees the last mover's count
//!    aside, or a later one) and `aside`, and takes the locked path if a mover is at work
//!    or anything is aside. Otherwise it claims the front, and between its load of the
//!    position it claims and its CAS it loads `aside` again: if that is not 0, it takes
//!    the locked path after all. (It also looks before it would wait for a message
//!    still being written at the front, so as not to wait there beside a mover: loom's
//!    search over two threads spinning on one slot was a thousand times longer.)
//! 2. A mover counts each message in `aside` before it claims it. If a receive's claim
//!    comes after a mover's in the order of claims, the receive's load of the position
//!    it claims read the mover's claim or a later one, so its second load of `aside`
//!    sees the mover's count or a later value (0 again only once everything aside has
//!    been taken: nothing older is left then), and it takes the locked path, which takes
//!    the index's oldest first. If the receive's claim comes first, it took the inbox's
//!    first message while nothing was aside: by (A), the oldest.
//! 3. A receive that finds the inbox empty reports it (lock-free) only if `moves` still
//!    reads the even value of its first look. A message moved aside before the empty
//!    look was claimed by a mover whose claim that look's load of the front read (the
//!    front is past the message), or a later one, and the mover had made `moves` odd
//!    before its claims; one aside since before the first look showed in `aside` then.
//!    So the mailbox was empty at the look.
//!
//! So the two kinds of `Any` receive and the selective ones all take the oldest message
//! of their selection at the moment they take it, and per-sender FIFO within every
//! selection follows as before. A lock-free receive makes no read-modify-write besides
//! its claim: the gate's line is written only by movers and takes from the index, so it
//! stays in the receivers' caches. (With an RMW on a gate word to enter and another on
//! a count of messages taken, each receive made three; taking the two out made a
//! mailbox stream between two threads 28.5–29.6 → 18.7–19.6 ns a message, see
//! `benches/README.md`, fourteenth session.)
//!
//! **Capacity.** Two monotone counts: `sent` (senders' line), the messages ever counted
//! in, and `taken`, the messages ever taken, which no word holds: it is the number of
//! claims ever made at the inbox's front (its position, which the receives move anyway)
//! less `aside`. So a receive's claim releases a place, unless a mover made it (having
//! counted the message aside first), and a take from the index releases one when it
//! lowers `aside`. The messages counted in are `sent - taken`. A send reserves its
//! place with a CAS on `sent` that it makes only if `sent - taken` is below the
//! capacity. To keep the receivers' line out of every send, a sender judges by
//! `taken_seen` (on its own line), a value `taken` had: `taken` only grows, so
//! `sent - taken_seen` over-counts, and only when that reaches the capacity does the
//! sender derive `taken` (and raise `taken_seen`) before deciding "full". Loading the
//! front's position and then `aside` gives at most the count at the second load (a mover
//! counts a message aside before it claims it), and a value the count had between the
//! loads when `aside` reads 0; otherwise (messages aside, and the mailbox looking full)
//! the sender derives it again under the lock, where it is exact. The CAS then makes
//! "count, decide, reserve" one step against other senders: *no more than `capacity`
//! messages are ever reserved or queued*, exactly (there is no overshoot), and a
//! `try_send` that fails found the mailbox full. The inbox's ring has `capacity` slots,
//! so a reserved send always finds a slot, possibly one that the receive that claimed
//! it is still reading, which the send's claim waits for. An unbounded mailbox counts
//! up to the index's limit ([`MAX_QUEUED`]) only. `len()` reads `sent`, then derives
//! `taken`, clamped to the capacity: between the counts at its loads unless a move
//! aside is under way, and it includes messages whose send is under way. The mover and
//! the close check derive `taken` first (under the lock), which never under-counts.
//!
//! # Why a lock at all
//! A selective receive must find *the* oldest matching message and remove it from every
//! structure of the index at once, and a waiter must be matched against the messages
//! that arrive; both are multi-word updates. One mutex over the index and the waiters
//! keeps them simple; every critical section does O(log t) index work per message
//! moved or taken plus, only when someone waits, a walk over the waiters. No user code
//! runs under the lock: messages and wakers that leave the state are dropped, and
//! wake-ups issued, after unlocking (they are gathered in an [`After`]); the one piece of
//! executor code inside is a registering task's waker clone (a reference count, cloned
//! under a lock as `chan::signal` does too).
//!
//! # Waiters that want different things
//! A channel may wake *any* one receiver for a new message; a mailbox may not: a
//! receiver waiting for tag 3 must not swallow the wake-up meant for one waiting for
//! tag 5. So the two kinds of receiver wait apart:
//! - **`Any` receivers** take whatever comes, so any one of them may be woken for any
//!   message: they wait on the channels' own wait queue (`any`, a `chan::signal::Signal`,
//!   with its blocking and async loops and its no-lost-wake-up argument, in which the
//!   change is the send's inbox claim, a SeqCst RMW, and the re-check is an `Any`
//!   receive). Every send notifies one of them if one waits (two loads when none does:
//!   the async list's mark and the blocking count); a woken one that finds nothing waits
//!   again, and one that leaves with its wake-up unused passes it on to the next. Their
//!   waits and wake-ups take no mailbox lock. The close raises the `closed` flag, then
//!   wakes them all.
//! - **Selective receivers** register their selection in the mailbox's list (below),
//!   and their wake-ups are aimed. A send wakes one of each kind if both wait (the
//!   `Any` receiver's wake-up is then the one that finds nothing, or the selective
//!   one's: a wake-up too many, never one too few).
//!
//! For selective receivers and for senders:
//! - a **send** that finds selective receivers registered locks, moves the inbox aside
//!   and wakes the first registered, unnotified receiver with a matching message (and
//!   nothing if none matches);
//! - a **receive** from a bounded mailbox frees a place and wakes the first unnotified
//!   waiting sender (a lock-free receive locks for it only when senders are registered);
//! - a **notified waiter that finishes** (it took a message, found nothing and waits
//!   again, timed out, or was cancelled) **passes on**: it wakes the first unnotified
//!   receiver that has a matching message queued now (receivers), or, if there is room,
//!   the first unnotified sender (senders);
//! - **close** wakes everyone.
//!
//! # The no-lost-wake-up argument
//! Registration and every change to the index and the waiter lists happen under the
//! lock; the lock-free sends and receives meet the waiters through a count of
//! registered waiters per side (`waiting`), with the Dekker pattern of `chan::signal`:
//! - **(R) receivers.** A send's pop-visible change is its inbox claim, a SeqCst RMW; it
//!   then loads the receivers' count (SeqCst). A registering receiver increments the
//!   count (SeqCst RMW) and then, in the same critical section, attempts again: that
//!   re-check loads the counts and, if anything is counted beyond what is aside,
//!   moves the inbox aside, whose emptiness check loads the inbox's tail (SeqCst). In
//!   the single order of SeqCst operations either the sender's load comes after the
//!   increment, and the sender locks (after our critical section) and aims a wake-up
//!   with the message aside, or the re-check comes after the sender's claim and sees the
//!   message (a claimed slot still being written is waited for).
//! - **(S) senders.** A lock-free receive releases a place with its claim, a SeqCst RMW
//!   on the inbox's front position, then loads the senders' count; a registering sender
//!   increments that count and re-checks (a reservation that finds the mailbox full loads
//!   the front's position, SeqCst): the same pattern. A take from the index releases its
//!   place under the lock, and notifies a registered sender there.
//!
//! Given (R) and (S), call a waiter *in flight* from the moment a waker marks it
//! notified until its next critical section. For receivers the invariant is:
//!
//! > (J) if some registered, unnotified receiver has a matching message queued, some
//! > receiver is in flight.
//!
//! 1. Registering keeps (J): a waiter registers in a critical section whose re-check
//!    (after the registration, (R)) found no matching message; a message whose send
//!    the re-check missed is the sender's to announce (next step).
//! 2. A send keeps (J): a send that saw a receiver registered locks, moves the inbox
//!    aside and notifies an unnotified receiver with a match if there is one (in
//!    flight); one that saw none is covered by the re-check of every receiver that
//!    registered after it (R).
//! 3. A receive by anyone keeps (J): it only removes messages.
//! 4. An in-flight waiter's next critical section ends with the pass-on, which notifies
//!    an unnotified receiver with a match if there is one, so (J) holds after it
//!    whatever else is in flight.
//! 5. An in-flight waiter always reaches that critical section: a woken thread re-locks;
//!    a woken task is polled (and re-locks) or dropped (and re-locks to leave).
//!
//! So a sleeping receiver with a match always has an in-flight waiter ahead of it, and
//! each in-flight waiter either takes a message or passes on: messages are finite, so
//! the chain ends with the sleeper woken or its match taken. The senders' invariant is
//! the same with "a matching message" replaced by "room", (R) by (S). Wake-ups are
//! issued after the unlock; `unpark` before `park` is remembered and a `Waker` may be
//! woken before the task sleeps, so the order of "mark notified, unlock, wake" against
//! "register, unlock, sleep" does not matter.
//!
//! # Close
//! Close sets `CLOSED` in `sent` (SeqCst RMW) under the lock and wakes every
//! waiter. A send whose reservation came before it in `sent`'s order is queued
//! (it was sent before the close); every later one fails with its message handed back.
//! A receive reports `Disconnected` only under the lock, after moving the inbox aside,
//! when `CLOSED` is set, no queued message matches and *the count equals what is
//! aside*: otherwise a send that reserved before the close is still on its way into the
//! inbox (a few instructions, no waiting), and the receive moves the inbox aside again.
//! So nothing sent before the close is lost to a receiver that drains.
//!
//! # Spinning before registering
//! A blocking wait that finds nothing to do spins briefly before it registers, as the
//! channels' waits do (`chan::signal`): between two threads that keep up with each other
//! the change usually comes within a microsecond, and a park and unpark cost several.
//! The spin does not lock: a receiver watches the inbox's first slot and the gate's
//! `moves`, which every move aside changes (another receiver may move the message it
//! wants aside before it shows at the front), a sender the inbox's front position
//! (which `taken` is derived from), and tries again when one of them moved (lock-free
//! first, where the operation can be lock-free; a sender once a batch of places is
//! free, as the channel's ring does). A spinning waiter is not registered, so nothing
//! in the argument above concerns it (nobody owes it a wake-up); it registers, as
//! before, in the critical section of an attempt that failed once the spin is over.
//! Under loom there is no spin.
//!
//! The spin is the channels' ([`SpinWait`](crate::chan::signal::SpinWait)): a few polls a
//! spin-loop hint apart, then polls a yield of the CPU apart, so that a waiter whose peer
//! needs its CPU to make the change (a ping-pong on a busy machine) hands it over rather
//! than burning its time slice. (An exponential spin, and a per-side credit that let a
//! wait spin only while recent spins had paid, measured worse on this project's 2-core
//! machine: `send`+`recv` of one sender and one receiver through a `capacity(1024)`
//! mailbox took 95 ns a message with them, 37 without; a request/reply round trip
//! between two threads 39 µs, 7.)
//!
//! Costs: a send or `Any` receive with nobody waiting and nothing aside takes no lock;
//! with `w` selective waiters, a send that locks scans at most `w` selections (O(log t)
//! each), as does a pass-on. Woken waiters only ever re-check their own selection. While
//! a selective receiver is registered every send locks (the mailbox then costs what it
//! did with one lock throughout), and while messages are aside `Any` receives lock.
//! Waiting `Any` receivers cost a send the channels' notification (the wait queue's
//! own short lock and the wake-up), no mailbox lock.

use core::any::Any;
use core::task::{Context, Poll, Waker};
use std::collections::VecDeque;
use std::time::Instant;

use crossbeam_utils::CachePadded;

use super::Stored;
use super::index::{Index, MAX_QUEUED, Sel};
#[cfg(not(loom))]
use crate::chan::signal::SpinWait as Spin;
use crate::chan::signal::{AsyncWait, Attempt as Step, Signal, block_on};
use crate::chan::zero::{Wake, park_until};
use crate::chan::{NoSlot, Queue, array, list};
use crate::sync::{
    AtomicBool, AtomicUsize, Backoff, Deadline, Mutex, MutexGuard, Ordering, after_seqcst_rmw,
    load_seqcst, lock, thread,
};

/// The two sides that wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Recv = 0,
    Send = 1,
}

/// One registered wait.
struct Waiter {
    key: u64,
    /// What a receiver takes (`None` for senders).
    sel: Option<Sel>,
    /// `None` once notified (the waker took it to wake this waiter).
    wake: Option<Wake>,
}

/// Work to do after unlocking: wake-ups to issue and values to drop.
///
/// Most critical sections issue at most one wake-up and drop at most one unused waker
/// (their own): those are kept inline, so that the common case allocates nothing; more
/// (a close, the last receiver detaching) go to the vectors.
#[derive(Default)]
pub(crate) struct After {
    wake: Option<Wake>,
    wakes: Vec<Wake>,
    /// The unused waker of a wait that left (its drop is executor code).
    waker: Option<Waker>,
    drops: Vec<Box<dyn Any + Send>>,
    /// What the `Any` receivers' wait queue is owed ([`Shared::finish`]).
    any: AnyWake,
}

/// A notification of the `Any` receivers' wait queue owed by a critical section.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum AnyWake {
    #[default]
    None,
    /// A message was queued: wake one waiting `Any` receiver.
    One,
    /// The mailbox closed: wake them all.
    All,
}

impl After {
    fn wake(&mut self, w: Option<Wake>) {
        if let Some(w) = w {
            match self.wake {
                None => self.wake = Some(w),
                Some(_) => self.wakes.push(w),
            }
        }
    }

    /// Drops `v` after unlocking (it may run user code).
    pub(crate) fn drop_later(&mut self, v: Box<dyn Any + Send>) {
        self.drops.push(v);
    }

    fn drop_waker(&mut self, w: Waker) {
        match self.waker {
            None => self.waker = Some(w),
            Some(_) => self.drops.push(Box::new(w)),
        }
    }

    /// Issues the wake-ups and drops the values. Call with the lock released, through
    /// [`Shared::finish`] (which also notifies the `Any` receivers' queue).
    fn run(self) {
        if let Some(w) = self.wake {
            w.wake();
        }
        // The vectors are empty in most critical sections: no iterator to build and drop.
        if !self.wakes.is_empty() {
            for w in self.wakes {
                w.wake();
            }
        }
        drop(self.waker);
        if !self.drops.is_empty() {
            drop(self.drops);
        }
    }
}

/// The state behind a mailbox's lock.
pub(crate) struct State<T> {
    /// The messages moved aside (see "The inbox and the messages aside").
    pub(crate) index: Index<Stored<T>>,
    /// Handle families attached as receivers (see `Mailbox`'s docs on requests).
    pub(crate) receivers: usize,
    recv_waiters: VecDeque<Waiter>,
    send_waiters: VecDeque<Waiter>,
    next_key: u64,
}

/// A queued message on its way through the inbox: its tag and what its envelope
/// carries.
type Entry<T> = (u64, Stored<T>);

/// The largest capacity whose inbox is a ring allocated in full at creation (a slot
/// takes at least a cache line); larger and unbounded mailboxes use the list, which
/// grows by blocks.
pub(crate) const RING_MAX: usize = 4096;

/// The lock-free queue that sends go into (see "The inbox and the messages aside"):
/// conduit's own bounded ring or unbounded list, used without their waiting (the
/// mailbox waits on its own terms: the queue's `write_quiet` and `read_quiet` do not
/// even look at its waiter counts) and never disconnected (the mailbox's close is the
/// `CLOSED` bit of `sent`).
enum Inbox<T> {
    Ring(array::Channel<Entry<T>>),
    List(list::Channel<Entry<T>>),
}

impl<T> Inbox<T> {
    fn new(capacity: Option<usize>) -> Self {
        match capacity {
            Some(cap) if cap <= RING_MAX => Inbox::Ring(array::Channel::with_capacity(cap)),
            _ => Inbox::List(list::Channel::new()),
        }
    }

    /// Appends a message whose place the caller reserved in the count word. The ring
    /// holds no more messages than are counted (a receive frees its slot before it
    /// releases the place; a move aside frees slots and keeps the places), so it is
    /// never full here: a slot still being read by a receive of the previous lap is
    /// waited for inside the claim, as the channels do. A claim that reports the ring
    /// full anyway is retried all the same (it can only be transient).
    #[inline]
    fn push(&self, e: Entry<T>) {
        #[inline]
        fn go<E, Q: Queue<E>>(q: &Q, e: E) {
            let backoff = Backoff::new();
            loop {
                match q.claim_send() {
                    Ok(slot) => return q.write_quiet(slot, e),
                    Err(NoSlot::Wait) => backoff.snooze(),
                    Err(NoSlot::Disconnected) => unreachable!("the inbox is never closed"),
                }
            }
        }
        match self {
            Inbox::Ring(q) => go(q, e),
            Inbox::List(q) => go(q, e),
        }
    }

    /// [`Queue::recv_ready`]: whether a message may be published at the front.
    #[inline]
    fn recv_ready(&self) -> bool {
        match self {
            Inbox::Ring(q) => q.recv_ready(),
            Inbox::List(q) => q.recv_ready(),
        }
    }

    /// [`Queue::send_batch_free`]: whether a batch of slots is free (`true` for the list).
    #[cfg(not(loom))]
    #[inline]
    fn send_batch_free(&self) -> bool {
        match self {
            Inbox::Ring(q) => q.send_batch_free(),
            Inbox::List(q) => q.send_batch_free(),
        }
    }

    /// Takes the first message, if one is published and `open()`, asked before the
    /// claim ([`Queue::claim_recv_if`]), lets it (a claimed slot still being written is
    /// waited for, as the channels' receives do).
    #[inline]
    fn pop_if(&self, open: impl FnMut() -> bool) -> Option<Entry<T>> {
        #[inline]
        fn go<E, Q: Queue<E>>(q: &Q, open: impl FnMut() -> bool) -> Option<E> {
            q.claim_recv_if(open).ok().map(|slot| q.read_quiet(slot))
        }
        match self {
            Inbox::Ring(q) => go(q, open),
            Inbox::List(q) => go(q, open),
        }
    }

    /// [`Inbox::pop_if`] with nothing to ask: under the lock.
    #[inline]
    fn pop(&self) -> Option<Entry<T>> {
        self.pop_if(|| true)
    }

    /// [`Queue::received`]: the messages ever claimed from the front (SeqCst).
    #[inline]
    fn received(&self) -> usize {
        match self {
            Inbox::Ring(q) => q.received(),
            Inbox::List(q) => q.received(),
        }
    }
}

/// The count word's flag: the mailbox is closed. The count of messages is in the bits
/// above it ([`ONE`] per message).
const CLOSED: usize = 1;
/// One message in the count word.
const ONE: usize = 2;

/// What senders write: see "Capacity" in the module docs.
struct SendSide {
    /// Messages ever counted in (reserved), times [`ONE`], plus [`CLOSED`].
    sent: AtomicUsize,
    /// A value `taken` had (a lower bound of it): while `sent - taken_seen` is below the
    /// limit there is room, without reading the receivers' line.
    taken_seen: AtomicUsize,
}

/// See [`Shared::gate`]: two words written under the lock, by movers and by takes from
/// the index, and read by every lock-free `Any` receive (on a line of their own, so that
/// the `Any` receivers polling `flags` do not lose theirs at every move).
struct Gate {
    /// The messages aside (the index's length), plus one while a mover claims the next
    /// from the inbox: set before each of a mover's claims and after each take from the
    /// index. What `taken` is derived with (see "Capacity").
    aside: AtomicUsize,
    /// Twice the moves aside begun, plus one while a mover is at work
    /// ([`Shared::settle`]). Also what a spinning selective receiver watches besides the
    /// inbox (see [`Shared::spin_while`]).
    moves: AtomicUsize,
}

/// See [`Shared::flags`].
struct Flags {
    /// Set (after `CLOSED`, under the lock) by the close: what an `Any` receive that
    /// finds the inbox empty looks at, on a line nobody writes until then, rather than
    /// `CLOSED` on the senders' line, which a receiver that keeps finding the inbox
    /// empty would take from them at each look.
    closed: AtomicBool,
    /// The handle families attached as receivers (`State::receivers`, mirrored for the
    /// lock-free requests' "no responders" check).
    attached: AtomicUsize,
}

/// One mailbox: what every handle to it shares.
pub(crate) struct Shared<T> {
    pub(crate) name: std::sync::Arc<str>,
    /// The name as the envelopes' addresses carry it (built once).
    pub(crate) address_name: super::Name,
    /// `None`: unbounded.
    pub(crate) capacity: Option<usize>,
    /// The senders' line: the count word and their view of `taken`.
    senders: CachePadded<SendSide>,
    /// The gate of the lock-free `Any` receives (see "The inbox and the messages
    /// aside"), written under the lock only.
    gate: CachePadded<Gate>,
    /// Registered waiters of each side not notified yet ([`Side`] as index); changed
    /// under the lock, read by the lock-free sends and receives.
    waiting: CachePadded<[AtomicUsize; 2]>,
    inbox: Inbox<T>,
    /// Where `Any` receivers wait: the channels' wait queue (any message will do for
    /// them, so no wake-up needs aiming; see "Waiters that want different things").
    any: Signal,
    /// Words written only under the lock and rarely, read by lock-free operations.
    flags: CachePadded<Flags>,
    state: Mutex<State<T>>,
}

/// Why a send did not queue its message.
pub(crate) enum SendFail {
    /// Full: worth waiting.
    Full,
    Disconnected,
    /// A request found no receiver attached.
    NoResponders,
}

impl<T> State<T> {
    fn waiters(&mut self, side: Side) -> &mut VecDeque<Waiter> {
        match side {
            Side::Send => &mut self.send_waiters,
            Side::Recv => &mut self.recv_waiters,
        }
    }
}

/// What one attempt of a wait loop may use: `None` for the lock-free attempt that
/// comes first, `Some` under the lock.
pub(crate) type Locked<'a, T> = Option<(&'a mut State<T>, &'a mut After)>;

/// The outcome of one attempt inside a wait loop.
pub(crate) enum Attempt<R> {
    Done(R),
    Wait,
}

impl<T> Shared<T> {
    pub(crate) fn new(name: std::sync::Arc<str>, capacity: Option<usize>) -> Self {
        Shared {
            address_name: name.clone().into(),
            name,
            capacity,
            senders: CachePadded::new(SendSide {
                sent: AtomicUsize::new(0),
                taken_seen: AtomicUsize::new(0),
            }),
            gate: CachePadded::new(Gate {
                aside: AtomicUsize::new(0),
                moves: AtomicUsize::new(0),
            }),
            waiting: CachePadded::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
            inbox: Inbox::new(capacity),
            any: Signal::new(),
            flags: CachePadded::new(Flags {
                closed: AtomicBool::new(false),
                attached: AtomicUsize::new(0),
            }),
            state: Mutex::new(State {
                index: Index::default(),
                receivers: 0,
                recv_waiters: VecDeque::new(),
                send_waiters: VecDeque::new(),
                next_key: 0,
            }),
        }
    }

    /// Runs what a critical section left to do after unlocking ([`After`]), and the
    /// notification of the `Any` receivers' queue it owes.
    pub(crate) fn finish(&self, mut after: After) {
        /// The queue's notification runs even if a wake-up before it panics (a user's
        /// waker): nothing else would wake the receivers it is owed to.
        struct Owed<'a>(&'a Signal, AnyWake);
        impl Drop for Owed<'_> {
            fn drop(&mut self) {
                match self.1 {
                    AnyWake::None => {}
                    AnyWake::One => self.0.notify_one(),
                    AnyWake::All => self.0.notify_all(),
                }
            }
        }
        let _owed = Owed(&self.any, core::mem::take(&mut after.any));
        after.run();
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    fn limit(&self) -> usize {
        self.capacity.map_or(MAX_QUEUED, |c| c.min(MAX_QUEUED))
    }

    /// The messages counted in (reserved and not yet taken: queued, plus those whose
    /// send is under way), never less than the truth: `taken` is derived before `sent`
    /// is read, never above the truth, and both only grow.
    fn counted(&self) -> usize {
        let t = self.taken().0;
        let s = self.senders.sent.load(Ordering::SeqCst);
        (s / ONE).wrapping_sub(t)
    }

    /// The messages counted in, never more than the capacity (clamped): here `sent` is
    /// read first, so the value lies between the counts at the loads (or is 0), unless a
    /// move aside is under way (see "Capacity").
    pub(crate) fn len(&self) -> usize {
        let s = self.senders.sent.load(Ordering::SeqCst);
        let t = self.taken().0;
        (s / ONE).saturating_sub(t).min(self.limit())
    }

    /// `taken`, the messages ever taken, and the `aside` count it was derived with (see
    /// "Capacity"): what the inbox's receivers claimed (its front's position, SeqCst),
    /// less what is aside. Never more than the true count at the second load; a value
    /// the true count had between the two loads when `aside` reads 0, or when read
    /// under the lock.
    #[inline]
    fn taken(&self) -> (usize, usize) {
        let received = self.inbox.received();
        // Relaxed: the load of the front's position synchronizes with the claim that
        // moved it there, and a mover counts a message here before it claims it.
        let aside = self.gate.aside.load(Ordering::Relaxed);
        (received.wrapping_sub(aside), aside)
    }

    /// `taken` for a sender that found the mailbox full by its own view of it, exact
    /// enough to decide "full": [`Shared::taken`] when that is a value the count had,
    /// otherwise read again under the lock (`locked`: the caller holds it).
    #[inline]
    fn taken_for_full(&self, locked: bool) -> usize {
        match self.taken() {
            (t, 0) => t,
            (t, _) if locked => t,
            _ => self.taken_locked(),
        }
    }

    /// [`Shared::taken`] under the lock: no mover is at work, so the count aside is the
    /// index's length and nothing aside can change.
    #[cold]
    #[inline(never)]
    fn taken_locked(&self) -> usize {
        let _g = self.lock();
        self.taken().0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.senders.sent.load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Reserves a place for one message in the count word (`locked`: the caller holds
    /// the lock).
    #[inline]
    fn reserve(&self, locked: bool) -> Result<(), SendFail> {
        let limit = self.limit();
        let side = &*self.senders;
        // SeqCst: the re-check of a sender that registered (step S) derives `taken` after
        // this when it looks full.
        let mut s = side.sent.load(Ordering::SeqCst);
        loop {
            if s & CLOSED != 0 {
                return Err(SendFail::Disconnected);
            }
            let n = s / ONE;
            if n.wrapping_sub(side.taken_seen.load(Ordering::Relaxed)) >= limit {
                // Full by our view of `taken`, which may be old: look at the real one.
                // SeqCst (the front's position): step S's re-check.
                let t = self.taken_for_full(locked);
                side.taken_seen.fetch_max(t, Ordering::Relaxed);
                if n.wrapping_sub(t) >= limit {
                    return Err(SendFail::Full);
                }
            }
            // SeqCst: the reservation is the change that step R's re-check looks for,
            // and the first half of close's argument.
            match side
                .sent
                .compare_exchange_weak(s, s + ONE, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => s = now,
            }
        }
    }

    /// The word a spinning waiter of `side` watches besides the inbox (see
    /// [`Shared::spin_while`]): the inbox's front position for senders, the gate's
    /// `moves` for receivers.
    #[cfg(not(loom))]
    fn progress(&self, side: Side) -> usize {
        match side {
            Side::Send => self.inbox.received(),
            Side::Recv => self.gate.moves.load(Ordering::Relaxed),
        }
    }

    /// A send without the lock: reserve, push, and wake a receiver if any is registered.
    ///
    /// Out of line, as [`Shared::recv_any`] is: see there.
    #[inline(never)]
    pub(crate) fn send_fast(&self, tag: u64, msg: Stored<T>) -> Result<(), (SendFail, Stored<T>)> {
        if let Err(why) = self.reserve(false) {
            return Err((why, msg));
        }
        self.inbox.push((tag, msg));
        // The push's claim was a SeqCst RMW: a receiver that registered after these
        // loads re-checks after its registration and finds the message (module docs,
        // step R; for `Any` receivers, the argument of `chan::signal`).
        after_seqcst_rmw();
        self.any.notify_one();
        if load_seqcst(&self.waiting[Side::Recv as usize]) != 0 {
            self.wake_receiver();
        }
        Ok(())
    }

    /// A request without the lock: fails with `NoResponders` when no receiver is
    /// attached, and is otherwise sent as [`Shared::send_fast`] sends.
    ///
    /// The last receiver may detach while the request is on its way in. The detach
    /// swaps 0 into `attached` and then, under the lock, fails every queued request
    /// ([`Shared::detach_receiver`]); the request loads `attached` again after its
    /// push's claim. All are SeqCst, with the pushes' claims and the detach's moves
    /// (whose emptiness checks load the inbox's tail, SeqCst): either the detach's moves
    /// find the request (a claimed slot still being written is waited for) and fail it,
    /// or the request's second load sees 0 and it fails the queued requests itself
    /// (again: failing a failed request does nothing). Its requester then gets
    /// `Unanswered`, as for a request queued just before a detach.
    #[inline]
    pub(crate) fn send_request_fast(
        &self,
        tag: u64,
        msg: Stored<T>,
    ) -> Result<(), (SendFail, Stored<T>)> {
        if load_seqcst(&self.flags.attached) == 0 {
            // The locked path's order: a closed mailbox says so first.
            let why = if self.is_closed() {
                SendFail::Disconnected
            } else {
                SendFail::NoResponders
            };
            return Err((why, msg));
        }
        self.send_fast(tag, msg)?;
        after_seqcst_rmw();
        if load_seqcst(&self.flags.attached) == 0 {
            self.fail_requests_locked();
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn fail_requests_locked(&self) {
        let mut after = After::default();
        let mut g = self.lock();
        if g.receivers == 0 {
            self.fail_requests(&mut g, &mut after);
        }
        drop(g);
        self.finish(after);
    }

    /// A handle family attaches as a receiver (under the lock).
    pub(crate) fn attach_receiver(&self, st: &mut State<T>) {
        st.receivers += 1;
        self.flags.attached.store(st.receivers, Ordering::SeqCst);
    }

    /// A handle family detaches (under the lock); the last one fails the queued
    /// requests: nobody attached is left to answer them (the messages stay queued).
    pub(crate) fn detach_receiver(&self, st: &mut State<T>, after: &mut After) {
        st.receivers -= 1;
        // A SeqCst RMW, ordered before the moves' loads (see `send_request_fast`).
        self.flags.attached.swap(st.receivers, Ordering::SeqCst);
        after_seqcst_rmw();
        if st.receivers == 0 {
            self.fail_requests(st, after);
        }
    }

    /// Drops the reply capability of every queued request (after unlocking, through
    /// `after`): their requesters get `Unanswered`.
    fn fail_requests(&self, st: &mut State<T>, after: &mut After) {
        self.for_each_queued(st, |m| {
            if let Some(r) = m.reply.take() {
                after.drop_later(Box::new(r));
            }
        });
    }

    /// A send found a receiver registered: aim a wake-up at one that can take a message
    /// now.
    #[cold]
    #[inline(never)]
    fn wake_receiver(&self) {
        let mut after = After::default();
        let mut g = self.lock();
        self.pass_on(&mut g, Side::Recv, &mut after);
        drop(g);
        self.finish(after);
    }

    /// A sender waits or left: wake one waiting for room, if any is registered.
    #[cold]
    #[inline(never)]
    fn wake_sender(&self) {
        let mut after = After::default();
        let mut g = self.lock();
        self.pass_on(&mut g, Side::Send, &mut after);
        drop(g);
        self.finish(after);
    }

    /// An `Any` receive without the lock: the inbox's first message, if nothing is aside
    /// and no mover is at work. `Err(false)`: nothing in the inbox now (closed or not: the
    /// `CLOSED` bit lives on the senders' line, which a receiver that keeps finding the
    /// inbox empty would take from them at every look); `Err(true)`: the locked path
    /// decides (messages are aside, or a mover is at work).
    #[inline]
    fn recv_fast(&self) -> Result<Entry<T>, bool> {
        // Step 1. Acquire: a mover's last store, so the count aside is its or later.
        let moves = self.gate.moves.load(Ordering::Acquire);
        if moves & 1 != 0 || self.gate.aside.load(Ordering::Relaxed) != 0 {
            return Err(true);
        }
        let mut gated = false;
        // Asked after the load of the front's position that the claim expects. Relaxed:
        // that load synchronizes with the claim that moved the front there, and a mover
        // counts a message aside before it claims it.
        let open = || {
            gated = self.gate.aside.load(Ordering::Relaxed) != 0;
            !gated
        };
        let Some(e) = self.inbox.pop_if(open) else {
            // Nothing at the front, or the gate closed: empty only if no mover began
            // since the first look (step 3).
            return Err(gated || self.gate.moves.load(Ordering::Relaxed) != moves);
        };
        // The claim, a SeqCst RMW, released the place too (see "Capacity"): then the
        // SeqCst load of the senders' count, the Dekker pair with a sender that
        // registers and then re-checks (step S).
        after_seqcst_rmw();
        if load_seqcst(&self.waiting[Side::Send as usize]) != 0 {
            self.wake_sender();
        }
        Ok(e)
    }

    /// An `Any` receive that does not wait: lock-free when it can, under the lock when
    /// messages are aside (their oldest is the oldest of all) or the mailbox is closed.
    /// `Err(false)`: nothing now; `Err(true)`: closed and nothing left.
    ///
    /// Out of line on purpose. The futures' polls are `#[inline]`, so that the caller's
    /// `async` block inlines them (the entry and the envelope then move once, not
    /// through each layer's return value) in whichever codegen unit it lands; this
    /// call, and [`Shared::send_fast`], keep what it inlines small. Measured on an async
    /// request/reply between two tasks on one worker (`benches/README.md`, thirteenth
    /// session): 199 ns a round trip before, 186 with these two inlined into the polls
    /// as well, 167 with them out of line.
    #[inline(never)]
    pub(crate) fn recv_any(&self) -> Result<Entry<T>, bool> {
        match self.recv_fast() {
            // SeqCst: a waiter's re-check after registering (see `Shared::close`).
            Err(false) if !self.flags.closed.load(Ordering::SeqCst) => Err(false),
            Err(_) => self.recv_any_locked(),
            ok => ok,
        }
    }

    /// The blocking `Any` receive: on the `Any` receivers' queue, with the channels' wait
    /// loop (`chan::signal::block_on`: a spin that polls the inbox's first slot, then a
    /// registration, a re-check and a park). `None`: the deadline passed;
    /// `Some(Err(()))`: closed and nothing left.
    pub(crate) fn wait_any(&self, deadline: Option<Instant>) -> Option<Result<Entry<T>, ()>> {
        block_on(
            &self.any,
            (),
            deadline,
            |_| self.any_worth_trying(),
            |()| self.any_step(),
        )
        .ok()
    }

    /// One poll of an async `Any` receive registered (or not yet) in `wait`.
    #[inline]
    pub(crate) fn poll_any(
        &self,
        wait: &mut AsyncWait,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Entry<T>, ()>> {
        wait.poll(
            &self.any,
            cx,
            &mut Some(()),
            0,
            || self.any_worth_trying(),
            |()| self.any_step(),
        )
    }

    /// Whether an `Any` receive that found nothing is worth another attempt: a message
    /// at the inbox's front, messages aside, or the close (loads only; an attempt on an
    /// empty inbox would load the senders' position and take its line from them).
    #[inline]
    pub(crate) fn any_worth_trying(&self) -> bool {
        self.inbox.recv_ready()
            || self.gate.aside.load(Ordering::Relaxed) != 0
            || self.flags.closed.load(Ordering::Relaxed)
    }

    /// Withdraws an async `Any` receive (its future was dropped); a wake-up it received
    /// passes on to another `Any` receiver.
    pub(crate) fn cancel_any(&self, wait: &mut AsyncWait) {
        wait.cancel(&self.any);
    }

    /// One attempt of an `Any` receive that waits on `any`: [`Shared::recv_any`], whose
    /// empty answer is final (it looks at the `closed` flag), as the re-check after
    /// registering must be. (The close raises the flag and then notifies every `Any`
    /// receiver; a send's claim is a SeqCst RMW followed by its notification.)
    fn any_step(&self) -> Step<Result<Entry<T>, ()>, ()> {
        match self.recv_any() {
            Ok(e) => Step::Done(Ok(e)),
            Err(true) => Step::Done(Err(())),
            Err(false) => Step::Wait(()),
        }
    }

    #[cold]
    #[inline(never)]
    fn recv_any_locked(&self) -> Result<Entry<T>, bool> {
        let mut after = After::default();
        let res = self.try_take(&mut self.lock(), Sel::Any, &mut after);
        self.finish(after);
        res
    }

    /// Moves the inbox aside, into the index (the "mover"). Under the lock.
    ///
    /// It moves at most as many messages as were counted beyond those aside when it
    /// started: every message in the inbox then is counted, so that covers all of them
    /// (and a message whose send's claim came before this load in the SeqCst order, the
    /// re-check of step R), while senders that keep pushing cannot hold the mover, and
    /// the lock, forever. What it leaves is younger than what it moved, so (A) holds.
    fn settle(&self, st: &mut State<T>) {
        // Nothing counted beyond what is aside: nothing in the inbox, nothing on its way
        // in. SeqCst: the re-check of step R when a receiver registers.
        let counted = self.counted();
        let Some(n) = counted.checked_sub(st.index.len()).filter(|&n| n > 0) else {
            return;
        };
        // A mover at work (step 3): odd until it is done.
        let moves = self.gate.moves.load(Ordering::Relaxed);
        self.gate
            .moves
            .store(moves.wrapping_add(1), Ordering::Release);
        for _ in 0..n {
            // Counted aside before it is claimed (step 2): a lock-free receive whose
            // claim would come after this one sees the count and takes the locked path.
            // Release: as the other stores here, ordered before the claim, which
            // publishes it to whoever loads the front's position after the claim.
            self.gate.aside.store(st.index.len() + 1, Ordering::Release);
            let Some((tag, m)) = self.inbox.pop() else {
                self.gate.aside.store(st.index.len(), Ordering::Release);
                break;
            };
            let from = m.from;
            st.index.push(tag, from, m);
        }
        self.gate
            .moves
            .store(moves.wrapping_add(2), Ordering::Release);
    }

    /// Takes a found message out of the index, lowering the gate's `aside` count (which
    /// releases its place, and opens the gate when the index empties), and wakes a
    /// sender waiting for room (the lock is held).
    fn take_aside(
        &self,
        st: &mut State<T>,
        found: super::index::Found,
        after: &mut After,
    ) -> Entry<T> {
        let e = st.index.take(found);
        // Its place is free from here (see "Capacity"); with the index empty, the gate
        // opens (step 1).
        self.gate.aside.store(st.index.len(), Ordering::Release);
        self.notify_sender(st, after);
        e
    }

    /// Notifies a registered waiter of `side`: it is no longer counted in `waiting`
    /// (a later change need not lock to notify nobody while it is on its way; it
    /// re-checks in its next critical section, step 4).
    fn notify(&self, side: Side, w: &mut Waiter, after: &mut After) {
        if let Some(wake) = w.wake.take() {
            self.waiting[side as usize].fetch_sub(1, Ordering::Relaxed);
            after.wake(Some(wake));
        }
    }

    fn notify_sender(&self, st: &mut State<T>, after: &mut After) {
        if let Some(w) = st.send_waiters.iter_mut().find(|w| w.wake.is_some()) {
            self.notify(Side::Send, w, after);
        }
    }

    fn register(&self, st: &mut State<T>, side: Side, sel: Option<Sel>, wake: Wake) -> u64 {
        let key = st.next_key;
        st.next_key += 1;
        st.waiters(side).push_back(Waiter {
            key,
            sel,
            wake: Some(wake),
        });
        // SeqCst RMW: the registration of steps R and S.
        self.waiting[side as usize].fetch_add(1, Ordering::SeqCst);
        after_seqcst_rmw();
        key
    }

    /// Removes a registered wait; says whether it had been notified (then the caller
    /// passes on, step 4 of the argument). An unused wake-up is dropped after unlocking.
    fn leave(&self, st: &mut State<T>, side: Side, key: u64, after: &mut After) -> bool {
        let list = st.waiters(side);
        let i = list
            .iter()
            .position(|w| w.key == key)
            .expect("a registered wait keeps its entry until it leaves");
        let w = list.remove(i).expect("index in range");
        if w.wake.is_some() {
            self.waiting[side as usize].fetch_sub(1, Ordering::Relaxed);
        }
        match w.wake {
            None => true,
            Some(Wake::Task(waker)) => {
                after.drop_waker(waker);
                false
            }
            Some(Wake::Thread(_)) => false,
        }
    }

    /// Step 4 (and a send's step 2): notify the first unnotified waiter of `side` that
    /// can proceed now, if any.
    fn pass_on(&self, st: &mut State<T>, side: Side, after: &mut After) {
        match side {
            Side::Recv => {
                // Only selective receivers register here (`Any` receivers wait on
                // `any`): aiming needs the inbox aside.
                if !st.recv_waiters.iter().any(|w| w.wake.is_some()) {
                    return;
                }
                self.settle(st);
                let index = &st.index;
                let w = st
                    .recv_waiters
                    .iter_mut()
                    .filter(|w| w.wake.is_some())
                    .find(|w| index.find(w.sel.expect("receivers select")).is_some());
                if let Some(w) = w {
                    self.notify(Side::Recv, w, after);
                }
            }
            Side::Send => {
                if self.len() < self.limit() {
                    self.notify_sender(st, after);
                }
            }
        }
    }

    /// One send attempt under the lock (requests: "no responders" is decided with the
    /// push, so a request is never queued after the last receiver detached).
    pub(crate) fn try_push(
        &self,
        st: &mut State<T>,
        tag: u64,
        msg: Stored<T>,
        need_receiver: bool,
        after: &mut After,
    ) -> Result<(), (SendFail, Stored<T>)> {
        if self.is_closed() {
            return Err((SendFail::Disconnected, msg));
        }
        if need_receiver && st.receivers == 0 {
            return Err((SendFail::NoResponders, msg));
        }
        if let Err(why) = self.reserve(true) {
            return Err((why, msg));
        }
        self.inbox.push((tag, msg));
        // Step 2: aim the wake-up at a receiver that can take a message; and wake an
        // `Any` receiver, after unlocking.
        self.pass_on(st, Side::Recv, after);
        after.any = AnyWake::One;
        Ok(())
    }

    /// One receive attempt under the lock: the message `sel` takes, `Err(true)` when
    /// there is none and the mailbox is closed, `Err(false)` when there is none yet.
    pub(crate) fn try_take(
        &self,
        st: &mut State<T>,
        sel: Sel,
        after: &mut After,
    ) -> Result<Entry<T>, bool> {
        if sel == Sel::Any && st.index.len() == 0 {
            // Nothing aside: the oldest message is the inbox's first.
            if let Some(e) = self.inbox.pop() {
                // The claim released its place (see "Capacity").
                self.notify_sender(st, after);
                return Ok(e);
            }
        } else if sel == Sel::Any {
            // Everything aside is older than everything in the inbox.
            let found = st.index.find(sel).expect("a non-empty index has an oldest");
            return Ok(self.take_aside(st, found, after));
        }
        let backoff = Backoff::new();
        loop {
            self.settle(st);
            if let Some(found) = st.index.find(sel) {
                return Ok(self.take_aside(st, found, after));
            }
            if !self.is_closed() {
                return Err(false);
            }
            // Closed: a send that reserved its place before the close may still be on
            // its way into the inbox; nothing else can come (see "Close").
            if self.counted() == st.index.len() {
                return Err(true);
            }
            backoff.snooze();
        }
    }

    /// Marks the mailbox closed and wakes every waiter.
    pub(crate) fn close(&self, st: &mut State<T>, after: &mut After) {
        self.senders.sent.fetch_or(CLOSED, Ordering::SeqCst);
        // Before the notification of every `Any` receiver (after unlocking), which takes
        // their queue's counts and lock: a receiver that registers after it re-checks
        // and sees the flag; one registered before is woken.
        self.flags.closed.store(true, Ordering::SeqCst);
        after.any = AnyWake::All;
        for w in &mut st.recv_waiters {
            self.notify(Side::Recv, w, after);
        }
        for w in &mut st.send_waiters {
            self.notify(Side::Send, w, after);
        }
    }

    /// Moves every queued message aside and runs `f` on each (rare events: the last
    /// receiver detaching).
    pub(crate) fn for_each_queued(&self, st: &mut State<T>, f: impl FnMut(&mut Stored<T>)) {
        self.settle(st);
        st.index.for_each_mut(f);
    }

    /// Spins until a change worth another attempt shows, or `spin` is over; says which.
    ///
    /// A receiver watches the inbox's first slot for a message published there, as the
    /// channels' receivers do (`Queue::recv_ready`): `sent`, which every send writes,
    /// would be taken from the senders on every poll, and would cost each send a cache
    /// line transfer more while a receiver spins. It also watches the gate's `moves`
    /// (`seen`: its value when this receiver's last attempt, under the lock, had moved
    /// what there was to move): another receiver's attempt may have moved a message
    /// this one wants aside before it was seen at the front, as the receive of a sender
    /// that then waits for an answer does with its own message. Between the two, every
    /// message counted after that attempt shows, except one whose push is still under
    /// way when another receiver moves the inbox (its registration's re-check finds
    /// it). It looks at the `CLOSED` bit once its polls are far apart (yields) only, and
    /// ends the spin when it is set: the attempt under the lock after the spin reports
    /// the close.
    ///
    /// A sender waits until the inbox's front moved from `seen` and a batch of places is
    /// free (half the capacity, at most 512), for the reason `chan::array` gives (a
    /// sender that takes each place as it frees keeps the two sides on one cache line),
    /// or the mailbox closed. With a ring for inbox it first asks the ring whether a
    /// batch of its slots is free (`Queue::send_batch_free`, the stamp of a slot ahead,
    /// which the receivers write once a lap), and only then derives `taken`: a receive
    /// frees its slot a moment after its claim released the place, so while nothing is
    /// aside the ring shows a batch of free places a moment late at most.
    #[cfg(not(loom))]
    fn spin_while(&self, side: Side, seen: usize, spin: &mut Spin) -> bool {
        if side == Side::Recv {
            while spin.pause() {
                if self.inbox.recv_ready() || self.progress(Side::Recv) != seen {
                    return true;
                }
                if spin.yielding() && self.is_closed() {
                    // Closed: the attempt under the lock, after registering, decides.
                    return false;
                }
            }
            return false;
        }
        let batch = self.capacity.map_or(1, |cap| (cap / 2).clamp(1, 512));
        let limit = self.limit();
        while spin.pause() {
            if !self.inbox.send_batch_free() || self.progress(Side::Send) == seen {
                continue;
            }
            if self.is_closed() || self.counted() + batch <= limit {
                return true;
            }
        }
        false
    }

    /// Blocks until `attempt` finishes or `deadline` passes (`None` then). `attempt` runs
    /// first without the lock (`None`), then under it; `sel` is what a receiver registers
    /// (`None` for senders).
    ///
    /// `lock_free`: the attempt can succeed without the lock (a plain send; `Any`
    /// receives wait on their own queue, [`Shared::wait_any`]), and the caller has just
    /// made it and found nothing to do; the wait then
    /// spins without locking first, trying again whenever the progress count changes,
    /// as the channels' waits do, and once the spin is over (or without one) registers
    /// at once: the re-check after registering (steps R and S) is its first attempt
    /// under the lock, as in [`Shared::poll`].
    pub(crate) fn block<R>(
        &self,
        side: Side,
        sel: Option<Sel>,
        deadline: Option<Instant>,
        lock_free: bool,
        mut attempt: impl FnMut(Locked<'_, T>) -> Attempt<R>,
    ) -> Option<R> {
        // The lock-free spin. Not under loom (see below).
        #[cfg(not(loom))]
        if lock_free {
            let mut spin = Spin::new();
            loop {
                let seen = self.progress(side);
                if let Attempt::Done(r) = attempt(None) {
                    return Some(r);
                }
                if !self.spin_while(side, seen, &mut spin) {
                    break;
                }
            }
        }
        // The last attempt, the caller's or the spin's, found nothing a moment ago.
        let mut just_tried = lock_free;
        let mut deadline = Deadline::new(deadline);
        let mut key: Option<u64> = None;
        // The spin before the first registration: `Some` while it may go on. Not under
        // loom, where it would only multiply the interleavings before the waits that
        // matter. A lock-free wait has spun already.
        #[cfg(not(loom))]
        let mut spin: Option<Spin> = None;
        #[cfg(not(loom))]
        let mut first = !lock_free;
        loop {
            // Not under loom: there it would be one more unregistered attempt after the
            // caller's inline one, and the model would explore every interleaving around
            // it again (as `chan::signal`'s spin); the waits that can lose a wake-up are
            // all after it.
            if !cfg!(loom)
                && key.is_none()
                && !just_tried
                && let Attempt::Done(r) = attempt(None)
            {
                return Some(r);
            }
            let mut after = After::default();
            let mut g = self.lock();
            let st = &mut *g;
            let notified = key
                .take()
                .is_some_and(|k| self.leave(st, side, k, &mut after));
            #[cfg(not(loom))]
            let mut seen = None;
            let first_try = if core::mem::take(&mut just_tried) {
                Attempt::Wait
            } else {
                attempt(Some((&mut *st, &mut after)))
            };
            let out = match first_try {
                Attempt::Done(r) => Some(Some(r)),
                Attempt::Wait if deadline.passed() => Some(None),
                #[cfg(not(loom))]
                Attempt::Wait if spin.is_some() || first => {
                    // Not registered yet: nobody will wake us, and nothing in the
                    // argument concerns us until we register.
                    first = false;
                    spin.get_or_insert_with(Spin::new);
                    seen = Some(self.progress(side));
                    None
                }
                Attempt::Wait => {
                    #[cfg(not(loom))]
                    {
                        first = false;
                    }
                    let k = self.register(st, side, sel, Wake::Thread(thread::current()));
                    // The re-check after registering (steps R and S).
                    match attempt(Some((&mut *st, &mut after))) {
                        Attempt::Done(r) => {
                            self.leave(st, side, k, &mut after);
                            Some(Some(r))
                        }
                        Attempt::Wait => {
                            key = Some(k);
                            None
                        }
                    }
                }
            };
            if notified {
                self.pass_on(st, side, &mut after);
            }
            drop(g);
            self.finish(after);
            if let Some(out) = out {
                return out;
            }
            #[cfg(not(loom))]
            if let (Some(seen), Some(s)) = (seen, spin.as_mut()) {
                if !self.spin_while(side, seen, s) {
                    // Nothing changed: one more attempt, which registers.
                    spin = None;
                }
                continue;
            }
            park_until(&mut deadline);
        }
    }

    /// One poll of an async wait whose registration is `key`. A poll that must wait
    /// registers a clone of its waker in the critical section of its failed attempt:
    /// cloning a waker is the executor's reference count, cloned under a lock as the
    /// channels' async waits do (`chan::signal`); the waker's wake and drop, which may
    /// run more of the executor, come after unlocking.
    ///
    /// `lock_free`: as for [`Shared::block`]; a poll whose lock-free attempt just found
    /// nothing to do registers at once, and the re-check after registering (steps R and
    /// S) is its one attempt under the lock (an attempt before registering would look
    /// at what the lock-free one saw a moment ago).
    pub(crate) fn poll<R>(
        &self,
        side: Side,
        sel: Option<Sel>,
        lock_free: bool,
        key: &mut Option<u64>,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(Locked<'_, T>) -> Attempt<R>,
    ) -> Poll<R> {
        let mut tried = false;
        if key.is_none() {
            if let Attempt::Done(r) = attempt(None) {
                return Poll::Ready(r);
            }
            tried = lock_free;
        }
        let mut after = After::default();
        let mut g = self.lock();
        let st = &mut *g;
        let notified = key
            .take()
            .is_some_and(|k| self.leave(st, side, k, &mut after));
        let first = if tried {
            Attempt::Wait
        } else {
            attempt(Some((&mut *st, &mut after)))
        };
        let out = match first {
            Attempt::Done(r) => Poll::Ready(r),
            Attempt::Wait => {
                let k = self.register(st, side, sel, Wake::Task(cx.waker().clone()));
                match attempt(Some((&mut *st, &mut after))) {
                    Attempt::Done(r) => {
                        self.leave(st, side, k, &mut after);
                        Poll::Ready(r)
                    }
                    Attempt::Wait => {
                        *key = Some(k);
                        Poll::Pending
                    }
                }
            }
        };
        if notified {
            self.pass_on(st, side, &mut after);
        }
        drop(g);
        self.finish(after);
        out
    }

    /// Withdraws an async wait (its future was dropped); a wake-up it received passes on.
    /// Inline, as every future's drop calls it, nearly always with nothing registered.
    #[inline]
    pub(crate) fn cancel(&self, side: Side, key: &mut Option<u64>) {
        if let Some(k) = key.take() {
            self.withdraw(side, k);
        }
    }

    /// [`Shared::cancel`] of a registered wait: leaves the waiter list under the lock.
    #[cold]
    #[inline(never)]
    fn withdraw(&self, side: Side, k: u64) {
        let mut after = After::default();
        let mut g = self.lock();
        let st = &mut *g;
        if self.leave(st, side, k, &mut after) {
            self.pass_on(st, side, &mut after);
        }
        drop(g);
        self.finish(after);
    }
}
