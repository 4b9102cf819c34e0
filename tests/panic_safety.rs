//! User code that panics inside the channel: a message's `Drop` (when the last receiver
//! discards the queue, or when a rejected send hands the message back) and a `Waker`'s
//! `wake` or `clone`. Every message must be dropped exactly once, the panic must reach
//! the caller whose call ran the panicking code, and the channel must keep working.
//!
//! Small enough for miri: `cargo +nightly miri test --test panic_safety`.

mod common;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Poll, RawWaker, RawWakerVTable, Waker};
use std::thread;

use common::{
    Flag, LIMIT_SECS, Make, all, buffered, poll_noop, poll_once, poll_registered, waker,
    with_timeout,
};
use conduit::{RecvError, SendError, TryRecvError, TrySendError};

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs a test body under a watchdog (a longer one under miri: `LIMIT_SECS`), with the
/// panics these tests cause on purpose kept quiet: they would print a message (and, with
/// `RUST_BACKTRACE` set, a backtrace, which takes miri minutes) each. Other panics are
/// reported as usual.
fn watchdog(f: impl FnOnce() + Send + 'static) {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = message(info.payload());
            if !(expected.starts_with("boom ") || expected == "wake" || expected == "clone") {
                default(info);
            }
        }));
    });
    with_timeout(LIMIT_SECS, f);
}

/// Records which messages were dropped, in drop order.
#[derive(Debug, Default)]
struct Tally(Mutex<Vec<usize>>);

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Tally::default())
    }

    /// Asserts that exactly the messages `ids` were dropped, each once.
    fn assert_dropped_once(&self, ids: impl IntoIterator<Item = usize>, what: &str) {
        let mut dropped = self.0.lock().unwrap().clone();
        dropped.sort_unstable();
        let mut expected: Vec<usize> = ids.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(
            dropped, expected,
            "{what}: messages dropped (each exactly once)"
        );
    }
}

/// A message whose `Drop` records it in the tally, then panics if `panics`.
#[derive(Debug)]
struct Boom {
    id: usize,
    panics: bool,
    tally: Arc<Tally>,
}

impl Boom {
    fn new(id: usize, panics: bool, tally: &Arc<Tally>) -> Self {
        Boom {
            id,
            panics,
            tally: tally.clone(),
        }
    }
}

impl Drop for Boom {
    fn drop(&mut self) {
        self.tally.0.lock().unwrap().push(self.id);
        if self.panics {
            panic!("boom {}", self.id);
        }
    }
}

/// The message of a panic payload.
fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs `f`, which must panic with `expected`.
fn expect_panic(expected: &str, what: &str, f: impl FnOnce()) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => panic!("{what}: expected the panic {expected:?}, got none"),
        Err(p) => assert_eq!(message(&*p), expected, "{what}"),
    }
}

fn bounded4<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::bounded(4)
}

/// The flavors the discard tests use: unbounded (more than one block's worth of
/// messages), bounded(4) (with its positions moved on so the queue wraps) and bounded(1).
fn discarding() -> Vec<(Make<Boom>, usize)> {
    vec![
        (("unbounded", conduit::unbounded), 40),
        (("bounded(4)", bounded4), 4),
        (("bounded(1)", || conduit::bounded(1)), 1),
    ]
}

/// Fills a fresh channel with `n` messages (ids `0..n`), of which `panicking` panic when
/// dropped. For bounded channels the positions are first moved on by three, so the
/// queued messages wrap around the ring.
fn filled(
    make: fn() -> (conduit::Sender<Boom>, conduit::Receiver<Boom>),
    n: usize,
    panicking: &[usize],
    tally: &Arc<Tally>,
) -> (conduit::Sender<Boom>, conduit::Receiver<Boom>) {
    let (tx, rx) = make();
    for _ in 0..3 {
        tx.send(Boom::new(1000, false, tally)).unwrap();
        drop(rx.recv().unwrap());
    }
    tally.0.lock().unwrap().clear();
    for id in 0..n {
        tx.send(Boom::new(id, panicking.contains(&id), tally))
            .unwrap();
    }
    (tx, rx)
}

