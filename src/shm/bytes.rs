//! The byte handles: [`ByteSender`] and [`ByteReceiver`] of variable-length messages.
//!
//! A slot holds a length word and up to `max_message` bytes. A message longer than
//! that is refused with [`io::ErrorKind::InvalidInput`], never truncated; a slot whose
//! length word exceeds it (corruption) is dropped, never delivered.

use core::fmt;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::endpoint::{Endpoint, RecvFail, SendFail};
use super::future::{ByteSendFut, Handle, RecvFut, RecvStream};
use super::header::{Fingerprint, Kind};
use super::options::Options;
use super::ring::ShmSlots;
use super::segment::Side;
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};

/// Writes the byte message `msg` (checked to fit) into slot `index`.
pub(crate) fn write_bytes(slots: &ShmSlots, index: usize, msg: &[u8]) {
    // SAFETY: `msg` is a live slice of `msg.len()` initialised bytes.
    unsafe { slots.write_payload(index, msg.as_ptr(), msg.len()) };
    if let Some(len) = slots.len_word(index) {
        len.store(msg.len() as u32, Ordering::Relaxed);
    }
}

/// The length of the message in slot `index`, if it is plausible.
fn message_len(slots: &ShmSlots, index: usize) -> Option<usize> {
    let len = slots.len_word(index)?.load(Ordering::Relaxed) as usize;
    (len <= slots.payload_size()).then_some(len)
}

/// Reads the byte message of slot `index` into a new vector.
pub(crate) fn read_bytes(slots: &ShmSlots, index: usize) -> Option<Vec<u8>> {
    let len = message_len(slots, index)?;
    let mut v = Vec::with_capacity(len);
    // SAFETY: `v` has room for `len` bytes.
    if !unsafe { slots.read_payload(index, v.as_mut_ptr(), len) } {
        return None;
    }
    // SAFETY: `read_payload` initialised the first `len` bytes.
    unsafe { v.set_len(len) };
    Some(v)
}

pub(crate) fn disconnected() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "shm channel disconnected: every receiver is gone",
    )
}

fn open(name: &str, opts: &Options, side: Side) -> io::Result<Endpoint> {
    Endpoint::open(name, opts, side, Kind::Bytes, Fingerprint::bytes(1))
}

/// The sending end of a shared-memory channel of byte messages.
///
/// Errors are [`io::Error`]s: [`InvalidInput`](io::ErrorKind::InvalidInput) for a
/// message longer than [`max_message`](ByteSender::max_message),
/// [`WouldBlock`](io::ErrorKind::WouldBlock) when full (`try_send`),
/// [`TimedOut`](io::ErrorKind::TimedOut), and [`BrokenPipe`](io::ErrorKind::BrokenPipe)
/// when full and every receiver is gone.
///
/// ```
/// use conduit::shm::{self, Options};
/// let name = format!("doc-byte-sender-{}", std::process::id());
/// let opts = Options::new().capacity(4).max_message(64).create_new(true);
/// let tx = shm::ByteSender::with(&name, &opts)?;
/// let rx = shm::ByteReceiver::open(&name)?;
/// tx.send(b"hello")?;
/// assert_eq!(rx.recv().unwrap(), b"hello");
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ByteSender {
    ep: Endpoint,
}

/// The receiving end of a shared-memory channel of byte messages.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-byte-receiver-{}", std::process::id());
/// let rx = shm::ByteReceiver::create(&name, 4)?;
/// let tx = shm::ByteSender::open(&name)?;
/// tx.send(&[1, 2, 3])?;
/// let mut buf = vec![0; rx.max_message()];
/// let n = rx.recv_into(&mut buf)?;
/// assert_eq!(&buf[..n], [1, 2, 3]);
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct ByteReceiver {
    ep: Endpoint,
}

impl fmt::Debug for ByteSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("shm::ByteSender")
            .field("name", &self.ep.name())
            .field("capacity", &self.ep.capacity())
            .field("max_message", &self.ep.max_message())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ByteReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("shm::ByteReceiver")
            .field("name", &self.ep.name())
            .field("capacity", &self.ep.capacity())
            .field("max_message", &self.ep.max_message())
            .finish_non_exhaustive()
    }
}

fn send_error(fail: SendFail) -> io::Error {
    match fail {
        SendFail::Disconnected => disconnected(),
        SendFail::Full => io::Error::new(io::ErrorKind::WouldBlock, "shm channel is full"),
        SendFail::Timeout => io::Error::new(io::ErrorKind::TimedOut, "shm send timed out"),
    }
}

