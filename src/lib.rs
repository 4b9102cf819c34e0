//! # conduit
//!
//! Lock-free multi-producer multi-consumer channels for threads and async tasks, with
//! blocking, non-blocking (`try_`), timed and async (`Future`, `Stream`, `Sink`)
//! operations that can be mixed freely on one channel, on any async runtime.
//!
//! ## Three flavors
//!
//! | constructor | storage | `send` waits | pick it when |
//! |---|---|---|---|
//! | [`bounded(n)`](bounded), `n ≥ 1` | a ring of `n` slots, allocated once | while full | you want back-pressure and no allocation per message: the default choice |
//! | [`unbounded()`](unbounded) | a linked list of 31-slot blocks | never | producers must never wait and memory is not a concern |
//! | [`rendezvous()`](rendezvous) = `bounded(0)` | none: hand-off | until a receiver takes the message | the sender must know the receiver has the message |
//!
//! Every flavor is MPMC: clone [`Sender`]s and [`Receiver`]s freely; each message goes to
//! exactly one receiver, in FIFO order per sender. Dropping the last `Sender` lets
//! receivers drain the queue and then report disconnection; dropping the last `Receiver`
//! drops the queued messages and fails every send, handing the message back.
//!
//! ```
//! use std::thread;
//!
//! let (tx, rx) = conduit::bounded(16);
//! let producers: Vec<_> = (0..4)
//!     .map(|p| {
//!         let tx = tx.clone();
//!         thread::spawn(move || {
//!             for i in 0..100 {
//!                 tx.send(p * 1000 + i).unwrap();
//!             }
//!         })
//!     })
//!     .collect();
//! drop(tx);
//! let total: usize = rx.iter().count();
//! assert_eq!(total, 400);
//! for p in producers {
//!     p.join().unwrap();
//! }
//! ```
//!
//! ## Async
//!
//! [`Sender::send_async`] and [`Receiver::recv_async`] return futures that work on any
//! executor (no runtime dependency); [`Receiver::stream`] and [`Sender::sink`] adapt to
//! `futures`' `Stream` and `Sink`. All are cancel-safe: a receive future dropped before
//! completing took nothing, and a send future for a bounded or unbounded channel dropped
//! before completing sent nothing.
//!
//! ```
//! # futures::executor::block_on(async {
//! let (tx, rx) = conduit::bounded(1);
//! let sender = async move {
//!     for i in 0..3 {
//!         tx.send_async(i).await.unwrap();
//!     }
//! };
//! let receiver = async {
//!     let mut got = vec![];
//!     while let Ok(i) = rx.recv_async().await {
//!         got.push(i);
//!     }
//!     got
//! };
//! let ((), got) = futures::join!(sender, receiver);
//! assert_eq!(got, [0, 1, 2]);
//! # });
//! ```
//!
//! ## Design
//!
//! - `bounded` is a ring of stamped slots (per slot, a stamp saying which lap's
//!   sender or receiver may use it); a send or receive is one CAS on a position plus one
//!   store to the slot, with head and tail on separate cache lines.
//! - `unbounded` is a list of blocks; a receiver that empties a block frees it, with a
//!   per-slot protocol so that racing receivers never free a block in use.
//! - waiting is written once for all flavors on top of `event-listener`: spin briefly,
//!   then park (threads) or register a waker (tasks). A wake-up is only issued when a
//!   waiter is registered, so the fast path makes no system call and takes no lock.
//! - `rendezvous` pairs senders and receivers under a short lock (a hand-off is a wait by
//!   nature); see [`rendezvous`] for exactly when `try_send` succeeds.
//!
//! Every algorithm is model-checked with `loom` (the `loom-tests` crate).
//!
//! ## Beyond channels
//!
//! - [`shm`]: the bounded ring in a named shared-memory segment that any number of
//!   processes open by name, surviving crashed (`kill -9`) and hostile peers, with
//!   [`shm::inspect`] for tools (the `conduit` command of `conduit-cli`).
//! - [`mailbox`]: named many-to-many mailboxes with envelopes (sender address, tag),
//!   indexed selective receive and request/reply.
//! - [`signal`]: numbered signal-style notifications that coalesce or queue, with mask,
//!   ignore and catch, and a bridge from real OS signals ([`signal::forward_os`]).
#![deny(missing_docs)]
#![warn(unsafe_op_in_unsafe_fn, missing_debug_implementations)]

mod chan;
mod channel;
pub mod error;
mod future;
mod iter;
pub mod mailbox;
mod names;
#[cfg(all(unix, target_pointer_width = "64"))]
pub mod shm;
/// Elsewhere, only the ring protocol, which `signal`'s queues run on.
#[cfg(not(all(unix, target_pointer_width = "64")))]
mod shm {
    pub(crate) mod protocol;
}
pub mod signal;
mod sync;

/// The shared-memory ring protocol on heap storage, for the loom models in
/// `loom-tests` only. Not part of the API.
#[cfg(all(loom, unix, target_pointer_width = "64"))]
#[doc(hidden)]
pub use shm::loom_api as __loom_shm;

pub use channel::{Receiver, Sender, WeakSender, bounded, rendezvous, unbounded};
pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
pub use future::{RecvFut, RecvStream, SendFut, SendSink};
pub use iter::{Drain, IntoIter, Iter, TryIter};
