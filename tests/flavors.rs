//! Per-flavor semantics of the in-process channels: ordering, the non-blocking and
//! timed operations, counts, weak senders, iterators, drain, Debug, the error types and
//! non-`Send` payloads.

mod common;

use std::error::Error;
use std::fmt::Debug;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Make, all, buffered, watchdog};
use conduit::{
    Drain, IntoIter, Iter, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    Sender, TryIter, TryRecvError, TrySendError, WeakSender,
};

/// A payload with no trait implementations at all.
struct Opaque(#[allow(dead_code)] u32);

const SHORT: Duration = Duration::from_millis(20);
/// Long enough that a correct library never reaches it in these tests.
const LONG: Duration = Duration::from_secs(20);

fn capacity_of(name: &str) -> Option<usize> {
    match name {
        "bounded(1)" => Some(1),
        "bounded(16)" => Some(16),
        "unbounded" => None,
        "rendezvous" => Some(0),
        other => unreachable!("unknown flavor {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Ordering

#[test]
fn fifo_single_producer_every_flavor() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let producer = thread::spawn(move || {
                for i in 0..2_000 {
                    tx.send(i).unwrap();
                }
            });
            let got: Vec<u32> = rx.iter().collect();
            producer.join().unwrap();
            assert_eq!(got, (0..2_000).collect::<Vec<_>>(), "{name}");
        });
    }
}

#[test]
fn fifo_within_capacity_single_thread() {
    watchdog(|| {
        for (name, make) in buffered::<String>() {
            let (tx, rx) = make();
            let n = capacity_of(name).unwrap_or(100);
            for i in 0..n {
                tx.send(i.to_string()).unwrap();
            }
            for i in 0..n {
                assert_eq!(rx.try_recv(), Ok(i.to_string()), "{name}");
            }
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
        }
    });
}

// ---------------------------------------------------------------------------------------
// try_send / try_recv

#[test]
fn try_send_full_hands_message_back() {
    watchdog(|| {
        for (name, make) in all::<String>() {
            let (tx, rx) = make();
            match capacity_of(name) {
                Some(cap) => {
                    for i in 0..cap {
                        assert_eq!(tx.try_send(format!("m{i}")), Ok(()), "{name}");
                    }
                    let err = tx.try_send("over".to_string()).unwrap_err();
                    assert!(err.is_full() && !err.is_disconnected(), "{name}");
                    assert_eq!(err, TrySendError::Full("over".to_string()), "{name}");
                    assert_eq!(err.into_inner(), "over", "{name}");
                    // Making room makes try_send succeed again (not for rendezvous).
                    if cap > 0 {
                        assert_eq!(rx.try_recv().as_deref(), Ok("m0"), "{name}");
                        assert_eq!(tx.try_send("again".into()), Ok(()), "{name}");
                        assert_eq!(
                            tx.try_send("x".into()),
                            Err(TrySendError::Full("x".into())),
                            "{name}"
                        );
                    }
                }
                None => {
                    // unbounded is never full.
                    for i in 0..1_000 {
                        assert_eq!(tx.try_send(i.to_string()), Ok(()), "{name}");
                    }
                    assert_eq!(rx.len(), 1_000);
                }
            }
        }
    });
}

#[test]
fn try_send_disconnected_hands_message_back() {
    watchdog(|| {
        for (name, make) in all::<String>() {
            // Empty channel.
            let (tx, rx) = make();
            drop(rx);
            let err = tx.try_send("a".into()).unwrap_err();
            assert!(err.is_disconnected() && !err.is_full(), "{name}");
            assert_eq!(err, TrySendError::Disconnected("a".into()), "{name}");
            assert_eq!(err.into_inner(), "a", "{name}");
            assert_eq!(tx.send("b".into()), Err(SendError("b".into())), "{name}");

            // A full channel whose receivers are gone reports Disconnected, not Full.
            let (tx, rx) = make();
            if let Some(cap) = capacity_of(name) {
                for i in 0..cap {
                    tx.try_send(i.to_string()).unwrap();
                }
            }
            let rx2 = rx.clone();
            drop(rx);
            // One receiver left: still connected.
            assert!(!tx.is_disconnected(), "{name}");
            drop(rx2);
            assert!(tx.is_disconnected(), "{name}");
            assert_eq!(
                tx.try_send("c".into()),
                Err(TrySendError::Disconnected("c".into())),
                "{name}"
            );
        }
    });
}

