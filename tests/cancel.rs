//! Cancel safety of the futures, wake-up hand-over, re-polling, and the `Stream` and
//! `Sink` adapters.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::thread;

use common::{
    Flag, Make, RUNTIMES, all, buffered, poll_noop, poll_once, poll_registered, run_tokio,
    spin_until, waker, watchdog,
};
use conduit::{
    RecvError, RecvFut, RecvStream, SendError, SendFut, SendSink, TryRecvError, TrySendError,
};
use futures::stream::FusedStream;
use futures::{SinkExt, StreamExt};

fn is_rendezvous(name: &str) -> bool {
    name == "rendezvous"
}

fn check_exactly_once(name: &str, mut got: Vec<u64>, total: u64) {
    got.sort_unstable();
    for w in got.windows(2) {
        assert_ne!(w[0], w[1], "{name}: message {} received twice", w[0]);
    }
    assert_eq!(
        got.len() as u64,
        total,
        "{name}: {} of {total} messages received (lost ones)",
        got.len()
    );
    assert_eq!(got, (0..total).collect::<Vec<_>>(), "{name}");
}

// ---------------------------------------------------------------------------------------
// Receive futures dropped before Ready

/// Thousands of receive futures polled once and dropped, first on an empty channel,
/// then while two producer threads send: every message is received exactly once.
#[test]
fn recv_futs_polled_once_and_dropped_lose_nothing() {
    const PER: u64 = 2_000;
    for (name, make) in all::<u64>() {
        watchdog(move || {
            let (tx, rx) = make();
            // Phase 1: nothing to take; each future is Pending and then dropped.
            for _ in 0..2_000 {
                let mut fut = Box::pin(rx.recv_async());
                assert!(poll_noop(&mut fut).is_pending(), "{name}");
            }
            // No stale waiter may be left behind.
            assert_eq!(
                tx.try_send(u64::MAX).is_ok(),
                !is_rendezvous(name),
                "{name}"
            );
            if !is_rendezvous(name) {
                assert_eq!(rx.try_recv(), Ok(u64::MAX), "{name}");
            }

            // Phase 2: messages flow.
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        for i in 0..PER {
                            tx.send(p * PER + i).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            // One consumer awaits properly, for progress under rendezvous.
            let steady = {
                let rx = rx.clone();
                thread::spawn(move || {
                    let mut got = vec![];
                    while let Ok(v) = futures::executor::block_on(rx.recv_async()) {
                        got.push(v);
                    }
                    got
                })
            };
            let mut got = vec![];
            loop {
                let mut fut = Box::pin(rx.recv_async());
                match poll_noop(&mut fut) {
                    Poll::Ready(Ok(v)) => got.push(v),
                    Poll::Ready(Err(RecvError)) => break,
                    Poll::Pending => {}
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            got.extend(steady.join().unwrap());
            check_exactly_once(name, got, 2 * PER);
        });
    }
}

/// A receive future still pending, and the flag its waker sets.
type Pending<'a> = (std::pin::Pin<Box<RecvFut<'a, u64>>>, Arc<Flag>);

/// Several receive futures alive at once; a future is polled only when its waker
/// fired, and every few rounds the oldest is dropped (possibly woken and unpolled).
#[test]
fn juggled_recv_futs_lose_nothing() {
    const PER: u64 = 1_500;
    for (name, make) in all::<u64>() {
        watchdog(move || {
            let (tx, rx) = make();
            let producers: Vec<_> = (0..2)
                .map(|p| {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        for i in 0..PER {
                            if i % 2 == 0 {
                                tx.send(p * PER + i).unwrap();
                            } else {
                                futures::executor::block_on(tx.send_async(p * PER + i)).unwrap();
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            let mut got = vec![];
            let mut alive: VecDeque<Pending<'_>> = VecDeque::new();
            let mut round = 0u64;
            'outer: loop {
                round += 1;
                if alive.len() < 4 {
                    let flag = Flag::new();
                    let mut fut = Box::pin(rx.recv_async());
                    match poll_once(&mut fut, &waker(&flag)) {
                        Poll::Ready(Ok(v)) => got.push(v),
                        Poll::Ready(Err(RecvError)) => break 'outer,
                        Poll::Pending => alive.push_back((fut, flag)),
                    }
                }
                let mut i = 0;
                while i < alive.len() {
                    if alive[i].1.woken() {
                        alive[i].1.reset();
                        let w = waker(&alive[i].1);
                        match poll_once(&mut alive[i].0, &w) {
                            Poll::Ready(Ok(v)) => {
                                got.push(v);
                                alive.remove(i);
                                continue;
                            }
                            Poll::Ready(Err(RecvError)) => break 'outer,
                            Poll::Pending => {}
                        }
                    }
                    i += 1;
                }
                if round.is_multiple_of(5) {
                    // Cancel the oldest, whether or not it was woken.
                    alive.pop_front();
                }
                thread::yield_now();
            }
            drop(alive);
            // Whatever is left (nothing, once Disconnected was seen).
            got.extend(rx.try_iter());
            for p in producers {
                p.join().unwrap();
            }
            check_exactly_once(name, got, 2 * PER);
        });
    }
}

/// Receive futures cancelled by a real runtime (`select!` against a yield) while
/// producer tasks and threads send.
#[test]
fn recv_futs_cancelled_by_select_on_tokio() {
    const PER: u64 = 1_000;
    for rt in RUNTIMES {
        for (name, make) in all::<u64>() {
            run_tokio(rt, 20, move || async move {
                let (tx, rx) = make();
                let cancelled = Arc::new(AtomicUsize::new(0));
                let consumers: Vec<_> = (0..2)
                    .map(|_| {
                        let rx = rx.clone();
                        let cancelled = cancelled.clone();
                        tokio::spawn(async move {
                            let mut got = vec![];
                            loop {
                                tokio::select! {
                                    biased;
                                    r = rx.recv_async() => match r {
                                        Ok(v) => got.push(v),
                                        Err(RecvError) => return got,
                                    },
                                    () = tokio::task::yield_now() => {
                                        cancelled.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                // A steady consumer too, so rendezvous senders always find a taker.
                let steady = {
                    let rx = rx.clone();
                    tokio::spawn(async move {
                        let mut got = vec![];
                        while let Ok(v) = rx.recv_async().await {
                            got.push(v);
                        }
                        got
                    })
                };
                drop(rx);
                let task_producer = {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        for i in 0..PER {
                            tx.send_async(i).await.unwrap();
                        }
                    })
                };
                let thread_producer = {
                    let tx = tx.clone();
                    thread::spawn(move || {
                        for i in PER..2 * PER {
                            tx.send(i).unwrap();
                        }
                    })
                };
                drop(tx);
                task_producer.await.unwrap();
                let mut got = steady.await.unwrap();
                for c in consumers {
                    got.extend(c.await.unwrap());
                }
                tokio::task::spawn_blocking(move || thread_producer.join().unwrap())
                    .await
                    .unwrap();
                check_exactly_once(&format!("{name} on {rt:?}"), got, 2 * PER);
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Send futures dropped before Ready

#[test]
fn send_fut_dropped_while_pending_sent_nothing() {
    watchdog(|| {
        for (name, make) in buffered::<u32>() {
            if name == "unbounded" {
                continue; // never pending
            }
            let (tx, rx) = make();
            let cap = rx.capacity().unwrap() as u32;
            for i in 0..cap {
                tx.send(i).unwrap();
            }
            let mut fut = Box::pin(tx.send_async(999));
            assert!(poll_noop(&mut fut).is_pending(), "{name}");
            // Spurious re-polls change nothing.
            assert!(poll_noop(&mut fut).is_pending(), "{name}");
            drop(fut);
            // Room appears after the drop: the dropped message must not show up.
            let got: Vec<u32> = rx.try_iter().collect();
            assert_eq!(got, (0..cap).collect::<Vec<_>>(), "{name}");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
            assert_eq!(rx.len(), 0, "{name}");
            tx.send(1000).unwrap();
            assert_eq!(rx.try_recv(), Ok(1000), "{name}");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
        }
    });
}

#[test]
fn send_fut_never_polled_sent_nothing() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            drop(tx.send_async(1));
            drop(tx.clone().into_send_async(2));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
            assert_eq!(rx.len(), 0, "{name}");
            if !is_rendezvous(name) {
                tx.send(3).unwrap();
                assert_eq!(rx.try_recv(), Ok(3), "{name}");
            }
        }
    });
}

/// Send futures polled once and dropped while a consumer drains concurrently: the
/// consumer sees exactly the messages whose future returned `Ready(Ok)`, in order.
/// (For rendezvous, a future dropped after a receiver took its message counts as sent,
/// so there the received set lies between the `Ready(Ok)` ones and all attempted.)
#[test]
fn send_futs_polled_once_and_dropped_while_draining() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let consumer = thread::spawn(move || rx.iter().collect::<Vec<_>>());
            let mut confirmed = vec![];
            for i in 0..4_000u32 {
                let mut fut = Box::pin(tx.send_async(i));
                match poll_noop(&mut fut) {
                    Poll::Ready(Ok(())) => confirmed.push(i),
                    Poll::Ready(Err(e)) => panic!("{name}: unexpected {e:?}"),
                    Poll::Pending => {}
                }
            }
            drop(tx);
            let got = consumer.join().unwrap();
            if is_rendezvous(name) {
                for w in got.windows(2) {
                    assert!(w[0] < w[1], "{name}: duplicate or reordered: {w:?}");
                }
                let mut j = 0;
                for c in &confirmed {
                    while j < got.len() && got[j] < *c {
                        j += 1;
                    }
                    assert!(
                        j < got.len() && got[j] == *c,
                        "{name}: confirmed message {c} never received"
                    );
                }
            } else {
                assert_eq!(got, confirmed, "{name}");
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Wake-ups consumed by dropped futures pass on

/// Two receive futures pending, one message sent; the woken future is dropped without
/// being polled: the other must be woken in its place and complete.
#[test]
fn consumed_recv_wakeup_passes_to_other_future() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let (f1, f2) = (Flag::new(), Flag::new());
            let (w1, w2) = (waker(&f1), waker(&f2));
            let mut r1 = Box::pin(rx.recv_async());
            let mut r2 = Box::pin(rx.recv_async());
            assert!(poll_once(&mut r1, &w1).is_pending(), "{name}");
            assert!(poll_once(&mut r2, &w2).is_pending(), "{name}");

            let sender = thread::spawn(move || {
                tx.send(7).unwrap();
                tx
            });
            // A sent message (or an offer, for rendezvous) wakes at least one of them.
            spin_until(|| f1.woken() || f2.woken());
            let (other, other_flag, other_waker) = if f1.woken() {
                drop(r1);
                (r2, f2, w2)
            } else {
                drop(r2);
                (r1, f1, w1)
            };
            // The dropped future consumed a wake-up; it must pass to the other one.
            spin_until(|| other_flag.woken());
            let mut other = other;
            assert_eq!(
                poll_once(&mut other, &other_waker),
                Poll::Ready(Ok(7)),
                "{name}"
            );
            let tx = sender.join().unwrap();
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
            drop(tx);
        });
    }
}

/// The same with the other waiter a thread blocked in `recv`.
#[test]
fn consumed_recv_wakeup_passes_to_blocked_thread() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let flag = Flag::new();
            let w = waker(&flag);
            let mut fut = Box::pin(rx.recv_async());
            assert!(poll_once(&mut fut, &w).is_pending(), "{name}");
            let blocked = {
                let rx = rx.clone();
                thread::spawn(move || rx.recv())
            };
            let sender = thread::spawn(move || {
                tx.send(8).unwrap();
                tx
            });
            spin_until(|| flag.woken() || blocked.is_finished());
            // Dropped unpolled (if it was woken, its wake-up must pass on).
            drop(fut);
            assert_eq!(blocked.join().unwrap(), Ok(8), "{name}");
            let tx = sender.join().unwrap();
            drop(tx);
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        });
    }
}

/// Send side: two send futures pending on a full bounded channel; a slot frees up; the
/// woken future is dropped unpolled: the other must be woken and complete.
#[test]
fn consumed_send_wakeup_passes_to_other_future() {
    let makes: [Make<u32>; 2] = [
        ("bounded(1)", || conduit::bounded(1)),
        ("bounded(3)", || conduit::bounded(3)),
    ];
    for (name, make) in makes {
        watchdog(move || {
            let (tx, rx) = make();
            let cap = rx.capacity().unwrap() as u32;
            for i in 0..cap {
                tx.send(i).unwrap();
            }
            let (f1, f2) = (Flag::new(), Flag::new());
            let (w1, w2) = (waker(&f1), waker(&f2));
            let mut s1 = Box::pin(tx.send_async(100));
            let mut s2 = Box::pin(tx.send_async(200));
            assert!(poll_once(&mut s1, &w1).is_pending(), "{name}");
            assert!(poll_once(&mut s2, &w2).is_pending(), "{name}");
            assert_eq!(rx.recv(), Ok(0), "{name}");
            spin_until(|| f1.woken() || f2.woken());
            let (mut other, other_flag, other_waker, expect) = if f1.woken() {
                drop(s1);
                (s2, f2, w2, 200)
            } else {
                drop(s2);
                (s1, f1, w1, 100)
            };
            spin_until(|| other_flag.woken());
            assert_eq!(
                poll_once(&mut other, &other_waker),
                Poll::Ready(Ok(())),
                "{name}"
            );
            drop(other);
            let mut rest: Vec<u32> = rx.try_iter().collect();
            let mut want: Vec<u32> = (1..cap).collect();
            want.push(expect);
            assert_eq!(rest, want, "{name}");
            rest.clear();
        });
    }
}

// ---------------------------------------------------------------------------------------
// Re-polling

#[test]
fn recv_fut_repolled_with_a_different_waker() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let (f1, f2) = (Flag::new(), Flag::new());
            let mut fut = Box::pin(rx.recv_async());
            assert!(poll_once(&mut fut, &waker(&f1)).is_pending(), "{name}");
            // Spurious polls, then a new waker.
            for _ in 0..10 {
                assert!(poll_once(&mut fut, &waker(&f1)).is_pending(), "{name}");
            }
            let w2 = waker(&f2);
            assert!(poll_once(&mut fut, &w2).is_pending(), "{name}");
            let sender = thread::spawn(move || tx.send(5).unwrap());
            // The latest waker must be the one woken.
            spin_until(|| f2.woken());
            assert_eq!(poll_once(&mut fut, &w2), Poll::Ready(Ok(5)), "{name}");
            sender.join().unwrap();
        });
    }
}

