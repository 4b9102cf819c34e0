//! Creating, opening, mapping and unlinking segments.
//!
//! # Creation protocol
//! 1. `shm_open(O_CREAT | O_EXCL | O_RDWR)` with mode `0200` (owner write-only): other
//!    users cannot open it yet, and `O_EXCL` makes exactly one creator win. The creator
//!    at once takes the liveness lock of peer slot 0 through its description (see
//!    [`super::lock`]), the slot its attach then takes: from its first moment to its
//!    creator's detach, a new channel always has a lock held, so
//!    [`super::remove_stale`] can never find it unattached.
//! 2. `ftruncate` to the layout's size, `mmap`, write the header and the slot stamps.
//! 3. Store the magic word **last**, with Release.
//! 4. `fchmod` to the requested mode.
//!
//! If any step fails, the creator unlinks the name. An opener that cannot open yet
//! (`EACCES` during step 1–3), or that sees a file too small for the header or a zero
//! magic, retries for up to [`INIT_WAIT`] and then fails with
//! [`io::ErrorKind::InvalidData`] (a creator that died mid-way leaves such a segment;
//! [`super::unlink`] removes it).

use core::ptr::NonNull;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, fchmod, fstat, ftruncate};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
use rustix::shm;

use super::futex::SideSignal;
use super::header::{
    self, Expect, HEADER_OFFSET, Header, Layout, MAGIC, MAX_PEERS, PEER_ENTRIES_OFFSET,
    PEER_STATES_OFFSET, PeerEntry, RING_OFFSET,
};
use super::lock::{self, Lock, lock_byte};
use super::name;
use super::ring::ShmSlots;
use crate::chan::ring::{Ring, RingStorage, initial_stamp};

/// How long an opener waits for a segment being initialised by its creator.
pub(crate) const INIT_WAIT: Duration = Duration::from_secs(1);

/// Which side of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Senders (they wait for room).
    Send,
    /// Receivers (they wait for messages).
    Recv,
}

impl Side {
    /// The role bit of this side in peer state words.
    pub(crate) fn role(self) -> u64 {
        match self {
            Side::Send => 1,
            Side::Recv => 2,
        }
    }

    /// The other side.
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Send => Side::Recv,
            Side::Recv => Side::Send,
        }
    }
}

/// One mapping of a segment, with its validated layout and its ring.
///
/// Each `Segment` is its own open file description of the segment file (its own
/// `shm_open`), and each attached handle family has its own `Segment`: the family's peer
/// lock is held through that description (see [`super::lock`]).
pub(crate) struct Segment {
    name: String,
    fd: OwnedFd,
    base: NonNull<u8>,
    layout: Layout,
    ring: Ring<ShmSlots>,
    /// Process-local: when maintenance last ran (ms since `epoch`).
    pub(crate) last_maintenance: AtomicU64,
    pub(crate) epoch: Instant,
}

// SAFETY: the mapping is shared memory accessed only through atomics; the raw base
// pointer is not tied to a thread.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl core::fmt::Debug for Segment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("capacity", &self.layout.capacity)
            .finish_non_exhaustive()
    }
}

/// Unlinks a segment name on drop unless disarmed (a failed creation).
struct UnlinkOnFailure<'a>(Option<&'a str>);

impl Drop for UnlinkOnFailure<'_> {
    fn drop(&mut self) {
        if let Some(object) = self.0 {
            let _ = shm::unlink(object);
        }
    }
}