#[test]
fn try_recv_empty_then_disconnected() {
    for (name, make) in all::<u8>() {
        watchdog(move || try_recv_empty_then_disconnected_one(name, make));
    }
}

fn try_recv_empty_then_disconnected_one(
    name: &'static str,
    make: fn() -> (Sender<u8>, Receiver<u8>),
) {
    let buffered = capacity_of(name) != Some(0);
    let (tx, rx) = make();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
    let e = rx.try_recv().unwrap_err();
    assert!(e.is_empty() && !e.is_disconnected(), "{name}");
    let tx2 = tx.clone();
    if buffered {
        tx.send(7).unwrap();
    }
    drop(tx);
    // A sender is left: Empty, not Disconnected, once the queue is drained.
    if buffered {
        assert_eq!(rx.try_recv(), Ok(7), "{name}");
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
    if buffered {
        tx2.send(8).unwrap();
    }
    drop(tx2);
    // Queued messages are still delivered after the last sender went.
    if buffered {
        assert_eq!(rx.try_recv(), Ok(8), "{name}");
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
    assert!(rx.try_recv().unwrap_err().is_disconnected(), "{name}");
    assert_eq!(rx.recv(), Err(RecvError), "{name}");
}

// ---------------------------------------------------------------------------------------
// Timed operations: only outcomes are asserted, never durations.

#[test]
fn send_timeout_and_deadline_hand_message_back_when_full() {
    for (name, make) in all::<String>() {
        let Some(cap) = capacity_of(name) else {
            continue;
        };
        watchdog(move || {
            let (tx, rx) = make();
            for i in 0..cap {
                tx.send(i.to_string()).unwrap();
            }
            let err = tx.send_timeout("t".into(), SHORT).unwrap_err();
            assert!(err.is_timeout() && !err.is_disconnected(), "{name}");
            assert_eq!(err, SendTimeoutError::Timeout("t".into()), "{name}");
            assert_eq!(err.into_inner(), "t", "{name}");

            let err = tx
                .send_deadline("d".into(), Instant::now() + SHORT)
                .unwrap_err();
            assert_eq!(err, SendTimeoutError::Timeout("d".into()), "{name}");
            // A deadline already in the past times out too (without blocking).
            let past = Instant::now();
            let err = tx.send_deadline("p".into(), past).unwrap_err();
            assert_eq!(err, SendTimeoutError::Timeout("p".into()), "{name}");
            let err = tx.send_timeout("z".into(), Duration::ZERO).unwrap_err();
            assert_eq!(err, SendTimeoutError::Timeout("z".into()), "{name}");

            // Nothing timed out was enqueued.
            assert_eq!(rx.len(), cap, "{name}");
            let got: Vec<String> = rx.try_iter().collect();
            assert_eq!(got, (0..cap).map(|i| i.to_string()).collect::<Vec<_>>());

            drop(rx);
            let err = tx.send_timeout("x".into(), SHORT).unwrap_err();
            assert!(err.is_disconnected() && !err.is_timeout(), "{name}");
            assert_eq!(err, SendTimeoutError::Disconnected("x".into()), "{name}");
            assert_eq!(
                tx.send_deadline("y".into(), Instant::now() + SHORT),
                Err(SendTimeoutError::Disconnected("y".into())),
                "{name}"
            );
        });
    }
}

#[test]
fn send_timeout_succeeds_when_room_appears() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let cap = capacity_of(name).unwrap_or(0);
            for i in 0..cap as u32 {
                tx.send(i).unwrap();
            }
            let consumer = thread::spawn(move || rx.iter().collect::<Vec<_>>());
            assert_eq!(tx.send_timeout(1000, LONG), Ok(()), "{name}");
            assert_eq!(
                tx.send_deadline(1001, Instant::now() + LONG),
                Ok(()),
                "{name}"
            );
            drop(tx);
            let mut expect: Vec<u32> = (0..cap as u32).collect();
            expect.extend([1000, 1001]);
            assert_eq!(consumer.join().unwrap(), expect, "{name}");
        });
    }
}

