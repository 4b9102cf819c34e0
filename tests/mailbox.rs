//! In-process mailboxes: selective receive against a reference model, exactly-once
//! delivery under concurrency, close racing sends and receives, request/reply, and
//! async cancellation.

mod common;
mod mailbox_model;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{Counted, Flag, poll_noop, poll_once, spin_until, waker, watchdog};
use conduit::mailbox::{Address, Mailbox, Options, PostOffice, RequestError, Select};
use conduit::{RecvError, RecvTimeoutError, SendError, TryRecvError, TrySendError};

impl mailbox_model::Blocking for Mailbox<u32> {
    fn send_tagged(&self, tag: u64, body: u32) {
        Mailbox::send_tagged(self, tag, body).unwrap();
    }
    fn recv_select(&self, sel: Select) -> u32 {
        Mailbox::recv_select(self, sel).unwrap().into_body()
    }
}

impl mailbox_model::Target for Mailbox<u32> {
    fn address(&self) -> Address {
        Mailbox::address(self).clone()
    }
    fn try_send_tagged(&self, tag: u64, body: u32) -> Result<(), TrySendError<u32>> {
        Mailbox::try_send_tagged(self, tag, body)
    }
    fn try_recv_select(&self, sel: Select) -> Result<(u64, Address, u32), TryRecvError> {
        let env = Mailbox::try_recv_select(self, sel)?;
        Ok((env.tag(), env.from().clone(), env.into_body()))
    }
    fn len(&self) -> usize {
        Mailbox::len(self)
    }
}

/// Random sends (from three handle families, five tags) and random selective
/// `try_recv`s, each result compared with the linear-scan model
/// (`mailbox_model::run_against_model`).
#[test]
fn selective_receive_matches_sysv_model() {
    watchdog(|| {
        for seed in 1..=40u64 {
            let cap = [4usize, 8, 64][(seed % 3) as usize];
            let po = PostOffice::new();
            let opts = Options::new().capacity(cap);
            let handles: Vec<Mailbox<u32>> = (0..3)
                .map(|_| po.open_with("model", &opts).unwrap())
                .collect();
            mailbox_model::run_against_model(seed, cap, &handles, 2000);
        }
    });
}

/// One receiver per tag (disjoint selections), blocking, while four senders send; then
/// close: each receiver gets exactly its tag's messages, each sender's in order.
#[test]
fn disjoint_selections_exactly_once() {
    exactly_once(
        vec![Sel::Tag(0), Sel::Tag(1), Sel::Tag(2)],
        /* every message matched by exactly one */ true,
    );
}

/// Overlapping selections racing for the same messages: every message is received
/// exactly once, and every receiver sees each sender's messages in order.
#[test]
fn overlapping_selections_exactly_once() {
    exactly_once(
        vec![
            Sel::Any,
            Sel::TagAtMost(1),
            Sel::TagExcept(0),
            Sel::From(0),
            Sel::Tag(2),
            Sel::Any,
        ],
        false,
    );
}

#[derive(Clone, Copy, Debug)]
enum Sel {
    Any,
    Tag(u64),
    TagAtMost(u64),
    TagExcept(u64),
    From(usize),
}

const SENDERS: usize = 4;
const PER_SENDER: u32 = 2000;