/// Owns a mapping until handed over.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, writable: bool) -> io::Result<Self> {
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: a new mapping at an address of the kernel's choosing aliases no Rust
        // object; its contents are only accessed through atomics.
        let ptr = unsafe { mmap(core::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0)? };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    fn into_raw(self) -> NonNull<u8> {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and no reference into it outlives `self` (the
        // header references of `open` are scoped to it).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `st_size`, `st_mode`, `st_dev`, `st_ino` as fixed-width integers (their C types vary
/// by architecture).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn stat_of(fd: &OwnedFd) -> io::Result<(u64, u32, u64, u64)> {
    let st = fstat(fd)?;
    Ok((
        st.st_size as u64,
        st.st_mode as u32,
        st.st_dev as u64,
        st.st_ino as u64,
    ))
}

impl Segment {
    /// Creates the segment `name` exclusively (`AlreadyExists` if present) with `mode`.
    pub(crate) fn create(name: &str, layout: Layout, mode: u32) -> io::Result<Segment> {
        let object = name::segment_object(name);
        let fd = shm::open(
            object.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::WUSR,
        )?;
        let mut guard = UnlinkOnFailure(Some(&object));
        // Nobody else can open the file yet (mode 0200), so this succeeds; were it
        // refused, the attach would take another slot.
        lock::try_lock(fd.as_fd(), lock_byte(0), 1, Lock::Exclusive)?;
        ftruncate(&fd, layout.total_size as u64)?;
        let map = Mapping::new(&fd, layout.total_size, true)?;
        {
            // SAFETY: the mapping is at least `size_of::<Header>()` bytes, page-aligned,
            // and lives until the end of this block.
            let h = unsafe { map.ptr.cast::<Header>().as_ref() };
            // SAFETY: `map` is a live mapping of `total_size` bytes; the storage is dropped
            // at the end of this block.
            let slots = unsafe { ShmSlots::new(map.ptr, &layout, RING_OFFSET) };
            for i in 0..layout.capacity {
                if let Some(stamp) = slots.stamp(i) {
                    stamp.store(initial_stamp(i), Ordering::Relaxed);
                }
            }
            if layout.kind == header::Kind::Signal {
                // SAFETY: as for `slots` above.
                unsafe { super::signal::init_queues(map.ptr, &layout) };
            }
            layout.write(h, rustix::process::getpid().as_raw_nonzero().get() as u32);
            // Sync point: Release publishes every store above to openers, whose Acquire
            // load of the magic then sees a fully initialised segment.
            h.magic.store(MAGIC, Ordering::Release);
        }
        fchmod(&fd, Mode::from_raw_mode(mode & 0o777))?;
        guard.0 = None;
        Ok(Segment::from_parts(name, fd, map, layout))
    }

    /// Opens the existing segment `name` and validates it against `expect`.
    pub(crate) fn open(name: &str, expect: &Expect) -> io::Result<Segment> {
        let object = name::segment_object(name);
        let deadline = Instant::now() + INIT_WAIT;
        let pause = || std::thread::sleep(Duration::from_millis(1));
        let fd = loop {
            match shm::open(object.as_str(), shm::OFlags::RDWR, Mode::empty()) {
                Ok(fd) => break fd,
                // Mode 0200: the creator is still initialising.
                Err(Errno::ACCESS) if Instant::now() < deadline => pause(),
                Err(e) => return Err(e.into()),
            }
        };
        let header_len = size_of::<Header>();
        let layout = loop {
            let (size, ..) = stat_of(&fd)?;
            if size >= header_len as u64 {
                let map = Mapping::new(&fd, header_len, true)?;
                // SAFETY: the mapping covers the header, whose bytes are all inside the
                // file (so no SIGBUS), and lives until the end of this block.
                let h = unsafe { map.ptr.cast::<Header>().as_ref() };
                // Sync point: Acquire pairs with the creator's Release store of the magic.
                match h.magic.load(Ordering::Acquire) {
                    MAGIC => break header::validate(h, size, expect)?,
                    0 => {}
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad magic: segment has {other:#018x}, expected {MAGIC:#018x}"),
                        ));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "segment is not initialised ({size} bytes, no magic) after {INIT_WAIT:?}: \
                         its creator may have died; `conduit::shm::unlink` removes it"
                    ),
                ));
            }
            pause();
        };
        let map = Mapping::new(&fd, layout.total_size, true)?;
        Ok(Segment::from_parts(name, fd, map, layout))
    }

    fn from_parts(name: &str, fd: OwnedFd, map: Mapping, layout: Layout) -> Segment {
        debug_assert_eq!(map.len, layout.total_size);
        let base = map.into_raw();
        // SAFETY: `base` is a live mapping of `total_size` bytes, unmapped only by
        // `Segment::drop`, after which the ring is never used.
        let slots = unsafe { ShmSlots::new(base, &layout, RING_OFFSET) };
        Segment {
            name: name.to_string(),
            fd,
            base,
            layout,
            ring: Ring::new(slots, layout.capacity),
            last_maintenance: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The channel name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The validated layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The start of the mapping (of `layout().total_size` bytes, live as long as
    /// `self`).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// The ring.
    pub(crate) fn ring(&self) -> &Ring<ShmSlots> {
        &self.ring
    }

    /// The segment's file descriptor: this mapping's own open file description, through
    /// which the handle family that owns this `Segment` holds its peer lock.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// A new open file description of this segment's file, for probing peer locks (see
    /// [`super::lock`]: never probe through [`Segment::fd`]).
    pub(crate) fn reopen(&self) -> io::Result<OwnedFd> {
        lock::reopen(&self.fd, &name::segment_object(&self.name))
    }

    /// The header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: offset 0 of a live, page-aligned mapping larger than the header.
        unsafe { self.base.add(HEADER_OFFSET).cast::<Header>().as_ref() }
    }

    /// The wait words of `side`.
    #[inline]
    pub(crate) fn signal(&self, side: Side) -> &SideSignal {
        match side {
            Side::Send => &self.header().send,
            Side::Recv => &self.header().recv,
        }
    }

    /// A mailbox's index region (see `super::mailbox`): its start, 8-aligned, and the
    /// bytes from there to the end of the mapping. Panics if the segment is not a
    /// mailbox; the offset comes from the validated layout.
    #[inline]
    pub(crate) fn index_region(&self) -> (NonNull<u8>, usize) {
        let at = self.layout.index_offset;
        assert!(
            self.layout.kind.is_mailbox() && at.is_multiple_of(8) && at <= self.layout.total_size
        );
        // SAFETY: `at` is inside the mapping of `total_size` bytes (checked above), so the
        // pointer stays in the same allocation.
        (unsafe { self.base.add(at) }, self.layout.total_size - at)
    }

    /// The state word of peer slot `n` (`n < MAX_PEERS`).
    pub(crate) fn peer_state(&self, n: usize) -> &AtomicU64 {
        assert!(n < MAX_PEERS);
        // SAFETY: `n < MAX_PEERS`, so the word lies in the peer state array, inside the
        // mapping and 8-aligned.
        unsafe {
            self.base
                .add(PEER_STATES_OFFSET + n * 8)
                .cast::<AtomicU64>()
                .as_ref()
        }
    }

    /// The entry of peer slot `n` (`n < MAX_PEERS`).
    #[inline]
    pub(crate) fn peer_entry(&self, n: usize) -> &PeerEntry {
        assert!(n < MAX_PEERS);
        // SAFETY: `n < MAX_PEERS`, so the entry lies in the entry array, inside the
        // mapping and aligned (the array offset is a multiple of the entry alignment).
        unsafe {
            self.base
                .add(PEER_ENTRIES_OFFSET + n * size_of::<PeerEntry>())
                .cast::<PeerEntry>()
                .as_ref()
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base` is our mapping of `total_size` bytes; with `&mut self` no
        // reference into it is alive, and the ring is not used after this.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), self.layout.total_size) };
    }
}

/// Removes a channel's name (its one file: the peer locks are on the file itself).
/// Processes that have it open keep using their mapping; the next `create` makes a new
/// segment.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    name::validate(name)?;
    shm::unlink(name::segment_object(name).as_str())?;
    Ok(())
}
