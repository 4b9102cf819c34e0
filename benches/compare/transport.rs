//! Cross-process transports: the peers (pipe, unix socket, SysV and POSIX message
//! queues), the spinning shared-memory limits and the bare ring protocol for reference.

use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::spin_until;
use crate::ipc::Ipc;

// ---------------------------------------------------------------------------------------
// Cross-process transports
// ---------------------------------------------------------------------------------------

pub(crate) const PIPE: &str = "pipe";

/// One end of a two-process link; both ends are made before the fork.
pub(crate) trait Transport: Sized {
    const NAME: &'static str;
    /// Whether the transport takes part in this scenario.
    fn supports(_kind: Ipc) -> bool {
        true
    }
    /// `(parent end, child end)` for messages of at most `msg_size` bytes.
    fn pair(msg_size: usize) -> io::Result<(Self, Self)>;
    /// Sends exactly `buf`.
    fn send(&mut self, buf: &[u8]);
    /// Receives a message of exactly `buf.len()` bytes.
    fn recv(&mut self, buf: &mut [u8]);
}

pub(crate) struct Stream<R, W> {
    pub(crate) r: R,
    pub(crate) w: W,
}

impl Transport for Stream<PipeReader, PipeWriter> {
    const NAME: &'static str = PIPE;
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let (r1, w1) = io::pipe()?;
        let (r2, w2) = io::pipe()?;
        Ok((Stream { r: r1, w: w2 }, Stream { r: r2, w: w1 }))
    }
    fn send(&mut self, buf: &[u8]) {
        self.w.write_all(buf).expect("pipe write");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.r.read_exact(buf).expect("pipe read");
    }
}

impl Transport for Stream<UnixStream, UnixStream> {
    const NAME: &'static str = "unix socket";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        let (a2, b2) = (a.try_clone()?, b.try_clone()?);
        Ok((Stream { r: a, w: a2 }, Stream { r: b, w: b2 }))
    }
    fn send(&mut self, buf: &[u8]) {
        self.w.write_all(buf).expect("socket write");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.r.read_exact(buf).expect("socket read");
    }
}

/// Retries a libc call interrupted by a signal; panics on any other failure.
pub(crate) fn check(what: &str, mut call: impl FnMut() -> isize) -> usize {
    loop {
        let r = call();
        if r >= 0 {
            return r as usize;
        }
        let e = io::Error::last_os_error();
        assert!(e.kind() == io::ErrorKind::Interrupted, "{what}: {e}");
    }
}

pub(crate) const MAX_MSG: usize = 64;

/// One SysV queue; the message type says the direction (1: to the child, 2: to the parent).
pub(crate) struct SysV {
    id: libc::c_int,
    tx_type: libc::c_long,
    rx_type: libc::c_long,
    /// The parent's end owns the queue.
    _queue: Option<SysVQueue>,
}

/// A SysV message: the type, then up to [`MAX_MSG`] bytes.
#[repr(C)]
pub(crate) struct SysVMsg {
    mtype: libc::c_long,
    text: [u8; MAX_MSG],
}

