//! The in-process mailbox's lock-free inbox against its locked index: `Any` receives
//! that pop the inbox racing selective receives that move it aside (per-sender FIFO),
//! the capacity with messages aside and under mixed receives, and close racing
//! lock-free sends.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use common::{spin_until, watchdog};
use conduit::mailbox::{Mailbox, Options, PostOffice, Select};
use conduit::{SendError, TryRecvError, TrySendError};

/// Senders send `(sender, seq)` with tags cycling through 0..3; `Any` receivers (which
/// pop the inbox without the lock while nothing is aside) race `Tag` and `From`
/// receivers (which move the inbox aside). Every receiver checks that, from each sender,
/// the sequence numbers it gets increase (per-sender FIFO within its selection; an
/// `Any` receive that returned a message newer than one still aside would break it at
/// the receiver that later takes the older one), and all messages arrive exactly once.
#[test]
fn any_receivers_racing_movers_keep_per_sender_fifo() {
    watchdog(|| {
        for round in 0..20u64 {
            let po = PostOffice::new();
            let name = format!("fifo{round}");
            let opts = if round % 2 == 0 {
                Options::new().capacity(8)
            } else {
                Options::new().unbounded()
            };
            const SENDERS: u64 = 3;
            const PER_SENDER: u64 = 3000;
            let senders: Vec<Mailbox<(u64, u64)>> = (0..SENDERS)
                .map(|_| po.open_with(&name, &opts).unwrap())
                .collect();
            let addresses: Vec<_> = senders.iter().map(|s| s.address().clone()).collect();
            let sels = [
                Select::Any,
                Select::Any,
                Select::Tag(1),
                Select::TagExcept(0),
                Select::From(addresses[2].clone()),
            ];
            let receivers: Vec<_> = sels
                .into_iter()
                .map(|sel| {
                    let mb: Mailbox<(u64, u64)> = po.open_with(&name, &opts).unwrap();
                    thread::spawn(move || {
                        let mut last: HashMap<u64, u64> = HashMap::new();
                        let mut got = vec![];
                        while let Ok(env) = mb.recv_select(sel.clone()) {
                            let (s, seq) = env.into_body();
                            if let Some(&prev) = last.get(&s) {
                                assert!(
                                    prev < seq,
                                    "{sel:?}: sender {s}'s {seq} after {prev} (per-sender FIFO)"
                                );
                            }
                            last.insert(s, seq);
                            got.push((s, seq));
                        }
                        got
                    })
                })
                .collect();
            let send_threads: Vec<_> = senders
                .into_iter()
                .enumerate()
                .map(|(s, mb)| {
                    thread::spawn(move || {
                        for seq in 0..PER_SENDER {
                            mb.send_tagged(seq % 3, (s as u64, seq)).unwrap();
                        }
                    })
                })
                .collect();
            for t in send_threads {
                t.join().unwrap();
            }
            // Everything left (for selections that match nothing more) goes to Any
            // receivers before they see the close.
            assert!(po.close(&name));
            let mut all: Vec<(u64, u64)> = receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            all.sort_unstable();
            let want: Vec<(u64, u64)> = (0..SENDERS)
                .flat_map(|s| (0..PER_SENDER).map(move |q| (s, q)))
                .collect();
            assert_eq!(all, want, "every message exactly once");
        }
    });
}

/// The capacity counts the messages moved aside too: a full mailbox stays full after
/// a selective receive moved its messages into the index, `try_send` hands the message
/// back, an `Any` receive then takes the oldest (aside) message first, and exactly one
/// place is free again.
#[test]
fn capacity_counts_messages_aside() {
    let po = PostOffice::new();
    let mb: Mailbox<u32> = po.open_with("cap", &Options::new().capacity(3)).unwrap();
    mb.send_tagged(1, 10).unwrap();
    mb.send_tagged(2, 20).unwrap();
    // Moves both aside, finds nothing.
    assert_eq!(
        mb.try_recv_select(Select::Tag(9)).unwrap_err(),
        TryRecvError::Empty
    );
    mb.send_tagged(1, 30).unwrap(); // into the inbox, behind the two aside
    assert_eq!(mb.len(), 3);
    assert_eq!(mb.try_send(40), Err(TrySendError::Full(40)));
    assert_eq!(mb.try_recv().unwrap().into_body(), 10);
    mb.try_send(50).unwrap();
    assert_eq!(mb.try_send(60), Err(TrySendError::Full(60)));
    let rest: Vec<u32> = (0..3).map(|_| mb.recv().unwrap().into_body()).collect();
    assert_eq!(rest, [20, 30, 50]);
    assert!(mb.is_empty());
}

