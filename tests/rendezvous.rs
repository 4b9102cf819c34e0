//! Rendezvous (`bounded(0)`) hand-off semantics.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::thread;

use common::{Flag, poll_noop, poll_once, spin_until, waker, watchdog};
use conduit::{RecvError, TryRecvError, TrySendError};

/// Checks the hand-off invariant: every receive call is counted in `started` *before*
/// it begins, every send is counted in `completed` *after* it returned. Since each
/// completed rendezvous send was taken by a distinct receive call that had already
/// started, `completed <= started` must hold at every moment. A channel that buffered
/// even one message would let a send complete before its receive started; the
/// receiver widens that window by yielding between receives, so such a bug shows up.
fn check_handoff(senders: usize, receivers: usize, per_sender: usize, async_senders: bool) {
    watchdog(move || {
        let (tx, rx) = conduit::rendezvous::<usize>();
        let started = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let total = senders * per_sender;

        let consumers: Vec<_> = (0..receivers)
            .map(|_| {
                let rx = rx.clone();
                let started = started.clone();
                thread::spawn(move || {
                    let mut got = 0usize;
                    loop {
                        // Widen the window in which a buffering channel would let a
                        // sender run ahead (not needed for correctness).
                        thread::yield_now();
                        started.fetch_add(1, Ordering::SeqCst);
                        match rx.recv() {
                            Ok(_) => got += 1,
                            Err(RecvError) => return got,
                        }
                    }
                })
            })
            .collect();
        drop(rx);

        let producers: Vec<_> = (0..senders)
            .map(|p| {
                let tx = tx.clone();
                let started = started.clone();
                let completed = completed.clone();
                thread::spawn(move || {
                    for i in 0..per_sender {
                        let msg = p * per_sender + i;
                        if async_senders && i % 2 == 0 {
                            futures::executor::block_on(tx.send_async(msg)).unwrap();
                        } else {
                            tx.send(msg).unwrap();
                        }
                        let c = completed.fetch_add(1, Ordering::SeqCst) + 1;
                        let s = started.load(Ordering::SeqCst);
                        assert!(
                            c <= s,
                            "{c} sends completed but only {s} receives had started: \
                             a send returned before a receiver took its message"
                        );
                    }
                })
            })
            .collect();
        drop(tx);
        for p in producers {
            p.join().unwrap();
        }
        let received: usize = consumers.into_iter().map(|c| c.join().unwrap()).sum();
        assert_eq!(received, total);
    });
}

#[test]
fn send_returns_only_after_a_receiver_took_it_1x1() {
    check_handoff(1, 1, 2_000, false);
}

#[test]
fn send_returns_only_after_a_receiver_took_it_3x2() {
    check_handoff(3, 2, 700, false);
}

#[test]
fn send_async_returns_only_after_a_receiver_took_it() {
    check_handoff(2, 2, 700, true);
}

#[test]
fn send_blocks_until_a_receiver_arrives() {
    // The sender thread records each completed send; no send can complete before the
    // main thread has started the matching receive.
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let done = Arc::new(AtomicUsize::new(0));
        let sender = {
            let done = done.clone();
            thread::spawn(move || {
                tx.send(1).unwrap();
                done.store(1, Ordering::SeqCst);
                tx.send(2).unwrap();
                done.store(2, Ordering::SeqCst);
            })
        };
        // No receive has started, so no send can have completed.
        assert_eq!(done.load(Ordering::SeqCst), 0);
        assert_eq!(rx.recv(), Ok(1));
        // Only one receive has happened: the second send cannot have completed.
        assert!(done.load(Ordering::SeqCst) <= 1);
        assert_eq!(rx.recv(), Ok(2));
        sender.join().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert_eq!(rx.recv(), Err(RecvError));
    });
}

