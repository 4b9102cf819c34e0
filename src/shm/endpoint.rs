//! The untyped core shared by every shm handle: open/attach, and the try / blocking /
//! async operations written once over payload `write` and `read` callbacks.

use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::header::{Expect, Fingerprint, Kind, Layout};
use super::hub::AsyncWait;
use super::name;
use super::options::{DEFAULT_CAPACITY, DEFAULT_MAX_MESSAGE, OpenMode, Options};
use super::peers::Peer;
use super::protocol;
use super::ring::ShmSlots;
use super::segment::{self, Segment, Side};
use super::spsc;
use super::wait;
use crate::chan::ring::Stall;
use crate::error::TryRecvError;
use crate::sync::Backoff;

/// Why a send did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFail {
    /// No room (or, for `try_`, a slot is being read): try again later.
    Full,
    /// Every receiver is gone (or the segment is corrupt).
    Disconnected,
    /// The deadline passed.
    Timeout,
}

/// Why a receive did not happen (blocking and async).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvFail {
    Disconnected,
    Timeout,
}

/// Opens or creates the segment `name` as `opts` say: opening checks it against
/// `expect`, `create` makes a new one (exclusively). With `create(true)`, a name that
/// another process creates or removes meanwhile is retried a few times. Returns the
/// segment and whether this call created it.
pub(crate) fn open_or_create(
    name: &str,
    opts: &Options,
    expect: &Expect,
    create: impl Fn() -> io::Result<Segment>,
) -> io::Result<(Segment, bool)> {
    match opts.open {
        OpenMode::Existing => Ok((Segment::open(name, expect)?, false)),
        OpenMode::CreateNew => Ok((create()?, true)),
        OpenMode::Create => {
            let mut tries = 0;
            loop {
                match Segment::open(name, expect) {
                    Ok(seg) => return Ok((seg, false)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                match create() {
                    Ok(seg) => return Ok((seg, true)),
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && tries < CREATE_RACE_RETRIES =>
                    {
                        tries += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Attaches a new handle family to `seg` (which this call `created`, or not) as `side`;
/// a creator asked to unlink on drop unlinks the name if the attach fails.
pub(crate) fn attach(seg: Segment, created: bool, opts: &Options, side: Side) -> io::Result<Peer> {
    let unlink = created && opts.unlink_on_drop;
    let name = seg.name().to_string();
    Peer::attach(Arc::new(seg), side, unlink).inspect_err(|_| {
        if unlink {
            let _ = segment::unlink(&name);
        }
    })
}

/// One attached handle family; clones share the peer slot.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    peer: Arc<Peer>,
}

/// Open attempts when racing other processes' `create(true)`.
const CREATE_RACE_RETRIES: usize = 16;

impl Endpoint {
    /// Opens or creates `name` per `opts` and attaches as `side`. For typed channels
    /// `fingerprint` is the type's; for byte channels it is ignored (the options'
    /// `max_message` decides).
    pub(crate) fn open(
        name: &str,
        opts: &Options,
        side: Side,
        kind: Kind,
        fingerprint: Fingerprint,
    ) -> io::Result<Endpoint> {
        name::validate(name)?;
        let slots = opts.slots()?;
        let max = opts.message_limit()?;
        if opts.max_bytes == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shm mailbox max_bytes must be at least 1",
            ));
        }
        opts.check_modes(kind)?;
        let (create_fp, expect) = match kind {
            // (Signal targets attach through `shm::signal`, not as endpoints, but open
            // the segment here like typed channels.)
            _ if !kind.is_bytes() => (
                fingerprint,
                Expect {
                    kind,
                    fingerprint,
                    max_message: None,
                    capacity: slots,
                    max_bytes: None,
                    any_type: false,
                    spsc: opts.spsc,
                    light: opts.asymmetric_fences,
                },
            ),
            _ => {
                let fp = Fingerprint::bytes(max.unwrap_or(DEFAULT_MAX_MESSAGE));
                (
                    fp,
                    Expect {
                        kind,
                        fingerprint: fp,
                        max_message: max,
                        capacity: slots,
                        max_bytes: opts.max_bytes,
                        any_type: false,
                        spsc: opts.spsc,
                        light: opts.asymmetric_fences,
                    },
                )
            }
        };
        let create = || {
            let mut layout = Layout::new(kind, slots.unwrap_or(DEFAULT_CAPACITY), create_fp)?;
            if let Some(n) = opts.max_bytes {
                layout = layout.with_max_bytes(n);
            }
            let spsc = opts.spsc == Some(true);
            layout = layout.with_spsc(spsc, opts.light_fences(spsc)?);
            Segment::create(name, layout, opts.mode)
        };
        let (seg, created) = open_or_create(name, opts, &expect, create)?;
        Ok(Endpoint {
            peer: Arc::new(attach(seg, created, opts, side)?),
        })
    }

    /// The family's peer slot.
    pub(crate) fn peer(&self) -> &Peer {
        &self.peer
    }

    #[inline]
    pub(crate) fn seg(&self) -> &Arc<Segment> {
        self.peer.segment()
    }

    #[inline]
    fn slots(&self) -> &ShmSlots {
        self.seg().ring().storage()
    }

    /// Spins (with `backoff`) until
    /// [`Ring::may_proceed`](crate::chan::ring::Ring::may_proceed) says that `side` may
    /// make progress or the backoff completes.
    #[inline]
    fn spin_until_may_proceed(&self, backoff: &Backoff, side: Side) {
        while !backoff.is_completed() {
            backoff.snooze();
            if self.may_proceed(side) {
                break;
            }
        }
    }

    /// Whether an operation of `side` (this family's) may make progress now: a hint for
    /// waiters, [`Ring::may_proceed`](crate::chan::ring::Ring::may_proceed) or, in the
    /// single-producer mode, [`spsc::may_send`] / [`spsc::may_recv`].
    #[inline]
    fn may_proceed(&self, side: Side) -> bool {
        let ring = self.seg().ring();
        match (self.peer.family(), side) {
            (None, _) => ring.may_proceed(side == Side::Send),
            (Some(family), Side::Send) => spsc::may_send(ring, family),
            (Some(_), Side::Recv) => spsc::may_recv(ring),
        }
    }

    /// For a sender waiting on a full ring: whether a batch of it is free again
    /// ([`Ring::send_batch_free`](crate::chan::ring::Ring::send_batch_free), or
    /// [`spsc::batch_free`]).
    #[inline]
    fn send_batch_free(&self) -> bool {
        let ring = self.seg().ring();
        match self.peer.family() {
            None => ring.send_batch_free(),
            Some(family) => spsc::batch_free(ring, family),
        }
    }

    /// One claim-write-commit, with a short spin while the slot is busy.
    ///
    /// A slot that still holds the previous lap's message is reported as
    /// [`Stall::Blocked`] from its stamp alone, before the lane is taken: the ring's own
    /// full check would load `head`, the word every receive writes, and so take its cache
    /// line away from the receiver each time a sender finds the ring full. The check
    /// prefetches the slot ([`Ring::may_claim_send`]).
    ///
    /// [`Ring::may_claim_send`]: crate::chan::ring::Ring::may_claim_send
    #[inline(always)]
    fn send_once(&self, write: &mut impl FnMut(&ShmSlots, usize)) -> Result<(), Stall> {
        match self.send_attempt(write) {
            Err(Stall::Busy) => self.retry_busy(Side::Send, || self.send_attempt(write)),
            done => done,
        }
    }

    /// One check, claim, write and commit of [`Endpoint::send_once`].
    #[inline(always)]
    fn send_attempt(&self, write: &mut impl FnMut(&ShmSlots, usize)) -> Result<(), Stall> {
        let seg = self.seg();
        if let Some(family) = self.peer.family() {
            return self.send_spsc(family, write);
        }
        if !seg.ring().may_claim_send() {
            return Err(Stall::Blocked);
        }
        let lane = self.peer.lane();
        let r = protocol::send(seg.ring(), lane.word(), |i| write(self.slots(), i));
        drop(lane);
        if r.is_ok() {
            seg.signal(Side::Recv).notify_one();
        }
        r
    }

    /// [`Endpoint::send_attempt`] in the single-producer mode ([`spsc::send`]): the slot
    /// at `tail` is prefetched for writing first, as [`Ring::may_claim_send`] does.
    ///
    /// [`Ring::may_claim_send`]: crate::chan::ring::Ring::may_claim_send
    #[inline(always)]
    fn send_spsc(
        &self,
        family: &spsc::Family,
        write: &mut impl FnMut(&ShmSlots, usize),
    ) -> Result<(), Stall> {
        let seg = self.seg();
        let ring = seg.ring();
        spsc::prepare_send(ring, family);
        let r = spsc::send(ring, family, |i| write(self.slots(), i));
        if r.is_ok() {
            seg.signal(Side::Recv).notify_one();
        }
        r
    }

    /// [`Endpoint::recv_attempt`] in the single-producer mode ([`spsc::recv`]). The slot
    /// is not prefetched: the receiver only reads it, and a prefetch for writing would
    /// take the line away from the sender.
    #[inline(always)]
    fn recv_spsc<R>(
        &self,
        family: &spsc::Family,
        read: &mut impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, Stall> {
        let seg = self.seg();
        let r = spsc::recv(seg.ring(), family, |i| read(self.slots(), i));
        if r.is_ok() {
            seg.signal(Side::Send).notify_one();
        }
        r
    }

    /// [`Endpoint::send_once`] or [`Endpoint::recv_once`] (`side`) after its slot was
    /// busy: a short spin, retrying `attempt` while the slot stays busy. Out of line: a
    /// loop around the first attempt would cost every operation its setup.
    ///
    /// Bounded: it ends when the backoff completes (a fixed number of steps), and each
    /// attempt is bounded in turn (see `chan::ring` and `shm::protocol`); a claim that
    /// gave up against a peer that keeps moving the positions reports [`Stall::Busy`],
    /// which the callers treat as full (empty): `try_` calls return, waits go on
    /// through [`wait::block`].
    #[cold]
    #[inline(never)]
    fn retry_busy<R>(
        &self,
        side: Side,
        mut attempt: impl FnMut() -> Result<R, Stall>,
    ) -> Result<R, Stall> {
        let backoff = Backoff::new();
        loop {
            self.spin_until_may_proceed(&backoff, side);
            match attempt() {
                Err(Stall::Busy) if !backoff.is_completed() => {}
                done => return done,
            }
        }
    }

    /// One claim-read-free, with a short spin while the slot is busy.
    ///
    /// With `peek`, a slot with nothing published in it is reported as [`Stall::Blocked`]
    /// from its stamp alone, before any claim (the ring's empty check would load `tail`,
    /// the word every send writes, and its claim would prefetch the slot that a sender
    /// may be writing), whether or not a sender has claimed it. Without, the ring tells
    /// the two apart ([`Stall::Busy`]).
    #[inline(always)]
    fn recv_once<R>(
        &self,
        peek: bool,
        read: &mut impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, Stall> {
        match self.recv_attempt(peek, read) {
            Err(Stall::Busy) => self.retry_busy(Side::Recv, || self.recv_attempt(peek, read)),
            done => done,
        }
    }

    /// One check, claim, read and free of [`Endpoint::recv_once`].
    #[inline(always)]
    fn recv_attempt<R>(
        &self,
        peek: bool,
        read: &mut impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, Stall> {
        let seg = self.seg();
        if let Some(family) = self.peer.family() {
            // With `peek`, an empty ring is told from the stamp alone, before the
            // family's turn is taken (a locked instruction).
            if peek && !spsc::may_recv(seg.ring()) {
                return Err(Stall::Blocked);
            }
            return self.recv_spsc(family, read);
        }
        if peek && !seg.ring().may_claim_recv() {
            return Err(Stall::Blocked);
        }
        let lane = self.peer.lane();
        let r = protocol::recv(seg.ring(), lane.word(), |i| read(self.slots(), i));
        drop(lane);
        if r.is_ok() {
            seg.signal(Side::Send).notify_one();
        }
        r
    }

    /// A non-blocking send. `maintain`: may run peer maintenance (system calls) when
    /// the ring is full.
    #[inline]
    pub(crate) fn try_send_with(
        &self,
        maintain: bool,
        write: &mut impl FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        match self.send_once(write) {
            Ok(()) => Ok(()),
            Err(Stall::Corrupt | Stall::Disconnected) => Err(SendFail::Disconnected),
            Err(Stall::Blocked | Stall::Busy) => {
                let seg = self.seg();
                if maintain {
                    seg.maintain_if_due();
                }
                if seg.side_gone(Side::Recv) {
                    Err(SendFail::Disconnected)
                } else {
                    Err(SendFail::Full)
                }
            }
        }
    }

    /// A non-blocking receive; `maintain` as in [`Endpoint::try_send_with`].
    #[inline]
    pub(crate) fn try_recv_with<R>(
        &self,
        maintain: bool,
        read: &mut impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, TryRecvError> {
        // Every sender gone: one may have committed just before detaching (see
        // `wait::try_recv`).
        wait::try_recv(
            |peek| self.recv_once(peek, read),
            || {
                let seg = self.seg();
                if maintain {
                    seg.maintain_if_due();
                }
                seg.side_gone(Side::Send)
            },
        )
    }

    /// A blocking send until `deadline`.
    ///
    /// The fast path (room at the first try) is inlined into the caller, the waiting
    /// loop ([`Endpoint::send_wait`]) is not (likewise for receives). Two pinned processes
    /// streaming 64-byte messages, aligned builds, order rotating, 6 rounds each: with
    /// `send` and `recv` called from functions of their own, 78.3 → 61.6 ns/message at
    /// the median (−18.8 ± 2.6, faster in all 6); with them inlined into the loops,
    /// 52.9 → 46.9 (−8.2 ± 1.8, all 6). Before, each message took two calls into the
    /// library when the caller's own function was not inlined.
    #[inline(always)]
    pub(crate) fn send_with(
        &self,
        deadline: Option<Instant>,
        mut write: impl FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        // Anything but `Disconnected` goes on to the waiting loop, whose first attempt
        // is a full `try_send_with`.
        match self.send_once(&mut write) {
            Ok(()) => Ok(()),
            Err(Stall::Corrupt | Stall::Disconnected) => Err(SendFail::Disconnected),
            Err(Stall::Blocked | Stall::Busy) => self.send_wait(deadline, write),
        }
    }

    /// [`Endpoint::send_with`] once its first attempt found no room.
    #[cold]
    #[inline(never)]
    fn send_wait(
        &self,
        deadline: Option<Instant>,
        mut write: impl FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        let attempt = || match self.try_send_with(false, &mut write) {
            Err(SendFail::Full) => None,
            done => Some(done),
        };
        // While spinning, a full ring is retried once a batch of it is free again (see
        // `Ring::send_batch_free`).
        wait::block(
            self.seg().signal(Side::Send),
            self.seg().layout().light,
            deadline,
            || {
                self.seg().maintain_if_due();
            },
            || self.send_batch_free(),
            attempt,
        )
        .unwrap_or(Err(SendFail::Timeout))
    }

    /// A blocking receive until `deadline`; the fast path inlined, as in
    /// [`Endpoint::send_with`].
    #[inline(always)]
    pub(crate) fn recv_with<R>(
        &self,
        deadline: Option<Instant>,
        mut read: impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, RecvFail> {
        // Anything but `Disconnected` goes on to the waiting loop, whose first attempt
        // is a full `try_recv_with`.
        match self.recv_once(true, &mut read) {
            Ok(msg) => Ok(msg),
            Err(Stall::Corrupt | Stall::Disconnected) => Err(RecvFail::Disconnected),
            Err(Stall::Blocked | Stall::Busy) => self.recv_wait(deadline, read),
        }
    }

    /// [`Endpoint::recv_with`] once its first attempt found nothing.
    #[cold]
    #[inline(never)]
    fn recv_wait<R>(
        &self,
        deadline: Option<Instant>,
        mut read: impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, RecvFail> {
        let attempt = || match self.try_recv_with(false, &mut read) {
            Ok(msg) => Some(Ok(msg)),
            Err(TryRecvError::Disconnected) => Some(Err(RecvFail::Disconnected)),
            Err(TryRecvError::Empty) => None,
        };
        wait::block(
            self.seg().signal(Side::Recv),
            self.seg().layout().light,
            deadline,
            || {
                self.seg().maintain_if_due();
            },
            || self.may_proceed(Side::Recv),
            attempt,
        )
        .unwrap_or(Err(RecvFail::Timeout))
    }

    /// One poll of an async send: `Ready(Err(()))` when disconnected.
    pub(crate) fn poll_send_with(
        &self,
        cx: &mut Context<'_>,
        wait: &mut AsyncWait,
        mut write: impl FnMut(&ShmSlots, usize),
    ) -> Poll<Result<(), ()>> {
        // Spinning, a full ring is retried once a batch of it is free, as in `send_wait`.
        wait.poll(
            self.seg(),
            Side::Send,
            cx,
            || self.send_batch_free(),
            || match self.try_send_with(false, &mut write) {
                Ok(()) => Some(Ok(())),
                Err(SendFail::Full) => None,
                Err(_) => Some(Err(())),
            },
        )
    }

    /// One poll of an async receive: `Ready(Err(()))` when disconnected.
    pub(crate) fn poll_recv_with<R>(
        &self,
        cx: &mut Context<'_>,
        wait: &mut AsyncWait,
        mut read: impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Poll<Result<R, ()>> {
        wait.poll(
            self.seg(),
            Side::Recv,
            cx,
            || self.may_proceed(Side::Recv),
            || match self.try_recv_with(false, &mut read) {
                Ok(msg) => Some(Ok(msg)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(())),
            },
        )
    }

    /// Ends an async wait (completion or drop).
    pub(crate) fn cancel(&self, wait: &mut AsyncWait) {
        wait.cancel(self.seg());
    }

    /// Messages queued (a hint under concurrent use).
    pub(crate) fn len(&self) -> usize {
        let ring = self.seg().ring();
        if self.seg().layout().spsc {
            spsc::len(ring)
        } else {
            ring.len_untrusted()
        }
    }

    /// The number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.seg().layout().capacity
    }

    /// The largest payload of a slot.
    pub(crate) fn max_message(&self) -> usize {
        self.seg().layout().max_message()
    }

    /// Attached sender handle families (processes count once per `open`).
    pub(crate) fn sender_count(&self) -> usize {
        self.seg().live_count(Side::Send)
    }

    /// Attached receiver handle families.
    pub(crate) fn receiver_count(&self) -> usize {
        self.seg().live_count(Side::Recv)
    }

    /// Whether the other side had peers and all are gone.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.seg().side_gone(self.peer.side().other())
    }

    /// The channel name.
    pub(crate) fn name(&self) -> &str {
        self.seg().name()
    }

    /// Whether two endpoints use the same mapping.
    pub(crate) fn same_mapping(&self, other: &Endpoint) -> bool {
        Arc::ptr_eq(self.seg(), other.seg())
    }
}
