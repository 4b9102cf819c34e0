//! Mailboxes: named many-to-many queues with envelopes, selective receive by tag or
//! sender, and request/reply, in one process.
//!
//! # The model
//! - **Namespace.** A [`PostOffice`] maps names to mailboxes ([`PostOffice::global`] is
//!   the process-wide one; [`PostOffice::new`] makes a private one, and its clones share
//!   it). [`open`](PostOffice::open) creates or opens a mailbox; every open returns a
//!   [`Mailbox`] handle of a new *handle family* with its own [`Address`] (clones of a
//!   handle share it). A mailbox outlives its handles, like a SysV queue: messages stay
//!   queued for the next open until [`close`](PostOffice::close) removes the name.
//! - **Many-to-many.** Any number of handles, in any threads, send and receive. Each
//!   message is received exactly once (or dropped with the mailbox), and messages from
//!   one sender (one handle family) are received in the order sent, within any selection
//!   (for `TagAtMost`, which takes lower tags first: in order within each tag).
//! - **Envelopes.** A message is received as an [`Envelope`]: its body, a `u64` tag
//!   (`0` for the untagged `send`), the sender's [`Address`] and, for a request, the
//!   [`Reply`] capability.
//! - **Selections** ([`Select`]), in blocking, `try_`, timed and async (cancel-safe) forms:
//!   `Any` (the oldest message), `Tag(t)` (the oldest tagged `t`), `TagAtMost(n)` (the
//!   oldest of the lowest tag ≤ n: SysV `msgrcv` with a negative type), `TagExcept(t)`
//!   (`MSG_EXCEPT`), `From(address)` (the oldest from one sender: "direct
//!   communication"'s `recv(source)`).
//! - **Request/reply.** [`Mailbox::request`] sends a message that carries a one-shot
//!   reply slot and waits for the answer; the receiver answers through
//!   [`Envelope::take_reply`] and [`Reply::reply`]. See "Requests" below.
//! - **Back-pressure.** A mailbox holds at most its capacity of messages
//!   ([`DEFAULT_CAPACITY`] unless [`Options::capacity`] or [`Options::unbounded`] says
//!   otherwise): a full mailbox blocks `send` and fails `try_send`, handing the message
//!   back.
//! - **Close.** [`PostOffice::close`] removes the name: sends fail from then on with the
//!   message handed back (`Disconnected`); receivers take what is queued and then get
//!   `Disconnected` (a selective receive: once no queued message matches). Nothing
//!   queued is lost by closing. A later `open` of the name makes a fresh mailbox.
//!
//! ```
//! use conduit::mailbox::{PostOffice, Select};
//!
//! let po = PostOffice::new();
//! let jobs = po.open::<&str>("jobs").unwrap();
//! let boss = po.open::<&str>("jobs").unwrap();
//! boss.send_tagged(2, "sweep").unwrap();
//! boss.send_tagged(1, "fire!").unwrap();
//! jobs.send_tagged(3, "lunch").unwrap();
//!
//! // Priority order: the lowest tag first.
//! let env = jobs.recv_select(Select::TagAtMost(u64::MAX)).unwrap();
//! assert_eq!((env.tag(), *env.body()), (1, "fire!"));
//! // From one sender only.
//! let env = jobs.recv_select(Select::From(jobs.address().clone())).unwrap();
//! assert_eq!(*env.body(), "lunch");
//! assert_eq!(env.from(), jobs.address());
//! assert_eq!(jobs.recv().unwrap().into_body(), "sweep");
//! ```
//!
//! # Costs
//! With `t` the number of distinct tags queued at the moment (never the number of
//! messages), `w` the number of waiting selective receivers:
//!
//! | operation | cost |
//! |---|---|
//! | `send` | lock-free: a CAS on the count, a push into a lock-free queue (+ the wake-up of one waiting `Any` receiver, if one waits; + a lock and O(w log t) to aim a wake-up, only when selective receivers wait) |
//! | receive `Any` | lock-free pop while nothing is aside (one read-modify-write: the queue's claim); else O(log t) under the lock; waits without the lock (the channels' wait queue) |
//! | receive `Tag(x)`, `TagAtMost(n)`, `TagExcept(x)` | O(log t), plus O(log t) once per message moved aside |
//! | receive `From(a)` | O(log t) (O(1) to find, O(log t) to unlink), plus the moves |
//! | `len`, `is_empty` | three loads (`is_closed`: one) |
//! | request/reply | a lock-free send and a receive, plus one slot allocation per request (the reply goes through it without a lock) |
//!
//! Sends go into a lock-free *inbox* (conduit's own bounded ring or unbounded list);
//! `Any` receives pop it directly while no message is *aside*. A selective receive
//! moves the inbox, in order, into an index of the messages by tag, by sender and by
//! age, under the mailbox's one lock, so that a receive never looks at a message its
//! selection does not take (see `src/mailbox/index.rs`), and each message is moved at
//! most once. `src/mailbox/state.rs` argues why the order, the capacity and the
//! wake-ups hold when lock-free operations race the locked ones; no user code (drops
//! of messages, wakers) runs under the lock.
//!
//! # Requests
//! [`request`](Mailbox::request) (and `request_tagged`, `_timeout`, `_async`) fails at
//! once with [`RequestError::NoResponders`] when no receiver is *attached*: a handle
//! family is attached from its first receive call of any form (`try_recv` included, and
//! creating a receive future) until its last handle is dropped. When the last attached
//! family goes, requests still queued lose their reply capability, so their requesters
//! get [`RequestError::Unanswered`] (the messages themselves stay queued). A request
//! whose envelope is dropped unanswered, or whose mailbox is dropped with it, also ends
//! with `Unanswered`, at once. With a timeout, a request that outlives it ends with
//! `Timeout`, and the late reply is handed back to the replier. The reply type is chosen
//! by the requester (`request::<R>`); a replier asking
//! [`take_reply::<R2>`](Envelope::take_reply) for another type gets `None` and the
//! capability stays in the envelope.
//!
//! # Limits
//! - At most 2³² − 1 messages queued in one mailbox: beyond, even an unbounded one
//!   is full (`try_send` fails with `Full`, `send` waits).
//! - Names: 1 to 200 bytes of `[A-Za-z0-9._-]`, not `.` or `..` (as for `shm` channels);
//!   anything else is `InvalidInput`.
//! - Capacity 0 (rendezvous) is not offered: `InvalidInput`.
//! - The capacity counts messages; it is fixed by the open that creates the mailbox
//!   (later opens' capacities are ignored).
//! - A bounded mailbox of capacity up to 4096 allocates its inbox ring in full when it
//!   is created (one cache line per message at least); larger and unbounded ones grow
//!   by blocks.
//! - Waiting selective receivers are matched against a new message one by one (O(w)); a
//!   design for thousands of them waiting on one mailbox at once would index them too
//!   (`Any` receivers wait apart, at no such cost).
//! - Addresses are unique within the process; the cross-process twin (`shm::Mailbox`)
//!   adds the pid.

mod index;
mod reply;
mod state;

use core::any::Any;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::collections::BTreeMap;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use self::index::Sel;
use self::reply::{Capability, Waiting};
#[cfg(not(loom))]
pub(crate) use self::reply::{ErasedRemote, Remote};
pub use self::reply::{Reply, RequestError};
use self::state::{After, Attempt, Locked, SendFail, Shared, Side};
use crate::chan::signal::AsyncWait;
use crate::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, lock};

