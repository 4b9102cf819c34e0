//! Mailboxes in shared memory: [`Mailbox`] and [`ByteMailbox`], the cross-process twins
//! of [`crate::mailbox::Mailbox`], with the same [`Envelope`], [`Address`] and
//! [`Select`].
//!
//! ```
//! use conduit::mailbox::Select;
//! use conduit::shm;
//!
//! let name = format!("doc-shm-mailbox-{}", std::process::id());
//! // Usually in several processes; any process that knows the name can open it.
//! let jobs = shm::Mailbox::<u64>::create(&name, 16)?;
//! let boss = shm::Mailbox::<u64>::open(&name)?;
//! boss.send_tagged(2, 20).unwrap();
//! boss.send_tagged(1, 10).unwrap();
//! jobs.send_tagged(3, 30).unwrap();
//! // Priority order: the lowest tag first.
//! let env = jobs.recv_select(Select::TagAtMost(u64::MAX)).unwrap();
//! assert_eq!((env.tag(), *env.body()), (1, 10));
//! assert_eq!(env.from(), boss.address());
//! assert_eq!(env.from().pid(), Some(std::process::id()));
//! // From one sender only.
//! let env = jobs.recv_select(Select::From(jobs.address().clone())).unwrap();
//! assert_eq!(*env.body(), 30);
//! jobs.close()?; // the name is gone; receivers drain, then get `Disconnected`
//! assert_eq!(*jobs.recv().unwrap().body(), 20);
//! assert!(jobs.recv().is_err());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # The model
//! As in-process ([`crate::mailbox`]), with these differences:
//! - **Namespace.** A mailbox is a segment in `/dev/shm`, like a channel, named like one
//!   and opened with the same [`Options`] (`create`, `create_new`, `open_existing`, the
//!   default; `capacity`, rounded up to a power of two, [`super::DEFAULT_CAPACITY`] if
//!   unset; `mode`; `max_message` and `max_bytes` for [`ByteMailbox`]). It outlives its handles and
//!   processes, like a SysV queue, until [`Mailbox::close`] (or [`super::unlink`]).
//! - **Addresses** carry the pid of the handle family's process
//!   ([`Address::pid`]), so they are distinct across the processes of the machine.
//! - **Close.** [`Mailbox::close`] marks the mailbox closed in the segment, wakes every
//!   waiter in every process and removes the name: sends then fail with the message
//!   handed back (`Disconnected`), receivers take what is queued (a selective receive:
//!   what it matches) and then get `Disconnected`. Nothing queued is lost by closing. A
//!   later `open` of the name makes a new mailbox (`create`) or fails with `NotFound`.
//! - **Request/reply** ([`Mailbox::request`]): the reply has the request's type (a
//!   byte message for [`ByteMailbox`]); see "Requests" below.
//! - A peer's death does not disconnect anything: a mailbox has no sides, and is only
//!   ever closed by `close`.
//!
//! Opening another kind (a channel's name), another type, another `max_message` or
//! another `max_bytes` (each checked only when the opener's [`Options`] set it) is
//! [`std::io::ErrorKind::InvalidData`] naming what differs; a bad name `InvalidInput`;
//! a missing one `NotFound` (without `create`).
//!
//! # Layout
//! The segment has the channels' header and peer table ([`crate::shm`], layout version
//! 4, kinds 4 and 5), then:
//! - the **slots**, `capacity` of them, 80 bytes of control words and the payload; the
//!   control words are the channels' stamp and length (the stamp unused: only a hostile
//!   peer's fake intents could make maintenance write it), then the mailbox's: a state
//!   word (free, queued, or held for a reply), `seq`, tag, the sender's pid and address
//!   id, for a request the requester's lock word, three (prev, next) pairs of `u32` slot
//!   links: on the *global list* (every queued message, oldest first), on its *tag lane*
//!   and on its *sender lane*, and for a request the replier's lock word and the reply
//!   state; the payload is copied in whole 8-byte atomic words, as in the rings;
//! - the **index**: a control block (the lock word and its waiter count, the closed flag,
//!   the count of queued messages and their bytes summed (byte mailboxes), the free
//!   list's head, the global and held lists'
//!   ends, the next `seq`, a "built" word), then a **tag table** and a **sender table**
//!   of `capacity` records each (key, lane head, lane tail), kept sorted by key (tag;
//!   (pid, address id)) and searched by bisection. A key has a record while it has a
//!   queued message, so neither table can overflow.
//!
//! The channels' ring positions are unused; `shm::inspect` reports the index's count.
//!
//! # The lock, and why it is enough
//! A selective take unlinks a message from the middle of three lists and may remove two
//! table records: a multi-word update, as in-process (`src/mailbox/state.rs`). Every
//! operation on the index runs under one lock in the segment:
//! 1. The lock word holds 0 when free, or its holder's peer slot + 1 and that slot's
//!    generation (24 bits). It is taken by a CAS from 0 (SeqCst; Acquire is what
//!    matters: it pairs with the release) and released by a SeqCst swap to 0, after
//!    which the releaser wakes one sleeper if the waiter count says any sleeps (the
//!    handshake of `futex.rs`: count, load, sleep only on the loaded value).
//! 2. A thread that cannot take it spins briefly, then sleeps on the word for at most 50
//!    ms at a time. After each sleep that timed out it **probes the holder**: the holder
//!    is gone when the word names no peer slot (garbage), or the slot is not LIVE in the
//!    generation the word names (detached or reaped), or the slot's liveness lock can be
//!    taken (the process died: see `peers.rs`). A gone holder's lock is taken over by a
//!    CAS from the very value that named it (so two survivors cannot both take it).
//!    A live holder is never robbed: it holds its liveness lock and its slot's
//!    generation for as long as it can be inside an operation.
//! 3. **Crash consistency without a journal.** The slots are the source of truth; the
//!    index is an acceleration structure. A send writes the payload and envelope of a
//!    free slot, *then* marks it queued, then links it; a receive reads the payload,
//!    unlinks the slot, *then* marks it free. Whoever takes the lock over from a dead
//!    holder **rebuilds** the index from the slots: every slot marked queued (and, for
//!    bytes, with a plausible length) is linked again in `seq` order, every other one is
//!    freed, and the count and the bytes queued are summed again from the slots linked
//!    (a sum over the bound, which only a peer's writes make, leaves the index unbuilt:
//!    "inconsistent" below). So a send that had marked its slot is delivered and one that had not never
//!    happened (its call never returned: nothing was promised), and a receive that died
//!    before freeing its slot leaves the message queued for the next receiver. No
//!    completed send is lost; nothing wedges.
//! 4. **Hostile memory.** Nothing read from the segment is trusted: every slot index is
//!    checked against the capacity, every table count against the capacity, every lane
//!    head against its record's key and the slot's state, every unlink against its
//!    neighbours' back links; every walk is bounded (bisection by the checked count, the
//!    `TagExcept` scan by the checked count, list updates touch two neighbours). An
//!    operation that finds an inconsistency before its commit point (a send's slot
//!    marked queued, a receive's slot freed or held) rebuilds the index and tries once
//!    more; if that fails too, it reports nothing found (`Empty`/`Full`). One that finds
//!    it after completes and leaves the rebuild to the next operation (a retry would
//!    send or take twice). A value in the lock
//!    word that names no live holder is a dead holder (2). A peer that writes garbage
//!    can thus lose or garble messages, or make operations fail or wait, never cause
//!    out-of-bounds accesses, undefined behaviour, a panic, or an unbounded loop. (A
//!    hostile peer can also hold the lock forever, as its own live holder: blocking
//!    calls then wait, timed ones time out, `try_` ones report `Empty`/`Full` after
//!    100 ms.)
//!
//! # Requests
//! A request is a message whose slot also carries the requester's lock word (naming its
//! peer slot and generation), a *reply state* word, and, once taken, the replier's lock
//! word. The slot itself is the reply record: nothing is correlated, nothing scanned.
//! 1. [`Mailbox::request`] fails at once with `NoResponders` unless a handle family
//!    that has received (any receive call, `try_recv` included, gives a family the
//!    receiver role in the peer table) is attached. Otherwise it sends the message
//!    with the reply state PENDING and sleeps on that word (futex, slices of at most
//!    100 ms).
//! 2. A receive that takes a request does not free its slot: the slot leaves the index
//!    for the *held* list, and the envelope carries a [`Reply`](crate::mailbox::Reply)
//!    for it ([`Envelope::take_reply::<T>`](crate::mailbox::Envelope::take_reply)).
//!    Replying writes the answer into the slot's payload and moves the state PENDING →
//!    REPLIED (a CAS, then a futex wake only if the requester sleeps); dropping the
//!    `Reply` moves it to ABANDONED. The requester then reads the answer (if any) and
//!    *retires* the slot: REPLIED or ABANDONED → DONE (a CAS). A DONE slot is released
//!    (freed) by the requester family's next send, under the lock that send takes
//!    anyway, or by any send that finds no free slot (6), or by a rebuild.
//! 3. None of this takes the lock: a held slot is off the index, and while it is held
//!    only the two ends of its exchange write it, each in its turn: the replier writes
//!    the payload while the state is PENDING and publishes it with its CAS (SeqCst,
//!    which releases it); the requester reads it after loading REPLIED (which acquires
//!    it) and publishes that it is done with its own CAS to DONE; only then may a lock
//!    holder free the slot for reuse. Nobody else frees a held slot that is not DONE
//!    while both ends live (6). Each end first checks that the slot is still held for
//!    its request (state and `seq`), so a garbled slot fails the exchange
//!    (`Unanswered`) rather than touch another one; the words are atomics, so a hostile
//!    peer's writes in between garble the reply at worst. A crash in the middle leaves a
//!    held slot whose state says who is to end it (5, 6).
//! 4. A requester that stops waiting (its deadline) moves PENDING → GONE; whoever
//!    finds GONE later (the replier's answer or drop, or the receive of a still queued
//!    request) frees the slot, under the lock, and the answer is handed back
//!    (`Err(value)`). Whichever CAS wins decides: the reply is delivered, or handed
//!    back, never both.
//! 5. After each slice without news the requester probes: a held request whose
//!    replier is gone (the lock-holder test of "The lock") is abandoned (`Unanswered`,
//!    within about 100 ms of the death); a queued one with no receiver attached any more
//!    is given up (`Unanswered`; the message stays queued, and its eventual receiver
//!    finds it GONE).
//! 6. A requester killed with `kill -9` leaves a held slot nobody will free. A send
//!    that finds no free slot walks the held list and releases the slots that are DONE
//!    (without a probe), those whose requester is gone (a pending state becomes GONE
//!    first, so that a live replier releases it instead when it answers) and those
//!    whose requester left and whose replier is gone too.
//! 7. Async requests ([`Mailbox::request_async`], [`RequestFut`]) send as async sends
//!    do, then wait through the process's helper thread on the receivers' words, which
//!    a replier bumps after answering (only while async waits are registered); their
//!    probes (5) run at most once per 100 ms of polls, and the helper's maintenance
//!    wakes them when a peer dies. Dropping a sent request's future is step 4.
//!
//! Held slots count against the capacity until released (a DONE slot: until the next
//! send of its requester family, or of anyone when no other slot is free). A round trip
//! takes the lock twice: the request's send (which also releases the family's previous
//! DONE slot) and the replier's receive.
//!
//! # Costs
//! With `t` the number of distinct tags queued and `s` the number of distinct senders
//! with queued messages (never the number of messages), all under the lock:
//!
//! | operation | cost |
//! |---|---|
//! | `send` | O(log t + log s) to find its lanes, O(1) to link; O(t) (O(s)) record moves when its tag (sender) is new |
//! | receive `Any` | O(1): the global list's head |
//! | receive `Tag(x)` | O(log t): bisection, the lane's head |
//! | receive `TagAtMost(n)` | O(1): the first record of the tag table (the lowest tag) |
//! | receive `TagExcept(x)` | O(1) if the oldest message's tag is not `x`, else O(t): the oldest of the other lanes' heads |
//! | receive `From(a)` | O(log s) |
//! | taking the found message | O(log t + log s); O(t) (O(s)) record moves when its lane empties; O(1) when it is the only one queued (the index just empties) |
//! | recovery (lock taken over, inconsistency found) | O(capacity · log capacity), once |
//!
//! No selection looks at a message of a tag (or sender) it does not take, except
//! `TagExcept(x)` at the one oldest message, of tag `x`.
//!
//! # Waiting
//! The fast path (the lock free, room or a matching message there) makes no system call.
//! A receive that finds the lock free and the count of queued messages 0 (read without
//! the lock: `Index::empty_unlocked` states why that is enough) reports `Empty` without
//! taking the lock, so a receiver polling an empty mailbox does not contend with the
//! sender it waits for. A receive that found nothing spins briefly before it sleeps, and
//! tries again only once the mailbox's next sequence number has moved (a message was
//! sent since) or the mailbox closed: the count would not do, since messages of other
//! selections keep it above zero, and retrying at every poll would take the lock from
//! the sender it waits for. Blocking receivers sleep on
//! the receivers' futex word of the segment (the channels' `SideSignal`), senders on the
//! senders', in slices of at most 100 ms, with the waiter counts and the handshake of
//! `futex.rs` (the commit is the lock's SeqCst release swap). A send wakes **every**
//! sleeping receiver (they wait for different selections; each re-checks its own): a
//! thundering herd, accepted for simplicity, costing one futex wake per send only while
//! receivers sleep. A receive wakes one sender (they all wait for the same thing: a free
//! slot; the end of a request exchange, which frees a held slot, wakes one too) — except
//! in a [`ByteMailbox`] bounded by bytes more tightly than by its slots
//! ([`Options::max_bytes`]), where it wakes every sleeping sender: the bytes it freed may
//! fit one waiter's message and not another's, and a single wake-up could go to the
//! wrong one. Async
//! operations ([`MailboxFut`]) wait through the process's helper thread, as the
//! channels' do.
//!
//! # Limits
//! - Capacity 1 to 4 194 304 slots (a power of two), as for channels; the default is
//!   [`super::DEFAULT_CAPACITY`]. The capacity counts messages.
//! - A [`ByteMailbox`] also holds at most [`ByteMailbox::max_bytes`] bytes queued, its
//!   messages' lengths summed, like SysV's `msg_qbytes`: [`Options::max_bytes`] of its
//!   creator (stored in the header, checked on open, fixed for the mailbox's life; by
//!   default `capacity × max_message`, no bound beyond the slots). A send that would go
//!   over it finds the mailbox full, like one that finds no free slot; a message longer
//!   than the bound by itself is `InvalidInput`. The running total is kept in the index
//!   under the lock. A request counts while queued; once taken by a replier its slot
//!   stays held for the reply (counting against the capacity, above) but its bytes no
//!   longer count.
//! - 64 attached handle families at once ([`super::MAX_PEERS`]).
//!
//! # Crash bounds
//! A lock holder's death is noticed by the threads waiting for the lock after at most
//! one 50 ms sleep (then a probe, the take-over and one rebuild); a replier's death by
//! its requester after at most one 100 ms sleep. Both well under a second, while anyone
//! waits.
#![cfg_attr(loom, allow(dead_code))]

