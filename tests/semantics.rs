//! Single-channel semantics of every flavor: FIFO, try_ errors, timeouts, counts,
//! weak senders, iterators, drain, drops, error traits.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Counted, all, buffered, watchdog};
use conduit::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};

#[test]
fn fifo_single_producer() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let producer = thread::spawn(move || {
                for i in 0..1000 {
                    tx.send(i).unwrap();
                }
            });
            let got: Vec<u32> = rx.iter().collect();
            producer.join().unwrap();
            assert_eq!(got, (0..1000).collect::<Vec<_>>(), "{name}");
        }
    });
}

#[test]
fn try_send_full_and_disconnected_hand_message_back() {
    let (tx, rx) = conduit::bounded(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    assert!(tx.is_full());
    drop(rx);
    assert_eq!(tx.try_send(4), Err(TrySendError::Disconnected(4)));
    assert_eq!(tx.send(5), Err(SendError(5)));
    assert!(tx.is_disconnected());

    let (tx, rx) = conduit::rendezvous::<i32>();
    assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
    drop(rx);
    assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)));
}

#[test]
fn try_recv_empty_then_disconnected_after_drain() {
    for (name, make) in buffered::<u8>() {
        let (tx, rx) = make();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
        tx.send(7).unwrap();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(7), "{name}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        assert_eq!(rx.recv(), Err(RecvError), "{name}");
    }
}

#[test]
fn timeouts_and_deadlines() {
    watchdog(|| {
        for (name, make) in all::<u8>() {
            let (tx, rx) = make();
            let short = Duration::from_millis(5);
            assert_eq!(
                rx.recv_timeout(short),
                Err(RecvTimeoutError::Timeout),
                "{name}"
            );
            assert_eq!(
                rx.recv_deadline(Instant::now() + short),
                Err(RecvTimeoutError::Timeout),
                "{name}"
            );
            // Fill, then a timed send times out with the message handed back.
            let cap = tx.capacity().unwrap_or(0);
            if tx.capacity().is_some() {
                for i in 0..cap {
                    tx.send(i as u8).unwrap();
                }
                assert_eq!(
                    tx.send_timeout(99, short),
                    Err(SendTimeoutError::Timeout(99)),
                    "{name}"
                );
                assert_eq!(
                    tx.send_deadline(98, Instant::now() + short),
                    Err(SendTimeoutError::Timeout(98)),
                    "{name}"
                );
            }
            // A deadline already past still takes what is there.
            if cap > 0 {
                assert_eq!(rx.recv_deadline(Instant::now()), Ok(0), "{name}");
            }
            drop(rx);
            assert_eq!(
                tx.send_timeout(1, short),
                Err(SendTimeoutError::Disconnected(1)),
                "{name}"
            );
            let (tx, rx) = make();
            drop(tx);
            assert_eq!(
                rx.recv_timeout(short),
                Err(RecvTimeoutError::Disconnected),
                "{name}"
            );
        }
    });
}

#[test]
fn timed_recv_gets_message_sent_while_waiting() {
    watchdog(|| {
        for (name, make) in all::<u8>() {
            let (tx, rx) = make();
            let t = thread::spawn(move || rx.recv_timeout(Duration::from_secs(30)));
            tx.send(3).unwrap();
            assert_eq!(t.join().unwrap(), Ok(3), "{name}");
        }
    });
}

/// A sender waiting on a full ring waits, while it spins, for a batch of free slots
/// (half the ring); one freed slot must still let it through, blocking or timed, with
/// its messages in order. The receiver frees one slot at a time, each only once the
/// ring is full again, so a sender that insisted on a batch would never get one.
#[test]
fn sender_on_a_full_ring_takes_a_single_freed_slot() {
    watchdog(|| {
        let (cap, rounds) = (64, 200);
        for timed in [false, true] {
            let (tx, rx) = conduit::bounded(cap);
            let t = thread::spawn(move || {
                for i in 0..cap + rounds {
                    if timed {
                        tx.send_timeout(i, Duration::from_secs(30)).unwrap();
                    } else {
                        tx.send(i).unwrap();
                    }
                }
            });
            for i in 0..rounds {
                while rx.len() < cap {
                    thread::yield_now();
                }
                assert_eq!(rx.recv(), Ok(i), "timed: {timed}");
            }
            t.join().unwrap();
            let rest: Vec<usize> = rx.try_iter().collect();
            assert_eq!(
                rest,
                (rounds..cap + rounds).collect::<Vec<_>>(),
                "timed: {timed}"
            );
        }
    });
}

