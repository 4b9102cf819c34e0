//! The untyped core of [`super::Mailbox`] and [`super::ByteMailbox`]: open, the
//! try / blocking / async operations written once over payload `write` and `read`
//! callbacks, and close.

use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::index::{Corrupt, Index, Locked, Meta, Want, byte_len_ok, owner_word};
use crate::error::TryRecvError;
use crate::mailbox::{Address, Select};
use crate::shm::endpoint::Endpoint;
use crate::shm::header::{Fingerprint, Kind};
use crate::shm::hub::AsyncWait;
use crate::shm::options::Options;
use crate::shm::peers::same_object;
use crate::shm::ring::ShmSlots;
use crate::shm::segment::{Segment, Side};
use crate::shm::table::unpack;
use crate::shm::wait;
use crate::sync::Ordering;

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

/// One attached handle family of a mailbox; clones share the peer slot and address.
#[derive(Clone)]
pub(crate) struct Core {
    ep: Endpoint,
    address: Address,
    /// The lock word naming this family ([`owner_word`]).
    me: u32,
    bytes: bool,
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

impl Core {
    /// Opens or creates the mailbox `name` per `opts` (see `Endpoint::open`), attaching
    /// with the receiver role (every handle may receive).
    pub(crate) fn open(
        name: &str,
        opts: &Options,
        kind: Kind,
        fingerprint: Fingerprint,
    ) -> io::Result<Core> {
        let ep = Endpoint::open(name, opts, Side::Recv, kind, fingerprint)?;
        let slot = ep.peer().index();
        let (generation, ..) = unpack(ep.seg().peer_state(slot).load(Ordering::Acquire));
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        Ok(Core {
            me: owner_word(slot, generation),
            address: Address::in_process(Arc::from(name), pid, Address::next_id()),
            bytes: kind.is_bytes(),
            ep,
        })
    }

    pub(crate) fn seg(&self) -> &Arc<Segment> {
        self.ep.seg()
    }

    fn index(&self) -> Index<'_> {
        Index::new(self.seg())
    }

    pub(crate) fn name(&self) -> &str {
        self.ep.name()
    }

    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    pub(crate) fn capacity(&self) -> usize {
        self.ep.capacity()
    }

    pub(crate) fn max_message(&self) -> usize {
        self.ep.max_message()
    }

    pub(crate) fn len(&self) -> usize {
        self.index().len()
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

    /// One send attempt: `Full` also when the lock is busy past `wait`.
    pub(crate) fn try_send_with(
        &self,
        tag: u64,
        wait: LockWait,
        write: &mut dyn FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        let meta = Meta {
            tag,
            from: (self.address.pid().unwrap_or(0), self.address.id()),
        };
        let done = self.locked(wait, |l| {
            if l.is_closed() {
                return Ok(Done::Closed);
            }
            Ok(if l.push(meta, write)? {
                Done::Ok(())
            } else {
                Done::No
            })
        });
        match done {
            Some(Done::Ok(())) => {
                // Receivers wait for different selections: wake them all (see the
                // module docs, "Waiting").
                self.seg().signal(Side::Recv).notify_every();
                Ok(())
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
        mut write: impl FnMut(&ShmSlots, usize),
    ) -> Result<(), SendFail> {
        let cap = self.capacity();
        wait::block(
            self.seg().signal(Side::Send),
            deadline,
            || {
                self.seg().maintain_if_due();
            },
            || self.len() < cap || self.is_closed(),
            || match self.try_send_with(tag, LockWait::Until(deadline), &mut write) {
                Err(SendFail::Full) => None,
                done => Some(done),
            },
        )
        .unwrap_or(Err(SendFail::Timeout))
    }

    /// One receive attempt: `Empty` also when the lock is busy past `wait`.
    pub(crate) fn try_recv_with<R>(
        &self,
        want: Want,
        wait: LockWait,
        read: &mut dyn FnMut(&ShmSlots, usize) -> Option<R>,
    ) -> Result<(Meta, R), TryRecvError> {
        let slots = self.seg().ring().storage();
        let done = self.locked(wait, |l| {
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
            l.take(i)?;
            Ok(Done::Ok((meta, body)))
        });
        match done {
            Some(Done::Ok(got)) => {
                self.seg().signal(Side::Send).notify_one();
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
    ) -> Result<(Meta, R), RecvFail> {
        wait::block(
            self.seg().signal(Side::Recv),
            deadline,
            || {
                self.seg().maintain_if_due();
            },
            || self.len() > 0 || self.is_closed(),
            || match self.try_recv_with(want, LockWait::Until(deadline), &mut read) {
                Ok(got) => Some(Ok(got)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err(RecvFail::Closed)),
            },
        )
        .unwrap_or(Err(RecvFail::Timeout))
    }

    /// The envelope of a received message.
    pub(crate) fn envelope<T>(&self, meta: Meta, body: T) -> crate::mailbox::Envelope<T> {
        let from = Address::in_process(Arc::from(self.name()), meta.from.0, meta.from.1);
        crate::mailbox::Envelope::plain(meta.tag, body, from)
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
            done: false,
        }
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
    done: bool,
}

impl<R> Unpin for MailboxFut<'_, R> {}

impl<R> core::future::Future for MailboxFut<'_, R> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.get_mut();
        assert!(!this.done, "MailboxFut polled after completion");
        let res = this
            .wait
            .poll(this.core.seg(), this.side, cx, &mut this.attempt);
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