fn exactly_once(sels: Vec<Sel>, disjoint: bool) {
    watchdog(move || {
        let po = PostOffice::new();
        let opts = Options::new().capacity(16);
        let senders: Vec<Mailbox<(usize, u32)>> = (0..SENDERS)
            .map(|_| po.open_with("many", &opts).unwrap())
            .collect();
        let addrs: Vec<Address> = senders.iter().map(|s| s.address().clone()).collect();
        let receivers: Vec<_> = sels
            .iter()
            .enumerate()
            .map(|(i, &sel)| {
                let mb: Mailbox<(usize, u32)> = po.open_with("many", &opts).unwrap();
                let select = match sel {
                    Sel::Any => Select::Any,
                    Sel::Tag(t) => Select::Tag(t),
                    Sel::TagAtMost(n) => Select::TagAtMost(n),
                    Sel::TagExcept(t) => Select::TagExcept(t),
                    Sel::From(s) => Select::From(addrs[s].clone()),
                };
                thread::spawn(move || {
                    let mut got = vec![];
                    // Every other receiver waits with a timeout, to mix the paths.
                    loop {
                        let env = if i % 2 == 0 {
                            match mb.recv_select(select.clone()) {
                                Ok(e) => e,
                                Err(RecvError) => break,
                            }
                        } else {
                            match mb.recv_select_timeout(select.clone(), Duration::from_millis(5)) {
                                Ok(e) => e,
                                Err(RecvTimeoutError::Timeout) => continue,
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        };
                        let ok = match sel {
                            Sel::Any => true,
                            Sel::Tag(t) => env.tag() == t,
                            Sel::TagAtMost(n) => env.tag() <= n,
                            Sel::TagExcept(t) => env.tag() != t,
                            Sel::From(s) => env.body().0 == s,
                        };
                        assert!(ok, "{sel:?} got tag {} from {}", env.tag(), env.body().0);
                        got.push((env.tag(), env.into_body()));
                    }
                    got
                })
            })
            .collect();
        let sending: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(s, mb)| {
                thread::spawn(move || {
                    for i in 0..PER_SENDER {
                        mb.send_tagged(u64::from(i) % 3, (s, i)).unwrap();
                    }
                })
            })
            .collect();
        for s in sending {
            s.join().unwrap();
        }
        assert!(po.close("many"));
        let mut seen = vec![vec![false; PER_SENDER as usize]; SENDERS];
        for (r, sel) in receivers.into_iter().zip(&sels) {
            let got = r.join().unwrap();
            let mut last: HashMap<(usize, u64), u32> = HashMap::new();
            for (tag, (s, i)) in got {
                if disjoint {
                    assert!(matches!(sel, Sel::Tag(t) if *t == tag));
                }
                // FIFO per sender; for TagAtMost per sender and tag (it takes the
                // lowest tag first).
                let key = match sel {
                    Sel::TagAtMost(_) => (s, tag),
                    _ => (s, 0),
                };
                if let Some(&prev) = last.get(&key) {
                    assert!(
                        prev < i,
                        "{sel:?}: sender {s} out of order: {prev} then {i}"
                    );
                }
                last.insert(key, i);
                assert!(!seen[s][i as usize], "({s}, {i}) received twice");
                seen[s][i as usize] = true;
            }
        }
        for (s, v) in seen.iter().enumerate() {
            if let Some(i) = v.iter().position(|x| !x) {
                panic!("({s}, {i}) never received");
            }
        }
    });
}

