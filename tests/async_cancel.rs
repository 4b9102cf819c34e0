//! Async behaviour: cancel safety of futures, wake-up hand-over, rendezvous hand-off
//! inside the receiver's poll, Stream and Sink adapters.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::thread;

use common::{Flag, LIMIT_SECS, Rt, all, buffered, poll_once, run_tokio, watchdog};
use futures::{SinkExt, StreamExt};
use futures_core::FusedStream;

#[test]
fn futures_are_send_and_must_use_types_exist() {
    fn is_send<T: Send>(_: &T) {}
    let (tx, rx) = conduit::bounded::<String>(1);
    is_send(&tx.send_async(String::new()));
    is_send(&rx.recv_async());
    is_send(&rx.stream());
    is_send(&tx.sink());
    is_send(&tx.clone().into_send_async(String::new()));
    is_send(&rx.clone().into_recv_async());
}

#[test]
fn thousands_of_dropped_recv_futures_lose_nothing() {
    watchdog(|| {
        for (name, make) in all::<u64>() {
            let (tx, rx) = make();
            let n = if cfg!(miri) { 100 } else { 20_000u64 };
            let producer = thread::spawn(move || {
                for i in 0..n {
                    tx.send(i).unwrap();
                }
            });
            let waker = Waker::noop();
            let mut got = vec![];
            let mut dropped = 0u64;
            loop {
                // Poll a future once and drop it if pending: it must take nothing.
                let mut fut = rx.recv_async();
                match poll_once(&mut fut, waker) {
                    Poll::Ready(Ok(m)) => got.push(m),
                    Poll::Ready(Err(_)) => break,
                    Poll::Pending => {
                        dropped += 1;
                        drop(fut);
                        // Make progress with a blocking receive now and then.
                        if dropped.is_multiple_of(3) {
                            match rx.recv() {
                                Ok(m) => got.push(m),
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            producer.join().unwrap();
            assert_eq!(
                got,
                (0..n).collect::<Vec<_>>(),
                "{name}: lost or duplicated"
            );
        }
    });
}

#[test]
fn dropped_send_future_did_not_send() {
    for (name, make) in buffered::<u32>() {
        let (tx, rx) = make();
        if let Some(cap) = tx.capacity() {
            for i in 0..cap as u32 {
                tx.send(i).unwrap();
            }
            let mut fut = tx.send_async(999);
            assert!(poll_once(&mut fut, Waker::noop()).is_pending(), "{name}");
            drop(fut);
            let got: Vec<u32> = rx.try_iter().collect();
            assert_eq!(got, (0..cap as u32).collect::<Vec<_>>(), "{name}");
            assert!(!got.contains(&999));
        } else {
            // Unbounded: completes on the first poll, so it is sent.
            let mut fut = tx.send_async(5);
            assert_eq!(poll_once(&mut fut, Waker::noop()), Poll::Ready(Ok(())));
            assert_eq!(rx.try_recv(), Ok(5));
        }
    }
}

#[test]
fn consumed_wakeup_passes_to_another_receiver() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let flag1 = Flag::new();
            let flag2 = Flag::new();
            let w1 = Waker::from(flag1.clone());
            let w2 = Waker::from(flag2.clone());
            let mut first = rx.recv_async();
            let mut second = rx.recv_async();
            assert!(poll_once(&mut first, &w1).is_pending(), "{name}");
            assert!(poll_once(&mut second, &w2).is_pending(), "{name}");
            // For rendezvous, the sender must wait for a receiver's poll.
            let sender = thread::spawn(move || tx.send(7).map(|()| tx));
            // Wait until one of the two is woken (no sleeps: spin on the flags).
            while !flag1.woken() && !flag2.woken() {
                thread::yield_now();
            }
            if flag1.woken() {
                // Drop the woken one without polling: its wake-up must move on.
                drop(first);
                while !flag2.woken() {
                    thread::yield_now();
                }
                assert_eq!(poll_once(&mut second, &w2), Poll::Ready(Ok(7)), "{name}");
            } else {
                drop(second);
                assert_eq!(poll_once(&mut first, &w1), Poll::Ready(Ok(7)), "{name}");
            }
            let _tx = sender.join().unwrap().unwrap();
        }
    });
}

#[test]
fn rendezvous_handoff_happens_in_receivers_poll() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let delivered = Arc::new(AtomicUsize::new(0));
        let flag = Flag::new();
        let waker = Waker::from(flag.clone());
        // A receive future registers, then is dropped before it is polled again.
        let mut fut = rx.recv_async();
        assert!(poll_once(&mut fut, &waker).is_pending());
        let d = delivered.clone();
        let sender = thread::spawn(move || {
            tx.send(42).unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        });
        while !flag.woken() {
            thread::yield_now(); // the sender has offered and woken us
        }
        drop(fut);
        // Nothing was taken: the sender is still waiting, and the message goes to the
        // next receiver, exactly once.
        assert_eq!(delivered.load(Ordering::SeqCst), 0);
        assert_eq!(rx.recv(), Ok(42));
        sender.join().unwrap();
        assert_eq!(delivered.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv(), Err(conduit::TryRecvError::Disconnected));
    });
}