/// Sends `text` on SysV queue `id` as a message of type `mtype`; `flags` as for
/// `msgsnd` (`IPC_NOWAIT` or 0).
pub(crate) fn msg_send(
    id: libc::c_int,
    mtype: libc::c_long,
    text: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let mut m = SysVMsg {
        mtype,
        text: [0; MAX_MSG],
    };
    m.text[..text.len()].copy_from_slice(text);
    loop {
        // SAFETY: `m` is a valid message buffer of `text.len()` text bytes.
        if unsafe { libc::msgsnd(id, (&raw const m).cast(), text.len(), flags) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives the oldest message of type `mtype` on SysV queue `id` into `buf`; returns
/// its size.
pub(crate) fn msg_recv(id: libc::c_int, mtype: libc::c_long, buf: &mut [u8]) -> usize {
    let mut m = SysVMsg {
        mtype: 0,
        text: [0; MAX_MSG],
    };
    // SAFETY: `m` has room for `MAX_MSG` text bytes.
    let n = check("msgrcv", || unsafe {
        libc::msgrcv(id, (&raw mut m).cast(), MAX_MSG, mtype, 0)
    });
    buf[..n].copy_from_slice(&m.text[..n]);
    n
}

/// A private SysV queue, removed on drop.
pub(crate) struct SysVQueue(pub(crate) libc::c_int);

impl SysVQueue {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SysVQueue(id))
    }

    /// Makes room for `bytes` bytes (and as many messages: Linux counts messages against
    /// the same limit) where the default per-queue limit, `kernel.msgmnb` (16,384 bytes),
    /// is lower. Raising it takes `CAP_SYS_RESOURCE`; `false` if that was refused.
    pub(crate) fn make_room(&self, bytes: usize) -> bool {
        // SAFETY: a zeroed `msqid_ds` is a valid buffer for `IPC_STAT` to fill.
        let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: `ds` is a writable `msqid_ds`.
        if unsafe { libc::msgctl(self.0, libc::IPC_STAT, &raw mut ds) } < 0 {
            return false;
        }
        if ds.msg_qbytes as usize >= bytes {
            return true;
        }
        ds.msg_qbytes = bytes as _;
        // SAFETY: `ds` holds the queue's own settings with a larger byte limit.
        unsafe { libc::msgctl(self.0, libc::IPC_SET, &raw mut ds) == 0 }
    }
}

impl Drop for SysVQueue {
    fn drop(&mut self) {
        // SAFETY: removes the queue this handle created.
        unsafe { libc::msgctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

impl Transport for SysV {
    const NAME: &'static str = "SysV msg queue";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let queue = SysVQueue::new()?;
        let id = queue.0;
        let end = |tx_type, rx_type, queue| SysV {
            id,
            tx_type,
            rx_type,
            _queue: queue,
        };
        Ok((end(1, 2, Some(queue)), end(2, 1, None)))
    }
    fn send(&mut self, buf: &[u8]) {
        msg_send(self.id, self.tx_type, buf, 0).expect("msgsnd");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut text = [0u8; MAX_MSG];
        let n = msg_recv(self.id, self.rx_type, &mut text);
        assert_eq!(n, buf.len(), "msgrcv: unexpected message size");
        buf.copy_from_slice(&text[..n]);
    }
}

/// Two POSIX queues, one per direction, unlinked as soon as both are open.
pub(crate) struct PosixMq {
    tx: libc::mqd_t,
    rx: libc::mqd_t,
    owner: bool,
}

pub(crate) fn mq_create(msg_size: usize) -> io::Result<libc::mqd_t> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "/conduit-bench.{}.{}\0",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    // SAFETY: an all-zero `mq_attr` is valid; the fields that matter are set below.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 10; // the default /proc/sys/fs/mqueue/msg_max
    attr.mq_msgsize = msg_size as _;
    // SAFETY: `name` is NUL-terminated; `attr` outlives the call.
    let q = unsafe {
        libc::mq_open(
            name.as_ptr().cast(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o600 as libc::mode_t,
            &raw const attr,
        )
    };
    if q < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::mq_unlink(name.as_ptr().cast()) };
    Ok(q)
}

impl Transport for PosixMq {
    const NAME: &'static str = "POSIX msg queue";
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        let a = mq_create(msg_size)?;
        let b = match mq_create(msg_size) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: closes the queue opened above.
                unsafe { libc::mq_close(a) };
                return Err(e);
            }
        };
        let end = |tx, rx, owner| PosixMq { tx, rx, owner };
        Ok((end(a, b, true), end(b, a, false)))
    }
    fn send(&mut self, buf: &[u8]) {
        // SAFETY: `buf` is valid for its length.
        check("mq_send", || unsafe {
            libc::mq_send(self.tx, buf.as_ptr().cast(), buf.len(), 0) as isize
        });
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut m = [0u8; MAX_MSG];
        // SAFETY: `m` has room for `MAX_MSG` ≥ the queue's message size.
        let n = check("mq_receive", || unsafe {
            libc::mq_receive(
                self.rx,
                m.as_mut_ptr().cast(),
                MAX_MSG,
                std::ptr::null_mut(),
            )
        });
        assert_eq!(n, buf.len(), "mq_receive: unexpected message size");
        buf.copy_from_slice(&m[..n]);
    }
}

