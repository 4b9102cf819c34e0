//! Read-only inspection of a segment, for tools (`conduit ls`, `conduit stat`).
//!
//! [`inspect`] opens the segment file read-only, maps the header, the peer table and the
//! ring positions read-only, and reports what it finds. It never attaches as a peer,
//! never writes to the segment and never takes a lock that a peer or a reaper could
//! notice as anything but a probe. Nothing it reads is trusted: every field is reported
//! as stored, and every check that `open` makes is made here too, each mismatch reported
//! on its own (rather than the first one ending the inspection), so a corrupt segment is
//! described field by field. A segment of another layout version is reported by its
//! version alone: its other fields may mean something else, so they are not read.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fd::OwnedFd;
use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
use rustix::shm;

use super::header::{
    Fingerprint, Header, Kind, Layout, MAGIC, MAX_CAPACITY, MAX_PEERS, PEER_ENTRIES_OFFSET,
    PEER_STATES_OFFSET, PeerEntry, RING_OFFSET, SLOT_STAMP, Stored, VERSION,
};
use super::lock::{self, lock_byte};
use super::name;
use super::segment::Side;
use super::table::{self, DEAD, FREE, LIVE};
use crate::chan::ring::Laps;

/// What kind of object a segment holds, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A channel of fixed-size values ([`super::Sender`] / [`super::Receiver`]).
    Channel,
    /// A channel of byte messages ([`super::ByteSender`] / [`super::ByteReceiver`]).
    ByteChannel,
    /// A mailbox of fixed-size values ([`super::Mailbox`]).
    Mailbox,
    /// A mailbox of byte messages ([`super::ByteMailbox`]).
    ByteMailbox,
    /// A signal target ([`super::signal::Target`]); its capacity is the depth of each
    /// queued number, its queue length that of the first queued number's.
    Signal,
}

impl ObjectKind {
    /// A short lowercase name: `channel`, `bytes`, `mailbox`, `bytemailbox`, `signal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Channel => "channel",
            ObjectKind::ByteChannel => "bytes",
            ObjectKind::Mailbox => "mailbox",
            ObjectKind::ByteMailbox => "bytemailbox",
            ObjectKind::Signal => "signal",
        }
    }

    /// The header kind of this object.
    fn header_kind(self) -> Kind {
        match self {
            ObjectKind::Channel => Kind::Typed,
            ObjectKind::ByteChannel => Kind::Bytes,
            ObjectKind::Mailbox => Kind::Mailbox,
            ObjectKind::ByteMailbox => Kind::ByteMailbox,
            ObjectKind::Signal => Kind::Signal,
        }
    }
}

impl core::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a peer's process is alive, as a probe of its liveness lock shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its lock is held: the process is alive (or a new owner is moving into the slot).
    Alive,
    /// Nobody holds its lock: the process is gone (proven, not guessed).
    Dead,
    /// The probe could not tell (it failed): treat as alive.
    Unknown,
}

/// One peer slot in use, as [`inspect`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The slot's index in the peer table.
    pub slot: usize,
    /// The pid its owner recorded.
    pub pid: u32,
    /// The slot's state word: `live`, `dead` (reaped, recovery pending), `free` (shown
    /// only while its lock is held: a peer attaching, or the creator) or `invalid`.
    pub state: &'static str,
    /// Whether the owner attached as a sender.
    pub sender: bool,
    /// Whether the owner attached as a receiver.
    pub receiver: bool,
    /// How many times the slot has been taken over (its generation).
    pub generation: u32,
    /// What a probe of the slot's liveness lock shows.
    pub liveness: Liveness,
    /// How many of its intent lanes record a claim in progress.
    pub intents: usize,
}