#[test]
fn rendezvous_send_future_counts_as_sent_once_taken() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let mut fut = tx.send_async(9);
        assert!(poll_once(&mut fut, Waker::noop()).is_pending());
        assert_eq!(rx.try_recv(), Ok(9)); // the receiver took the offer
        drop(fut); // dropped after the hand-off: delivered once, not withdrawn
        assert_eq!(rx.try_recv(), Err(conduit::TryRecvError::Empty));

        let mut fut = tx.send_async(10);
        assert!(poll_once(&mut fut, Waker::noop()).is_pending());
        drop(fut); // withdrawn before any receiver took it
        assert_eq!(rx.try_recv(), Err(conduit::TryRecvError::Empty));
    });
}

#[test]
fn disconnect_wakes_pending_futures() {
    run_tokio(Rt::MultiThread, LIMIT_SECS, || async {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let pending_recv = tokio::spawn(rx.clone().into_recv_async());
            tokio::task::yield_now().await;
            drop(tx);
            assert_eq!(
                pending_recv.await.unwrap(),
                Err(conduit::RecvError),
                "{name}"
            );

            let (tx, rx) = make();
            if let Some(cap) = tx.capacity() {
                for i in 0..cap as u32 {
                    tx.send(i).unwrap();
                }
                let pending_send = tokio::spawn(tx.clone().into_send_async(77));
                tokio::task::yield_now().await;
                drop(rx);
                assert_eq!(
                    pending_send.await.unwrap(),
                    Err(conduit::SendError(77)),
                    "{name}"
                );
            }
        }
    });
}

#[test]
fn stream_ends_after_disconnect_and_is_fused() {
    run_tokio(Rt::CurrentThread, LIMIT_SECS, || async {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let producer = thread::spawn(move || {
                for i in 0..50 {
                    tx.send(i).unwrap();
                }
            });
            let mut stream = rx.stream();
            let mut got = vec![];
            while let Some(m) = stream.next().await {
                got.push(m);
            }
            assert!(stream.is_terminated(), "{name}");
            assert_eq!(stream.next().await, None, "{name}");
            producer.join().unwrap();
            assert_eq!(got, (0..50).collect::<Vec<_>>(), "{name}");
        }
    });
}

#[test]
fn sink_sends_in_order() {
    run_tokio(Rt::MultiThread, LIMIT_SECS, || async {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let consumer = thread::spawn(move || rx.iter().collect::<Vec<_>>());
            let mut sink = tx.sink();
            for i in 0..20 {
                sink.feed(i).await.unwrap();
            }
            sink.flush().await.unwrap();
            sink.send(20).await.unwrap();
            sink.close().await.unwrap();
            drop(sink);
            let mut owned = tx.into_sink();
            owned.send(21).await.unwrap();
            drop(owned);
            assert_eq!(
                consumer.join().unwrap(),
                (0..22).collect::<Vec<_>>(),
                "{name}"
            );
        }
    });
}

#[test]
fn sink_reports_disconnection() {
    run_tokio(Rt::CurrentThread, LIMIT_SECS, || async {
        let (tx, rx) = conduit::bounded::<u32>(1);
        drop(rx);
        let mut sink = tx.sink();
        assert_eq!(sink.send(1).await, Err(conduit::SendError(1)));
    });
}

#[test]
fn repolls_with_different_wakers_are_correct() {
    watchdog(|| {
        let (tx, rx) = conduit::bounded::<u32>(1);
        let flags: Vec<Arc<Flag>> = (0..3).map(|_| Flag::new()).collect();
        let mut fut = rx.recv_async();
        for f in &flags {
            assert!(poll_once(&mut fut, &Waker::from(f.clone())).is_pending());
        }
        tx.send(1).unwrap();
        // The latest waker is the one woken.
        while !flags[2].woken() {
            thread::yield_now();
        }
        assert_eq!(
            poll_once(&mut fut, &Waker::from(flags[2].clone())),
            Poll::Ready(Ok(1))
        );
    });
}

#[test]
fn rendezvous_send_completes_only_after_a_receive_started() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let receiver = thread::spawn(move || {
            let mut got = vec![];
            loop {
                s.fetch_add(1, Ordering::SeqCst);
                match rx.recv() {
                    Ok(m) => got.push(m),
                    Err(_) => return got,
                }
            }
        });
        for i in 0..500 {
            tx.send(i).unwrap();
            // A completed send implies its receive had started.
            assert!(started.load(Ordering::SeqCst) > i as usize);
        }
        drop(tx);
        assert_eq!(receiver.join().unwrap(), (0..500).collect::<Vec<_>>());
    });
}

#[test]
fn rendezvous_try_send_succeeds_with_a_blocked_receiver() {
    watchdog(|| {
        let (tx, rx) = conduit::rendezvous::<u32>();
        let receiver = thread::spawn(move || rx.recv());
        // Full until the receiver thread is blocked in recv, then it succeeds.
        let mut msg = 5;
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(conduit::TrySendError::Full(m)) => {
                    msg = m;
                    thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(receiver.join().unwrap(), Ok(5));
    });
}
