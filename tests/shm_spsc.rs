//! The single-producer single-consumer mode of shm channels (`Options::spsc`), with real
//! processes (see `shm_support`): streams in order (typed, bytes, blocking, `try_`,
//! timed and async), a second sender or receiver refused while the first lives and
//! taking over once it is killed, producers and consumers killed with `kill -9` at any
//! point (and between a publish and its `tail` store), and the mode checks at open.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::time::Duration;

use conduit::shm::{self, ByteReceiver, ByteSender, Options, Receiver, Sender};
use conduit::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
use shm_support::*;

/// A generous bound for one blocking step inside a test (the watchdog bounds the rest).
const STEP: Duration = Duration::from_secs(20);

/// The slot size of a `u64` channel (16 bytes of control words, the payload, padded to
/// a power of two) and the offsets of a slot's stamp and payload, per the documented
/// layout.
const U64_SLOT: usize = 32;
const PAYLOAD: usize = 16;

fn spsc(cap: usize) -> Options {
    Options::new().capacity(cap).create_new(true).spsc(true)
}

/// Every child process starts here and dispatches on its role.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let name = arg("name");
    match role.as_str() {
        "produce" => {
            // Sends 0..n, mixing blocking, `try_`, timed and async sends.
            let tx = Sender::<u64>::open(&name).unwrap();
            let mut i = 0;
            let n = num("n");
            while i < n {
                match i % 4 {
                    0 => tx.send(i).unwrap(),
                    1 => match tx.try_send(i) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => continue,
                        Err(e) => panic!("{e:?}"),
                    },
                    2 => tx.send_timeout(i, STEP).unwrap(),
                    _ => futures::executor::block_on(tx.send_async(i)).unwrap(),
                }
                i += 1;
            }
        }
        "produce_bytes" => {
            let tx = ByteSender::open(&name).unwrap();
            for i in 0..num("n") {
                let len = (i % 41) as usize;
                tx.send(&vec![i as u8; len]).unwrap();
            }
        }
        "echo" => {
            let rx = Receiver::<u64>::open(&name).unwrap();
            let tx = Sender::<u64>::open(&arg("reply")).unwrap();
            for _ in 0..num("n") {
                tx.send(rx.recv().unwrap() + 1).unwrap();
            }
        }
        "stream_forever" => {
            let tx = Sender::<u64>::open(&name).unwrap();
            say("attached");
            for i in 0.. {
                tx.send(i).unwrap();
            }
        }
        "consume_forever" => {
            let rx = Receiver::<u64>::open(&name).unwrap();
            say("attached");
            loop {
                let i = rx.recv().unwrap();
                say(format!("got {i}"));
            }
        }
        "attach_and_hang" => {
            let _tx;
            let _rx;
            if arg("side") == "send" {
                _tx = Sender::<u64>::open(&name).unwrap();
            } else {
                _rx = Receiver::<u64>::open(&name).unwrap();
            }
            say("attached");
            hang();
        }
        "echo_creating" => {
            // Creates both channels (from a process that cannot use membarrier: with
            // SeqCst fences), then echoes `n` messages from `name` to `reply`.
            let rx = Receiver::<u64>::with(&name, &spsc(4)).unwrap();
            let tx = Sender::<u64>::with(&arg("reply"), &spsc(4)).unwrap();
            say("created");
            for _ in 0..num("n") {
                tx.send(rx.recv().unwrap() + 1).unwrap();
            }
        }
        "open_receiver" => match Receiver::<u64>::open(&name) {
            Ok(rx) => say(format!("opened {}", rx.recv_timeout(STEP).unwrap())),
            Err(e) => say(format!("refused {:?} {e}", e.kind())),
        },
        "publish_and_hang" => {
            // Sends 0, 1, 2, then publishes 3 the way a sender does (payload, then the
            // stamp `pos + 1`) and never stores `tail`: killed here, it is a sender that
            // died between its publish and its `tail` store.
            let tx = Sender::<u64>::open(&name).unwrap();
            for i in 0..3 {
                tx.send(i).unwrap();
            }
            // The shared `tail` lags the sender's position by up to a stride: the next
            // position is past every published stamp from it (what a sender's own
            // position is; positions count up from 0 within the first lap).
            let raw = Raw::map(&name);
            let mut pos = raw.word(TAIL).load(Ordering::SeqCst);
            while raw
                .word(SLOTS + (pos as usize % tx.capacity()) * U64_SLOT)
                .load(Ordering::SeqCst)
                == pos + 1
            {
                pos += 1;
            }
            assert_eq!(pos, 3, "three messages sent, in the first lap");
            let slot = SLOTS + (pos as usize % tx.capacity()) * U64_SLOT;
            raw.word(slot + PAYLOAD).store(3, Ordering::SeqCst);
            raw.word(slot).store(pos + 1, Ordering::SeqCst);
            say("published");
            hang();
        }
        other => panic!("unknown role {other}"),
    }
}