#[test]
fn unbounded_send_timeout_never_times_out() {
    watchdog(|| {
        let (tx, rx) = conduit::unbounded();
        for i in 0..100 {
            assert_eq!(tx.send_timeout(i, Duration::ZERO), Ok(()));
            assert_eq!(tx.send_deadline(i, Instant::now()), Ok(()));
        }
        assert_eq!(rx.len(), 200);
    });
}

#[test]
fn recv_timeout_and_deadline() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let err = rx.recv_timeout(SHORT).unwrap_err();
            assert!(err.is_timeout() && !err.is_disconnected(), "{name}");
            assert_eq!(err, RecvTimeoutError::Timeout, "{name}");
            assert_eq!(
                rx.recv_deadline(Instant::now() + SHORT),
                Err(RecvTimeoutError::Timeout),
                "{name}"
            );
            assert_eq!(
                rx.recv_deadline(Instant::now()),
                Err(RecvTimeoutError::Timeout),
                "{name}"
            );
            assert_eq!(
                rx.recv_timeout(Duration::ZERO),
                Err(RecvTimeoutError::Timeout),
                "{name}"
            );

            if capacity_of(name) != Some(0) {
                tx.send(1).unwrap();
                assert_eq!(rx.recv_timeout(SHORT), Ok(1), "{name}");
                tx.send(2).unwrap();
                assert_eq!(rx.recv_deadline(Instant::now() + SHORT), Ok(2), "{name}");
            }

            // A message sent by another thread within the (long) timeout arrives.
            let producer = {
                let tx = tx.clone();
                thread::spawn(move || tx.send(3).unwrap())
            };
            assert_eq!(rx.recv_timeout(LONG), Ok(3), "{name}");
            producer.join().unwrap();
            let producer = {
                let tx = tx.clone();
                thread::spawn(move || tx.send(4).unwrap())
            };
            assert_eq!(rx.recv_deadline(Instant::now() + LONG), Ok(4), "{name}");
            producer.join().unwrap();

            drop(tx);
            let err = rx.recv_timeout(SHORT).unwrap_err();
            assert!(err.is_disconnected() && !err.is_timeout(), "{name}");
            assert_eq!(
                rx.recv_deadline(Instant::now() + LONG),
                Err(RecvTimeoutError::Disconnected),
                "{name}"
            );
        });
    }
}

#[test]
fn recv_timeout_wakes_on_disconnect() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let waiter = thread::spawn(move || rx.recv_timeout(LONG));
            drop(tx);
            // The waiter must be woken by the disconnect (the watchdog is shorter than
            // LONG) and report Disconnected, not Timeout.
            assert_eq!(
                waiter.join().unwrap(),
                Err(RecvTimeoutError::Disconnected),
                "{name}"
            );
        });
    }
}

// ---------------------------------------------------------------------------------------
// Counts and queries

#[test]
fn len_capacity_empty_full() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let cap = capacity_of(name);
            assert_eq!(tx.capacity(), cap, "{name}");
            assert_eq!(rx.capacity(), cap, "{name}");
            assert_eq!((tx.len(), rx.len()), (0, 0), "{name}");
            assert!(tx.is_empty() && rx.is_empty(), "{name}");
            match cap {
                Some(0) => {
                    assert!(tx.is_full() && rx.is_full(), "{name}");
                }
                Some(cap) => {
                    assert!(!tx.is_full() && !rx.is_full(), "{name}");
                    for i in 0..cap {
                        tx.send(i as u32).unwrap();
                        assert_eq!((tx.len(), rx.len()), (i + 1, i + 1), "{name}");
                        assert!(!tx.is_empty() && !rx.is_empty(), "{name}");
                    }
                    assert!(tx.is_full() && rx.is_full(), "{name}");
                    rx.recv().unwrap();
                    assert!(!tx.is_full() && !rx.is_full(), "{name}");
                    assert_eq!(rx.len(), cap - 1, "{name}");
                }
                None => {
                    for i in 0..100 {
                        tx.send(i).unwrap();
                    }
                    assert_eq!((tx.len(), rx.len()), (100, 100), "{name}");
                    assert!(!tx.is_full() && !rx.is_full(), "{name}");
                    assert!(!tx.is_empty(), "{name}");
                }
            }
            while rx.try_recv().is_ok() {}
            assert_eq!(rx.len(), 0, "{name}");
            assert!(rx.is_empty() && tx.is_empty(), "{name}");
        }
    });
}