/// The capacity of a mailbox opened without [`Options::capacity`] or
/// [`Options::unbounded`], in messages.
///
/// ```
/// let mb = conduit::mailbox::PostOffice::new().open::<u8>("m").unwrap();
/// assert_eq!(mb.capacity(), Some(conduit::mailbox::DEFAULT_CAPACITY));
/// ```
pub const DEFAULT_CAPACITY: usize = 1024;

/// The address of one handle family: what [`Envelope::from`] reports and
/// [`Select::From`] selects. Every [`PostOffice::open`] makes a new one; clones of a
/// [`Mailbox`] share it. Unique within the process; the addresses of a shared-memory
/// mailbox ([`crate::shm::Mailbox`]) also carry their process's id, so they are unique
/// across the processes of a machine.
///
/// ```
/// let po = conduit::mailbox::PostOffice::new();
/// let a = po.open::<u8>("box").unwrap();
/// let b = po.open::<u8>("box").unwrap();
/// assert_eq!(a.address(), a.clone().address());
/// assert_ne!(a.address(), b.address());
/// assert_eq!(a.address().mailbox(), "box");
/// assert_eq!(a.address().pid(), None); // in-process
/// println!("{}", a.address()); // e.g. "box#12"
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    id: u64,
    /// The process of a shared-memory mailbox's handle family; 0 in-process. A `u32`
    /// held in a whole word: as a `u32` it was stored in four bytes and then copied
    /// with its padding as one eight-byte word whenever an envelope moved, a load the
    /// processor cannot forward from the narrower store, and every receive stalled on
    /// it (as `Name`'s docs tell of its length byte).
    pid: u64,
    mailbox: Name,
}

/// The longest mailbox name an [`Address`] keeps inline.
const INLINE_NAME: usize = 23;

/// [`Name`]'s first byte for a shared name (an inline name's length is at most
/// [`INLINE_NAME`]).
const SHARED: u8 = u8::MAX;

/// A mailbox's name as an [`Address`] carries it: inline when short, shared otherwise.
/// A receive builds an address for every message it takes (the envelope's sender): an
/// inline name is copied, where a shared one would cost two reference-count RMWs per
/// message (the clone, and the envelope's drop) on a line every receiver of the
/// mailbox writes.
///
/// Laid out by hand as three words: the first byte is an inline name's length (or
/// [`SHARED`]) and the next seven its first bytes; then come its other sixteen bytes, or
/// the shared name. As an enum of a length byte and 22 bytes it was copied as a tag
/// byte, then seven bytes at an odd offset (two overlapping 4-byte moves through the
/// stack), then sixteen, and the processor cannot forward two overlapping stores to the
/// load that reads them back: every receive stalled there as it copied the name into
/// its envelope (one thread, in cache: a mailbox receive 23.5–25.2 ns with the enum,
/// 18.7 with the name copied as words; see `benches/README.md`).
#[repr(C)]
pub(crate) struct Name {
    /// The inline length or [`SHARED`], then an inline name's first seven bytes.
    head: [u8; 8],
    /// Which field is live is `head[0]`'s to say (see `Name::shared`).
    rest: NameRest,
}

/// The part of a [`Name`] after its first word. A union, so that a move of the name
/// copies its bytes whatever they hold (a pointer's included).
#[repr(C)]
union NameRest {
    /// An inline name's bytes from the eighth on, zero after its end.
    bytes: [u8; 16],
    /// A longer name: `head[0]` is [`SHARED`].
    shared: core::mem::ManuallyDrop<std::sync::Arc<str>>,
}

impl Name {
    /// The shared name, if this one is not inline.
    fn shared(&self) -> Option<&std::sync::Arc<str>> {
        if self.head[0] == SHARED {
            // SAFETY: `head[0]` is `SHARED` only in a name built around a shared name
            // (`From`, `Clone`), whose `rest.shared` is live until the name is dropped.
            Some(unsafe { &self.rest.shared })
        } else {
            None
        }
    }

    fn as_bytes(&self) -> &[u8] {
        if let Some(s) = self.shared() {
            return s.as_bytes();
        }
        let len = usize::from(self.head[0]);
        // SAFETY: an inline name: `head[0]` is its length, at most `INLINE_NAME` (23),
        // and its bytes lie from the name's second byte on, contiguous: `head` (8
        // bytes) is at offset 0 and `rest` (16 bytes, aligned to 8) at offset 8 of this
        // `repr(C)` struct, with `rest.bytes` written in full by `From` (so initialized;
        // `Clone` copies all of it). The slice borrows `self`.
        unsafe { core::slice::from_raw_parts((self as *const Name).cast::<u8>().add(1), len) }
    }

    fn as_str(&self) -> &str {
        // Only ever built from a whole `str` (`From` below): the check cannot fail.
        core::str::from_utf8(self.as_bytes()).expect("a name is built from a whole string")
    }
}

impl From<std::sync::Arc<str>> for Name {
    fn from(s: std::sync::Arc<str>) -> Self {
        let bytes = s.as_bytes();
        if bytes.len() > INLINE_NAME {
            return Name {
                head: [SHARED, 0, 0, 0, 0, 0, 0, 0],
                rest: NameRest {
                    shared: core::mem::ManuallyDrop::new(s),
                },
            };
        }
        let mut all = [0u8; 1 + INLINE_NAME];
        all[0] = bytes.len() as u8;
        all[1..=bytes.len()].copy_from_slice(bytes);
        let (head, rest) = all.split_at(8);
        Name {
            head: head.try_into().expect("8 bytes"),
            rest: NameRest {
                bytes: rest.try_into().expect("16 bytes"),
            },
        }
    }
}

impl Clone for Name {
    #[inline]
    fn clone(&self) -> Self {
        let rest = match self.shared() {
            Some(s) => NameRest {
                shared: core::mem::ManuallyDrop::new(s.clone()),
            },
            // SAFETY: an inline name (not `SHARED`): `rest.bytes` is the live field.
            None => NameRest {
                bytes: unsafe { self.rest.bytes },
            },
        };
        Name {
            head: self.head,
            rest,
        }
    }
}

impl Drop for Name {
    /// Inline: every envelope drops its sender's name, and an inline one (the common
    /// case) needs no more than the look at its first byte.
    #[inline]
    fn drop(&mut self) {
        if self.head[0] == SHARED {
            self.drop_shared();
        }
    }
}

impl Name {
    #[cold]
    #[inline(never)]
    fn drop_shared(&mut self) {
        // SAFETY: called by `drop` only, for a shared name (`head[0]` is `SHARED`), whose
        // `rest.shared` is live (see `Name::shared`) and dropped only here, once.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.rest.shared) }
    }
}

