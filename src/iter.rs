//! Iterators over a [`Receiver`].

use core::fmt;

use crate::channel::Receiver;

/// A blocking iterator over received messages; see [`Receiver::iter`].
///
/// ```
/// let (tx, rx) = conduit::bounded(4);
/// tx.send(1).unwrap();
/// drop(tx);
/// let mut it: conduit::Iter<'_, i32> = rx.iter();
/// assert_eq!((it.next(), it.next()), (Some(1), None));
/// ```
pub struct Iter<'a, T> {
    pub(crate) rx: &'a Receiver<T>,
}

/// A non-blocking iterator over the messages available now; see [`Receiver::try_iter`].
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// tx.send(1).unwrap();
/// let mut it: conduit::TryIter<'_, i32> = rx.try_iter();
/// assert_eq!((it.next(), it.next()), (Some(1), None)); // None: empty, sender alive
/// ```
pub struct TryIter<'a, T> {
    pub(crate) rx: &'a Receiver<T>,
}

/// An owning blocking iterator; see `IntoIterator for Receiver`.
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// tx.send(1).unwrap();
/// drop(tx);
/// let all: Vec<i32> = rx.into_iter().collect();
/// assert_eq!(all, [1]);
/// ```
pub struct IntoIter<T> {
    rx: Receiver<T>,
}

/// Takes the messages queued when it was created; see [`Receiver::drain`].
///
/// ```
/// let (tx, rx) = conduit::unbounded();
/// tx.send(1).unwrap();
/// let drain: conduit::Drain<'_, i32> = rx.drain();
/// tx.send(2).unwrap(); // not part of the drain
/// assert_eq!(drain.collect::<Vec<_>>(), [1]);
/// assert_eq!(rx.try_recv(), Ok(2));
/// ```
pub struct Drain<'a, T> {
    pub(crate) rx: &'a Receiver<T>,
    pub(crate) remaining: usize,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<T> Iterator for Drain<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.remaining == 0 {
            return None;
        }
        let msg = self.rx.try_recv().ok();
        self.remaining = if msg.is_some() { self.remaining - 1 } else { 0 };
        msg
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}

macro_rules! debug_name {
    ($($ty:ident),*) => {$(
        impl<T> fmt::Debug for $ty<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), " { .. }"))
            }
        }
    )*};
}
debug_name!(Iter, TryIter, Drain);

impl<T> fmt::Debug for IntoIter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntoIter { .. }")
    }
}