#[test]
fn sender_and_receiver_counts() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            assert_eq!((tx.sender_count(), tx.receiver_count()), (1, 1), "{name}");
            assert_eq!((rx.sender_count(), rx.receiver_count()), (1, 1), "{name}");
            let tx2 = tx.clone();
            let tx3 = tx.clone();
            let rx2 = rx.clone();
            assert_eq!(rx.sender_count(), 3, "{name}");
            assert_eq!(tx3.receiver_count(), 2, "{name}");
            assert_eq!(rx2.sender_count(), 3, "{name}");
            drop(tx2);
            assert_eq!(tx.sender_count(), 2, "{name}");
            drop(rx2);
            assert_eq!(tx.receiver_count(), 1, "{name}");
            // A weak sender is not a sender.
            let weak = tx.downgrade();
            assert_eq!(rx.sender_count(), 2, "{name}");
            let up = weak.upgrade().unwrap();
            assert_eq!(rx.sender_count(), 3, "{name}");
            drop(up);
            drop(tx3);
            assert_eq!(rx.sender_count(), 1, "{name}");
            drop(tx);
            assert_eq!(rx.sender_count(), 0, "{name}");
            assert_eq!(rx.receiver_count(), 1, "{name}");
            drop(weak);
        }
    });
}

#[test]
fn same_channel() {
    for (name, make) in all::<u32>() {
        let (tx, rx) = make();
        let (other_tx, other_rx) = make();
        assert!(tx.same_channel(&tx), "{name}");
        assert!(tx.same_channel(&tx.clone()), "{name}");
        assert!(!tx.same_channel(&other_tx), "{name}");
        assert!(rx.same_channel(&rx.clone()), "{name}");
        assert!(!rx.same_channel(&other_rx), "{name}");
        assert!(
            tx.downgrade().upgrade().unwrap().same_channel(&tx),
            "{name}"
        );
    }
}

#[test]
fn is_disconnected_both_ends() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            assert!(!tx.is_disconnected() && !rx.is_disconnected(), "{name}");
            let tx2 = tx.clone();
            drop(tx);
            assert!(!rx.is_disconnected(), "{name}");
            drop(tx2);
            assert!(rx.is_disconnected(), "{name}");

            let (tx, rx) = make();
            let rx2 = rx.clone();
            drop(rx);
            assert!(!tx.is_disconnected(), "{name}");
            drop(rx2);
            assert!(tx.is_disconnected(), "{name}");
        }
    });
}

// ---------------------------------------------------------------------------------------
// WeakSender

#[test]
fn weak_sender_upgrade_and_downgrade() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let weak: WeakSender<u32> = tx.downgrade();
            let weak2 = weak.clone();
            assert!(!format!("{weak:?}").is_empty());

            let up = weak.upgrade().expect("a sender exists");
            assert!(up.same_channel(&tx), "{name}");
            if capacity_of(name) != Some(0) {
                up.send(5).unwrap();
                assert_eq!(rx.recv(), Ok(5), "{name}");
            }
            drop(up);
            assert!(weak2.upgrade().is_some(), "{name}");

            drop(tx);
            // Every strong sender is gone: no upgrade, and the channel is disconnected
            // although weak senders remain.
            assert!(weak.upgrade().is_none(), "{name}");
            assert!(weak2.upgrade().is_none(), "{name}");
            assert!(rx.is_disconnected(), "{name}");
            assert_eq!(rx.recv(), Err(RecvError), "{name}");
            assert!(weak.clone().upgrade().is_none(), "{name}");
        });
    }
}

#[test]
fn weak_sender_does_not_keep_channel_open() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let weak = tx.downgrade();
            // A receiver blocked in recv is woken when the last strong sender drops,
            // even though a weak sender is still alive.
            let waiter = thread::spawn(move || rx.recv());
            drop(tx);
            assert_eq!(waiter.join().unwrap(), Err(RecvError), "{name}");
            assert!(weak.upgrade().is_none(), "{name}");
        });
    }
}

#[test]
fn weak_sender_queued_messages_still_drain() {
    watchdog(|| {
        for (name, make) in buffered::<u32>() {
            let (tx, rx) = make();
            let weak = tx.downgrade();
            tx.send(1).unwrap();
            drop(tx);
            assert!(weak.upgrade().is_none(), "{name}");
            assert_eq!(rx.try_recv(), Ok(1), "{name}");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        }
    });
}