const _: () = assert!(core::mem::size_of::<Name>() == 24);

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl core::hash::Hash for Name {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Address {
    /// A fresh address on `mailbox`. The id comes from a process-wide counter: an
    /// identifier generator, not part of any synchronization (so a plain std atomic).
    fn new(mailbox: Name) -> Self {
        Address {
            id: Self::next_id(),
            pid: 0,
            mailbox,
        }
    }

    /// A fresh id, from the process-wide counter that in-process and shared-memory
    /// addresses share (so the two kinds never have the same id in one process).
    pub(crate) fn next_id() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The address `id` of process `pid` on the shared-memory mailbox named `mailbox`.
    #[cfg_attr(any(loom, not(unix)), allow(dead_code))]
    pub(crate) fn in_process(mailbox: Name, pid: u32, id: u64) -> Self {
        Address {
            id,
            pid: u64::from(pid),
            mailbox,
        }
    }

    /// The address `id` of process `pid` on this address's mailbox: the name is copied
    /// (built once, with the family's own address), not built anew from a string.
    #[cfg_attr(any(loom, not(unix)), allow(dead_code))]
    pub(crate) fn sibling(&self, pid: u32, id: u64) -> Self {
        Address::in_process(self.mailbox.clone(), pid, id)
    }

    /// The address's id (unique within its process).
    #[cfg_attr(any(loom, not(unix)), allow(dead_code))]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The name of the mailbox the handle family was opened on.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("inbox").unwrap();
    /// assert_eq!(mb.address().mailbox(), "inbox");
    /// ```
    pub fn mailbox(&self) -> &str {
        self.mailbox.as_str()
    }

    /// The id of the process of the handle family, for an address on a shared-memory
    /// mailbox; `None` in-process.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("p").unwrap();
    /// assert_eq!(mb.address().pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        // Always a `u32` (see the field).
        u32::try_from(self.pid).ok().filter(|&pid| pid != 0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Address");
        d.field("mailbox", &self.mailbox.as_str());
        if self.pid != 0 {
            d.field("pid", &self.pid);
        }
        d.field("id", &self.id).finish()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pid != 0 {
            write!(f, "{}#{}.{}", self.mailbox(), self.pid, self.id)
        } else {
            write!(f, "{}#{}", self.mailbox(), self.id)
        }
    }
}

/// Which message a selective receive takes. Costs in the [module docs](self).
///
/// ```
/// use conduit::mailbox::{PostOffice, Select};
/// let mb = PostOffice::new().open::<char>("sel").unwrap();
/// for (tag, c) in [(5, 'a'), (3, 'b'), (5, 'c'), (9, 'd')] {
///     mb.send_tagged(tag, c).unwrap();
/// }
/// let take = |s| *mb.try_recv_select(s).unwrap().body();
/// assert_eq!(take(Select::Tag(5)), 'a');
/// assert_eq!(take(Select::TagExcept(3)), 'c');
/// assert_eq!(take(Select::TagAtMost(8)), 'b');
/// assert_eq!(take(Select::Any), 'd');
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Select {
    /// The oldest message (FIFO).
    Any,
    /// The oldest message with exactly this tag.
    Tag(u64),
    /// The oldest message of the lowest tag ≤ n (priority order; SysV `msgrcv` with a
    /// negative type).
    TagAtMost(u64),
    /// The oldest message whose tag differs (SysV `MSG_EXCEPT`).
    TagExcept(u64),
    /// The oldest message from this sender.
    From(Address),
}

impl Select {
    fn sel(&self) -> Sel {
        match self {
            Select::Any => Sel::Any,
            Select::Tag(t) => Sel::Tag(*t),
            Select::TagAtMost(n) => Sel::TagAtMost(*n),
            Select::TagExcept(t) => Sel::TagExcept(*t),
            Select::From(a) => Sel::From(a.id),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    CreateOrOpen,
    CreateNew,
    OpenExisting,
}

/// How [`PostOffice::open_with`] opens a mailbox: by default it creates or opens one
/// with capacity [`DEFAULT_CAPACITY`].
///
/// ```
/// use conduit::mailbox::{Options, PostOffice};
/// let po = PostOffice::new();
/// let mb = po.open_with::<u8>("big", &Options::new().capacity(10_000).create_new()).unwrap();
/// assert_eq!(mb.capacity(), Some(10_000));
/// let err = po.open_with::<u8>("big", &Options::new().create_new()).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    capacity: Option<usize>,
    mode: Mode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: Some(DEFAULT_CAPACITY),
            mode: Mode::CreateOrOpen,
        }
    }
}

impl Options {
    /// Create or open, capacity [`DEFAULT_CAPACITY`].
    ///
    /// ```
    /// let o = conduit::mailbox::Options::new();
    /// # let _ = o;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds at most `n` messages (`n ≥ 1`; 0 makes the open fail with `InvalidInput`).
    /// Applies when this open creates the mailbox.
    ///
    /// ```
    /// # use conduit::mailbox::{Options, PostOffice};
    /// let mb = PostOffice::new().open_with::<u8>("m", &Options::new().capacity(2)).unwrap();
    /// mb.try_send(1).unwrap();
    /// mb.try_send(2).unwrap();
    /// assert!(mb.try_send(3).is_err());
    /// ```
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Some(n);
        self
    }

    /// No capacity limit: sends never wait.
    ///
    /// ```
    /// # use conduit::mailbox::{Options, PostOffice};
    /// let mb = PostOffice::new().open_with::<u8>("m", &Options::new().unbounded()).unwrap();
    /// assert_eq!(mb.capacity(), None);
    /// ```
    pub fn unbounded(mut self) -> Self {
        self.capacity = None;
        self
    }

    /// Fail with `AlreadyExists` if the name is taken.
    ///
    /// ```
    /// # use conduit::mailbox::{Options, PostOffice};
    /// let po = PostOffice::new();
    /// po.open::<u8>("m").unwrap();
    /// let e = po.open_with::<u8>("m", &Options::new().create_new()).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    /// ```
    pub fn create_new(mut self) -> Self {
        self.mode = Mode::CreateNew;
        self
    }

    /// Fail with `NotFound` if there is no mailbox of that name.
    ///
    /// ```
    /// # use conduit::mailbox::{Options, PostOffice};
    /// let e = PostOffice::new().open_with::<u8>("m", &Options::new().open_existing()).unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open_existing(mut self) -> Self {
        self.mode = Mode::OpenExisting;
        self
    }
}

/// A registered mailbox, its message type erased.
trait Registered: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn type_name(&self) -> &'static str;
    fn close(&self);
}

impl<T: Send + 'static> Registered for Arc<Shared<T>> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn close(&self) {
        let mut after = After::default();
        Shared::close(self, &mut self.lock(), &mut after);
        self.finish(after);
    }
}

/// A namespace of mailboxes. Clones share the names; [`PostOffice::global`] is the
/// process-wide one.
///
/// ```
/// use conduit::mailbox::PostOffice;
/// let po = PostOffice::new();
/// let other = po.clone();
/// other.open::<String>("b").unwrap();
/// po.open::<String>("a").unwrap();
/// assert_eq!(po.names(), ["a", "b"]);
/// assert!(po.close("a"));
/// assert!(!po.close("a"));
/// assert_eq!(other.names(), ["b"]);
/// ```
#[derive(Clone)]
pub struct PostOffice {
    names: Arc<Mutex<BTreeMap<String, Box<dyn Registered>>>>,
}

impl Default for PostOffice {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PostOffice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostOffice")
            .field("names", &self.names())
            .finish()
    }
}

impl PostOffice {
    /// An empty namespace.
    ///
    /// ```
    /// assert!(conduit::mailbox::PostOffice::new().names().is_empty());
    /// ```
    pub fn new() -> Self {
        PostOffice {
            names: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The process-wide namespace.
    ///
    /// ```
    /// use conduit::mailbox::PostOffice;
    /// let mb = PostOffice::global().open::<u32>("doc-global").unwrap();
    /// assert!(PostOffice::global().names().contains(&"doc-global".to_string()));
    /// # drop(mb);
    /// # PostOffice::global().close("doc-global");
    /// ```
    pub fn global() -> &'static PostOffice {
        static GLOBAL: OnceLock<PostOffice> = OnceLock::new();
        GLOBAL.get_or_init(PostOffice::new)
    }

    /// Creates the mailbox `name` or opens it: `open_with(name, &Options::new())`.
    ///
    /// # Errors
    /// `InvalidInput` for a bad name; `InvalidData` when the mailbox carries another
    /// message type (the message names both).
    ///
    /// ```
    /// let po = conduit::mailbox::PostOffice::new();
    /// po.open::<u32>("n").unwrap();
    /// let e = po.open::<String>("n").unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    /// assert_eq!(po.open::<u32>("a/b").unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn open<T: Send + 'static>(&self, name: &str) -> io::Result<Mailbox<T>> {
        self.open_with(name, &Options::new())
    }

