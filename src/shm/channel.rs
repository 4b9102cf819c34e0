//! The typed handles: [`Sender`] and [`Receiver`] of `T: ShmSafe`.

use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use std::io;
use std::time::{Duration, Instant};

use super::ShmSafe;
use super::endpoint::{Endpoint, RecvFail, SendFail};
use super::future::{Handle, RecvFut, RecvStream, SendFut, SendSink};
use super::header::{Fingerprint, Kind};
use super::options::Options;
use super::ring::ShmSlots;
use super::segment::Side;
use crate::error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};

/// Writes `msg` into the payload of slot `index`.
pub(crate) fn write_typed<T: ShmSafe>(slots: &ShmSlots, index: usize, msg: &T) {
    // SAFETY: `msg` is a live `T`, so `size_of::<T>()` bytes are readable at it, and
    // `ShmSafe` guarantees they are all initialised (no padding).
    unsafe { slots.write_payload(index, (msg as *const T).cast(), size_of::<T>()) };
}

/// A reader for `recv_with` that copies the payload of the slot it is given straight
/// into `out` (`Some(())` once all of it is there), so that the message is not moved
/// through each layer's `Result` on its way out.
fn read_typed_into<T: ShmSafe>(
    out: &mut MaybeUninit<T>,
) -> impl FnMut(&ShmSlots, usize) -> Option<()> + '_ {
    move |slots, index| {
        // SAFETY: `out` is valid for writing `size_of::<T>()` bytes.
        let copied = unsafe { slots.read_payload(index, out.as_mut_ptr().cast(), size_of::<T>()) };
        copied.then_some(())
    }
}

/// Reads a `T` out of the payload of slot `index`.
pub(crate) fn read_typed<T: ShmSafe>(slots: &ShmSlots, index: usize) -> Option<T> {
    let mut out = MaybeUninit::<T>::uninit();
    read_typed_into(&mut out)(slots, index)?;
    // SAFETY: the read succeeded, so every byte of `out` was written, and `ShmSafe`
    // guarantees that any bit pattern is a valid `T`.
    Some(unsafe { out.assume_init() })
}

fn open<T: ShmSafe>(name: &str, opts: &Options, side: Side) -> io::Result<Endpoint> {
    Endpoint::open(name, opts, side, Kind::Typed, Fingerprint::of::<T>())
}

/// The sending end of a shared-memory channel of `T`.
///
/// Clone it freely (clones share one peer slot); it is `Send + Sync`. Dropping the last
/// clone detaches this handle family from the channel.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-sender-{}", std::process::id());
/// let tx = shm::Sender::<[u32; 2]>::create(&name, 8)?;
/// let rx = shm::Receiver::<[u32; 2]>::open(&name)?;
/// std::thread::spawn(move || tx.send([1, 2]).unwrap());
/// assert_eq!(rx.recv(), Ok([1, 2]));
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Sender<T: ShmSafe> {
    ep: Endpoint,
    _marker: PhantomData<fn(T) -> T>,
}

/// The receiving end of a shared-memory channel of `T`.
///
/// Clone it freely (clones share one peer slot); it is `Send + Sync`. Every message is
/// received by exactly one receiver, in any process.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-receiver-{}", std::process::id());
/// let rx = shm::Receiver::<u64>::create(&name, 8)?;
/// let tx = shm::Sender::<u64>::open(&name)?;
/// tx.send(42).unwrap();
/// drop(tx);
/// assert_eq!(rx.recv(), Ok(42));
/// assert!(rx.recv().is_err()); // every sender is gone
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Receiver<T: ShmSafe> {
    ep: Endpoint,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: ShmSafe> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            ep: self.ep.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T: ShmSafe> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            ep: self.ep.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T: ShmSafe> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("shm::Sender")
            .field("name", &self.ep.name())
            .field("capacity", &self.ep.capacity())
            .finish_non_exhaustive()
    }
}

impl<T: ShmSafe> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("shm::Receiver")
            .field("name", &self.ep.name())
            .field("capacity", &self.ep.capacity())
            .finish_non_exhaustive()
    }
}

