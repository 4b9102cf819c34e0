//! The untyped core of [`super::Mailbox`] and [`super::ByteMailbox`]: open, the
//! try / blocking / async operations written once over payload `write` and `read`
//! callbacks, and close.

use core::any::Any;
use core::cell::Cell;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index::{
    ABANDONED, Corrupt, GONE, Index, Locked, Meta, NIL, PENDING, REPLIED, SLEEPING, Want,
    byte_len_ok, mark_sleeping, owner_word, retire, settle,
};
use crate::error::TryRecvError;
use crate::mailbox::{Address, ErasedRemote, Name, Remote, Select};
use crate::shm::endpoint::Endpoint;
use crate::shm::futex::{self, Woke};
use crate::shm::header::{Fingerprint, Kind, MAX_PEERS};
use crate::shm::hub::AsyncWait;
use crate::shm::options::Options;
use crate::shm::peers::same_object;
use crate::shm::ring::ShmSlots;
use crate::shm::segment::{Segment, Side};
use crate::shm::table::{LIVE, pack, unpack};
use crate::shm::wait::{self, QUICK_POLLS, SLICE};
use crate::sync::{AtomicBool, AtomicU32, Ordering, QuickBackoff};

/// The longest a non-blocking operation waits for the lock held by a live peer (it is
/// held for one bounded index operation and one message copy; only a stopped or hostile
/// peer holds it longer). Then `try_send` reports `Full`, `try_recv` `Empty`.
const TRY_LOCK_WAIT: Duration = Duration::from_millis(100);

/// Why a send did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFail {
    Full,
    Closed,
    Timeout,
}

/// Why a request got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestFail {
    /// No handle family has ever received and is still attached: not sent.
    NoResponders,
    /// Not sent: the mailbox is closed.
    Closed,
    /// Not sent: the mailbox stayed full until the deadline.
    Full,
    /// Sent; no reply by the deadline.
    Timeout,
    /// Sent; its replier gave up, died, or every receiver left before taking it.
    Unanswered,
}

/// A request in the segment: its slot and sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    slot: u32,
    seq: u64,
}

/// A request future's payload writer.
pub(crate) type WriteBox<'a> = Box<dyn FnMut(&ShmSlots, usize) + Send + 'a>;
/// A request future's reply reader.
pub(crate) type ReadBox<'a, R> = Box<dyn FnMut(&ShmSlots, usize) -> Option<R> + Send + 'a>;
/// A request future's error mapping.
pub(crate) type ErrorBox<'a, E> = Box<dyn Fn(RequestFail) -> E + Send + 'a>;

/// Why a blocking receive did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvFail {
    Closed,
    Timeout,
}

/// How long an operation waits for the lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockWait {
    /// A non-blocking operation: [`TRY_LOCK_WAIT`].
    Try,
    /// Until the deadline (`None`: for as long as the holder lives).
    Until(Option<Instant>),
}

/// What every locked operation of a handle family needs: its attachment and its lock
/// word. A [`Replier`] holds one of its own, so that taking a request clones a single
/// `Arc`.
#[derive(Clone)]
struct Link {
    ep: Endpoint,
    /// The lock word naming this family ([`owner_word`]).
    me: u32,
    bytes: bool,
}

/// One attached handle family of a mailbox; clones share the peer slot and address.
#[derive(Clone)]
pub(crate) struct Core {
    link: Link,
    /// This family's address; the envelopes' sender addresses copy its mailbox name
    /// ([`Address::sibling`]).
    address: Address,
    /// Whether this family has taken the receiver role (at its first receive).
    receiving: Arc<AtomicBool>,
    /// The slot of this family's last request, retired ([`DONE`](super::index::DONE))
    /// and not released yet ([`NIL`]: none): its next send releases it under the lock
    /// it takes anyway. One is remembered; another retired meanwhile is left to the
    /// reclaim of a send that finds no free slot.
    retired: Arc<AtomicU32>,
}

impl core::fmt::Debug for Core {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mailbox")
            .field("name", &self.name())
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The outcome of one locked attempt.
enum Done<R> {
    Ok(R),
    /// Full (sends) or nothing selected (receives).
    No,
    Closed,
}

impl Link {
    pub(crate) fn seg(&self) -> &Arc<Segment> {
        self.ep.seg()
    }