mod core;
mod index;

use ::core::marker::PhantomData;
use std::io;
use std::time::{Duration, Instant};

use self::core::{Core, LockWait, RecvFail, RequestFail, SendFail};
pub use self::core::{MailboxFut, RequestFut};
pub(crate) use self::index::{BYTES_OFFSET, LEN_OFFSET, index_size};
use super::ShmSafe;
use super::bytes::{read_bytes, write_bytes};
use super::channel::{read_typed, write_typed};
use super::header::{Fingerprint, Kind};
use super::options::Options;
use super::segment::Side;
use crate::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::mailbox::{Address, Envelope, RequestError, Select};

/// Defines the receive methods (`recv`, `try_recv`, `recv_timeout`, `recv_deadline`,
/// `recv_async` and the `recv_select` forms), the accessors and `close` on a mailbox
/// handle type with a `core: Core` field, each with a doctest:
/// - `$ty`: the handle type's path as in `shm::Mailbox::<u64>`, `$body`: the body type;
/// - `$read`: the function that reads a body out of a slot, `$reply` the one that writes
///   a reply into one (`false` if it does not fit);
/// - `$fill`: a statement sending one message tagged 7 on handle `mb`, `$one`: its
///   body as an expression.
macro_rules! mailbox_receive {
    ($ty:literal, $body:ty, $read:expr, $reply:expr, $fill:literal, $one:literal) => {
        /// The mailbox's name.
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-name-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        /// assert_eq!(mb.name(), name);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn name(&self) -> &str {
            self.core.name()
        }

        /// This handle family's address: what its messages carry as
        /// [`Envelope::from`], and what [`Select::From`] selects. Clones share it;
        /// every `open`/`create`/`with` makes a new one; it includes the pid.
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-address-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = concat!("let other = conduit::", $ty, "::open(&name)?;")]
        /// assert_eq!(mb.address(), mb.clone().address());
        /// assert_ne!(mb.address(), other.address());
        /// assert_eq!(mb.address().pid(), Some(std::process::id()));
        /// assert_eq!(mb.address().mailbox(), name);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn address(&self) -> &Address {
            self.core.address()
        }

        /// The number of messages queued (a snapshot).
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-len-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// assert_eq!(mb.len(), 1);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn len(&self) -> usize {
            self.core.len()
        }

        /// Whether no message is queued.
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-is-empty-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        /// assert!(mb.is_empty());
        #[doc = $fill]
        /// assert!(!mb.is_empty());
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// The number of messages the mailbox holds at most: always `Some` (shared
        /// memory is bounded), the capacity asked for rounded up to a power of two.
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-capacity-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 3)?;")]
        /// assert_eq!(mb.capacity(), Some(4));
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn capacity(&self) -> Option<usize> {
            Some(self.core.capacity())
        }

        /// Whether the mailbox was closed (by any process).
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-is-closed-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        /// assert!(!mb.is_closed());
        /// mb.close()?;
        /// assert!(mb.is_closed());
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn is_closed(&self) -> bool {
            self.core.is_closed()
        }

        /// Closes the mailbox, for every process: sends fail from now on (the message
        /// handed back), receivers take what is queued and then get `Disconnected`,
        /// every waiter is woken, and the name is removed (if it still names this
        /// mailbox), so that a later `create` makes a new one. Errors only if removing
        /// the name fails for another reason than its absence.
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-close-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// mb.close()?;
        /// assert!(conduit::shm::list()?.iter().all(|n| *n != name));
        /// assert!(mb.recv().is_ok()); // drained...
        /// assert!(mb.recv().is_err()); // ...then disconnected
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn close(&self) -> io::Result<()> {
            self.core.close()
        }

        /// Receives the oldest message, waiting for one; `Err` once the mailbox is
        /// closed and empty.
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-recv-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let env = mb.recv().unwrap();
        #[doc = concat!("assert_eq!((env.tag(), env.into_body()), (7, ", $one, "));")]
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv(&self) -> Result<Envelope<$body>, RecvError> {
            self.recv_select(Select::Any)
        }

        /// Receives the oldest message if one is queued.
        ///
        /// ```
        /// use conduit::TryRecvError;
        #[doc = concat!("let name = format!(\"doc-mb-try-recv-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        /// assert_eq!(mb.try_recv().unwrap_err(), TryRecvError::Empty);
        #[doc = $fill]
        /// assert_eq!(mb.try_recv().unwrap().tag(), 7);
        /// mb.close()?;
        /// assert_eq!(mb.try_recv().unwrap_err(), TryRecvError::Disconnected);
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn try_recv(&self) -> Result<Envelope<$body>, TryRecvError> {
            self.try_recv_select(Select::Any)
        }

        /// Receives the oldest message, waiting at most `timeout`.
        ///
        /// ```
        /// use std::time::Duration;
        /// use conduit::RecvTimeoutError;
        #[doc = concat!("let name = format!(\"doc-mb-recv-timeout-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        /// let err = mb.recv_timeout(Duration::from_millis(10)).unwrap_err();
        /// assert_eq!(err, RecvTimeoutError::Timeout);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope<$body>, RecvTimeoutError> {
            self.recv_select_timeout(Select::Any, timeout)
        }

        /// Receives the oldest message, waiting until `deadline`.
        ///
        /// ```
        /// use std::time::{Duration, Instant};
        #[doc = concat!("let name = format!(\"doc-mb-recv-deadline-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let env = mb.recv_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
        /// assert_eq!(env.tag(), 7);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_deadline(&self, deadline: Instant) -> Result<Envelope<$body>, RecvTimeoutError> {
            self.recv_select_deadline(Select::Any, deadline)
        }

        /// Receives the oldest message asynchronously (cancel-safe).
        ///
        /// ```
        #[doc = concat!("let name = format!(\"doc-mb-recv-async-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let env = futures::executor::block_on(mb.recv_async()).unwrap();
        /// assert_eq!(env.tag(), 7);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_async(&self) -> MailboxFut<'_, Result<Envelope<$body>, RecvError>> {
            self.recv_select_async(Select::Any)
        }

        /// Receives the message `select` takes (costs in the [module docs](self)),
        /// waiting for one; `Err` once the mailbox is closed and no queued message
        /// matches.
        ///
        /// ```
        /// use conduit::mailbox::Select;
        #[doc = concat!("let name = format!(\"doc-mb-recv-select-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// assert!(mb.try_recv_select(Select::Tag(8)).is_err());
        /// assert_eq!(mb.recv_select(Select::TagExcept(8)).unwrap().tag(), 7);
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_select(&self, select: Select) -> Result<Envelope<$body>, RecvError> {
            self.recv_select_until(&select, None).map_err(|_| RecvError)
        }

        /// Receives the message `select` takes if one is queued.
        ///
        /// ```
        /// use conduit::{TryRecvError, mailbox::Select};
        #[doc = concat!("let name = format!(\"doc-mb-try-recv-select-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let me = Select::From(mb.address().clone());
        /// assert_eq!(mb.try_recv_select(Select::TagAtMost(6)).unwrap_err(), TryRecvError::Empty);
        /// assert_eq!(mb.try_recv_select(me).unwrap().from(), mb.address());
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn try_recv_select(&self, select: Select) -> Result<Envelope<$body>, TryRecvError> {
            let got = self
                .core
                .try_recv_with(Core::want(&select), LockWait::Try, &mut $read)?;
            Ok(self.core.envelope(got, $reply))
        }

        /// Receives the message `select` takes, waiting at most `timeout`.
        ///
        /// ```
        /// use std::time::Duration;
        /// use conduit::{RecvTimeoutError, mailbox::Select};
        #[doc = concat!("let name = format!(\"doc-mb-recv-select-timeout-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let wait = Duration::from_millis(10);
        /// assert_eq!(
        ///     mb.recv_select_timeout(Select::Tag(1), wait).unwrap_err(),
        ///     RecvTimeoutError::Timeout
        /// );
        /// assert!(mb.recv_select_timeout(Select::Tag(7), wait).is_ok());
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_select_timeout(
            &self,
            select: Select,
            timeout: Duration,
        ) -> Result<Envelope<$body>, RecvTimeoutError> {
            self.recv_select_deadline(select, Instant::now() + timeout)
        }

        /// Receives the message `select` takes, waiting until `deadline`.
        ///
        /// ```
        /// use std::time::{Duration, Instant};
        /// use conduit::mailbox::Select;
        #[doc = concat!("let name = format!(\"doc-mb-recv-select-deadline-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let soon = Instant::now() + Duration::from_millis(10);
        /// assert!(mb.recv_select_deadline(Select::TagAtMost(7), soon).is_ok());
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_select_deadline(
            &self,
            select: Select,
            deadline: Instant,
        ) -> Result<Envelope<$body>, RecvTimeoutError> {
            self.recv_select_until(&select, Some(deadline))
                .map_err(|e| match e {
                    RecvFail::Closed => RecvTimeoutError::Disconnected,
                    RecvFail::Timeout => RecvTimeoutError::Timeout,
                })
        }

        /// Receives the message `select` takes, asynchronously (cancel-safe: dropped
        /// before it completes, it took nothing).
        ///
        /// ```
        /// use conduit::mailbox::Select;
        #[doc = concat!("let name = format!(\"doc-mb-recv-select-async-{}\", std::process::id());")]
        #[doc = concat!("let mb = conduit::", $ty, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// let env = futures::executor::block_on(mb.recv_select_async(Select::Tag(7))).unwrap();
        #[doc = concat!("assert_eq!(env.into_body(), ", $one, ");")]
        /// mb.close()?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn recv_select_async(
            &self,
            select: Select,
        ) -> MailboxFut<'_, Result<Envelope<$body>, RecvError>> {
            let want = Core::want(&select);
            self.core.future(Side::Recv, move || {
                match self.core.try_recv_with(want, LockWait::Try, &mut $read) {
                    Ok(got) => Some(Ok(self.core.envelope(got, $reply))),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => Some(Err(RecvError)),
                }
            })
        }

        fn recv_select_until(
            &self,
            select: &Select,
            deadline: Option<Instant>,
        ) -> Result<Envelope<$body>, RecvFail> {
            let got = self.core.recv_with(Core::want(select), deadline, $read)?;
            Ok(self.core.envelope(got, $reply))
        }
    };
}

