//! Unit tests of the flavors, small enough to run under miri
//! (`cargo +nightly miri test -p conduit --lib`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::{Receiver, Sender, TryRecvError, bounded, rendezvous, unbounded};

type Make = fn() -> (Sender<usize>, Receiver<usize>);

fn flavors() -> Vec<(&'static str, Make)> {
    vec![
        ("bounded(1)", || bounded(1)),
        ("bounded(3)", || bounded(3)),
        ("unbounded", unbounded),
    ]
}

#[test]
fn fifo_across_wraps_and_blocks() {
    for (name, make) in flavors() {
        let (tx, rx) = make();
        let cap = tx.capacity().unwrap_or(usize::MAX);
        let mut next_in = 0;
        let mut next_out = 0;
        // Fill to capacity (or 40 for unbounded, crossing a block), drain, repeat.
        for _ in 0..5 {
            for _ in 0..cap.min(40) {
                tx.try_send(next_in).unwrap();
                next_in += 1;
            }
            assert_eq!(rx.len(), cap.min(40), "{name}");
            while let Ok(m) = rx.try_recv() {
                assert_eq!(m, next_out, "{name}");
                next_out += 1;
            }
        }
        assert_eq!(next_in, next_out, "{name}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
    }
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn queued_messages_dropped_once() {
    for cap in [Some(4), Some(64), None] {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = match cap {
            Some(c) => bounded(c),
            None => unbounded(),
        };
        let n = cap.unwrap_or(70);
        for _ in 0..n {
            tx.send(Counted(drops.clone())).unwrap();
        }
        drop(rx.recv().unwrap());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(rx);
        // Dropped when the last receiver went, while the sender is still alive.
        assert_eq!(drops.load(Ordering::SeqCst), n);
        let err = tx.send(Counted(drops.clone())).unwrap_err();
        drop(err);
        drop(tx);
        assert_eq!(drops.load(Ordering::SeqCst), n + 1);
    }
}

#[test]
fn unread_messages_dropped_with_channel() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = unbounded();
    let weak = tx.downgrade();
    for _ in 0..40 {
        tx.send(Counted(drops.clone())).unwrap();
    }
    drop(tx);
    drop(rx);
    assert_eq!(drops.load(Ordering::SeqCst), 40);
    assert!(weak.upgrade().is_none());
}

#[test]
fn threads_exchange_exactly_once() {
    let per_sender = if cfg!(miri) { 50 } else { 5_000 };
    let mut makers = flavors();
    makers.push(("rendezvous", rendezvous));
    for (name, make) in makers {
        let (tx, rx) = make();
        let got: usize = thread::scope(|s| {
            for p in 0..2 {
                let tx = tx.clone();
                s.spawn(move || {
                    for i in 0..per_sender {
                        tx.send(p * per_sender + i).unwrap();
                    }
                });
            }
            drop(tx);
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let rx = rx.clone();
                    s.spawn(move || rx.iter().collect::<Vec<_>>())
                })
                .collect();
            let mut all: Vec<usize> = consumers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            all.sort_unstable();
            assert!(all.iter().copied().eq(0..2 * per_sender), "{name}");
            all.len()
        });
        assert_eq!(got, 2 * per_sender, "{name}");
    }
}

/// A waker that counts its wake-ups.
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `fut` once with `waker`.
fn poll_with<F: std::future::Future + Unpin>(
    fut: &mut F,
    waker: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    std::pin::Pin::new(fut).poll(&mut std::task::Context::from_waker(waker))
}

/// Polls `fut` with `waker` until it returns `Pending` without having woken its task
/// (an async send's yields do; a registered wait does not).
fn poll_until_registered<F: std::future::Future + Unpin>(
    fut: &mut F,
    waker: &std::task::Waker,
) -> std::task::Poll<F::Output> {
    let flag = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let own = std::task::Waker::from(flag.clone());
    loop {
        let before = flag.0.load(Ordering::SeqCst);
        match poll_with(fut, &own) {
            std::task::Poll::Pending if flag.0.load(Ordering::SeqCst) == before => {
                return poll_with(fut, waker);
            }
            std::task::Poll::Pending => {}
            ready => return ready,
        }
    }
}