    fn index(&self) -> Index<'_> {
        Index::new(self.seg())
    }

    /// Whether the byte bound is tighter than the slots': a receive may then free room
    /// for some waiting senders' messages and not others', and wakes them all.
    fn byte_bounded(&self) -> bool {
        let layout = self.seg().layout();
        self.bytes && layout.max_bytes < layout.capacity * layout.max_message()
    }

    /// Wakes senders after room was freed: one, or every waiting one if the mailbox is
    /// [`Link::byte_bounded`] (the bytes freed may fit one waiter's message and not
    /// another's: a single wake-up could go to the one it does not fit).
    fn wake_senders(&self) {
        let signal = self.seg().signal(Side::Send);
        if self.byte_bounded() {
            signal.notify_waiting();
        } else {
            signal.notify_one();
        }
    }

    /// The check a slot's contents must pass for the rebuild to keep it.
    fn valid(&self) -> fn(&ShmSlots, usize) -> bool {
        fn any(_: &ShmSlots, _: usize) -> bool {
            true
        }
        if self.bytes { byte_len_ok } else { any }
    }

    /// Runs `op` under the lock: the index is rebuilt first if the lock was taken over
    /// from a dead holder or was never built, and once more, followed by a second run of
    /// `op`, if `op` finds it inconsistent. `None` when the lock could not be had in
    /// time (or the index stays inconsistent: a peer is writing garbage).
    fn locked<R>(
        &self,
        wait: LockWait,
        mut op: impl FnMut(&Locked<'_>) -> Result<Done<R>, Corrupt>,
    ) -> Option<Done<R>> {
        let deadline = match wait {
            LockWait::Try => None,
            LockWait::Until(d) => d,
        };
        let index = self.index();
        let l = match wait {
            LockWait::Try => index
                .try_lock(self.me)
                .or_else(|| index.lock(self.me, Some(Instant::now() + TRY_LOCK_WAIT)))?,
            LockWait::Until(_) => index.lock(self.me, deadline)?,
        };
        if l.stolen || !l.is_built() {
            l.rebuild(self.valid());
        }
        match op(&l) {
            Ok(done) => Some(done),
            Err(Corrupt) => {
                l.rebuild(self.valid());
                op(&l).ok()
            }
        }
    }
}

impl Core {
    /// Opens or creates the mailbox `name` per `opts` (see `Endpoint::open`), attaching
    /// with the sender role; a family takes the receiver role too at its first receive
    /// ([`Core::mark_receiver`]): requests need a receiver attached.
    pub(crate) fn open(
        name: &str,
        opts: &Options,
        kind: Kind,
        fingerprint: Fingerprint,
    ) -> io::Result<Core> {
        let ep = Endpoint::open(name, opts, Side::Send, kind, fingerprint)?;
        let slot = ep.peer().index();
        let (generation, ..) = unpack(ep.seg().peer_state(slot).load(Ordering::Acquire));
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let name = Name::from(Arc::<str>::from(name));
        Ok(Core {
            link: Link {
                me: owner_word(slot, generation),
                bytes: kind.is_bytes(),
                ep,
            },
            address: Address::in_process(name, pid, Address::next_id()),
            receiving: Arc::new(AtomicBool::new(false)),
            retired: Arc::new(AtomicU32::new(NIL)),
        })
    }