impl ByteSender {
    /// Creates the byte channel `name` with `capacity` slots of
    /// [`DEFAULT_MAX_MESSAGE`](super::DEFAULT_MAX_MESSAGE) bytes and attaches to it
    /// ([`io::ErrorKind::AlreadyExists`] if the name exists). Use [`ByteSender::with`]
    /// and [`Options::max_message`] for another size.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-create-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 2)?;
    /// assert_eq!(tx.max_message(), shm::DEFAULT_MAX_MESSAGE);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> io::Result<Self> {
        Self::with(name, &Options::new().capacity(capacity).create_new(true))
    }

    /// Opens the existing byte channel `name`.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-open-{}", std::process::id());
    /// let _rx = shm::ByteReceiver::create(&name, 2)?;
    /// let tx = shm::ByteSender::open(&name)?;
    /// assert_eq!(tx.capacity(), 2);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open(name: &str) -> io::Result<Self> {
        Self::with(name, &Options::new())
    }

    /// Opens or creates the byte channel `name` as `options` say.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-byte-sender-with-{}", std::process::id());
    /// let tx = shm::ByteSender::with(&name, &Options::new().max_message(10).create(true))?;
    /// assert_eq!(tx.max_message(), 10);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, options: &Options) -> io::Result<Self> {
        Ok(ByteSender {
            ep: open(name, options, Side::Send)?,
        })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub(crate) fn check_len(&self, len: usize) -> io::Result<()> {
        let max = self.ep.max_message();
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("message of {len} bytes exceeds the channel's max_message of {max}"),
            ));
        }
        Ok(())
    }

    /// Sends `msg`, waiting while the channel is full.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-send-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 2)?;
    /// tx.send(b"abc")?;
    /// assert_eq!(tx.len(), 1);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.check_len(msg.len())?;
        self.ep
            .send_with(None, |slots, i| write_bytes(slots, i, msg))
            .map_err(send_error)
    }

    /// Sends `msg` if there is room now ([`io::ErrorKind::WouldBlock`] otherwise).
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-try-send-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 1)?;
    /// tx.try_send(b"a")?;
    /// assert_eq!(tx.try_send(b"b").unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_send(&self, msg: &[u8]) -> io::Result<()> {
        self.check_len(msg.len())?;
        self.ep
            .try_send_with(true, &mut |slots, i| write_bytes(slots, i, msg))
            .map_err(send_error)
    }

    /// [`ByteSender::send`], waiting at most `timeout` ([`io::ErrorKind::TimedOut`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-send-timeout-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 1)?;
    /// tx.send(b"a")?;
    /// let err = tx.send_timeout(b"b", Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> io::Result<()> {
        self.send_deadline(msg, Instant::now() + timeout)
    }

    /// [`ByteSender::send`], waiting at most until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-send-deadline-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 1)?;
    /// tx.send_deadline(b"a", Instant::now() + Duration::from_secs(1))?;
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_deadline(&self, msg: &[u8], deadline: Instant) -> io::Result<()> {
        self.check_len(msg.len())?;
        self.ep
            .send_with(Some(deadline), |slots, i| write_bytes(slots, i, msg))
            .map_err(|e| {
                send_error(if e == SendFail::Full {
                    SendFail::Timeout
                } else {
                    e
                })
            })
    }

    /// An async [`ByteSender::send`]. Dropped before completing, it has sent nothing.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-send-async-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 1)?;
    /// let rx = shm::ByteReceiver::open(&name)?;
    /// futures::executor::block_on(async {
    ///     tx.send_async(b"hi").await.unwrap();
    ///     assert_eq!(rx.recv_async().await.unwrap(), b"hi");
    /// });
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_async<'a>(&'a self, msg: &'a [u8]) -> ByteSendFut<'a> {
        ByteSendFut::new(self, msg)
    }

    /// The longest message accepted, in bytes.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-sender-max-message-{}", std::process::id());
    /// let tx = shm::ByteSender::create(&name, 1)?;
    /// assert_eq!(tx.max_message(), 4096);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_message(&self) -> usize {
        self.ep.max_message()
    }

    endpoint_accessors!(
        "shm::ByteSender",
        "byte-sender",
        "receivers",
        "shm::ByteSender",
        "shm::ByteReceiver",
        "end.send(b\"x\")?;"
    );
}