/// The messages that panic in the discard tests: the first (as in the issue's
/// reproduction), a second one, and the last.
fn panicking(n: usize) -> Vec<usize> {
    vec![0, n / 2, n - 1]
}

/// What the waker does.
#[derive(Default)]
struct WakerCtl {
    /// `wake` panics (after recording the wake).
    panic_on_wake: AtomicBool,
    /// `clone` panics.
    panic_on_clone: AtomicBool,
    woken: AtomicUsize,
}

impl WakerCtl {
    fn new(panic_on_wake: bool) -> Arc<Self> {
        let ctl = WakerCtl::default();
        ctl.panic_on_wake.store(panic_on_wake, Ordering::SeqCst);
        Arc::new(ctl)
    }

    fn woken(&self) -> usize {
        self.woken.load(Ordering::SeqCst)
    }

    /// A waker controlled by `ctl` (a raw one: `std::task::Wake` cannot make `clone`
    /// panic).
    fn waker(ctl: &Arc<Self>) -> Waker {
        let data = Arc::into_raw(ctl.clone()).cast::<()>();
        // SAFETY: `data` is an `Arc<WakerCtl>` turned raw, which the vtable's functions
        // expect, each handling the reference count as documented on `RawWaker`.
        unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(raw_clone, raw_wake, raw_wake_by_ref, raw_drop);

/// # Safety
/// `data` is a live `Arc<WakerCtl>` pointer (the waker's).
unsafe fn ctl<'a>(data: *const ()) -> &'a WakerCtl {
    // SAFETY: the caller's contract.
    unsafe { &*data.cast::<WakerCtl>() }
}

unsafe fn raw_clone(data: *const ()) -> RawWaker {
    // SAFETY: the waker being cloned is alive.
    if unsafe { ctl(data) }.panic_on_clone.load(Ordering::SeqCst) {
        panic!("clone");
    }
    // SAFETY: as above; the clone takes a new count.
    unsafe { Arc::increment_strong_count(data.cast::<WakerCtl>()) };
    RawWaker::new(data, &VTABLE)
}

unsafe fn raw_wake(data: *const ()) {
    // SAFETY: `wake` consumes the waker: its count is ours to release, and is released
    // before a panic, so a panicking wake leaks nothing.
    let ctl = unsafe { Arc::from_raw(data.cast::<WakerCtl>()) };
    let panics = record_wake(&ctl);
    drop(ctl);
    if panics {
        panic!("wake");
    }
}

unsafe fn raw_wake_by_ref(data: *const ()) {
    // SAFETY: the waker is alive.
    if record_wake(unsafe { ctl(data) }) {
        panic!("wake");
    }
}

unsafe fn raw_drop(data: *const ()) {
    // SAFETY: the waker's own count, released once.
    drop(unsafe { Arc::from_raw(data.cast::<WakerCtl>()) });
}

fn record_wake(ctl: &WakerCtl) -> bool {
    ctl.woken.fetch_add(1, Ordering::SeqCst);
    ctl.panic_on_wake.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------
// The last receiver discards messages whose `Drop` panics

/// The reproduction, for each buffered flavor: the last receiver's drop drops
/// every queued message once, passes on the first panic, and leaves a channel the
/// sender can still use (and drop) correctly.
#[test]
fn last_receiver_drop_discards_each_message_once_despite_panics() {
    for ((name, make), n) in discarding() {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = filled(make, n, &panicking(n), &tally);
            expect_panic("boom 0", name, || drop(rx));
            tally.assert_dropped_once(0..n, name);

            // The channel is consistent: disconnected, empty, and sends hand the
            // message back (dropped here, once).
            assert!(tx.is_disconnected(), "{name}");
            assert_eq!(tx.len(), 0, "{name}");
            let back = tx.send(Boom::new(n, false, &tally)).unwrap_err().0;
            assert_eq!(back.id, n, "{name}");
            drop(back);
            assert!(matches!(
                tx.try_send(Boom::new(n + 1, false, &tally)),
                Err(TrySendError::Disconnected(_))
            ));
            drop(tx);
            tally.assert_dropped_once(0..n + 2, name);
            assert_eq!(Arc::strong_count(&tally), 1, "{name}: nothing leaked");
        });
    }
}

/// The last receiver is the last handle: the channel is freed while the panic unwinds,
/// which must neither drop a message again nor abort.
#[test]
fn last_handle_drop_discards_each_message_once_despite_panics() {
    for ((name, make), n) in discarding() {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = filled(make, n, &panicking(n), &tally);
            drop(tx);
            expect_panic("boom 0", name, || drop(rx));
            tally.assert_dropped_once(0..n, name);
            assert_eq!(Arc::strong_count(&tally), 1, "{name}: nothing leaked");
        });
    }
}