    /// Records in the peer table that this family receives (once): its peer slot's state
    /// word gains the receiver role, which [`Core::responders`] counts. Only the owner
    /// adds roles; a CAS, retried a bounded number of times against maintenance.
    pub(crate) fn mark_receiver(&self) {
        if self.receiving.load(Ordering::Relaxed) {
            return;
        }
        let word = self.seg().peer_state(self.link.ep.peer().index());
        for _ in 0..8 {
            let w = word.load(Ordering::Acquire);
            let (generation, state, roles) = unpack(w);
            if state != LIVE || roles & Side::Recv.role() != 0 {
                break;
            }
            let new = pack(generation, state, roles | Side::Recv.role());
            if word
                .compare_exchange(w, new, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
        self.receiving.store(true, Ordering::Relaxed);
    }

    /// Whether a family that receives is attached (in any process): stops at the first
    /// one (every request asks).
    fn responders(&self) -> bool {
        let seg: &Segment = self.seg();
        (0..MAX_PEERS).any(|n| crate::shm::table::is_live(seg, n, Side::Recv.role()))
    }

    pub(crate) fn seg(&self) -> &Arc<Segment> {
        self.link.seg()
    }

    fn index(&self) -> Index<'_> {
        self.link.index()
    }

    pub(crate) fn name(&self) -> &str {
        self.link.ep.name()
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    pub(crate) fn capacity(&self) -> usize {
        self.link.ep.capacity()
    }

    pub(crate) fn max_message(&self) -> usize {
        self.link.ep.max_message()
    }

    pub(crate) fn len(&self) -> usize {
        self.index().len()
    }

    /// The bound on the bytes queued (byte mailboxes).
    pub(crate) fn max_bytes(&self) -> usize {
        self.seg().layout().max_bytes
    }

    /// Whether the bytes queued are under the bound (a hint, without the lock; always
    /// for typed mailboxes).
    fn bytes_left(&self) -> bool {
        let index = self.index();
        index.bytes() < index.max_bytes()
    }

    /// A cheap look (no lock) at whether a send may go through now: a slot is free (and,
    /// for byte mailboxes, bytes are left). A hint that tells an async wait's spin when
    /// to try again (`hub::Wait::poll`); the attempt itself decides. Receivers' hint is
    /// [`Core::news_since`].
    fn may_send(&self) -> bool {
        self.len() < self.capacity() && self.bytes_left()
    }

    /// Whether a receive that failed after reading the sequence number `seen` should try
    /// again: a message was sent since, or the mailbox was closed. The failed attempt
    /// saw every message sent before it began (sends take a sequence number under the
    /// lock that the attempt took after reading `seen`), so only a later send can give
    /// another attempt something to take. The count would not do: other selections'
    /// messages keep it above zero, and a receive by tag would take the lock at every
    /// poll, in the way of the very send it waits for.
    fn news_since(index: &Index<'_>, seen: u64) -> bool {
        index.next_seq() != seen || index.is_closed()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.index().is_closed()
    }

    /// Closes the mailbox: marks it closed in the segment, wakes every waiter in every
    /// process, and removes the name if it still refers to this segment.
    pub(crate) fn close(&self) -> io::Result<()> {
        self.index().close();
        self.seg().signal(Side::Send).notify_all();
        self.seg().signal(Side::Recv).notify_all();
        if same_object(self.seg()) {
            match crate::shm::segment::unlink(self.name()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// One send attempt: `Full` also when the lock is busy past `wait`.
    pub(crate) fn try_send_with(
        &self,
        tag: u64,
        wait: LockWait,
        write: &mut dyn FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        self.try_push(tag, 0, wait, write).map(|_| ())
    }

    /// One send attempt of a message (`reply_to` 0) or a request (`reply_to`: this
    /// family's [`owner_word`]).
    fn try_push(
        &self,
        tag: u64,
        reply_to: u32,
        wait: LockWait,
        write: &mut dyn FnMut(&ShmSlots, usize),
    ) -> Result<Ticket, SendFail> {
        let meta = Meta {
            tag,
            from: (self.address.pid().unwrap_or(0), self.address.id()),
            reply_to,
        };
        let retired = self.retired.swap(NIL, Ordering::Relaxed);
        let done = self.link.locked(wait, |l| {
            if retired != NIL {
                l.release_done(retired)?;
            }
            if l.is_closed() {
                return Ok(Done::Closed);
            }
            Ok(match l.push(meta, write)? {
                Some((slot, seq)) => Done::Ok(Ticket { slot, seq }),
                None => Done::No,
            })
        });
        match done {
            Some(Done::Ok(ticket)) => {
                // Receivers wait for different selections: wake them all (see the
                // module docs, "Waiting").
                self.seg().signal(Side::Recv).notify_waiting();
                Ok(ticket)
            }
            Some(Done::Closed) => Err(SendFail::Closed),
            Some(Done::No) | None => Err(SendFail::Full),
        }
    }

    /// A blocking send until `deadline`.
    pub(crate) fn send_with(
        &self,
        tag: u64,
        deadline: Option<Instant>,
        write: impl FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        self.push_with(tag, 0, deadline, write).map(|_| ())
    }

    /// A blocking send of a message or request (see [`Core::try_push`]).
    fn push_with(
        &self,
        tag: u64,
        reply_to: u32,
        deadline: Option<Instant>,
        mut write: impl FnMut(&ShmSlots, usize),
    ) -> Result<Ticket, SendFail> {
        wait::block(
            self.seg().signal(Side::Send),
            false,
            deadline,
            || {
                self.seg().maintain_if_due();
            },
            || self.may_send() || self.is_closed(),
            || match self.try_push(tag, reply_to, LockWait::Until(deadline), &mut write) {
                Err(SendFail::Full) => None,
                done => Some(done),
            },
        )
        .unwrap_or(Err(SendFail::Timeout))
    }

    /// One receive attempt: `Empty` also when the lock is busy past `wait`. A request
    /// comes with its ticket (its slot stays held for the reply).
    pub(crate) fn try_recv_with<R>(
        &self,
        want: Want,
        wait: LockWait,
        read: &mut dyn FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<(Meta, R, Option<Ticket>), TryRecvError> {
        self.mark_receiver();
        let index = self.index();
        if index.empty_unlocked() {
            return Err(if index.is_closed() {
                TryRecvError::Disconnected
            } else {
                TryRecvError::Empty
            });
        }
        let slots = self.seg().ring().storage();
        let done = self.link.locked(wait, |l| {
            let Some(i) = l.find(want)? else {
                return Ok(if l.is_closed() {
                    Done::Closed
                } else {
                    Done::No
                });
            };
            let meta = l.meta(i);
            // A length out of range (byte mailboxes): the rebuild drops the message.
            let body = read(slots, i as usize).ok_or(Corrupt)?;
            let ticket = l.take(i, self.link.me)?.map(|seq| Ticket { slot: i, seq });
            Ok(Done::Ok((meta, body, ticket)))
        });
        match done {
            Some(Done::Ok(got)) => {
                self.link.wake_senders();
                Ok(got)
            }
            Some(Done::Closed) => Err(TryRecvError::Disconnected),
            Some(Done::No) | None => Err(TryRecvError::Empty),
        }
    }

    /// A blocking receive until `deadline`.
    pub(crate) fn recv_with<R>(
        &self,
        want: Want,
        deadline: Option<Instant>,
        mut read: impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<(Meta, R, Option<Ticket>), RecvFail> {
        self.mark_receiver();
        let index = self.index();
        let seen = Cell::new(index.next_seq());
        wait::block(
            self.seg().signal(Side::Recv),
            false,
            deadline,
            || {
                self.seg().maintain_if_due();
            },
            || Core::news_since(&index, seen.get()),
            || {
                seen.set(index.next_seq());
                match self.try_recv_with(want, LockWait::Until(deadline), &mut read) {
                    Ok(got) => Some(Ok(got)),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => Some(Err(RecvFail::Closed)),
                }
            },
        )
        .unwrap_or(Err(RecvFail::Timeout))
    }

    /// The envelope of a received message; a request's carries a [`Reply`] of `T`
    /// that `write` writes into its slot.
    ///
    /// [`Reply`]: crate::mailbox::Reply
    pub(crate) fn envelope<T: Send + 'static>(
        &self,
        (meta, body, ticket): (Meta, T, Option<Ticket>),
        write: fn(&ShmSlots, usize, &T) -> bool,
    ) -> crate::mailbox::Envelope<T> {
        let from = self.address.sibling(meta.from.0, meta.from.1);
        let reply = ticket.map(|ticket| {
            Box::new(Replier {
                link: self.link.clone(),
                ticket,
                write,
                done: false,
            }) as Box<dyn ErasedRemote>
        });
        crate::mailbox::Envelope::from_parts(meta.tag, body, from, reply)
    }

    /// Fails with `NoResponders` unless a family that receives is attached (after
    /// maintenance, if the first look finds none).
    fn check_responders(&self) -> Result<(), RequestFail> {
        if !self.responders() {
            self.seg().maintain_if_due();
            if !self.responders() {
                return Err(RequestFail::NoResponders);
            }
        }
        Ok(())
    }

    /// Sends a request and waits for its reply (see the module docs, "Requests").
    pub(crate) fn request_with<R>(
        &self,
        tag: u64,
        deadline: Option<Instant>,
        write: impl FnMut(&ShmSlots, usize),
        mut read: impl FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, RequestFail> {
        self.check_responders()?;
        let ticket = self
            .push_with(tag, self.link.me, deadline, write)
            .map_err(|e| match e {
                SendFail::Closed => RequestFail::Closed,
                SendFail::Full | SendFail::Timeout => RequestFail::Full,
            })?;
        let Some(state) = self.index().slot_word(ticket.slot) else {
            return Err(RequestFail::Unanswered);
        };
        // Spin briefly (a reply from a busy peer comes within microseconds), then sleep
        // on the state word with SLEEPING set, so that the replier knows to wake us.
        let mut spin = QuickBackoff::new(QUICK_POLLS);
        loop {
            let cur = state.load(Ordering::SeqCst);
            if cur & !SLEEPING != PENDING
                && let Some(done) = self.reply_outcome(ticket, false, &mut read)
            {
                return done;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                match settle(state, GONE) {
                    Ok(_) => return Err(RequestFail::Timeout),
                    // Still pending: a peer keeps changing the word; give up.
                    Err(now) if now & !SLEEPING == PENDING => {
                        return Err(RequestFail::Timeout);
                    }
                    // Settled meanwhile: take the outcome.
                    Err(_) => continue,
                }
            }
            if !spin.is_completed() {
                spin.snooze();
                continue;
            }
            if !mark_sleeping(state, cur) {
                continue;
            }
            let slice = deadline.map_or(SLICE, |d| {
                d.saturating_duration_since(Instant::now()).min(SLICE)
            });
            if futex::wait(state, PENDING | SLEEPING, slice) == Woke::TimedOut {
                // A whole slice without news: is anyone left to answer?
                if let Some(done) = self.reply_outcome(ticket, true, &mut read) {
                    return done;
                }
            }
        }
    }

    /// One look at request `ticket`'s reply state: the outcome once the exchange is
    /// over (the slot released), `None` while the reply is pending. With `probe`, a
    /// pending request is checked for an answerer: a taken request whose replier died
    /// is abandoned (and released here); a queued one that no receiver is attached to
    /// take any more is given up (GONE: its eventual taker releases it).
    fn reply_outcome<R>(
        &self,
        ticket: Ticket,
        probe: bool,
        read: &mut dyn FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Option<Result<R, RequestFail>> {
        let index = self.index();
        let Some(state) = index.slot_word(ticket.slot) else {
            return Some(Err(RequestFail::Unanswered));
        };
        match state.load(Ordering::SeqCst) & !SLEEPING {
            REPLIED | ABANDONED => return Some(self.end_request(ticket, read)),
            PENDING => {}
            // Garbage: the exchange is lost.
            _ => return Some(Err(RequestFail::Unanswered)),
        }
        if !probe {
            return None;
        }
        if index.slot_is_held(ticket.slot) {
            if index.holder_gone(index.slot_taker(ticket.slot)) && settle(state, ABANDONED).is_ok()
            {
                return Some(self.end_request(ticket, read));
            }
        } else {
            self.seg().maintain_if_due();
            if !self.responders() && settle(state, GONE).is_ok() {
                return Some(Err(RequestFail::Unanswered));
            }
        }
        None
    }

    /// Ends request `ticket` after a reply or an abandonment, without the lock: reads
    /// the reply, if any, then retires the slot ([`retire`]: DONE), which this family's
    /// next send (or any reclaim) releases. Until it is retired, the slot is this
    /// requester's alone: nobody else frees a held slot whose requester lives and whose
    /// outcome is in (see the module docs, "Requests").
    fn end_request<R>(
        &self,
        ticket: Ticket,
        read: &mut dyn FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<R, RequestFail> {
        let index = self.index();
        let Some(state) = index.slot_word(ticket.slot) else {
            return Err(RequestFail::Unanswered);
        };
        // Sync point: this SeqCst load of REPLIED acquires the replier's payload writes
        // (its settling CAS released them).
        let seen = state.load(Ordering::SeqCst);
        if !index.slot_holds(ticket.slot, ticket.seq) {
            // Not ours any more: only a peer writing garbage gets here.
            return Err(RequestFail::Unanswered);
        }
        let got = match seen {
            REPLIED => read(self.seg().ring().storage(), ticket.slot as usize),
            _ => None,
        };
        if retire(state, seen) {
            self.retired.store(ticket.slot, Ordering::Relaxed);
            // A slot can be released: a sender may wait for room.
            self.link.wake_senders();
        }
        got.ok_or(RequestFail::Unanswered)
    }

    /// Gives request `ticket` up (its future was dropped): GONE, so that its replier (or
    /// its eventual taker) releases the slot; if it was answered or abandoned already,
    /// releases it here.
    fn drop_request(&self, ticket: Ticket) {
        let Some(state) = self.index().slot_word(ticket.slot) else {
            return;
        };
        if settle(state, GONE).is_err() {
            let _ = self.end_request::<()>(ticket, &mut |_, _| None);
        }
    }

    /// An async request: sends (waiting for room on the senders' words), then waits for
    /// the reply on the receivers' words, which a replier bumps for async requesters.
    /// `refused`: fail at the first poll without sending (the error closure says why).
    pub(crate) fn request_future<'a, R: Send + 'a, E>(
        &'a self,
        refused: bool,
        tag: u64,
        write: WriteBox<'a>,
        read: ReadBox<'a, R>,
        error: ErrorBox<'a, E>,
    ) -> RequestFut<'a, R, E> {
        RequestFut {
            core: self,
            tag,
            write,
            read,
            error,
            ticket: None,
            wait: AsyncWait::new(),
            probed: None,
            done: false,
            refused,
        }
    }

    /// `select` in terms of the index.
    pub(crate) fn want(select: &Select) -> Want {
        match select {
            Select::Any => Want::Any,
            Select::Tag(t) => Want::Tag(*t),
            Select::TagAtMost(n) => Want::TagAtMost(*n),
            Select::TagExcept(t) => Want::TagExcept(*t),
            Select::From(a) => Want::From((a.pid().unwrap_or(0), a.id())),
        }
    }

    /// A future over `attempt`, a non-blocking attempt that returns `Some` when done,
    /// waiting on `side`'s words in between.
    pub(crate) fn future<'a, R>(
        &'a self,
        side: Side,
        attempt: impl FnMut() -> Option<R> + Send + 'a,
    ) -> MailboxFut<'a, R> {
        MailboxFut {
            core: self,
            side,
            wait: AsyncWait::new(),
            attempt: Box::new(attempt),
            seen: Cell::new(self.index().next_seq()),
            done: false,
        }
    }
}

/// The replier's end of a request in the segment (a [`crate::mailbox::Reply`]'s
/// `Remote`): writes the reply into the request's slot, or gives up, without the lock;
/// the requester sleeps on the slot's reply state word.
///
/// Dropped before it is done (unanswered), it gives the request up.
struct Replier<T> {
    link: Link,
    ticket: Ticket,
    /// Writes a reply into a slot; `false` if it does not fit (byte mailboxes).
    write: fn(&ShmSlots, usize, &T) -> bool,
    /// This end has finished (replied, or given up).
    done: bool,
}

impl<T> Replier<T> {
    /// Ends this side of the exchange, without the lock (the held slot is the two ends'
    /// alone, see the module docs, "Requests"): with `value`, writes it and moves the
    /// state from PENDING to REPLIED; without, to ABANDONED. If the requester left
    /// (GONE), releases the slot instead, under the lock. Returns whether the requester
    /// has the outcome.
    fn finish(&mut self, value: Option<&T>) -> bool {
        self.done = true;
        let Ticket { slot, seq } = self.ticket;
        let index = self.link.index();
        let Some(state) = index.slot_word(slot) else {
            return false;
        };
        if !index.slot_holds(slot, seq) {
            return false;
        }
        // The reply is written only while the requester waits; one that leaves while it
        // is written never reads it (its GONE makes the settle below fail).
        let pending = state.load(Ordering::SeqCst) & !SLEEPING == PENDING;
        let outcome = match value {
            Some(v)
                if pending && (self.write)(self.link.seg().ring().storage(), slot as usize, v) =>
            {
                REPLIED
            }
            _ => ABANDONED,
        };
        // Sync point: the SeqCst CAS releases the payload writes to the requester.
        match settle(state, outcome) {
            Ok(sleeper) => {
                if sleeper {
                    futex::wake(state, u32::MAX);
                }
                // Async requesters wait on the receivers' words.
                crate::shm::hub::notify(self.link.seg().signal(Side::Recv));
                outcome == REPLIED
            }
            Err(_) => {
                // The requester left: the exchange ends here.
                let _ = self.link.locked(LockWait::Until(None), |l| {
                    l.release(slot, seq)?;
                    Ok(Done::Ok(()))
                });
                // The slot was freed: a sender may wait for room.
                self.link.wake_senders();
                false
            }
        }
    }
}

impl<T: Send> Remote<T> for Replier<T> {
    fn reply(&mut self, value: T) -> Result<(), T> {
        if self.finish(Some(&value)) {
            Ok(())
        } else {
            Err(value)
        }
    }

    fn is_abandoned(&self) -> bool {
        let index = self.link.index();
        index
            .slot_word(self.ticket.slot)
            .is_none_or(|w| w.load(Ordering::SeqCst) == GONE)
    }
}

impl<T: Send + 'static> ErasedRemote for Replier<T> {
    fn typed(self: Box<Self>, out: &mut dyn Any) -> Result<(), Box<dyn ErasedRemote>> {
        match out.downcast_mut::<Option<Box<dyn Remote<T>>>>() {
            Some(out) => {
                *out = Some(self);
                Ok(())
            }
            None => Err(self),
        }
    }
}

impl<T> Drop for Replier<T> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None);
        }
    }
}

/// A future of a request made with [`Mailbox::request_async`](super::Mailbox::request_async)
/// (or `request_tagged_async`, or [`ByteMailbox`](super::ByteMailbox)'s): its output is
/// `Ok` with the reply, or `Err` with why there is none (`E`:
/// [`crate::mailbox::RequestError`] for [`Mailbox`](super::Mailbox), [`io::Error`] for
/// [`ByteMailbox`](super::ByteMailbox), as their blocking requests report).
///
/// Dropped before it completes: if the request was not sent yet, nothing was sent; if it
/// was, the request stays sent and its reply, when it comes, is handed back to the
/// replier (as after a timeout).
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-mb-request-fut-{}", std::process::id());
/// let mb = shm::Mailbox::<u32>::create(&name, 4)?;
/// let server = mb.clone();
/// let _ = server.try_recv();
/// let t = std::thread::spawn(move || {
///     let mut env = server.recv().unwrap();
///     env.take_reply::<u32>().unwrap().reply(env.body() * 3).unwrap();
/// });
/// assert_eq!(futures::executor::block_on(mb.request_async(5)), Ok(15));
/// t.join().unwrap();
/// mb.close()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct RequestFut<'a, R, E> {
    core: &'a Core,
    tag: u64,
    write: WriteBox<'a>,
    read: ReadBox<'a, R>,
    error: ErrorBox<'a, E>,
    /// Set once the request is sent.
    ticket: Option<Ticket>,
    wait: AsyncWait,
    /// When the answerer was last probed (at most once per [`SLICE`]).
    probed: Option<Instant>,
    done: bool,
    /// Fails at the first poll, sending nothing.
    refused: bool,
}

impl<R, E> Unpin for RequestFut<'_, R, E> {}

impl<R, E> core::future::Future for RequestFut<'_, R, E> {
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = this.poll_inner(cx);
        res.map(|r| r.map_err(|e| (this.error)(e)))
    }
}