    /// Opens the mailbox `name` as `options` say.
    ///
    /// # Errors
    /// As [`open`](Self::open), plus `AlreadyExists` ([`Options::create_new`]),
    /// `NotFound` ([`Options::open_existing`]) and `InvalidInput` for capacity 0.
    ///
    /// ```
    /// use conduit::mailbox::{Options, PostOffice};
    /// let po = PostOffice::new();
    /// let mb = po.open_with::<u8>("u", &Options::new().unbounded()).unwrap();
    /// let again = po.open_with::<u8>("u", &Options::new().open_existing()).unwrap();
    /// mb.send(1).unwrap();
    /// assert_eq!(again.len(), 1);
    /// ```
    pub fn open_with<T: Send + 'static>(
        &self,
        name: &str,
        options: &Options,
    ) -> io::Result<Mailbox<T>> {
        crate::names::validate(name, "mailbox")?;
        if options.capacity == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mailbox's capacity must be at least 1",
            ));
        }
        let mut names = lock(&self.names);
        let shared = match names.get(name) {
            Some(reg) => {
                if options.mode == Mode::CreateNew {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("mailbox {name:?} exists"),
                    ));
                }
                match reg.as_any().downcast_ref::<Arc<Shared<T>>>() {
                    Some(shared) => shared.clone(),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "mailbox {name:?} carries {}, not {}",
                                reg.type_name(),
                                std::any::type_name::<T>()
                            ),
                        ));
                    }
                }
            }
            None => {
                if options.mode == Mode::OpenExisting {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no mailbox {name:?}"),
                    ));
                }
                let shared = Arc::new(Shared::<T>::new(name.into(), options.capacity));
                names.insert(name.to_owned(), Box::new(shared.clone()));
                shared
            }
        };
        drop(names);
        Ok(Mailbox::from_shared(shared))
    }

    /// Removes the name and closes its mailbox: sends fail from now on (handing the
    /// message back), receivers drain what is queued and then get `Disconnected`. Says
    /// whether the name existed. A later open makes a new mailbox.
    ///
    /// ```
    /// use conduit::mailbox::PostOffice;
    /// use conduit::{SendError, RecvError};
    /// let po = PostOffice::new();
    /// let mb = po.open::<u8>("c").unwrap();
    /// mb.send(1).unwrap();
    /// assert!(po.close("c"));
    /// assert_eq!(mb.send(2), Err(SendError(2)));
    /// assert_eq!(*mb.recv().unwrap().body(), 1);
    /// assert_eq!(mb.recv().unwrap_err(), RecvError);
    /// assert!(po.open::<u8>("c").unwrap().is_empty());
    /// ```
    pub fn close(&self, name: &str) -> bool {
        let removed = lock(&self.names).remove(name);
        match removed {
            Some(reg) => {
                reg.close();
                // Dropped here, outside every lock: the last reference drops the
                // queued messages.
                drop(reg);
                true
            }
            None => false,
        }
    }

    /// The names of the open mailboxes, sorted.
    ///
    /// ```
    /// let po = conduit::mailbox::PostOffice::new();
    /// po.open::<()>("z").unwrap();
    /// po.open::<()>("m").unwrap();
    /// assert_eq!(po.names(), ["m", "z"]);
    /// ```
    pub fn names(&self) -> Vec<String> {
        lock(&self.names).keys().cloned().collect()
    }
}

/// A queued message with what its envelope will carry.
pub(crate) struct Stored<T> {
    body: T,
    /// The sender's address id (the receiver rebuilds the [`Address`]: no reference
    /// count of the mailbox's name passes between the threads with each message, and
    /// none is touched at all when the name is short enough to be copied, see `Name`).
    from: u64,
    /// A request's `Reply<R>`, type-erased.
    reply: Option<Capability>,
}

/// What the handles of one family share.
struct Family<T> {
    shared: Arc<Shared<T>>,
    address: Address,
    /// Whether the family is attached as a receiver (set under the state lock).
    receiving: AtomicBool,
}

impl<T> Drop for Family<T> {
    fn drop(&mut self) {
        if !self.receiving.load(Ordering::Relaxed) {
            return;
        }
        let mut after = After::default();
        // The last one fails the queued requests rather than let their requesters wait.
        self.shared
            .detach_receiver(&mut self.shared.lock(), &mut after);
        self.shared.finish(after);
    }
}

/// A handle to a mailbox: sends and receives [`Envelope`]s. `Clone + Send + Sync` for
/// `T: Send`; clones share the handle family's [`Address`].
///
/// ```
/// use std::thread;
/// use conduit::mailbox::PostOffice;
///
/// let po = PostOffice::new();
/// let mb = po.open::<u32>("work").unwrap();
/// let workers: Vec<_> = (0..3)
///     .map(|_| {
///         let mb = po.open::<u32>("work").unwrap();
///         thread::spawn(move || {
///             let mut sum = 0;
///             while let Ok(env) = mb.recv() {
///                 sum += env.into_body();
///             }
///             sum
///         })
///     })
///     .collect();
/// for i in 1..=100 {
///     mb.send(i).unwrap();
/// }
/// po.close("work");
/// let total: u32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
/// assert_eq!(total, 5050);
/// ```
pub struct Mailbox<T> {
    fam: Arc<Family<T>>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            fam: self.fam.clone(),
        }
    }
}

impl<T> fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("address", &self.fam.address)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// Converts a blocking wait's outcome for a send.
fn send_outcome<T>(
    out: Option<Result<(), (SendFail, Stored<T>)>>,
    stored: &mut Option<Stored<T>>,
) -> Result<(), SendTimeoutError<T>> {
    match out {
        Some(Ok(())) => Ok(()),
        Some(Err((_, m))) => Err(SendTimeoutError::Disconnected(m.body)),
        None => Err(SendTimeoutError::Timeout(
            stored
                .take()
                .expect("a timed-out send keeps its message")
                .body,
        )),
    }
}

/// One send attempt for a wait loop: the message moves into the mailbox, or back into
/// `stored` to wait for room. Without the lock (`cx` is `None`) the lock-free send, a
/// request's with its "no responders" check (`Shared::send_request_fast`); under it,
/// `Shared::try_push`.
#[inline]
fn send_attempt<T>(
    sh: &Shared<T>,
    cx: Locked<'_, T>,
    tag: u64,
    stored: &mut Option<Stored<T>>,
    need_receiver: bool,
) -> Attempt<Result<(), (SendFail, Stored<T>)>> {
    let msg = stored.take().expect("a pending send holds its message");
    let res = match cx {
        None if need_receiver => sh.send_request_fast(tag, msg),
        None => sh.send_fast(tag, msg),
        Some((st, after)) => sh.try_push(st, tag, msg, need_receiver, after),
    };
    match res {
        Ok(()) => Attempt::Done(Ok(())),
        Err((SendFail::Full, m)) => {
            *stored = Some(m);
            Attempt::Wait
        }
        Err(e) => Attempt::Done(Err(e)),
    }
}

/// One attempt of a selective receive's wait loop: under the lock only (`Any` receives
/// wait elsewhere, see [`Shared::wait_any`]).
fn recv_attempt<T>(
    sh: &Shared<T>,
    cx: Locked<'_, T>,
    sel: Sel,
) -> Attempt<Result<Envelope<T>, RecvError>> {
    let res = match cx {
        None => Err(false),
        Some((st, after)) => sh.try_take(st, sel, after),
    };
    match res {
        Ok((tag, m)) => Attempt::Done(Ok(Envelope::new(tag, m, &sh.address_name))),
        Err(true) => Attempt::Done(Err(RecvError)),
        Err(false) => Attempt::Wait,
    }
}