/// What [`inspect`] found in a segment.
///
/// Fields the header could not supply (a file too small, another layout version) are 0.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// The object's name.
    pub name: String,
    /// The kind, if the header names a known one.
    pub kind: Option<ObjectKind>,
    /// Whether the channel is in the single-producer single-consumer mode
    /// ([`Options::spsc`](super::Options::spsc)).
    pub spsc: bool,
    /// Whether that mode's sides publish with asymmetric fences
    /// ([`Options::asymmetric_fences`](super::Options::asymmetric_fences)); `false` for
    /// SeqCst fences and for every other kind of object.
    pub asymmetric_fences: bool,
    /// The layout version stored (this build reads [`Inspection::SUPPORTED_VERSION`]).
    pub version: u32,
    /// The file's size in bytes.
    pub file_size: u64,
    /// The file's permission bits.
    pub mode: u32,
    /// The file owner's user id.
    pub uid: u32,
    /// Time since the file's status last changed (about its creation), if known.
    pub age: Option<Duration>,
    /// The pid of the process that created it.
    pub creator_pid: u32,
    /// Slots in the ring.
    pub capacity: u64,
    /// Bytes between slots.
    pub slot_size: u64,
    /// The payload type's size (byte channels: the longest message).
    pub type_size: u64,
    /// The payload type's alignment.
    pub type_align: u64,
    /// The FNV-1a hash of the payload type's name (the type fingerprint).
    pub type_hash: u64,
    /// The longest message (byte channels; 0 for typed ones).
    pub max_message: u64,
    /// A byte mailbox's bound on the bytes queued (`Options::max_bytes`; 0 for other
    /// kinds, or when the header's value is invalid).
    pub max_bytes: u64,
    /// A byte mailbox's bytes queued, from its index (0 for other kinds, or an invalid
    /// segment).
    pub queued_bytes: u64,
    /// The receivers' position.
    pub head: u64,
    /// The senders' position (with the disconnect mark).
    pub tail: u64,
    /// Messages queued (claimed slots included), from the positions; 0 when they are
    /// inconsistent. For a mailbox, its index's count (0 for an invalid segment).
    pub queued: u64,
    /// Blocking waiters asleep on the receive side, and async waits registered there.
    pub recv_waiters: (u32, u32),
    /// Blocking waiters asleep on the send side, and async waits registered there.
    pub send_waiters: (u32, u32),
    /// The peer slots in use (not FREE), in slot order.
    pub peers: Vec<PeerInfo>,
    /// Every check that failed, one line each; empty when the segment would open.
    pub problems: Vec<String>,
}

impl Inspection {
    /// The layout version this build reads and writes.
    pub const SUPPORTED_VERSION: u32 = VERSION;

    /// Whether the segment passed every check `open` makes.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// The peers whose process is alive (or cannot be proven dead).
    pub fn live_peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.iter().filter(|p| p.liveness != Liveness::Dead)
    }

    /// The peers whose process is proven dead (not yet reaped, or being recovered).
    pub fn dead_peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.iter().filter(|p| p.liveness == Liveness::Dead)
    }

    /// A description of the payload: the type's size and alignment and its name hash
    /// (typed channels), or the longest message (byte channels).
    pub fn payload(&self) -> String {
        match self.kind {
            Some(ObjectKind::ByteChannel | ObjectKind::ByteMailbox) => {
                format!("max {} B", self.max_message)
            }
            _ => format!(
                "size {} align {} type {:016x}",
                self.type_size, self.type_align, self.type_hash
            ),
        }
    }
}