impl<T: ShmSafe> Sender<T> {
    /// Creates the channel `name` with `capacity` slots (rounded up to a power of two)
    /// and attaches to it: [`io::ErrorKind::AlreadyExists`] if the name exists. The
    /// same as [`Sender::with`] and `Options::new().capacity(capacity).create_new(true)`.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-sender-create-{}", std::process::id());
    /// let tx = shm::Sender::<u16>::create(&name, 3)?;
    /// assert_eq!(tx.capacity(), 4);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> io::Result<Self> {
        Self::with(name, &Options::new().capacity(capacity).create_new(true))
    }

    /// Opens the existing channel `name` ([`io::ErrorKind::NotFound`] if missing;
    /// [`io::ErrorKind::InvalidData`] if it holds another type).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-sender-open-{}", std::process::id());
    /// let rx = shm::Receiver::<u16>::create(&name, 4)?;
    /// let tx = shm::Sender::<u16>::open(&name)?;
    /// assert_eq!(shm::Sender::<u32>::open(&name).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    /// # drop((tx, rx));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(name: &str) -> io::Result<Self> {
        Self::with(name, &Options::new())
    }

    /// Opens or creates the channel `name` as `options` say.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-sender-with-{}", std::process::id());
    /// let tx = shm::Sender::<u8>::with(&name, &Options::new().create(true).unlink_on_drop(true))?;
    /// assert_eq!(tx.capacity(), shm::DEFAULT_CAPACITY);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, options: &Options) -> io::Result<Self> {
        Ok(Sender {
            ep: open::<T>(name, options, Side::Send)?,
            _marker: PhantomData,
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// Sends `msg`, waiting while the channel is full. Fails, handing `msg` back, if the
    /// channel is full and every receiver that ever attached is gone. While there is
    /// room, a message is queued even if no receiver is attached (a later one gets it).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-sender-send-{}", std::process::id());
    /// let tx = shm::Sender::<i32>::create(&name, 1)?;
    /// tx.send(1).unwrap(); // nobody attached yet: it waits in the mailbox
    /// let rx = shm::Receiver::<i32>::open(&name)?;
    /// assert_eq!(rx.recv(), Ok(1));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.ep
            .send_with(None, |slots, i| write_typed(slots, i, &msg))
            .map_err(|_| SendError(msg))
    }

    /// Sends `msg` if there is room now: [`TrySendError::Full`] otherwise, or
    /// [`TrySendError::Disconnected`] if full and every receiver is gone.
    ///
    /// ```
    /// use conduit::TrySendError;
    /// use conduit::shm;
    /// let name = format!("doc-sender-try-send-{}", std::process::id());
    /// let tx = shm::Sender::<u8>::create(&name, 1)?;
    /// tx.try_send(1).unwrap();
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        match self
            .ep
            .try_send_with(true, &mut |slots, i| write_typed(slots, i, &msg))
        {
            Ok(()) => Ok(()),
            Err(SendFail::Disconnected) => Err(TrySendError::Disconnected(msg)),
            Err(_) => Err(TrySendError::Full(msg)),
        }
    }

    /// [`Sender::send`], waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::SendTimeoutError;
    /// use conduit::shm;
    /// let name = format!("doc-sender-send-timeout-{}", std::process::id());
    /// let tx = shm::Sender::<u8>::create(&name, 1)?;
    /// tx.send(1).unwrap();
    /// let err = tx.send_timeout(2, Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, SendTimeoutError::Timeout(2));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(msg, Instant::now() + timeout)
    }

    /// [`Sender::send`], waiting at most until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use conduit::shm;
    /// let name = format!("doc-sender-send-deadline-{}", std::process::id());
    /// let tx = shm::Sender::<u8>::create(&name, 1)?;
    /// tx.send_deadline(1, Instant::now() + Duration::from_secs(1)).unwrap();
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_deadline(&self, msg: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        match self
            .ep
            .send_with(Some(deadline), |slots, i| write_typed(slots, i, &msg))
        {
            Ok(()) => Ok(()),
            Err(SendFail::Timeout | SendFail::Full) => Err(SendTimeoutError::Timeout(msg)),
            Err(SendFail::Disconnected) => Err(SendTimeoutError::Disconnected(msg)),
        }
    }

    /// An async [`Sender::send`]. Dropped before completing, it has sent nothing.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-sender-send-async-{}", std::process::id());
    /// let tx = shm::Sender::<u32>::create(&name, 2)?;
    /// let rx = shm::Receiver::<u32>::open(&name)?;
    /// futures::executor::block_on(async {
    ///     tx.send_async(5).await.unwrap();
    ///     assert_eq!(rx.recv_async().await, Ok(5));
    /// });
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_async(&self, msg: T) -> SendFut<'_, T> {
        SendFut::new(Handle::Borrowed(self), msg)
    }

    /// [`Sender::send_async`], owning the sender.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-sender-into-send-async-{}", std::process::id());
    /// let tx = shm::Sender::<u32>::create(&name, 2)?;
    /// let fut = tx.into_send_async(5);
    /// futures::executor::block_on(fut).unwrap();
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_send_async(self, msg: T) -> SendFut<'static, T> {
        SendFut::new(Handle::Owned(self), msg)
    }

    /// A [`Sink`](futures_sink::Sink) that sends into the channel.
    ///
    /// ```
    /// use futures::SinkExt;
    /// use conduit::shm;
    /// let name = format!("doc-sender-sink-{}", std::process::id());
    /// let tx = shm::Sender::<u32>::create(&name, 4)?;
    /// let rx = shm::Receiver::<u32>::open(&name)?;
    /// futures::executor::block_on(async {
    ///     let mut sink = tx.sink();
    ///     sink.send(1).await.unwrap();
    ///     sink.send(2).await.unwrap();
    /// });
    /// assert_eq!((rx.recv(), rx.recv()), (Ok(1), Ok(2)));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn sink(&self) -> SendSink<'_, T> {
        SendSink::new(Handle::Borrowed(self))
    }

    /// [`Sender::sink`], owning the sender.
    ///
    /// ```
    /// use futures::SinkExt;
    /// use conduit::shm;
    /// let name = format!("doc-sender-into-sink-{}", std::process::id());
    /// let tx = shm::Sender::<u32>::create(&name, 4)?;
    /// let mut sink = tx.into_sink();
    /// futures::executor::block_on(sink.send(1)).unwrap();
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_sink(self) -> SendSink<'static, T> {
        SendSink::new(Handle::Owned(self))
    }

    endpoint_accessors!(
        "shm::Sender::<u8>",
        "sender",
        "receivers",
        "shm::Sender::<u8>",
        "shm::Receiver::<u8>",
        "end.send(1).unwrap();"
    );
}