impl<R, E> RequestFut<'_, R, E> {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<R, RequestFail>> {
        let this = self;
        if this.refused {
            this.refused = false;
            this.done = true;
            return Poll::Ready(Err(RequestFail::Unanswered));
        }
        assert!(!this.done, "RequestFut polled after completion");
        let core = this.core;
        let seg = core.seg();
        let ticket = match this.ticket {
            Some(t) => t,
            None => {
                if let Err(e) = core.check_responders() {
                    this.done = true;
                    return Poll::Ready(Err(e));
                }
                let (tag, me, write) = (this.tag, core.link.me, &mut this.write);
                let may_send = || core.may_send();
                let sent = this.wait.poll(seg, Side::Send, cx, may_send, || {
                    match core.try_push(tag, me, LockWait::Try, &mut **write) {
                        Err(SendFail::Full) => None,
                        done => Some(done),
                    }
                });
                match sent {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => {
                        this.done = true;
                        return Poll::Ready(Err(RequestFail::Closed));
                    }
                    Poll::Ready(Ok(t)) => {
                        // From the senders' words to the receivers'.
                        this.wait.cancel(seg);
                        this.ticket = Some(t);
                        t
                    }
                }
            }
        };
        let (read, probed) = (&mut this.read, &mut this.probed);
        // The reply's state is one load away: the attempt is as cheap as a look.
        let res = this.wait.poll(
            seg,
            Side::Recv,
            cx,
            || true,
            || {
                let probe = probed.is_none_or(|at| at.elapsed() >= SLICE);
                if probe {
                    *probed = Some(Instant::now());
                }
                core.reply_outcome(ticket, probe, &mut **read)
            },
        );
        if res.is_ready() {
            this.done = true;
        }
        res
    }
}

