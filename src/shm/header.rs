//! The segment header and the layout it describes.
//!
//! Everything a process needs to find its way around a segment is computed here from a
//! few numbers (kind, capacity, payload size and alignment), both when creating one and
//! when opening one: an opener recomputes the layout from the header's numbers and checks
//! that every derived field stored in the header, and the file's size, agree. After that
//! it never reads the header's layout fields again, so a peer that scribbles over them
//! later cannot steer this process outside the mapping.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::futex::SideSignal;
use super::ring::CACHE_LINE;
use crate::sync::AtomicUsize;

/// "CONDUIT" plus the header format byte; stored last, with Release, by the creator.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"CONDUIT\x01");
/// The layout version this build reads and writes (2: slots padded to cache lines, see
/// [`slot_granule`]; 3: no tag word, a dead sender's slot is marked in its stamp; 4: peer
/// liveness locks are byte-range locks on the segment file itself, see [`super::lock`],
/// not lock files, and a peer entry no longer records a lock file's identity).
///
/// A peer of another version would not see this version's locks (nor this one its), so a
/// segment of another version is refused ([`validate`]), never used.
///
/// Still 4 with the signal targets and mailboxes (kinds 3 to 5): the channels' layout is
/// unchanged, `max_bytes` lives in a word that was reserved and zero (zero meaning the
/// default), and an earlier build of version 4 refuses the new kinds by their kind
/// number ("kind 4 in header is invalid") before it reads anything else of theirs.
///
/// Still 4 with the single-producer mode ([`SPSC_FLAG`]) for the same reason: the mode
/// is a flag in the kind word, so an earlier build of version 4, which would run the
/// many-to-many protocol on such a ring (and corrupt it), refuses it by its kind number
/// ("kind 257 in header is invalid"); the layout itself is unchanged. Likewise with
/// [`LIGHT_FLAG`] ("kind 769"), whose waiters must issue heavy fences; the lazy `tail`
/// of the mode is compatible both ways (every build's producer walks the published
/// stamps past `tail` as it attaches, and only observers read it otherwise).
pub(crate) const VERSION: u32 = 4;

/// Set in the header's kind word of a channel (typed or byte) created in the
/// single-producer single-consumer mode (see `super::spsc`).
pub(crate) const SPSC_FLAG: u32 = 1 << 8;

/// Set, with [`SPSC_FLAG`], in the kind word of a single-producer channel whose sides
/// publish and commit with light fences and whose waiters issue heavy ones (see
/// `super::asym`). An earlier build of version 4, whose waiters would not, refuses it by
/// its kind number ("kind 769 in header is invalid"); a process without `membarrier`
/// refuses it when it attaches (see `super::peers`).
pub(crate) const LIGHT_FLAG: u32 = 1 << 9;

/// The most slots a channel may have.
pub(crate) const MAX_CAPACITY: usize = 1 << 22;
/// The longest byte message a byte channel may be configured for.
pub(crate) const MAX_MESSAGE: usize = 1 << 26;
/// The strictest payload alignment supported (the mapping is page-aligned).
pub(crate) const MAX_ALIGN: usize = 4096;
/// The largest segment this build creates or maps.
pub(crate) const MAX_TOTAL: usize = 1 << 36;

/// How many peers may be attached at once.
pub(crate) const MAX_PEERS: usize = 64;
/// Intent lanes per peer: how many threads of one handle can be inside an operation at
/// once (more wait for a lane).
pub(crate) const LANES: usize = 16;

/// The header: identity and layout (first cache-line pair), then one wait word block per
/// side.
#[repr(C, align(128))]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) kind: AtomicU32,
    pub(crate) capacity: AtomicU64,
    pub(crate) slot_size: AtomicU64,
    pub(crate) slot_align: AtomicU64,
    pub(crate) type_size: AtomicU64,
    pub(crate) type_align: AtomicU64,
    pub(crate) type_hash: AtomicU64,
    pub(crate) max_message: AtomicU64,
    pub(crate) total_size: AtomicU64,
    /// Set once a sender (receiver) has ever attached: before that, the other side
    /// waits rather than report disconnection.
    pub(crate) ever_senders: AtomicU32,
    pub(crate) ever_receivers: AtomicU32,
    pub(crate) creator_pid: AtomicU32,
    _pad: AtomicU32,
    /// A byte mailbox's bound on the bytes queued (`Options::max_bytes`); 0 (and in
    /// every other kind): the default, capacity × max_message.
    pub(crate) max_bytes: AtomicU64,
    _reserved: [AtomicU32; 6],
    /// Receivers wait here for messages.
    pub(crate) recv: SideSignal,
    /// Senders wait here for room.
    pub(crate) send: SideSignal,
}