#[test]
fn weak_sender_upgrade_fails_after_receiver_side_disconnect_too() {
    watchdog(|| {
        // Upgrading only depends on senders; with receivers gone, the upgraded sender just
        // sees a disconnected channel.
        let (tx, rx) = conduit::bounded::<u32>(4);
        let weak = tx.downgrade();
        drop(rx);
        let up = weak.upgrade().expect("the strong sender is alive");
        assert_eq!(up.send(1), Err(SendError(1)));
    });
}

// ---------------------------------------------------------------------------------------
// Iterators and drain

#[test]
fn iter_try_iter_into_iter() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            // try_iter: what is there now, without blocking.
            let (tx, rx) = make();
            let n = capacity_of(name).unwrap_or(10).min(10) as u32;
            for i in 0..n {
                tx.send(i).unwrap();
            }
            let it: TryIter<'_, u32> = rx.try_iter();
            assert_eq!(it.collect::<Vec<_>>(), (0..n).collect::<Vec<_>>(), "{name}");
            assert_eq!(rx.try_iter().next(), None, "{name}");

            // iter: blocks until disconnected.
            let producer = thread::spawn(move || {
                for i in 0..50 {
                    tx.send(i).unwrap();
                }
            });
            let it: Iter<'_, u32> = rx.iter();
            assert_eq!(
                it.collect::<Vec<_>>(),
                (0..50).collect::<Vec<_>>(),
                "{name}"
            );
            producer.join().unwrap();

            // IntoIterator for &Receiver.
            let (tx, rx) = make();
            let producer = thread::spawn(move || {
                for i in 0..50 {
                    tx.send(i).unwrap();
                }
            });
            let mut got = vec![];
            for v in &rx {
                got.push(v);
            }
            assert_eq!(got, (0..50).collect::<Vec<_>>(), "{name}");
            producer.join().unwrap();

            // IntoIterator for Receiver.
            let (tx, rx) = make();
            let producer = thread::spawn(move || {
                for i in 0..50 {
                    tx.send(i).unwrap();
                }
            });
            let it: IntoIter<u32> = rx.into_iter();
            assert_eq!(
                it.collect::<Vec<_>>(),
                (0..50).collect::<Vec<_>>(),
                "{name}"
            );
            producer.join().unwrap();
        });
    }
}

#[test]
fn rendezvous_iterators() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        assert_eq!(rx.try_iter().next(), None);
        let producer = thread::spawn(move || {
            for i in 0..20 {
                tx.send(i).unwrap();
            }
        });
        let got: Vec<u32> = rx.into_iter().collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        producer.join().unwrap();
    });
}

#[test]
fn drain_takes_only_what_was_queued_at_the_call() {
    watchdog(|| {
        for (name, make) in buffered::<u32>() {
            let (tx, rx) = make();
            let cap = capacity_of(name).unwrap_or(40).min(40) as u32;
            let first = cap.div_ceil(2);
            for i in 0..first {
                tx.send(i).unwrap();
            }
            let drain: Drain<'_, u32> = rx.drain();
            // Sent after the call: must not be yielded by this drain.
            for i in first..cap {
                tx.send(i).unwrap();
            }
            assert_eq!(
                drain.collect::<Vec<_>>(),
                (0..first).collect::<Vec<_>>(),
                "{name}"
            );
            assert_eq!(
                rx.try_iter().collect::<Vec<_>>(),
                (first..cap).collect::<Vec<_>>(),
                "{name}"
            );
        }
    });
}

#[test]
fn drain_dropped_early_leaves_the_rest_queued() {
    watchdog(|| {
        for (name, make) in buffered::<u32>() {
            let (tx, rx) = make();
            let cap = capacity_of(name).unwrap_or(100) as u32;
            for i in 0..cap {
                tx.send(i).unwrap();
            }
            let taken = cap.min(2);
            {
                // A drain that is only partly consumed, then goes out of scope.
                let mut drain = rx.drain();
                for i in 0..taken {
                    assert_eq!(drain.next(), Some(i), "{name}");
                }
            }
            assert_eq!(rx.len(), (cap - taken) as usize, "{name}");
            assert_eq!(
                rx.try_iter().collect::<Vec<_>>(),
                (taken..cap).collect::<Vec<_>>(),
                "{name}"
            );
        }
    });
}