impl ByteReceiver {
    /// Creates the byte channel `name`; see [`ByteSender::create`].
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-create-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 8)?;
    /// assert_eq!(rx.capacity(), 8);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> io::Result<Self> {
        Self::with(name, &Options::new().capacity(capacity).create_new(true))
    }

    /// Opens the existing byte channel `name`.
    ///
    /// ```
    /// use conduit::shm;
    /// let err = shm::ByteReceiver::open("doc-byte-receiver-open-missing").unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> io::Result<Self> {
        Self::with(name, &Options::new())
    }

    /// Opens or creates the byte channel `name` as `options` say.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-byte-receiver-with-{}", std::process::id());
    /// let opts = Options::new().max_message(8).create(true).unlink_on_drop(true);
    /// let rx = shm::ByteReceiver::with(&name, &opts)?;
    /// assert_eq!(rx.max_message(), 8);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with(name: &str, options: &Options) -> io::Result<Self> {
        Ok(ByteReceiver {
            ep: open(name, options, Side::Recv)?,
        })
    }

    /// Receives a message, waiting while the channel is empty.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-recv-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// shm::ByteSender::open(&name)?.send(b"x")?;
    /// assert_eq!(rx.recv().unwrap(), b"x");
    /// assert!(rx.recv().is_err()); // the sender is gone
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        self.ep.recv_with(None, read_bytes).map_err(|_| RecvError)
    }

    /// Receives a message into `buf`, waiting while the channel is empty, and returns
    /// its length. `buf` must hold at least [`max_message`](ByteReceiver::max_message)
    /// bytes ([`io::ErrorKind::InvalidInput`] otherwise, without touching the channel,
    /// as POSIX `mq_receive` does); [`io::ErrorKind::BrokenPipe`] when empty and every
    /// sender is gone.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-byte-receiver-recv-into-{}", std::process::id());
    /// let rx = shm::ByteReceiver::with(&name, &Options::new().max_message(4).create_new(true))?;
    /// shm::ByteSender::open(&name)?.send(b"abcd")?;
    /// let mut buf = [0; 4];
    /// assert_eq!(rx.recv_into(&mut buf)?, 4);
    /// assert_eq!(rx.recv_into(&mut [0; 3]).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        let max = self.ep.max_message();
        if buf.len() < max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "buffer of {} bytes is shorter than the channel's max_message of {max}",
                    buf.len()
                ),
            ));
        }
        let read = |slots: &ShmSlots, index: usize| {
            let len = message_len(slots, index)?;
            // SAFETY: `len <= max_message <= buf.len()`, so `buf` has room.
            unsafe { slots.read_payload(index, buf.as_mut_ptr(), len) }.then_some(len)
        };
        self.ep.recv_with(None, read).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "shm channel disconnected: every sender is gone",
            )
        })
    }

    /// Receives a message if one is queued.
    ///
    /// ```
    /// use conduit::TryRecvError;
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-try-recv-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        self.ep.try_recv_with(true, &mut read_bytes)
    }

    /// [`ByteReceiver::recv`], waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use conduit::RecvTimeoutError;
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-recv-timeout-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        self.recv_deadline(Instant::now() + timeout)
    }

    /// [`ByteReceiver::recv`], waiting at most until `deadline`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-recv-deadline-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// let tx = shm::ByteSender::open(&name)?;
    /// tx.send(b"z")?;
    /// assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_secs(1)).unwrap(), b"z");
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Vec<u8>, RecvTimeoutError> {
        self.ep
            .recv_with(Some(deadline), read_bytes)
            .map_err(|e| match e {
                RecvFail::Timeout => RecvTimeoutError::Timeout,
                RecvFail::Disconnected => RecvTimeoutError::Disconnected,
            })
    }

    /// An async [`ByteReceiver::recv`]. Dropped before completing, it has taken nothing.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-recv-async-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// let tx = shm::ByteSender::open(&name)?;
    /// std::thread::spawn(move || tx.send(b"later").unwrap());
    /// assert_eq!(futures::executor::block_on(rx.recv_async()).unwrap(), b"later");
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recv_async(&self) -> RecvFut<'_, Vec<u8>> {
        RecvFut::new(Handle::Borrowed(&self.ep), read_bytes)
    }

    /// [`ByteReceiver::recv_async`], owning the receiver.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-into-recv-async-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// shm::ByteSender::open(&name)?.send(b"o")?;
    /// assert_eq!(futures::executor::block_on(rx.into_recv_async()).unwrap(), b"o");
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_recv_async(self) -> RecvFut<'static, Vec<u8>> {
        RecvFut::new(Handle::Owned(self.ep), read_bytes)
    }

    /// A [`Stream`](futures_core::Stream) of messages, ending when the channel is
    /// disconnected and drained.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-stream-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// shm::ByteSender::open(&name)?.send(b"s")?;
    /// let got: Vec<Vec<u8>> = futures::executor::block_on(rx.stream().collect());
    /// assert_eq!(got, [b"s".to_vec()]);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream(&self) -> RecvStream<'_, Vec<u8>> {
        RecvStream::new(Handle::Borrowed(&self.ep), read_bytes)
    }

    /// [`ByteReceiver::stream`], owning the receiver.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-into-stream-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// drop(shm::ByteSender::open(&name)?);
    /// assert_eq!(futures::executor::block_on(rx.into_stream().count()), 0);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_stream(self) -> RecvStream<'static, Vec<u8>> {
        RecvStream::new(Handle::Owned(self.ep), read_bytes)
    }

    /// The longest message the channel carries, in bytes.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-byte-receiver-max-message-{}", std::process::id());
    /// let rx = shm::ByteReceiver::create(&name, 2)?;
    /// assert_eq!(rx.max_message(), shm::DEFAULT_MAX_MESSAGE);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_message(&self) -> usize {
        self.ep.max_message()
    }

    endpoint_accessors!(
        "shm::ByteReceiver",
        "byte-receiver",
        "senders",
        "shm::ByteSender",
        "shm::ByteReceiver",
        "shm::ByteSender::open(&name)?.send(b\"x\")?;"
    );
}
