//! The reliability soak: randomized trials with real sending and receiving processes
//! over one shared-memory object (a channel, a mailbox or a signal target), while a
//! controller kills them (`SIGKILL`), stops and continues them (`SIGSTOP`/`SIGCONT`),
//! and scribbles over the segment.
//!
//! ```sh
//! cargo run --release --example soak                  # the full run (RELIABILITY.md)
//! cargo run --release --example soak -- --quick       # a short one (what CI runs)
//! cargo run --release --example soak -- --seed 0x1234 # repeat a run
//! ```
//!
//! Options: `--kills N` (default 100), `--scribbles N` (1000), `--stops N` (10),
//! `--senders N` (2), `--receivers N` (2), `--scale N` (10 000 000), `--seed X`, `--json
//! PATH` (default `target/conduit-soak/results.json`), `--quick` (10 kills, 100
//! scribbles, 2 stops, scale 100 000).
//!
//! Six kinds of object get three trials each: typed and byte channels, a typed channel
//! in single-producer single-consumer mode (`Options::spsc`: one sender and one
//! receiver, each killed sender or receiver succeeded by a new one), typed and byte
//! mailboxes (`shm::Mailbox`, `shm::ByteMailbox`: senders send with varying tags,
//! receivers take any tag), and a signal target (`shm::signal`: raisers raise one
//! queued number with the message in its payload; the one receiver is the target's
//! owner, and a killed owner's successor takes the target over with what is pending).
//! - **kill**: every acknowledged send (a sender prints `A seq` once `send` or `raise`
//!   returned `Ok`) must be received exactly once (receivers print each message as they
//!   get it), nothing may be received twice or torn (a checksum per message; for
//!   signals, the number and a payload), and after each kill messages must flow again
//!   within 1 s. A receiver killed between taking a message and printing it loses that
//!   one message, which the ledger cannot tell from a real loss: so up to one missing
//!   acknowledged message per receiver kill is reported as `in flight`, and only a loss
//!   beyond that fails the trial.
//! - **stop**: a sender stopped mid-traffic is alive, not dead: `shm::inspect` shows it
//!   alive while stopped, its slot is not reaped, and the ledger balances exactly.
//! - **scribble**: random 8-byte words written at random offsets of the segment while
//!   traffic flows; every process must exit by itself, normally, before its deadline (no
//!   crash, no panic, no hang). Lost or garbled messages are expected there and only
//!   counted.
//!
//! Then the **scale** trials: `--scale` messages through one MPMC object of each flavor
//! (`bounded(1024)`, `unbounded`, `rendezvous`, a shm channel, an in-process mailbox and
//! a shm mailbox) by 4 producer and 4 consumer threads, with an exact ledger: every
//! message received exactly once, in order per producer.
//!
//! A failing trial prints its seed; the run exits with status 1.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use conduit::shm::signal::{Raiser, Target};
use conduit::shm::{self, ByteReceiver, ByteSender, Options, Receiver, Sender};
use conduit::signal::Signal;

const ROLE: &str = "CONDUIT_SOAK_ROLE";
const CAPACITY: usize = 64;
const MAX_MESSAGE: usize = 256;
/// How long a scribble-trial process runs before it exits by itself.
const SCRIBBLE_RUN: Duration = Duration::from_secs(3);
/// How long past its own end a process may take before it counts as hung.
const HANG_MARGIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Messages