/// A `WeakSender` keeps the channel alive past both sides' last handles: the messages
/// are dropped by the last receiver, and the channel's own drop finds nothing left.
#[test]
fn weak_sender_outlives_a_panicking_discard() {
    for ((name, make), n) in discarding() {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = filled(make, n, &panicking(n), &tally);
            let weak = tx.downgrade();
            drop(tx);
            expect_panic("boom 0", name, || drop(rx));
            tally.assert_dropped_once(0..n, name);
            assert!(weak.upgrade().is_none(), "{name}");
            drop(weak);
            tally.assert_dropped_once(0..n, name);
            assert_eq!(Arc::strong_count(&tally), 1, "{name}: nothing leaked");
        });
    }
}

/// Only a later message panics (the bounded ring used to spin forever on this one).
#[test]
fn a_later_panicking_message_does_not_stop_the_discard() {
    for ((name, make), n) in discarding() {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = filled(make, n, &[n - 1], &tally);
            let expected = format!("boom {}", n - 1);
            expect_panic(&expected, name, || drop(rx));
            tally.assert_dropped_once(0..n, name);
            drop(tx);
            tally.assert_dropped_once(0..n, name);
        });
    }
}

/// Rendezvous: a parked async sender's message belongs to the sender. Dropping the last
/// receiver does not drop it; the send hands it back (its drop panics in the caller
/// that drops it), or dropping the pending future drops it, once.
#[test]
fn rendezvous_parked_sender_message_is_dropped_once() {
    watchdog(|| {
        let tally = Tally::new();
        let (tx, rx) = conduit::rendezvous::<Boom>();
        let mut returned = tx.send_async(Boom::new(1, true, &tally));
        let mut dropped = tx.send_async(Boom::new(2, true, &tally));
        assert!(poll_noop(&mut returned).is_pending());
        assert!(poll_noop(&mut dropped).is_pending());
        drop(rx);
        tally.assert_dropped_once([], "the receiver's drop");
        let Poll::Ready(Err(SendError(msg))) = poll_noop(&mut returned) else {
            panic!("the send fails once disconnected");
        };
        expect_panic("boom 1", "dropping the returned message", || drop(msg));
        expect_panic("boom 2", "dropping the pending send", || drop(dropped));
        drop(returned);
        drop(tx);
        tally.assert_dropped_once([1, 2], "rendezvous");
    });
}

/// Rendezvous: a sender blocked in `send` when the last receiver goes gets its message
/// back and drops it in its own thread (or finds the channel disconnected at once).
#[test]
fn rendezvous_blocked_sender_gets_its_message_back() {
    watchdog(|| {
        let tally = Tally::new();
        let (tx, rx) = conduit::rendezvous::<Boom>();
        let sender = {
            let tally = tally.clone();
            thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    let _ = tx.send(Boom::new(1, true, &tally));
                }))
                .map_err(|p| message(&*p))
            })
        };
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err("boom 1".to_string()));
        tally.assert_dropped_once([1], "rendezvous");
    });
}

// ---------------------------------------------------------------------------------------
// Rejected sends

