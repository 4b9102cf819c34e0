//! Runtime-agnostic futures, streams and sinks over the in-process channels.
//!
//! None of these types relies on being pinned, so they are `Unpin` whatever `T` is.
//! Each keeps at most one listener, allocated once per wait, never per poll.

use core::fmt;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::{FusedFuture, FusedStream, Stream};
use futures_sink::Sink;

use crate::chan::{RecvWait, SendWait};
use crate::channel::{Receiver, Sender};
use crate::error::{RecvError, SendError};

/// A channel end that a future either borrows or owns.
pub(crate) enum Handle<'a, E> {
    Borrowed(&'a E),
    Owned(E),
}

impl<E> Handle<'_, E> {
    /// Whether dropping the handle does anything.
    #[inline]
    fn is_owned(&self) -> bool {
        matches!(self, Handle::Owned(_))
    }
}

impl<E> Deref for Handle<'_, E> {
    type Target = E;
    fn deref(&self) -> &E {
        match self {
            Handle::Borrowed(e) => e,
            Handle::Owned(e) => e,
        }
    }
}

/// A future that sends one message; see [`Sender::send_async`].
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = conduit::bounded(1);
/// let fut: conduit::SendFut<'_, i32> = tx.send_async(1);
/// fut.await.unwrap();
/// assert_eq!(rx.recv(), Ok(1));
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct SendFut<'a, T> {
    // The fields are dropped by `Drop::drop` itself, and only where that does anything
    // (see there).
    tx: ManuallyDrop<Handle<'a, Sender<T>>>,
    msg: ManuallyDrop<Option<T>>,
    wait: ManuallyDrop<SendWait<T>>,
    done: bool,
}

impl<'a, T> SendFut<'a, T> {
    pub(crate) fn new(tx: Handle<'a, Sender<T>>, msg: T) -> Self {
        SendFut {
            tx: ManuallyDrop::new(tx),
            msg: ManuallyDrop::new(Some(msg)),
            wait: ManuallyDrop::new(SendWait::new()),
            done: false,
        }
    }

    /// Whether the future has completed.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, _rx) = conduit::unbounded();
    /// let mut fut = tx.send_async(1);
    /// assert!(!fut.is_terminated());
    /// (&mut fut).await.unwrap();
    /// assert!(fut.is_terminated());
    /// # });
    /// ```
    pub fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> Unpin for SendFut<'_, T> {}

impl<T> Future for SendFut<'_, T> {
    type Output = Result<(), SendError<T>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            panic!("SendFut polled after completion");
        }
        let res = this
            .tx
            .shared
            .flavor
            .poll_send(cx, &mut this.msg, &mut this.wait);
        if res.is_ready() {
            this.done = true;
        }
        res.map_err(SendError)
    }
}

impl<T> FusedFuture for SendFut<'_, T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// Drops the [`ManuallyDrop`] fields of a future when it goes out of scope, so that they
/// are dropped even if withdrawing the future's wait panics (a waker is user code).
struct DropFields<'f, F: DropManually>(&'f mut F);

/// A future whose fields [`DropFields`] drops.
trait DropManually {
    /// Drops the fields.
    ///
    /// # Safety
    /// Once, from the future's `Drop`: no field is used afterwards.
    unsafe fn drop_fields(&mut self);
}

impl<F: DropManually> Drop for DropFields<'_, F> {
    fn drop(&mut self) {
        // SAFETY: a `DropFields` is made only in a future's `drop_slow`, once, and the
        // future is not used after it.
        unsafe { self.0.drop_fields() }
    }
}

impl<T> DropManually for SendFut<'_, T> {
    unsafe fn drop_fields(&mut self) {
        // SAFETY: the caller's contract: once, and the fields are not used afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.tx);
            ManuallyDrop::drop(&mut self.msg);
            ManuallyDrop::drop(&mut self.wait);
        }
    }
}

impl<T> Drop for SendFut<'_, T> {
    /// Inline and small: a future that completed, borrowed its sender and holds nothing
    /// (`tx.send_async(msg).await`, the common case) costs its caller a few tests. The
    /// drop glue this replaces stayed out of line: with `RecvFut`'s it took 20 of the 175
    /// instructions per message of a `u64` async send and receive (callgrind, tokio's
    /// current-thread runtime, `examples/async_drive.rs`). Dropping the fields is skipped
    /// only where it would do nothing: a borrowed handle, no message left (or one without
    /// drop glue) and no rendezvous offer.
    #[inline]
    fn drop(&mut self) {
        if !self.done
            || self.tx.is_owned()
            || (core::mem::needs_drop::<T>() && self.msg.is_some())
            || self.wait.holds_offer()
        {
            self.drop_slow();
        }
    }
}

impl<T> SendFut<'_, T> {
    /// Withdraws an unfinished send's wait, then drops the fields.
    #[cold]
    #[inline(never)]
    fn drop_slow(&mut self) {
        let this = DropFields(self);
        if !this.0.done {
            this.0.tx.shared.flavor.cancel_send(&mut this.0.wait);
        }
    }
}

impl<T> fmt::Debug for SendFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFut").field("done", &self.done).finish()
    }
}

/// A future that receives one message; see [`Receiver::recv_async`].
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = conduit::bounded(1);
/// tx.send(1).unwrap();
/// let fut: conduit::RecvFut<'_, i32> = rx.recv_async();
/// assert_eq!(fut.await, Ok(1));
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct RecvFut<'a, T> {
    // Dropped by `Drop::drop` itself, as `SendFut`'s fields.
    rx: ManuallyDrop<Handle<'a, Receiver<T>>>,
    wait: RecvWait,
    done: bool,
}