impl Drop for PosixMq {
    fn drop(&mut self) {
        if self.owner {
            // SAFETY: closes the queues this end opened.
            unsafe {
                libc::mq_close(self.tx);
                libc::mq_close(self.rx);
            }
        }
    }
}

/// A page (or more) of `MAP_SHARED | MAP_ANONYMOUS` memory, shared with the forked child.
pub(crate) struct SharedMap {
    ptr: *mut u8,
    len: usize,
    owner: bool,
}

impl SharedMap {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping, zero-filled by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap {
            ptr: ptr.cast(),
            len,
            owner: true,
        })
    }

    /// A second, non-owning handle for the other process.
    fn peer(&self) -> Self {
        SharedMap {
            ptr: self.ptr,
            len: self.len,
            owner: false,
        }
    }

    /// The atomic word at byte `offset` (8-aligned, in bounds).
    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: in bounds, aligned, and only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    /// Copies `buf` into the mapping at `offset`.
    fn write(&self, offset: usize, buf: &[u8]) {
        assert!(offset + buf.len() <= self.len);
        // SAFETY: in bounds; the protocol gives this process exclusive use of the bytes.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(offset), buf.len()) };
    }

    /// Copies bytes at `offset` out into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset + buf.len() <= self.len);
        // SAFETY: in bounds; the protocol gives this process exclusive use of the bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        if self.owner {
            // SAFETY: unmaps the mapping this handle created.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// The ping-pong limit: both processes spin on ONE cache line holding a token counter and
/// the payload. The token passes on every message and only its holder writes the line;
/// the child holds it first (for its hello). Each side knows the token's next value, so a
/// send is two plain stores. Only strict alternation works, so there is no one-way stream.
pub(crate) struct SpinLine {
    map: SharedMap,
    /// The token's value while this side holds it.
    token: u64,
}

impl Transport for SpinLine {
    const NAME: &'static str = "spin: one cache line";
    fn supports(kind: Ipc) -> bool {
        kind == Ipc::PingPong
    }
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        assert!(msg_size <= 56);
        let map = SharedMap::new(4096)?;
        let child = SpinLine {
            map: map.peer(),
            token: 0,
        };
        Ok((SpinLine { map, token: 1 }, child))
    }
    fn send(&mut self, buf: &[u8]) {
        debug_assert_eq!(self.map.word(0).load(Ordering::Relaxed), self.token);
        self.map.write(8, buf);
        self.token += 2;
        self.map.word(0).store(self.token - 1, Ordering::Release);
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let word = self.map.word(0);
        spin_until(|| word.load(Ordering::Acquire) == self.token);
        self.map.read(8, buf);
    }
}

/// The one-way limit: a single-producer single-consumer ring per direction in shared
/// memory (ping-pong leaves it to [`SpinLine`]), 256 slots of 128 bytes; a slot's first word is 0 when free and `seq + 1` when
/// it holds message `seq`.
pub(crate) struct SpinRing {
    map: SharedMap,
    tx_ring: usize,
    rx_ring: usize,
    tx_seq: u64,
    rx_seq: u64,
}

pub(crate) const RING_SLOTS: usize = 256;
pub(crate) const SLOT_BYTES: usize = 128;
pub(crate) const RING_BYTES: usize = RING_SLOTS * SLOT_BYTES;

impl SpinRing {
    fn slot(ring: usize, seq: u64) -> usize {
        ring + (seq as usize % RING_SLOTS) * SLOT_BYTES
    }
}