#[test]
fn try_send_without_waiting_receiver_is_full() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<String>();
        for _ in 0..3 {
            let err = tx.try_send("m".into()).unwrap_err();
            assert_eq!(err, TrySendError::Full("m".into()));
            assert_eq!(err.into_inner(), "m");
        }
        // Nothing was stored.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(rx.len(), 0);

        // A receive future that was pending and then dropped is not a waiting receiver.
        {
            let mut fut = Box::pin(rx.recv_async());
            assert!(poll_noop(&mut fut).is_pending());
        }
        assert_eq!(tx.try_send("n".into()), Err(TrySendError::Full("n".into())));
        // And a receiver that timed out is not waiting either.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(5))
                .is_err()
        );
        assert_eq!(tx.try_send("o".into()), Err(TrySendError::Full("o".into())));

        drop(rx);
        assert_eq!(
            tx.try_send("p".into()),
            Err(TrySendError::Disconnected("p".into()))
        );
    });
}

#[test]
fn try_send_succeeds_with_a_blocked_receiver() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u64>();
        for round in 0..50u64 {
            let rx = rx.clone();
            let receiver = thread::spawn(move || rx.recv());
            // Retry until the receiver thread is blocked in recv; the watchdog turns a
            // try_send that never succeeds into a failure.
            let mut msg = round;
            loop {
                match tx.try_send(msg) {
                    Ok(()) => break,
                    Err(TrySendError::Full(m)) => {
                        msg = m;
                        thread::yield_now();
                    }
                    Err(TrySendError::Disconnected(_)) => panic!("disconnected"),
                }
            }
            assert_eq!(receiver.join().unwrap(), Ok(round));
        }
        // Exactly one message per successful try_send.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

#[test]
fn counts_are_constant() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let check = |tx: &conduit::Sender<u32>, rx: &conduit::Receiver<u32>| {
            assert_eq!((tx.len(), rx.len()), (0, 0));
            assert_eq!((tx.capacity(), rx.capacity()), (Some(0), Some(0)));
            assert!(tx.is_empty() && rx.is_empty());
            assert!(tx.is_full() && rx.is_full());
        };
        check(&tx, &rx);

        // While senders are blocked (or about to be) in send.
        let senders: Vec<_> = (0..3)
            .map(|i| {
                let tx = tx.clone();
                thread::spawn(move || tx.send(i).unwrap())
            })
            .collect();
        for _ in 0..100 {
            check(&tx, &rx);
            thread::yield_now();
        }
        // While an async send is pending.
        let mut fut = Box::pin(tx.send_async(10));
        assert!(poll_noop(&mut fut).is_pending());
        check(&tx, &rx);

        let mut got: Vec<u32> = (0..4).map(|_| rx.recv().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 10]);
        assert_eq!(poll_noop(&mut fut), Poll::Ready(Ok(())));
        for s in senders {
            s.join().unwrap();
        }
        check(&tx, &rx);

        drop(fut);
        let tx2 = tx.clone();
        drop(tx);
        check(&tx2, &rx);
        drop(rx);
        assert_eq!(tx2.len(), 0);
        assert_eq!(tx2.capacity(), Some(0));
        assert!(tx2.is_empty() && tx2.is_full());
    });
}

/// A receive future that was woken by an offer but dropped before its next poll has
/// taken nothing: the blocked sender keeps waiting, and the message is delivered to the
/// next receiver exactly once.
#[test]
fn dropped_recv_fut_takes_nothing_blocking_sender() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let flag = Flag::new();
        let w = waker(&flag);
        let mut fut = Box::pin(rx.recv_async());
        // No sender yet: deterministically pending.
        assert!(poll_once(&mut fut, &w).is_pending());

        let returned = Arc::new(AtomicBool::new(false));
        let sender = {
            let returned = returned.clone();
            thread::spawn(move || {
                let r = tx.send(42);
                returned.store(true, Ordering::SeqCst);
                (r, tx)
            })
        };
        // The sender must notify the pending receiver (its waker), since it is the
        // only receiver there is.
        spin_until(|| flag.woken());
        // Dropped without being polled again.
        drop(fut);
        // Nobody has taken the message, so the send cannot have returned.
        assert!(
            !returned.load(Ordering::SeqCst),
            "send returned without a receiver"
        );
        assert_eq!(rx.recv(), Ok(42));
        let (r, tx) = sender.join().unwrap();
        assert_eq!(r, Ok(()));
        // Exactly once: nothing else to receive.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

