//! Disconnection: waking blocked and pending users on either side, handing messages
//! back, and dropping queued messages exactly once at the right moment.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::thread;

use common::{
    Counted, Flag, RUNTIMES, all, buffered, poll_once, run_tokio, spin_until, waker, watchdog,
};
use conduit::{RecvError, SendError, TryRecvError};

// ---------------------------------------------------------------------------------------
// Last sender dropped

#[test]
fn queued_messages_drain_before_disconnected() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            tx.send(1).unwrap();
            drop(tx);
            assert_eq!(rx.recv(), Ok(1), "{name}");
            assert_eq!(rx.recv(), Err(RecvError), "{name}");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        });
    }
}

#[test]
fn last_sender_drop_wakes_blocked_receivers() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let ready = Arc::new(AtomicUsize::new(0));
            let receivers: Vec<_> = (0..3)
                .map(|_| {
                    let rx = rx.clone();
                    let ready = ready.clone();
                    thread::spawn(move || {
                        let mut got = vec![];
                        ready.fetch_add(1, Ordering::SeqCst);
                        loop {
                            match rx.recv() {
                                Ok(v) => got.push(v),
                                Err(RecvError) => return got,
                            }
                        }
                    })
                })
                .collect();
            // Let the threads reach recv (not required for correctness).
            spin_until(|| ready.load(Ordering::SeqCst) == 3);
            let tx2 = tx.clone();
            for i in 0..20 {
                tx.send(i).unwrap();
            }
            // Dropping one of two senders does not disconnect.
            drop(tx);
            tx2.send(20).unwrap();
            drop(tx2);
            let mut all: Vec<u32> = receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..21).collect::<Vec<_>>(), "{name}");
            assert_eq!(rx.recv(), Err(RecvError), "{name}");
        });
    }
}

#[test]
fn last_sender_drop_wakes_idle_blocked_receivers() {
    // No message at all: every receiver is (or will be) blocked on an empty channel.
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let receivers: Vec<_> = (0..3)
                .map(|_| {
                    let rx = rx.clone();
                    thread::spawn(move || rx.recv())
                })
                .collect();
            let timed = {
                let rx = rx.clone();
                thread::spawn(move || rx.recv_timeout(std::time::Duration::from_secs(60)))
            };
            drop(tx);
            for r in receivers {
                assert_eq!(r.join().unwrap(), Err(RecvError), "{name}");
            }
            assert_eq!(
                timed.join().unwrap(),
                Err(conduit::RecvTimeoutError::Disconnected),
                "{name}"
            );
        });
    }
}

/// Pending receive futures, polled by hand: dropping the last sender must wake each of
/// them, and they then drain what is queued and report disconnection.
#[test]
fn last_sender_drop_wakes_pending_recv_futs() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let flags: Vec<_> = (0..3).map(|_| Flag::new()).collect();
            let wakers: Vec<_> = flags.iter().map(waker).collect();
            let mut futs: Vec<_> = (0..3).map(|_| Box::pin(rx.recv_async())).collect();
            for (f, w) in futs.iter_mut().zip(&wakers) {
                assert!(poll_once(f, w).is_pending(), "{name}");
            }
            drop(tx);
            for (i, flag) in flags.iter().enumerate() {
                assert!(flag.woken(), "{name}: pending RecvFut {i} not woken");
            }
            for (f, w) in futs.iter_mut().zip(&wakers) {
                assert_eq!(poll_once(f, w), Poll::Ready(Err(RecvError)), "{name}");
            }
        });
    }
}

#[test]
fn last_sender_drop_pending_futs_drain_queue_first() {
    for (name, make) in buffered::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let flag = Flag::new();
            let w = waker(&flag);
            let mut fut = Box::pin(rx.recv_async());
            assert!(poll_once(&mut fut, &w).is_pending());
            tx.send(5).unwrap();
            drop(tx);
            assert!(flag.woken(), "{name}");
            assert_eq!(poll_once(&mut fut, &w), Poll::Ready(Ok(5)), "{name}");
            let mut fut = Box::pin(rx.recv_async());
            assert_eq!(
                poll_once(&mut fut, &w),
                Poll::Ready(Err(RecvError)),
                "{name}"
            );
        });
    }
}