/// A stream through a 4-slot ring (many laps, the sender often finding it full) arrives
/// whole and in order, whichever operations the two sides use.
#[test]
fn typed_stream_in_order() {
    watchdog(|| {
        let name = Name::new("spsc-stream");
        let rx = Receiver::<u64>::with(&name, &spsc(4)).unwrap();
        const N: u64 = 20_000;
        let child = Proc::spawn("produce", &[("name", &name), ("n", &N.to_string())]);
        let mut next = 0;
        while next < N {
            let got = match next % 3 {
                0 => rx.recv_timeout(STEP).unwrap(),
                1 => match rx.try_recv() {
                    Ok(v) => v,
                    Err(TryRecvError::Empty) => continue,
                    Err(e) => panic!("{e:?}"),
                },
                _ => futures::executor::block_on(rx.recv_async()).unwrap(),
            };
            assert_eq!(got, next);
            next += 1;
        }
        child.success();
        assert_eq!(rx.recv_timeout(STEP), Err(RecvTimeoutError::Disconnected));
    });
}

#[test]
fn byte_stream_in_order() {
    watchdog(|| {
        let name = Name::new("spsc-bytes");
        let rx = ByteReceiver::with(&name, &spsc(8).max_message(40)).unwrap();
        const N: u64 = 5_000;
        let child = Proc::spawn("produce_bytes", &[("name", &name), ("n", &N.to_string())]);
        for i in 0..N {
            let msg = rx.recv_timeout(STEP).unwrap();
            assert_eq!(msg, vec![i as u8; (i % 41) as usize], "message {i}");
        }
        child.success();
        assert!(rx.recv_timeout(STEP).is_err());
    });
}

/// A ping-pong over two single-producer channels, each side the one sender of one and
/// the one receiver of the other.
#[test]
fn ping_pong() {
    watchdog(|| {
        let (ping, pong) = (Name::new("spsc-ping"), Name::new("spsc-pong"));
        let tx = Sender::<u64>::with(&ping, &spsc(4)).unwrap();
        let rx = Receiver::<u64>::with(&pong, &spsc(4)).unwrap();
        let child = Proc::spawn("echo", &[("name", &ping), ("reply", &pong), ("n", "2000")]);
        for i in 0..2000 {
            tx.send(i).unwrap();
            assert_eq!(rx.recv_timeout(STEP), Ok(i + 1));
        }
        child.success();
    });
}