impl<'a, T> RecvFut<'a, T> {
    pub(crate) fn new(rx: Handle<'a, Receiver<T>>) -> Self {
        RecvFut {
            rx: ManuallyDrop::new(rx),
            wait: RecvWait::new(),
            done: false,
        }
    }
}

impl<T> Unpin for RecvFut<'_, T> {}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            panic!("RecvFut polled after completion");
        }
        let res = this.rx.shared.flavor.poll_recv(cx, &mut this.wait);
        if res.is_ready() {
            this.done = true;
        }
        res.map_err(|()| RecvError)
    }
}

impl<T> FusedFuture for RecvFut<'_, T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> DropManually for RecvFut<'_, T> {
    unsafe fn drop_fields(&mut self) {
        // SAFETY: the caller's contract: once, and the field is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.rx) }
    }
}

impl<T> Drop for RecvFut<'_, T> {
    /// As `SendFut`'s: inline, and small for a completed future with a borrowed receiver.
    #[inline]
    fn drop(&mut self) {
        if !self.done || self.rx.is_owned() {
            self.drop_slow();
        }
    }
}

impl<T> RecvFut<'_, T> {
    /// Withdraws an unfinished receive's wait, then drops the handle.
    #[cold]
    #[inline(never)]
    fn drop_slow(&mut self) {
        let this = DropFields(self);
        if !this.0.done {
            this.0.rx.shared.flavor.cancel_recv(&mut this.0.wait);
        }
    }
}

impl<T> fmt::Debug for RecvFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFut").field("done", &self.done).finish()
    }
}

/// A stream of received messages; see [`Receiver::stream`].
///
/// ```
/// use futures::StreamExt;
/// # futures::executor::block_on(async {
/// let (tx, rx) = conduit::unbounded();
/// tx.send(1).unwrap();
/// drop(tx);
/// let mut stream: conduit::RecvStream<'_, i32> = rx.stream();
/// assert_eq!(stream.next().await, Some(1));
/// assert_eq!(stream.next().await, None);
/// # });
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a, T> {
    rx: Handle<'a, Receiver<T>>,
    wait: RecvWait,
    ended: bool,
}

impl<'a, T> RecvStream<'a, T> {
    pub(crate) fn new(rx: Handle<'a, Receiver<T>>) -> Self {
        RecvStream {
            rx,
            wait: RecvWait::new(),
            ended: false,
        }
    }
}

impl<T> Unpin for RecvStream<'_, T> {}

impl<T> Stream for RecvStream<'_, T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.shared.flavor.poll_recv(cx, &mut this.wait) {
            Poll::Ready(Ok(msg)) => Poll::Ready(Some(msg)),
            Poll::Ready(Err(())) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rx.len(), None)
    }
}

impl<T> FusedStream for RecvStream<'_, T> {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

impl<T> Drop for RecvStream<'_, T> {
    fn drop(&mut self) {
        self.rx.shared.flavor.cancel_recv(&mut self.wait);
    }
}

impl<T> fmt::Debug for RecvStream<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("ended", &self.ended)
            .finish()
    }
}

/// A sink that sends into the channel; see [`Sender::sink`].
///
/// It buffers at most one message: `start_send` stores it, and `poll_ready`,
/// `poll_flush` and `poll_close` drive it into the channel.
///
/// ```
/// use futures::SinkExt;
/// # futures::executor::block_on(async {
/// let (tx, rx) = conduit::bounded(2);
/// let mut sink: conduit::SendSink<'_, i32> = tx.sink();
/// sink.feed(1).await.unwrap();
/// sink.flush().await.unwrap();
/// assert_eq!(rx.recv(), Ok(1));
/// # });
/// ```
#[must_use = "sinks do nothing unless polled"]
pub struct SendSink<'a, T> {
    tx: Handle<'a, Sender<T>>,
    pending: Option<T>,
    wait: SendWait<T>,
    /// A message is being sent (in `pending`, or offered for rendezvous).
    in_flight: bool,
}

impl<'a, T> SendSink<'a, T> {
    pub(crate) fn new(tx: Handle<'a, Sender<T>>) -> Self {
        SendSink {
            tx,
            pending: None,
            wait: SendWait::new(),
            in_flight: false,
        }
    }

    /// The sender this sink sends through.
    ///
    /// ```
    /// let (tx, _rx) = conduit::unbounded::<i32>();
    /// let sink = tx.sink();
    /// assert!(sink.sender().same_channel(&tx));
    /// ```
    pub fn sender(&self) -> &Sender<T> {
        &self.tx
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError<T>>> {
        if !self.in_flight {
            return Poll::Ready(Ok(()));
        }
        let res = self
            .tx
            .shared
            .flavor
            .poll_send(cx, &mut self.pending, &mut self.wait);
        if res.is_ready() {
            self.in_flight = false;
        }
        res.map_err(SendError)
    }
}

impl<T> Unpin for SendSink<'_, T> {}

impl<T> Sink<T> for SendSink<'_, T> {
    type Error = SendError<T>;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        let this = self.get_mut();
        assert!(!this.in_flight, "start_send called without poll_ready");
        if this.tx.is_disconnected() && this.tx.receiver_count() == 0 {
            return Err(SendError(item));
        }
        this.pending = Some(item);
        this.in_flight = true;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }
}

impl<T> Drop for SendSink<'_, T> {
    fn drop(&mut self) {
        if self.in_flight {
            self.tx.shared.flavor.cancel_send(&mut self.wait);
        }
    }
}

impl<T> fmt::Debug for SendSink<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSink")
            .field("in_flight", &self.in_flight)
            .finish()
    }
}