/// A message's checksum: torn or garbled messages fail it.
fn check(producer: u64, seq: u64) -> u64 {
    let mut h = producer.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

fn encode_bytes(producer: u64, seq: u64) -> Vec<u8> {
    // A length that varies with the sequence number, filled with a pattern.
    let len = 24 + (seq % 200) as usize;
    let mut msg = vec![(seq as u8) ^ 0x5a; len];
    msg[..8].copy_from_slice(&producer.to_le_bytes());
    msg[8..16].copy_from_slice(&seq.to_le_bytes());
    msg[16..24].copy_from_slice(&check(producer, seq).to_le_bytes());
    msg
}

/// `(producer, seq, intact)` of a byte message.
fn decode_bytes(msg: &[u8]) -> Option<(u64, u64, bool)> {
    if msg.len() < 24 {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(msg[i * 8..i * 8 + 8].try_into().unwrap());
    let (producer, seq, sum) = (word(0), word(1), word(2));
    let len_ok = msg.len() == 24 + (seq % 200) as usize;
    let fill_ok = msg[24..].iter().all(|&b| b == (seq as u8) ^ 0x5a);
    Some((
        producer,
        seq,
        sum == check(producer, seq) && len_ok && fill_ok,
    ))
}

// ---------------------------------------------------------------------------------------
// Child processes

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Typed,
    Bytes,
    /// A typed channel in single-producer single-consumer mode.
    Spsc,
    Mailbox,
    ByteMailbox,
    Signal,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Typed,
        Kind::Bytes,
        Kind::Spsc,
        Kind::Mailbox,
        Kind::ByteMailbox,
        Kind::Signal,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Typed => "typed channel",
            Kind::Bytes => "byte channel",
            Kind::Spsc => "spsc channel",
            Kind::Mailbox => "typed mailbox",
            Kind::ByteMailbox => "byte mailbox",
            Kind::Signal => "signal target",
        }
    }

    /// The child's `CONDUIT_SOAK_KIND`.
    fn key(self) -> &'static str {
        match self {
            Kind::Typed => "typed",
            Kind::Bytes => "bytes",
            Kind::Spsc => "spsc",
            Kind::Mailbox => "mailbox",
            Kind::ByteMailbox => "byte-mailbox",
            Kind::Signal => "signal",
        }
    }

    fn from_key(key: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.key() == key)
            .unwrap_or_else(|| panic!("unknown kind {key}"))
    }

    /// How many receivers run at once: a signal target has one owner, an spsc
    /// channel one receiver.
    fn receivers(self, asked: usize) -> usize {
        if matches!(self, Kind::Signal | Kind::Spsc) {
            1
        } else {
            asked
        }
    }

    /// How many senders run at once: an spsc channel has one.
    fn senders(self, asked: usize) -> usize {
        if self == Kind::Spsc { 1 } else { asked }
    }

    /// Creates the object `name` of this kind for one trial (and lets go of it).
    fn create(self, name: &str) {
        let _ = shm::unlink(name);
        let options = Options::new()
            .create_new(true)
            .capacity(CAPACITY)
            .max_message(MAX_MESSAGE);
        match self {
            Kind::Typed => drop(Receiver::<[u64; 4]>::with(name, &options).unwrap()),
            Kind::Spsc => drop(Receiver::<[u64; 4]>::with(name, &options.spsc(true)).unwrap()),
            Kind::Bytes => drop(ByteReceiver::with(name, &options).unwrap()),
            Kind::Mailbox => drop(shm::Mailbox::<[u64; 4]>::with(name, &options).unwrap()),
            Kind::ByteMailbox => drop(shm::ByteMailbox::with(name, &options).unwrap()),
            Kind::Signal => drop(Target::with(name, &options).unwrap()),
        }
    }
}

/// The queued signal number the signal trials raise; its payload carries
/// `producer << 40 | seq`.
const SOAK_SIGNAL: u8 = 40;

/// What a soak child holds: one sending or receiving handle of its trial's kind.
enum Port {
    Sender(Sender<[u64; 4]>),
    Receiver(Receiver<[u64; 4]>),
    ByteSender(ByteSender),
    ByteReceiver(ByteReceiver),
    Mailbox(shm::Mailbox<[u64; 4]>),
    ByteMailbox(shm::ByteMailbox),
    Raiser(Raiser),
    Target(Target),
}