/// A peer table entry (the state word lives in a separate dense array).
#[repr(C, align(64))]
pub(crate) struct PeerEntry {
    pub(crate) pid: AtomicU32,
    /// Unused (version 3 kept the identity of the peer's lock file here).
    _reserved: [AtomicU32; 5],
    /// One intent word per lane (see `protocol`).
    pub(crate) intents: [AtomicUsize; LANES],
}

/// The byte offset of the header.
pub(crate) const HEADER_OFFSET: usize = 0;
/// The byte offset of the peer state words (`[AtomicU64; MAX_PEERS]`).
pub(crate) const PEER_STATES_OFFSET: usize = 384;
/// The byte offset of the peer entries (`[PeerEntry; MAX_PEERS]`).
pub(crate) const PEER_ENTRIES_OFFSET: usize = 1024;
/// The byte offset of the ring's `head` (its own 128-byte block; `tail` follows).
pub(crate) const RING_OFFSET: usize = PEER_ENTRIES_OFFSET + MAX_PEERS * size_of::<PeerEntry>();
/// Where slots may start (after `head` and `tail`).
const SLOTS_MIN_OFFSET: usize = RING_OFFSET + 256;

/// Per-slot control words before the payload: stamp (u64), len (u32), 4 bytes unused.
const SLOT_CONTROL: usize = 16;
/// Per-slot control words of a mailbox's slot (see `super::mailbox`): the channel's
/// stamp and length words, then the mailbox's own.
pub(crate) const MAILBOX_SLOT_CONTROL: usize = 80;
/// Offset of the stamp within a slot.
pub(crate) const SLOT_STAMP: usize = 0;
/// Offset of the length word within a slot.
pub(crate) const SLOT_LEN: usize = 8;

const _: () = {
    assert!(size_of::<Header>() == 384);
    assert!(size_of::<SideSignal>() == 128);
    assert!(PEER_STATES_OFFSET >= HEADER_OFFSET + size_of::<Header>());
    assert!(PEER_ENTRIES_OFFSET >= PEER_STATES_OFFSET + MAX_PEERS * 8);
    assert!(PEER_ENTRIES_OFFSET.is_multiple_of(align_of::<PeerEntry>()));
    assert!(size_of::<PeerEntry>() == 192);
    assert!(RING_OFFSET.is_multiple_of(128));
    assert!(SLOTS_MIN_OFFSET.is_multiple_of(CACHE_LINE));
    assert!(LANES <= 32);
};