/// A mailbox of `T` in shared memory: any number of handles, in any number of processes,
/// send to it and receive from it, each message once, with a tag and the sender's
/// [`Address`]; receives select by tag or sender ([`Select`]). See the [module
/// docs](self).
///
/// Clone it freely (clones share one peer slot and one address); it is `Send + Sync`.
/// Dropping the last clone detaches the handle family; the mailbox stays until
/// [`close`](Mailbox::close)d.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-shm-mailbox-type-{}", std::process::id());
/// let mb = shm::Mailbox::<[u32; 2]>::create(&name, 8)?;
/// let peer = mb.clone();
/// std::thread::spawn(move || peer.send_tagged(5, [1, 2]).unwrap()).join().unwrap();
/// let env = mb.recv().unwrap();
/// assert_eq!((env.tag(), *env.body()), (5, [1, 2]));
/// mb.close()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Mailbox<T: ShmSafe> {
    core: Core,
    _type: PhantomData<fn(T) -> T>,
}

impl<T: ShmSafe> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            core: self.core.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: ShmSafe> ::core::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        self.core.fmt(f)
    }
}

fn request_error<T>(fail: RequestFail, msg: T) -> RequestError<T> {
    match fail {
        RequestFail::NoResponders => RequestError::NoResponders(msg),
        RequestFail::Closed => RequestError::Disconnected(msg),
        RequestFail::Full => RequestError::Timeout(Some(msg)),
        RequestFail::Timeout => RequestError::Timeout(None),
        RequestFail::Unanswered => RequestError::Unanswered,
    }
}