#[test]
fn drain_does_not_block() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (_tx, rx) = make();
            assert_eq!(rx.drain().next(), None, "{name}");
            let (tx, rx) = make();
            drop(tx);
            assert_eq!(rx.drain().count(), 0, "{name}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Debug, traits, errors

#[test]
fn debug_without_t_debug() {
    for (name, make) in all::<Opaque>() {
        let (tx, rx) = make();
        assert!(!format!("{tx:?}").is_empty(), "{name}");
        assert!(!format!("{rx:?}").is_empty(), "{name}");
        assert!(!format!("{:?}", tx.downgrade()).is_empty(), "{name}");
    }
    assert!(!format!("{:?}", SendError(Opaque(1))).is_empty());
    assert!(!format!("{:?}", TrySendError::Full(Opaque(1))).is_empty());
    assert!(!format!("{:?}", TrySendError::Disconnected(Opaque(1))).is_empty());
    assert!(!format!("{:?}", SendTimeoutError::Timeout(Opaque(1))).is_empty());
    assert!(!format!("{:?}", SendTimeoutError::Disconnected(Opaque(1))).is_empty());
}

fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
fn assert_clone_debug<T: Clone + Debug>() {}
fn assert_error<T: Error>() {}
fn assert_error_static<T: Error + Send + Sync + 'static>() {}
fn assert_copy_eq<T: Copy + Eq>() {}
fn assert_clone_eq<T: Clone + Eq>() {}

#[test]
fn handle_traits() {
    assert_send_sync_clone::<Sender<u32>>();
    assert_send_sync_clone::<Receiver<u32>>();
    assert_send_sync_clone::<Sender<String>>();
    assert_send_sync_clone::<Receiver<Box<dyn Send>>>();
    assert_clone_debug::<WeakSender<u32>>();
    assert_clone_debug::<WeakSender<Opaque>>();
    assert_clone_debug::<Sender<Opaque>>();
    assert_clone_debug::<Receiver<Opaque>>();
}

#[test]
fn error_trait_impls() {
    // Error (Debug + Display) without T: Debug.
    assert_error::<SendError<Opaque>>();
    assert_error::<TrySendError<Opaque>>();
    assert_error::<SendTimeoutError<Opaque>>();
    assert_error::<RecvError>();
    assert_error::<TryRecvError>();
    assert_error::<RecvTimeoutError>();
    assert_error_static::<SendError<u32>>();
    assert_error_static::<TrySendError<String>>();
    assert_error_static::<SendTimeoutError<Vec<u8>>>();

    // Copy where the payload allows, Clone + Eq otherwise.
    assert_copy_eq::<SendError<u32>>();
    assert_copy_eq::<TrySendError<u32>>();
    assert_copy_eq::<SendTimeoutError<u32>>();
    assert_copy_eq::<RecvError>();
    assert_copy_eq::<TryRecvError>();
    assert_copy_eq::<RecvTimeoutError>();
    assert_clone_eq::<SendError<String>>();
    assert_clone_eq::<TrySendError<String>>();
    assert_clone_eq::<SendTimeoutError<String>>();

    let e = SendError(String::from("s"));
    assert_eq!(e.clone(), e);
    assert_ne!(e, SendError(String::from("t")));
    let c = TrySendError::Full(3u8);
    let d = c; // Copy
    assert_eq!(c, d);
    assert_ne!(TrySendError::Full(1), TrySendError::Disconnected(1));
    assert_ne!(
        SendTimeoutError::Timeout(1),
        SendTimeoutError::Disconnected(1)
    );
    assert_ne!(TryRecvError::Empty, TryRecvError::Disconnected);
    assert_ne!(RecvTimeoutError::Timeout, RecvTimeoutError::Disconnected);

    // Boxing as dyn Error works for 'static payloads.
    let boxed: Box<dyn Error + Send + Sync> = Box::new(SendError(5u32));
    assert!(!boxed.to_string().is_empty());
    let r: Result<(), Box<dyn Error>> = Err(TrySendError::Full(1u8).into());
    assert!(r.is_err());
}

#[test]
fn error_display_is_nonempty_and_distinct() {
    let displays = [
        SendError(1).to_string(),
        TrySendError::Full(1).to_string(),
        TrySendError::Disconnected(1).to_string(),
        SendTimeoutError::Timeout(1).to_string(),
        SendTimeoutError::Disconnected(1).to_string(),
        RecvError.to_string(),
        TryRecvError::Empty.to_string(),
        TryRecvError::Disconnected.to_string(),
        RecvTimeoutError::Timeout.to_string(),
        RecvTimeoutError::Disconnected.to_string(),
    ];
    for d in &displays {
        assert!(!d.is_empty());
    }
    // Full and Disconnected (and Timeout) must be told apart by their messages.
    assert_ne!(displays[1], displays[2]);
    assert_ne!(displays[3], displays[4]);
    assert_ne!(displays[6], displays[7]);
    assert_ne!(displays[8], displays[9]);
    // Debug differs between variants as well.
    assert_ne!(
        format!("{:?}", TrySendError::Full(1)),
        format!("{:?}", TrySendError::Disconnected(1))
    );
}

#[test]
fn into_inner_hands_payload_back() {
    assert_eq!(SendError(vec![1, 2]).into_inner(), vec![1, 2]);
    assert_eq!(SendError(3).0, 3);
    assert_eq!(TrySendError::Full("f").into_inner(), "f");
    assert_eq!(TrySendError::Disconnected("d").into_inner(), "d");
    assert_eq!(SendTimeoutError::Timeout("t").into_inner(), "t");
    assert_eq!(SendTimeoutError::Disconnected("d").into_inner(), "d");
    // Works without any trait on the payload.
    let Opaque(v) = SendError(Opaque(9)).into_inner();
    assert_eq!(v, 9);
}

#[test]
fn recv_error_is_a_unit_struct() {
    watchdog(|| {
        let e: RecvError = RecvError;
        let RecvError = e; // irrefutable unit pattern
        assert_eq!(std::mem::size_of::<RecvError>(), 0);
        let (tx, rx) = conduit::unbounded::<u32>();
        drop(tx);
        let RecvError = rx.recv().unwrap_err();
        // The error module path works too.
        let _: conduit::error::RecvError = RecvError;
        let _: conduit::error::SendError<u8> = SendError(1);
    });
}

// ---------------------------------------------------------------------------------------
// Non-Send payloads

#[test]
fn non_send_payload_within_one_thread() {
    watchdog(|| {
        let makes: Vec<Make<Rc<u32>>> = vec![
            ("bounded(1)", || conduit::bounded(1)),
            ("bounded(4)", || conduit::bounded(4)),
            ("unbounded", conduit::unbounded),
        ];
        for (name, make) in makes {
            let shared = Rc::new(7u32);
            let (tx, rx) = make();
            tx.send(shared.clone()).unwrap();
            assert_eq!(Rc::strong_count(&shared), 2, "{name}");
            assert_eq!(tx.try_send(shared.clone()).is_ok(), name != "bounded(1)");
            let got = rx.recv().unwrap();
            assert!(Rc::ptr_eq(&got, &shared), "{name}");
            drop(got);
            let tx2 = tx.clone();
            let rx2 = rx.clone();
            tx2.send(shared.clone()).unwrap();
            drop((tx, tx2, rx, rx2));
            // Everything queued was dropped with the channel.
            assert_eq!(Rc::strong_count(&shared), 1, "{name}");
        }
    });
}

// ---------------------------------------------------------------------------------------
// Edge cases

#[test]
fn huge_timeouts_do_not_overflow() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let producer = {
                let tx = tx.clone();
                thread::spawn(move || tx.send_timeout(1, Duration::MAX))
            };
            assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1), "{name}");
            assert_eq!(producer.join().unwrap(), Ok(()), "{name}");
            drop(tx);
            assert_eq!(
                rx.recv_timeout(Duration::MAX),
                Err(RecvTimeoutError::Disconnected),
                "{name}"
            );
        });
    }
}

