//! Cross-process channels in named POSIX shared memory.
//!
//! A channel here is a named segment (`shm_open` + `mmap(MAP_SHARED)`, the file
//! `/dev/shm/conduit.<name>` on Linux) holding a header, a peer table and a bounded ring
//! of fixed-size slots. Any number of processes may open the same name: it is a
//! many-to-many **mailbox**. Each message is received exactly once, by one receiver in
//! one process, in FIFO order per sender.
//!
//! ```
//! use conduit::shm;
//!
//! let name = format!("doc-shm-{}", std::process::id());
//! // Usually in two processes; any process that knows the name can open it.
//! let rx = shm::Receiver::<[u64; 2]>::create(&name, 64)?;
//! let tx = shm::Sender::<[u64; 2]>::open(&name)?;
//! tx.send([1, 2]).unwrap();
//! assert_eq!(rx.recv(), Ok([1, 2]));
//! shm::unlink(&name)?; // the name is gone; open handles keep working
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! - [`Sender`] / [`Receiver`] carry values of one [`ShmSafe`] type (plain data, copied
//!   byte for byte); [`ByteSender`] / [`ByteReceiver`] carry byte messages of any length
//!   up to [`Options::max_message`].
//! - Handles are `Clone + Send + Sync` and offer blocking, `try_`, `_timeout` /
//!   `_deadline` and async (`Future`, `Stream`, `Sink`) operations with the crate's error
//!   types (byte sends report `io::Error`s, since a message can also be too long).
//! - [`Options`] chooses between opening (the default), creating, or creating
//!   exclusively, and sets capacity, mode, `max_message` and the single-producer mode
//!   ([`Options::spsc`]).
//!
//! # Semantics
//!
//! - **Mailbox.** A send succeeds whenever there is room, whether or not a receiver is
//!   attached; queued messages stay in the segment for whoever receives next, across
//!   processes coming and going, until the name is unlinked and the last mapping closed.
//! - **Disconnection.** Receivers get `Disconnected` once the ring is empty and every
//!   sender that ever attached is gone (a sender that never attached does not count: the
//!   receivers wait for the first one). Senders get `Disconnected` (message handed back)
//!   when the ring is full and every receiver that ever attached is gone. A side that
//!   comes back (a new process opens a `Sender`) reconnects the channel.
//! - **Counting.** Each `open`/`create`/`with` call attaches one *handle family* (it and
//!   its clones) and takes one of [`MAX_PEERS`] peer slots; `sender_count` /
//!   `receiver_count` count families in all processes.
//! - **Drop** detaches. The last process to detach does not unlink the name, unless it
//!   created it with [`Options::unlink_on_drop`].
//!
//! # The single-producer mode
//!
//! A typed or byte channel created with [`Options::spsc`] admits one sender handle
//! family and one receiver handle family at a time (clones share theirs; their threads
//! take turns), and moves each message between the processes with one cache-line
//! transfer where the default mode needs more: only the sender writes a slot, and the
//! receiver frees slots by moving a position of its own, which the sender reads about
//! once a lap. A second sender (receiver) is refused with
//! [`std::io::ErrorKind::ResourceBusy`] while the first one's family is attached: each
//! side's family holds an exclusive lock on a byte of the segment file of its own (bytes
//! 64 and 65), which the kernel releases when its process dies, so the next one takes
//! over at once. Operations, errors, waiting and the guarantees below are those of the
//! default mode; a peer killed at any instruction leaves the ring consistent, since
//! each side completes an operation with one store (a new sender first moves the
//! senders' position past a message a dead one published without recording it).
//!
//! # Peers and crashes
//!
//! Every attached handle family holds an exclusive lock on one byte of the segment file,
//! its peer slot's (an open-file-description lock, `fcntl(F_OFD_SETLK)`; advisory, so it
//! does not affect the mapping). The kernel releases it when the process dies, however
//! it dies (`kill -9` included), and any process can prove the death by taking the lock
//! itself. A channel is thus exactly one entry in `/dev/shm`. Waiting threads probe the
//! peers at most every 100 ms, and blocking waits sleep at most 100 ms at a time, so,
//! while anyone waits on the channel:
//! - when every sender process is gone, receivers drain the ring and get
//!   `Disconnected`, and vice versa, within about 200 ms (well under 1 s);
//! - a process killed in the middle of a send or receive never wedges the ring. Before
//!   claiming a position, each operation records it (an *intent*) in its peer slot; a
//!   survivor that finds the peer dead finishes each claim it left: a sender's slot is
//!   published as skipped (its send never returned: the message was never promised), a
//!   receiver's slot is freed (its message is lost: it was being received by the
//!   process that died). Every message whose send completed is still delivered, once.
//!   A claim that a live peer also records is left alone until that peer is done.
//!
//! A peer that is stopped (`SIGSTOP`) or stuck between claiming and committing a slot
//! is alive: the ring waits for it.
//!
//! # Guarantees against corrupt or hostile peers
//!
//! Opening validates the header ([`std::io::ErrorKind::InvalidData`] naming the field that
//! differs): magic, layout version, kind, the type's size, alignment and `type_name`
//! hash, `max_message`, capacity, slot size and alignment, and the file's size. The
//! layout is then fixed for the life of the handle: nothing read from the segment later
//! is trusted. Positions are masked and range-checked, lengths are checked against the
//! slot size, every access to shared memory is atomic, and loops over shared state are
//! bounded.
//!
//! Every location is accessed with one access size only: payloads are copied with
//! relaxed atomic loads and stores of whole, aligned 8-byte words (the layout pads each
//! payload to whole words; a message whose length is not a multiple of 8 has its last
//! word written whole, zero-padded, and read whole), never with narrower accesses at the
//! end. This matters even within one process: a peer that rewrites stamps or positions
//! can make two threads of this process own the same slot, and if one then copied a
//! 16-byte message as two 8-byte stores while the other read a 13-byte message as an
//! 8-byte load and five 1-byte loads, the two threads would race atomics of different
//! sizes on the same bytes, which is undefined behaviour in Rust's memory model. Racing
//! atomics of one size only garble the message.
//!
//! Every loop over shared state is bounded: a claim gives up after a fixed number of
//! failed rounds (a stamp that matches nothing expected, or a CAS lost because the
//! position moved), a send after a fixed number of failed commits, a receive after a
//! fixed number of skipped slots. A peer that keeps moving the positions or rewriting
//! stamps therefore cannot keep a call spinning: `try_send` then reports `Full` and
//! `try_recv` `Empty` (as for a slot that is busy), a timed call returns by its deadline
//! (give or take one bounded attempt), and a blocking call keeps waiting through its
//! wait loop (sleeping in slices and probing peers), not inside one attempt.
//!
//! A peer that writes garbage into the segment can make operations fail, report
//! disconnection, wait until their deadline, or lose and corrupt messages, but not cause
//! out-of-bounds accesses, undefined behaviour or a panic in this process. (A peer that *truncates*
//! the file makes later accesses fault with `SIGBUS`: POSIX shared memory cannot prevent
//! that.)
//!
//! # Layout (version 4)
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | 128 | magic `"CONDUIT\x01"` (stored last by the creator), version, kind, capacity, slot size and alignment, type size, alignment and name hash (FNV-1a), `max_message`, total size, "a sender/receiver ever attached" flags, creator pid |
//! | 128 | 128 | receivers' wait words: `seq`, `waiters`, `async_seq`, `async_waiters` (futex) |
//! | 256 | 128 | senders' wait words |
//! | 384 | 512 | peer state words, one `u64` per peer slot: generation, FREE / LIVE / DEAD, roles |
//! | 1024 | 64 × 192 | peer entries: pid, 20 bytes unused, 16 intent words |
//! | 13312 | 128 | ring `head` (receivers' position) |
//! | 13440 | 128 | ring `tail` (senders' position) |
//! | 13568, aligned | capacity × slot size | slots: stamp `u64`, length `u32`, 4 bytes unused, payload (aligned to the type, at least 8); each slot padded to a power of two up to a cache line, or to whole lines |
//!
//! The kind word is 1 (typed channel) or 2 (byte channel), plus 256 in the
//! single-producer mode, plus 512 more if that mode publishes with light fences (its
//! waiters then issue `membarrier`); in that mode the slots' stamps are written by the
//! sender only, `head` is the receiver's alone, and `tail` is stored once every 16
//! positions, so readers walk the published stamps past it (see [`Options::spsc`]).
//!
//! All integers are native-endian; processes of one machine share a segment.
//!
//! Liveness locks are not stored in the mapping: peer slot `n` is alive while byte `n` of
//! the file (bytes 0 to 63 lie in the header; the lock is advisory) is locked
//! exclusively, by an open-file-description lock. A process of another layout version
//! would not see these locks, so opening a segment of another version fails with
//! [`std::io::ErrorKind::InvalidData`] naming both versions; it is never used.
//!
//! # Limits
//!
//! | what | limit |
//! |---|---|
//! | capacity | 1 to 4 194 304 slots, rounded up to a power of two ([`DEFAULT_CAPACITY`] if unset) |
//! | byte message | 1 byte to 64 MiB `max_message` ([`DEFAULT_MAX_MESSAGE`] if unset) |
//! | typed payload | any size; alignment up to 4096 |
//! | segment | 64 GiB |
//! | attached handle families | [`MAX_PEERS`] (64) per channel |
//! | threads inside one operation at once, per handle family | 16 (more wait for a turn) |
//! | name | 1 to 200 bytes of `[A-Za-z0-9._-]`, not `.` or `..` |
//!
//! # Waiting
//!
//! The fast path (a free slot, a queued message) makes no system call. Blocking waits
//! spin briefly, then sleep on a futex word in the segment (shared, not private), with a
//! waiter count so that a commit only issues `FUTEX_WAKE` when someone sleeps. Async
//! waits never block the executor for more than a brief spin (about 2 µs per poll) and
//! never spawn a thread per future: a pending future first polls the ring and yields to
//! its executor for about 25 µs (a reply from another process that lands meanwhile
//! costs no system call and no wake-up), then one helper thread per process waits
//! (`futex_waitv`) on the words of every channel with pending futures and wakes their
//! tasks. Futures are cancel-safe: a dropped receive has taken
//! nothing, a dropped send has sent nothing.
//!
//! # Cleaning up
//!
//! Segments outlive processes: a channel created without `unlink_on_drop` stays in
//! `/dev/shm` until [`unlink`]ed, or until reboot. [`list`] names the channels present;
//! [`remove_stale`] unlinks those that it can prove no process is attached to (or
//! attaching to), and never a segment it cannot read (another layout version, a corrupt
//! header). [`inspect()`] reports on a segment without attaching to it or writing to it:
//! every header field, the positions, waiter counts and each peer slot with whether its
//! process is alive. The `conduit` command (`conduit-cli`) is built on these: `conduit
//! ls`, `stat`, `watch`, `rm` and `clean`. From a shell, `rm /dev/shm/conduit.<name>`
//! does the same as `unlink`. `/dev/shm` is world-writable with the sticky bit, so only a
//! segment's owner (or root) can remove it.
//!
//! # Platform
//!
//! `conduit::shm` is compiled on 64-bit Unix and relies on Linux: futexes (and
//! `futex_waitv`, Linux 5.16, for async waits; older kernels fall back to polling every
//! millisecond), open-file-description locks (Linux 3.15) and `/dev/shm`;
//! single-producer channels use `membarrier(2)` where it is available (Linux 4.16, see
//! [`Options::spsc`] and [`Options::asymmetric_fences`]). Handles are not meant to cross
//! `fork`: a forked child shares its parent's open file descriptions, and with them its
//! peer locks (so neither looks dead while the other lives) and has no async helper
//! thread; open channels anew in the child (or after `exec`).
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod asym;
pub(crate) mod protocol;
pub(crate) mod spsc;
pub(crate) mod table;

#[cfg(loom)]
#[doc(hidden)]
pub mod loom_api;
#[cfg(loom)]
mod loom_signal;

#[cfg(not(loom))]
#[macro_use]
mod accessors;
#[cfg(not(loom))]
mod bytes;
#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod endpoint;
mod futex;
#[cfg(not(loom))]
mod future;
#[cfg(not(loom))]
mod header;
mod hub;
#[cfg(not(loom))]
mod inspect;
#[cfg(not(loom))]
mod lock;
#[cfg(not(loom))]
pub mod mailbox;
mod mailbox_words;
#[cfg(not(loom))]
mod name;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod peers;
#[cfg(not(loom))]
mod ring;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
pub mod signal;
#[cfg(not(loom))]
mod stale;
mod wait;

#[cfg(not(loom))]
pub use bytes::{ByteReceiver, ByteSender};
#[cfg(not(loom))]
pub use channel::{Receiver, Sender};
#[cfg(not(loom))]
pub use future::{ByteSendFut, RecvFut, RecvStream, SendFut, SendSink};
#[cfg(not(loom))]
pub use inspect::{Inspection, Liveness, ObjectKind, PeerInfo, inspect};
#[cfg(not(loom))]
pub use mailbox::{ByteMailbox, Mailbox, MailboxFut, RequestFut};
#[cfg(not(loom))]
pub use options::{DEFAULT_CAPACITY, DEFAULT_MAX_MESSAGE, Options};
#[cfg(not(loom))]
pub use stale::{find_stale, list, remove_stale, remove_stale_with_grace};

/// How many handle families may be attached to one channel at once.
pub const MAX_PEERS: usize = 64;

/// Types that can be sent through a shared-memory channel: plain data, copied byte for
/// byte into a segment that other processes read and write.
///
/// Implemented for every `T: bytemuck::Pod + Send` (integers, floats, arrays of them,
/// `#[derive(Pod, Zeroable)]` structs), which is the way to get it.
///
/// # Safety
///
/// An implementor guarantees that `T`:
/// - has no padding or other uninitialised bytes (its bytes are copied out as they are);
/// - is valid for every bit pattern of its size (another process, or corrupted memory,
///   may hand over any bytes);
/// - means the same in every process: no pointers, references, file descriptors or
///   other process-local handles.
///
/// ```
/// use conduit::shm::{self, ShmSafe};
///
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Tick {
///     seq: u64,
///     price: f64,
/// }
///
/// fn assert_shm_safe<T: ShmSafe>() {}
/// assert_shm_safe::<Tick>();
///
/// let name = format!("doc-shm-safe-{}", std::process::id());
/// let tx = shm::Sender::<Tick>::create(&name, 8)?;
/// tx.send(Tick { seq: 1, price: 2.5 }).unwrap();
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub unsafe trait ShmSafe: Copy + Send + 'static {}

// SAFETY: `Pod` guarantees no padding, validity for every bit pattern and no pointers
// (bytemuck's own contract), `Send` is required explicitly.
unsafe impl<T: bytemuck::Pod + Send> ShmSafe for T {}

/// Removes the channel `name` (its one file) from the system: the next
/// `create` of that name makes a new channel, and processes that have it open keep
/// using theirs. [`std::io::ErrorKind::NotFound`] if there is none;
/// [`std::io::ErrorKind::InvalidInput`] for an invalid name.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-unlink-{}", std::process::id());
/// let tx = shm::Sender::<u8>::create(&name, 1)?;
/// shm::unlink(&name)?;
/// assert_eq!(shm::unlink(&name).unwrap_err().kind(), std::io::ErrorKind::NotFound);
/// tx.send(1).unwrap(); // still works: the mapping lives on
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(not(loom))]
pub fn unlink(name: &str) -> std::io::Result<()> {
    segment::unlink(name)
}

#[cfg(not(loom))]
const _: () = assert!(MAX_PEERS == header::MAX_PEERS);