/// Every flavor, rendezvous included, with whether its senders can wait (unbounded's
/// never do).
fn every_flavor() -> Vec<(&'static str, Make, bool)> {
    vec![
        ("bounded(1)", || bounded(1), true),
        ("unbounded", unbounded, false),
        ("rendezvous", rendezvous, true),
    ]
}

/// Makes `tx` unable to send without waiting: fills a bounded channel (a rendezvous
/// channel with no receiver waiting is already there).
fn fill(tx: &Sender<usize>) {
    while tx.try_send(0).is_ok() {}
}

/// Async waiters pending when the other side disconnects are all woken, and once they
/// are gone (two complete with the disconnection, one is dropped woken but unpolled)
/// the waiter counts are back to exactly zero. (On one thread this held before too:
/// each waiter passed its notification on and so withdrew a count; the drift needed a
/// poll racing the disconnection, which the next tests and the loom models provoke.)
#[test]
fn waiter_counts_exact_after_disconnect() {
    for (name, make, senders_wait) in every_flavor() {
        let flag = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(flag.clone());

        // Receivers waiting for a message; the last sender goes.
        let (tx, rx) = make();
        let mut futs: Vec<_> = (0..3).map(|_| rx.recv_async()).collect();
        for f in &mut futs {
            assert!(poll_with(f, &waker).is_pending(), "{name}");
        }
        assert_ne!(rx.__waiter_counts(), [0, 0], "{name}: registered");
        drop(tx);
        assert_eq!(flag.0.load(Ordering::SeqCst), 3, "{name}: all woken");
        let dropped_unpolled = futs.pop().unwrap();
        for f in &mut futs {
            assert_eq!(
                poll_with(f, &waker),
                std::task::Poll::Ready(Err(crate::RecvError))
            );
        }
        drop(dropped_unpolled);
        drop(futs);
        assert_eq!(
            rx.__waiter_counts(),
            [0, 0],
            "{name}: receivers after disconnect"
        );
        drop(rx);

        if !senders_wait {
            continue;
        }
        // Senders waiting for room; the last receiver goes.
        flag.0.store(0, Ordering::SeqCst);
        let (tx, rx) = make();
        fill(&tx);
        let mut futs: Vec<_> = (0..3).map(|i| tx.send_async(i)).collect();
        for f in &mut futs {
            // An async send yields to its executor before it registers (`poll` does
            // not return `Pending` until it has).
            assert!(poll_until_registered(f, &waker).is_pending(), "{name}");
        }
        flag.0.store(0, Ordering::SeqCst);
        assert_ne!(tx.__waiter_counts(), [0, 0], "{name}: registered");
        drop(rx);
        assert_eq!(flag.0.load(Ordering::SeqCst), 3, "{name}: all woken");
        let dropped_unpolled = futs.pop().unwrap();
        for (i, f) in futs.iter_mut().enumerate() {
            assert_eq!(
                poll_with(f, &waker),
                std::task::Poll::Ready(Err(crate::SendError(i))),
                "{name}"
            );
        }
        drop(dropped_unpolled);
        drop(futs);
        assert_eq!(
            tx.__waiter_counts(),
            [0, 0],
            "{name}: senders after disconnect"
        );
    }
}