/// `close` races senders and receivers: every send that succeeded is received exactly
/// once (receivers drain after the close), every failed send hands its message back,
/// and nothing is dropped or duplicated (drop counts).
#[test]
fn close_racing_send_and_receive() {
    watchdog(|| {
        for round in 0..20 {
            let drops = Arc::new(AtomicUsize::new(0));
            let po = PostOffice::new();
            let name = format!("race{round}");
            let opts = Options::new().capacity(4);
            let receivers: Vec<_> = (0..3)
                .map(|r| {
                    let mb: Mailbox<Counted> = po.open_with(&name, &opts).unwrap();
                    thread::spawn(move || {
                        let mut n = 0usize;
                        let sel = if r == 0 { Select::Any } else { Select::Tag(r) };
                        while let Ok(env) = mb.recv_select(sel.clone()) {
                            drop(env);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let started = Arc::new(AtomicUsize::new(0));
            let senders: Vec<_> = (0..3)
                .map(|s| {
                    let mb: Mailbox<Counted> = po.open_with(&name, &opts).unwrap();
                    let (drops, started) = (drops.clone(), started.clone());
                    thread::spawn(move || {
                        let (mut sent, mut refused) = (0usize, 0usize);
                        for i in 0.. {
                            started.fetch_add(1, Ordering::SeqCst);
                            match mb.send_tagged(i % 3, Counted::new(s, &drops)) {
                                Ok(()) => sent += 1,
                                Err(SendError(m)) => {
                                    drop(m);
                                    refused += 1;
                                    break;
                                }
                            }
                        }
                        (sent, refused)
                    })
                })
                .collect();
            spin_until(|| started.load(Ordering::SeqCst) >= 50 + round * 10);
            assert!(po.close(&name));
            let (mut sent, mut refused) = (0, 0);
            for s in senders {
                let (a, b) = s.join().unwrap();
                sent += a;
                refused += b;
            }
            let received: usize = receivers.into_iter().map(|r| r.join().unwrap()).sum();
            assert_eq!(refused, 3);
            // Tag-1/2 receivers drain their tags, the Any receiver drains everything.
            assert_eq!(received, sent);
            assert_eq!(drops.load(Ordering::SeqCst), sent + refused);
        }
    });
}

/// Receivers by tag wait past other tags' messages (`mailbox_model::past_other_tags`),
/// then a blocking and an async receiver are woken by sends from another thread.
#[test]
fn selective_receivers_wait_past_other_tags() {
    watchdog(|| {
        let po = PostOffice::new();
        let mb = po.open::<u32>("past-tags").unwrap();
        let peer = po.open::<u32>("past-tags").unwrap();
        mailbox_model::past_other_tags(&mb, peer, |mb, peer| {
            let sender = thread::spawn(move || {
                peer.send_tagged(7, 70).unwrap();
                peer.send_tagged(8, 80).unwrap();
            });
            assert_eq!(*mb.recv_select(Select::Tag(7)).unwrap().body(), 70);
            let env = futures::executor::block_on(mb.recv_select_async(Select::Tag(8)));
            assert_eq!(*env.unwrap().body(), 80);
            sender.join().unwrap();
        });
    });
}

/// A receive that selects by tag does not care how many other-tag messages are queued,
/// and per-sender FIFO holds inside a selection.
#[test]
fn fifo_per_sender_within_selection() {
    let po = PostOffice::new();
    let opts = Options::new().unbounded();
    let a: Mailbox<u32> = po.open_with("fifo", &opts).unwrap();
    let b: Mailbox<u32> = po.open_with("fifo", &opts).unwrap();
    for i in 0..100_000 {
        b.send_tagged(9, i).unwrap();
    }
    for i in 0..10u32 {
        let t = u64::from(i % 2);
        a.send_tagged(t, i).unwrap();
        b.send_tagged(t + 1, 1000 + i).unwrap();
    }
    let take = |sel: Select, n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| a.try_recv_select(sel.clone()).unwrap().into_body())
            .collect()
    };
    assert_eq!(take(Select::Tag(2), 5), [1001, 1003, 1005, 1007, 1009]);
    assert_eq!(take(Select::From(a.address().clone()), 5), [0, 1, 2, 3, 4]);
    // Lowest tag first (a's 6 and 8 with tag 0), then tag 1 in sending order.
    assert_eq!(
        take(Select::TagAtMost(1), 10),
        [6, 8, 1000, 1002, 1004, 5, 1006, 7, 1008, 9]
    );
    assert_eq!(a.len(), 100_000);
    assert!(a.try_recv_select(Select::TagExcept(9)).is_err());
    let env = a.try_recv().unwrap();
    assert_eq!((env.from(), env.tag(), *env.body()), (b.address(), 9, 0));
}

#[test]
fn open_errors_and_names() {
    use std::io::ErrorKind;
    let po = PostOffice::new();
    let _m: Mailbox<u8> = po.open("x").unwrap();
    let e = po.open::<String>("x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("u8") && e.to_string().contains("String"),
        "{e}"
    );
    for bad in ["", ".", "..", "a/b", "a b", &"n".repeat(201)] {
        assert_eq!(
            po.open::<u8>(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    let o = Options::new().open_existing();
    assert_eq!(
        po.open_with::<u8>("y", &o).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let o = Options::new().create_new();
    assert_eq!(
        po.open_with::<u8>("x", &o).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let o = Options::new().capacity(0);
    assert_eq!(
        po.open_with::<u8>("z", &o).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(po.names(), ["x"]);
    assert!(format!("{po:?}").contains("\"x\""));
    // The global office is shared.
    let g: Mailbox<u8> = PostOffice::global().open("test-mailbox-global").unwrap();
    g.send(1).unwrap();
    let g2: Mailbox<u8> = PostOffice::global().open("test-mailbox-global").unwrap();
    assert_eq!(g2.try_recv().unwrap().into_body(), 1);
    assert!(PostOffice::global().close("test-mailbox-global"));
}

/// Messages stay queued when every handle is dropped (the name keeps the mailbox), and
/// are dropped when the mailbox is closed and its last handle goes.
#[test]
fn mailbox_outlives_handles_until_closed() {
    let drops = Arc::new(AtomicUsize::new(0));
    let po = PostOffice::new();
    po.open::<Counted>("keep")
        .unwrap()
        .send(Counted::new(1, &drops))
        .unwrap();
    let mb = po.open::<Counted>("keep").unwrap();
    assert_eq!(mb.len(), 1);
    mb.send(Counted::new(2, &drops)).unwrap();
    assert!(po.close("keep"));
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert_eq!(mb.try_recv().unwrap().into_body().id, 1);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop(mb);
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    assert!(po.open::<Counted>("keep").unwrap().is_empty());
}

/// A full mailbox blocks `send` until a receive makes room (even a selective one), and
/// `try_send` hands the message back.
#[test]
fn full_mailbox_blocks_send() {
    watchdog(|| {
        let po = PostOffice::new();
        let mb: Mailbox<u32> = po.open_with("full", &Options::new().capacity(2)).unwrap();
        mb.send_tagged(1, 1).unwrap();
        mb.send_tagged(2, 2).unwrap();
        assert_eq!(mb.try_send(3), Err(TrySendError::Full(3)));
        let tx = mb.clone();
        let t = thread::spawn(move || tx.send(3));
        assert_eq!(mb.recv_select(Select::Tag(2)).unwrap().into_body(), 2);
        t.join().unwrap().unwrap();
        assert_eq!(mb.len(), 2);
    });
}

fn server(mb: Mailbox<u32>) -> thread::JoinHandle<usize> {
    mb.try_recv().ok(); // attach before the requests go out
    thread::spawn(move || {
        let mut served = 0;
        while let Ok(mut env) = mb.recv() {
            match env.tag() {
                // Answer.
                0 => {
                    let r = env.take_reply::<u64>().unwrap();
                    r.reply(u64::from(*env.body()) * 2).unwrap();
                }
                // Drop the envelope without answering.
                1 => drop(env),
                // Panic while holding the reply (the unwind drops it).
                _ => {
                    let r = env.take_reply::<u64>().unwrap();
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                        let _r = r;
                        panic!("replier fails");
                    }));
                }
            }
            served += 1;
        }
        served
    })
}

#[test]
fn request_reply() {
    watchdog(|| {
        let po = PostOffice::new();
        let client: Mailbox<u32> = po.open("rpc").unwrap();
        assert_eq!(client.request::<u64>(1), Err(RequestError::NoResponders(1)));
        let srv = server(po.open("rpc").unwrap());
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let mb: Mailbox<u32> = po.open("rpc").unwrap();
                thread::spawn(move || {
                    for i in 0..200 {
                        assert_eq!(
                            mb.request::<u64>(c * 1000 + i),
                            Ok(u64::from(c * 1000 + i) * 2)
                        );
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(
            client.request_tagged::<u64>(1, 5),
            Err(RequestError::Unanswered)
        );
        assert_eq!(
            client.request_tagged::<u64>(2, 5),
            Err(RequestError::Unanswered)
        );
        assert!(po.close("rpc"));
        assert_eq!(client.request::<u64>(1), Err(RequestError::Disconnected(1)));
        assert_eq!(srv.join().unwrap(), 802);
    });
}

/// A request that times out ends with `Timeout`; the late reply is handed back.
#[test]
fn request_timeout_hands_late_reply_back() {
    watchdog(|| {
        let po = PostOffice::new();
        let mb: Mailbox<u32> = po.open("late").unwrap();
        mb.try_recv().ok();
        let e = mb.request_timeout::<u32>(1, Duration::from_millis(10));
        assert_eq!(e, Err(RequestError::Timeout(None)));
        let mut env = mb.try_recv().unwrap();
        assert!(env.is_request());
        let r = env.take_reply::<u32>().unwrap();
        assert!(r.is_abandoned());
        assert_eq!(r.reply(9), Err(9));
        // A full mailbox: the request is not sent and comes back.
        let small: Mailbox<u32> = po.open_with("small", &Options::new().capacity(1)).unwrap();
        small.try_recv().ok();
        small.send(0).unwrap();
        let e = small.request_timeout::<u32>(7, Duration::from_millis(10));
        assert_eq!(e, Err(RequestError::Timeout(Some(7))));
    });
}

/// When the last attached receiver goes, requests still queued fail at once instead of
/// waiting for an answer that cannot come; a later request finds no responders.
#[test]
fn last_receiver_leaving_fails_queued_requests() {
    watchdog(|| {
        let po = PostOffice::new();
        let client: Mailbox<u32> = po.open("gone").unwrap();
        let srv: Mailbox<u32> = po.open("gone").unwrap();
        srv.try_recv().ok();
        let c = client.clone();
        let t = thread::spawn(move || c.request::<u32>(1));
        spin_until(|| client.len() == 1);
        drop(srv);
        assert_eq!(t.join().unwrap(), Err(RequestError::Unanswered));
        // The message itself stays queued, without its reply capability.
        let env = client.try_recv().unwrap();
        assert!(!env.is_request());
        // `client` attached itself by receiving: it counts as a responder now.
        let other: Mailbox<u32> = po.open("gone").unwrap();
        drop(client);
        assert_eq!(other.request::<u32>(2), Err(RequestError::NoResponders(2)));
    });
}

#[test]
fn async_request_reply() {
    common::run_tokio(common::Rt::MultiThread, 20, || async {
        let po = PostOffice::new();
        let mb: Mailbox<u32> = po.open("areq").unwrap();
        let srv = mb.clone();
        srv.try_recv().ok();
        let server = tokio::spawn(async move {
            for _ in 0..100 {
                let mut env = srv.recv_async().await.unwrap();
                if *env.body() % 10 == 0 {
                    continue; // dropped unanswered
                }
                env.take_reply::<u32>()
                    .unwrap()
                    .reply(*env.body() + 1)
                    .unwrap();
            }
        });
        for i in 0..100 {
            let r = mb.request_async::<u32>(i).await;
            if i % 10 == 0 {
                assert_eq!(r, Err(RequestError::Unanswered));
            } else {
                assert_eq!(r, Ok(i + 1));
            }
        }
        server.await.unwrap();
    });
}

/// A pending `RecvFut` dropped takes nothing: the message goes to the next receiver.
/// An `Any` receive that was notified and then dropped passes the wake-up on to the next
/// `Any` receive; a selective receive that can take the message was woken by the send
/// itself (the two kinds wait apart, so neither swallows the other's wake-up).
#[test]
fn cancelled_receive_passes_wakeup_on() {
    let po = PostOffice::new();
    let mb: Mailbox<u32> = po.open("cancel").unwrap();
    let (f1, f2, f3) = (Flag::new(), Flag::new(), Flag::new());
    let mut any1 = mb.recv_async();
    let mut any2 = mb.recv_async();
    let mut tag3 = mb.recv_select_async(Select::Tag(3));
    assert!(poll_once(&mut any1, &waker(&f1)).is_pending());
    assert!(poll_once(&mut any2, &waker(&f2)).is_pending());
    assert!(poll_once(&mut tag3, &waker(&f3)).is_pending());
    mb.send_tagged(3, 30).unwrap();
    // The oldest `Any` receive, and the matching selective one; not the second `Any`.
    assert!(f1.woken() && !f2.woken() && f3.woken());
    drop(any1);
    assert!(f2.woken(), "the dropped future's wake-up was not passed on");
    match poll_noop(&mut tag3) {
        std::task::Poll::Ready(Ok(env)) => assert_eq!(env.into_body(), 30),
        other => panic!("{other:?}"),
    }
    assert!(poll_once(&mut any2, &waker(&f2)).is_pending());
    assert!(mb.is_empty());
}

/// A waiter woken for one message that takes an older one leaves no other waiter asleep
/// next to a message it could take. Registered: Tag(5), Any, Tag(3). Sent: 5 (wakes
/// Tag(5), and the Any receive), then 3 (wakes Tag(3): a send aims at the selective
/// receivers whatever the `Any` receivers do). Any takes the older 5; Tag(5) finds nothing
/// and waits again; Tag(3) takes the 3.
#[test]
fn waiter_taking_older_message_passes_on() {
    let po = PostOffice::new();
    let mb: Mailbox<u32> = po.open("passon").unwrap();
    let (f5, fany, f3) = (Flag::new(), Flag::new(), Flag::new());
    let mut r5 = mb.recv_select_async(Select::Tag(5));
    let mut rany = mb.recv_async();
    let mut r3 = mb.recv_select_async(Select::Tag(3));
    assert!(poll_once(&mut r5, &waker(&f5)).is_pending());
    assert!(poll_once(&mut rany, &waker(&fany)).is_pending());
    assert!(poll_once(&mut r3, &waker(&f3)).is_pending());
    mb.send_tagged(5, 50).unwrap();
    assert!(f5.woken() && fany.woken() && !f3.woken());
    mb.send_tagged(3, 30).unwrap();
    assert!(f3.woken(), "Tag(3) sleeps next to a message it can take");
    match poll_once(&mut rany, &waker(&fany)) {
        std::task::Poll::Ready(Ok(env)) => assert_eq!(env.into_body(), 50),
        other => panic!("{other:?}"),
    }
    assert!(poll_once(&mut r5, &waker(&f5)).is_pending());
    assert!(matches!(poll_noop(&mut r3), std::task::Poll::Ready(Ok(_))));
}

/// A `SendFut` pending on a full mailbox and dropped sent nothing; a pending
/// `RequestFut` dropped before sending withdraws its request.
#[test]
fn cancelled_sends_send_nothing() {
    let po = PostOffice::new();
    let mb: Mailbox<u32> = po.open_with("cs", &Options::new().capacity(1)).unwrap();
    mb.try_recv().ok();
    mb.send(1).unwrap();
    let mut s = mb.send_async(2);
    assert!(poll_noop(&mut s).is_pending());
    drop(s);
    let mut r = mb.request_async::<u32>(3);
    assert!(poll_noop(&mut r).is_pending());
    drop(r);
    assert_eq!(mb.try_recv().unwrap().into_body(), 1);
    assert_eq!(
        mb.try_recv().map(|e| e.into_body()),
        Err(TryRecvError::Empty)
    );
}

/// Async receivers with different selections, many senders, on a multi-threaded
/// runtime: exactly once, and the close wakes everyone.
#[test]
fn async_selective_receivers() {
    for rt in common::RUNTIMES {
        common::run_tokio(rt, 30, || async {
            let po = PostOffice::new();
            let opts = Options::new().capacity(8);
            let mb: Mailbox<u32> = po.open_with("async", &opts).unwrap();
            let recvs: Vec<_> = [Select::Tag(0), Select::Tag(1), Select::TagAtMost(2)]
                .into_iter()
                .map(|sel| {
                    let mb = mb.clone();
                    tokio::spawn(async move {
                        let mut got = vec![];
                        while let Ok(env) = mb.recv_select_async(sel.clone()).await {
                            got.push(env.into_body());
                        }
                        got
                    })
                })
                .collect();
            let sends: Vec<_> = (0..3u32)
                .map(|s| {
                    let mb: Mailbox<u32> = po.open_with("async", &opts).unwrap();
                    tokio::spawn(async move {
                        for i in 0..500 {
                            mb.send_tagged_async(u64::from(i % 3), s * 1000 + i)
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for s in sends {
                s.await.unwrap();
            }
            po.close("async");
            let mut all = vec![];
            for r in recvs {
                all.extend(r.await.unwrap());
            }
            all.sort_unstable();
            let want: Vec<u32> = (0..3)
                .flat_map(|s| (0..500).map(move |i| s * 1000 + i))
                .collect();
            assert_eq!(all, want);
        });
    }
}

/// The handle, envelope and future types cross threads when `T: Send`.
#[test]
fn auto_traits() {
    fn send_sync<X: Send + Sync>() {}
    fn send<X: Send>() {}
    send_sync::<Mailbox<u32>>();
    send_sync::<conduit::mailbox::Envelope<u32>>();
    send_sync::<PostOffice>();
    send_sync::<conduit::mailbox::Reply<String>>();
    send::<conduit::mailbox::SendFut<'static, u32>>();
    send::<conduit::mailbox::RecvFut<'static, u32>>();
    send::<conduit::mailbox::RequestFut<'static, u32, String>>();
}

/// A `RequestFut` dropped after its request went out abandons the reply: the replier
/// gets its value back instead of it vanishing.
#[test]
fn dropped_request_future_abandons_reply() {
    let po = PostOffice::new();
    let mb: Mailbox<u32> = po.open("abandon").unwrap();
    mb.try_recv().ok();
    let mut fut = mb.request_async::<String>(1);
    assert!(poll_noop(&mut fut).is_pending());
    let mut env = mb.try_recv().unwrap();
    let reply = env.take_reply::<String>().unwrap();
    assert!(!reply.is_abandoned());
    drop(fut);
    assert!(reply.is_abandoned());
    assert_eq!(reply.reply("late".into()), Err("late".to_string()));
}

/// A received envelope's sender address names its mailbox and equals (and hashes as)
/// the sender's own, for short names and for names too long to be kept inline alike.
#[test]
fn envelope_addresses_for_short_and_long_names() {
    use std::collections::HashSet;
    let po = PostOffice::new();
    // Lengths around the inline layout's edges: its first word holds 7 bytes, 23 fit
    // inline, 24 are shared.
    for name in [
        "a",
        "seven-7",
        "eight-8_",
        "exactly-22-bytes-long_",
        "exactly-23-bytes-long__",
        "exactly-24-bytes-long___",
        "a-name-well-over-twenty-two-bytes-long.x",
    ] {
        assert!(
            matches!(name.len(), 1 | 7 | 8 | 22 | 23 | 24 | 40),
            "{name}"
        );
        let rx = po.open::<u32>(name).unwrap();
        let tx = po.open::<u32>(name).unwrap();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        rx.send(3).unwrap();
        let (e1, e2) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        assert_eq!(e1.from(), tx.address());
        assert_eq!(e1.from().mailbox(), name);
        assert_eq!(e1.from().to_string(), tx.address().to_string());
        assert_ne!(e1.from(), rx.address());
        let set: HashSet<_> = [e1.from().clone(), e2.from().clone(), tx.address().clone()]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 1);
        // A received address selects its sender's messages.
        tx.send(4).unwrap();
        let e = rx.try_recv_select(Select::From(e2.from().clone())).unwrap();
        assert_eq!((e.into_body(), rx.try_recv().unwrap().into_body()), (4, 3));
    }
}