/// Inspects the shared-memory object `name` without attaching to it or writing to it.
///
/// Errors only when the object cannot be read at all: [`io::ErrorKind::NotFound`] if
/// there is none, [`io::ErrorKind::InvalidInput`] for a bad name, the system's error if
/// it cannot be opened for reading. A corrupt or foreign segment is not an error: it
/// comes back with its [`Inspection::problems`].
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-inspect-{}", std::process::id());
/// let tx = shm::Sender::<u64>::create(&name, 8)?;
/// tx.send(7).unwrap();
/// let info = shm::inspect(&name)?;
/// assert!(info.is_valid());
/// assert_eq!(info.kind, Some(shm::ObjectKind::Channel));
/// assert_eq!((info.capacity, info.queued), (8, 1));
/// assert_eq!(info.live_peers().count(), 1);
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn inspect(name: &str) -> io::Result<Inspection> {
    name::validate(name)?;
    let object = name::segment_object(name);
    let fd = shm::open(object.as_str(), shm::OFlags::RDONLY, Mode::empty())?;
    let meta = std::fs::metadata(format!("/dev/shm/{}", object.trim_start_matches('/')));
    let mut info = Inspection {
        name: name.to_string(),
        kind: None,
        spsc: false,
        asymmetric_fences: false,
        version: 0,
        file_size: 0,
        mode: 0,
        uid: 0,
        age: None,
        creator_pid: 0,
        capacity: 0,
        slot_size: 0,
        type_size: 0,
        type_align: 0,
        type_hash: 0,
        max_message: 0,
        max_bytes: 0,
        queued_bytes: 0,
        head: 0,
        tail: 0,
        queued: 0,
        recv_waiters: (0, 0),
        send_waiters: (0, 0),
        peers: Vec::new(),
        problems: Vec::new(),
    };
    let (size, mode, ..) = super::segment::stat_of(&fd)?;
    info.file_size = size;
    info.mode = mode & 0o7777;
    if let Ok(meta) = meta {
        info.uid = meta.uid();
        let ctime = UNIX_EPOCH
            + Duration::new(
                meta.ctime().max(0) as u64,
                meta.ctime_nsec().clamp(0, 999_999_999) as u32,
            );
        info.age = SystemTime::now().duration_since(ctime).ok();
    }
    // The header, the peer table and the ring positions: the fixed part of the layout.
    let fixed = RING_OFFSET + 256;
    if size < size_of::<Header>() as u64 {
        info.problems.push(format!(
            "file has {size} bytes, too small for a header ({} bytes): not initialised",
            size_of::<Header>()
        ));
        return Ok(info);
    }
    let len = if size >= fixed as u64 {
        fixed
    } else {
        size_of::<Header>()
    };
    let map = ReadOnlyMap::new(&fd, len)?;
    let layout = read_header(&map, &mut info);
    if info
        .problems
        .iter()
        .any(|p| p.starts_with("magic") || p.starts_with("layout version"))
    {
        return Ok(info);
    }
    if len < fixed {
        info.problems.push(format!(
            "file has {size} bytes, too small for the peer table and ring ({fixed} bytes)"
        ));
        return Ok(info);
    }
    // A mailbox keeps its count in its index (read when the layout is valid), not in
    // the ring positions (unused).
    match layout {
        Some(l) if l.kind.is_mailbox() => {
            if info.problems.is_empty() {
                let whole = ReadOnlyMap::new(&fd, l.total_size)?;
                let len = whole.u32_at(l.index_offset + super::mailbox::LEN_OFFSET);
                info.queued = u64::from(len).min(info.capacity);
                if l.kind.is_bytes() {
                    info.queued_bytes = whole.u64_at(l.index_offset + super::mailbox::BYTES_OFFSET);
                }
            }
        }
        _ if matches!(
            info.kind,
            Some(ObjectKind::Mailbox | ObjectKind::ByteMailbox)
        ) => {}
        Some(l) if l.spsc && info.problems.is_empty() => {
            let whole = ReadOnlyMap::new(&fd, l.total_size)?;
            read_positions(&map, Some((&whole, &l)), &mut info);
        }
        _ => read_positions(&map, None, &mut info),
    }
    read_peers(&map, &fd, &mut info);
    Ok(info)
}

/// A read-only mapping of the first `len` bytes of a segment.
struct ReadOnlyMap {
    ptr: core::ptr::NonNull<u8>,
    len: usize,
}

impl ReadOnlyMap {
    fn new(fd: &OwnedFd, len: usize) -> io::Result<Self> {
        // SAFETY: a new mapping at an address of the kernel's choosing aliases no Rust
        // object; it is only read, through atomics (loads of at most 8 bytes on a
        // read-only mapping are plain loads on every supported target).
        let ptr = unsafe {
            mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr = core::ptr::NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(ReadOnlyMap { ptr, len })
    }

    /// The `u64` word at byte `offset` (8-aligned, inside the mapping).
    fn u64_at(&self, offset: usize) -> u64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: in bounds and aligned (checked above; the mapping is page-aligned); the
        // word is only ever accessed atomically, by every process, with this size.
        unsafe { self.ptr.add(offset).cast::<AtomicU64>().as_ref() }.load(Ordering::Acquire)
    }

    /// The `u32` word at byte `offset` (4-aligned, inside the mapping).
    fn u32_at(&self, offset: usize) -> u32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: as in `u64_at`, for a 4-byte word accessed with that size everywhere.
        unsafe { self.ptr.add(offset).cast::<AtomicU32>().as_ref() }.load(Ordering::Acquire)
    }
}