impl Port {
    fn open(kind: Kind, name: &str, sending: bool) -> Port {
        match (kind, sending) {
            (Kind::Typed | Kind::Spsc, true) => Port::Sender(Sender::open(name).unwrap()),
            (Kind::Typed | Kind::Spsc, false) => Port::Receiver(Receiver::open(name).unwrap()),
            (Kind::Bytes, true) => Port::ByteSender(ByteSender::open(name).unwrap()),
            (Kind::Bytes, false) => Port::ByteReceiver(ByteReceiver::open(name).unwrap()),
            (Kind::Mailbox, _) => Port::Mailbox(shm::Mailbox::open(name).unwrap()),
            (Kind::ByteMailbox, _) => Port::ByteMailbox(shm::ByteMailbox::open(name).unwrap()),
            (Kind::Signal, true) => Port::Raiser(Raiser::open(name).unwrap()),
            (Kind::Signal, false) => {
                // The previous owner was reaped before this one started, but a
                // scribbled segment may answer `ResourceBusy` for a while: retry briefly.
                let mut tries = 0;
                loop {
                    match Target::open(name) {
                        Ok(t) => break Port::Target(t),
                        Err(_) if tries < 100 => {
                            tries += 1;
                            thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => panic!("cannot own the signal target: {e}"),
                    }
                }
            }
        }
    }

    /// Sends message `seq` of `producer`; whether it was acknowledged.
    fn send(&self, producer: u64, seq: u64, op: Duration) -> bool {
        let typed = [producer, seq, check(producer, seq), 0];
        match self {
            Port::Sender(tx) => tx.send_timeout(typed, op).is_ok(),
            Port::ByteSender(tx) => tx.send_timeout(&encode_bytes(producer, seq), op).is_ok(),
            // The tag varies so the mailbox's index has several lanes.
            Port::Mailbox(mb) => mb.send_tagged_timeout(seq % 3, typed, op).is_ok(),
            Port::ByteMailbox(mb) => mb
                .send_tagged_timeout(seq % 3, &encode_bytes(producer, seq), op)
                .is_ok(),
            Port::Raiser(r) => {
                let sig = Signal::new(SOAK_SIGNAL).unwrap();
                match r.raise_with(sig, (producer << 40) | seq) {
                    Ok(()) => true,
                    Err(_) => {
                        // Full, or no owner until the next one takes over: pacing.
                        thread::sleep(Duration::from_millis(1));
                        false
                    }
                }
            }
            _ => unreachable!("a receiving port does not send"),
        }
    }

    /// The next message as `(producer, seq, intact)`, or `Err(disconnected)`.
    fn recv(&self, wait: Duration) -> Result<(u64, u64, bool), bool> {
        let typed = |m: [u64; 4]| (m[0], m[1], m[2] == check(m[0], m[1]));
        let bytes = |m: &[u8]| decode_bytes(m).unwrap_or((u64::MAX, 0, false));
        let disconnected =
            |e: conduit::RecvTimeoutError| e == conduit::RecvTimeoutError::Disconnected;
        match self {
            Port::Receiver(rx) => rx.recv_timeout(wait).map(typed).map_err(disconnected),
            Port::ByteReceiver(rx) => rx
                .recv_timeout(wait)
                .map(|m| bytes(&m))
                .map_err(disconnected),
            Port::Mailbox(mb) => mb
                .recv_timeout(wait)
                .map(|e| typed(*e.body()))
                .map_err(disconnected),
            Port::ByteMailbox(mb) => mb
                .recv_timeout(wait)
                .map(|e| bytes(e.body()))
                .map_err(disconnected),
            Port::Target(t) => match t.wait_timeout(wait) {
                Some(info) => {
                    let p = info.payload().unwrap_or(u64::MAX);
                    let intact = info.signal().number() == SOAK_SIGNAL && info.payload().is_some();
                    Ok((p >> 40, p & ((1 << 40) - 1), intact))
                }
                None => Err(false),
            },
            _ => unreachable!("a sending port does not receive"),
        }
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

/// A child's stop flag, set when the controller writes a line to its standard input (or
/// closes it).
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

fn say(out: &mut impl Write, line: std::fmt::Arguments<'_>) {
    // One write per line, flushed at once: the controller's ledger sees what returned.
    let _ = out.write_fmt(format_args!("{line}\n"));
    let _ = out.flush();
}

fn child(role: &str) {
    let name = env("CONDUIT_SOAK_NAME");
    let kind = Kind::from_key(&env("CONDUIT_SOAK_KIND"));
    let end: Option<Instant> = std::env::var("CONDUIT_SOAK_RUN_MS")
        .ok()
        .map(|ms| Instant::now() + Duration::from_millis(ms.parse().unwrap()));
    let stop = stop_flag();
    let over = || stop.load(Ordering::SeqCst) || end.is_some_and(|e| Instant::now() >= e);
    let mut out = std::io::stdout().lock();
    let op = Duration::from_millis(50);
    match role {
        "sender" => {
            let producer: u64 = env("CONDUIT_SOAK_PRODUCER").parse().unwrap();
            let port = Port::open(kind, &name, true);
            say(&mut out, format_args!("open"));
            let mut seq = 0u64;
            while !over() {
                if port.send(producer, seq, op) {
                    say(&mut out, format_args!("A {seq}"));
                    seq += 1;
                }
            }
        }
        "receiver" => {
            let port = Port::open(kind, &name, false);
            say(&mut out, format_args!("open"));
            // After the stop, drain: wait up to a second per message, until the senders
            // are gone and the ring is empty (or nothing comes any more).
            let mut idle_after_stop = false;
            loop {
                let stopping = over();
                if stopping && idle_after_stop {
                    break;
                }
                let wait = if stopping { Duration::from_secs(1) } else { op };
                match port.recv(wait) {
                    Ok((producer, seq, intact)) => {
                        say(
                            &mut out,
                            format_args!("R {producer} {seq} {}", intact as u8),
                        );
                    }
                    Err(disconnected) => {
                        if stopping {
                            idle_after_stop = true;
                        } else if disconnected {
                            // Every sender was killed at once; new ones are on their way.
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
    say(&mut out, format_args!("done"));
}

// ---------------------------------------------------------------------------------------
// The controller

/// A small xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A line a child printed, with when the controller read it.
struct Event {
    at: Instant,
    proc_id: usize,
    line: String,
}

/// A running child.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    role: &'static str,
    id: usize,
    producer: u64,
    end: Option<Instant>,
}

struct Controller {
    name: String,
    kind: Kind,
    events: mpsc::Sender<Event>,
    next_id: usize,
}

impl Controller {
    fn spawn(&mut self, role: &'static str, run: Option<Duration>) -> Proc {
        let id = self.next_id;
        self.next_id += 1;
        let producer = id as u64;
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(ROLE, role)
            .env("CONDUIT_SOAK_NAME", &self.name)
            .env("CONDUIT_SOAK_KIND", self.kind.key())
            .env("CONDUIT_SOAK_PRODUCER", producer.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(run) = run {
            cmd.env("CONDUIT_SOAK_RUN_MS", run.as_millis().to_string());
        }
        let mut child = cmd.spawn().expect("spawn a soak child");
        let stdout = child.stdout.take().unwrap();
        let events = self.events.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "open" {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    continue;
                }
                let _ = events.send(Event {
                    at: Instant::now(),
                    proc_id: id,
                    line,
                });
            }
        });
        // Wait until it has attached (or died trying), so kills hit working processes.
        let _ = ready_rx.recv_timeout(Duration::from_secs(10));
        Proc {
            stdin: child.stdin.take(),
            child,
            role,
            id,
            producer,
            end: run.map(|r| Instant::now() + r),
        }
    }
}

/// How one process ended.
#[derive(Default, Debug, Clone, Copy)]
struct Endings {
    clean: u64,
    crashed: u64,
    hung: u64,
}

/// Stops a process (a line on its standard input) and waits for it, up to `limit`.
fn finish(p: &mut Proc, limit: Instant, endings: &mut Endings) {
    if let Some(mut stdin) = p.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    loop {
        match p.child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    endings.clean += 1;
                } else {
                    eprintln!(
                        "soak: {} {} ended with {status} (signal {:?})",
                        p.role,
                        p.child.id(),
                        status.signal()
                    );
                    endings.crashed += 1;
                }
                return;
            }
            Ok(None) if Instant::now() < limit => thread::sleep(Duration::from_millis(2)),
            _ => {
                eprintln!("soak: {} {} hung; killing it", p.role, p.child.id());
                let _ = p.child.kill();
                let _ = p.child.wait();
                endings.hung += 1;
                return;
            }
        }
    }
}

fn kill9(p: &mut Proc) {
    let _ = p.child.kill();
    let _ = p.child.wait();
}

fn signal(p: &Proc, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(p.child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, sig);
}

#[derive(Default, Debug, Clone)]
struct Outcome {
    kind: &'static str,
    trial: &'static str,
    messages: u64,
    acked: u64,
    kills: u64,
    receiver_kills: u64,
    scribbles: u64,
    stops: u64,
    lost: u64,
    in_flight: u64,
    duplicated: u64,
    torn: u64,
    crashed: u64,
    hung: u64,
    max_recovery_ms: f64,
    failures: Vec<String>,
}

/// Tallies the ledger: acknowledged sends against receptions.
fn ledger(events: &[Event], procs: &HashMap<usize, u64>, out: &mut Outcome) {
    let mut acked: HashSet<(u64, u64)> = HashSet::new();
    let mut received: HashMap<(u64, u64), u64> = HashMap::new();
    for e in events {
        let mut parts = e.line.split(' ');
        match parts.next() {
            Some("A") => {
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                acked.insert((procs[&e.proc_id], seq));
            }
            Some("R") => {
                let producer: u64 = parts.next().unwrap().parse().unwrap();
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                let intact = parts.next() == Some("1");
                out.messages += 1;
                if !intact {
                    out.torn += 1;
                } else {
                    *received.entry((producer, seq)).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    out.acked = acked.len() as u64;
    out.duplicated = received.values().map(|&n| n - 1).sum();
    let missing = acked.iter().filter(|k| !received.contains_key(k)).count() as u64;
    out.in_flight = missing.min(out.receiver_kills);
    out.lost = missing - out.in_flight;
}

struct Run {
    seed: u64,
    kills: u64,
    scribbles: u64,
    stops: u64,
    senders: usize,
    receivers: usize,
    scale: u64,
}

/// A fresh channel for one trial, and a controller for its processes with the receiving
/// end of their events.
fn start_trial(kind: Kind, rng: &mut Rng) -> (String, Controller, mpsc::Receiver<Event>) {
    let name = format!("soak-{}-{}", std::process::id(), rng.below(1 << 30));
    kind.create(&name);
    let (tx, rx) = mpsc::channel();
    let ctl = Controller {
        name: name.clone(),
        kind,
        events: tx,
        next_id: 0,
    };
    (name, ctl, rx)
}

/// The kill trial (or, with `stops`, the stop trial).
fn traffic_trial(run: &Run, kind: Kind, rng: &mut Rng, stop_trial: bool) -> Outcome {
    let (name, mut ctl, rx) = start_trial(kind, rng);
    let mut out = Outcome {
        kind: kind.name(),
        trial: if stop_trial { "stop" } else { "kill" },
        ..Outcome::default()
    };
    let mut procs: Vec<Proc> = Vec::new();
    for _ in 0..kind.senders(run.senders) {
        procs.push(ctl.spawn("sender", None));
    }
    for _ in 0..kind.receivers(run.receivers) {
        procs.push(ctl.spawn("receiver", None));
    }
    let mut producers: HashMap<usize, u64> = procs.iter().map(|p| (p.id, p.producer)).collect();
    let mut events: Vec<Event> = Vec::new();
    let mut kill_times: Vec<Instant> = Vec::new();
    let rounds = if stop_trial { run.stops } else { run.kills };
    for _ in 0..rounds {
        // Pacing, not synchronization: let traffic run a random while.
        thread::sleep(Duration::from_millis(2 + rng.below(20)));
        let victim = rng.below(procs.len() as u64) as usize;
        if stop_trial {
            // Only senders: a stopped sender mid-send is the case that must not be reaped.
            let victim = victim % kind.senders(run.senders);
            let pid = procs[victim].child.id();
            signal(&procs[victim], rustix::process::Signal::STOP);
            thread::sleep(Duration::from_millis(300));
            // Waiters have run maintenance meanwhile (every 100 ms): the stopped sender
            // must still be alive and attached.
            let alive = shm::inspect(&name)
                .is_ok_and(|i| i.live_peers().any(|p| p.pid == pid && p.state == "live"));
            if !alive {
                out.failures
                    .push(format!("stopped sender {pid} was not shown alive and live"));
            }
            signal(&procs[victim], rustix::process::Signal::CONT);
            out.stops += 1;
        } else {
            let role = procs[victim].role;
            kill9(&mut procs[victim]);
            kill_times.push(Instant::now());
            out.kills += 1;
            if role == "receiver" {
                out.receiver_kills += 1;
            }
            let fresh = ctl.spawn(role, None);
            producers.insert(fresh.id, fresh.producer);
            procs[victim] = fresh;
        }
        events.extend(rx.try_iter());
    }
    // Senders first, then receivers drain.
    let mut endings = Endings::default();
    let limit = Instant::now() + Duration::from_secs(10);
    for p in procs.iter_mut().filter(|p| p.role == "sender") {
        finish(p, limit, &mut endings);
    }
    let limit = Instant::now() + Duration::from_secs(20);
    for p in procs.iter_mut().filter(|p| p.role == "receiver") {
        finish(p, limit, &mut endings);
    }
    drop(ctl);
    // Every reader thread ends with its child's stdout.
    thread::sleep(Duration::from_millis(50));
    events.extend(rx.try_iter());
    events.sort_by_key(|e| e.at);
    ledger(&events, &producers, &mut out);
    // Recovery: after each kill, how long until a message was received again.
    for &k in &kill_times {
        if let Some(next) = events.iter().find(|e| e.at > k && e.line.starts_with('R')) {
            let ms = next.at.duration_since(k).as_secs_f64() * 1e3;
            out.max_recovery_ms = out.max_recovery_ms.max(ms);
        }
    }
    out.crashed = endings.crashed;
    out.hung = endings.hung;
    if out.max_recovery_ms > 1000.0 {
        out.failures
            .push(format!("recovery took {:.0} ms", out.max_recovery_ms));
    }
    let _ = shm::unlink(&name);
    out
}

fn scribble_trial(run: &Run, kind: Kind, rng: &mut Rng) -> Outcome {
    let (name, mut ctl, rx) = start_trial(kind, rng);
    let mut procs: Vec<Proc> = Vec::new();
    for _ in 0..kind.senders(run.senders) {
        procs.push(ctl.spawn("sender", Some(SCRIBBLE_RUN)));
    }
    for _ in 0..kind.receivers(run.receivers) {
        procs.push(ctl.spawn("receiver", Some(SCRIBBLE_RUN)));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/conduit.{name}"))
        .unwrap();
    let len = file.metadata().unwrap().len().max(8);
    let mut out = Outcome {
        kind: kind.name(),
        trial: "scribble",
        ..Outcome::default()
    };
    // Spread the scribbles over most of the run.
    let spacing = SCRIBBLE_RUN.mul_f64(0.8) / (run.scribbles.max(1) as u32);
    for _ in 0..run.scribbles {
        let at = rng.below(len / 8) * 8;
        let word = match rng.below(4) {
            0 => 0,
            1 => u64::MAX,
            2 => rng.below(256),
            _ => rng.next(),
        };
        let _ = file.write_at(&word.to_ne_bytes(), at);
        out.scribbles += 1;
        thread::sleep(spacing);
    }
    let mut endings = Endings::default();
    for p in &mut procs {
        let limit = p.end.unwrap() + HANG_MARGIN;
        finish(p, limit, &mut endings);
    }
    drop(ctl);
    out.messages = rx.try_iter().filter(|e| e.line.starts_with('R')).count() as u64;
    out.crashed = endings.crashed;
    out.hung = endings.hung;
    let _ = shm::unlink(&name);
    out
}

/// The scale trial: `total` messages through one channel by 4 producers and 4 consumers
/// (threads; for shm, each with its own handle family), with an exact ledger: a shared
/// bitmap of every (producer, sequence) taken (a bit found set already is a duplicate),
/// per-consumer FIFO checks per producer, and a final count of the bits.
fn scale_trial<S, R>(
    kind: &'static str,
    total: u64,
    make_sender: impl Fn() -> S + Sync,
    make_receiver: impl Fn() -> R + Sync,
    send: impl Fn(&S, u64) + Sync,
    recv: impl Fn(&R, &AtomicBool) -> Option<u64> + Sync,
) -> Outcome {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: u64 = 4;
    let per = total / PRODUCERS;
    let bits: Vec<std::sync::atomic::AtomicU64> = (0..(per * PRODUCERS).div_ceil(64))
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect();
    let duplicated = std::sync::atomic::AtomicU64::new(0);
    let out_of_order = std::sync::atomic::AtomicU64::new(0);
    let received = std::sync::atomic::AtomicU64::new(0);
    // Set once every producer's last send returned: consumers then drain and stop.
    let done = AtomicBool::new(false);
    let producers_left = std::sync::atomic::AtomicU64::new(PRODUCERS);
    let started = Instant::now();
    thread::scope(|s| {
        for p in 0..PRODUCERS {
            let (make_sender, send, done, left) = (&make_sender, &send, &done, &producers_left);
            s.spawn(move || {
                let tx = make_sender();
                for seq in 0..per {
                    send(&tx, (p << 40) | seq);
                }
                if left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    done.store(true, Ordering::SeqCst);
                }
            });
        }
        for _ in 0..CONSUMERS {
            let (make_receiver, recv, done) = (&make_receiver, &recv, &done);
            let (bits, duplicated, out_of_order, received) =
                (&bits, &duplicated, &out_of_order, &received);
            s.spawn(move || {
                let rx = make_receiver();
                let mut last = [None::<u64>; PRODUCERS as usize];
                while let Some(msg) = recv(&rx, done) {
                    let (p, seq) = (msg >> 40, msg & ((1 << 40) - 1));
                    if p >= PRODUCERS || seq >= per {
                        duplicated.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if last[p as usize].is_some_and(|l| l >= seq) {
                        out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    last[p as usize] = Some(seq);
                    let bit = p * per + seq;
                    let old =
                        bits[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
                    if old & (1 << (bit % 64)) != 0 {
                        duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let distinct: u64 = bits
        .iter()
        .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
        .sum();
    let mut out = Outcome {
        kind,
        trial: "scale 4x4",
        messages: received.load(Ordering::Relaxed),
        acked: per * PRODUCERS,
        lost: per * PRODUCERS - distinct,
        duplicated: duplicated.load(Ordering::Relaxed),
        max_recovery_ms: 0.0,
        ..Outcome::default()
    };
    let order = out_of_order.load(Ordering::Relaxed);
    if order > 0 {
        out.failures
            .push(format!("{order} messages out of FIFO order"));
    }
    println!(
        "soak: scale {kind}: {} messages in {:.1} s",
        out.messages,
        started.elapsed().as_secs_f64()
    );
    out
}

/// How long a scale consumer waits for a message before it checks whether the
/// producers are done.
const SCALE_POLL: Duration = Duration::from_millis(10);

/// A scale consumer's receive: the next message, or `None` once every producer is done
/// (`done`) and the channel is drained. The channel is not disconnected for that (the
/// trial's own handles keep it open), so the consumers end by the producers' count.
fn recv_until_done(
    done: &AtomicBool,
    mut recv: impl FnMut() -> Option<u64>,
    is_empty: impl Fn() -> bool,
) -> Option<u64> {
    loop {
        if let Some(m) = recv() {
            return Some(m);
        }
        if done.load(Ordering::SeqCst) && is_empty() {
            return None;
        }
    }
}

fn scale_trials(total: u64) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (kind, cap) in [
        ("bounded(1024)", Some(1024)),
        ("unbounded", None),
        ("rendezvous", Some(0)),
    ] {
        let (tx, rx) = match cap {
            Some(n) => conduit::bounded::<u64>(n),
            None => conduit::unbounded::<u64>(),
        };
        outcomes.push(scale_trial(
            kind,
            total,
            || tx.clone(),
            || rx.clone(),
            |tx, m| tx.send(m).unwrap(),
            |rx, done| recv_until_done(done, || rx.recv_timeout(SCALE_POLL).ok(), || rx.is_empty()),
        ));
    }
    let name = format!("soak-scale-{}", std::process::id());
    let _ = shm::unlink(&name);
    let options = Options::new().create_new(true).capacity(1024);
    let keep = Receiver::<u64>::with(&name, &options).unwrap();
    outcomes.push(scale_trial(
        "shm channel",
        total,
        || Sender::<u64>::open(&name).unwrap(),
        || Receiver::<u64>::open(&name).unwrap(),
        |tx, m| tx.send(m).unwrap(),
        |rx, done| recv_until_done(done, || rx.recv_timeout(SCALE_POLL).ok(), || rx.is_empty()),
    ));
    drop(keep);
    let _ = shm::unlink(&name);
    // Mailboxes, receiving any tag (FIFO per sender): each thread opens its own
    // handle, so every producer has its own address.
    macro_rules! mailbox_trial {
        ($kind:expr, $open:expr) => {
            scale_trial(
                $kind,
                total,
                || $open,
                || $open,
                |tx, m| tx.send_tagged(m % 5, m).unwrap(),
                |rx, done| {
                    recv_until_done(
                        done,
                        || rx.recv_timeout(SCALE_POLL).ok().map(|e| e.into_body()),
                        || rx.is_empty(),
                    )
                },
            )
        };
    }
    let office = conduit::mailbox::PostOffice::new();
    let keep = office.open::<u64>("scale").unwrap();
    outcomes.push(mailbox_trial!(
        "mailbox",
        office.open::<u64>("scale").unwrap()
    ));
    drop(keep);
    let options = Options::new().create_new(true).capacity(1024);
    let keep = shm::Mailbox::<u64>::with(&name, &options).unwrap();
    outcomes.push(mailbox_trial!(
        "shm mailbox",
        shm::Mailbox::<u64>::open(&name).unwrap()
    ));
    drop(keep);
    let _ = shm::unlink(&name);
    outcomes
}

fn arg_value(args: &[String], key: &str) -> Option<String> {
    args.iter()
        .position(|a| a == key)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse_u64(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).expect("a hex number"),
        None => s.parse().expect("a number"),
    }
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let num = |key: &str, full: u64, short: u64| {
        arg_value(&args, key)
            .map(|v| parse_u64(&v))
            .unwrap_or(if quick { short } else { full })
    };
    let seed = arg_value(&args, "--seed")
        .map(|v| parse_u64(&v))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    let run = Run {
        seed,
        kills: num("--kills", 100, 10),
        scribbles: num("--scribbles", 1000, 100),
        stops: num("--stops", 10, 2),
        senders: num("--senders", 2, 2) as usize,
        receivers: num("--receivers", 2, 2) as usize,
        scale: num("--scale", 10_000_000, 100_000),
    };
    let json_path = arg_value(&args, "--json")
        .unwrap_or_else(|| "target/conduit-soak/results.json".to_string());
    println!(
        "soak: seed {:#x}, {} kills, {} scribbles, {} stops per kind; {} senders, {} receivers",
        run.seed, run.kills, run.scribbles, run.stops, run.senders, run.receivers
    );
    let started = Instant::now();
    let mut rng = Rng(run.seed);
    let mut outcomes = Vec::new();
    for kind in Kind::ALL {
        outcomes.push(traffic_trial(&run, kind, &mut rng, false));
        outcomes.push(traffic_trial(&run, kind, &mut rng, true));
        outcomes.push(scribble_trial(&run, kind, &mut rng));
    }
    outcomes.extend(scale_trials(run.scale));
    let mut failed = false;
    println!();
    println!(
        "| kind | trial | messages | acked | kills | stops | scribbles | lost | in flight | duplicated | torn | crashed | hung | max recovery |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in &mut outcomes {
        // Scribbles may lose and garble messages; the other trials may not.
        if o.trial != "scribble" && (o.lost > 0 || o.duplicated > 0 || o.torn > 0) {
            o.failures.push(format!(
                "ledger: {} lost, {} duplicated, {} torn",
                o.lost, o.duplicated, o.torn
            ));
        }
        if o.crashed > 0 || o.hung > 0 {
            o.failures
                .push(format!("{} crashed, {} hung", o.crashed, o.hung));
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} ms |",
            o.kind,
            o.trial,
            o.messages,
            o.acked,
            o.kills,
            o.stops,
            o.scribbles,
            o.lost,
            o.in_flight,
            o.duplicated,
            o.torn,
            o.crashed,
            o.hung,
            o.max_recovery_ms
        );
        failed |= !o.failures.is_empty();
    }
    for o in &outcomes {
        for f in &o.failures {
            println!("FAILED {} {}: {f}", o.kind, o.trial);
        }
    }
    let rows: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{{\"kind\":\"{}\",\"trial\":\"{}\",\"messages\":{},\"acked\":{},\"kills\":{},\"receiver_kills\":{},\"stops\":{},\"scribbles\":{},\"lost\":{},\"in_flight\":{},\"duplicated\":{},\"torn\":{},\"crashed\":{},\"hung\":{},\"max_recovery_ms\":{:.1},\"failures\":[{}]}}",
                o.kind,
                o.trial,
                o.messages,
                o.acked,
                o.kills,
                o.receiver_kills,
                o.stops,
                o.scribbles,
                o.lost,
                o.in_flight,
                o.duplicated,
                o.torn,
                o.crashed,
                o.hung,
                o.max_recovery_ms,
                o.failures
                    .iter()
                    .map(|f| format!("\"{}\"", json_escape(f)))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let json = format!(
        "{{\"seed\":\"{:#x}\",\"seconds\":{:.1},\"passed\":{},\"trials\":[{}]}}\n",
        run.seed,
        started.elapsed().as_secs_f64(),
        !failed,
        rows.join(",")
    );
    if let Some(dir) = std::path::Path::new(&json_path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&json_path, json) {
        Ok(()) => println!("\nsoak: results written to {json_path}"),
        Err(e) => eprintln!("soak: could not write {json_path}: {e}"),
    }
    println!(
        "soak: {} in {:.1} s (seed {:#x})",
        if failed { "FAILED" } else { "passed" },
        started.elapsed().as_secs_f64(),
        run.seed
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