#[test]
fn bounded_wraparound_keeps_counts_and_order() {
    watchdog(|| {
        for cap in [1usize, 2, 3, 7] {
            let (tx, rx) = conduit::bounded::<usize>(cap);
            let mut next_send = 0;
            let mut next_recv = 0;
            for round in 0..50 {
                // Fill to a varying level, then drain part of it.
                let fill = (round % (cap + 1)).max(next_send - next_recv);
                while tx.len() < fill {
                    tx.try_send(next_send).unwrap();
                    next_send += 1;
                }
                assert_eq!(rx.len(), fill, "cap {cap}");
                assert_eq!(tx.is_full(), fill == cap, "cap {cap}");
                assert_eq!(rx.is_empty(), fill == 0, "cap {cap}");
                if fill == cap {
                    assert!(tx.try_send(usize::MAX).unwrap_err().is_full());
                }
                for _ in 0..fill.div_ceil(2) {
                    assert_eq!(rx.try_recv(), Ok(next_recv), "cap {cap}");
                    next_recv += 1;
                }
                assert_eq!(rx.len(), next_send - next_recv, "cap {cap}");
            }
        }
    });
}

#[test]
fn zero_sized_payloads() {
    for (name, make) in buffered::<()>() {
        let (tx, rx) = make();
        let n = capacity_of(name).unwrap_or(1_000);
        for _ in 0..n {
            tx.try_send(()).unwrap();
        }
        assert_eq!(rx.len(), n, "{name}");
        if capacity_of(name).is_some() {
            assert_eq!(tx.try_send(()), Err(TrySendError::Full(())), "{name}");
        }
        assert_eq!(rx.drain().count(), n, "{name}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
    }
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<()>();
        let t = thread::spawn(move || (0..100).map(|_| rx.recv().unwrap()).count());
        for _ in 0..100 {
            tx.send(()).unwrap();
        }
        assert_eq!(t.join().unwrap(), 100);
    });
}

