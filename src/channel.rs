//! The public channel handles: [`Sender`], [`Receiver`] and [`WeakSender`].

use core::fmt;
use std::time::{Duration, Instant};

use crate::chan::{Flavor, array, list, zero};
use crate::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::future::{RecvFut, RecvStream, SendFut, SendSink};
use crate::iter::{Drain, Iter, TryIter};
use crate::sync::{Arc, AtomicUsize, Ordering};

/// What every handle of one channel points at: the flavor and the handle counts.
pub(crate) struct Shared<T> {
    pub(crate) flavor: Flavor<T>,
    senders: AtomicUsize,
    receivers: AtomicUsize,
}

/// Counts above this abort the process rather than overflow (as `Arc` does).
const MAX_COUNT: usize = isize::MAX as usize;

fn new_channel<T>(flavor: Flavor<T>) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        flavor,
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Creates a channel that holds at most `cap` messages.
///
/// `cap == 0` makes a rendezvous channel (see [`rendezvous`]). Otherwise the channel is
/// a lock-free ring of `cap` slots allocated once here: no operation allocates per
/// message, blocking waits included. Each slot takes at least one 64-byte cache line (so
/// that a sender and a receiver working on neighbouring slots do not contend for one
/// line): each slot is the message plus an 8-byte stamp, rounded up to whole lines.
///
/// ```
/// let (tx, rx) = conduit::bounded(2);
/// tx.send(1).unwrap();
/// tx.send(2).unwrap();
/// assert!(tx.try_send(3).is_err()); // full
/// assert_eq!(rx.recv(), Ok(1));
/// ```
pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    if cap == 0 {
        new_channel(Flavor::Zero(zero::Channel::new()))
    } else {
        new_channel(Flavor::Array(array::Channel::with_capacity(cap)))
    }
}

/// Creates a rendezvous channel: each `send` waits until a receiver takes the message.
///
/// The same as [`bounded(0)`](bounded). `len()` is always 0, `capacity()` is `Some(0)`,
/// and `is_empty()` and `is_full()` are always true.
///
/// The hand-off completes inside the receiver's own call or poll, so a receive future
/// dropped before it returned `Ready` has taken nothing, and its sender keeps waiting
/// for another receiver. A send future dropped after a receiver took its message
/// counts as sent. Consequently `try_send` succeeds only when a receiver *thread* is
/// blocked in `recv` (or `recv_timeout`) at that moment: an async receiver that is
/// merely pending cannot be handed a message it might drop, so it is served by `send`
/// or `send_async`, which wait for it to take the message.
///
/// ```
/// let (tx, rx) = conduit::rendezvous();
/// let t = std::thread::spawn(move || tx.send("hello").unwrap());
/// assert_eq!(rx.recv(), Ok("hello"));
/// t.join().unwrap();
/// ```
pub fn rendezvous<T>() -> (Sender<T>, Receiver<T>) {
    bounded(0)
}

/// Creates a channel of unlimited capacity: `send` never blocks.
///
/// Messages are stored in blocks of 31, so allocation happens per block, not per
/// message.
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// for i in 0..100 {
///     tx.send(i).unwrap();
/// }
/// assert_eq!(rx.len(), 100);
/// ```
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    new_channel(Flavor::List(list::Channel::new()))
}

/// The sending half of a channel. Clone it for more producers.
///
/// When the last `Sender` is dropped, receivers drain what is queued and then see the
/// channel disconnected.
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// let tx2 = tx.clone();
/// std::thread::spawn(move || tx2.send("from a thread").unwrap());
/// tx.send("from main").unwrap();
/// drop(tx);
/// assert_eq!(rx.iter().count(), 2);
/// ```
pub struct Sender<T> {
    pub(crate) shared: Arc<Shared<T>>,
}

/// The receiving half of a channel. Clone it for more consumers; each message goes to
/// exactly one of them.
///
/// When the last `Receiver` is dropped, the messages still queued are dropped, and
/// senders see the channel disconnected.
///
/// ```
/// let (tx, rx) = conduit::bounded(8);
/// let rx2 = rx.clone();
/// tx.send(1).unwrap();
/// tx.send(2).unwrap();
/// // Each message goes to exactly one receiver.
/// assert_eq!(rx.recv().unwrap() + rx2.recv().unwrap(), 3);
/// ```
pub struct Receiver<T> {
    pub(crate) shared: Arc<Shared<T>>,
}