/// A message handed back by a failed `try_send` (full, then disconnected) panics when the
/// caller drops it; the channel is untouched by it and keeps working.
#[test]
fn rejected_try_send_message_panics_in_the_caller() {
    for (name, make) in all::<Boom>() {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = make();
            let cap = tx.capacity().unwrap_or(usize::MAX);
            if cap != usize::MAX {
                for id in 0..cap {
                    tx.send(Boom::new(id, false, &tally)).unwrap();
                }
                expect_panic("boom 100", name, || {
                    let _ = tx.try_send(Boom::new(100, true, &tally));
                });
                // Still working: the queued messages come out, and a new one goes in.
                for id in 0..cap {
                    assert_eq!(rx.try_recv().unwrap().id, id, "{name}");
                }
                if cap > 0 {
                    tx.send(Boom::new(101, false, &tally)).unwrap();
                    assert_eq!(rx.recv().unwrap().id, 101, "{name}");
                }
            }
            drop(rx);
            expect_panic("boom 102", name, || {
                let _ = tx.try_send(Boom::new(102, true, &tally));
            });
            expect_panic("boom 103", name, || {
                let _ = tx.send(Boom::new(103, true, &tally));
            });
            drop(tx);
            let mut ids = vec![102, 103];
            if cap != usize::MAX {
                ids.extend((0..cap).chain([100]));
                if cap > 0 {
                    ids.push(101);
                }
            }
            tally.assert_dropped_once(ids, name);
        });
    }
}

/// Senders race the last receiver's drop: each message is either delivered, handed
/// back to its sender (whose drop of it panics there), or discarded by the receiver's
/// drop (whose first panic reaches that drop), and every one is dropped exactly once.
#[test]
fn sends_racing_the_last_receiver_drop_lose_and_double_nothing() {
    for (name, make) in all::<Boom>() {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = make();
            const N: usize = 6;
            let sender = {
                let tally = tally.clone();
                thread::spawn(move || {
                    for id in 0..N {
                        // The message handed back (if any) is dropped in here.
                        let _ = catch_unwind(AssertUnwindSafe(|| {
                            let _ = tx.send(Boom::new(id, id % 2 == 1, &tally));
                        }));
                    }
                })
            };
            if let Ok(first) = rx.recv() {
                let _ = catch_unwind(AssertUnwindSafe(|| drop(first)));
            }
            let _ = catch_unwind(AssertUnwindSafe(|| drop(rx)));
            sender.join().unwrap();
            tally.assert_dropped_once(0..N, name);
        });
    }
}

// ---------------------------------------------------------------------------------------
// Wakers that panic

/// Disconnection wakes every pending async receiver even if one waker panics; the panic
/// reaches the dropping sender, and the receivers then see the disconnection.
#[test]
fn disconnect_wakes_every_receiver_despite_a_panicking_waker() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let bad = WakerCtl::new(true);
            let good = Flag::new();
            let mut first = rx.recv_async();
            let mut second = rx.recv_async();
            assert!(poll_once(&mut first, &WakerCtl::waker(&bad)).is_pending());
            assert!(poll_once(&mut second, &waker(&good)).is_pending());
            expect_panic("wake", name, || drop(tx));
            assert_eq!(bad.woken(), 1, "{name}");
            assert!(good.woken(), "{name}: the other receiver is woken too");
            assert_eq!(poll_noop(&mut first), Poll::Ready(Err(RecvError)), "{name}");
            assert_eq!(
                poll_noop(&mut second),
                Poll::Ready(Err(RecvError)),
                "{name}"
            );
            drop((first, second));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        });
    }
}

