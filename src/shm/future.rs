//! Futures, streams and sinks of the shm channels. Each keeps one [`AsyncWait`]: counted
//! as an async waiter of its side from its first `Pending` until it completes or is
//! dropped, and armed with the process's helper thread while pending.
//!
//! All are cancel-safe: a receive takes a message only inside the poll that returns it,
//! and a send writes its message only inside the poll that returns `Ready(Ok(()))`.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;

use futures_core::{FusedFuture, FusedStream, Stream};
use futures_sink::Sink;

use super::ShmSafe;
use super::bytes::{ByteSender, write_bytes};
use super::channel::{Sender, write_typed};
use super::endpoint::Endpoint;
use super::hub::AsyncWait;
use super::ring::ShmSlots;
use crate::error::{RecvError, SendError};
pub(crate) use crate::future::Handle;

/// How a receive future turns a slot into its output.
pub(crate) type Read<T> = fn(&ShmSlots, usize) -> Option<T>;

/// A future that sends one message; see [`Sender::send_async`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct SendFut<'a, T: ShmSafe> {
    tx: Handle<'a, Sender<T>>,
    msg: T,
    wait: AsyncWait,
    done: bool,
}

impl<'a, T: ShmSafe> SendFut<'a, T> {
    pub(crate) fn new(tx: Handle<'a, Sender<T>>, msg: T) -> Self {
        SendFut {
            tx,
            msg,
            wait: AsyncWait::new(),
            done: false,
        }
    }
}

impl<T: ShmSafe> Unpin for SendFut<'_, T> {}

impl<T: ShmSafe> Future for SendFut<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "SendFut polled after completion");
        let msg = this.msg;
        let res = this
            .tx
            .endpoint()
            .poll_send_with(cx, &mut this.wait, |slots, i| write_typed(slots, i, &msg));
        if res.is_ready() {
            this.done = true;
        }
        res.map_err(|()| SendError(msg))
    }
}

impl<T: ShmSafe> FusedFuture for SendFut<'_, T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T: ShmSafe> Drop for SendFut<'_, T> {
    fn drop(&mut self) {
        self.tx.endpoint().cancel(&mut self.wait);
    }
}

impl<T: ShmSafe> fmt::Debug for SendFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFut").field("done", &self.done).finish()
    }
}

/// A future that sends one byte message; see [`ByteSender::send_async`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ByteSendFut<'a> {
    tx: &'a ByteSender,
    msg: &'a [u8],
    wait: AsyncWait,
    done: bool,
}

impl<'a> ByteSendFut<'a> {
    pub(crate) fn new(tx: &'a ByteSender, msg: &'a [u8]) -> Self {
        ByteSendFut {
            tx,
            msg,
            wait: AsyncWait::new(),
            done: false,
        }
    }
}

impl Future for ByteSendFut<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "ByteSendFut polled after completion");
        if let Err(e) = this.tx.check_len(this.msg.len()) {
            this.done = true;
            return Poll::Ready(Err(e));
        }
        let msg = this.msg;
        let res = this
            .tx
            .endpoint()
            .poll_send_with(cx, &mut this.wait, |slots, i| write_bytes(slots, i, msg));
        if res.is_ready() {
            this.done = true;
        }
        res.map_err(|()| super::bytes::disconnected())
    }
}

impl FusedFuture for ByteSendFut<'_> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for ByteSendFut<'_> {
    fn drop(&mut self) {
        self.tx.endpoint().cancel(&mut self.wait);
    }
}

impl fmt::Debug for ByteSendFut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSendFut")
            .field("len", &self.msg.len())
            .field("done", &self.done)
            .finish()
    }
}

/// A future that receives one message; see [`Receiver::recv_async`](super::Receiver::recv_async)
/// and [`ByteReceiver::recv_async`](super::ByteReceiver::recv_async).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct RecvFut<'a, T> {
    rx: Handle<'a, Endpoint>,
    read: Read<T>,
    wait: AsyncWait,
    done: bool,
}

impl<'a, T> RecvFut<'a, T> {
    pub(crate) fn new(rx: Handle<'a, Endpoint>, read: Read<T>) -> Self {
        RecvFut {
            rx,
            read,
            wait: AsyncWait::new(),
            done: false,
        }
    }
}

impl<T> Unpin for RecvFut<'_, T> {}

impl<T> Future for RecvFut<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(!this.done, "RecvFut polled after completion");
        let res = this.rx.poll_recv_with(cx, &mut this.wait, this.read);
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

impl<T> Drop for RecvFut<'_, T> {
    fn drop(&mut self) {
        self.rx.cancel(&mut self.wait);
    }
}

impl<T> fmt::Debug for RecvFut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFut").field("done", &self.done).finish()
    }
}

/// A stream of received messages; see [`Receiver::stream`](super::Receiver::stream).
/// It ends when the channel is disconnected and drained.
#[must_use = "streams do nothing unless polled"]
pub struct RecvStream<'a, T> {
    rx: Handle<'a, Endpoint>,
    read: Read<T>,
    wait: AsyncWait,
    ended: bool,
}

impl<'a, T> RecvStream<'a, T> {
    pub(crate) fn new(rx: Handle<'a, Endpoint>, read: Read<T>) -> Self {
        RecvStream {
            rx,
            read,
            wait: AsyncWait::new(),
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
        match this.rx.poll_recv_with(cx, &mut this.wait, this.read) {
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
        self.rx.cancel(&mut self.wait);
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
#[must_use = "sinks do nothing unless polled"]
pub struct SendSink<'a, T: ShmSafe> {
    tx: Handle<'a, Sender<T>>,
    pending: Option<T>,
    wait: AsyncWait,
}

impl<'a, T: ShmSafe> SendSink<'a, T> {
    pub(crate) fn new(tx: Handle<'a, Sender<T>>) -> Self {
        SendSink {
            tx,
            pending: None,
            wait: AsyncWait::new(),
        }
    }

    /// The sender this sink sends through.
    ///
    /// ```
    /// use conduit::shm;
    /// let name = format!("doc-sink-sender-{}", std::process::id());
    /// let tx = shm::Sender::<u32>::create(&name, 4)?;
    /// let sink = tx.sink();
    /// assert_eq!(sink.sender().capacity(), 4);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn sender(&self) -> &Sender<T> {
        &self.tx
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError<T>>> {
        let Some(msg) = self.pending else {
            return Poll::Ready(Ok(()));
        };
        let res = self
            .tx
            .endpoint()
            .poll_send_with(cx, &mut self.wait, |slots, i| write_typed(slots, i, &msg));
        if res.is_ready() {
            self.pending = None;
        }
        res.map_err(|()| SendError(msg))
    }
}

impl<T: ShmSafe> Unpin for SendSink<'_, T> {}

impl<T: ShmSafe> Sink<T> for SendSink<'_, T> {
    type Error = SendError<T>;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
        let this = self.get_mut();
        assert!(
            this.pending.is_none(),
            "start_send called without poll_ready"
        );
        this.pending = Some(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_pending(cx)
    }
}

impl<T: ShmSafe> Drop for SendSink<'_, T> {
    fn drop(&mut self) {
        self.tx.endpoint().cancel(&mut self.wait);
    }
}

impl<T: ShmSafe> fmt::Debug for SendSink<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSink")
            .field("pending", &self.pending.is_some())
            .finish()
    }
}