impl<T> Mailbox<T> {
    fn from_shared(shared: Arc<Shared<T>>) -> Self {
        let address = Address::new(shared.address_name.clone());
        Mailbox {
            fam: Arc::new(Family {
                shared,
                address,
                receiving: AtomicBool::new(false),
            }),
        }
    }

    fn shared(&self) -> &Shared<T> {
        &self.fam.shared
    }

    fn stored(&self, body: T, reply: Option<Capability>) -> Stored<T> {
        Stored {
            body,
            from: self.fam.address.id,
            reply,
        }
    }

    /// Attaches this handle family as a receiver (for requests' "no responders"): at
    /// its first receive; every later one only looks at the flag.
    #[inline]
    fn attach(&self) {
        if !self.fam.receiving.load(Ordering::Relaxed) {
            self.attach_locked();
        }
    }

    #[cold]
    #[inline(never)]
    fn attach_locked(&self) {
        let mut g = self.shared().lock();
        if !self.fam.receiving.load(Ordering::Relaxed) {
            self.fam.receiving.store(true, Ordering::Relaxed);
            self.shared().attach_receiver(&mut g);
        }
    }

    /// The mailbox's name.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("named").unwrap();
    /// assert_eq!(mb.name(), "named");
    /// ```
    pub fn name(&self) -> &str {
        &self.shared().name
    }

    /// This handle family's address (what receivers see in [`Envelope::from`]).
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("a").unwrap();
    /// mb.send(1).unwrap();
    /// assert_eq!(mb.recv().unwrap().from(), mb.address());
    /// ```
    pub fn address(&self) -> &Address {
        &self.fam.address
    }

