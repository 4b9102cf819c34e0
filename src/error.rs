//! Error types returned by channel operations.
//!
//! Errors that carry the unsent message hand it back through `into_inner()`. Their
//! `Debug` output never prints the message (`Full(..)`), so no `T: Debug` bound is
//! needed, and `Display` gives a short lowercase description.

use core::fmt;

/// The message could not be sent because every receiver is gone.
///
/// The message is handed back in the `.0` field.
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// drop(rx);
/// let err = tx.send(7).unwrap_err();
/// assert_eq!(err.into_inner(), 7);
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

/// An error from [`Sender::try_send`](crate::Sender::try_send).
///
/// ```
/// use conduit::TrySendError;
/// let (tx, _rx) = conduit::bounded(1);
/// tx.try_send(1).unwrap();
/// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The channel is full (for a rendezvous channel: no receiver is waiting).
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

/// An error from [`Sender::send_timeout`](crate::Sender::send_timeout) and
/// [`Sender::send_deadline`](crate::Sender::send_deadline).
///
/// ```
/// use std::time::Duration;
/// use conduit::SendTimeoutError;
/// let (tx, _rx) = conduit::bounded(0);
/// let err = tx.send_timeout(5, Duration::from_millis(1)).unwrap_err();
/// assert_eq!(err, SendTimeoutError::Timeout(5));
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendTimeoutError<T> {
    /// The deadline passed before the message could be sent.
    Timeout(T),
    /// Every receiver is gone.
    Disconnected(T),
}

/// The channel is empty and every sender is gone.
///
/// ```
/// let (tx, rx) = conduit::unbounded::<i32>();
/// drop(tx);
/// assert_eq!(rx.recv(), Err(conduit::RecvError));
/// ```
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub struct RecvError;

/// An error from [`Receiver::try_recv`](crate::Receiver::try_recv).
///
/// ```
/// use conduit::TryRecvError;
/// let (tx, rx) = conduit::unbounded::<i32>();
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// drop(tx);
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
/// ```
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum TryRecvError {
    /// No message is queued right now.
    Empty,
    /// No message is queued and every sender is gone.
    Disconnected,
}

/// An error from [`Receiver::recv_timeout`](crate::Receiver::recv_timeout) and
/// [`Receiver::recv_deadline`](crate::Receiver::recv_deadline).
///
/// ```
/// use std::time::Duration;
/// use conduit::RecvTimeoutError;
/// let (_tx, rx) = conduit::bounded::<i32>(1);
/// assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
/// ```
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum RecvTimeoutError {
    /// The deadline passed before a message arrived.
    Timeout,
    /// No message is queued and every sender is gone.
    Disconnected,
}

impl<T> SendError<T> {
    /// Returns the message that could not be sent.
    ///
    /// ```
    /// assert_eq!(conduit::SendError(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> TrySendError<T> {
    /// Returns the message that could not be sent.
    ///
    /// ```
    /// assert_eq!(conduit::TrySendError::Full(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(m) | Self::Disconnected(m) => m,
        }
    }

    /// Whether the channel was full.
    ///
    /// ```
    /// assert!(conduit::TrySendError::Full(()).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// Whether every receiver was gone.
    ///
    /// ```
    /// assert!(conduit::TrySendError::Disconnected(()).is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }
}

impl<T> SendTimeoutError<T> {
    /// Returns the message that could not be sent.
    ///
    /// ```
    /// assert_eq!(conduit::SendTimeoutError::Timeout(3).into_inner(), 3);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            Self::Timeout(m) | Self::Disconnected(m) => m,
        }
    }

    /// Whether the deadline passed.
    ///
    /// ```
    /// assert!(conduit::SendTimeoutError::Timeout(()).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether every receiver was gone.
    ///
    /// ```
    /// assert!(conduit::SendTimeoutError::Disconnected(()).is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected(_))
    }
}

impl TryRecvError {
    /// Whether the channel was empty.
    ///
    /// ```
    /// assert!(conduit::TryRecvError::Empty.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// Whether every sender was gone.
    ///
    /// ```
    /// assert!(conduit::TryRecvError::Disconnected.is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl RecvTimeoutError {
    /// Whether the deadline passed.
    ///
    /// ```
    /// assert!(conduit::RecvTimeoutError::Timeout.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether every sender was gone.
    ///
    /// ```
    /// assert!(conduit::RecvTimeoutError::Disconnected.is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str("Timeout(..)"),
            Self::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a disconnected channel")
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("sending on a full channel"),
            Self::Disconnected(_) => f.write_str("sending on a disconnected channel"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str("timed out waiting on send operation"),
            Self::Disconnected(_) => f.write_str("sending on a disconnected channel"),
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty and disconnected channel")
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("receiving on an empty channel"),
            Self::Disconnected => f.write_str("receiving on an empty and disconnected channel"),
        }
    }
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out waiting on receive operation"),
            Self::Disconnected => f.write_str("receiving on an empty and disconnected channel"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}
impl<T> std::error::Error for TrySendError<T> {}
impl<T> std::error::Error for SendTimeoutError<T> {}
impl std::error::Error for RecvError {}
impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(err: SendError<T>) -> Self {
        Self::Disconnected(err.0)
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(err: SendError<T>) -> Self {
        Self::Disconnected(err.0)
    }
}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        Self::Disconnected
    }
}