impl Drop for ReadOnlyMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference into it outlives the accessors above.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Byte offsets of the header fields, from the struct itself.
macro_rules! header_offset {
    ($field:ident) => {
        core::mem::offset_of!(Header, $field)
    };
}

/// Reads and checks the header; returns the layout it describes when that is valid.
fn read_header(map: &ReadOnlyMap, info: &mut Inspection) -> Option<Layout> {
    let magic = map.u64_at(header_offset!(magic));
    if magic != MAGIC {
        info.problems.push(if magic == 0 {
            "magic is 0: not initialised (its creator may have died while creating it)".into()
        } else {
            format!("magic is {magic:#018x}, expected {MAGIC:#018x}: not a conduit segment")
        });
        return None;
    }
    info.version = map.u32_at(header_offset!(version));
    if info.version != VERSION {
        info.problems.push(format!(
            "layout version {} (this build reads {VERSION}): not inspected further",
            info.version
        ));
        return None;
    }
    let kind = map.u32_at(header_offset!(kind));
    let decoded = Kind::decode(kind);
    info.spsc = decoded.is_some_and(|(_, spsc, _)| spsc);
    info.asymmetric_fences = decoded.is_some_and(|(_, _, light)| light);
    info.kind = match decoded.map(|(kind, ..)| kind) {
        Some(Kind::Typed) => Some(ObjectKind::Channel),
        Some(Kind::Bytes) => Some(ObjectKind::ByteChannel),
        Some(Kind::Signal) => Some(ObjectKind::Signal),
        Some(Kind::Mailbox) => Some(ObjectKind::Mailbox),
        Some(Kind::ByteMailbox) => Some(ObjectKind::ByteMailbox),
        None => {
            info.problems.push(format!("kind {kind} is unknown"));
            None
        }
    };
    info.capacity = map.u64_at(header_offset!(capacity));
    info.slot_size = map.u64_at(header_offset!(slot_size));
    info.type_size = map.u64_at(header_offset!(type_size));
    info.type_align = map.u64_at(header_offset!(type_align));
    info.type_hash = map.u64_at(header_offset!(type_hash));
    info.max_message = map.u64_at(header_offset!(max_message));
    info.creator_pid = map.u32_at(header_offset!(creator_pid));
    let slot_align = map.u64_at(header_offset!(slot_align));
    let total_size = map.u64_at(header_offset!(total_size));
    let recv = header_offset!(recv);
    let send = header_offset!(send);
    // `SideSignal`: seq, waiters, async_seq, async_waiters (u32 each).
    info.recv_waiters = (map.u32_at(recv + 4), map.u32_at(recv + 12));
    info.send_waiters = (map.u32_at(send + 4), map.u32_at(send + 12));

    // The checks `header::validate` makes, each reported on its own.
    let kind = info.kind.map(ObjectKind::header_kind)?;
    let (Ok(capacity), Ok(size), Ok(align)) = (
        usize::try_from(info.capacity),
        usize::try_from(info.type_size),
        usize::try_from(info.type_align),
    ) else {
        info.problems
            .push("capacity or payload size out of range".into());
        return None;
    };
    let fingerprint = match kind {
        Kind::Signal => {
            let entry = Fingerprint::signal_entry();
            if (size, align, info.type_hash) != (entry.size, entry.align, entry.hash) {
                info.problems.push(format!(
                    "signal entry fingerprint is inconsistent (size {size}, alignment \
                     {align}, hash {:#x})",
                    info.type_hash
                ));
            }
            entry
        }
        _ if !kind.is_bytes() => Fingerprint {
            size,
            align,
            hash: info.type_hash,
            name: "(stored)",
        },
        _ => {
            let bytes = Fingerprint::bytes(size);
            if info.max_message != info.type_size || align != 1 || info.type_hash != bytes.hash {
                info.problems.push(format!(
                    "byte message fingerprint is inconsistent (max_message {}, size {}, \
                     alignment {}, hash {:#x})",
                    info.max_message, info.type_size, align, info.type_hash
                ));
            }
            bytes
        }
    };
    // The mode's flags, as `Endpoint::open` applies them (before, the single-producer
    // walk of `read_positions` never ran: the layout always said "not spsc").
    let layout = Layout::new(kind, capacity, fingerprint)
        .map(|l| l.with_spsc(info.spsc, info.asymmetric_fences));
    match layout {
        Err(e) => {
            info.problems.push(format!("layout is invalid: {e}"));
            None
        }
        Ok(layout) => {
            let stored = Stored {
                slot_size: info.slot_size,
                slot_align,
                total_size,
            };
            info.problems
                .extend(stored.mismatches(&layout, info.file_size));
            if kind == Kind::ByteMailbox {
                match layout.stored_max_bytes(map.u64_at(header_offset!(max_bytes))) {
                    Ok(n) => info.max_bytes = n as u64,
                    Err(e) => info.problems.push(e),
                }
            }
            Some(layout)
        }
    }
}