/// A sender that does not keep the channel open. [`upgrade`](WeakSender::upgrade) it to
/// send.
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// let weak: conduit::WeakSender<i32> = tx.downgrade();
/// drop(tx);
/// assert!(rx.is_disconnected()); // the weak sender did not keep it open
/// assert!(weak.upgrade().is_none());
/// ```
pub struct WeakSender<T> {
    shared: Arc<Shared<T>>,
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    // A timeout too large to represent waits forever.
    Instant::now().checked_add(timeout)
}

/// Methods shared by both ends, documented once per end through this macro.
macro_rules! common_methods {
    ($end:literal, $make:literal) => {
        /// The number of messages queued.
        ///
        /// ```
        #[doc = $make]
        /// tx.send(1).unwrap();
        #[doc = concat!("assert_eq!(", $end, ".len(), 1);")]
        /// # drop(rx);
        /// ```
        pub fn len(&self) -> usize {
            self.shared.flavor.len()
        }

        /// The channel's capacity: `None` if unbounded, `Some(0)` for rendezvous.
        ///
        /// ```
        #[doc = $make]
        #[doc = concat!("assert_eq!(", $end, ".capacity(), Some(4));")]
        /// # drop((tx, rx));
        /// ```
        pub fn capacity(&self) -> Option<usize> {
            self.shared.flavor.capacity()
        }

        /// Whether no message is queued (always true for rendezvous).
        ///
        /// ```
        #[doc = $make]
        #[doc = concat!("assert!(", $end, ".is_empty());")]
        /// # drop((tx, rx));
        /// ```
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether the channel is at capacity (always true for rendezvous, never for
        /// unbounded).
        ///
        /// ```
        #[doc = $make]
        /// for i in 0..4 { tx.send(i).unwrap(); }
        #[doc = concat!("assert!(", $end, ".is_full());")]
        /// # drop(rx);
        /// ```
        pub fn is_full(&self) -> bool {
            self.capacity().is_some_and(|c| self.len() >= c)
        }

        /// Whether every sender or every receiver is gone.
        ///
        /// ```
        #[doc = $make]
        #[doc = concat!("assert!(!", $end, ".is_disconnected());")]
        /// # drop((tx, rx));
        /// ```
        pub fn is_disconnected(&self) -> bool {
            self.shared.flavor.is_disconnected()
        }

        /// The number of [`Sender`]s alive (weak senders not counted).
        ///
        /// ```
        #[doc = $make]
        /// let tx2 = tx.clone();
        #[doc = concat!("assert_eq!(", $end, ".sender_count(), 2);")]
        /// # drop((tx2, rx));
        /// ```
        pub fn sender_count(&self) -> usize {
            self.shared.senders.load(Ordering::SeqCst)
        }

        /// The number of [`Receiver`]s alive.
        ///
        /// ```
        #[doc = $make]
        /// let rx2 = rx.clone();
        #[doc = concat!("assert_eq!(", $end, ".receiver_count(), 2);")]
        /// # drop((tx, rx2));
        /// ```
        pub fn receiver_count(&self) -> usize {
            self.shared.receivers.load(Ordering::SeqCst)
        }

        /// The waits each side (senders, receivers) of the channel still accounts for:
        /// waiter counts and registrations. Both are zero whenever no operation is
        /// waiting or being woken. Not part of the API: for conduit's own tests and
        /// loom models only.
        #[cfg(any(test, loom))]
        #[doc(hidden)]
        pub fn __waiter_counts(&self) -> [usize; 2] {
            self.shared.flavor.waiter_counts()
        }

        /// Whether `other` is a handle of the same channel.
        ///
        /// ```
        #[doc = $make]
        #[doc = concat!("assert!(", $end, ".same_channel(&", $end, ".clone()));")]
        /// # drop((tx, rx));
        /// ```
        pub fn same_channel(&self, other: &Self) -> bool {
            Arc::ptr_eq(&self.shared, &other.shared)
        }
    };
}

impl<T> Sender<T> {
    /// Sends a message, waiting while the channel is full (for rendezvous: until a
    /// receiver takes it). Fails, handing the message back, only if every receiver is
    /// gone.
    ///
    /// ```
    /// let (tx, rx) = conduit::bounded(1);
    /// tx.send(5).unwrap();
    /// drop(rx);
    /// assert_eq!(tx.send(6), Err(conduit::SendError(6)));
    /// ```
    #[inline]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.shared.flavor.send(msg, None).map_err(|e| match e {
            SendTimeoutError::Disconnected(m) | SendTimeoutError::Timeout(m) => SendError(m),
        })
    }

    /// Sends without waiting: `Full` if there is no room (for rendezvous: no receiver
    /// thread is blocked in `recv` right now), `Disconnected` if every receiver is gone.
    ///
    /// ```
    /// use conduit::TrySendError;
    /// let (tx, rx) = conduit::bounded(1);
    /// assert_eq!(tx.try_send(1), Ok(()));
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// drop(rx);
    /// assert_eq!(tx.try_send(3), Err(TrySendError::Disconnected(3)));
    /// ```
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.shared.flavor.try_send(msg)
    }

    /// Sends, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (tx, _rx) = conduit::bounded(1);
    /// tx.send(1).unwrap();
    /// assert!(tx.send_timeout(2, Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.shared.flavor.send(msg, deadline_after(timeout))
    }

    /// Sends, waiting until `deadline` at the latest for room.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let (tx, rx) = conduit::bounded(1);
    /// tx.send_deadline(1, Instant::now() + Duration::from_secs(1)).unwrap();
    /// assert_eq!(rx.recv(), Ok(1));
    /// ```
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.shared.flavor.send(msg, Some(deadline))
    }

    /// Sends asynchronously: a future that resolves once the message is sent.
    ///
    /// Cancel-safe: for bounded (capacity ≥ 1) and unbounded channels, a future dropped
    /// before it returned `Ready` did not send its message. For rendezvous, a future
    /// dropped after a receiver took the message counts as sent.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::bounded(1);
    /// tx.send_async(3).await.unwrap();
    /// assert_eq!(rx.recv_async().await, Ok(3));
    /// # });
    /// ```
    pub fn send_async(&self, msg: T) -> SendFut<'_, T> {
        SendFut::new(crate::future::Handle::Borrowed(self), msg)
    }

    /// Like [`send_async`](Sender::send_async), but the future owns the sender.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::unbounded();
    /// let fut = tx.into_send_async(3); // 'static: can be spawned
    /// fut.await.unwrap();
    /// assert_eq!(rx.recv_async().await, Ok(3));
    /// # });
    /// ```
    pub fn into_send_async(self, msg: T) -> SendFut<'static, T> {
        SendFut::new(crate::future::Handle::Owned(self), msg)
    }

    /// A [`Sink`](futures_sink::Sink) that sends into the channel.
    ///
    /// ```
    /// use futures::SinkExt;
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::bounded(4);
    /// let mut sink = tx.sink();
    /// sink.send(1).await.unwrap();
    /// assert_eq!(rx.recv(), Ok(1));
    /// # });
    /// ```
    pub fn sink(&self) -> SendSink<'_, T> {
        SendSink::new(crate::future::Handle::Borrowed(self))
    }

    /// Like [`sink`](Sender::sink), but the sink owns the sender.
    ///
    /// ```
    /// use futures::SinkExt;
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::unbounded();
    /// let mut sink = tx.into_sink();
    /// sink.send(1).await.unwrap();
    /// sink.close().await.unwrap();
    /// assert_eq!(rx.recv(), Ok(1));
    /// # });
    /// ```
    pub fn into_sink(self) -> SendSink<'static, T> {
        SendSink::new(crate::future::Handle::Owned(self))
    }

    /// A [`WeakSender`] for this channel, which does not keep it open.
    ///
    /// ```
    /// let (tx, rx) = conduit::unbounded::<i32>();
    /// let weak = tx.downgrade();
    /// assert!(weak.upgrade().is_some());
    /// drop(tx);
    /// assert!(weak.upgrade().is_none());
    /// # drop(rx);
    /// ```
    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            shared: self.shared.clone(),
        }
    }

    common_methods!("tx", "let (tx, rx) = conduit::bounded::<i32>(4);");
}