#[test]
fn huge_timeout_means_wait_forever_not_overflow() {
    watchdog(|| {
        let (tx, rx) = conduit::bounded(1);
        let t = thread::spawn(move || rx.recv_timeout(Duration::MAX));
        tx.send(1).unwrap();
        assert_eq!(t.join().unwrap(), Ok(1));
    });
}

#[test]
fn lengths_capacities_and_counts() {
    let (tx, rx) = conduit::bounded::<u8>(3);
    assert_eq!((tx.capacity(), rx.capacity()), (Some(3), Some(3)));
    assert!(tx.is_empty() && !tx.is_full());
    tx.send(1).unwrap();
    tx.send(2).unwrap();
    assert_eq!((tx.len(), rx.len()), (2, 2));
    tx.send(3).unwrap();
    assert!(rx.is_full());

    let (tx, rx) = conduit::unbounded::<u8>();
    assert_eq!(tx.capacity(), None);
    for i in 0..100 {
        tx.send(i).unwrap();
    }
    assert_eq!(rx.len(), 100);
    assert!(!rx.is_full());
    for _ in 0..40 {
        rx.recv().unwrap();
    }
    assert_eq!(rx.len(), 60);

    let (tx, rx) = conduit::rendezvous::<u8>();
    assert_eq!(tx.len(), 0);
    assert_eq!(rx.capacity(), Some(0));
    assert!(tx.is_empty() && tx.is_full() && rx.is_empty() && rx.is_full());

    let tx2 = tx.clone();
    let rx2 = rx.clone();
    let rx3 = rx2.clone();
    assert_eq!((tx.sender_count(), tx.receiver_count()), (2, 3));
    assert!(tx.same_channel(&tx2) && rx.same_channel(&rx3));
    let (other_tx, _other_rx) = conduit::rendezvous::<u8>();
    assert!(!tx.same_channel(&other_tx));
    drop((tx2, rx2, rx3));
    assert_eq!((rx.sender_count(), rx.receiver_count()), (1, 1));
    assert!(!rx.is_disconnected());
    drop(tx);
    assert!(rx.is_disconnected());
}

#[test]
fn weak_sender_does_not_keep_channel_open() {
    for (name, make) in all::<u8>() {
        let (tx, rx) = make();
        let weak = tx.downgrade();
        let weak2 = weak.clone();
        assert!(format!("{weak:?}").contains("WeakSender"));
        let upgraded = weak.upgrade().expect("a sender is alive");
        assert_eq!(rx.sender_count(), 2, "{name}");
        drop(upgraded);
        drop(tx);
        assert!(rx.is_disconnected(), "{name}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        assert!(weak2.upgrade().is_none(), "{name}");
    }
}

#[test]
fn iterators_and_into_iterator() {
    let (tx, rx) = conduit::unbounded();
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    tx.send(5).unwrap();
    tx.send(6).unwrap();
    let mut by_ref = vec![];
    for m in &rx {
        by_ref.push(m);
        if m == 5 {
            break;
        }
    }
    assert_eq!(by_ref, [5]);
    drop(tx);
    assert_eq!(rx.into_iter().collect::<Vec<_>>(), [6]);
}

#[test]
fn drain_takes_only_what_was_queued() {
    for (name, make) in buffered::<u32>() {
        let (tx, rx) = make();
        tx.send(1).unwrap();
        let mut drain = rx.drain();
        if tx.capacity() != Some(1) {
            tx.send(2).unwrap(); // arrives after drain() was called
        }
        assert_eq!(drain.next(), Some(1), "{name}");
        assert_eq!(drain.next(), None, "{name}");
        let _ = drain;
        if tx.capacity() != Some(1) {
            assert_eq!(rx.try_recv(), Ok(2), "{name}");
        }
        for i in 0..tx.capacity().unwrap_or(10) as u32 {
            tx.send(i).unwrap();
        }
        let queued = rx.len();
        let mut drain = rx.drain();
        assert_eq!(drain.next(), Some(0), "{name}");
        let _ = drain;
        assert_eq!(
            rx.len(),
            queued - 1,
            "{name}: undrained messages stay queued"
        );
    }
}

#[test]
fn queued_messages_dropped_when_last_receiver_goes() {
    for (name, make) in buffered::<Counted>() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = make();
        let n = tx.capacity().unwrap_or(100);
        for _ in 0..n {
            tx.send(Counted::new(0, &drops)).unwrap();
        }
        let rx2 = rx.clone();
        drop(rx);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "{name}: a receiver remains"
        );
        drop(rx2);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            n,
            "{name}: dropped at that moment"
        );
        drop(tx);
        assert_eq!(drops.load(Ordering::SeqCst), n, "{name}: exactly once");
    }
}