impl Transport for SpinRing {
    const NAME: &'static str = "spin: SPSC ring";
    fn supports(kind: Ipc) -> bool {
        kind == Ipc::OneWay
    }
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        assert!(msg_size <= SLOT_BYTES - 8);
        let map = SharedMap::new(2 * RING_BYTES)?;
        let end = |map, tx_ring, rx_ring| SpinRing {
            map,
            tx_ring,
            rx_ring,
            tx_seq: 0,
            rx_seq: 0,
        };
        let child = end(map.peer(), RING_BYTES, 0);
        Ok((end(map, 0, RING_BYTES), child))
    }
    fn send(&mut self, buf: &[u8]) {
        let slot = Self::slot(self.tx_ring, self.tx_seq);
        let stamp = self.map.word(slot);
        spin_until(|| stamp.load(Ordering::Acquire) == 0);
        self.map.write(slot + 8, buf);
        self.tx_seq += 1;
        stamp.store(self.tx_seq, Ordering::Release);
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let slot = Self::slot(self.rx_ring, self.rx_seq);
        let stamp = self.map.word(slot);
        let full = self.rx_seq + 1;
        spin_until(|| stamp.load(Ordering::Acquire) == full);
        self.map.read(slot + 8, buf);
        self.rx_seq = full;
        stamp.store(0, Ordering::Release);
    }
}

/// A reference, neither a peer nor the limit: the ring protocol that `conduit::shm` runs
/// (Vyukov's bounded MPMC queue: a sender claims `tail` by CAS when the slot's stamp says
/// free, a receiver claims `head` when it says full; commits are CASes of the stamp, each
/// followed by a SeqCst fence), bare: no intent lanes or crash recovery, no validation of
/// the shared memory, no futex waits, no peer table. Its distance from the spin limit is
/// what the protocol costs; conduit's distance from it is what the rest costs. 1024 slots
/// per direction, each a stamp and the payload, rounded up to a power of two (16 bytes
/// for the ping-pong's 8-byte messages, 128 for the stream's 64).
pub(crate) struct StampRing {
    map: SharedMap,
    tx_ring: usize,
    rx_ring: usize,
    slot_bytes: usize,
}

pub(crate) const STAMP_SLOTS: u64 = 1024;
/// `head` and `tail` sit on 128-byte blocks of their own before the slots.
pub(crate) const STAMP_SLOTS_OFFSET: usize = 256;