/// Same with an async sender, polled by hand so every step is deterministic.
#[test]
fn dropped_recv_fut_takes_nothing_async_sender() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<String>();
        let rflag = Flag::new();
        let sflag = Flag::new();
        let (rw, sw) = (waker(&rflag), waker(&sflag));

        let mut recv1 = Box::pin(rx.recv_async());
        assert!(poll_once(&mut recv1, &rw).is_pending());
        let mut send = Box::pin(tx.send_async("hello".to_string()));
        // The hand-off completes in the receiver's poll, not the sender's.
        assert!(poll_once(&mut send, &sw).is_pending());
        assert!(
            rflag.woken(),
            "the pending receiver must be woken by the offer"
        );
        drop(recv1);

        // The sender is still waiting: re-polling does not complete it.
        assert!(poll_once(&mut send, &sw).is_pending());

        // Another receiver takes the message, exactly once.
        let mut recv2 = Box::pin(rx.recv_async());
        let got = futures::executor::block_on(&mut recv2);
        assert_eq!(got.as_deref(), Ok("hello"));
        assert!(
            sflag.woken(),
            "the sender must be woken when its message is taken"
        );
        assert_eq!(poll_once(&mut send, &sw), Poll::Ready(Ok(())));
        drop(send);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let mut recv3 = Box::pin(rx.recv_async());
        assert!(poll_noop(&mut recv3).is_pending());
        drop(recv3);
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    });
}

/// Many cancelled receive futures against one blocked sender: the message is delivered
/// once, to the receiver that completes.
#[test]
fn many_dropped_recv_futs_then_blocking_recv() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let sender = thread::spawn(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
        });
        let mut got = vec![];
        let mut i = 0u64;
        loop {
            i += 1;
            if i.is_multiple_of(3) {
                // Every third attempt a blocking receive.
                match rx.recv() {
                    Ok(v) => got.push(v),
                    Err(RecvError) => break,
                }
            } else {
                let mut fut = Box::pin(rx.recv_async());
                match poll_noop(&mut fut) {
                    Poll::Ready(Ok(v)) => got.push(v),
                    Poll::Ready(Err(RecvError)) => break,
                    Poll::Pending => {}
                }
            }
        }
        sender.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    });
}

/// A rendezvous send future whose message a receiver took counts as sent even if it is
/// dropped before being polled again: delivered once, dropped once.
#[test]
fn send_fut_dropped_after_take_counts_as_sent() {
    watchdog(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = conduit::rendezvous::<common::Counted>();
        let flag = Flag::new();
        let w = waker(&flag);
        let mut fut = Box::pin(tx.send_async(common::Counted::new(7, &drops)));
        assert!(poll_once(&mut fut, &w).is_pending());
        // A blocking receiver takes the offer.
        let got = rx.recv().unwrap();
        assert_eq!(got.id, 7);
        assert!(
            flag.woken(),
            "the sender must be woken when its offer is taken"
        );
        drop(fut); // without polling again
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "the message is the receiver's"
        );
        drop(got);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv().map(|c| c.id), Err(TryRecvError::Empty));
        drop(tx);
        assert_eq!(Arc::strong_count(&drops), 1);
    });
}

