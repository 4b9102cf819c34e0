//! Cross-process shm channels with real processes: the test binary re-executes itself
//! as children (see `shm_support`). Messages both ways (typed and bytes, blocking and
//! async), many-to-many exactly-once, and peers killed with `kill -9`.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conduit::shm::{ByteReceiver, ByteSender, Options, Receiver, Sender};
use conduit::{RecvError, RecvTimeoutError, TryRecvError, TrySendError};
use shm_support::*;

/// A generous bound for one blocking step inside a test (the watchdog bounds the rest).
const STEP: Duration = Duration::from_secs(20);

/// Every child process starts here and dispatches on its role.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let name = arg("name");
    match role.as_str() {
        "echo" => {
            // Receives n u64s on `name`, sends each + 1 back on `reply`.
            let rx = Receiver::<u64>::open(&name).unwrap();
            let tx = Sender::<u64>::open(&arg("reply")).unwrap();
            for _ in 0..num("n") {
                tx.send(rx.recv().unwrap() + 1).unwrap();
            }
        }
        "echo_bytes" => {
            let rx = ByteReceiver::open(&name).unwrap();
            let tx = ByteSender::open(&arg("reply")).unwrap();
            let mut buf = vec![0; rx.max_message()];
            for _ in 0..num("n") {
                let n = rx.recv_into(&mut buf).unwrap();
                buf[..n].reverse();
                tx.send(&buf[..n]).unwrap();
            }
            // The byte channel refuses, never truncates, an oversized message.
            let err = tx.send(&vec![0; tx.max_message() + 1]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        }
        "produce" => {
            let tx = Sender::<[u64; 2]>::open(&name).unwrap();
            let p = num("id");
            for i in 0..num("n") {
                tx.send([p, i]).unwrap();
            }
        }
        "consume" => {
            let rx = Receiver::<[u64; 2]>::open(&name).unwrap();
            let mut got = Vec::new();
            while let Ok([p, i]) = rx.recv() {
                got.push(format!("{p}:{i}"));
            }
            say(format!("got {}", got.join(",")));
        }
        "consume_async" => {
            let rx = Receiver::<[u64; 2]>::open(&name).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let got = rt.block_on(async {
                let mut got = Vec::new();
                // Alternate futures and the stream to use both.
                loop {
                    match rx.recv_async().await {
                        Ok([p, i]) => got.push(format!("{p}:{i}")),
                        Err(RecvError) => break,
                    }
                    use futures::StreamExt;
                    match rx.stream().next().await {
                        Some([p, i]) => got.push(format!("{p}:{i}")),
                        None => break,
                    }
                }
                got
            });
            say(format!("got {}", got.join(",")));
        }
        "produce_async" => {
            let tx = Sender::<[u64; 2]>::open(&name).unwrap();
            let p = num("id");
            futures::executor::block_on(async {
                use futures::SinkExt;
                let mut sink = tx.sink();
                for i in 0..num("n") {
                    if i % 2 == 0 {
                        tx.send_async([p, i]).await.unwrap();
                    } else {
                        sink.send([p, i]).await.unwrap();
                    }
                }
            });
        }
        "stream_forever" => {
            let tx = Sender::<u64>::open(&name).unwrap();
            for i in 0.. {
                tx.send(i).unwrap();
            }
        }
        "claim_send_and_hang" => {
            // Sends 0, 1, 2, then claims the next position the way a sender does (intent,
            // then the tail CAS) and never commits it: killed here, it is a sender that
            // died between claim and commit.
            let tx = Sender::<u64>::open(&name).unwrap();
            for i in 0..3 {
                tx.send(i).unwrap();
            }
            let raw = Raw::map(&name);
            let me = raw.my_peer_slot(1);
            let tail = raw.word(TAIL);
            let pos = tail.load(Ordering::SeqCst);
            raw.intent(me, 0)
                .store(intent_word(false, pos), Ordering::SeqCst);
            let next = next_pos(pos, tx.capacity() as u64);
            tail.compare_exchange(pos, next, Ordering::SeqCst, Ordering::SeqCst)
                .unwrap();
            say("claimed");
            hang();
        }
        "claim_recv_and_hang" => {
            // Claims the message at the head the way a receiver does and never frees its
            // slot: killed here, it is a receiver that died mid-receive.
            let rx = Receiver::<u64>::open(&name).unwrap();
            let raw = Raw::map(&name);
            let me = raw.my_peer_slot(2);
            let head = raw.word(HEAD);
            let pos = head.load(Ordering::SeqCst);
            raw.intent(me, 0)
                .store(intent_word(true, pos), Ordering::SeqCst);
            let next = next_pos(pos, rx.capacity() as u64);
            head.compare_exchange(pos, next, Ordering::SeqCst, Ordering::SeqCst)
                .unwrap();
            say("claimed");
            hang();
        }
        "attach_and_hang" => {
            let _rx = Receiver::<u64>::open(&name).unwrap();
            say("attached");
            hang();
        }
        "send_until_disconnected" => {
            let tx = Sender::<u64>::open(&name).unwrap();
            let mut i = 0;
            loop {
                match tx.try_send(i) {
                    Ok(()) => i += 1,
                    Err(TrySendError::Full(_)) => break,
                    Err(TrySendError::Disconnected(_)) => panic!("disconnected too early"),
                }
            }
            say("full");
            // Blocks until the receiver dies.
            assert_eq!(tx.send(i), Err(conduit::SendError(i)));
            say("disconnected");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn typed_messages_both_ways() {
    watchdog(|| {
        let (to, from) = (Name::new("to"), Name::new("from"));
        let tx = Sender::<u64>::create(&to, 4).unwrap();
        let rx = Receiver::<u64>::create(&from, 4).unwrap();
        let n = 500;
        let child = Proc::spawn(
            "echo",
            &[("name", &to), ("reply", &from), ("n", &n.to_string())],
        );
        let sender = std::thread::spawn(move || {
            for i in 0..n {
                tx.send(i * 10).unwrap();
            }
        });
        for i in 0..n {
            assert_eq!(rx.recv_timeout(STEP), Ok(i * 10 + 1));
        }
        sender.join().unwrap();
        child.success();
        // The echo process is gone: its sender detached.
        assert_eq!(rx.recv_timeout(STEP), Err(RecvTimeoutError::Disconnected));
    });
}

#[test]
fn byte_messages_both_ways() {
    watchdog(|| {
        let (to, from) = (Name::new("bto"), Name::new("bfrom"));
        let opts = Options::new().capacity(2).max_message(300).create_new(true);
        let tx = ByteSender::with(&to, &opts).unwrap();
        let rx = ByteReceiver::with(&from, &opts).unwrap();
        let msgs: Vec<Vec<u8>> = (0..=300u32)
            .step_by(7)
            .chain([0, 300, 1])
            .map(|len| (0..len).map(|b| (b * 31 + len) as u8).collect())
            .collect();
        let n = msgs.len();
        let child = Proc::spawn(
            "echo_bytes",
            &[("name", &to), ("reply", &from), ("n", &n.to_string())],
        );
        let to_send = msgs.clone();
        let sender = std::thread::spawn(move || {
            for m in &to_send {
                tx.send(m).unwrap();
            }
        });
        for m in &msgs {
            let mut want = m.clone();
            want.reverse();
            assert_eq!(rx.recv_timeout(STEP).unwrap(), want);
        }
        sender.join().unwrap();
        child.success();
    });
}

/// Checks that every (producer, seq) arrived exactly once, and in order per producer
/// within each consumer.
fn check_exactly_once(outputs: &[Vec<String>], producers: u64, per_producer: u64) {
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    for out in outputs {
        let line = out
            .iter()
            .find_map(|l| l.strip_prefix("got "))
            .or_else(|| out.iter().find(|l| *l == "got").map(|_| ""))
            .expect("consumer output");
        let mut last: HashMap<u64, u64> = HashMap::new();
        for item in line.split(',').filter(|s| !s.is_empty()) {
            let (p, i) = item.split_once(':').unwrap();
            let (p, i): (u64, u64) = (p.parse().unwrap(), i.parse().unwrap());
            if let Some(&prev) = last.get(&p) {
                assert!(i > prev, "producer {p}: {i} after {prev}");
            }
            last.insert(p, i);
            *seen.entry((p, i)).or_default() += 1;
        }
    }
    for p in 0..producers {
        for i in 0..per_producer {
            assert_eq!(seen.get(&(p, i)), Some(&1), "message {p}:{i}");
        }
    }
    assert_eq!(seen.len() as u64, producers * per_producer);
}

fn mpmc(consumer_role: &str, producer_role: &str) {
    let name = Name::new("mpmc");
    // The parent keeps a receiver attached (it takes nothing), so that senders never see
    // "every receiver gone" before the consumers attach, and a sender until every
    // producer is done, so that consumers do not see "every sender gone" between one
    // producer finishing and the next attaching (peers come and go: a mailbox).
    let _anchor_rx = Receiver::<[u64; 2]>::create(&name, 16).unwrap();
    let anchor_tx = Sender::<[u64; 2]>::open(&name).unwrap();
    let per = 2000u64;
    let consumers: Vec<Proc> = (0..2)
        .map(|_| Proc::spawn(consumer_role, &[("name", &name)]))
        .collect();
    let producers: Vec<Proc> = (0..2)
        .map(|p| {
            Proc::spawn(
                producer_role,
                &[
                    ("name", &name),
                    ("id", &p.to_string()),
                    ("n", &per.to_string()),
                ],
            )
        })
        .collect();
    for p in producers {
        p.success();
    }
    drop(anchor_tx);
    let outputs: Vec<Vec<String>> = consumers.into_iter().map(|c| c.success()).collect();
    check_exactly_once(&outputs, 2, per);
}

#[test]
fn two_producers_two_consumers_exactly_once() {
    watchdog(|| mpmc("consume", "produce"));
}

#[test]
fn async_producers_and_consumers_exactly_once() {
    watchdog(|| mpmc("consume_async", "produce_async"));
}

#[test]
fn receiver_waits_for_the_first_sender() {
    watchdog(|| {
        let name = Name::new("first");
        let rx = Receiver::<u64>::create(&name, 4).unwrap();
        // No sender ever attached: not disconnected, just empty.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        );
        let reply = Name::new("first-reply");
        let back = Receiver::<u64>::create(&reply, 4).unwrap();
        let child = Proc::spawn("echo", &[("name", &reply), ("reply", &name), ("n", "1")]);
        Sender::<u64>::open(&reply).unwrap().send(41).unwrap();
        assert_eq!(rx.recv_timeout(STEP), Ok(42));
        child.success();
        assert_eq!(rx.recv_timeout(STEP), Err(RecvTimeoutError::Disconnected));
        drop(back);
    });
}

/// A sender blocked on a full ring spins for a batch of free slots (half the ring), but
/// one freed slot must still let it through. The receiver frees one slot at a time,
/// each only once the ring is full again, so a sender that insisted on a batch would
/// never get one.
#[test]
fn sender_on_a_full_ring_takes_a_single_freed_slot() {
    watchdog(|| {
        let cap = 64;
        let name = Name::new("single-slot");
        let rx = Receiver::<u64>::create(&name, cap).unwrap();
        let mut child = Proc::spawn("stream_forever", &[("name", &name)]);
        for i in 0..200 {
            while rx.len() < cap {
                std::thread::yield_now();
            }
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
        child.kill9();
    });
}

#[test]
fn sender_killed_mid_stream() {
    watchdog(|| {
        let name = Name::new("kill-sender");
        let rx = Receiver::<u64>::create(&name, 8).unwrap();
        let mut child = Proc::spawn("stream_forever", &[("name", &name)]);
        for i in 0..200 {
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
        child.kill9();
        // Everything committed arrives, in order, with no gap; then disconnection.
        drain_until_disconnected(&rx, 200, STEP);
        // The async side sees the same.
        assert_eq!(futures::executor::block_on(rx.recv_async()), Err(RecvError));
    });
}

#[test]
fn sender_killed_between_claim_and_commit() {
    watchdog(|| {
        let name = Name::new("dead-claim");
        let rx = Receiver::<u64>::create(&name, 8).unwrap();
        let mut child = Proc::spawn("claim_send_and_hang", &[("name", &name)]);
        for i in 0..3 {
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
        child.expect("claimed");
        // Messages sent behind the dead claim.
        let tx = Sender::<u64>::open(&name).unwrap();
        for i in 3..6 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty)); // stuck behind the claim
        child.kill9();
        // A survivor reclaims the dead claim (as skipped): the rest arrives.
        for i in 3..6 {
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
        assert_eq!(rx.recv_timeout(STEP), Err(RecvTimeoutError::Disconnected));
    });
}

#[test]
fn receiver_killed_between_claim_and_commit() {
    watchdog(|| {
        let name = Name::new("dead-recv");
        let tx = Sender::<u64>::create(&name, 4).unwrap();
        let rx = Receiver::<u64>::open(&name).unwrap();
        tx.send(0).unwrap();
        let mut child = Proc::spawn("claim_recv_and_hang", &[("name", &name)]);
        child.expect("claimed");
        for i in 1..4 {
            tx.send(i).unwrap();
        }
        // Full: the dead receiver's slot is still claimed.
        assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
        child.kill9();
        // A survivor frees its slot: the blocked send completes. Message 0 died with it.
        tx.send_timeout(4, STEP).unwrap();
        for i in 1..5 {
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
    });
}

#[test]
fn receiver_killed_while_sender_blocks() {
    watchdog(|| {
        let name = Name::new("kill-receiver");
        // Created and left behind by a handle that detaches at once.
        drop(Sender::<u64>::create(&name, 4).unwrap());
        let mut receiver = Proc::spawn("attach_and_hang", &[("name", &name)]);
        receiver.expect("attached");
        let sender = Proc::spawn("send_until_disconnected", &[("name", &name)]);
        sender.expect("full");
        // Also block a sender in this process, on a thread and in a future.
        let tx = Sender::<u64>::open(&name).unwrap();
        let tx2 = tx.clone();
        let blocked = std::thread::spawn(move || tx2.send(7));
        let pending = std::thread::spawn(move || futures::executor::block_on(tx.send_async(8)));
        receiver.kill9();
        sender.expect("disconnected");
        sender.success();
        assert_eq!(blocked.join().unwrap(), Err(conduit::SendError(7)));
        assert_eq!(pending.join().unwrap(), Err(conduit::SendError(8)));
    });
}