/// `drain()` racing with a blocked sender on a full channel yields at most what was
/// queued at the call, in order; the rest is received afterwards.
#[test]
fn drain_with_concurrent_sender() {
    for cap in [1usize, 4, 16] {
        watchdog(move || {
            for _ in 0..50 {
                let (tx, rx) = conduit::bounded::<usize>(cap);
                for i in 0..cap {
                    tx.send(i).unwrap();
                }
                let sender = thread::spawn(move || {
                    for i in cap..3 * cap {
                        tx.send(i).unwrap();
                    }
                });
                let drained: Vec<usize> = rx.drain().collect();
                assert!(drained.len() <= cap, "cap {cap}: drained {drained:?}");
                assert_eq!(drained, (0..drained.len()).collect::<Vec<_>>());
                let rest: Vec<usize> = rx.iter().collect();
                sender.join().unwrap();
                assert_eq!(rest, (drained.len()..3 * cap).collect::<Vec<_>>());
            }
        });
    }
}

/// Upgrading a weak sender while the last strong sender drops: either the upgrade
/// fails, or it succeeds before the channel disconnected. A receiver that has seen
/// `Disconnected` never sees a message afterwards.
#[test]
fn weak_upgrade_races_last_sender_drop() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            for _ in 0..300 {
                let (tx, rx) = make();
                let weak = tx.downgrade();
                let dropper = thread::spawn(move || drop(tx));
                let upgrader = thread::spawn(move || match weak.upgrade() {
                    Some(s) => {
                        let r = s.try_send(1);
                        assert!(
                            !matches!(r, Err(TrySendError::Disconnected(_))),
                            "an upgraded sender found the channel disconnected"
                        );
                        true
                    }
                    None => false,
                });
                let mut got = 0;
                loop {
                    match rx.try_recv() {
                        Ok(_) => got += 1,
                        Err(TryRecvError::Empty) => thread::yield_now(),
                        Err(TryRecvError::Disconnected) => break,
                    }
                }
                dropper.join().unwrap();
                let upgraded = upgrader.join().unwrap();
                assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
                assert_eq!(got, usize::from(upgraded), "{name}");
            }
        });
    }
}

/// `drain()` with another receiver taking messages concurrently: it never blocks, and
/// together they take every message exactly once.
#[test]
fn drain_with_concurrent_receiver() {
    for (name, make) in buffered::<usize>() {
        watchdog(move || {
            for _ in 0..50 {
                let (tx, rx) = make();
                let n = capacity_of(name).unwrap_or(64);
                for i in 0..n {
                    tx.send(i).unwrap();
                }
                drop(tx);
                let other = {
                    let rx = rx.clone();
                    thread::spawn(move || rx.iter().collect::<Vec<_>>())
                };
                let drained: Vec<usize> = rx.drain().collect();
                assert!(drained.windows(2).all(|w| w[0] < w[1]), "{name}");
                let mut all = other.join().unwrap();
                all.extend(drained);
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "{name}");
            }
        });
    }
}