impl StampRing {
    fn ring_bytes(slot_bytes: usize) -> usize {
        STAMP_SLOTS_OFFSET + STAMP_SLOTS as usize * slot_bytes
    }
    fn stamp(&self, ring: usize, pos: u64) -> (&AtomicU64, usize) {
        let slot = ring + STAMP_SLOTS_OFFSET + (pos % STAMP_SLOTS) as usize * self.slot_bytes;
        (self.map.word(slot), slot + 8)
    }
    /// One claim attempt; `false` if the ring is full (or another sender moved on).
    fn try_send(&self, buf: &[u8]) -> bool {
        let tail = self.map.word(self.tx_ring + 128);
        let pos = tail.load(Ordering::Relaxed);
        let (stamp, payload) = self.stamp(self.tx_ring, pos);
        if stamp.load(Ordering::Acquire) != pos
            || tail
                .compare_exchange(pos, pos + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.map.write(payload, buf);
        // Nothing else writes a claimed slot's stamp here; conduit's commit is a CAS
        // because a survivor may publish a skip in it.
        let committed = stamp.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        debug_assert!(committed.is_ok());
        true
    }
    /// One claim attempt; `false` if the ring is empty (or another receiver moved on).
    fn try_recv(&self, buf: &mut [u8]) -> bool {
        let head = self.map.word(self.rx_ring);
        let pos = head.load(Ordering::Relaxed);
        let (stamp, payload) = self.stamp(self.rx_ring, pos);
        if stamp.load(Ordering::Acquire) != pos + 1
            || head
                .compare_exchange(pos, pos + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.map.read(payload, buf);
        let freed = stamp.compare_exchange(
            pos + 1,
            pos + STAMP_SLOTS,
            Ordering::Release,
            Ordering::Relaxed,
        );
        std::sync::atomic::fence(Ordering::SeqCst);
        debug_assert!(freed.is_ok());
        true
    }
}

impl Transport for StampRing {
    const NAME: &'static str = "ref: MPMC stamp ring";
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        let slot_bytes = (8 + msg_size).next_power_of_two();
        let ring_bytes = Self::ring_bytes(slot_bytes);
        let map = SharedMap::new(2 * ring_bytes)?;
        let end = |map, tx_ring, rx_ring| StampRing {
            map,
            tx_ring,
            rx_ring,
            slot_bytes,
        };
        let parent = end(map, 0, ring_bytes);
        for ring in [0, ring_bytes] {
            for pos in 0..STAMP_SLOTS {
                parent.stamp(ring, pos).0.store(pos, Ordering::Relaxed);
            }
        }
        let child = end(parent.map.peer(), ring_bytes, 0);
        Ok((parent, child))
    }
    #[inline(always)]
    fn send(&mut self, buf: &[u8]) {
        spin_until(|| self.try_send(buf));
    }
    #[inline(always)]
    fn recv(&mut self, buf: &mut [u8]) {
        spin_until(|| self.try_recv(buf));
    }
}

/// A reference for issue #22's item 3: the ring that a single-producer single-consumer
/// mode of `conduit::shm` could run, bare (no crash recovery, validation or futex
/// waits). Only the sender writes a slot: its stamp says which message it holds
/// (`seq + 1`), and the receiver frees slots by advancing `head`, a word of its own
/// that the sender reads only when its cached copy says the ring is full (once a lap).
/// A hop of a ping-pong then moves the slot's line twice (the sender takes it back
/// from the receiver's shared copy, the receiver fetches it), as on the spin line,
/// where the MPMC stamp ring moves it three times (the receiver also writes the stamp
/// to free the slot). 1024 slots per direction, sized as in [`StampRing`].
pub(crate) struct SpscRing {
    map: SharedMap,
    tx_ring: usize,
    rx_ring: usize,
    slot_bytes: usize,
    /// The sender's next position and its copy of the receiver's `head`.
    tail: u64,
    head_seen: u64,
    /// The receiver's next position.
    head: u64,
}

impl SpscRing {
    fn ring_bytes(slot_bytes: usize) -> usize {
        STAMP_SLOTS_OFFSET + STAMP_SLOTS as usize * slot_bytes
    }
    fn slot(&self, ring: usize, pos: u64) -> (&AtomicU64, usize) {
        let slot = ring + STAMP_SLOTS_OFFSET + (pos % STAMP_SLOTS) as usize * self.slot_bytes;
        (self.map.word(slot), slot + 8)
    }
}

impl Transport for SpscRing {
    const NAME: &'static str = "ref: SPSC ring, two transfers";
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        let slot_bytes = (8 + msg_size).next_power_of_two();
        let ring_bytes = Self::ring_bytes(slot_bytes);
        let map = SharedMap::new(2 * ring_bytes)?;
        let end = |map, tx_ring, rx_ring| SpscRing {
            map,
            tx_ring,
            rx_ring,
            slot_bytes,
            tail: 0,
            head_seen: 0,
            head: 0,
        };
        let child = end(map.peer(), ring_bytes, 0);
        Ok((end(map, 0, ring_bytes), child))
    }
    #[inline(always)]
    fn send(&mut self, buf: &[u8]) {
        if self.tail - self.head_seen == STAMP_SLOTS {
            let head = self.map.word(self.tx_ring);
            spin_until(|| head.load(Ordering::Acquire) != self.head_seen);
            self.head_seen = head.load(Ordering::Acquire);
        }
        let (stamp, payload) = self.slot(self.tx_ring, self.tail);
        self.map.write(payload, buf);
        stamp.store(self.tail + 1, Ordering::Release);
        self.tail += 1;
    }
    #[inline(always)]
    fn recv(&mut self, buf: &mut [u8]) {
        let (stamp, payload) = self.slot(self.rx_ring, self.head);
        let full = self.head + 1;
        spin_until(|| stamp.load(Ordering::Acquire) == full);
        self.map.read(payload, buf);
        self.head = full;
        self.map.word(self.rx_ring).store(full, Ordering::Release);
    }
}