fn send_error<T>(fail: SendFail, msg: T) -> SendTimeoutError<T> {
    match fail {
        SendFail::Closed => SendTimeoutError::Disconnected(msg),
        SendFail::Full | SendFail::Timeout => SendTimeoutError::Timeout(msg),
    }
}

impl<T: ShmSafe> Mailbox<T> {
    /// Creates the mailbox `name` with room for `capacity` messages (rounded up to a
    /// power of two); [`io::ErrorKind::AlreadyExists`] if the name exists.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-create-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 4)?;
    /// let err = shm::Mailbox::<u8>::create(&name, 4).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> io::Result<Self> {
        Self::with(name, &Options::new().capacity(capacity).create_new(true))
    }

    /// Opens the existing mailbox `name`: [`io::ErrorKind::NotFound`] if there is none,
    /// [`io::ErrorKind::InvalidData`] naming the mismatch if it is not a mailbox of `T`.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-open-{}", std::process::id());
    /// assert_eq!(shm::Mailbox::<u8>::open(&name).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// let mb = shm::Mailbox::<u8>::create(&name, 4)?;
    /// let err = shm::Mailbox::<u16>::open(&name).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    /// assert!(err.to_string().contains("type mismatch"));
    /// let err = shm::Receiver::<u8>::open(&name).unwrap_err();
    /// assert!(err.to_string().contains("kind mismatch"));
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(name: &str) -> io::Result<Self> {
        Self::with(name, &Options::new())
    }

    /// Opens or creates the mailbox `name` as `opts` say (see [`Options`];
    /// `max_message` does not apply).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-with-{}", std::process::id());
    /// let opts = shm::Options::new().create(true).capacity(16).mode(0o600);
    /// let a = shm::Mailbox::<u64>::with(&name, &opts)?;
    /// let b = shm::Mailbox::<u64>::with(&name, &opts)?; // opens the same one
    /// a.send(1).unwrap();
    /// assert_eq!(*b.recv().unwrap().body(), 1);
    /// a.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, opts: &Options) -> io::Result<Self> {
        Ok(Mailbox {
            core: Core::open(name, opts, Kind::Mailbox, Fingerprint::of::<T>())?,
            _type: PhantomData,
        })
    }

    /// Sends `msg` with tag 0, waiting for room; `Err` (the message handed back) once
    /// the mailbox is closed.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-send-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 4)?;
    /// mb.send(1).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 0);
    /// mb.close()?;
    /// assert_eq!(mb.send(2).unwrap_err().0, 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.send_tagged(0, msg)
    }

    /// Sends `msg` with `tag`, waiting for room.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-send-tagged-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 4)?;
    /// mb.send_tagged(9, 1).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 9);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_tagged(&self, tag: u64, msg: T) -> Result<(), SendError<T>> {
        self.core
            .send_with(tag, None, |s, i| write_typed(s, i, &msg))
            .map_err(|_| SendError(msg))
    }

    /// Sends `msg` with tag 0 if there is room now.
    ///
    /// ```
    /// use conduit::{TrySendError, shm};
    /// let name = format!("doc-mb-try-send-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 1)?;
    /// mb.try_send(1).unwrap();
    /// assert_eq!(mb.try_send(2), Err(TrySendError::Full(2)));
    /// mb.close()?;
    /// assert_eq!(mb.try_send(3), Err(TrySendError::Disconnected(3)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.try_send_tagged(0, msg)
    }

    /// Sends `msg` with `tag` if there is room now.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-try-send-tagged-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 1)?;
    /// mb.try_send_tagged(4, 1).unwrap();
    /// assert_eq!(mb.try_recv().unwrap().tag(), 4);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_send_tagged(&self, tag: u64, msg: T) -> Result<(), TrySendError<T>> {
        match self
            .core
            .try_send_with(tag, LockWait::Try, &mut |s, i| write_typed(s, i, &msg))
        {
            Ok(()) => Ok(()),
            Err(SendFail::Closed) => Err(TrySendError::Disconnected(msg)),
            Err(_) => Err(TrySendError::Full(msg)),
        }
    }

    /// Sends `msg` with tag 0, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::{SendTimeoutError, shm};
    /// let name = format!("doc-mb-send-timeout-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 1)?;
    /// mb.send_timeout(1, Duration::from_millis(10)).unwrap();
    /// let err = mb.send_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err, SendTimeoutError::Timeout(2));
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_tagged_timeout(0, msg, timeout)
    }

    /// Sends `msg` with `tag`, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::shm;
    /// let name = format!("doc-mb-send-tagged-timeout-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 1)?;
    /// mb.send_tagged_timeout(3, 1, Duration::from_millis(10)).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 3);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_tagged_timeout(
        &self,
        tag: u64,
        msg: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        self.core
            .send_with(tag, Some(Instant::now() + timeout), |s, i| {
                write_typed(s, i, &msg)
            })
            .map_err(|e| send_error(e, msg))
    }

    /// Sends `msg` with tag 0 asynchronously (cancel-safe).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-send-async-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 1)?;
    /// futures::executor::block_on(mb.send_async(1)).unwrap();
    /// assert_eq!(*mb.recv().unwrap().body(), 1);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_async(&self, msg: T) -> MailboxFut<'_, Result<(), SendError<T>>> {
        self.send_tagged_async(0, msg)
    }

    /// Sends `msg` with `tag` asynchronously (cancel-safe: dropped before it completes,
    /// it sent nothing).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-send-tagged-async-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 1)?;
    /// futures::executor::block_on(mb.send_tagged_async(2, 1)).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 2);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_tagged_async(&self, tag: u64, msg: T) -> MailboxFut<'_, Result<(), SendError<T>>> {
        self.core.future(Side::Send, move || {
            match self
                .core
                .try_send_with(tag, LockWait::Try, &mut |s, i| write_typed(s, i, &msg))
            {
                Ok(()) => Some(Ok(())),
                Err(SendFail::Closed) => Some(Err(SendError(msg))),
                Err(_) => None,
            }
        })
    }

    /// Sends `msg` (tag 0) as a request and waits for its reply, a `T` (see the [module
    /// docs](self), "Requests"). [`RequestError::NoResponders`] at once when no handle
    /// family that has received is attached; `Unanswered` when the replier drops the
    /// request's [`Reply`](crate::mailbox::Reply) or dies, or every receiver leaves
    /// before taking it (noticed within about 100 ms).
    ///
    /// ```
    /// use conduit::mailbox::RequestError;
    /// use conduit::shm;
    /// let name = format!("doc-mb-request-{}", std::process::id());
    /// let client = shm::Mailbox::<u64>::create(&name, 4)?;
    /// assert_eq!(client.request(1), Err(RequestError::NoResponders(1)));
    /// let server = shm::Mailbox::<u64>::open(&name)?;
    /// let _ = server.try_recv(); // attaches it as a receiver
    /// let t = std::thread::spawn(move || {
    ///     let mut env = server.recv().unwrap();
    ///     let n = *env.body();
    ///     env.take_reply::<u64>().unwrap().reply(n * n).unwrap();
    /// });
    /// assert_eq!(client.request(12), Ok(144));
    /// t.join().unwrap();
    /// client.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request(&self, msg: T) -> Result<T, RequestError<T>> {
        self.request_inner(0, msg, None)
    }

    /// Sends `msg` with `tag` as a request and waits for its reply.
    ///
    /// ```
    /// use conduit::mailbox::Select;
    /// use conduit::shm;
    /// let name = format!("doc-mb-request-tagged-{}", std::process::id());
    /// let client = shm::Mailbox::<u64>::create(&name, 4)?;
    /// let server = client.clone(); // one family may answer its own requests
    /// let _ = server.try_recv();
    /// let t = std::thread::spawn(move || {
    ///     let mut env = server.recv_select(Select::Tag(2)).unwrap();
    ///     env.take_reply::<u64>().unwrap().reply(env.body() + 1).unwrap();
    /// });
    /// assert_eq!(client.request_tagged(2, 41), Ok(42));
    /// t.join().unwrap();
    /// client.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_tagged(&self, tag: u64, msg: T) -> Result<T, RequestError<T>> {
        self.request_inner(tag, msg, None)
    }

    /// Sends `msg` (tag 0) as a request and waits at most `timeout` (for room, then
    /// for the reply): `Timeout(Some(msg))` if it could not be sent, `Timeout(None)` if
    /// no reply came (a late reply is handed back to its replier).
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::mailbox::RequestError;
    /// use conduit::shm;
    /// let name = format!("doc-mb-request-timeout-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 4)?;
    /// let _ = mb.try_recv();
    /// let wait = Duration::from_millis(10);
    /// assert_eq!(mb.request_timeout(1, wait), Err(RequestError::Timeout(None)));
    /// let mut env = mb.try_recv().unwrap();
    /// let reply = env.take_reply::<u8>().unwrap();
    /// assert!(reply.is_abandoned());
    /// assert_eq!(reply.reply(2), Err(2));
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_timeout(&self, msg: T, timeout: Duration) -> Result<T, RequestError<T>> {
        self.request_inner(0, msg, Some(Instant::now() + timeout))
    }

    /// Sends `msg` with `tag` as a request and waits at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::mailbox::RequestError;
    /// use conduit::shm;
    /// let name = format!("doc-mb-request-tagged-timeout-{}", std::process::id());
    /// let mb = shm::Mailbox::<u8>::create(&name, 4)?;
    /// let wait = Duration::from_millis(10);
    /// assert_eq!(mb.request_tagged_timeout(3, 1, wait), Err(RequestError::NoResponders(1)));
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_tagged_timeout(
        &self,
        tag: u64,
        msg: T,
        timeout: Duration,
    ) -> Result<T, RequestError<T>> {
        self.request_inner(tag, msg, Some(Instant::now() + timeout))
    }

    /// Sends `msg` (tag 0) as a request and waits for its reply asynchronously (see
    /// [`RequestFut`] for what dropping it does).
    ///
    /// ```
    /// use conduit::mailbox::RequestError;
    /// use conduit::shm;
    /// let name = format!("doc-mb-request-async-{}", std::process::id());
    /// let mb = shm::Mailbox::<u32>::create(&name, 4)?;
    /// let fut = mb.request_async(1);
    /// assert_eq!(futures::executor::block_on(fut), Err(RequestError::NoResponders(1)));
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_async(&self, msg: T) -> RequestFut<'_, T, RequestError<T>> {
        self.request_tagged_async(0, msg)
    }

    /// Sends `msg` with `tag` as a request and waits for its reply asynchronously.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-mb-request-tagged-async-{}", std::process::id());
    /// let mb = shm::Mailbox::<u32>::create(&name, 4)?;
    /// let server = mb.clone();
    /// let _ = server.try_recv();
    /// let t = std::thread::spawn(move || {
    ///     let mut env = server.recv().unwrap();
    ///     assert_eq!(env.tag(), 6);
    ///     env.take_reply::<u32>().unwrap().reply(env.body() + 1).unwrap();
    /// });
    /// assert_eq!(futures::executor::block_on(mb.request_tagged_async(6, 1)), Ok(2));
    /// t.join().unwrap();
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_tagged_async(&self, tag: u64, msg: T) -> RequestFut<'_, T, RequestError<T>> {
        self.core.request_future(
            false,
            tag,
            Box::new(move |s, i| write_typed(s, i, &msg)),
            Box::new(read_typed::<T>),
            Box::new(move |e| request_error(e, msg)),
        )
    }

    fn request_inner(
        &self,
        tag: u64,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<T, RequestError<T>> {
        self.core
            .request_with(
                tag,
                deadline,
                |s, i| write_typed(s, i, &msg),
                read_typed::<T>,
            )
            .map_err(|e| match e {
                RequestFail::NoResponders => RequestError::NoResponders(msg),
                RequestFail::Closed => RequestError::Disconnected(msg),
                RequestFail::Full => RequestError::Timeout(Some(msg)),
                RequestFail::Timeout => RequestError::Timeout(None),
                RequestFail::Unanswered => RequestError::Unanswered,
            })
    }

    mailbox_receive!(
        "shm::Mailbox::<u64>",
        T,
        read_typed::<T>,
        |s, i, v| {
            write_typed(s, i, v);
            true
        },
        "mb.send_tagged(7, 42).unwrap();",
        "42"
    );
}