/// The ring's positions and queue length; `spsc`: the whole mapping and the layout of a
/// single-producer channel, whose `tail` may lag (see [`walk_published`]).
fn read_positions(map: &ReadOnlyMap, spsc: Option<(&ReadOnlyMap, &Layout)>, info: &mut Inspection) {
    info.head = map.u64_at(RING_OFFSET);
    info.tail = map.u64_at(RING_OFFSET + 128);
    if let Some((whole, layout)) = spsc {
        info.tail = walk_published(whole, layout, info.tail);
    }
    // A capacity the layout check rejected (reported there) gives no queue length.
    let Ok(cap) = usize::try_from(info.capacity) else {
        return;
    };
    if cap == 0 || !cap.is_power_of_two() || cap > MAX_CAPACITY {
        return;
    }
    // The ring's position encoding (`chan::ring::Laps`).
    let queued = usize::try_from(info.head)
        .ok()
        .zip(usize::try_from(info.tail).ok())
        .and_then(|(head, tail)| Laps::new(cap).queued(head, tail));
    match queued {
        Some(n) => info.queued = n as u64,
        None => info.problems.push(format!(
            "positions out of range: head {:#x}, tail {:#x}",
            info.head, info.tail
        )),
    }
}

/// In the single-producer mode the producer stores `tail` once a stride (see
/// `shm::spsc`): moves `tail` past the slots whose stamps show them published, at most
/// a lap, as `spsc::len` does (`spsc::walk_published`, over the read-only map). A
/// position that does not fit a `usize` is left as it is.
fn walk_published(map: &ReadOnlyMap, layout: &Layout, tail: u64) -> u64 {
    let Ok(start) = usize::try_from(tail) else {
        return tail;
    };
    let stamp_of = |index: usize| {
        let at = layout.slots_offset + index * layout.slot_size + SLOT_STAMP;
        usize::try_from(map.u64_at(at)).ok()
    };
    super::spsc::walk_published(Laps::new(layout.capacity), start, stamp_of) as u64
}

fn read_peers(map: &ReadOnlyMap, fd: &OwnedFd, info: &mut Inspection) {
    use rustix::fd::AsFd;
    for n in 0..MAX_PEERS {
        let (generation, state, roles) = table::unpack(map.u64_at(PEER_STATES_OFFSET + n * 8));
        // The query takes no lock: `fd` holds none, so any lock found is another's.
        let liveness = match lock::is_held(fd.as_fd(), lock_byte(n), 1) {
            Ok(true) => Liveness::Alive,
            Ok(false) => Liveness::Dead,
            Err(_) => Liveness::Unknown,
        };
        // A FREE slot whose lock is held is being attached (or is the creator's): shown.
        if state == FREE && liveness != Liveness::Alive {
            continue;
        }
        let entry = PEER_ENTRIES_OFFSET + n * size_of::<PeerEntry>();
        let lanes = core::mem::offset_of!(PeerEntry, intents);
        let intents = (0..super::header::LANES)
            .filter(|&l| map.u64_at(entry + lanes + l * 8) != super::protocol::NO_INTENT as u64)
            .count();
        info.peers.push(PeerInfo {
            slot: n,
            pid: map.u32_at(entry + core::mem::offset_of!(PeerEntry, pid)),
            state: match state {
                FREE => "free",
                LIVE => "live",
                DEAD => "dead",
                _ => "invalid",
            },
            sender: roles & Side::Send.role() != 0,
            receiver: roles & Side::Recv.role() != 0,
            generation,
            liveness,
            intents,
        });
    }
}