/// The last receiver's drop wakes every pending async sender even if one waker panics,
/// and still discards the queued messages (once each); the senders get theirs back.
#[test]
fn last_receiver_drop_wakes_every_sender_despite_a_panicking_waker() {
    let flavors: [Make<Boom>; 2] = [
        ("bounded(1)", || conduit::bounded(1)),
        ("rendezvous", conduit::rendezvous),
    ];
    for (name, make) in flavors {
        watchdog(move || {
            let tally = Tally::new();
            let (tx, rx) = make();
            let queued = tx.capacity().unwrap();
            for id in 0..queued {
                tx.send(Boom::new(id, false, &tally)).unwrap();
            }
            let bad = WakerCtl::new(true);
            let good = Flag::new();
            let mut first = tx.send_async(Boom::new(10, false, &tally));
            let mut second = tx.send_async(Boom::new(11, false, &tally));
            assert!(poll_registered(&mut first, &WakerCtl::waker(&bad)).is_pending());
            assert!(poll_registered(&mut second, &waker(&good)).is_pending());
            good.reset();
            expect_panic("wake", name, || drop(rx));
            tally.assert_dropped_once(0..queued, name);
            assert!(good.woken(), "{name}: the other sender is woken too");
            for (fut, id) in [(&mut first, 10), (&mut second, 11)] {
                let Poll::Ready(Err(SendError(msg))) = poll_noop(fut) else {
                    panic!("{name}: the send fails once disconnected");
                };
                assert_eq!(msg.id, id, "{name}");
            }
            drop((first, second));
            drop(tx);
            tally.assert_dropped_once((0..queued).chain([10, 11]), name);
        });
    }
}

/// A send whose wake-up of a pending receiver panics: the panic reaches the sender, the
/// message is delivered, and later wake-ups work.
#[test]
fn send_waking_a_panicking_receiver_waker_delivers() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let bad = WakerCtl::new(true);
            let mut fut = rx.recv_async();
            assert!(poll_once(&mut fut, &WakerCtl::waker(&bad)).is_pending());
            expect_panic("wake", name, || tx.send(1).unwrap());
            assert_eq!(poll_noop(&mut fut), Poll::Ready(Ok(1)), "{name}");
            drop(fut);
            // The wait machinery still works: a new pending receive is woken by a send.
            let good = Flag::new();
            let mut fut = rx.recv_async();
            assert!(poll_once(&mut fut, &waker(&good)).is_pending());
            tx.send(2).unwrap();
            assert!(good.woken(), "{name}");
            assert_eq!(poll_noop(&mut fut), Poll::Ready(Ok(2)), "{name}");
        });
    }
}

/// A receive whose wake-up of a pending sender panics: the panic reaches the receiver
/// (the message it took is dropped with it, once), and the sender's send completes.
#[test]
fn recv_waking_a_panicking_sender_waker_completes_the_send() {
    watchdog(|| {
        let tally = Tally::new();
        let (tx, rx) = conduit::bounded::<Boom>(1);
        tx.send(Boom::new(0, false, &tally)).unwrap();
        let bad = WakerCtl::new(true);
        let mut fut = tx.send_async(Boom::new(1, false, &tally));
        assert!(poll_registered(&mut fut, &WakerCtl::waker(&bad)).is_pending());
        expect_panic("wake", "recv", || drop(rx.recv()));
        tally.assert_dropped_once([0], "the received message");
        assert!(matches!(poll_noop(&mut fut), Poll::Ready(Ok(()))));
        drop(fut);
        assert_eq!(rx.recv().unwrap().id, 1);
        tally.assert_dropped_once([0, 1], "bounded(1)");
    });
}

/// Rendezvous: a blocking send that wakes an async receiver whose waker panics must not
/// leave its offer (which lives on the sender's stack) queued while it unwinds.
#[test]
fn rendezvous_blocking_send_withdraws_its_offer_when_a_waker_panics() {
    watchdog(|| {
        let tally = Tally::new();
        let (tx, rx) = conduit::rendezvous::<Boom>();
        let bad = WakerCtl::new(true);
        let mut fut = rx.recv_async();
        assert!(poll_once(&mut fut, &WakerCtl::waker(&bad)).is_pending());
        expect_panic("wake", "send", || {
            let _ = tx.send(Boom::new(1, false, &tally));
        });
        tally.assert_dropped_once([1], "the unwinding send's message");
        // Nothing is offered any more; the channel still pairs a new send.
        let good = Flag::new();
        assert!(poll_once(&mut fut, &waker(&good)).is_pending());
        let mut send = tx.send_async(Boom::new(2, false, &tally));
        assert!(poll_noop(&mut send).is_pending());
        assert!(good.woken());
        let Poll::Ready(Ok(msg)) = poll_noop(&mut fut) else {
            panic!("the receive takes the new offer");
        };
        assert_eq!(msg.id, 2);
        assert!(matches!(poll_noop(&mut send), Poll::Ready(Ok(()))));
        drop((send, msg, fut));
        tally.assert_dropped_once([1, 2], "rendezvous");
    });
}

