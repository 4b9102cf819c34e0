//! Async use of shm channels within one process: the helper thread's wake-ups,
//! cancellation, streams and sinks. (Cross-process async is in `shm_processes`.)
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use conduit::shm::{Receiver, Sender};
use conduit::{RecvError, SendError, TryRecvError};
use futures::{SinkExt, StreamExt};
use futures_core::FusedStream;
use shm_support::*;

#[test]
fn child_entry() {}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn dropped_recv_future_takes_nothing() {
    watchdog(|| {
        let name = Name::new("cancel-recv");
        let rx = Receiver::<u32>::create(&name, 4).unwrap();
        let tx = Sender::<u32>::open(&name).unwrap();
        let mut fut = rx.recv_async();
        assert!(poll_once(&mut fut).is_pending());
        tx.send(1).unwrap();
        drop(fut);
        assert_eq!(rx.try_recv(), Ok(1));
        // A future polled to completion took exactly one.
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        let mut fut = rx.recv_async();
        assert_eq!(poll_once(&mut fut), Poll::Ready(Ok(2)));
        assert_eq!(rx.try_recv(), Ok(3));
    });
}

#[test]
fn dropped_send_future_sends_nothing() {
    watchdog(|| {
        let name = Name::new("cancel-send");
        let tx = Sender::<u32>::create(&name, 1).unwrap();
        let rx = Receiver::<u32>::open(&name).unwrap();
        tx.send(1).unwrap();
        let mut fut = tx.send_async(2);
        assert!(poll_once(&mut fut).is_pending());
        assert_eq!(rx.recv(), Ok(1));
        drop(fut);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

#[test]
fn many_pending_receivers_all_complete() {
    watchdog(|| {
        let name = Name::new("many");
        let rx = Receiver::<u64>::create(&name, 64).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        let rt = runtime();
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let rx = rx.clone();
                rt.spawn(async move { rx.recv_async().await.unwrap() })
            })
            .collect();
        for i in 0..40 {
            tx.send(i).unwrap();
        }
        let mut got: Vec<u64> = rt.block_on(async {
            let mut got = Vec::new();
            for t in tasks {
                got.push(t.await.unwrap());
            }
            got
        });
        got.sort_unstable();
        assert_eq!(got, (0..40).collect::<Vec<_>>());
    });
}

#[test]
fn pending_send_completes_when_room_appears() {
    watchdog(|| {
        let name = Name::new("room");
        let tx = Sender::<u64>::create(&name, 2).unwrap();
        let rx = Receiver::<u64>::open(&name).unwrap();
        let rt = runtime();
        let sender = rt.spawn(async move {
            let mut sink = tx.into_sink();
            for i in 0..100 {
                sink.send(i).await.unwrap();
            }
        });
        let got: Vec<u64> = (0..100).map(|_| rx.recv().unwrap()).collect();
        rt.block_on(sender).unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        // The sink's sender detached with it.
        assert_eq!(rx.recv(), Err(RecvError));
    });
}

#[test]
fn stream_ends_on_disconnection_and_is_fused() {
    watchdog(|| {
        let name = Name::new("stream");
        let rx = Receiver::<u64>::create(&name, 8).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        let rt = runtime();
        let reader = rt.spawn(async move {
            let mut stream = rx.into_stream();
            let mut got = Vec::new();
            while let Some(v) = stream.next().await {
                got.push(v);
            }
            assert!(stream.is_terminated());
            assert_eq!(stream.next().await, None);
            got
        });
        for i in 0..50 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(rt.block_on(reader).unwrap(), (0..50).collect::<Vec<_>>());
    });
}

#[test]
fn pending_futures_see_disconnection() {
    watchdog(|| {
        let name = Name::new("async-disc");
        let rx = Receiver::<u64>::create(&name, 1).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        let rt = runtime();
        let r = {
            let rx = rx.clone();
            rt.spawn(async move { rx.recv_async().await })
        };
        // Let the receive register before the sender goes.
        let mut probe = rx.recv_async();
        assert!(poll_once(&mut probe).is_pending());
        drop(probe);
        drop(tx);
        assert_eq!(rt.block_on(r).unwrap(), Err(RecvError));

        let tx = Sender::<u64>::open(&name).unwrap();
        tx.send(1).unwrap();
        let s = {
            let tx = tx.clone();
            rt.spawn(async move { tx.send_async(2).await })
        };
        let mut probe = tx.send_async(3);
        assert!(poll_once(&mut probe).is_pending());
        drop(probe);
        drop(rx);
        assert_eq!(rt.block_on(s).unwrap(), Err(SendError(2)));
    });
}

/// A waker that records being woken, and then panics if `panics`.
struct RecordingWaker {
    woken: std::sync::atomic::AtomicBool,
    panics: bool,
}

impl RecordingWaker {
    fn new(panics: bool) -> std::sync::Arc<Self> {
        std::sync::Arc::new(RecordingWaker {
            woken: Default::default(),
            panics,
        })
    }

    fn is_woken(&self) -> bool {
        self.woken.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn reset(&self) {
        self.woken.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits (under the test's watchdog) until woken.
    fn wait(&self) {
        while !self.woken.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
    }
}

impl std::task::Wake for RecordingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.woken.store(true, std::sync::atomic::Ordering::SeqCst);
        if self.panics {
            panic!("wake");
        }
    }
}

/// Polls `fut` until it has armed the helper thread with `recorder`'s waker: until a
/// poll returns `Pending` without waking its task (a poll that wakes it yielded, in the
/// short window before a wait arms; see `shm::hub`). The recorder reads as not woken
/// after.
fn poll_until_armed<F: Future + Unpin>(fut: &mut F, recorder: &std::sync::Arc<RecordingWaker>)
where
    F::Output: std::fmt::Debug,
{
    let waker = Waker::from(recorder.clone());
    loop {
        recorder.reset();
        let res = Pin::new(&mut *fut).poll(&mut Context::from_waker(&waker));
        assert!(res.is_pending(), "{res:?}");
        if !recorder.is_woken() {
            return;
        }
    }
}

/// A wait that cannot proceed first yields (wakes its own task) without counting itself
/// as an async waiter, then counts itself and arms the helper thread, which wakes it
/// once a message comes; done, it counts no more.
#[test]
fn pending_wait_yields_then_arms() {
    watchdog(|| {
        let name = Name::new("async-yield-arm");
        let rx = Receiver::<u64>::create(&name, 4).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        let async_waiters = || conduit::shm::inspect(&name).unwrap().recv_waiters.1;
        let recorder = RecordingWaker::new(false);
        let waker = Waker::from(recorder.clone());
        let mut fut = rx.recv_async();
        assert!(
            Pin::new(&mut fut)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert!(recorder.is_woken(), "the first poll yields");
        assert_eq!(async_waiters(), 0, "not counted while it yields");
        poll_until_armed(&mut fut, &recorder);
        assert_eq!(async_waiters(), 1);
        tx.send(7).unwrap();
        recorder.wait();
        assert_eq!(poll_once(&mut fut), Poll::Ready(Ok(7)));
        assert_eq!(async_waiters(), 0);
    });
}

/// The helper thread wakes tasks for every shm channel of the process: a task's waker
/// that panics must not end it, or no async wait would be woken again.
#[test]
fn helper_thread_survives_a_panicking_waker() {
    watchdog(|| {
        let name = Name::new("async-panic-waker");
        let rx = Receiver::<u64>::create(&name, 4).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        for (panics, msg) in [(true, 1), (false, 2)] {
            let mut fut = rx.recv_async();
            // Armed with a waker that does not panic, then with the one that may: an
            // armed wait's poll does not yield, it only swaps the registration's waker.
            poll_until_armed(&mut fut, &RecordingWaker::new(false));
            let recorder = RecordingWaker::new(panics);
            let waker = Waker::from(recorder.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
            assert!(!recorder.is_woken());
            tx.send(msg).unwrap();
            // Woken by the helper thread (the second time only if the first wake's panic
            // did not end it).
            recorder.wait();
            assert_eq!(poll_once(&mut fut), Poll::Ready(Ok(msg)));
        }
    });
}