    /// Sends `msg` with tag 0, waiting while the mailbox is full. Fails (handing the
    /// message back) when the mailbox is closed.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("s").unwrap();
    /// mb.send(1).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 0);
    /// ```
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.send_tagged(0, msg)
    }

    /// Sends `msg` with `tag`, waiting while the mailbox is full.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("s").unwrap();
    /// mb.send_tagged(7, 1).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 7);
    /// ```
    pub fn send_tagged(&self, tag: u64, msg: T) -> Result<(), SendError<T>> {
        self.send_deadline_tagged(tag, msg, None)
            .map_err(|e| SendError(e.into_inner()))
    }

    fn send_deadline_tagged(
        &self,
        tag: u64,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let sh = self.shared();
        // The lock-free send inline; only a full mailbox enters the wait loop.
        let m = match sh.send_fast(tag, self.stored(msg, None)) {
            Ok(()) => return Ok(()),
            Err((SendFail::Full, m)) => m,
            Err((_, m)) => return Err(SendTimeoutError::Disconnected(m.body)),
        };
        let mut stored = Some(m);
        let out = sh.block(Side::Send, None, deadline, true, |cx| {
            send_attempt(sh, cx, tag, &mut stored, false)
        });
        send_outcome(out, &mut stored)
    }

    /// Sends `msg` with tag 0 if there is room now.
    ///
    /// ```
    /// use conduit::TrySendError;
    /// use conduit::mailbox::{Options, PostOffice};
    /// let mb = PostOffice::new().open_with::<u8>("t", &Options::new().capacity(1)).unwrap();
    /// mb.try_send(1).unwrap();
    /// assert_eq!(mb.try_send(2), Err(TrySendError::Full(2)));
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.try_send_tagged(0, msg)
    }

    /// Sends `msg` with `tag` if there is room now.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("t").unwrap();
    /// mb.try_send_tagged(4, 1).unwrap();
    /// assert_eq!(mb.try_recv().unwrap().tag(), 4);
    /// ```
    pub fn try_send_tagged(&self, tag: u64, msg: T) -> Result<(), TrySendError<T>> {
        let res = self.shared().send_fast(tag, self.stored(msg, None));
        res.map_err(|(why, m)| match why {
            SendFail::Full => TrySendError::Full(m.body),
            _ => TrySendError::Disconnected(m.body),
        })
    }

    /// Sends `msg` with tag 0, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::SendTimeoutError;
    /// use conduit::mailbox::{Options, PostOffice};
    /// let mb = PostOffice::new().open_with::<u8>("t", &Options::new().capacity(1)).unwrap();
    /// mb.send(1).unwrap();
    /// let e = mb.send_timeout(2, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(e, SendTimeoutError::Timeout(2));
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_tagged_timeout(0, msg, timeout)
    }

    /// Sends `msg` with `tag`, waiting at most `timeout` for room.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("t").unwrap();
    /// mb.send_tagged_timeout(3, 1, Duration::from_secs(1)).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 3);
    /// ```
    pub fn send_tagged_timeout(
        &self,
        tag: u64,
        msg: T,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline_tagged(tag, msg, Instant::now().checked_add(timeout))
    }

    /// Sends `msg` with tag 0 asynchronously (waits while full). Cancel-safe: a future
    /// dropped before it completed sent nothing.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("a").unwrap();
    /// mb.send_async(1).await.unwrap();
    /// assert_eq!(mb.len(), 1);
    /// # });
    /// ```
    pub fn send_async(&self, msg: T) -> SendFut<'_, T> {
        self.send_tagged_async(0, msg)
    }

    /// Sends `msg` with `tag` asynchronously.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("a").unwrap();
    /// mb.send_tagged_async(9, 1).await.unwrap();
    /// assert_eq!(mb.recv_async().await.unwrap().tag(), 9);
    /// # });
    /// ```
    pub fn send_tagged_async(&self, tag: u64, msg: T) -> SendFut<'_, T> {
        SendFut {
            mb: self,
            tag,
            msg: Some(self.stored(msg, None)),
            key: None,
            done: false,
        }
    }

    /// Receives the oldest message, waiting while there is none; `Err` once the mailbox
    /// is closed and empty.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send(5).unwrap();
    /// assert_eq!(mb.recv().unwrap().into_body(), 5);
    /// ```
    pub fn recv(&self) -> Result<Envelope<T>, RecvError> {
        self.recv_inner(Sel::Any, None)
            .expect("a wait without deadline does not time out")
    }

    /// Receives the oldest message if there is one now.
    ///
    /// ```
    /// use conduit::TryRecvError;
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("r").unwrap();
    /// assert_eq!(mb.try_recv().unwrap_err(), TryRecvError::Empty);
    /// ```
    pub fn try_recv(&self) -> Result<Envelope<T>, TryRecvError> {
        self.try_recv_sel(Sel::Any)
    }

    /// Receives the oldest message, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::RecvTimeoutError;
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("r").unwrap();
    /// let e = mb.recv_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(e, RecvTimeoutError::Timeout);
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Envelope<T>, RecvTimeoutError> {
        self.recv_select_timeout(Select::Any, timeout)
    }

    /// Receives the oldest message, waiting until `deadline` at most.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send(1).unwrap();
    /// let d = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(mb.recv_deadline(d).unwrap().into_body(), 1);
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Envelope<T>, RecvTimeoutError> {
        self.recv_select_deadline(Select::Any, deadline)
    }

    /// Receives the oldest message asynchronously. Cancel-safe: a future dropped before
    /// it completed took nothing.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send(3).unwrap();
    /// assert_eq!(mb.recv_async().await.unwrap().into_body(), 3);
    /// # });
    /// ```
    #[inline]
    pub fn recv_async(&self) -> RecvFut<'_, T> {
        self.recv_sel_async(Sel::Any)
    }

    /// Receives the message `select` takes, waiting while there is none; `Err` once the
    /// mailbox is closed and no queued message matches.
    ///
    /// ```
    /// use conduit::mailbox::{PostOffice, Select};
    /// let mb = PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send_tagged(1, 10).unwrap();
    /// mb.send_tagged(2, 20).unwrap();
    /// assert_eq!(mb.recv_select(Select::Tag(2)).unwrap().into_body(), 20);
    /// ```
    pub fn recv_select(&self, select: Select) -> Result<Envelope<T>, RecvError> {
        self.recv_inner(select.sel(), None)
            .expect("a wait without deadline does not time out")
    }

    /// The blocking receives, with the selection converted (a plain `recv` neither
    /// builds nor drops a [`Select`]); `None`: the deadline passed.
    fn recv_inner(
        &self,
        sel: Sel,
        deadline: Option<Instant>,
    ) -> Option<Result<Envelope<T>, RecvError>> {
        self.attach();
        let sh = self.shared();
        // `Any` receives wait on the channels' wait queue (see `state`'s docs), after
        // one attempt inline, made only if something may be there to take (as a
        // channel's blocking receive does, `chan::recv_blocking`: an attempt on an
        // empty inbox loads the senders' position and takes its line from them).
        if sel == Sel::Any {
            if sh.any_worth_trying() {
                match sh.recv_any() {
                    Ok((tag, m)) => {
                        return Some(Ok(Envelope::new(tag, m, &sh.address_name)));
                    }
                    Err(true) => return Some(Err(RecvError)),
                    Err(false) => {}
                }
            }
            return sh.wait_any(deadline).map(|r| {
                r.map(|(tag, m)| Envelope::new(tag, m, &sh.address_name))
                    .map_err(|()| RecvError)
            });
        }
        sh.block(Side::Recv, Some(sel), deadline, false, |cx| {
            recv_attempt(sh, cx, sel)
        })
    }

    /// Receives the message `select` takes if there is one now.
    ///
    /// ```
    /// use conduit::TryRecvError;
    /// use conduit::mailbox::{PostOffice, Select};
    /// let mb = PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send_tagged(1, 10).unwrap();
    /// assert_eq!(mb.try_recv_select(Select::Tag(2)).unwrap_err(), TryRecvError::Empty);
    /// ```
    pub fn try_recv_select(&self, select: Select) -> Result<Envelope<T>, TryRecvError> {
        self.try_recv_sel(select.sel())
    }

    /// [`Mailbox::try_recv_select`] with the selection converted.
    fn try_recv_sel(&self, sel: Sel) -> Result<Envelope<T>, TryRecvError> {
        self.attach();
        let sh = self.shared();
        let res = if sel == Sel::Any {
            sh.recv_any()
        } else {
            let mut after = After::default();
            let res = sh.try_take(&mut sh.lock(), sel, &mut after);
            sh.finish(after);
            res
        };
        match res {
            Ok((tag, m)) => Ok(Envelope::new(tag, m, &sh.address_name)),
            Err(true) => Err(TryRecvError::Disconnected),
            Err(false) => Err(TryRecvError::Empty),
        }
    }

    /// Receives the message `select` takes, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::mailbox::{PostOffice, Select};
    /// let mb = PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send_tagged(1, 10).unwrap();
    /// assert!(mb.recv_select_timeout(Select::Tag(2), Duration::from_millis(1)).is_err());
    /// ```
    pub fn recv_select_timeout(
        &self,
        select: Select,
        timeout: Duration,
    ) -> Result<Envelope<T>, RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(d) => self.recv_select_deadline(select, d),
            None => self.recv_select(select).map_err(RecvTimeoutError::from),
        }
    }

    /// Receives the message `select` takes, waiting until `deadline` at most.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use conduit::mailbox::{PostOffice, Select};
    /// let mb = PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send_tagged(2, 10).unwrap();
    /// let d = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(mb.recv_select_deadline(Select::Tag(2), d).unwrap().into_body(), 10);
    /// ```
    pub fn recv_select_deadline(
        &self,
        select: Select,
        deadline: Instant,
    ) -> Result<Envelope<T>, RecvTimeoutError> {
        match self.recv_inner(select.sel(), Some(deadline)) {
            Some(Ok(env)) => Ok(env),
            Some(Err(RecvError)) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Receives the message `select` takes, asynchronously. Cancel-safe: a future
    /// dropped before it completed took nothing (a wake-up it had received passes to
    /// another waiting receiver that can use it).
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use conduit::mailbox::{PostOffice, Select};
    /// let mb = PostOffice::new().open::<u8>("r").unwrap();
    /// mb.send_tagged(1, 10).unwrap();
    /// mb.send_tagged(2, 20).unwrap();
    /// let env = mb.recv_select_async(Select::TagExcept(1)).await.unwrap();
    /// assert_eq!(env.into_body(), 20);
    /// # });
    /// ```
    pub fn recv_select_async(&self, select: Select) -> RecvFut<'_, T> {
        self.recv_sel_async(select.sel())
    }

    /// [`Mailbox::recv_select_async`] with the selection converted: a plain
    /// `recv_async` neither builds nor drops a [`Select`].
    fn recv_sel_async(&self, sel: Sel) -> RecvFut<'_, T> {
        self.attach();
        RecvFut {
            mb: self,
            sel,
            key: None,
            any: AsyncWait::new(),
            done: false,
        }
    }

    /// The number of messages queued.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("l").unwrap();
    /// mb.send(1).unwrap();
    /// assert_eq!(mb.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.shared().len()
    }

    /// The most messages the mailbox holds; `None` when unbounded.
    ///
    /// ```
    /// use conduit::mailbox::{Options, PostOffice};
    /// let mb = PostOffice::new().open_with::<u8>("c", &Options::new().capacity(3)).unwrap();
    /// assert_eq!(mb.capacity(), Some(3));
    /// ```
    pub fn capacity(&self) -> Option<usize> {
        self.shared().capacity
    }

    /// Whether no message is queued.
    ///
    /// ```
    /// let mb = conduit::mailbox::PostOffice::new().open::<u8>("e").unwrap();
    /// assert!(mb.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the mailbox was closed ([`PostOffice::close`]).
    ///
    /// ```
    /// let po = conduit::mailbox::PostOffice::new();
    /// let mb = po.open::<u8>("x").unwrap();
    /// po.close("x");
    /// assert!(mb.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// Sends `msg` (tag 0) as a request and waits for its reply of type `R`.
    ///
    /// # Errors
    /// [`RequestError::NoResponders`] at once when no receiver is attached (see the
    /// [module docs](self#requests)); `Disconnected` when the mailbox is closed;
    /// `Unanswered` when the request's reply capability is dropped without an answer.
    ///
    /// ```
    /// use std::thread;
    /// use conduit::mailbox::PostOffice;
    /// let po = PostOffice::new();
    /// let server = po.open::<(i32, i32)>("add").unwrap();
    /// server.try_recv().ok(); // attached
    /// let client = po.open::<(i32, i32)>("add").unwrap();
    /// let t = thread::spawn(move || {
    ///     let mut env = server.recv().unwrap();
    ///     let (a, b) = *env.body();
    ///     env.take_reply::<i32>().unwrap().reply(a + b).unwrap();
    /// });
    /// assert_eq!(client.request::<i32>((2, 3)), Ok(5));
    /// t.join().unwrap();
    /// ```
    pub fn request<R: Send + 'static>(&self, msg: T) -> Result<R, RequestError<T>> {
        self.request_inner(0, msg, None)
    }

    /// [`request`](Self::request) with a tag.
    ///
    /// ```
    /// # use conduit::mailbox::{PostOffice, Select};
    /// # let po = PostOffice::new();
    /// # let server = po.open::<u8>("q").unwrap();
    /// # server.try_recv().ok();
    /// # let s = server.clone();
    /// let t = std::thread::spawn(move || {
    ///     let mut env = s.recv_select(Select::Tag(7)).unwrap();
    ///     env.take_reply::<u8>().unwrap().reply(*env.body() + 1).unwrap();
    /// });
    /// assert_eq!(server.request_tagged::<u8>(7, 1), Ok(2));
    /// # t.join().unwrap();
    /// ```
    pub fn request_tagged<R: Send + 'static>(
        &self,
        tag: u64,
        msg: T,
    ) -> Result<R, RequestError<T>> {
        self.request_inner(tag, msg, None)
    }

    /// [`request`](Self::request), waiting at most `timeout` in all (for room, then for
    /// the reply).
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::mailbox::{PostOffice, RequestError};
    /// let mb = PostOffice::new().open::<u8>("slow").unwrap();
    /// mb.try_recv().ok(); // attached, but never answers
    /// let e = mb.request_timeout::<u8>(1, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(e, RequestError::Timeout(None));
    /// ```
    pub fn request_timeout<R: Send + 'static>(
        &self,
        msg: T,
        timeout: Duration,
    ) -> Result<R, RequestError<T>> {
        self.request_tagged_timeout(0, msg, timeout)
    }

    /// [`request_tagged`](Self::request_tagged), waiting at most `timeout` in all.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use conduit::mailbox::{PostOffice, RequestError};
    /// let mb = PostOffice::new().open::<u8>("slow").unwrap();
    /// assert_eq!(
    ///     mb.request_tagged_timeout::<u8>(3, 1, Duration::from_secs(1)),
    ///     Err(RequestError::NoResponders(1))
    /// );
    /// ```
    pub fn request_tagged_timeout<R: Send + 'static>(
        &self,
        tag: u64,
        msg: T,
        timeout: Duration,
    ) -> Result<R, RequestError<T>> {
        self.request_inner(tag, msg, Instant::now().checked_add(timeout))
    }

    fn request_inner<R: Send + 'static>(
        &self,
        tag: u64,
        msg: T,
        deadline: Option<Instant>,
    ) -> Result<R, RequestError<T>> {
        let (reply, mut waiting) = reply::pair::<R>();
        let sh = self.shared();
        let mut stored = Some(self.stored(msg, Some(reply)));
        // The lock-free attempt first, inline; the wait loop only for room.
        let first = send_attempt(sh, None, tag, &mut stored, true);
        let out = match first {
            Attempt::Done(r) => Some(r),
            Attempt::Wait => sh.block(Side::Send, None, deadline, true, |cx| {
                send_attempt(sh, cx, tag, &mut stored, true)
            }),
        };
        match out {
            Some(Ok(())) => {}
            Some(Err((why, m))) => return Err(request_fail(why, m.body)),
            None => {
                let m = stored.take().expect("a timed-out send keeps its message");
                return Err(RequestError::Timeout(Some(m.body)));
            }
        }
        waiting.wait(deadline).map_err(RequestError::from_no_reply)
    }

    /// [`request`](Self::request) asynchronously. Dropping the future before it
    /// completes withdraws the request if it was not sent yet, and abandons the reply
    /// (handed back to the replier) if it was.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use conduit::mailbox::PostOffice;
    /// let po = PostOffice::new();
    /// let mb = po.open::<u32>("async-req").unwrap();
    /// mb.try_recv().ok();
    /// let server = async {
    ///     let mut env = mb.recv_async().await.unwrap();
    ///     env.take_reply::<u32>().unwrap().reply(env.body() * 2).unwrap();
    /// };
    /// let (r, ()) = futures::join!(mb.request_async::<u32>(21), server);
    /// assert_eq!(r, Ok(42));
    /// # });
    /// ```
    #[inline]
    pub fn request_async<R: Send + 'static>(&self, msg: T) -> RequestFut<'_, T, R> {
        self.request_tagged_async(0, msg)
    }

    /// [`request_tagged`](Self::request_tagged) asynchronously.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// # use conduit::mailbox::{PostOffice, RequestError};
    /// let mb = PostOffice::new().open::<u32>("nobody").unwrap();
    /// let r = mb.request_tagged_async::<u32>(1, 5).await;
    /// assert_eq!(r, Err(RequestError::NoResponders(5)));
    /// # });
    /// ```
    #[inline]
    pub fn request_tagged_async<R: Send + 'static>(
        &self,
        tag: u64,
        msg: T,
    ) -> RequestFut<'_, T, R> {
        let (reply, waiting) = reply::pair::<R>();
        RequestFut {
            mb: self,
            tag,
            msg: Some(self.stored(msg, Some(reply))),
            key: None,
            waiting,
            sent: false,
            done: false,
        }
    }
}