#[test]
fn last_sender_drop_wakes_recv_async_tasks() {
    for rt in RUNTIMES {
        for (name, make) in all::<u32>() {
            run_tokio(rt, 20, move || async move {
                let (tx, rx) = make();
                let tasks: Vec<_> = (0..3)
                    .map(|_| {
                        let rx = rx.clone();
                        tokio::spawn(async move {
                            let mut got = vec![];
                            while let Ok(v) = rx.recv_async().await {
                                got.push(v);
                            }
                            got
                        })
                    })
                    .collect();
                // Let the tasks reach their first await (they are then pending).
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                for i in 0..10 {
                    tx.send_async(i).await.unwrap();
                }
                drop(tx);
                let mut all = vec![];
                for t in tasks {
                    all.extend(t.await.unwrap());
                }
                all.sort_unstable();
                assert_eq!(all, (0..10).collect::<Vec<_>>(), "{name} on {rt:?}");
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Last receiver dropped

#[test]
fn last_receiver_drop_wakes_blocked_senders_with_message_back() {
    for (name, make) in all::<String>() {
        if name == "unbounded" {
            continue; // its senders never block
        }
        watchdog(move || {
            let (tx, rx) = make();
            // Fill the channel: nobody ever receives, so no later send can succeed.
            let cap = rx.capacity().unwrap();
            for i in 0..cap {
                tx.send(format!("fill{i}")).unwrap();
            }
            let senders: Vec<_> = (0..3)
                .map(|i| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        let msg = format!("blocked{i}");
                        if i == 2 {
                            tx.send_timeout(msg, std::time::Duration::from_secs(60))
                                .map_err(|e| {
                                    assert!(e.is_disconnected());
                                    e.into_inner()
                                })
                        } else {
                            tx.send(msg).map_err(|SendError(m)| m)
                        }
                    })
                })
                .collect();
            let rx2 = rx.clone();
            drop(rx);
            drop(rx2);
            for (i, s) in senders.into_iter().enumerate() {
                assert_eq!(
                    s.join().unwrap(),
                    Err(format!("blocked{i}")),
                    "{name}: sender {i} must get its own message back"
                );
            }
            assert_eq!(tx.send("late".into()), Err(SendError("late".into())));
        });
    }
}

#[test]
fn last_receiver_drop_wakes_pending_send_futs() {
    for (name, make) in all::<String>() {
        if name == "unbounded" {
            continue;
        }
        watchdog(move || {
            let (tx, rx) = make();
            let cap = rx.capacity().unwrap();
            for i in 0..cap {
                tx.send(format!("fill{i}")).unwrap();
            }
            let flags: Vec<_> = (0..3).map(|_| Flag::new()).collect();
            let wakers: Vec<_> = flags.iter().map(waker).collect();
            let mut futs: Vec<_> = (0..3)
                .map(|i| Box::pin(tx.send_async(format!("pending{i}"))))
                .collect();
            for (f, w) in futs.iter_mut().zip(&wakers) {
                assert!(poll_once(f, w).is_pending(), "{name}");
            }
            drop(rx);
            for (i, (f, w)) in futs.iter_mut().zip(&wakers).enumerate() {
                assert!(flags[i].woken(), "{name}: pending SendFut {i} not woken");
                match poll_once(f, w) {
                    Poll::Ready(Err(SendError(m))) => assert_eq!(m, format!("pending{i}")),
                    other => panic!("{name}: SendFut {i}: expected Disconnected, got {other:?}"),
                }
            }
        });
    }
}

#[test]
fn last_receiver_drop_wakes_send_async_tasks() {
    for rt in RUNTIMES {
        for (name, make) in all::<u32>() {
            if name == "unbounded" {
                continue;
            }
            run_tokio(rt, 20, move || async move {
                let (tx, rx) = make();
                let cap = rx.capacity().unwrap() as u32;
                for i in 0..cap {
                    tx.send_async(i).await.unwrap();
                }
                let tasks: Vec<_> = (0..3u32)
                    .map(|i| {
                        let tx = tx.clone();
                        tokio::spawn(async move { tx.send_async(100 + i).await })
                    })
                    .collect();
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                drop(rx);
                for (i, t) in tasks.into_iter().enumerate() {
                    assert_eq!(
                        t.await.unwrap(),
                        Err(SendError(100 + i as u32)),
                        "{name} on {rt:?}"
                    );
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Dropping messages

/// Messages still queued when the last receiver goes are dropped right then, while
/// senders still exist, and exactly once.
#[test]
fn queued_messages_dropped_when_last_receiver_drops() {
    watchdog(|| {
        for (name, make) in buffered::<Counted>() {
            let drops = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = make();
            let n = rx.capacity().unwrap_or(200); // unbounded: several blocks
            for i in 0..n {
                tx.send(Counted::new(i, &drops)).unwrap();
            }
            // Receive (and drop) a few first, so queues that start mid-block are covered.
            let taken = n / 4;
            for i in 0..taken {
                assert_eq!(rx.recv().unwrap().id, i, "{name}");
            }
            assert_eq!(drops.load(Ordering::SeqCst), taken, "{name}");
            let rx2 = rx.clone();
            drop(rx);
            // A receiver is left: nothing dropped.
            assert_eq!(drops.load(Ordering::SeqCst), taken, "{name}");
            drop(rx2);
            assert_eq!(
                drops.load(Ordering::SeqCst),
                n,
                "{name}: queued messages must be dropped when the last receiver goes"
            );
            // A send now hands its message back; dropping the error drops it.
            let err = tx.send(Counted::new(n, &drops)).unwrap_err();
            assert_eq!(err.0.id, n, "{name}");
            assert_eq!(drops.load(Ordering::SeqCst), n, "{name}");
            drop(err);
            assert_eq!(drops.load(Ordering::SeqCst), n + 1, "{name}");
            drop(tx);
            assert_eq!(drops.load(Ordering::SeqCst), n + 1, "{name}: double drop");
            assert_eq!(Arc::strong_count(&drops), 1, "{name}: leaked message");
        }
    });
}

/// With the senders gone first, queued messages stay receivable, and are dropped when
/// the channel itself goes.
#[test]
fn queued_messages_dropped_with_the_channel() {
    watchdog(|| {
        for (name, make) in buffered::<Counted>() {
            for senders_first in [true, false] {
                let drops = Arc::new(AtomicUsize::new(0));
                let (tx, rx) = make();
                let n = rx.capacity().unwrap_or(150);
                for i in 0..n {
                    tx.send(Counted::new(i, &drops)).unwrap();
                }
                if senders_first {
                    drop(tx);
                    assert_eq!(drops.load(Ordering::SeqCst), 0, "{name}");
                    drop(rx);
                } else {
                    drop(rx);
                    assert_eq!(drops.load(Ordering::SeqCst), n, "{name}");
                    drop(tx);
                }
                assert_eq!(drops.load(Ordering::SeqCst), n, "{name}");
                assert_eq!(Arc::strong_count(&drops), 1, "{name}: leaked message");
            }
        }
    });
}

/// Unbounded with many blocks, partially consumed across block boundaries, from
/// several threads; at the end every message was dropped exactly once.
#[test]
fn unbounded_no_leak_no_double_drop_across_blocks() {
    watchdog(|| {
        for (sent, received) in [
            (0, 0),
            (31, 31),
            (100, 31),
            (250, 62),
            (250, 249),
            (1000, 500),
        ] {
            let drops = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = conduit::unbounded();
            for i in 0..sent {
                tx.send(Counted::new(i, &drops)).unwrap();
            }
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let rx = rx.clone();
                    let per = received / 2;
                    thread::spawn(move || {
                        (0..per).map(|_| rx.recv().unwrap().id).collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut ids: Vec<usize> = consumers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            if received % 2 == 1 {
                ids.push(rx.recv().unwrap().id);
            }
            ids.sort_unstable();
            assert_eq!(ids, (0..received).collect::<Vec<_>>());
            assert_eq!(drops.load(Ordering::SeqCst), received);
            drop(rx);
            assert_eq!(drops.load(Ordering::SeqCst), sent, "sent {sent}");
            drop(tx);
            assert_eq!(drops.load(Ordering::SeqCst), sent, "sent {sent}");
            assert_eq!(Arc::strong_count(&drops), 1, "leaked (sent {sent})");
        }
    });
}

/// Messages in flight in blocked rendezvous senders and pending send futures are not
/// the channel's: they come back in the error and are dropped once, by their owner.
#[test]
fn rendezvous_handed_back_messages_dropped_once() {
    watchdog(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = conduit::rendezvous::<Counted>();
        let blocked = {
            let tx = tx.clone();
            let drops = drops.clone();
            thread::spawn(move || tx.send(Counted::new(1, &drops)))
        };
        let mut fut = Box::pin(tx.send_async(Counted::new(2, &drops)));
        let flag = Flag::new();
        let w = waker(&flag);
        assert!(poll_once(&mut fut, &w).is_pending());
        drop(rx);
        let err = blocked.join().unwrap().unwrap_err();
        assert_eq!(err.0.id, 1);
        let Poll::Ready(Err(err2)) = poll_once(&mut fut, &w) else {
            panic!("the pending send future must fail after the receiver is gone");
        };
        assert_eq!(err2.0.id, 2);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop((err, err2));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(fut);
        drop(tx);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert_eq!(Arc::strong_count(&drops), 1);
    });
}

/// A dropped, never-completed send future drops its own message exactly once.
#[test]
fn dropped_send_fut_drops_its_message_once() {
    watchdog(|| {
        for (name, make) in all::<Counted>() {
            let drops = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = make();
            let queued = rx.capacity().unwrap_or(0);
            for i in 0..queued {
                tx.send(Counted::new(i, &drops)).unwrap();
            }
            // Never polled.
            drop(tx.send_async(Counted::new(100, &drops)));
            assert_eq!(drops.load(Ordering::SeqCst), 1, "{name}");
            // Nothing was enqueued by the unpolled future.
            assert_eq!(rx.len(), queued, "{name}");
            drop((tx, rx));
            assert_eq!(drops.load(Ordering::SeqCst), 1 + queued, "{name}");
            assert_eq!(Arc::strong_count(&drops), 1, "{name}");
        }
    });
}

/// A bounded ring whose queued messages wrap around the end of the buffer drops each
/// exactly once.
#[test]
fn bounded_wrapped_ring_drops_once() {
    watchdog(|| {
        for cap in [1usize, 3, 4, 16] {
            for pre in 0..=cap {
                let drops = Arc::new(AtomicUsize::new(0));
                let (tx, rx) = conduit::bounded(cap);
                for i in 0..pre {
                    tx.send(Counted::new(i, &drops)).unwrap();
                }
                for _ in 0..pre {
                    drop(rx.recv().unwrap());
                }
                for i in 0..cap {
                    tx.send(Counted::new(100 + i, &drops)).unwrap();
                }
                assert_eq!(drops.load(Ordering::SeqCst), pre);
                drop(rx);
                assert_eq!(
                    drops.load(Ordering::SeqCst),
                    pre + cap,
                    "cap {cap} pre {pre}"
                );
                drop(tx);
                assert_eq!(
                    drops.load(Ordering::SeqCst),
                    pre + cap,
                    "cap {cap} pre {pre}"
                );
                assert_eq!(Arc::strong_count(&drops), 1);
            }
        }
    });
}

/// Messages queued while receivers drop concurrently with senders sending: every
/// message is either received, handed back, or dropped by the channel, exactly once.
#[test]
fn racing_last_receiver_drop_accounts_for_every_message() {
    for (name, make) in buffered::<Counted>() {
        watchdog(move || {
            for _ in 0..50 {
                let drops = Arc::new(AtomicUsize::new(0));
                let (tx, rx) = make();
                let senders: Vec<_> = (0..2)
                    .map(|p| {
                        let tx = tx.clone();
                        let drops = drops.clone();
                        thread::spawn(move || {
                            let mut handed_back = 0;
                            for i in 0..200 {
                                if let Err(e) = tx.try_send(Counted::new(p * 1000 + i, &drops)) {
                                    drop(e.into_inner());
                                    handed_back += 1;
                                }
                            }
                            handed_back
                        })
                    })
                    .collect();
                let mut received = 0;
                for _ in 0..20 {
                    if rx.try_recv().is_ok() {
                        received += 1;
                    }
                }
                drop(rx);
                let handed_back: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
                // Everything the receiver did not take was dropped at the receiver's drop
                // or handed back; nothing is still alive.
                assert_eq!(drops.load(Ordering::SeqCst), 400, "{name}");
                assert!(received + handed_back <= 400, "{name}");
                drop(tx);
                assert_eq!(drops.load(Ordering::SeqCst), 400, "{name}: double drop");
                assert_eq!(Arc::strong_count(&drops), 1, "{name}: leak");
            }
        });
    }
}