/// An offer withdrawn (send future dropped, or send_timeout expired) before any
/// receiver took it is never received, even by a receiver it had already woken.
#[test]
fn withdrawn_offer_is_never_received() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let rflag = Flag::new();
        let rw = waker(&rflag);
        let mut recv = Box::pin(rx.recv_async());
        assert!(poll_once(&mut recv, &rw).is_pending());
        let mut send = Box::pin(tx.send_async(1));
        assert!(poll_noop(&mut send).is_pending());
        assert!(rflag.woken(), "the offer must wake the pending receiver");
        drop(send); // withdrawn before the receiver polled
        rflag.reset();
        assert!(
            poll_once(&mut recv, &rw).is_pending(),
            "a withdrawn offer must not be received"
        );
        // A timed-out blocking send is withdrawn as well; its message comes back.
        let err = tx
            .send_timeout(2, std::time::Duration::from_millis(5))
            .unwrap_err();
        assert_eq!(err.into_inner(), 2);
        rflag.reset();
        assert!(poll_once(&mut recv, &rw).is_pending());
        // The receiver still works, and sees disconnection at the end.
        let sender = thread::spawn(move || tx.send(3));
        spin_until(|| rflag.woken());
        assert_eq!(poll_once(&mut recv, &rw), Poll::Ready(Ok(3)));
        assert_eq!(sender.join().unwrap(), Ok(()));
        let mut recv = Box::pin(rx.recv_async());
        assert_eq!(poll_noop(&mut recv), Poll::Ready(Err(RecvError)));
    });
}

/// Timed sends and receives racing on a rendezvous channel: a send that timed out got
/// its message back and it was not also delivered; a send that succeeded was delivered
/// exactly once.
#[test]
fn timed_handoffs_race_exactly_once() {
    use std::time::Duration;
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut sent = vec![];
                    let mut timed_out = 0u32;
                    for i in 0..1_500u32 {
                        let m = p * 100_000 + i;
                        let t = Duration::from_micros(u64::from(i % 7) * 20);
                        match tx.send_timeout(m, t) {
                            Ok(()) => sent.push(m),
                            Err(e) => {
                                assert!(e.is_timeout());
                                assert_eq!(e.into_inner(), m);
                                timed_out += 1;
                            }
                        }
                    }
                    (sent, timed_out)
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = (0..2)
            .map(|c| {
                let rx = rx.clone();
                thread::spawn(move || {
                    let mut got = vec![];
                    let mut i = 0u64;
                    loop {
                        i += 1;
                        let t = Duration::from_micros((i + c) % 5 * 20);
                        match rx.recv_timeout(t) {
                            Ok(m) => got.push(m),
                            Err(conduit::RecvTimeoutError::Timeout) => {}
                            Err(conduit::RecvTimeoutError::Disconnected) => return got,
                        }
                    }
                })
            })
            .collect();
        drop(rx);
        let mut sent = vec![];
        for p in producers {
            sent.extend(p.join().unwrap().0);
        }
        let mut got: Vec<u32> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        sent.sort_unstable();
        got.sort_unstable();
        assert_eq!(
            got.len(),
            sent.len(),
            "received {} messages, {} sends succeeded",
            got.len(),
            sent.len()
        );
        assert_eq!(got, sent, "delivered set differs from the successful sends");
    });
}

/// Many rendezvous send futures polled once and dropped while a receiver takes: each
/// message is dropped exactly once, by whoever ended up owning it.
#[test]
fn racing_dropped_send_futs_drop_each_message_once() {
    watchdog(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = conduit::rendezvous::<common::Counted>();
        let consumer = thread::spawn(move || rx.iter().map(|c| c.id).collect::<Vec<_>>());
        let mut attempts = 0;
        for i in 0..3_000 {
            let mut fut = Box::pin(tx.send_async(common::Counted::new(i, &drops)));
            let _ = poll_noop(&mut fut);
            attempts += 1;
        }
        drop(tx);
        let got = consumer.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "duplicate or reorder");
        assert_eq!(drops.load(Ordering::SeqCst), attempts, "dropped != created");
        assert_eq!(Arc::strong_count(&drops), 1, "leaked");
    });
}