fn request_fail<T>(why: SendFail, body: T) -> RequestError<T> {
    match why {
        SendFail::NoResponders => RequestError::NoResponders(body),
        _ => RequestError::Disconnected(body),
    }
}

/// A received message: body, tag, sender and, for a request, the reply capability.
/// Dropping an envelope that still holds a reply capability fails its request
/// ([`RequestError::Unanswered`]).
///
/// ```
/// let mb = conduit::mailbox::PostOffice::new().open::<String>("env").unwrap();
/// mb.send_tagged(4, "hi".to_string()).unwrap();
/// let env = mb.recv().unwrap();
/// assert_eq!(env.tag(), 4);
/// assert_eq!(env.body(), "hi");
/// assert_eq!(env.from(), mb.address());
/// assert!(!env.is_request());
/// assert_eq!(env.into_body(), "hi");
/// ```
pub struct Envelope<T> {
    tag: u64,
    body: T,
    from: Address,
    reply: Option<Capability>,
}

impl<T> Envelope<T> {
    /// A received message of a shared-memory mailbox, with a request's reply capability
    /// (a [`Reply`]) if it is one.
    #[cfg_attr(any(loom, not(unix)), allow(dead_code))]
    pub(crate) fn from_parts(
        tag: u64,
        body: T,
        from: Address,
        reply: Option<Box<dyn self::reply::ErasedRemote>>,
    ) -> Self {
        Envelope {
            tag,
            body,
            from,
            reply: reply.map(Capability::Remote),
        }
    }

    #[inline]
    fn new(tag: u64, m: Stored<T>, mailbox: &Name) -> Self {
        Envelope {
            tag,
            body: m.body,
            from: Address {
                id: m.from,
                pid: 0,
                mailbox: mailbox.clone(),
            },
            reply: m.reply,
        }
    }

    /// The sender's address.
    ///
    /// ```
    /// # let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
    /// mb.send(1).unwrap();
    /// assert_eq!(mb.recv().unwrap().from(), mb.address());
    /// ```
    pub fn from(&self) -> &Address {
        &self.from
    }

    /// The tag the message was sent with (0 for untagged sends).
    ///
    /// ```
    /// # let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
    /// mb.send_tagged(8, 1).unwrap();
    /// assert_eq!(mb.recv().unwrap().tag(), 8);
    /// ```
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The message.
    ///
    /// ```
    /// # let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
    /// mb.send(6).unwrap();
    /// assert_eq!(*mb.recv().unwrap().body(), 6);
    /// ```
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The message, mutably.
    ///
    /// ```
    /// # let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
    /// mb.send(6).unwrap();
    /// let mut env = mb.recv().unwrap();
    /// *env.body_mut() += 1;
    /// assert_eq!(env.into_body(), 7);
    /// ```
    pub fn body_mut(&mut self) -> &mut T {
        &mut self.body
    }