/// A second sender, or receiver, in this process or another, is refused while the
/// first family lives; clones of the first are fine. Once the first is killed
/// (`kill -9`), the next attach takes over; once dropped, too.
#[test]
fn second_family_refused_until_the_first_is_gone() {
    watchdog(|| {
        let name = Name::new("spsc-exclusive");
        let rx = Receiver::<u64>::with(&name, &spsc(4)).unwrap();
        let err = Receiver::<u64>::open(&name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{err}");
        let rx2 = rx.clone();
        let mut child = Proc::spawn("attach_and_hang", &[("name", &name), ("side", "send")]);
        child.expect("attached");
        let err = Sender::<u64>::open(&name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceBusy, "{err}");
        assert!(
            err.to_string().contains(&child.pid().to_string()),
            "names the holder: {err}"
        );
        assert_eq!(rx.sender_count(), 1);
        child.kill9();
        let tx = Sender::<u64>::open(&name).expect("takes over from the dead sender");
        tx.send(5).unwrap();
        assert_eq!(rx2.recv_timeout(STEP), Ok(5));
        drop(tx);
        let tx = Sender::<u64>::open(&name).expect("takes over from the dropped sender");
        tx.send(6).unwrap();
        assert_eq!(rx.recv_timeout(STEP), Ok(6));
        drop((rx, rx2));
        let rx = Receiver::<u64>::open(&name).expect("a new receiver");
        tx.send(7).unwrap();
        assert_eq!(rx.recv_timeout(STEP), Ok(7));
    });
}

/// A producer killed mid-stream: every message it published arrives, in order with no
/// gap, then disconnection; a new producer then takes over and continues after them.
#[test]
fn producer_killed_mid_stream() {
    watchdog(|| {
        let name = Name::new("spsc-kill-producer");
        let rx = Receiver::<u64>::with(&name, &spsc(8)).unwrap();
        let mut child = Proc::spawn("stream_forever", &[("name", &name)]);
        for i in 0..500 {
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
        child.kill9();
        drain_until_disconnected(&rx, 500, STEP);
        assert_eq!(
            futures::executor::block_on(rx.recv_async()),
            Err(conduit::RecvError)
        );
        let tx = Sender::<u64>::open(&name).unwrap();
        for i in 0..20 {
            tx.send(1000 + i).unwrap();
            assert_eq!(rx.recv_timeout(STEP), Ok(1000 + i));
        }
    });
}

/// A producer killed after publishing a message and before storing `tail`: the
/// message is delivered, and the next producer repairs `tail` before it sends, so its
/// messages follow. Before the repair, the next producer found `tail` behind `head`
/// (the receiver had taken the published message) and every send failed.
#[test]
fn producer_killed_between_publish_and_tail() {
    watchdog(|| {
        let name = Name::new("spsc-publish");
        let rx = Receiver::<u64>::with(&name, &spsc(8)).unwrap();
        let mut child = Proc::spawn("publish_and_hang", &[("name", &name)]);
        child.expect("published");
        child.kill9();
        for i in 0..4 {
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
        let tx = Sender::<u64>::open(&name).unwrap();
        for i in 4..20 {
            assert_eq!(tx.send_timeout(i, STEP), Ok(()));
            assert_eq!(rx.recv_timeout(STEP), Ok(i));
        }
    });
}

/// A consumer killed mid-stream loses nothing it had not received: the next consumer
/// continues in order right after the last message the dead one reported, or with that
/// one's successor if it died between its read and its commit (then the message it
/// never returned is delivered again), and the sender never sees a gap or a wedge.
#[test]
fn consumer_killed_mid_stream() {
    watchdog(|| {
        let name = Name::new("spsc-kill-consumer");
        let tx = Sender::<u64>::with(&name, &spsc(8)).unwrap();
        let mut child = Proc::spawn("consume_forever", &[("name", &name)]);
        child.expect("attached");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Sends 0, 1, 2, ... until told to stop; while no receiver is attached and the
        // ring is full a send reports `Disconnected`, and the same message is sent again
        // (the next receiver reconnects the channel).
        let sender = {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match tx.send_timeout(i, Duration::from_millis(10)) {
                        Ok(()) => i += 1,
                        Err(SendTimeoutError::Disconnected(_)) => std::thread::yield_now(),
                        Err(SendTimeoutError::Timeout(_)) => {}
                    }
                }
                i
            })
        };
        let mut last = None;
        while last.is_none_or(|l| l < 300) {
            let line = child.line(STEP).expect("the consumer reports");
            let i: u64 = line.strip_prefix("got ").unwrap().parse().unwrap();
            assert_eq!(i, last.map_or(0, |l| l + 1));
            last = Some(i);
        }
        child.kill9();
        let last = last.unwrap();
        let rx = Receiver::<u64>::open(&name).expect("takes over from the dead receiver");
        let first = rx.recv_timeout(STEP).unwrap();
        assert!(first > last, "{first} after {last}: delivered twice");
        let mut next = first + 1;
        while next < first + 500 {
            assert_eq!(rx.recv_timeout(STEP), Ok(next));
            next += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        while next < sent {
            assert_eq!(rx.recv_timeout(STEP), Ok(next));
            next += 1;
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    });
}

/// A sender blocked on a full ring learns that the one receiver was killed.
#[test]
fn consumer_killed_while_the_producer_blocks() {
    watchdog(|| {
        let name = Name::new("spsc-blocked");
        let tx = Sender::<u64>::with(&name, &spsc(2)).unwrap();
        let mut child = Proc::spawn("attach_and_hang", &[("name", &name), ("side", "recv")]);
        child.expect("attached");
        tx.send(0).unwrap();
        tx.send(1).unwrap();
        assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
        let blocked = std::thread::spawn(move || tx.send(2));
        child.kill9();
        assert_eq!(blocked.join().unwrap(), Err(conduit::SendError(2)));
    });
}

/// `shm::inspect` counts what is queued in the mode although the shared `tail` lags
/// (the producer stores it once a stride): it walks the published stamps.
#[test]
fn inspect_counts_past_a_lagging_tail() {
    watchdog(|| {
        let name = Name::new("spsc-inspect");
        let tx = Sender::<u64>::with(&name, &spsc(8)).unwrap();
        let rx = Receiver::<u64>::open(&name).unwrap();
        for v in 0..5 {
            tx.send(v).unwrap();
        }
        let info = shm::inspect(&name).unwrap();
        assert_eq!((info.queued, info.tail), (5, 5), "{info:?}");
        assert_eq!(rx.recv(), Ok(0));
        assert_eq!(shm::inspect(&name).unwrap().queued, 4);
        for v in 5..9 {
            tx.send(v).unwrap();
        }
        // Full, across the lap's end: the walk stops after one lap.
        let info = shm::inspect(&name).unwrap();
        assert_eq!(info.queued, 8, "{:?}", info.problems);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
    });
}

/// The mode is checked when asked for, and only applies to channels; `shm::inspect`
/// reports it; a segment whose kind word carries the mode's flag on a mailbox is
/// refused as corrupt.
#[test]
fn mode_checks() {
    watchdog(|| {
        let name = Name::new("spsc-mode");
        let tx = Sender::<u64>::with(&name, &spsc(4)).unwrap();
        assert!(shm::inspect(&name).unwrap().spsc);
        let err = Receiver::<u64>::with(&name, &Options::new().spsc(false)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("mode mismatch"), "{err}");
        let rx = Receiver::<u64>::with(&name, &Options::new().spsc(true)).unwrap();
        tx.send(1).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));

        let plain = Name::new("spsc-mode-plain");
        let _tx = Sender::<u64>::create(&plain, 4).unwrap();
        assert!(!shm::inspect(&plain).unwrap().spsc);
        let err = Receiver::<u64>::with(&plain, &Options::new().spsc(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);

        let target = Name::new("spsc-mode-signal");
        let err = shm::signal::Target::with(&target, &spsc(4)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        let mailbox = Name::new("spsc-mode-mailbox");
        let err = shm::Mailbox::<u64>::with(&mailbox, &spsc(4)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let _mb = shm::Mailbox::<u64>::with(&mailbox, &Options::new().capacity(4).create_new(true))
            .unwrap();
        let raw = Raw::map(&mailbox);
        // The kind word (offset 12) with the mode's flag.
        raw.word32(12).fetch_or(1 << 8, Ordering::SeqCst);
        let err = shm::Mailbox::<u64>::open(&mailbox).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);

        // The light-fence flag without the mode's is refused as corrupt.
        let odd = Name::new("spsc-mode-light");
        let _tx = Sender::<u64>::create(&odd, 4).unwrap();
        Raw::map(&odd)
            .word32(12)
            .fetch_or(LIGHT_FLAG, Ordering::SeqCst);
        let err = Receiver::<u64>::open(&odd).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("kind 513"), "{err}");
    });
}

/// A single-producer channel's fences are chosen when it is created
/// (`Options::asymmetric_fences`), reported by `shm::inspect`, and checked when an opener
/// asks; asking for asymmetric fences where there are none to have is refused before
/// anything is created.
#[test]
fn fence_checks() {
    watchdog(|| {
        let fenced = Name::new("spsc-fences-seqcst");
        let tx = Sender::<u64>::with(&fenced, &spsc(4).asymmetric_fences(false)).unwrap();
        assert!(!light(&fenced));
        assert!(!shm::inspect(&fenced).unwrap().asymmetric_fences);
        let err =
            Receiver::<u64>::with(&fenced, &Options::new().asymmetric_fences(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("fence mismatch"), "{err}");
        let rx = Receiver::<u64>::with(&fenced, &Options::new().asymmetric_fences(false)).unwrap();
        tx.send(5).unwrap();
        assert_eq!(rx.recv_timeout(STEP), Ok(5));

        // Unset: asymmetric wherever this process can issue the heavy fence.
        let default = Name::new("spsc-fences-default");
        let _tx = Sender::<u64>::with(&default, &spsc(4)).unwrap();
        let available = light(&default);
        assert_eq!(shm::inspect(&default).unwrap().asymmetric_fences, available);
        let asked = Name::new("spsc-fences-asked");
        match Sender::<u64>::with(&asked, &spsc(4).asymmetric_fences(true)) {
            Ok(_tx) => {
                assert!(available);
                assert!(light(&asked));
            }
            Err(err) => {
                assert!(!available, "{err}");
                assert_eq!(err.kind(), ErrorKind::Unsupported);
                assert!(err.to_string().contains("membarrier"), "{err}");
                let gone = Receiver::<u64>::open(&asked).unwrap_err();
                assert_eq!(gone.kind(), ErrorKind::NotFound);
            }
        }

        // Many-to-many channels, mailboxes and signal targets have SeqCst fences only.
        let plain = Name::new("spsc-fences-plain");
        let create = Options::new().capacity(4).create_new(true);
        let err = Sender::<u64>::with(&plain, &create.clone().asymmetric_fences(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            Receiver::<u64>::open(&plain).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let _tx = Sender::<u64>::with(&plain, &create.clone().asymmetric_fences(false)).unwrap();
        let err =
            Receiver::<u64>::with(&plain, &Options::new().asymmetric_fences(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        let mailbox = Name::new("spsc-fences-mailbox");
        let err = shm::Mailbox::<u64>::with(&mailbox, &create.clone().asymmetric_fences(true))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let target = Name::new("spsc-fences-signal");
        let err = shm::signal::Target::with(&target, &create.asymmetric_fences(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    });
}

/// The light-fence flag of a channel's kind word (see `shm::asym`): set when the
/// creating process can issue `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`.
const LIGHT_FLAG: u32 = 1 << 9;

/// Whether `name` was created with light fences (the kind word, at offset 12).
fn light(name: &str) -> bool {
    Raw::map(name).word32(12).load(Ordering::SeqCst) & LIGHT_FLAG != 0
}

/// A process that cannot use `membarrier` (`CONDUIT_NO_MEMBARRIER`, as a seccomp filter
/// or an old kernel would make it) is refused, with `Unsupported` naming the cause, a
/// channel created with light fences, whose waiters must issue heavy ones; the channel
/// and its queued message are untouched. The channels it creates itself use SeqCst
/// fences, and work with a peer that can use `membarrier` (a ping-pong, with blocking
/// waits on both sides).
#[test]
fn a_process_without_membarrier() {
    watchdog(|| {
        const NO: &[(&str, &str)] = &[("CONDUIT_NO_MEMBARRIER", "1")];
        let name = Name::new("spsc-light");
        let tx = Sender::<u64>::with(&name, &spsc(4)).unwrap();
        tx.send(7).unwrap();
        let child = Proc::spawn_env("open_receiver", &[("name", &name)], NO);
        let line = child.line(STEP).expect("the child said nothing");
        if light(&name) {
            assert!(line.starts_with("refused Unsupported"), "{line}");
            assert!(line.contains("membarrier"), "{line}");
            child.success();
            let rx = Receiver::<u64>::open(&name).unwrap();
            assert_eq!(rx.recv_timeout(STEP), Ok(7));
        } else {
            // This process cannot use membarrier either: nothing is light.
            assert_eq!(line, "opened 7");
            child.success();
        }

        let (ping, pong) = (Name::new("spsc-fenced-ping"), Name::new("spsc-fenced-pong"));
        let child = Proc::spawn_env(
            "echo_creating",
            &[("name", &ping), ("reply", &pong), ("n", "500")],
            NO,
        );
        child.expect("created");
        assert!(!light(&ping) && !light(&pong));
        let tx = Sender::<u64>::open(&ping).unwrap();
        let rx = Receiver::<u64>::open(&pong).unwrap();
        for i in 0..500 {
            tx.send(i).unwrap();
            assert_eq!(rx.recv_timeout(STEP), Ok(i + 1));
        }
        child.success();
    });
}

/// Threads of one handle family take turns: four threads sending through clones of
/// the one sender and three receiving through clones of the one receiver (all in this
/// process), over an 8-slot ring, deliver every message exactly once, in order per
/// sending thread.
#[test]
fn threads_of_one_family_take_turns() {
    watchdog(|| {
        let name = Name::new("spsc-threads");
        let tx = Sender::<[u64; 2]>::with(&name, &spsc(8)).unwrap();
        let rx = Receiver::<[u64; 2]>::open(&name).unwrap();
        const PER: u64 = 5_000;
        let senders: Vec<_> = (0..4u64)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        if i % 2 == 0 {
                            tx.send([t, i]).unwrap();
                        } else {
                            futures::executor::block_on(tx.send_async([t, i])).unwrap();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let receivers: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Ok(m) = rx.recv() {
                        got.push(m);
                    }
                    got
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        let mut seen = vec![Vec::new(); 4];
        for r in receivers {
            let mut last = [None; 4];
            for [t, i] in r.join().unwrap() {
                let t = t as usize;
                assert!(
                    last[t].is_none_or(|l| l < i),
                    "thread {t}: {i} after {last:?}"
                );
                last[t] = Some(i);
                seen[t].push(i);
            }
        }
        for (t, mut got) in seen.into_iter().enumerate() {
            got.sort_unstable();
            let received = got.len();
            got.dedup();
            let missing: Vec<u64> = (0..PER).filter(|i| got.binary_search(i).is_err()).collect();
            assert!(
                received == got.len() && missing.is_empty(),
                "thread {t}: {} duplicated, missing {missing:?}",
                received - got.len()
            );
        }
    });
}