/// Capacity under mixed receives: senders and `Any`/selective receivers race on a
/// mailbox of capacity 4; sampled at any moment, the sends completed minus the receives
/// started never exceed the capacity (that difference is at most the number queued),
/// and every `try_send` that fails hands its own message back.
#[test]
fn capacity_respected_under_mixed_receives() {
    watchdog(|| {
        const CAP: usize = 4;
        const PER_SENDER: usize = 20_000;
        let po = PostOffice::new();
        let opts = Options::new().capacity(CAP);
        let sent = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let receivers: Vec<_> = [Select::Any, Select::Tag(1), Select::TagExcept(1)]
            .into_iter()
            .map(|sel| {
                let mb: Mailbox<usize> = po.open_with("mixed", &opts).unwrap();
                let started = started.clone();
                thread::spawn(move || {
                    let mut n = 0;
                    loop {
                        started.fetch_add(1, Ordering::SeqCst);
                        if mb.recv_select(sel.clone()).is_err() {
                            return n;
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        let senders: Vec<_> = (0..2)
            .map(|s| {
                let mb: Mailbox<usize> = po.open_with("mixed", &opts).unwrap();
                let sent = sent.clone();
                thread::spawn(move || {
                    for i in 0..PER_SENDER {
                        let mut m = s * PER_SENDER + i;
                        loop {
                            match mb.try_send_tagged(i as u64 % 2, m) {
                                Ok(()) => break,
                                Err(TrySendError::Full(back)) => {
                                    assert_eq!(back, s * PER_SENDER + i);
                                    m = back;
                                    thread::yield_now();
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let watcher = po.open_with::<usize>("mixed", &opts).unwrap();
        while sent.load(Ordering::SeqCst) < 2 * PER_SENDER {
            // Receives started are read after sends completed: a later, larger count.
            let s = sent.load(Ordering::SeqCst);
            let r = started.load(Ordering::SeqCst);
            assert!(s.saturating_sub(r) <= CAP, "{s} sent, {r} receives started");
            assert!(watcher.len() <= CAP, "len {}", watcher.len());
        }
        for s in senders {
            s.join().unwrap();
        }
        assert!(po.close("mixed"));
        let received: usize = receivers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(received, 2 * PER_SENDER);
    });
}

/// Close racing lock-free sends and both kinds of receive: every send that returned
/// `Ok` is received exactly once (receivers drain, including a send that had reserved
/// its place just before the close), every refused send hands its message back.
#[test]
fn close_racing_lock_free_sends() {
    watchdog(|| {
        for round in 0..50usize {
            let po = PostOffice::new();
            let name = format!("close{round}");
            let opts = if round % 2 == 0 {
                Options::new().capacity(64)
            } else {
                Options::new().unbounded()
            };
            let receivers: Vec<_> = [Select::Any, Select::Tag(0)]
                .into_iter()
                .map(|sel| {
                    let mb: Mailbox<usize> = po.open_with(&name, &opts).unwrap();
                    thread::spawn(move || {
                        let mut got = vec![];
                        while let Ok(env) = mb.recv_select(sel.clone()) {
                            got.push(env.into_body());
                        }
                        got
                    })
                })
                .collect();
            let started = Arc::new(AtomicUsize::new(0));
            let senders: Vec<_> = (0..2)
                .map(|s| {
                    let mb: Mailbox<usize> = po.open_with(&name, &opts).unwrap();
                    let started = started.clone();
                    thread::spawn(move || {
                        let mut ok = vec![];
                        // Bounded, so that unbounded rounds do not queue without end
                        // before the close; the close comes well before (below).
                        for i in 0..20_000 {
                            started.fetch_add(1, Ordering::SeqCst);
                            let m = s * 1_000_000 + i;
                            match mb.send_tagged(i as u64 % 2, m) {
                                Ok(()) => ok.push(m),
                                Err(SendError(back)) => {
                                    assert_eq!(back, m);
                                    return ok;
                                }
                            }
                        }
                        ok
                    })
                })
                .collect();
            spin_until(|| started.load(Ordering::SeqCst) >= 20 + round * 7);
            assert!(po.close(&name));
            let mut sent: Vec<usize> = senders
                .into_iter()
                .flat_map(|s| s.join().unwrap())
                .collect();
            let mut got: Vec<usize> = receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            sent.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, sent);
        }
    });
}