/// What a segment carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Fixed-size values of one `ShmSafe` type.
    Typed = 1,
    /// Byte messages of variable length up to a maximum.
    Bytes = 2,
    /// A signal target (`shm::signal`): its queues' rings and words follow the slots.
    Signal = 3,
    /// A mailbox of one `ShmSafe` type (`shm::Mailbox`): slots with the mailbox's
    /// control words, and its index after them (see `super::mailbox`).
    Mailbox = 4,
    /// A mailbox of byte messages (`shm::ByteMailbox`).
    ByteMailbox = 5,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Typed => "typed channel",
            Kind::Bytes => "byte channel",
            Kind::Signal => "signal target",
            Kind::Mailbox => "typed mailbox",
            Kind::ByteMailbox => "byte mailbox",
        }
    }

    /// The kind stored as `v` in a header, if known.
    pub(crate) fn from_u32(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Typed),
            2 => Some(Kind::Bytes),
            3 => Some(Kind::Signal),
            4 => Some(Kind::Mailbox),
            5 => Some(Kind::ByteMailbox),
            _ => None,
        }
    }

    /// The kind word stored as `v` in a header: the kind, whether the channel is in the
    /// single-producer mode ([`SPSC_FLAG`], only valid for typed and byte channels), and
    /// whether that mode uses light fences ([`LIGHT_FLAG`], only valid with it).
    pub(crate) fn decode(v: u32) -> Option<(Kind, bool, bool)> {
        let kind = Kind::from_u32(v & !(SPSC_FLAG | LIGHT_FLAG))?;
        let spsc = v & SPSC_FLAG != 0;
        let light = v & LIGHT_FLAG != 0;
        (!spsc || kind.has_modes())
            .then_some((kind, spsc, light))
            .filter(|_| spsc || !light)
    }

    /// Whether channels of this kind may be created in the single-producer mode.
    pub(crate) fn has_modes(self) -> bool {
        matches!(self, Kind::Typed | Kind::Bytes)
    }

    /// Whether slots carry byte messages of variable length.
    pub(crate) fn is_bytes(self) -> bool {
        matches!(self, Kind::Bytes | Kind::ByteMailbox)
    }

    /// Whether the segment is a mailbox.
    pub(crate) fn is_mailbox(self) -> bool {
        matches!(self, Kind::Mailbox | Kind::ByteMailbox)
    }

    /// The control words before a slot's payload.
    fn slot_control(self) -> usize {
        if self.is_mailbox() {
            MAILBOX_SLOT_CONTROL
        } else {
            SLOT_CONTROL
        }
    }
}

/// What the payload of one slot is: a type's size, alignment and name hash (for byte
/// channels: the maximum message, alignment 1, and the hash of `[u8]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) size: usize,
    pub(crate) align: usize,
    pub(crate) hash: u64,
    /// For error messages only.
    pub(crate) name: &'static str,
}

impl Fingerprint {
    /// The fingerprint of `T`.
    pub(crate) fn of<T>() -> Self {
        let name = core::any::type_name::<T>();
        Fingerprint {
            size: size_of::<T>(),
            align: align_of::<T>(),
            hash: fnv1a(name.as_bytes()),
            name,
        }
    }

    /// The fingerprint of a signal target's queue entries: payload and origin words.
    pub(crate) fn signal_entry() -> Self {
        Fingerprint {
            size: 16,
            align: 8,
            hash: fnv1a(b"conduit::signal entry (payload u64, origin u64)"),
            name: "signal entry",
        }
    }