/// A mailbox of byte messages in shared memory: [`Mailbox`]'s twin for `&[u8]` messages
/// of up to [`max_message`](ByteMailbox::max_message) bytes (set with
/// [`Options::max_message`], [`super::DEFAULT_MAX_MESSAGE`] if unset), received as
/// `Envelope<Vec<u8>>`.
///
/// Sends report [`io::Error`]s (a message can also be too long):
/// [`InvalidInput`](io::ErrorKind::InvalidInput) for a message over `max_message`,
/// [`WouldBlock`](io::ErrorKind::WouldBlock) when full (`try_send`),
/// [`TimedOut`](io::ErrorKind::TimedOut), [`BrokenPipe`](io::ErrorKind::BrokenPipe)
/// once closed. Receives report the crate's receive errors, as [`Mailbox`]'s do.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-shm-bytemailbox-{}", std::process::id());
/// let opts = shm::Options::new().create_new(true).capacity(8).max_message(64);
/// let mb = shm::ByteMailbox::with(&name, &opts)?;
/// mb.send_tagged(1, b"hello")?;
/// let env = mb.recv().unwrap();
/// assert_eq!((env.tag(), env.body().as_slice()), (1, &b"hello"[..]));
/// assert_eq!(mb.send(&[0; 65]).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
/// mb.close()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ByteMailbox {
    core: Core,
}