#[test]
fn send_fut_repolled_with_a_different_waker() {
    for (name, make) in all::<u32>() {
        if name == "unbounded" {
            continue;
        }
        watchdog(move || {
            let (tx, rx) = make();
            let cap = rx.capacity().unwrap() as u32;
            for i in 0..cap {
                tx.send(i).unwrap();
            }
            let (f1, f2) = (Flag::new(), Flag::new());
            let mut fut = Box::pin(tx.send_async(50));
            assert!(
                poll_registered(&mut fut, &waker(&f1)).is_pending(),
                "{name}"
            );
            for _ in 0..10 {
                assert!(poll_once(&mut fut, &waker(&f1)).is_pending(), "{name}");
            }
            let w2 = waker(&f2);
            assert!(poll_once(&mut fut, &w2).is_pending(), "{name}");
            let receiver = thread::spawn(move || {
                let got: Vec<u32> = (0..=cap).map(|_| rx.recv().unwrap()).collect();
                (got, rx)
            });
            spin_until(|| f2.woken());
            assert_eq!(poll_once(&mut fut, &w2), Poll::Ready(Ok(())), "{name}");
            let (got, _rx) = receiver.join().unwrap();
            let mut want: Vec<u32> = (0..cap).collect();
            want.push(50);
            assert_eq!(got, want, "{name}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Stream

#[test]
fn stream_collects_then_ends() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let producer = thread::spawn(move || {
                for i in 0..300 {
                    tx.send(i).unwrap();
                }
            });
            let mut stream: RecvStream<'_, u32> = rx.stream();
            assert!(!stream.is_terminated(), "{name}");
            let got: Vec<u32> = futures::executor::block_on((&mut stream).collect());
            assert_eq!(got, (0..300).collect::<Vec<_>>(), "{name}");
            assert!(stream.is_terminated(), "{name}");
            // Fused: keeps answering None.
            assert_eq!(futures::executor::block_on(stream.next()), None, "{name}");
            assert!(stream.is_terminated(), "{name}");
            drop(stream);
            producer.join().unwrap();
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        });
    }
}

#[test]
fn into_stream_on_tokio() {
    for rt in RUNTIMES {
        for (name, make) in all::<u32>() {
            run_tokio(rt, 20, move || async move {
                let (tx, rx) = make();
                let consumer = tokio::spawn(async move {
                    let mut s: RecvStream<'static, u32> = rx.into_stream();
                    let mut got = vec![];
                    while let Some(v) = s.next().await {
                        got.push(v);
                    }
                    assert!(s.is_terminated());
                    assert_eq!(s.next().await, None);
                    got
                });
                for i in 0..200 {
                    tx.send_async(i).await.unwrap();
                }
                drop(tx);
                let got = consumer.await.unwrap();
                assert_eq!(got, (0..200).collect::<Vec<_>>(), "{name} on {rt:?}");
            });
        }
    }
}

#[test]
fn two_streams_share_the_messages() {
    for (name, make) in all::<u32>() {
        run_tokio(common::Rt::MultiThread, 20, move || async move {
            let (tx, rx) = make();
            let a = tokio::spawn(rx.clone().into_stream().collect::<Vec<_>>());
            let b = tokio::spawn(rx.into_stream().collect::<Vec<_>>());
            for i in 0..500 {
                tx.send_async(i).await.unwrap();
            }
            drop(tx);
            let (a, b) = (a.await.unwrap(), b.await.unwrap());
            for s in [&a, &b] {
                assert!(
                    s.windows(2).all(|w| w[0] < w[1]),
                    "{name}: per-stream order"
                );
            }
            let mut all: Vec<u32> = a.into_iter().chain(b).collect();
            all.sort_unstable();
            assert_eq!(all, (0..500).collect::<Vec<_>>(), "{name}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Sink

#[test]
fn sink_send_feed_flush_close() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let consumer = {
                let rx = rx.clone();
                thread::spawn(move || rx.iter().collect::<Vec<_>>())
            };
            futures::executor::block_on(async {
                let mut sink: SendSink<'_, u32> = tx.sink();
                sink.send(1).await.unwrap();
                sink.feed(2).await.unwrap();
                sink.feed(3).await.unwrap();
                sink.flush().await.unwrap();
                sink.send(4).await.unwrap();
                sink.close().await.unwrap();
            });
            drop(tx);
            assert_eq!(consumer.join().unwrap(), [1, 2, 3, 4], "{name}");
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        });
    }
}

#[test]
fn into_sink_send_all_then_disconnect() {
    for rt in RUNTIMES {
        for (name, make) in all::<u32>() {
            run_tokio(rt, 20, move || async move {
                let (tx, rx) = make();
                let consumer = tokio::spawn(rx.into_stream().collect::<Vec<_>>());
                let mut sink: SendSink<'static, u32> = tx.into_sink();
                let mut source = futures::stream::iter((0..300).map(Ok));
                sink.send_all(&mut source).await.unwrap();
                sink.close().await.unwrap();
                // The sink owns the last sender: dropping it disconnects.
                drop(sink);
                let got = consumer.await.unwrap();
                assert_eq!(got, (0..300).collect::<Vec<_>>(), "{name} on {rt:?}");
            });
        }
    }
}

#[test]
fn sink_hands_message_back_when_disconnected() {
    for (name, make) in all::<String>() {
        watchdog(move || {
            let (tx, rx) = make();
            drop(rx);
            let err = futures::executor::block_on(async {
                let mut sink = tx.sink();
                sink.send("lost".to_string()).await.unwrap_err()
            });
            assert_eq!(err, SendError("lost".to_string()), "{name}");
        });
    }
}

#[test]
fn sink_send_waits_for_room() {
    watchdog(|| {
        let (tx, rx) = conduit::bounded::<u32>(1);
        tx.send(0).unwrap();
        let mut sink = tx.sink();
        {
            // The channel is full: sending through the sink (feed + flush) cannot complete.
            let mut send = Box::pin(sink.send(1));
            assert!(poll_noop(&mut send).is_pending());
            assert!(poll_noop(&mut send).is_pending());
            assert_eq!(rx.try_recv(), Ok(0));
            // Room now: the same future completes (it may need a poll to move the message).
            assert_eq!(futures::executor::block_on(&mut send), Ok(()));
        }
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

// ---------------------------------------------------------------------------------------
// Send bounds and misc.

fn assert_send<T: Send>(_: &T) {}

#[test]
fn futures_streams_sinks_are_send() {
    let (tx, rx) = conduit::bounded::<String>(1);
    let f = tx.send_async(String::new());
    assert_send(&f);
    drop(f);
    let f = rx.recv_async();
    assert_send(&f);
    drop(f);
    let s = rx.stream();
    assert_send(&s);
    drop(s);
    let k = tx.sink();
    assert_send(&k);
    drop(k);
    let f: SendFut<'static, String> = tx.clone().into_send_async(String::new());
    assert_send(&f);
    drop(f);
    let f: RecvFut<'static, String> = rx.clone().into_recv_async();
    assert_send(&f);
    drop(f);
    let s: RecvStream<'static, String> = rx.clone().into_stream();
    assert_send(&s);
    drop(s);
    let k: SendSink<'static, String> = tx.clone().into_sink();
    assert_send(&k);
    drop(k);

    // And they can be spawned on a multi-threaded runtime.
    fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
    let f = tx.into_send_async("x".into());
    spawnable(&f);
    drop(f);
    let f = rx.into_recv_async();
    spawnable(&f);
}

#[test]
fn into_recv_async_owns_the_receiver() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let fut = rx.into_recv_async();
            let t = thread::spawn(move || futures::executor::block_on(fut));
            tx.send(9).unwrap();
            assert_eq!(t.join().unwrap(), Ok(9), "{name}");
            // The future owned the only receiver: gone with it.
            assert_eq!(tx.try_send(1), Err(TrySendError::Disconnected(1)), "{name}");
        });
    }
}

/// A stream pending on an empty channel and dropped after being woken passes the
/// wake-up on, like a receive future; for rendezvous the offer stays with the sender.
#[test]
fn consumed_stream_wakeup_passes_on() {
    for (name, make) in all::<u32>() {
        watchdog(move || {
            let (tx, rx) = make();
            let (f1, f2) = (Flag::new(), Flag::new());
            let (w1, w2) = (waker(&f1), waker(&f2));
            let mut s1 = rx.stream();
            let mut s2 = Box::pin(rx.recv_async());
            {
                let mut next = s1.next();
                assert!(poll_once(&mut next, &w1).is_pending(), "{name}");
            }
            assert!(poll_once(&mut s2, &w2).is_pending(), "{name}");
            let sender = thread::spawn(move || {
                tx.send(3).unwrap();
                tx
            });
            spin_until(|| f1.woken() || f2.woken());
            if f1.woken() {
                drop(s1);
                spin_until(|| f2.woken());
                assert_eq!(poll_once(&mut s2, &w2), Poll::Ready(Ok(3)), "{name}");
            } else {
                drop(s2);
                let mut next = s1.next();
                assert_eq!(poll_once(&mut next, &w1), Poll::Ready(Some(3)), "{name}");
            }
            let tx = sender.join().unwrap();
            drop(tx);
            assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected), "{name}");
        });
    }
}

/// A sink dropped with a message fed but not flushed into a full channel did not send
/// it.
#[test]
fn sink_dropped_with_unflushed_message_sent_nothing() {
    watchdog(|| {
        let (tx, rx) = conduit::bounded::<u32>(1);
        tx.send(0).unwrap();
        {
            let mut sink = tx.sink();
            let mut send = Box::pin(sink.send(1));
            assert!(poll_noop(&mut send).is_pending());
        }
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
    });
}