impl<T> Receiver<T> {
    /// Receives a message, waiting while the channel is empty. Fails only when the
    /// channel is empty and every sender is gone.
    ///
    /// ```
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(1).unwrap();
    /// drop(tx);
    /// assert_eq!(rx.recv(), Ok(1));
    /// assert_eq!(rx.recv(), Err(conduit::RecvError));
    /// ```
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.shared.flavor.recv(None).map_err(|_| RecvError)
    }

    /// Receives without waiting: `Empty` if nothing is queued, `Disconnected` if also
    /// every sender is gone.
    ///
    /// ```
    /// use conduit::TryRecvError;
    /// let (tx, rx) = conduit::unbounded();
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.shared.flavor.try_recv()
    }

    /// Receives, waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::RecvTimeoutError;
    /// let (_tx, rx) = conduit::unbounded::<i32>();
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.shared.flavor.recv(deadline_after(timeout))
    }

    /// Receives, waiting until `deadline` at the latest.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(1).unwrap();
    /// assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_secs(1)), Ok(1));
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.shared.flavor.recv(Some(deadline))
    }

    /// Receives asynchronously.
    ///
    /// Cancel-safe: a future dropped before it returned `Ready` has taken nothing, and
    /// a wake-up it consumed passes to another waiting receiver.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(9).unwrap();
    /// assert_eq!(rx.recv_async().await, Ok(9));
    /// # });
    /// ```
    pub fn recv_async(&self) -> RecvFut<'_, T> {
        RecvFut::new(crate::future::Handle::Borrowed(self))
    }

    /// Like [`recv_async`](Receiver::recv_async), but the future owns the receiver.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(9).unwrap();
    /// assert_eq!(rx.into_recv_async().await, Ok(9));
    /// # });
    /// ```
    pub fn into_recv_async(self) -> RecvFut<'static, T> {
        RecvFut::new(crate::future::Handle::Owned(self))
    }

    /// A [`Stream`](futures_core::Stream) of messages, ending when the channel is empty
    /// and every sender is gone.
    ///
    /// ```
    /// use futures::StreamExt;
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// drop(tx);
    /// assert_eq!(rx.stream().collect::<Vec<_>>().await, [1, 2]);
    /// # });
    /// ```
    pub fn stream(&self) -> RecvStream<'_, T> {
        RecvStream::new(crate::future::Handle::Borrowed(self))
    }

    /// Like [`stream`](Receiver::stream), but the stream owns the receiver.
    ///
    /// ```
    /// use futures::StreamExt;
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(1).unwrap();
    /// drop(tx);
    /// assert_eq!(rx.into_stream().collect::<Vec<_>>().await, [1]);
    /// # });
    /// ```
    pub fn into_stream(self) -> RecvStream<'static, T> {
        RecvStream::new(crate::future::Handle::Owned(self))
    }

    /// A blocking iterator over messages, ending when the channel is empty and every
    /// sender is gone.
    ///
    /// ```
    /// let (tx, rx) = conduit::unbounded();
    /// std::thread::spawn(move || {
    ///     for i in 0..3 { tx.send(i).unwrap(); }
    /// });
    /// assert_eq!(rx.iter().collect::<Vec<_>>(), [0, 1, 2]);
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over the messages available right now.
    ///
    /// ```
    /// let (tx, rx) = conduit::unbounded();
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 2]);
    /// ```
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }

    /// Takes the messages queued at this call, without blocking. It yields at most that
    /// many; what it did not yield when dropped stays queued.
    ///
    /// ```
    /// let (tx, rx) = conduit::unbounded();
    /// for i in 0..3 { tx.send(i).unwrap(); }
    /// let mut drain = rx.drain();
    /// assert_eq!(drain.next(), Some(0));
    /// drop(drain);
    /// assert_eq!(rx.len(), 2);
    /// ```
    pub fn drain(&self) -> Drain<'_, T> {
        Drain {
            rx: self,
            remaining: self.len(),
        }
    }

    common_methods!("rx", "let (tx, rx) = conduit::bounded::<i32>(4);");
}