impl<R, E> futures_core::FusedFuture for RequestFut<'_, R, E> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<R, E> Drop for RequestFut<'_, R, E> {
    fn drop(&mut self) {
        self.wait.cancel(self.core.seg());
        if let (Some(ticket), false) = (self.ticket, self.done) {
            self.core.drop_request(ticket);
        }
    }
}

impl<R, E> core::fmt::Debug for RequestFut<'_, R, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RequestFut")
            .field("mailbox", &self.core.name())
            .field("sent", &self.ticket.is_some())
            .field("done", &self.done)
            .finish()
    }
}

/// A future of a shared-memory mailbox operation: a send
/// ([`Mailbox::send_async`](super::Mailbox::send_async),
/// [`ByteMailbox::send_async`](super::ByteMailbox::send_async)) or a receive
/// (`recv_async`, `recv_select_async`). Cancel-safe: a receive takes a message only in
/// the poll that returns it, a send writes its message only in the poll that returns
/// `Ready(Ok(()))`; dropped before, it did nothing.
///
/// It never blocks the executor for longer than the mailbox's lock is held by a live
/// peer (one index operation and one message copy), and never spawns a thread per
/// future: it waits through the process's async helper thread (see [`crate::shm`]).
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-mailbox-fut-{}", std::process::id());
/// let mb = shm::Mailbox::<u32>::create(&name, 4)?;
/// futures::executor::block_on(async {
///     mb.send_tagged_async(3, 7).await.unwrap();
///     let env = mb.recv_async().await.unwrap();
///     assert_eq!((env.tag(), *env.body()), (3, 7));
/// });
/// mb.close()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct MailboxFut<'a, R> {
    core: &'a Core,
    side: Side,
    wait: AsyncWait,
    attempt: Box<dyn FnMut() -> Option<R> + Send + 'a>,
    /// The sequence number read before the last attempt (receives: [`Core::news_since`]).
    seen: Cell<u64>,
    done: bool,
}

impl<R> Unpin for MailboxFut<'_, R> {}

impl<R> core::future::Future for MailboxFut<'_, R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.get_mut();
        assert!(!this.done, "MailboxFut polled after completion");
        let (core, side, seen, attempt) = (this.core, this.side, &this.seen, &mut this.attempt);
        let res = this.wait.poll(
            core.seg(),
            side,
            cx,
            || match side {
                Side::Recv => Core::news_since(&core.index(), seen.get()),
                Side::Send => core.may_send(),
            },
            || {
                seen.set(core.index().next_seq());
                attempt()
            },
        );
        if res.is_ready() {
            this.done = true;
        }
        res
    }
}

impl<R> futures_core::FusedFuture for MailboxFut<'_, R> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<R> Drop for MailboxFut<'_, R> {
    fn drop(&mut self) {
        self.wait.cancel(self.core.seg());
    }
}

impl<R> core::fmt::Debug for MailboxFut<'_, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MailboxFut")
            .field("mailbox", &self.core.name())
            .field("done", &self.done)
            .finish()
    }
}