    /// The message, consuming the envelope (a reply capability still in it is dropped,
    /// failing its request).
    ///
    /// ```
    /// # let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
    /// mb.send(6).unwrap();
    /// assert_eq!(mb.recv().unwrap().into_body(), 6);
    /// ```
    pub fn into_body(self) -> T {
        self.body
    }

    /// Whether the message is a request whose reply capability is still in the envelope.
    ///
    /// ```
    /// # let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
    /// mb.send(6).unwrap();
    /// assert!(!mb.recv().unwrap().is_request());
    /// ```
    pub fn is_request(&self) -> bool {
        self.reply.is_some()
    }

    /// Takes the reply capability of a request whose requester expects an `R`. `None`
    /// when the message is not a request, the capability was taken already, or the
    /// requester expects another type (the capability then stays in the envelope).
    ///
    /// ```
    /// # use conduit::mailbox::PostOffice;
    /// # let po = PostOffice::new();
    /// # let mb = po.open::<u8>("f").unwrap();
    /// # mb.try_recv().ok();
    /// # let s = mb.clone();
    /// let t = std::thread::spawn(move || {
    ///     let mut env = s.recv().unwrap();
    ///     assert!(env.take_reply::<String>().is_none()); // the requester wants a u16
    ///     env.take_reply::<u16>().unwrap().reply(300).unwrap();
    /// });
    /// assert_eq!(mb.request::<u16>(1), Ok(300));
    /// # t.join().unwrap();
    /// ```
    #[inline]
    pub fn take_reply<R: Send + 'static>(&mut self) -> Option<Reply<R>> {
        match self.reply.take()?.take::<R>() {
            Ok(r) => Some(r),
            Err(cap) => {
                self.reply = Some(cap);
                None
            }
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("from", &self.from)
            .field("tag", &self.tag)
            .field("body", &self.body)
            .field("request", &self.is_request())
            .finish()
    }
}

/// A future that sends one message; see [`Mailbox::send_async`]. Cancel-safe: dropped
/// before completing, it sent nothing.
///
/// ```
/// # futures::executor::block_on(async {
/// let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
/// let fut: conduit::mailbox::SendFut<'_, u8> = mb.send_async(1);
/// fut.await.unwrap();
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct SendFut<'a, T> {
    mb: &'a Mailbox<T>,
    tag: u64,
    msg: Option<Stored<T>>,
    key: Option<u64>,
    done: bool,
}

impl<T> Unpin for SendFut<'_, T> {}

impl<T> Future for SendFut<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "SendFut polled after completion");
        let sh = this.mb.shared();
        let (tag, msg) = (this.tag, &mut this.msg);
        let res = sh.poll(Side::Send, None, true, &mut this.key, cx, |lk| {
            send_attempt(sh, lk, tag, msg, false)
        });
        res.map(|r| {
            this.done = true;
            r.map_err(|(_, m)| SendError(m.body))
        })
    }
}

impl<T> Drop for SendFut<'_, T> {
    fn drop(&mut self) {
        self.mb.shared().cancel(Side::Send, &mut self.key);
    }
}

impl<T> fmt::Debug for SendFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFut").field("done", &self.done).finish()
    }
}

/// A future that receives one message; see [`Mailbox::recv_select_async`].
/// Cancel-safe: dropped before completing, it took nothing.
///
/// ```
/// # futures::executor::block_on(async {
/// let mb = conduit::mailbox::PostOffice::new().open::<u8>("f").unwrap();
/// mb.send(1).unwrap();
/// let fut: conduit::mailbox::RecvFut<'_, u8> = mb.recv_async();
/// assert_eq!(fut.await.unwrap().into_body(), 1);
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct RecvFut<'a, T> {
    mb: &'a Mailbox<T>,
    sel: Sel,
    /// A selective receive's registration in the mailbox's waiter list.
    key: Option<u64>,
    /// An `Any` receive's registration in the `Any` receivers' queue.
    any: AsyncWait,
    done: bool,
}

impl<T> Unpin for RecvFut<'_, T> {}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<Envelope<T>, RecvError>;

    /// Inline, to be inlined into the caller's `async` block (see `Shared::recv_any`).
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "RecvFut polled after completion");
        let sh = this.mb.shared();
        let sel = this.sel;
        if sel == Sel::Any {
            // A `match` that builds the envelope in the result, rather than maps of the
            // `Poll` and the `Result` (measured a little faster, with `Address::pid` in a
            // whole word: `benches/README.md`, thirteenth session).
            return match sh.poll_any(&mut this.any, cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => {
                    this.done = true;
                    Poll::Ready(match r {
                        Ok((tag, m)) => Ok(Envelope::new(tag, m, &sh.address_name)),
                        Err(()) => Err(RecvError),
                    })
                }
            };
        }
        let res = sh.poll(Side::Recv, Some(sel), false, &mut this.key, cx, |lk| {
            recv_attempt(sh, lk, sel)
        });
        if res.is_ready() {
            this.done = true;
        }
        res
    }
}

impl<T> Drop for RecvFut<'_, T> {
    fn drop(&mut self) {
        let sh = self.mb.shared();
        sh.cancel_any(&mut self.any);
        sh.cancel(Side::Recv, &mut self.key);
    }
}

impl<T> fmt::Debug for RecvFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFut")
            .field("select", &self.sel)
            .field("done", &self.done)
            .finish()
    }
}

/// A future that sends a request and waits for its reply; see
/// [`Mailbox::request_async`].
///
/// ```
/// # futures::executor::block_on(async {
/// use conduit::mailbox::{PostOffice, RequestError};
/// let mb = PostOffice::new().open::<u8>("f").unwrap();
/// let fut: conduit::mailbox::RequestFut<'_, u8, u8> = mb.request_async(1);
/// assert_eq!(fut.await, Err(RequestError::NoResponders(1)));
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct RequestFut<'a, T, R> {
    mb: &'a Mailbox<T>,
    tag: u64,
    msg: Option<Stored<T>>,
    key: Option<u64>,
    waiting: Waiting<R>,
    sent: bool,
    done: bool,
}

impl<T, R> Unpin for RequestFut<'_, T, R> {}

impl<T, R> Future for RequestFut<'_, T, R> {
    type Output = Result<R, RequestError<T>>;

    /// Inline, as `RecvFut::poll` is.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "RequestFut polled after completion");
        if !this.sent {
            let sh = this.mb.shared();
            let (tag, msg) = (this.tag, &mut this.msg);
            // The first poll's lock-free attempt inline: the wait machinery is only for a
            // full mailbox.
            let first = match this.key {
                None => send_attempt(sh, None, tag, msg, true),
                Some(_) => Attempt::Wait,
            };
            let sent = match first {
                Attempt::Done(r) => Poll::Ready(r),
                Attempt::Wait => sh.poll(Side::Send, None, true, &mut this.key, cx, |lk| {
                    send_attempt(sh, lk, tag, msg, true)
                }),
            };
            match sent {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err((why, m))) => {
                    this.done = true;
                    return Poll::Ready(Err(request_fail(why, m.body)));
                }
                Poll::Ready(Ok(())) => this.sent = true,
            }
        }
        let res = this.waiting.poll(cx);
        res.map(|r| {
            this.done = true;
            r.map_err(RequestError::from_no_reply)
        })
    }
}

impl<T, R> Drop for RequestFut<'_, T, R> {
    fn drop(&mut self) {
        self.mb.shared().cancel(Side::Send, &mut self.key);
    }
}

impl<T, R> fmt::Debug for RequestFut<'_, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFut")
            .field("sent", &self.sent)
            .field("done", &self.done)
            .finish()
    }
}