/// Rendezvous: an async send whose wake of a pending receiver panics keeps its offer;
/// the receiver takes it and the send completes.
#[test]
fn rendezvous_async_send_keeps_its_offer_when_a_waker_panics() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let bad = WakerCtl::new(true);
        let mut recv = rx.recv_async();
        assert!(poll_once(&mut recv, &WakerCtl::waker(&bad)).is_pending());
        let mut send = tx.send_async(7);
        expect_panic("wake", "poll_send", || {
            let _ = poll_noop(&mut send);
        });
        assert_eq!(poll_noop(&mut recv), Poll::Ready(Ok(7)));
        assert_eq!(poll_noop(&mut send), Poll::Ready(Ok(())));
    });
}

/// Rendezvous: a waker whose `clone` panics while an async send queues its offer leaves
/// the message with the future, so it is neither lost nor dropped.
#[test]
fn rendezvous_async_send_keeps_its_message_when_waker_clone_panics() {
    watchdog(|| {
        let tally = Tally::new();
        let (tx, rx) = conduit::rendezvous::<Boom>();
        let ctl = WakerCtl::new(false);
        let bad = WakerCtl::waker(&ctl);
        ctl.panic_on_clone.store(true, Ordering::SeqCst);
        let mut send = tx.send_async(Boom::new(1, false, &tally));
        expect_panic("clone", "poll_send", || {
            let _ = poll_once(&mut send, &bad);
        });
        tally.assert_dropped_once([], "the message is still the future's");
        assert!(poll_noop(&mut send).is_pending());
        assert_eq!(rx.try_recv().unwrap().id, 1);
        assert!(matches!(poll_noop(&mut send), Poll::Ready(Ok(()))));
        drop(send);
        tally.assert_dropped_once([1], "rendezvous");
        drop(bad);
    });
}

/// Rendezvous: disconnection runs no waker `clone` under its lock, so a waker whose
/// clone panics neither stops the disconnect nor keeps others from being woken.
#[test]
fn rendezvous_disconnect_does_not_clone_wakers() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let ctl = WakerCtl::new(false);
        let good = Flag::new();
        let mut first = rx.recv_async();
        let mut second = rx.recv_async();
        assert!(poll_once(&mut first, &WakerCtl::waker(&ctl)).is_pending());
        assert!(poll_once(&mut second, &waker(&good)).is_pending());
        ctl.panic_on_clone.store(true, Ordering::SeqCst);
        drop(tx);
        assert_eq!(ctl.woken(), 1);
        assert!(good.woken());
        assert_eq!(poll_noop(&mut first), Poll::Ready(Err(RecvError)));
        assert_eq!(poll_noop(&mut second), Poll::Ready(Err(RecvError)));
    });
}

/// A waker whose `clone` panics while an async wait registers: the poll panics, the
/// registration is not half made, and the next poll works.
#[test]
fn waker_clone_panic_while_registering_leaves_the_wait_usable() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let ctl = WakerCtl::new(false);
            let bad = WakerCtl::waker(&ctl);
            ctl.panic_on_clone.store(true, Ordering::SeqCst);
            let mut fut = rx.recv_async();
            expect_panic("clone", name, || {
                let _ = poll_once(&mut fut, &bad);
            });
            let good = Flag::new();
            assert!(poll_once(&mut fut, &waker(&good)).is_pending(), "{name}");
            tx.send(3).unwrap();
            assert!(good.woken(), "{name}");
            assert_eq!(poll_noop(&mut fut), Poll::Ready(Ok(3)), "{name}");
            drop(bad);
        });
    }
}

