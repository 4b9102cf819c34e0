//! Shared-memory mailboxes (`shm::Mailbox`, `shm::ByteMailbox`): selective receive
//! against the reference model, exactly-once delivery with disjoint and overlapping
//! selections in threads and in real processes, FIFO per sender, close, `kill -9` of
//! senders, receivers and a lock holder, hostile memory, and open errors.
#![cfg(all(unix, target_pointer_width = "64"))]

mod mailbox_model;
mod shm_support;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use conduit::mailbox::{Address, Select};
use conduit::shm::{self, ByteMailbox, Mailbox, Options};
use conduit::{RecvError, RecvTimeoutError, TryRecvError, TrySendError};
use shm_support::*;

/// A generous bound for one blocking step inside a test (the watchdog bounds the rest).
const STEP: Duration = Duration::from_secs(20);

/// The message of the process tests: (producer, sequence number).
type Msg = [u64; 2];

/// Offsets of the documented layout for a `Mailbox<[u64; 2]>` (slots of 128 bytes: 80
/// bytes of control words, the 16-byte payload, padded to a power of two), checked
/// against the file's size by [`Layout::of`].
struct Layout {
    cap: usize,
}

const SLOT_SIZE: usize = 128;
/// The header's `max_bytes` word.
const HEADER_MAX_BYTES: usize = 96;
const S_LEN: usize = 8;
const S_STATE: usize = 12;
const S_SEQ: usize = 16;
const S_TAG: usize = 24;
const S_FROM_ID: usize = 32;
const S_FROM_PID: usize = 40;
const S_PAYLOAD: usize = 80;

impl Layout {
    fn of(raw: &Raw, cap: usize) -> Layout {
        let l = Layout { cap };
        assert_eq!(raw.len(), l.index() + 128 + cap * 48, "layout changed");
        l
    }
    fn slot(&self, i: usize) -> usize {
        SLOTS + i * SLOT_SIZE
    }
    fn index(&self) -> usize {
        SLOTS + self.cap * SLOT_SIZE
    }
}

/// The lock word naming peer slot `n` of `raw`, in its current generation.
fn owner_word(raw: &Raw, n: usize) -> u32 {
    let generation = (raw.word(PEER_STATES + 8 * n).load(Ordering::SeqCst) >> 32) as u32;
    ((generation & 0xff_ffff) << 7) | (n as u32 + 1)
}

fn parse_select(s: &str) -> Select {
    let (kind, n) = s.split_once(':').unwrap_or((s, "0"));
    let n: u64 = n.parse().unwrap();
    match kind {
        "any" => Select::Any,
        "tag" => Select::Tag(n),
        "atmost" => Select::TagAtMost(n),
        "except" => Select::TagExcept(n),
        other => panic!("bad selection {other}"),
    }
}