#[test]
fn messages_dropped_with_channel_and_none_leaked() {
    for (name, make) in buffered::<Counted>() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = make();
        let n = tx.capacity().unwrap_or(200);
        for _ in 0..n {
            tx.send(Counted::new(0, &drops)).unwrap();
        }
        for _ in 0..n / 2 {
            drop(rx.recv().unwrap());
        }
        assert_eq!(drops.load(Ordering::SeqCst), n / 2, "{name}");
        let weak = tx.downgrade();
        drop(tx);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            n / 2,
            "{name}: still receivable"
        );
        drop(rx);
        assert_eq!(drops.load(Ordering::SeqCst), n, "{name}");
        drop(weak);
        assert_eq!(drops.load(Ordering::SeqCst), n, "{name}: not dropped twice");
    }
}

#[test]
fn non_send_payload_within_one_thread() {
    let (tx, rx) = conduit::bounded(2);
    tx.send(Rc::new(5)).unwrap();
    assert_eq!(*rx.recv().unwrap(), 5);
    let (tx, rx) = conduit::unbounded();
    tx.send(Rc::new(6)).unwrap();
    assert_eq!(*rx.recv().unwrap(), 6);
}

#[test]
fn debug_without_t_debug() {
    struct Opaque;
    let (tx, rx) = conduit::bounded::<Opaque>(1);
    assert!(format!("{tx:?}").starts_with("Sender"));
    assert!(format!("{rx:?}").starts_with("Receiver"));
    let err = tx
        .try_send(Opaque)
        .and_then(|()| tx.try_send(Opaque))
        .unwrap_err();
    assert_eq!(format!("{err:?}"), "Full(..)");
    assert_eq!(format!("{:?}", SendError(Opaque)), "SendError(..)");
}

#[test]
fn error_traits() {
    fn is_error<E: std::error::Error>(_: &E) {}
    let e = TrySendError::Full(1);
    is_error(&e);
    assert_eq!(e.to_string(), "sending on a full channel");
    assert!(e.is_full() && !e.is_disconnected());
    let copy = e;
    assert_eq!(copy, e.clone());
    assert_eq!(e.into_inner(), 1);
    assert_eq!(SendTimeoutError::Timeout(2).into_inner(), 2);
    assert_eq!(SendError(3).into_inner(), 3);
    is_error(&SendError(3));
    is_error(&SendTimeoutError::Disconnected(3));
    is_error(&RecvError);
    is_error(&TryRecvError::Empty);
    is_error(&RecvTimeoutError::Timeout);
    assert_eq!(TryRecvError::from(RecvError), TryRecvError::Disconnected);
    assert_eq!(
        RecvTimeoutError::from(RecvError),
        RecvTimeoutError::Disconnected
    );
    assert_eq!(
        TrySendError::from(SendError(4)),
        TrySendError::Disconnected(4)
    );
    assert!(!RecvError.to_string().is_empty());
    assert!(!RecvTimeoutError::Timeout.to_string().is_empty());
    let not_copy = SendError(String::from("x"));
    assert_eq!(not_copy.clone(), not_copy);
}

#[test]
fn handles_are_send_sync_clone_when_t_send() {
    fn check<T: Send + Sync + Clone>() {}
    check::<conduit::Sender<String>>();
    check::<conduit::Receiver<String>>();
    check::<conduit::WeakSender<String>>();
}