/// Without a disconnection, the counts also return to exactly zero after pending
/// async waits are cancelled, after a woken one is dropped (passing its wake-up on),
/// and after they complete.
#[test]
fn waiter_counts_exact_after_cancel_and_completion() {
    for (name, make, senders_wait) in every_flavor() {
        let waker = std::task::Waker::noop();
        let (tx, rx) = make();

        // Cancelled while pending.
        let mut futs: Vec<_> = (0..2).map(|_| rx.recv_async()).collect();
        for f in &mut futs {
            assert!(poll_with(f, waker).is_pending(), "{name}");
        }
        drop(futs);
        assert_eq!(rx.__waiter_counts(), [0, 0], "{name}: cancelled receives");

        // One woken and dropped unpolled; the other takes the message.
        let mut first = rx.recv_async();
        let mut second = rx.recv_async();
        assert!(poll_with(&mut first, waker).is_pending(), "{name}");
        assert!(poll_with(&mut second, waker).is_pending(), "{name}");
        let mut send = tx.send_async(7);
        // Rendezvous: the offer waits for a receiver to take it.
        let sent = poll_with(&mut send, waker);
        drop(first);
        assert_eq!(
            poll_with(&mut second, waker),
            std::task::Poll::Ready(Ok(7)),
            "{name}"
        );
        if sent.is_pending() {
            assert_eq!(
                poll_with(&mut send, waker),
                std::task::Poll::Ready(Ok(())),
                "{name}"
            );
        }
        drop(send);
        assert_eq!(rx.__waiter_counts(), [0, 0], "{name}: completed receives");

        if senders_wait {
            // Senders: one cancelled, one completed.
            fill(&tx);
            let mut a = tx.send_async(1);
            let mut b = tx.send_async(2);
            assert!(poll_with(&mut a, waker).is_pending(), "{name}");
            assert!(poll_with(&mut b, waker).is_pending(), "{name}");
            drop(a);
            let mut got = Vec::new();
            while let Ok(m) = rx.try_recv() {
                got.push(m);
            }
            assert_eq!(
                poll_with(&mut b, waker),
                std::task::Poll::Ready(Ok(())),
                "{name}"
            );
            drop(b);
            got.extend(rx.try_iter());
            assert_eq!(got.last(), Some(&2), "{name}: {got:?}");
            assert_eq!(tx.__waiter_counts(), [0, 0], "{name}: senders");
        }
    }
}

/// How long the threaded tests below wait for something a correct channel produces
/// promptly; past it they fail instead of hanging.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Spins (yielding) until `cond()` holds, failing the test past [`PATIENCE`].
fn spin_until(what: &str, cond: impl Fn() -> bool) {
    let give_up = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < give_up,
            "gave up waiting: {what}"
        );
        thread::yield_now();
    }
}

/// An async wait is re-polled in a loop on one thread while the other side disconnects
/// on another, so the disconnection's notification lands between a poll's failed
/// attempt and its look at its entry (the entry found notified): the counts end at
/// zero. Before, that entry's count was never consumed. The loop cannot hang: it polls
/// without waiting for a wake-up, and a disconnected channel completes every poll.
#[test]
fn waiter_counts_exact_after_disconnect_racing_polls() {
    let rounds = if cfg!(miri) { 5 } else { 100 };
    for (name, make, senders_wait) in every_flavor() {
        for side in ["receiver", "sender"] {
            if side == "sender" && !senders_wait {
                continue;
            }
            for _ in 0..rounds {
                let (tx, rx) = make();
                // The poller takes a clone of its end; the other end, the last of its
                // side, is dropped to disconnect, and the one kept reads the counts.
                let (poll_tx, poll_rx) = if side == "receiver" {
                    (None, Some(rx.clone()))
                } else {
                    (Some(tx.clone()), None)
                };
                let (mut tx_left, mut rx_left) = (Some(tx), Some(rx));
                let registered = AtomicUsize::new(0);
                thread::scope(|s| {
                    let registered = &registered;
                    s.spawn(move || {
                        let waker = std::task::Waker::noop();
                        let first_poll_done = || registered.store(1, Ordering::SeqCst);
                        if let Some(rx) = poll_rx {
                            let mut f = rx.recv_async();
                            while poll_with(&mut f, waker).is_pending() {
                                first_poll_done();
                            }
                        } else if let Some(tx) = poll_tx {
                            fill(&tx);
                            let mut f = tx.send_async(1);
                            while poll_with(&mut f, waker).is_pending() {
                                first_poll_done();
                            }
                        }
                    });
                    spin_until("first poll", || registered.load(Ordering::SeqCst) == 1);
                    // The disconnection, racing the poller's next polls.
                    if side == "receiver" {
                        drop(tx_left.take());
                    } else {
                        drop(rx_left.take());
                    }
                });
                let counts = match (&tx_left, &rx_left) {
                    (Some(tx), _) => tx.__waiter_counts(),
                    (_, Some(rx)) => rx.__waiter_counts(),
                    _ => unreachable!("one end is kept"),
                };
                assert_eq!(counts, [0, 0], "{name}, {side}s");
            }
        }
    }
}