/// Every child process starts here and dispatches on its role.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let name = arg("name");
    match role.as_str() {
        "produce" => {
            // Sends n messages [id, i], tagged i % tags.
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            let (p, tags) = (num("id"), num("tags"));
            say(format!("address {}.{}", std::process::id(), p));
            for i in 0..num("n") {
                mb.send_tagged(i % tags, [p, i]).unwrap();
            }
            say("sent");
        }
        "consume" => {
            // Receives with one selection until the mailbox is closed and drained.
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            let sel = parse_select(&arg("sel"));
            let mut got = Vec::new();
            while let Ok(env) = mb.recv_select(sel.clone()) {
                let [p, i] = *env.body();
                assert!(env.from().pid().is_some());
                got.push(format!("{p}:{i}:{}", env.tag()));
            }
            say(format!("got {}", got.join(",")));
        }
        "send_forever" => {
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            for i in 0.. {
                mb.send([7, i]).unwrap();
            }
        }
        "recv_forever" => {
            // Reports every message it took, one line each, until killed.
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            say("ready");
            loop {
                let [p, i] = *mb.recv().unwrap().body();
                say(format!("took {p}:{i}"));
            }
        }
        "hold_lock" | "hold_lock_bytes" => {
            // Dies holding the lock, in the middle of a send that has marked its slot
            // queued (slot 7, not linked anywhere), as a real sender would between
            // marking and linking. `hold_lock_bytes`: in a byte mailbox of 16-byte
            // messages (the same slots), a 10-byte message, not added to the bytes
            // queued either.
            let bytes = role == "hold_lock_bytes";
            let mb: Box<dyn std::any::Any> = if bytes {
                Box::new(ByteMailbox::open(&name).unwrap())
            } else {
                Box::new(Mailbox::<Msg>::open(&name).unwrap())
            };
            let raw = Raw::map(&name);
            let l = Layout::of(&raw, 8);
            let me = raw.my_peer_slot(1);
            let lock = raw.word32(l.index());
            assert_eq!(
                lock.compare_exchange(0, owner_word(&raw, me), Ordering::SeqCst, Ordering::SeqCst),
                Ok(0)
            );
            let s = l.slot(7);
            raw.word(s + S_PAYLOAD).store(9, Ordering::Relaxed);
            raw.word(s + S_PAYLOAD + 8).store(9, Ordering::Relaxed);
            raw.word(s + S_SEQ).store(1 << 40, Ordering::Relaxed);
            raw.word(s + S_TAG).store(5, Ordering::Relaxed);
            raw.word(s + S_FROM_ID).store(424242, Ordering::Relaxed);
            raw.word32(s + S_FROM_PID)
                .store(std::process::id(), Ordering::Relaxed);
            if bytes {
                raw.word32(s + S_LEN).store(10, Ordering::Relaxed);
            }
            raw.word32(s + S_STATE).store(1, Ordering::Relaxed);
            say("locked");
            // Alive and attached (its handle kept) until killed.
            let _keep = mb;
            hang();
        }
        "scribble" => {
            // Writes random words over the lock, the index and the slots' control words
            // for `ms` milliseconds.
            let raw = Raw::map(&name);
            let l = Layout::of(&raw, 16);
            let mut rng = mailbox_model::Rng(num("seed") | 1);
            let end = Instant::now() + Duration::from_millis(num("ms"));
            say("scribbling");
            while Instant::now() < end {
                let v = match rng.below(4) {
                    0 => rng.next(),
                    1 => rng.below(20),
                    2 => u64::MAX,
                    _ => rng.below(20) | (rng.below(20) << 32),
                };
                let o = if rng.below(2) == 0 {
                    l.index() + 8 * rng.below(((raw.len() - l.index()) / 8) as u64) as usize
                } else {
                    l.slot(rng.below(16) as usize) + 8 + 8 * rng.below(8) as usize
                };
                raw.word(o).store(v, Ordering::Relaxed);
            }
            say("done");
        }
        "serve" => {
            // Answers n requests with body + 1 (tag-selective: only tag 1).
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            let _ = mb.try_recv_select(Select::Tag(u64::MAX)); // attach as a receiver
            say("ready");
            for _ in 0..num("n") {
                let mut env = mb.recv_select(Select::Tag(1)).unwrap();
                let [a, b] = *env.body();
                env.take_reply::<Msg>().unwrap().reply([a, b + 1]).unwrap();
            }
        }
        "take_request_and_hang" => {
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            let _ = mb.try_recv_select(Select::Tag(u64::MAX));
            say("ready");
            let env = mb.recv().unwrap();
            assert!(env.is_request());
            say("taken");
            let _keep = (mb, env);
            hang();
        }
        "request_and_hang" => {
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            say("requesting");
            let _ = mb.request([1, 1]);
            hang();
        }
        "churn" => {
            // Sends and receives as fast as it can, with every selection, until killed:
            // most of its time is spent holding the lock.
            let mb = Mailbox::<Msg>::open(&name).unwrap();
            let me = num("id");
            say("running");
            for i in 0u64.. {
                let _ = mb.try_send_tagged(i % 3, [me, i]);
                let sel = match i % 4 {
                    0 => Select::Any,
                    1 => Select::Tag(i % 3),
                    2 => Select::TagAtMost(1),
                    _ => Select::TagExcept(0),
                };
                let _ = mb.try_recv_select(sel);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

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

/// Random sends (three handle families, five tags) and selective `try_recv`s against the
/// SysV reference model, for typed mailboxes of several capacities.
#[test]
fn selective_receive_matches_sysv_model() {
    watchdog(|| {
        for seed in 1..=12u64 {
            let cap = [4usize, 8, 64][(seed % 3) as usize];
            let name = Name::new("mb-model");
            let opts = Options::new().create(true).capacity(cap);
            let handles: Vec<Mailbox<u32>> = (0..3)
                .map(|_| Mailbox::with(&name, &opts).unwrap())
                .collect();
            mailbox_model::run_against_model(seed, cap, &handles, 1500);
        }
    });
}

/// The same for byte mailboxes, whose bodies here are at least 4 bytes long (so the
/// model's body number survives the round trip).
#[test]
fn byte_selective_receive_matches_sysv_model() {
    struct Long(ByteMailbox);
    impl mailbox_model::Target for Long {
        fn address(&self) -> Address {
            self.0.address().clone()
        }
        fn try_send_tagged(&self, tag: u64, body: u32) -> Result<(), TrySendError<u32>> {
            let bytes = body.to_le_bytes().repeat(1 + body as usize % 3);
            match self.0.try_send_tagged(tag, &bytes) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    Err(TrySendError::Full(body))
                }
                Err(e) => panic!("{e}"),
            }
        }
        fn try_recv_select(&self, sel: Select) -> Result<(u64, Address, u32), TryRecvError> {
            let env = self.0.try_recv_select(sel)?;
            let body = u32::from_le_bytes(env.body()[..4].try_into().unwrap());
            assert_eq!(
                env.body(),
                &body.to_le_bytes().repeat(1 + body as usize % 3)
            );
            Ok((env.tag(), env.from().clone(), body))
        }
        fn len(&self) -> usize {
            self.0.len()
        }
    }
    watchdog(|| {
        for seed in 1..=6u64 {
            let name = Name::new("bmb-model");
            let opts = Options::new().create(true).capacity(8).max_message(12);
            let handles: Vec<Long> = (0..3)
                .map(|_| Long(ByteMailbox::with(&name, &opts).unwrap()))
                .collect();
            mailbox_model::run_against_model(seed, 8, &handles, 1500);
        }
    });
}

/// Receivers in threads, each its own handle family, with the given selections, while
/// four sender families send 2000 messages each over tags 0..4; then close. Every
/// message arrives exactly once, each sender's in order within each receiver.
fn threads_exactly_once(sels: Vec<Select>) {
    let name = Name::new("mb-threads");
    let mb = Mailbox::<Msg>::with(&name, &Options::new().create_new(true).capacity(32)).unwrap();
    let receivers: Vec<_> = sels
        .iter()
        .cloned()
        .map(|sel| {
            let rx = Mailbox::<Msg>::open(&name).unwrap();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(env) = rx.recv_select(sel.clone()) {
                    got.push((env.tag(), *env.body()));
                }
                got
            })
        })
        .collect();
    let senders: Vec<_> = (0..4u64)
        .map(|p| {
            let tx = Mailbox::<Msg>::open(&name).unwrap();
            thread::spawn(move || {
                for i in 0..2000u64 {
                    tx.send_tagged(i % 4, [p, i]).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    // Drain what no selection takes, then close: receivers drain and stop.
    let deadline = Instant::now() + STEP;
    while !mb.is_empty() && Instant::now() < deadline {
        thread::yield_now();
    }
    mb.close().unwrap();
    let mut seen = HashSet::new();
    for (r, sel) in receivers.into_iter().zip(sels) {
        let got = r.join().unwrap();
        // FIFO per sender; for `TagAtMost`, which takes lower tags first, per sender
        // within each tag.
        let by_tag = matches!(sel, Select::TagAtMost(_));
        let mut last: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for (tag, [p, i]) in got {
            assert_eq!(tag, i % 4);
            assert!(seen.insert((p, i)), "{p}:{i} received twice");
            let key = (p, if by_tag { tag } else { 0 });
            if let Some(&prev) = last.get(&key) {
                assert!(prev < i, "sender {p}: {i} after {prev} ({sel:?})");
            }
            last.insert(key, i);
        }
    }
    assert_eq!(seen.len(), 4 * 2000);
}

#[test]
fn disjoint_selections_exactly_once_in_threads() {
    watchdog(|| threads_exactly_once((0..4).map(Select::Tag).collect()));
}

#[test]
fn overlapping_selections_exactly_once_in_threads() {
    watchdog(|| {
        threads_exactly_once(vec![
            Select::Any,
            Select::Tag(1),
            Select::TagAtMost(2),
            Select::TagExcept(0),
            Select::Tag(3),
        ])
    });
}

/// Two producer processes, three consumer processes with overlapping selections (one of
/// them takes everything, so nothing is left over): every message exactly once, each
/// producer's in order within each consumer, envelopes naming the producer's process.
#[test]
fn many_to_many_across_processes() {
    watchdog(|| {
        let name = Name::new("mb-procs");
        let mb = Mailbox::<Msg>::create(&name, 16).unwrap();
        let n = 3000u64;
        let consumers: Vec<Proc> = ["tag:1", "except:1", "any"]
            .iter()
            .map(|sel| Proc::spawn("consume", &[("name", &name), ("sel", sel)]))
            .collect();
        let producers: Vec<Proc> = (0..2u64)
            .map(|p| {
                Proc::spawn(
                    "produce",
                    &[
                        ("name", &name),
                        ("id", &p.to_string()),
                        ("n", &n.to_string()),
                        ("tags", "3"),
                    ],
                )
            })
            .collect();
        let pids: Vec<u32> = producers.iter().map(Proc::pid).collect();
        for p in producers {
            let lines = p.success();
            assert!(lines.iter().any(|l| l == "sent"), "{lines:?}");
        }
        let deadline = Instant::now() + STEP;
        while !mb.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        mb.close().unwrap();
        let mut seen = HashSet::new();
        for (c, sel) in consumers.into_iter().zip(["tag:1", "except:1", "any"]) {
            let lines = c.success();
            let got = lines
                .iter()
                .find_map(|l| l.strip_prefix("got "))
                .expect("consumer report");
            let mut last = BTreeMap::new();
            for item in got.split(',').filter(|s| !s.is_empty()) {
                let v: Vec<u64> = item.split(':').map(|x| x.parse().unwrap()).collect();
                let (p, i, tag) = (v[0], v[1], v[2]);
                assert_eq!(tag, i % 3);
                match sel {
                    "tag:1" => assert_eq!(tag, 1),
                    "except:1" => assert_ne!(tag, 1),
                    _ => {}
                }
                assert!(seen.insert((p, i)), "{p}:{i} twice");
                if let Some(&prev) = last.get(&p) {
                    assert!(prev < i, "producer {p}: {i} after {prev} ({sel})");
                }
                last.insert(p, i);
            }
        }
        assert_eq!(seen.len() as u64, 2 * n);
        assert_eq!(pids.len(), 2);
    });
}

/// The envelope names the sending process: its pid and its handle family.
#[test]
fn envelope_names_the_sending_process() {
    watchdog(|| {
        let name = Name::new("mb-from");
        let mb = Mailbox::<Msg>::create(&name, 4).unwrap();
        let p = Proc::spawn(
            "produce",
            &[("name", &name), ("id", "3"), ("n", "2"), ("tags", "1")],
        );
        let pid = p.pid();
        p.success();
        let a = mb.recv_timeout(STEP).unwrap();
        let b = mb.recv_timeout(STEP).unwrap();
        assert_eq!(a.from().pid(), Some(pid));
        assert_eq!(a.from(), b.from());
        assert_ne!(a.from(), mb.address());
        assert_eq!(a.from().mailbox(), &*name);
        // Selecting by that address takes its messages.
        mb.send([0, 0]).unwrap();
        let from = Select::From(a.from().clone());
        assert_eq!(mb.try_recv_select(from).unwrap_err(), TryRecvError::Empty);
        assert_eq!(*mb.recv().unwrap().body(), [0, 0]);
    });
}

/// A sender killed in the middle of a stream of blocking sends: every message it sent
/// is delivered, in order, with no gap; the mailbox is not wedged.
#[test]
fn sender_killed_mid_send_loop() {
    watchdog(|| {
        let name = Name::new("mb-kill-sender");
        let mb = Mailbox::<Msg>::create(&name, 8).unwrap();
        let mut child = Proc::spawn("send_forever", &[("name", &name)]);
        for i in 0..500 {
            assert_eq!(*mb.recv_timeout(STEP).unwrap().body(), [7, i]);
        }
        child.kill9();
        let mut next = 500;
        while let Ok(env) = mb.try_recv() {
            assert_eq!(*env.body(), [7, next]);
            next += 1;
        }
        // Room again, and nothing stuck.
        for i in 0..8 {
            mb.send_timeout([1, i], STEP).unwrap();
        }
        for i in 0..8 {
            assert_eq!(*mb.recv_timeout(STEP).unwrap().body(), [1, i]);
        }
    });
}

/// A receiver killed in the middle of a stream of receives: no message is received
/// twice, at most the one it was taking when killed is lost, and the survivor takes the
/// rest.
#[test]
fn receiver_killed_mid_receive_loop() {
    watchdog(|| {
        let name = Name::new("mb-kill-recv");
        let mb = Mailbox::<Msg>::create(&name, 8).unwrap();
        let mut child = Proc::spawn("recv_forever", &[("name", &name)]);
        child.expect("ready");
        let n = 2000u64;
        for i in 0..n / 2 {
            mb.send_timeout([0, i], STEP).unwrap();
        }
        child.kill9();
        // The survivor receives from now on (making room for the rest).
        let mut mine = Vec::new();
        for i in n / 2..n {
            while let Err(TrySendError::Full(_)) = mb.try_send([0, i]) {
                mine.push(*mb.recv_timeout(STEP).unwrap().body());
            }
        }
        while let Ok(env) = mb.try_recv() {
            mine.push(*env.body());
        }
        let mut taken = HashSet::new();
        while let Some(l) = child.line(Duration::from_secs(1)) {
            let i: u64 = l.strip_prefix("took 0:").unwrap().parse().unwrap();
            assert!(taken.insert(i));
        }
        let mut last = None;
        for [_, i] in mine {
            assert!(taken.insert(i), "{i} received twice");
            assert!(last < Some(i));
            last = Some(i);
        }
        assert!(
            taken.len() as u64 >= n - 1,
            "lost {}",
            n - taken.len() as u64
        );
    });
}

/// A process killed while holding the lock, half-way through a send that had marked its
/// slot queued: a survivor takes the lock over, rebuilds the index, and delivers every
/// message, the dead sender's included.
#[test]
fn lock_holder_killed() {
    watchdog(|| {
        let name = Name::new("mb-kill-holder");
        let mb = Mailbox::<Msg>::create(&name, 8).unwrap();
        for i in 0..3 {
            mb.send_tagged(1, [0, i]).unwrap();
        }
        let mut child = Proc::spawn("hold_lock", &[("name", &name)]);
        child.expect("locked");
        assert_eq!(mb.try_recv().unwrap_err(), TryRecvError::Empty, "locked");
        let pid = child.pid();
        child.kill9();
        for i in 0..3 {
            let env = mb.recv_timeout(STEP).unwrap();
            assert_eq!((env.tag(), *env.body()), (1, [0, i]));
        }
        let env = mb.recv_timeout(STEP).unwrap();
        assert_eq!((env.tag(), *env.body()), (5, [9, 9]));
        assert_eq!(env.from().pid(), Some(pid));
        // The index is whole again: every slot usable.
        for i in 0..8 {
            mb.try_send_tagged(i % 3, [2, i]).unwrap();
        }
        assert_eq!(mb.try_send([3, 3]), Err(TrySendError::Full([3, 3])));
        for i in 0..8 {
            let env = mb.try_recv().unwrap();
            assert_eq!(*env.body(), [2, i]);
        }
    });
}

/// As [`lock_holder_killed`], in a byte mailbox bounded by bytes: the dead sender's
/// message, marked queued but not counted, counts after the rebuild (the bytes queued
/// are summed again from the slots), so the bound holds exactly.
#[test]
fn lock_holder_killed_bytes_recounted() {
    watchdog(|| {
        let name = Name::new("mb-kill-holder-bytes");
        let opts = Options::new()
            .create_new(true)
            .capacity(8)
            .max_message(16)
            .max_bytes(40);
        let mb = ByteMailbox::with(&name, &opts).unwrap();
        for i in 0..3 {
            mb.send(&[i; 10]).unwrap();
        }
        let mut child = Proc::spawn("hold_lock_bytes", &[("name", &name)]);
        child.expect("locked");
        child.kill9();
        // Takes the lock over and rebuilds: 40 bytes queued, 30 once one is taken.
        assert_eq!(mb.recv_timeout(STEP).unwrap().into_body(), [0; 10]);
        assert_eq!(shm::inspect(&name).unwrap().queued_bytes, 30);
        let full = mb.try_send(&[9; 11]).unwrap_err();
        assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock);
        mb.try_send(&[3; 10]).unwrap();
        let mut got = Vec::new();
        while let Ok(env) = mb.try_recv() {
            got.push(env.into_body());
        }
        let dead = [9, 0, 0, 0, 0, 0, 0, 0, 9, 0].to_vec();
        assert_eq!(got, [vec![1; 10], vec![2; 10], dead, vec![3; 10]]);
        assert_eq!(shm::inspect(&name).unwrap().queued_bytes, 0);
        mb.close().unwrap();
    });
}

/// A byte mailbox bounded by bytes (`Options::max_bytes`): a send that would take the
/// bytes queued over the bound finds it full even with slots free, until a receive
/// frees bytes; a message longer than the bound is refused at once.
#[test]
fn byte_bound_try_send() {
    use std::io::ErrorKind;
    watchdog(|| {
        let name = Name::new("mb-bytes-bound");
        let opts = Options::new()
            .create_new(true)
            .capacity(8)
            .max_message(64)
            .max_bytes(100);
        let mb = ByteMailbox::with(&name, &opts).unwrap();
        assert_eq!(mb.max_bytes(), 100);
        mb.try_send(&[1; 60]).unwrap();
        mb.try_send(&[2; 40]).unwrap();
        // 100 bytes queued, 2 of 8 slots used.
        assert_eq!(
            mb.try_send(&[3; 1]).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        mb.try_send(&[]).unwrap();
        let err = mb.send_timeout(&[3; 1], Duration::ZERO).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        let info = shm::inspect(&name).unwrap();
        assert_eq!(
            (info.queued, info.queued_bytes, info.max_bytes),
            (3, 100, 100)
        );
        assert_eq!(mb.try_recv().unwrap().into_body(), [1; 60]);
        // 60 bytes free now: 61 do not fit, 60 do.
        assert_eq!(
            mb.try_send(&[4; 61]).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        mb.try_send(&[4; 60]).unwrap();
        assert_eq!(
            mb.try_send(&[5; 1]).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        // Requests count while queued, like messages.
        assert!(mb.request_timeout(&[6; 1], Duration::ZERO).is_err());
        assert_eq!(shm::inspect(&name).unwrap().queued, 3);
        // Longer than max_bytes (not max_message): never fits.
        let small = Name::new("mb-bytes-small");
        let opts = Options::new()
            .create_new(true)
            .max_message(64)
            .max_bytes(10);
        let tiny = ByteMailbox::with(&small, &opts).unwrap();
        let err = tiny.try_send(&[0; 11]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("max_bytes"), "{err}");
        assert_eq!(
            tiny.send(&[0; 11]).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        tiny.send(&[0; 10]).unwrap();
        tiny.close().unwrap();
        mb.close().unwrap();
    });
}

/// A send blocked because the bytes queued would go over the bound (slots are free) is
/// woken by the receive that frees enough of them.
#[test]
fn byte_bound_blocked_send_woken_by_receive() {
    watchdog(|| {
        let name = Name::new("mb-bytes-wake");
        let opts = Options::new()
            .create_new(true)
            .capacity(8)
            .max_message(64)
            .max_bytes(64);
        let mb = ByteMailbox::with(&name, &opts).unwrap();
        mb.send(&[1; 50]).unwrap();
        let tx = mb.clone();
        let sender = thread::spawn(move || tx.send_tagged(2, &[2; 50]));
        // Until the sender sleeps on the senders' words.
        while shm::inspect(&name).unwrap().send_waiters.0 == 0 {
            thread::yield_now();
        }
        assert_eq!(mb.recv().unwrap().into_body(), [1; 50]);
        sender.join().unwrap().unwrap();
        let env = mb.recv_timeout(STEP).unwrap();
        assert_eq!((env.tag(), env.into_body()), (2, vec![2; 50]));
        mb.close().unwrap();
    });
}

/// The byte bound is fixed by the creator, checked on open, and a hostile value in the
/// header is refused.
#[test]
fn byte_bound_open_checks() {
    use std::io::ErrorKind;
    watchdog(|| {
        let name = Name::new("mb-bytes-open");
        let opts = Options::new()
            .create_new(true)
            .capacity(4)
            .max_message(16)
            .max_bytes(50);
        let mb = ByteMailbox::with(&name, &opts).unwrap();
        // Unchecked when not asked; the creator's bound either way.
        assert_eq!(ByteMailbox::open(&name).unwrap().max_bytes(), 50);
        let same = ByteMailbox::with(&name, &Options::new().max_bytes(50)).unwrap();
        assert_eq!(same.max_bytes(), 50);
        let err = ByteMailbox::with(&name, &Options::new().max_bytes(51)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("max_bytes mismatch"), "{err}");
        // Clamped to capacity × max_message, as when creating.
        let big = Name::new("mb-bytes-open-big");
        let opts = Options::new().create_new(true).capacity(4).max_message(16);
        let dflt = ByteMailbox::with(&big, &opts.clone().max_bytes(1 << 40)).unwrap();
        assert_eq!(dflt.max_bytes(), 64);
        assert_eq!(
            ByteMailbox::with(&big, &Options::new().max_bytes(64))
                .unwrap()
                .max_bytes(),
            64
        );
        let zero = Options::new().create(true).max_bytes(0);
        assert_eq!(
            ByteMailbox::with(&Name::new("mb-bytes-zero"), &zero)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        // A hostile bound in the header (beyond capacity × max_message).
        let raw = Raw::map(&name);
        raw.word(HEADER_MAX_BYTES)
            .store(u64::MAX, Ordering::Relaxed);
        let err = ByteMailbox::open(&name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("max_bytes"), "{err}");
        let info = shm::inspect(&name).unwrap();
        assert!(!info.is_valid());
        raw.word(HEADER_MAX_BYTES).store(50, Ordering::Relaxed);
        drop((same, dflt));
        mb.close().unwrap();
    });
}

/// A hostile process writes random words over the lock, the index and the slots'
/// control words while this one sends and receives with every selection: operations
/// fail or lose messages, but nothing panics, hangs or reads out of bounds.
#[test]
fn hostile_scribbler() {
    watchdog(|| {
        for seed in 1..=3u64 {
            let name = Name::new("mb-hostile");
            let mb = Mailbox::<Msg>::create(&name, 16).unwrap();
            let other = Mailbox::<Msg>::open(&name).unwrap();
            let child = Proc::spawn(
                "scribble",
                &[("name", &name), ("seed", &seed.to_string()), ("ms", "1500")],
            );
            child.expect("scribbling");
            let short = Duration::from_millis(2);
            let mut i = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1500) {
                i += 1;
                let h = if i.is_multiple_of(2) { &mb } else { &other };
                let sel = match i % 6 {
                    0 => Select::Any,
                    1 => Select::Tag(i % 4),
                    2 => Select::TagAtMost(i % 4),
                    3 => Select::TagExcept(i % 4),
                    4 => Select::From(other.address().clone()),
                    _ => Select::Any,
                };
                let _ = h.try_send_tagged(i % 4, [i, i]);
                let _ = h.send_tagged_timeout(i % 5, [i, 0], short);
                let _ = h.try_recv_select(sel.clone());
                let _ = h.recv_select_timeout(sel, short);
                let _ = h.len();
            }
            child.success();
        }
    });
}

/// Close: sends fail with the message handed back, receivers (blocked ones included)
/// drain what their selection takes and then get `Disconnected`; the name is gone and a
/// new mailbox can take it.
#[test]
fn close_drains_then_disconnects() {
    watchdog(|| {
        let name = Name::new("mb-close");
        let mb = Mailbox::<u32>::create(&name, 8).unwrap();
        let waiter = Mailbox::<u32>::open(&name).unwrap();
        let blocked = thread::spawn(move || waiter.recv_select(Select::Tag(9)));
        mb.send_tagged(1, 10).unwrap();
        mb.send_tagged(2, 20).unwrap();
        mb.close().unwrap();
        assert_eq!(blocked.join().unwrap().unwrap_err(), RecvError);
        assert_eq!(mb.send(3).unwrap_err().0, 3);
        assert_eq!(mb.try_send(4), Err(TrySendError::Disconnected(4)));
        assert_eq!(
            mb.try_recv_select(Select::Tag(3)).unwrap_err(),
            TryRecvError::Disconnected
        );
        assert_eq!(*mb.recv_select(Select::Tag(2)).unwrap().body(), 20);
        assert_eq!(*mb.recv().unwrap().body(), 10);
        assert_eq!(
            mb.recv_timeout(STEP).unwrap_err(),
            RecvTimeoutError::Disconnected
        );
        assert_eq!(
            futures::executor::block_on(mb.recv_async()).unwrap_err(),
            RecvError
        );
        assert_eq!(
            Mailbox::<u32>::open(&name).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        let fresh = Mailbox::<u32>::create(&name, 8).unwrap();
        assert!(!fresh.is_closed() && fresh.is_empty());
    });
}

/// Async receivers with different selections, woken by sends from another thread.
#[test]
fn async_selective_receivers() {
    watchdog(|| {
        let name = Name::new("mb-async");
        let mb = Mailbox::<u32>::create(&name, 8).unwrap();
        let tx = Mailbox::<u32>::open(&name).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = mb.recv_select_async(Select::Tag(1));
            let b = mb.recv_select_async(Select::Tag(2));
            let sender = thread::spawn(move || {
                tx.send_tagged(2, 20).unwrap();
                tx.send_tagged(1, 10).unwrap();
            });
            let (a, b) = futures::join!(a, b);
            sender.join().unwrap();
            assert_eq!(*a.unwrap().body(), 10);
            assert_eq!(*b.unwrap().body(), 20);
        });
    });
}

/// Receivers by tag wait past other tags' messages (`mailbox_model::past_other_tags`),
/// then an async receiver is woken by a send from another thread.
#[test]
fn selective_receivers_wait_past_other_tags() {
    watchdog(|| {
        let name = Name::new("mb-past-tags");
        let mb = Mailbox::<u32>::create(&name, 8).unwrap();
        let peer = Mailbox::<u32>::open(&name).unwrap();
        mailbox_model::past_other_tags(&mb, peer, |mb, peer| {
            let sender = thread::spawn(move || peer.send_tagged(8, 80).unwrap());
            let env = futures::executor::block_on(mb.recv_select_async(Select::Tag(8)));
            assert_eq!(*env.unwrap().body(), 80);
            sender.join().unwrap();
        });
    });
}

/// Open errors: another type, another kind (a channel's name, a byte mailbox), another
/// `max_message`, bad names, a missing name, an existing name on `create`.
#[test]
fn open_errors() {
    use std::io::ErrorKind;
    watchdog(|| {
        let name = Name::new("mb-errors");
        let mb = Mailbox::<u32>::create(&name, 4).unwrap();
        let err = Mailbox::<u64>::open(&name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("type mismatch"), "{err}");
        let err = Mailbox::<i32>::open(&name).unwrap_err();
        assert!(err.to_string().contains("type mismatch"), "{err}");
        let err = ByteMailbox::open(&name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains("typed mailbox"), "{err}");
        let err = shm::Receiver::<u32>::open(&name).unwrap_err();
        assert!(err.to_string().contains("kind mismatch"), "{err}");
        assert_eq!(
            Mailbox::<u32>::create(&name, 4).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        let chan = Name::new("mb-errors-chan");
        let _rx = shm::Receiver::<u32>::create(&chan, 4).unwrap();
        let err = Mailbox::<u32>::open(&chan).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains("segment is a typed channel, expected a typed mailbox"),
            "{err}"
        );
        let bytes = Name::new("mb-errors-bytes");
        let opts = Options::new().create_new(true).max_message(16);
        let _b = ByteMailbox::with(&bytes, &opts).unwrap();
        let err = ByteMailbox::with(&bytes, &Options::new().max_message(17)).unwrap_err();
        assert!(err.to_string().contains("max_message mismatch"), "{err}");
        for bad in ["", "a/b", "..", "sp ace"] {
            assert_eq!(
                Mailbox::<u32>::open(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
        let missing = Name::new("mb-errors-missing");
        assert_eq!(
            Mailbox::<u32>::open(&missing).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        drop(mb);
    });
}

/// `inspect` and `list` see mailboxes by kind.
#[test]
fn inspect_reports_mailboxes() {
    watchdog(|| {
        let name = Name::new("mb-inspect");
        let mb = Mailbox::<u32>::create(&name, 4).unwrap();
        mb.send_tagged(1, 1).unwrap();
        mb.send_tagged(2, 2).unwrap();
        let info = shm::inspect(&name).unwrap();
        assert_eq!(info.kind, Some(shm::ObjectKind::Mailbox));
        assert_eq!(info.queued, 2);
        assert!(info.is_valid(), "{:?}", info.problems);
        let bytes = Name::new("mb-inspect-bytes");
        let _b = ByteMailbox::create(&bytes, 4).unwrap();
        let info = shm::inspect(&bytes).unwrap();
        assert_eq!(info.kind, Some(shm::ObjectKind::ByteMailbox));
        assert!(info.is_valid(), "{:?}", info.problems);
        assert!(shm::list().unwrap().contains(&name.to_string()));
        // With every handle gone, a mailbox is stale like a channel.
        drop(mb);
        assert!(
            shm::find_stale(Duration::ZERO)
                .unwrap()
                .contains(&name.to_string())
        );
    });
}

/// Requests answered by another process: each reply comes back to its requester, with
/// several requester threads at once.
#[test]
fn request_reply_across_processes() {
    watchdog(|| {
        let name = Name::new("mb-rr");
        let mb = Mailbox::<Msg>::create(&name, 8).unwrap();
        assert_eq!(
            mb.request([0, 0]),
            Err(conduit::mailbox::RequestError::NoResponders([0, 0]))
        );
        let server = Proc::spawn("serve", &[("name", &name), ("n", "400")]);
        server.expect("ready");
        let clients: Vec<_> = (0..4u64)
            .map(|c| {
                let mb = Mailbox::<Msg>::open(&name).unwrap();
                thread::spawn(move || {
                    for i in 0..100 {
                        assert_eq!(mb.request_tagged(1, [c, i]), Ok([c, i + 1]));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        server.success();
        assert!(mb.is_empty());
        // Every slot was released: the whole capacity is usable.
        for i in 0..8 {
            mb.try_send([9, i]).unwrap();
        }
    });
}

/// A replier killed while it holds a request: the requester gets `Unanswered` (not a
/// hang), and the slot is released.
#[test]
fn replier_killed_fails_the_request() {
    use conduit::mailbox::RequestError;
    watchdog(|| {
        let name = Name::new("mb-rr-kill");
        let mb = Mailbox::<Msg>::create(&name, 2).unwrap();
        let mut child = Proc::spawn("take_request_and_hang", &[("name", &name)]);
        child.expect("ready");
        let requester = {
            let mb = mb.clone();
            thread::spawn(move || mb.request([5, 5]))
        };
        child.expect("taken");
        child.kill9();
        assert_eq!(requester.join().unwrap(), Err(RequestError::Unanswered));
        mb.try_send([1, 1]).unwrap();
        mb.try_send([1, 2]).unwrap();
    });
}

/// An envelope dropped without answering fails its request at once, and so does a
/// reply capability taken and dropped (after a take of the wrong reply type, which
/// leaves it in the envelope); a reply after the requester gave up is handed back.
#[test]
fn dropped_envelope_and_late_reply() {
    use conduit::mailbox::RequestError;
    watchdog(|| {
        let name = Name::new("mb-rr-drop");
        let mb = Mailbox::<u32>::create(&name, 2).unwrap();
        let server = Mailbox::<u32>::open(&name).unwrap();
        let _ = server.try_recv();
        let t = thread::spawn(move || {
            let env = server.recv().unwrap();
            assert!(env.is_request());
            drop(env);
            let mut env = server.recv().unwrap();
            assert!(env.take_reply::<u64>().is_none());
            assert!(env.is_request());
            let reply = env.take_reply::<u32>().unwrap();
            assert!(!env.is_request());
            drop(reply);
            server
        });
        assert_eq!(mb.request(1), Err(RequestError::Unanswered));
        assert_eq!(mb.request(5), Err(RequestError::Unanswered));
        let server = t.join().unwrap();
        assert_eq!(
            mb.request_timeout(2, Duration::from_millis(20)),
            Err(RequestError::Timeout(None))
        );
        let mut env = server.try_recv().unwrap();
        let reply = env.take_reply::<u32>().unwrap();
        assert!(reply.is_abandoned());
        assert_eq!(reply.reply(3), Err(3));
        mb.try_send(1).unwrap();
        mb.try_send(2).unwrap();
    });
}

/// A request's slot, retired by its requester once it has read the reply (and released
/// lazily, by its family's next send), serves any other sender at once: with capacity
/// 1, another family sends and receives between the exchanges.
#[test]
fn retired_request_slot_serves_other_senders() {
    watchdog(|| {
        let name = Name::new("mb-rr-retired");
        let mb = Mailbox::<u32>::create(&name, 1).unwrap();
        let other = Mailbox::<u32>::open(&name).unwrap();
        let server = Mailbox::<u32>::open(&name).unwrap();
        let _ = server.try_recv_select(Select::Tag(1));
        let t = thread::spawn(move || {
            for _ in 0..3 {
                let mut env = server.recv_select(Select::Tag(1)).unwrap();
                let v = *env.body();
                assert_eq!(env.take_reply::<u32>().unwrap().reply(v + 1), Ok(()));
            }
        });
        for i in 0..3 {
            assert_eq!(mb.request_tagged(1, i), Ok(i + 1));
            other.try_send_tagged(2, 10 + i).unwrap();
            let env = other.try_recv_select(Select::Tag(2)).unwrap();
            assert_eq!(*env.body(), 10 + i);
        }
        t.join().unwrap();
        assert!(mb.is_empty());
    });
}

/// A requester killed while waiting: its request is answered into the void, and the
/// held slot is reclaimed when the mailbox needs it.
#[test]
fn requester_killed_slot_reclaimed() {
    watchdog(|| {
        let name = Name::new("mb-rr-requester");
        let mb = Mailbox::<Msg>::create(&name, 4).unwrap();
        let _ = mb.try_recv(); // a receiver is attached
        let mut child = Proc::spawn("request_and_hang", &[("name", &name)]);
        child.expect("requesting");
        let mut env = mb.recv_timeout(STEP).unwrap();
        child.kill9();
        assert_eq!(*env.body(), [1, 1]);
        // Answered before anyone noticed the death: the reply goes into its slot.
        let _ = env.take_reply::<Msg>().unwrap().reply([2, 2]);
        // Four free slots are needed: the held one must be reclaimed.
        for i in 0..4 {
            mb.try_send([3, i]).unwrap();
        }
        assert_eq!(mb.len(), 4);
    });
}

/// Processes killed at arbitrary points of a tight loop of sends and selective receives
/// (so, often while holding the lock, in the middle of an index update): after each
/// round the survivor takes the lock over if needed, and the mailbox works: what is
/// queued can be drained, then the whole capacity is usable again, in FIFO order.
#[test]
fn processes_killed_anywhere_never_wedge_the_mailbox() {
    watchdog(|| {
        let name = Name::new("mb-churn");
        let mb = Mailbox::<Msg>::create(&name, 16).unwrap();
        for round in 0..12u64 {
            let mut kids: Vec<Proc> = (0..2u64)
                .map(|k| {
                    let id = (round * 2 + k).to_string();
                    Proc::spawn("churn", &[("name", &name), ("id", &id)])
                })
                .collect();
            for k in &kids {
                k.expect("running");
            }
            // Let them run for a while (a few thousand operations), then kill both.
            let start = Instant::now();
            let mut seen = 0;
            while seen < 200 && start.elapsed() < STEP {
                if mb.recv_timeout(STEP).is_ok() {
                    seen += 1;
                }
            }
            for k in &mut kids {
                k.kill9();
            }
            // A marker, newer than anything the dead left (queued or half-sent), then
            // everything up to it drained.
            while let Err(TrySendError::Full(_)) = mb.try_send([98, round]) {
                let _ = mb.recv_timeout(STEP);
            }
            while *mb.recv_timeout(STEP).unwrap().body() != [98, round] {}
            assert!(mb.is_empty());
            for i in 0..16 {
                mb.send_timeout([99, i], STEP).unwrap();
            }
            for i in 0..16 {
                assert_eq!(
                    *mb.recv_timeout(STEP).unwrap().body(),
                    [99, i],
                    "round {round}"
                );
            }
            assert!(mb.is_empty());
        }
    });
}

/// Async requests answered by another process, from tasks on a multi-threaded runtime;
/// a request future dropped while pending hands its late reply back to the replier and
/// leaves no slot held.
#[test]
fn async_requests_across_processes() {
    use conduit::mailbox::RequestError;
    watchdog(|| {
        let name = Name::new("mb-rr-async");
        let mb = Mailbox::<Msg>::create(&name, 4).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let none = rt.block_on(mb.request_async([0, 0]));
        assert_eq!(none, Err(RequestError::NoResponders([0, 0])));
        let server = Proc::spawn("serve", &[("name", &name), ("n", "200")]);
        server.expect("ready");
        rt.block_on(async {
            let tasks: Vec<_> = (0..4u64)
                .map(|c| {
                    let mb = mb.clone();
                    tokio::spawn(async move {
                        for i in 0..50 {
                            assert_eq!(mb.request_tagged_async(1, [c, i]).await, Ok([c, i + 1]));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        server.success();
        // A pending request dropped: its reply is handed back, its slot released.
        let server = Mailbox::<Msg>::open(&name).unwrap();
        let _ = server.try_recv_select(Select::Tag(5));
        {
            let mut fut = mb.request_tagged_async(1, [7, 7]);
            let waker = futures::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(std::pin::Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        let mut env = server.try_recv().unwrap();
        let reply = env.take_reply::<Msg>().unwrap();
        assert!(reply.is_abandoned());
        assert_eq!(reply.reply([8, 8]), Err([8, 8]));
        for i in 0..4 {
            mb.try_send([1, i]).unwrap();
        }
    });
}

/// Close racing sends and receives (threads of separate handle families): every send
/// that returned `Ok` is received exactly once, by a receive or by the final drain;
/// every send after the close hands its message back.
#[test]
fn close_racing_send_and_receive() {
    watchdog(|| {
        for round in 0..20u64 {
            let name = Name::new("mb-close-race");
            let mb = Mailbox::<Msg>::create(&name, 8).unwrap();
            let senders: Vec<_> = (0..2u64)
                .map(|p| {
                    let tx = Mailbox::<Msg>::open(&name).unwrap();
                    thread::spawn(move || {
                        let mut sent = Vec::new();
                        for i in 0.. {
                            match tx.send_timeout([p, i], STEP) {
                                Ok(()) => sent.push([p, i]),
                                Err(e) => {
                                    assert!(
                                        matches!(e, conduit::SendTimeoutError::Disconnected(m) if m == [p, i])
                                    );
                                    break;
                                }
                            }
                        }
                        sent
                    })
                })
                .collect();
            let receivers: Vec<_> = [Select::Any, Select::From(mb.address().clone())]
                .into_iter()
                .map(|sel| {
                    let rx = Mailbox::<Msg>::open(&name).unwrap();
                    thread::spawn(move || {
                        let mut got = Vec::new();
                        while let Ok(env) = rx.recv_select(sel.clone()) {
                            got.push(*env.body());
                        }
                        got
                    })
                })
                .collect();
            // Let some traffic through, then close.
            let mut seen = 0;
            while seen < 20 + round {
                if mb.recv_timeout(STEP).is_ok() {
                    seen += 1;
                }
            }
            mb.close().unwrap();
            let sent: Vec<Msg> = senders
                .into_iter()
                .flat_map(|s| s.join().unwrap())
                .collect();
            let mut got: Vec<Msg> = receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            while let Ok(env) = mb.try_recv() {
                got.push(*env.body());
            }
            let got_set: HashSet<Msg> = got.iter().copied().collect();
            assert_eq!(got_set.len(), got.len(), "a message received twice");
            // `seen` messages went to this handle; every other sent one is in `got`.
            assert_eq!(got.len() as u64 + seen, sent.len() as u64, "round {round}");
        }
    });
}