impl ::core::fmt::Debug for ByteMailbox {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        self.core.fmt(f)
    }
}

fn io_error(fail: SendFail) -> io::Error {
    match fail {
        SendFail::Full => io::Error::new(io::ErrorKind::WouldBlock, "shm mailbox is full"),
        SendFail::Timeout => io::Error::new(io::ErrorKind::TimedOut, "shm mailbox send timed out"),
        SendFail::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "shm mailbox is closed"),
    }
}

fn byte_request_error(fail: RequestFail) -> io::Error {
    match fail {
        RequestFail::NoResponders => io::Error::new(
            io::ErrorKind::NotConnected,
            "no receiver is attached to the shm mailbox",
        ),
        RequestFail::Closed => io_error(SendFail::Closed),
        RequestFail::Full | RequestFail::Timeout => io_error(SendFail::Timeout),
        RequestFail::Unanswered => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the request was not answered",
        ),
    }
}

impl ByteMailbox {
    /// Creates the byte mailbox `name` with room for `capacity` messages (rounded up to
    /// a power of two) of up to [`super::DEFAULT_MAX_MESSAGE`] bytes;
    /// [`io::ErrorKind::AlreadyExists`] if the name exists.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-create-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// assert_eq!(mb.max_message(), shm::DEFAULT_MAX_MESSAGE);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> io::Result<Self> {
        Self::with(name, &Options::new().capacity(capacity).create_new(true))
    }

    /// Opens the existing byte mailbox `name` ([`io::ErrorKind::NotFound`] if none,
    /// [`io::ErrorKind::InvalidData`] if it is something else).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-open-{}", std::process::id());
    /// let typed = shm::Mailbox::<u8>::create(&name, 4)?;
    /// let err = shm::ByteMailbox::open(&name).unwrap_err();
    /// assert!(err.to_string().contains("kind mismatch"), "{err}");
    /// typed.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(name: &str) -> io::Result<Self> {
        Self::with(name, &Options::new())
    }

    /// Opens or creates the byte mailbox `name` as `opts` say (see [`Options`];
    /// `max_message`, when set, must match an existing mailbox's).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-with-{}", std::process::id());
    /// let mb = shm::ByteMailbox::with(&name, &shm::Options::new().create(true).max_message(10))?;
    /// let err = shm::ByteMailbox::with(&name, &shm::Options::new().max_message(11)).unwrap_err();
    /// assert!(err.to_string().contains("max_message mismatch"));
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, opts: &Options) -> io::Result<Self> {
        Ok(ByteMailbox {
            core: Core::open(name, opts, Kind::ByteMailbox, Fingerprint::bytes(1))?,
        })
    }

    /// The longest message, in bytes.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-max-{}", std::process::id());
    /// let mb = shm::ByteMailbox::with(&name, &shm::Options::new().create(true).max_message(10))?;
    /// assert_eq!(mb.max_message(), 10);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_message(&self) -> usize {
        self.core.max_message()
    }

    /// The most bytes this mailbox holds queued at once, its messages' lengths summed
    /// (like SysV's `msg_qbytes`): [`Options::max_bytes`](super::Options::max_bytes) of
    /// its creator, by default capacity × max_message. Fixed for the mailbox's life. A
    /// request counts while queued; once a replier has taken it, its slot stays held
    /// for the reply but its bytes no longer count (the slot count bounds held slots).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-max-bytes-{}", std::process::id());
    /// let opts = shm::Options::new().create(true).capacity(4).max_message(10);
    /// let mb = shm::ByteMailbox::with(&name, &opts)?;
    /// assert_eq!(mb.max_bytes(), 40);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_bytes(&self) -> usize {
        self.core.max_bytes()
    }

    fn check_len(&self, len: usize) -> io::Result<()> {
        if len > self.max_message() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {len} bytes is longer than the mailbox's max_message ({})",
                    self.max_message()
                ),
            ));
        }
        if len > self.max_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {len} bytes is longer than the mailbox's max_bytes ({})",
                    self.max_bytes()
                ),
            ));
        }
        Ok(())
    }

    /// Sends `msg` with tag 0, waiting for room.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-send-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// mb.send(b"x")?;
    /// assert_eq!(mb.recv().unwrap().into_body(), b"x");
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.send_tagged(0, msg)
    }

    /// Sends `msg` with `tag`, waiting for room.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-send-tagged-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// mb.send_tagged(3, b"x")?;
    /// assert_eq!(mb.recv().unwrap().tag(), 3);
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_tagged(&self, tag: u64, msg: &[u8]) -> io::Result<()> {
        self.check_len(msg.len())?;
        self.core
            .send_with(tag, None, |s, i| write_bytes(s, i, msg))
            .map_err(io_error)
    }

    /// Sends `msg` with tag 0 if there is room now
    /// ([`WouldBlock`](io::ErrorKind::WouldBlock) otherwise).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-try-send-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 1)?;
    /// mb.try_send(b"a")?;
    /// assert_eq!(mb.try_send(b"b").unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_send(&self, msg: &[u8]) -> io::Result<()> {
        self.try_send_tagged(0, msg)
    }

    /// Sends `msg` with `tag` if there is room now.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-try-send-tagged-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 1)?;
    /// mb.try_send_tagged(5, b"a")?;
    /// assert_eq!(mb.try_recv().unwrap().tag(), 5);
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_send_tagged(&self, tag: u64, msg: &[u8]) -> io::Result<()> {
        self.check_len(msg.len())?;
        self.core
            .try_send_with(tag, LockWait::Try, &mut |s, i| write_bytes(s, i, msg))
            .map_err(io_error)
    }

    /// Sends `msg` with tag 0, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::shm;
    /// let name = format!("doc-bmb-send-timeout-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 1)?;
    /// mb.send_timeout(b"a", Duration::from_millis(10))?;
    /// let err = mb.send_timeout(b"b", Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> io::Result<()> {
        self.send_tagged_timeout(0, msg, timeout)
    }

    /// Sends `msg` with `tag`, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::shm;
    /// let name = format!("doc-bmb-send-tagged-timeout-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 1)?;
    /// mb.send_tagged_timeout(6, b"a", Duration::from_millis(10))?;
    /// assert_eq!(mb.recv().unwrap().tag(), 6);
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_tagged_timeout(&self, tag: u64, msg: &[u8], timeout: Duration) -> io::Result<()> {
        self.check_len(msg.len())?;
        self.core
            .send_with(tag, Some(Instant::now() + timeout), |s, i| {
                write_bytes(s, i, msg)
            })
            .map_err(io_error)
    }

    /// Sends `msg` with tag 0 asynchronously (cancel-safe).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-send-async-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 1)?;
    /// futures::executor::block_on(mb.send_async(b"a"))?;
    /// assert_eq!(mb.recv().unwrap().into_body(), b"a");
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_async<'a>(&'a self, msg: &'a [u8]) -> MailboxFut<'a, io::Result<()>> {
        self.send_tagged_async(0, msg)
    }

    /// Sends `msg` with `tag` asynchronously (cancel-safe).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-send-tagged-async-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 1)?;
    /// futures::executor::block_on(mb.send_tagged_async(8, b"a"))?;
    /// assert_eq!(mb.recv().unwrap().tag(), 8);
    /// # mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_tagged_async<'a>(
        &'a self,
        tag: u64,
        msg: &'a [u8],
    ) -> MailboxFut<'a, io::Result<()>> {
        let mut checked = Some(self.check_len(msg.len()));
        self.core.future(Side::Send, move || {
            if let Some(Err(e)) = checked.take() {
                return Some(Err(e));
            }
            match self
                .core
                .try_send_with(tag, LockWait::Try, &mut |s, i| write_bytes(s, i, msg))
            {
                Ok(()) => Some(Ok(())),
                Err(SendFail::Closed) => Some(Err(io_error(SendFail::Closed))),
                Err(_) => None,
            }
        })
    }

    /// Sends `msg` (tag 0) as a request and waits for its reply, a byte message (see the
    /// [module docs](self), "Requests"). Errors are [`io::Error`]s:
    /// [`NotConnected`](io::ErrorKind::NotConnected) at once when no receiver is
    /// attached, [`ConnectionAborted`](io::ErrorKind::ConnectionAborted) when the request
    /// goes unanswered (the replier dropped its reply or died, or replied with a message
    /// over `max_message`), [`BrokenPipe`](io::ErrorKind::BrokenPipe) when closed,
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) for a message over `max_message`.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-request-{}", std::process::id());
    /// let client = shm::ByteMailbox::create(&name, 4)?;
    /// assert_eq!(client.request(b"x").unwrap_err().kind(), std::io::ErrorKind::NotConnected);
    /// let server = shm::ByteMailbox::open(&name)?;
    /// let _ = server.try_recv();
    /// let t = std::thread::spawn(move || {
    ///     let mut env = server.recv().unwrap();
    ///     let up = env.body().to_ascii_uppercase();
    ///     env.take_reply::<Vec<u8>>().unwrap().reply(up).unwrap();
    /// });
    /// assert_eq!(client.request(b"hi")?, b"HI");
    /// t.join().unwrap();
    /// client.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request(&self, msg: &[u8]) -> io::Result<Vec<u8>> {
        self.request_inner(0, msg, None)
    }

    /// Sends `msg` with `tag` as a request and waits for its reply.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-request-tagged-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// let err = mb.request_tagged(1, &[0; 5000]).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_tagged(&self, tag: u64, msg: &[u8]) -> io::Result<Vec<u8>> {
        self.request_inner(tag, msg, None)
    }

    /// Sends `msg` (tag 0) as a request and waits at most `timeout`
    /// ([`TimedOut`](io::ErrorKind::TimedOut)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::shm;
    /// let name = format!("doc-bmb-request-timeout-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// let _ = mb.try_recv();
    /// let err = mb.request_timeout(b"x", Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_timeout(&self, msg: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
        self.request_inner(0, msg, Some(Instant::now() + timeout))
    }

    /// Sends `msg` with `tag` as a request and waits at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::shm;
    /// let name = format!("doc-bmb-request-tagged-timeout-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// let err = mb.request_tagged_timeout(2, b"x", Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_tagged_timeout(
        &self,
        tag: u64,
        msg: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        self.request_inner(tag, msg, Some(Instant::now() + timeout))
    }

    fn request_inner(
        &self,
        tag: u64,
        msg: &[u8],
        deadline: Option<Instant>,
    ) -> io::Result<Vec<u8>> {
        self.check_len(msg.len())?;
        self.core
            .request_with(tag, deadline, |s, i| write_bytes(s, i, msg), read_bytes)
            .map_err(byte_request_error)
    }

    /// Sends `msg` (tag 0) as a request and waits for its reply asynchronously (errors
    /// as [`ByteMailbox::request`]'s; see [`RequestFut`] for what dropping it does).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-request-async-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// let server = mb.clone();
    /// let _ = server.try_recv();
    /// let t = std::thread::spawn(move || {
    ///     let mut env = server.recv().unwrap();
    ///     let mut answer = env.body().clone();
    ///     answer.reverse();
    ///     env.take_reply::<Vec<u8>>().unwrap().reply(answer).unwrap();
    /// });
    /// assert_eq!(futures::executor::block_on(mb.request_async(b"ab"))?, b"ba");
    /// t.join().unwrap();
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_async<'a>(&'a self, msg: &'a [u8]) -> RequestFut<'a, Vec<u8>, io::Error> {
        self.request_tagged_async(0, msg)
    }

    /// Sends `msg` with `tag` as a request and waits for its reply asynchronously.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-bmb-request-tagged-async-{}", std::process::id());
    /// let mb = shm::ByteMailbox::create(&name, 4)?;
    /// let err = futures::executor::block_on(mb.request_tagged_async(1, b"x")).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn request_tagged_async<'a>(
        &'a self,
        tag: u64,
        msg: &'a [u8],
    ) -> RequestFut<'a, Vec<u8>, io::Error> {
        // A message too long fails at the first poll, with nothing sent.
        let too_long = self.check_len(msg.len()).err().map(|e| e.to_string());
        self.core.request_future(
            too_long.is_some(),
            tag,
            Box::new(move |s, i| write_bytes(s, i, msg)),
            Box::new(read_bytes),
            Box::new(move |e| match &too_long {
                Some(why) => io::Error::new(io::ErrorKind::InvalidInput, why.clone()),
                None => byte_request_error(e),
            }),
        )
    }

    mailbox_receive!(
        "shm::ByteMailbox",
        Vec<u8>,
        read_bytes,
        |s, i, v: &Vec<u8>| {
            let fits = v.len() <= s.payload_size();
            if fits {
                write_bytes(s, i, v);
            }
            fits
        },
        "mb.send_tagged(7, b\"hi\")?;",
        "b\"hi\".to_vec()"
    );
}