    /// The fingerprint of byte messages of at most `max` bytes.
    pub(crate) fn bytes(max: usize) -> Self {
        Fingerprint {
            size: max,
            align: 1,
            hash: fnv1a(b"[u8]"),
            name: "[u8]",
        }
    }
}

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A validated layout: every offset is in bounds of a mapping of `total_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) kind: Kind,
    pub(crate) capacity: usize,
    pub(crate) fingerprint: Fingerprint,
    /// Offset of the payload within a slot: a multiple of 8, and the slot has room for
    /// the payload size rounded up to a multiple of 8 after it (the payload copies
    /// access whole 8-byte words only).
    pub(crate) payload_offset: usize,
    /// The distance between slots.
    pub(crate) slot_size: usize,
    pub(crate) slot_align: usize,
    /// Offset of slot 0 from the start of the segment.
    pub(crate) slots_offset: usize,
    /// Offset of a mailbox's index (after the slots; see `super::mailbox`); 0 for
    /// channels.
    pub(crate) index_offset: usize,
    pub(crate) total_size: usize,
    /// A byte mailbox's bound on the bytes queued, in 1..=capacity × max_message; for
    /// every other kind, capacity × payload size (no
    /// bound beyond the slots).
    pub(crate) max_bytes: usize,
    /// A channel in the single-producer single-consumer mode (see `super::spsc`).
    pub(crate) spsc: bool,
    /// In that mode, publishes and commits with light fences ([`LIGHT_FLAG`]).
    pub(crate) light: bool,
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The granule a slot of `n` bytes is rounded up to, so that no slot straddles more cache
/// lines than its size needs: slots of up to a cache line take a power-of-two share of
/// one (two 32-byte slots per line, never one across two lines), longer ones whole lines.
/// Slots that share no line also spare the sender writing one slot and the receiver
/// reading its neighbour from taking the line away from each other.
fn slot_granule(n: usize) -> usize {
    n.checked_next_power_of_two()
        .unwrap_or(CACHE_LINE)
        .min(CACHE_LINE)
}

fn round_up(n: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    n.checked_add(align - 1).map(|n| n & !(align - 1))
}

impl Layout {
    /// Computes the layout for `capacity` slots (a power of two) of the given payload.
    /// Out-of-range parameters are [`io::ErrorKind::InvalidInput`].
    pub(crate) fn new(kind: Kind, capacity: usize, fingerprint: Fingerprint) -> io::Result<Self> {
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(invalid_input(format!(
                "capacity {capacity} is not a power of two in 1..={MAX_CAPACITY}"
            )));
        }
        if !fingerprint.align.is_power_of_two() || fingerprint.align > MAX_ALIGN {
            return Err(invalid_input(format!(
                "alignment {} is not supported (at most {MAX_ALIGN})",
                fingerprint.align
            )));
        }
        if kind.is_bytes() && !(1..=MAX_MESSAGE).contains(&fingerprint.size) {
            return Err(invalid_input(format!(
                "max_message {} is not in 1..={MAX_MESSAGE}",
                fingerprint.size
            )));
        }
        let too_big = || invalid_input("the segment would be too large".to_string());
        let slot_align = fingerprint.align.max(8);
        let payload_offset = round_up(kind.slot_control(), slot_align).ok_or_else(too_big)?;
        let slot_size = payload_offset
            .checked_add(fingerprint.size)
            .and_then(|n| round_up(n, slot_align))
            .and_then(|n| round_up(n, slot_granule(n)))
            .ok_or_else(too_big)?;
        let slots_offset = round_up(SLOTS_MIN_OFFSET, slot_align).ok_or_else(too_big)?;
        if kind == Kind::Signal
            && (fingerprint != Fingerprint::signal_entry()
                || capacity > crate::signal::MAX_QUEUE_DEPTH)
        {
            return Err(invalid_input(format!(
                "a signal target's queues hold 1 to {} entries of its own kind",
                crate::signal::MAX_QUEUE_DEPTH
            )));
        }
        let slots_end = slot_size
            .checked_mul(capacity)
            .and_then(|n| n.checked_add(slots_offset))
            .ok_or_else(too_big)?;
        let (index_offset, total_size) = if kind.is_mailbox() {
            let at = round_up(slots_end, CACHE_LINE).ok_or_else(too_big)?;
            let end = super::mailbox::index_size(capacity)
                .and_then(|n| n.checked_add(at))
                .ok_or_else(too_big)?;
            (at, end)
        } else if kind == Kind::Signal {
            // The first queue's ring is the segment's ring; the other queues and the
            // words follow (see `shm::signal`).
            let area = super::signal::Area::new(slots_offset, capacity, slot_size);
            (0, area.ok_or_else(too_big)?.end)
        } else {
            (0, slots_end)
        };
        if total_size > MAX_TOTAL {
            return Err(too_big());
        }
        // The payload copies access payloads in whole 8-byte words only
        // (`ShmSlots::write_payload`): the payload starts 8-aligned and the slot has room
        // for its size rounded up to a whole word (`slot_align >= 8`).
        debug_assert!(
            payload_offset.is_multiple_of(8)
                && payload_offset + fingerprint.size.next_multiple_of(8) <= slot_size
        );
        Ok(Layout {
            kind,
            capacity,
            fingerprint,
            payload_offset,
            slot_size,
            slot_align,
            slots_offset,
            index_offset,
            total_size,
            max_bytes: capacity * fingerprint.size,
            spsc: false,
            light: false,
        })
    }

    /// A byte mailbox's bound on the bytes queued from the header's word `stored`: 0
    /// is the default (capacity × max_message); anything else must be a bound the
    /// creator could have stored (a hostile value beyond the default is refused, not
    /// clamped).
    pub(crate) fn stored_max_bytes(&self, stored: u64) -> Result<usize, String> {
        match usize::try_from(stored) {
            Ok(0) => Ok(self.capacity * self.fingerprint.size),
            Ok(n) if n <= self.capacity * self.fingerprint.size => Ok(n),
            _ => Err(format!(
                "max_bytes {stored} in header is invalid (at most capacity × max_message, {})",
                self.capacity * self.fingerprint.size
            )),
        }
    }

    /// The layout with a byte mailbox's bound on the bytes queued set to `max_bytes`,
    /// clamped to capacity × max_message (the slots bound it anyway); other kinds are
    /// unchanged.
    pub(crate) fn with_max_bytes(mut self, max_bytes: usize) -> Layout {
        if self.kind == Kind::ByteMailbox {
            self.max_bytes = max_bytes.min(self.capacity * self.fingerprint.size);
        }
        self
    }

    /// The layout in the single-producer mode if `spsc` (typed and byte channels only;
    /// other kinds are unchanged), with light fences if `light` (see `super::asym`).
    pub(crate) fn with_spsc(mut self, spsc: bool, light: bool) -> Layout {
        self.spsc = spsc && self.kind.has_modes();
        self.light = self.spsc && light;
        self
    }

    /// The largest byte message (byte channels), or the payload size (typed).
    pub(crate) fn max_message(&self) -> usize {
        self.fingerprint.size
    }

    /// Writes every header field but the magic (the creator stores that last).
    pub(crate) fn write(&self, h: &Header, creator_pid: u32) {
        use std::sync::atomic::Ordering::Relaxed;
        h.version.store(VERSION, Relaxed);
        let mode = match (self.spsc, self.light) {
            (false, _) => 0,
            (true, false) => SPSC_FLAG,
            (true, true) => SPSC_FLAG | LIGHT_FLAG,
        };
        h.kind.store(self.kind as u32 | mode, Relaxed);
        h.capacity.store(self.capacity as u64, Relaxed);
        h.slot_size.store(self.slot_size as u64, Relaxed);
        h.slot_align.store(self.slot_align as u64, Relaxed);
        h.type_size.store(self.fingerprint.size as u64, Relaxed);
        h.type_align.store(self.fingerprint.align as u64, Relaxed);
        h.type_hash.store(self.fingerprint.hash, Relaxed);
        let max = if self.kind.is_bytes() {
            self.fingerprint.size as u64
        } else {
            0
        };
        h.max_message.store(max, Relaxed);
        h.total_size.store(self.total_size as u64, Relaxed);
        h.creator_pid.store(creator_pid, Relaxed);
        let default = self.capacity * self.fingerprint.size;
        let bound = if self.kind == Kind::ByteMailbox && self.max_bytes != default {
            self.max_bytes as u64
        } else {
            0
        };
        h.max_bytes.store(bound, Relaxed);
    }
}

/// What an opener expects to find.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    pub(crate) kind: Kind,
    /// For typed channels: the type. For byte channels: only `size` matters, and only
    /// when `max_message` was asked for.
    pub(crate) fingerprint: Fingerprint,
    pub(crate) max_message: Option<usize>,
    pub(crate) capacity: Option<usize>,
    /// For byte mailboxes: the bound on the bytes queued to check (after clamping it
    /// like [`Layout::with_max_bytes`]).
    pub(crate) max_bytes: Option<usize>,
    /// Accept any type (or message size) the header describes (for maintenance tools).
    pub(crate) any_type: bool,
    /// The mode to check (single-producer or not); `None`: either.
    pub(crate) spsc: Option<bool>,
    /// The fences to check (light, that is asymmetric, or SeqCst); `None`: either.
    pub(crate) light: Option<bool>,
}

impl Expect {
    /// Expects a segment of `kind` holding anything.
    pub(crate) fn any(kind: Kind) -> Expect {
        Expect {
            kind,
            fingerprint: Fingerprint::bytes(1),
            max_message: None,
            capacity: None,
            max_bytes: None,
            any_type: true,
            spsc: None,
            light: None,
        }
    }
}

/// The header fields that follow from its kind, capacity and payload, as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    pub(crate) slot_size: u64,
    pub(crate) slot_align: u64,
    pub(crate) total_size: u64,
}

impl Stored {
    /// Every stored field that differs from `layout` (computed from the header's kind,
    /// capacity and payload), and the file's size if it differs from the layout's, one
    /// message each: [`validate`] reports the first, `shm::inspect` all of them.
    pub(crate) fn mismatches(&self, layout: &Layout, file_size: u64) -> Vec<String> {
        let mut out: Vec<String> = [
            ("slot size", self.slot_size, layout.slot_size),
            ("slot alignment", self.slot_align, layout.slot_align),
            ("total size", self.total_size, layout.total_size),
        ]
        .into_iter()
        .filter(|&(_, stored, computed)| stored != computed as u64)
        .map(|(field, stored, computed)| {
            format!("{field} mismatch: segment has {stored}, expected {computed}")
        })
        .collect();
        if file_size != layout.total_size as u64 {
            out.push(format!(
                "size mismatch: file has {file_size} bytes, header says {}",
                layout.total_size
            ));
        }
        out
    }
}

/// Reads and checks the header of a segment whose file is `file_size` bytes, after the
/// magic was seen. Every mismatch is [`io::ErrorKind::InvalidData`] naming the field.
pub(crate) fn validate(h: &Header, file_size: u64, expect: &Expect) -> io::Result<Layout> {
    use std::sync::atomic::Ordering::Relaxed;
    let version = h.version.load(Relaxed);
    if version != VERSION {
        return Err(invalid_data(format!(
            "layout version mismatch: segment has {version}, expected {VERSION}"
        )));
    }
    let stored = h.kind.load(Relaxed);
    let (kind, spsc, light) = Kind::decode(stored)
        .ok_or_else(|| invalid_data(format!("kind {stored} in header is invalid")))?;
    if kind != expect.kind {
        return Err(invalid_data(format!(
            "kind mismatch: segment is a {}, expected a {}",
            kind.describe(),
            expect.kind.describe()
        )));
    }
    let to_usize = |v: u64, what: &str| {
        usize::try_from(v).map_err(|_| invalid_data(format!("{what} {v} in header is invalid")))
    };
    let size = to_usize(h.type_size.load(Relaxed), "payload size")?;
    let align = to_usize(h.type_align.load(Relaxed), "payload alignment")?;
    let hash = h.type_hash.load(Relaxed);
    let want = expect.fingerprint;
    let fingerprint = match kind {
        _ if kind.is_bytes() => {
            let max = to_usize(h.max_message.load(Relaxed), "max_message")?;
            if max != size || align != 1 || hash != Fingerprint::bytes(max).hash {
                return Err(invalid_data(
                    "byte message fingerprint in header is inconsistent".to_string(),
                ));
            }
            if let Some(want) = expect.max_message
                && want != max
            {
                return Err(invalid_data(format!(
                    "max_message mismatch: segment has {max}, expected {want}"
                )));
            }
            Fingerprint::bytes(max)
        }
        Kind::Signal => {
            let entry = Fingerprint::signal_entry();
            if (size, align, hash) != (entry.size, entry.align, entry.hash) {
                return Err(invalid_data(format!(
                    "signal entry mismatch: segment has entries of size {size}, alignment \
                     {align} and hash {hash:#x}, expected {}, {} and {:#x}",
                    entry.size, entry.align, entry.hash
                )));
            }
            entry
        }
        _ if expect.any_type => Fingerprint {
            size,
            align,
            hash,
            name: "(any)",
        },
        _ => {
            if (size, align) != (want.size, want.align) {
                return Err(invalid_data(format!(
                    "type mismatch: segment holds a type of size {size} and alignment {align}, \
                     expected `{}` (size {}, alignment {})",
                    want.name, want.size, want.align
                )));
            }
            if hash != want.hash {
                return Err(invalid_data(format!(
                    "type mismatch: segment holds a type of the same size and alignment as \
                     `{}` but another name (type name hash {hash:#x}, expected {:#x})",
                    want.name, want.hash
                )));
            }
            want
        }
    };
    let capacity = to_usize(h.capacity.load(Relaxed), "capacity")?;
    if let Some(want) = expect.capacity
        && want != capacity
    {
        return Err(invalid_data(format!(
            "capacity mismatch: segment has {capacity}, expected {want}"
        )));
    }
    if let Some(want) = expect.spsc
        && want != spsc
    {
        let mode = |spsc| {
            if spsc {
                "single-producer single-consumer"
            } else {
                "many-to-many"
            }
        };
        return Err(invalid_data(format!(
            "mode mismatch: segment is {}, expected {}",
            mode(spsc),
            mode(want)
        )));
    }
    if let Some(want) = expect.light
        && want != light
    {
        let fences = |light| if light { "asymmetric" } else { "SeqCst" };
        return Err(invalid_data(format!(
            "fence mismatch: segment has {} fences, expected {}",
            fences(light),
            fences(want)
        )));
    }
    let mut layout = Layout::new(kind, capacity, fingerprint)
        .map_err(|e| invalid_data(format!("header describes an invalid layout: {e}")))?
        .with_spsc(spsc, light);
    if kind == Kind::ByteMailbox {
        let max_bytes = layout
            .stored_max_bytes(h.max_bytes.load(Relaxed))
            .map_err(invalid_data)?;
        if let Some(want) = expect.max_bytes
            && want.min(layout.max_bytes) != max_bytes
        {
            return Err(invalid_data(format!(
                "max_bytes mismatch: segment has {max_bytes}, expected {}",
                want.min(layout.max_bytes)
            )));
        }
        layout.max_bytes = max_bytes;
    }
    let stored = Stored {
        slot_size: h.slot_size.load(Relaxed),
        slot_align: h.slot_align.load(Relaxed),
        total_size: h.total_size.load(Relaxed),
    };
    if let Some(first) = stored.mismatches(&layout, file_size).into_iter().next() {
        return Err(invalid_data(first));
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_aligned_and_bounded() {
        let l = Layout::new(Kind::Typed, 64, Fingerprint::of::<u64>()).unwrap();
        assert_eq!(l.payload_offset, 16);
        assert_eq!(l.slot_size, 32);
        assert_eq!(l.slots_offset % 8, 0);
        assert_eq!(l.total_size, l.slots_offset + 64 * 32);
        let l = Layout::new(Kind::Typed, 4, Fingerprint::of::<[u8; 3]>()).unwrap();
        assert_eq!(l.slot_size, 32);
        let l = Layout::new(Kind::Bytes, 8, Fingerprint::bytes(100)).unwrap();
        assert_eq!(l.slot_size, 128);
        // Slots never straddle more cache lines than they need.
        let l = Layout::new(Kind::Typed, 4, Fingerprint::of::<[u8; 64]>()).unwrap();
        assert_eq!(l.slot_size, 128);
        let l = Layout::new(Kind::Typed, 4, Fingerprint::of::<[u8; 20]>()).unwrap();
        assert_eq!(l.slot_size, 64);
        let l = Layout::new(Kind::Typed, 4, Fingerprint::of::<[u8; 48]>()).unwrap();
        assert_eq!(l.slot_size, 64);
        let l = Layout::new(Kind::Bytes, 4, Fingerprint::bytes(1000)).unwrap();
        assert_eq!(l.slot_size, 1024);
        assert_eq!(l.slots_offset % 64, 0);
        assert!(Layout::new(Kind::Typed, 3, Fingerprint::of::<u8>()).is_err());
        assert!(Layout::new(Kind::Typed, MAX_CAPACITY * 2, Fingerprint::of::<u8>()).is_err());
        assert!(Layout::new(Kind::Bytes, 8, Fingerprint::bytes(0)).is_err());
        assert_ne!(Fingerprint::of::<u32>().hash, Fingerprint::of::<i32>().hash);
    }

    /// The payload of every slot starts 8-aligned and has room for its size rounded up
    /// to whole 8-byte words: the payload copies access it in whole words only.
    #[test]
    fn payloads_are_whole_words() {
        for size in (0..=130).chain([1000, 4096, 4097]) {
            for align in [1, 2, 4, 8, 16, 64, 4096] {
                let fp = Fingerprint {
                    size,
                    align,
                    hash: 0,
                    name: "test",
                };
                for kind in [Kind::Typed, Kind::Bytes] {
                    let Ok(l) = Layout::new(kind, 4, fp) else {
                        assert!(kind == Kind::Bytes && size == 0);
                        continue;
                    };
                    assert!(l.payload_offset.is_multiple_of(8), "{l:?}");
                    assert!(l.slot_size.is_multiple_of(8), "{l:?}");
                    assert!(l.slots_offset.is_multiple_of(8), "{l:?}");
                    assert!(
                        l.payload_offset + size.next_multiple_of(8) <= l.slot_size,
                        "{l:?}"
                    );
                }
            }
        }
    }
}