impl<T> WeakSender<T> {
    /// A [`Sender`], if any sender is still alive.
    ///
    /// ```
    /// let (tx, _rx) = conduit::unbounded::<()>();
    /// let weak = tx.downgrade();
    /// assert!(weak.upgrade().unwrap().same_channel(&tx));
    /// ```
    pub fn upgrade(&self) -> Option<Sender<T>> {
        let mut count = self.shared.senders.load(Ordering::Relaxed);
        loop {
            if count == 0 {
                return None;
            }
            if count > MAX_COUNT {
                std::process::abort();
            }
            match self.shared.senders.compare_exchange_weak(
                count,
                count + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Sender {
                        shared: self.shared.clone(),
                    });
                }
                Err(c) => count = c,
            }
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        if self.shared.senders.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        if self.shared.receivers.fetch_add(1, Ordering::Relaxed) > MAX_COUNT {
            std::process::abort();
        }
        Receiver {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Clone for WeakSender<T> {
    fn clone(&self) -> Self {
        WeakSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.flavor.disconnect_senders();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.shared.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.flavor.disconnect_receivers();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("disconnected", &self.is_disconnected())
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("disconnected", &self.is_disconnected())
            .finish()
    }
}

impl<T> fmt::Debug for WeakSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakSender { .. }")
    }
}