/// Blocking waiters woken by a disconnection leave no count behind either (before, a
/// waiter notified by the disconnection kept the count it registered with).
#[test]
fn waiter_counts_exact_after_disconnect_blocking() {
    let rounds = if cfg!(miri) { 2 } else { 20 };
    for (name, make, senders_wait) in every_flavor() {
        for _ in 0..rounds {
            let (tx, rx) = make();
            thread::scope(|s| {
                let r = s.spawn(|| rx.recv_timeout(PATIENCE));
                spin_until("receiver registered", || rx.__waiter_counts()[1] != 0);
                drop(tx);
                assert_eq!(
                    r.join().unwrap(),
                    Err(crate::RecvTimeoutError::Disconnected)
                );
            });
            assert_eq!(rx.__waiter_counts(), [0, 0], "{name}: receiver");
        }
        if !senders_wait {
            continue;
        }
        for _ in 0..rounds {
            let (tx, rx) = make();
            fill(&tx);
            thread::scope(|s| {
                let w = s.spawn(|| tx.send_timeout(1, PATIENCE));
                spin_until("sender registered", || tx.__waiter_counts()[0] != 0);
                drop(rx);
                assert_eq!(
                    w.join().unwrap(),
                    Err(crate::SendTimeoutError::Disconnected(1))
                );
            });
            assert_eq!(tx.__waiter_counts(), [0, 0], "{name}: sender");
        }
    }
}

/// Whether [`panicky_waker`]s panic when dropped.
static DROP_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

static PANICKY: std::task::RawWakerVTable = std::task::RawWakerVTable::new(
    |_| std::task::RawWaker::new(std::ptr::null(), &PANICKY),
    |_| {},
    |_| {},
    |_| assert!(!DROP_PANICS.load(Ordering::SeqCst), "waker drop"),
);

/// A waker that does nothing, except that dropping it (or a clone) panics while
/// [`DROP_PANICS`] is set.
fn panicky_waker() -> std::task::Waker {
    // SAFETY: the vtable's functions ignore the data pointer, and clone returns a waker
    // with the same vtable: every contract of `RawWaker` holds trivially.
    unsafe { std::task::Waker::from_raw(std::task::RawWaker::new(std::ptr::null(), &PANICKY)) }
}

/// A cancelled async wait whose stored waker panics when dropped: the panic reaches the
/// future's drop, and the wait is withdrawn all the same (no count is left behind, and
/// the channel keeps working). Before, the waker was dropped before the wait's count
/// was withdrawn, so the panic left the count high.
#[test]
fn waker_drop_panic_while_a_wait_leaves_withdraws_it() {
    for (name, make) in flavors() {
        let (tx, rx) = make();
        let waker = panicky_waker();
        let mut fut = rx.recv_async();
        assert!(poll_with(&mut fut, &waker).is_pending(), "{name}");
        DROP_PANICS.store(true, Ordering::SeqCst);
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fut)));
        DROP_PANICS.store(false, Ordering::SeqCst);
        assert!(dropped.is_err(), "{name}: the waker's drop panicked");
        assert_eq!(rx.__waiter_counts(), [0, 0], "{name}");
        tx.send(4).unwrap();
        assert_eq!(rx.try_recv(), Ok(4), "{name}");
    }
}