impl<T: ShmSafe> Receiver<T> {
    /// Creates the channel `name` with `capacity` slots and attaches to it; see
    /// [`Sender::create`].
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-receiver-create-{}", std::process::id());
    /// let rx = shm::Receiver::<u16>::create(&name, 16)?;
    /// assert_eq!(rx.capacity(), 16);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> io::Result<Self> {
        Self::with(name, &Options::new().capacity(capacity).create_new(true))
    }

    /// Opens the existing channel `name`; see [`Sender::open`].
    ///
    /// ```
    /// use conduit::shm;
    /// let err = shm::Receiver::<u8>::open("doc-receiver-open-missing").unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> io::Result<Self> {
        Self::with(name, &Options::new())
    }

    /// Opens or creates the channel `name` as `options` say.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-receiver-with-{}", std::process::id());
    /// let opts = Options::new().capacity(32).create(true).unlink_on_drop(true);
    /// let rx = shm::Receiver::<u8>::with(&name, &opts)?;
    /// assert_eq!(rx.capacity(), 32);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, options: &Options) -> io::Result<Self> {
        Ok(Receiver {
            ep: open::<T>(name, options, Side::Recv)?,
            _marker: PhantomData,
        })
    }

    /// Receives a message, waiting while the channel is empty. Fails only when the
    /// channel is empty and every sender that ever attached is gone.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-receiver-recv-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// let tx = shm::Sender::<u8>::open(&name)?;
    /// let t = std::thread::spawn(move || tx.send(9).unwrap());
    /// assert_eq!(rx.recv(), Ok(9));
    /// t.join().unwrap();
    /// assert_eq!(rx.recv(), Err(conduit::RecvError));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_until(None).map_err(|_| RecvError)
    }

    /// The blocking receive behind [`Receiver::recv`] and [`Receiver::recv_deadline`].
    #[inline]
    fn recv_until(&self, deadline: Option<Instant>) -> Result<T, RecvFail> {
        let mut out = MaybeUninit::uninit();
        self.ep
            .recv_with(deadline, read_typed_into::<T>(&mut out))?;
        // SAFETY: `recv_with` succeeds with the `Some` of the read it succeeded with,
        // which wrote every byte of `out` (and nothing reads after it); `ShmSafe`
        // guarantees that any bit pattern is a valid `T`.
        Ok(unsafe { out.assume_init() })
    }

    /// Receives a message if one is queued: [`TryRecvError::Empty`] otherwise, or
    /// [`TryRecvError::Disconnected`] if empty and every sender is gone.
    ///
    /// ```
    /// use conduit::TryRecvError;
    /// use conduit::shm;
    /// let name = format!("doc-receiver-try-recv-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut out = MaybeUninit::uninit();
        self.ep
            .try_recv_with(true, &mut read_typed_into::<T>(&mut out))?;
        // SAFETY: as in `recv_until`: the read that succeeded wrote all of `out`.
        Ok(unsafe { out.assume_init() })
    }

    /// [`Receiver::recv`], waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::RecvTimeoutError;
    /// use conduit::shm;
    /// let name = format!("doc-receiver-recv-timeout-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(Instant::now() + timeout)
    }

    /// [`Receiver::recv`], waiting at most until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use conduit::shm;
    /// let name = format!("doc-receiver-recv-deadline-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// let tx = shm::Sender::<u8>::open(&name)?;
    /// tx.send(3).unwrap();
    /// assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_secs(1)), Ok(3));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(deadline)).map_err(|e| match e {
            RecvFail::Timeout => RecvTimeoutError::Timeout,
            RecvFail::Disconnected => RecvTimeoutError::Disconnected,
        })
    }

    /// An async [`Receiver::recv`]. Dropped before completing, it has taken nothing.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-receiver-recv-async-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// let tx = shm::Sender::<u8>::open(&name)?;
    /// std::thread::spawn(move || tx.send(1).unwrap());
    /// assert_eq!(futures::executor::block_on(rx.recv_async()), Ok(1));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_async(&self) -> RecvFut<'_, T> {
        RecvFut::new(Handle::Borrowed(&self.ep), read_typed::<T>)
    }

    /// [`Receiver::recv_async`], owning the receiver.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-receiver-into-recv-async-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// shm::Sender::<u8>::open(&name)?.send(2).unwrap();
    /// assert_eq!(futures::executor::block_on(rx.into_recv_async()), Ok(2));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_recv_async(self) -> RecvFut<'static, T> {
        RecvFut::new(Handle::Owned(self.ep), read_typed::<T>)
    }

    /// A [`Stream`](futures_core::Stream) of messages, ending when the channel is
    /// disconnected and drained.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use conduit::shm;
    /// let name = format!("doc-receiver-stream-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// let tx = shm::Sender::<u8>::open(&name)?;
    /// tx.send(1).unwrap();
    /// tx.send(2).unwrap();
    /// drop(tx);
    /// let got: Vec<u8> = futures::executor::block_on(rx.stream().collect());
    /// assert_eq!(got, [1, 2]);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream(&self) -> RecvStream<'_, T> {
        RecvStream::new(Handle::Borrowed(&self.ep), read_typed::<T>)
    }

    /// [`Receiver::stream`], owning the receiver.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use conduit::shm;
    /// let name = format!("doc-receiver-into-stream-{}", std::process::id());
    /// let rx = shm::Receiver::<u8>::create(&name, 4)?;
    /// drop(shm::Sender::<u8>::open(&name)?);
    /// let got: Vec<u8> = futures::executor::block_on(rx.into_stream().collect());
    /// assert!(got.is_empty());
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_stream(self) -> RecvStream<'static, T> {
        RecvStream::new(Handle::Owned(self.ep), read_typed::<T>)
    }

    endpoint_accessors!(
        "shm::Receiver::<u8>",
        "receiver",
        "senders",
        "shm::Sender::<u8>",
        "shm::Receiver::<u8>",
        "shm::Sender::<u8>::open(&name)?.send(1).unwrap();"
    );
}