/// A registered async wait polled again with a waker whose `clone` panics (the stored
/// waker is replaced under the wait list's lock): the poll panics, the lock is free
/// again, the wait keeps its old waker, which a send still wakes, and other waits
/// register and are woken as before.
#[test]
fn waker_clone_panic_while_refreshing_leaves_the_list_unlocked() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let good = Flag::new();
            let mut fut = rx.recv_async();
            assert!(poll_once(&mut fut, &waker(&good)).is_pending(), "{name}");
            let ctl = WakerCtl::new(false);
            ctl.panic_on_clone.store(true, Ordering::SeqCst);
            expect_panic("clone", name, || {
                let _ = poll_once(&mut fut, &WakerCtl::waker(&ctl));
            });
            let other = Flag::new();
            let mut second = rx.recv_async();
            assert!(
                poll_once(&mut second, &waker(&other)).is_pending(),
                "{name}"
            );
            tx.send(1).unwrap();
            assert!(good.woken(), "{name}: the old waker is still registered");
            assert_eq!(poll_noop(&mut fut), Poll::Ready(Ok(1)), "{name}");
            tx.send(2).unwrap();
            assert!(other.woken(), "{name}");
            assert_eq!(poll_noop(&mut second), Poll::Ready(Ok(2)), "{name}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Signal targets: async waits whose wakers panic

/// A raise wakes every async wait of the target even if one waker panics: the panic
/// reaches the raiser after the raise is recorded, and both waits then take their
/// deliveries.
#[test]
fn raise_wakes_every_async_wait_despite_a_panicking_waker() {
    use conduit::signal::{SigSet, Signal, Target};
    watchdog(|| {
        let target = Target::new();
        let raiser = target.raiser();
        let (one, two) = (Signal::new(1).unwrap(), Signal::new(2).unwrap());
        let bad = WakerCtl::new(true);
        let good = Flag::new();
        let set = |s: Signal| -> SigSet { [s].into_iter().collect() };
        let mut first = target.wait_for_async(&set(one));
        let mut second = target.wait_for_async(&set(two));
        assert!(poll_once(&mut first, &WakerCtl::waker(&bad)).is_pending());
        assert!(poll_once(&mut second, &waker(&good)).is_pending());
        expect_panic("wake", "signal", || raiser.raise(one).unwrap());
        assert_eq!(bad.woken(), 1);
        assert!(good.woken(), "the other wait is woken too");
        // The raise was recorded; the wait for 2 finds nothing and registers again.
        assert!(matches!(poll_noop(&mut first), Poll::Ready(i) if i.signal() == one));
        assert!(poll_once(&mut second, &waker(&good)).is_pending());
        raiser.raise(two).unwrap();
        assert!(matches!(poll_noop(&mut second), Poll::Ready(i) if i.signal() == two));
        assert!(target.try_wait().is_none());
    });
}

/// An async wait whose waker's `clone` panics while registering: the poll panics,
/// nothing is left registered, and the target still delivers to the next wait.
#[test]
fn async_wait_whose_waker_clone_panics_leaves_nothing_registered() {
    use conduit::signal::{Signal, Target};
    watchdog(|| {
        let target = Target::new();
        let raiser = target.raiser();
        let sig = Signal::new(3).unwrap();
        let bad = WakerCtl::new(false);
        bad.panic_on_clone.store(true, Ordering::SeqCst);
        let mut fut = target.wait_async();
        expect_panic("clone", "signal", || {
            let _ = poll_once(&mut fut, &WakerCtl::waker(&bad));
        });
        drop(fut);
        let good = Flag::new();
        let mut next = target.wait_async();
        assert!(poll_once(&mut next, &waker(&good)).is_pending());
        raiser.raise(sig).unwrap();
        assert!(good.woken());
        assert!(matches!(poll_noop(&mut next), Poll::Ready(i) if i.signal() == sig));
    });
}
