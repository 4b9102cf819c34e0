//! Side-by-side throughput of `conduit` and its peers: `cargo bench --bench compare`.
//!
//! Every scenario runs each implementation several times, round-robin (one run of every
//! implementation per repetition, starting from a different one each time), so that slow
//! drifts of a noisy machine hit all of them alike. A run moves a fixed number of `u64` (or
//! 256-byte) messages and is timed with [`Instant`] from the moment every thread is
//! released until the last message is received; the result is wall time per message.
//!
//! - in-process peers: crossbeam-channel, flume, kanal, async-channel, `tokio::sync::mpsc`
//!   and `std::sync::mpsc`, each where it supports the scenario (single-consumer channels
//!   sit out the MPMC scenarios; async-channel and tokio have no rendezvous);
//! - async scenarios run on a 2-worker tokio multi-thread runtime;
//! - `ipc` scenarios measure two processes (a child `fork`ed before any thread exists)
//!   talking over a pipe, a unix socket pair, a SysV and a POSIX message queue, and
//!   spinning on shared memory, the physical limit, and a bare copy of conduit's ring
//!   protocol for reference ([`StampRing`]); conduit takes part with its
//!   `conduit::shm` channel (see [`conduit_ipc_contenders`]). Where the process may run
//!   on two CPUs or more, the parent and the child are pinned to two different ones (see
//!   [`Pinning`]), for every transport alike: otherwise the scheduler sometimes leaves
//!   both on one CPU for a whole run, and where the fork landed decides the result.
//!
//! Output: one markdown table per scenario (median and minimum ns per message over the
//! repetitions, and each implementation's median divided by the best peer's, so a ratio
//! below 1.0 means conduit is faster) and `target/conduit-bench/results.json`. Each
//! scenario is bracketed by a machine check ([`line_round_trip_ns`]), and the run ends
//! by naming the scenarios timed while the machine was in another state.
//!
//! Arguments (after `--`): `--quick` (or `CONDUIT_BENCH_QUICK=1`) for a run of under two
//! minutes; any other non-flag argument keeps only the scenarios whose name contains it
//! (case-insensitive). Without the `--bench` flag that `cargo bench` passes (for example
//! under `cargo test --benches`) every scenario runs once with a few messages as a smoke
//! test and no results file is written.

use std::fmt::Write as _;
use std::future::Future;
use std::hint::spin_loop;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Barrier;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{env, fs, panic, thread};

use conduit::shm;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Smoke,
}

struct Config {
    mode: Mode,
    filters: Vec<String>,
}

impl Config {
    fn from_env() -> Self {
        let args: Vec<String> = env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || env::var("CONDUIT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mode = if !args.iter().any(|a| a == "--bench") {
            Mode::Smoke
        } else if quick {
            Mode::Quick
        } else {
            Mode::Full
        };
        let filters = args
            .into_iter()
            .filter(|a| !a.starts_with('-'))
            .map(|a| a.to_lowercase())
            .collect();
        Config { mode, filters }
    }

    fn selects(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    fn reps(&self) -> usize {
        match self.mode {
            Mode::Full => 7,
            Mode::Quick => 5,
            Mode::Smoke => 1,
        }
    }

    /// Scales a scenario's full-mode message count.
    fn messages(&self, full: u64) -> u64 {
        match self.mode {
            Mode::Full => full,
            Mode::Quick => full / 3,
            Mode::Smoke => (full / 200).max(64),
        }
    }

    /// Wall-time budget for one scenario's repetitions; message counts shrink to fit.
    fn budget(&self) -> Duration {
        match self.mode {
            Mode::Full => Duration::from_secs(50),
            Mode::Quick => Duration::from_secs(6),
            Mode::Smoke => Duration::from_secs(2),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The measurement loop, shared by every scenario
// ---------------------------------------------------------------------------------------

/// One implementation in one scenario: `run(n)` moves `n` messages and returns the
/// wall time per message in ns, or `None` if the implementation cannot do the scenario.
struct Contender {
    name: &'static str,
    run: Box<dyn Fn(u64) -> Option<f64>>,
}

struct Stat {
    name: &'static str,
    median: f64,
    min: f64,
}

/// Warms up (and drops the contenders that do not support the scenario), sizes the runs
/// to the budget, then runs up to `reps` round-robin repetitions: after three, a
/// scenario that has overrun its budget twice over (a machine that got busy) stops.
/// Returns the message count and the number of repetitions used.
fn measure(cfg: &Config, contenders: Vec<Contender>, full_msgs: u64) -> (u64, usize, Vec<Stat>) {
    let started = Instant::now();
    let mut msgs = cfg.messages(full_msgs);
    let warm = (msgs / 10).max(16);
    let mut live: Vec<(Contender, Vec<f64>)> = Vec::new();
    let mut estimate = 0.0;
    for c in contenders {
        if let Some(ns) = (c.run)(warm) {
            estimate += ns * msgs as f64 * cfg.reps() as f64;
            live.push((c, Vec::new()));
        }
    }
    let budget = cfg.budget().as_nanos() as f64;
    if estimate > budget {
        msgs = ((msgs as f64 * budget / estimate) as u64).max(warm);
    }
    let mut reps = 0;
    while reps < cfg.reps() && (reps < 3 || started.elapsed() < 2 * cfg.budget()) {
        let rep = reps;
        reps += 1;
        for j in 0..live.len() {
            let k = (rep + j) % live.len();
            let (c, samples) = &mut live[k];
            let ns = (c.run)(msgs).unwrap_or_else(|| panic!("{} stopped working", c.name));
            samples.push(ns);
        }
    }
    let stats = live
        .into_iter()
        .map(|(c, mut s)| {
            s.sort_by(f64::total_cmp);
            let mid = s.len() / 2;
            let median = if s.len() % 2 == 1 {
                s[mid]
            } else {
                (s[mid - 1] + s[mid]) / 2.0
            };
            Stat {
                name: c.name,
                median,
                min: s[0],
            }
        })
        .collect();
    (msgs, reps, stats)
}

// ---------------------------------------------------------------------------------------
// Machine check
// ---------------------------------------------------------------------------------------

/// Round trips timed per machine check (about 1.5 ms at the usual 75 ns).
const CHECK_TRIPS: u64 = 20_000;

/// A scenario whose check read more than this many times the run's median check ran,
/// at least in part, on a machine in a slower state than usual, and is flagged.
const CHECK_SPREAD: f64 = 1.5;

/// The machine check around one scenario: ns per round trip of one cache line between
/// two threads ([`line_round_trip_ns`]) just before and just after it.
#[derive(Clone, Copy)]
struct Check {
    before: f64,
    after: f64,
}

impl Check {
    fn worst(self) -> f64 {
        self.before.max(self.after)
    }
}

/// The machine check: two threads, pinned to two different CPUs where the process may
/// use two ([`Pinning`]), pass one cache line back and forth; the result is ns per round
/// trip. The hardware decides it alone, so it should read the same all through a run. On
/// this project's VM it reads 75–90 ns most of the time, but for milliseconds to minutes
/// at a time the hypervisor runs the VM's two CPUs where a cache line takes several times
/// as long to cross (400–500 ns), or as long as it takes between hyperthreads of one core
/// (30 ns). Timings taken in different states are not comparable, so every scenario
/// shows the check from before and after it, and the run ends with a warning naming the
/// scenarios whose check was off ([`CHECK_SPREAD`]).
fn line_round_trip_ns() -> f64 {
    let pinning = Pinning::new();
    let _parent = pinning.as_ref().map(Pinning::pin_parent);
    let line = &AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            if let Some(p) = &pinning {
                p.pin(p.child);
            }
            for i in 0..=CHECK_TRIPS {
                spin_until(|| line.load(Ordering::Acquire) == 2 * i + 1);
                line.store(2 * i + 2, Ordering::Release);
            }
        });
        // Trip 0 waits for the thread to start; the clock runs from its end.
        line.store(1, Ordering::Release);
        spin_until(|| line.load(Ordering::Acquire) == 2);
        let t = Instant::now();
        for i in 1..=CHECK_TRIPS {
            line.store(2 * i + 1, Ordering::Release);
            spin_until(|| line.load(Ordering::Acquire) == 2 * i + 2);
        }
        t.elapsed().as_nanos() as f64 / CHECK_TRIPS as f64
    })
}

/// Prints which scenarios ran while the machine check read more than [`CHECK_SPREAD`]
/// times its median reading in this run.
fn warn_about_checks(scenarios: &[(String, Check)]) {
    let mut checks: Vec<f64> = scenarios
        .iter()
        .flat_map(|(_, c)| [c.before, c.after])
        .collect();
    checks.sort_by(f64::total_cmp);
    // The lower median: with a single scenario, the faster of its two checks.
    let median = checks[(checks.len() - 1) / 2];
    let off: Vec<_> = scenarios
        .iter()
        .filter(|(_, c)| c.worst() > CHECK_SPREAD * median)
        .collect();
    if off.is_empty() {
        eprintln!("compare: machine check steady (median {median:.0} ns per round trip)");
        return;
    }
    eprintln!(
        "compare: WARNING: the machine check (median {median:.0} ns per round trip) read \
         over {CHECK_SPREAD}× that around these scenarios; the machine was slower for at \
         least part of them:"
    );
    for (scenario, check) in off {
        eprintln!("  {scenario}: {:.0} / {:.0} ns", check.before, check.after);
    }
}

// ---------------------------------------------------------------------------------------
// Results: markdown tables and JSON
// ---------------------------------------------------------------------------------------

struct Row {
    scenario: String,
    /// The machine check before and after the scenario, ns per round trip.
    check: Check,
    implementation: &'static str,
    median: f64,
    min: f64,
    ratio: Option<f64>,
    vs_pipe: Option<f64>,
}

fn is_conduit(name: &str) -> bool {
    name.starts_with("conduit")
}

/// The fastest non-conduit entry among those `keep` accepts.
fn best_of(stats: &[Stat], keep: impl Fn(&str) -> bool) -> Option<&Stat> {
    stats
        .iter()
        .filter(|s| !is_conduit(s.name) && keep(s.name))
        .min_by(|a, b| a.median.total_cmp(&b.median))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}"))
}

/// Prints the table for one scenario and returns its JSON rows. For `ipc` scenarios the
/// table also compares with the pipe and with the spinning shared-memory limit.
fn report(
    scenario: &str,
    title: &str,
    unit: &str,
    ipc: bool,
    check: Check,
    mut stats: Vec<Stat>,
) -> Vec<Row> {
    stats.sort_by(|a, b| a.median.total_cmp(&b.median));
    let best = best_of(&stats, |_| true).map(|s| (s.name, s.median));
    let pipe = best_of(&stats, |n| n == PIPE).map(|s| s.median);
    let spin = best_of(&stats, |n| n.starts_with("spin")).map(|s| s.median);
    let conduit = stats.iter().find(|s| is_conduit(s.name));

    let mut out = format!("\n### {title}\n\n");
    if ipc {
        let _ = writeln!(
            out,
            "| implementation | median {unit} | min {unit} | ÷ pipe | ÷ spin limit |"
        );
        out.push_str("|---|---:|---:|---:|---:|\n");
    } else {
        let _ = writeln!(
            out,
            "| implementation | median {unit} | min {unit} | ÷ best peer |"
        );
        out.push_str("|---|---:|---:|---:|\n");
    }
    let mut rows = Vec::new();
    for s in &stats {
        let ratio = best.map(|(_, b)| s.median / b);
        let vs_pipe = pipe.map(|p| s.median / p);
        let name = if is_conduit(s.name) {
            format!("**{}**", s.name)
        } else {
            s.name.to_string()
        };
        let _ = write!(out, "| {name} | {:.1} | {:.1} |", s.median, s.min);
        if ipc {
            let vs_spin = spin.map(|p| s.median / p);
            let _ = writeln!(out, " {} | {} |", fmt_ratio(vs_pipe), fmt_ratio(vs_spin));
        } else {
            let _ = writeln!(out, " {} |", fmt_ratio(ratio));
        }
        rows.push(Row {
            scenario: scenario.to_string(),
            check,
            implementation: s.name,
            median: s.median,
            min: s.min,
            ratio,
            vs_pipe: if ipc { vs_pipe } else { None },
        });
    }
    match (conduit, ipc) {
        (Some(c), false) => {
            if let Some((peer, b)) = best {
                let _ = writeln!(
                    out,
                    "| **{} ÷ best peer ({peer})** | | | **{:.2}** |",
                    c.name,
                    c.median / b
                );
            }
        }
        (Some(c), true) => {
            let _ = writeln!(
                out,
                "| **{} ÷ pipe, ÷ spin limit** | | | **{}** | **{}** |",
                c.name,
                fmt_ratio(pipe.map(|p| c.median / p)),
                fmt_ratio(spin.map(|p| c.median / p))
            );
        }
        (None, _) => {}
    }
    print!("{out}");
    let _ = io::stdout().flush();
    rows
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".to_string(),
    }
}

fn write_json(rows: &[Row]) -> io::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(|t| manifest.join(t))
        .unwrap_or_else(|| manifest.join("target"));
    let dir = target.join("conduit-bench");
    fs::create_dir_all(&dir)?;
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "  {{\"scenario\": {}, \"implementation\": {}, \"median_ns\": {}, \"min_ns\": {}, \"ratio\": {}",
            json_str(&r.scenario),
            json_str(r.implementation),
            json_num(Some(r.median)),
            json_num(Some(r.min)),
            json_num(r.ratio)
        );
        if let Some(p) = r.vs_pipe {
            let _ = write!(out, ", \"ratio_vs_pipe\": {}", json_num(Some(p)));
        }
        let _ = write!(
            out,
            ", \"check_before_ns\": {}, \"check_after_ns\": {}",
            json_num(Some(r.check.before)),
            json_num(Some(r.check.after))
        );
        out.push_str(if i + 1 == rows.len() { "}\n" } else { "},\n" });
    }
    out.push_str("]\n");
    let path = dir.join("results.json");
    fs::write(&path, out)?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------
// In-process adapters: one trait, a few lines per peer
// ---------------------------------------------------------------------------------------

/// A message: built from a sequence number that the receivers sum up as a check.
trait Msg: Send + 'static {
    fn new(i: u64) -> Self;
    fn id(&self) -> u64;
}

impl Msg for u64 {
    fn new(i: u64) -> Self {
        i
    }
    fn id(&self) -> u64 {
        *self
    }
}

/// A 256-byte message.
#[derive(Clone, Copy)]
struct Msg256([u64; 32]);

impl Msg for Msg256 {
    fn new(i: u64) -> Self {
        Msg256([i; 32])
    }
    fn id(&self) -> u64 {
        self.0[31]
    }
}

#[derive(Clone, Copy)]
enum Flavor {
    /// Capacity; 0 is a rendezvous channel.
    Bounded(usize),
    Unbounded,
}

/// Blocking use of one channel implementation.
trait Chan: 'static {
    const NAME: &'static str;
    type Tx<T: Msg>: Clone + Send + Sync;
    type Rx<T: Msg>: Send;
    /// `None` if the implementation has no such flavor.
    fn new<T: Msg>(flavor: Flavor) -> Option<(Self::Tx<T>, Self::Rx<T>)>;
    /// Another handle on the receiving side, `None` for single-consumer channels.
    fn share_rx<T: Msg>(rx: &Self::Rx<T>) -> Option<Self::Rx<T>>;
    fn send<T: Msg>(tx: &Self::Tx<T>, msg: T);
    /// `None` once the channel is empty and every sender is gone.
    fn recv<T: Msg>(rx: &mut Self::Rx<T>) -> Option<T>;
}

/// Async use of the same channel types.
trait AsyncChan: Chan {
    fn send_async<T: Msg>(tx: &Self::Tx<T>, msg: T) -> impl Future<Output = ()> + Send + '_;
    fn recv_async<T: Msg>(rx: &mut Self::Rx<T>) -> impl Future<Output = Option<T>> + Send + '_;
}

/// An adapter in a few lines: the handle types (generic over `T`), how to make a flavor
/// (`None`: not offered), another receiver (`None`: single consumer), and the blocking
/// send (an expression giving a `Result`) and receive (giving `Option<T>`).
macro_rules! chan {
    ($ty:ident, $name:literal, Tx = $tx:ty, Rx = $rx:ty,
     new: |$f:ident| $new:expr, share: |$s:ident| $share:expr,
     send: |$t:ident, $m:ident| $send:expr, recv: |$r:ident| $recv:expr $(,)?) => {
        struct $ty;
        impl Chan for $ty {
            const NAME: &'static str = $name;
            type Tx<T: Msg> = $tx;
            type Rx<T: Msg> = $rx;
            fn new<T: Msg>($f: Flavor) -> Option<(Self::Tx<T>, Self::Rx<T>)> {
                $new
            }
            fn share_rx<T: Msg>($s: &Self::Rx<T>) -> Option<Self::Rx<T>> {
                $share
            }
            fn send<T: Msg>($t: &Self::Tx<T>, $m: T) {
                assert!($send.is_ok(), "receivers gone");
            }
            fn recv<T: Msg>($r: &mut Self::Rx<T>) -> Option<T> {
                $recv
            }
        }
    };
}

/// Crates shaped like crossbeam-channel: `bounded(cap)` (0 = rendezvous), `unbounded()`,
/// clonable receivers, `send(msg) -> Result`, `recv() -> Result`.
macro_rules! mpmc_chan {
    ($ty:ident, $name:literal, $krate:ident) => {
        chan!($ty, $name, Tx = $krate::Sender<T>, Rx = $krate::Receiver<T>,
            new: |flavor| Some(match flavor {
                Flavor::Bounded(cap) => $krate::bounded(cap),
                Flavor::Unbounded => $krate::unbounded(),
            }),
            share: |rx| Some(rx.clone()),
            send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().ok());
    };
}

mpmc_chan!(Conduit, "conduit", conduit);
mpmc_chan!(Crossbeam, "crossbeam-channel", crossbeam_channel);
mpmc_chan!(Flume, "flume", flume);
mpmc_chan!(Kanal, "kanal", kanal);

chan!(AsyncChannel, "async-channel",
    Tx = async_channel::Sender<T>, Rx = async_channel::Receiver<T>,
    new: |flavor| match flavor {
        Flavor::Bounded(0) => None,
        Flavor::Bounded(cap) => Some(async_channel::bounded(cap)),
        Flavor::Unbounded => Some(async_channel::unbounded()),
    },
    share: |rx| Some(rx.clone()),
    send: |tx, msg| tx.send_blocking(msg), recv: |rx| rx.recv_blocking().ok());

// tokio and std have different types for their bounded and unbounded channels: two
// adapters each, under one name.
chan!(Tokio, "tokio mpsc",
    Tx = tokio::sync::mpsc::Sender<T>, Rx = tokio::sync::mpsc::Receiver<T>,
    new: |flavor| match flavor {
        Flavor::Bounded(cap) if cap > 0 => Some(tokio::sync::mpsc::channel(cap)),
        _ => None,
    },
    share: |_rx| None,
    send: |tx, msg| tx.blocking_send(msg), recv: |rx| rx.blocking_recv());
chan!(TokioUnbounded, "tokio mpsc",
    Tx = tokio::sync::mpsc::UnboundedSender<T>, Rx = tokio::sync::mpsc::UnboundedReceiver<T>,
    new: |flavor| matches!(flavor, Flavor::Unbounded).then(tokio::sync::mpsc::unbounded_channel),
    share: |_rx| None,
    send: |tx, msg| tx.send(msg), recv: |rx| rx.blocking_recv());
chan!(StdSync, "std mpsc",
    Tx = std::sync::mpsc::SyncSender<T>, Rx = std::sync::mpsc::Receiver<T>,
    new: |flavor| match flavor {
        Flavor::Bounded(cap) => Some(std::sync::mpsc::sync_channel(cap)),
        Flavor::Unbounded => None,
    },
    share: |_rx| None,
    send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().ok());
chan!(StdUnbounded, "std mpsc",
    Tx = std::sync::mpsc::Sender<T>, Rx = std::sync::mpsc::Receiver<T>,
    new: |flavor| matches!(flavor, Flavor::Unbounded).then(std::sync::mpsc::channel),
    share: |_rx| None,
    send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().ok());

/// An async adapter: the send future (giving a `Result`) and the receive (`Option<T>`).
macro_rules! async_chan {
    ($ty:ident, send: |$t:ident, $m:ident| $send:expr, recv: |$r:ident| $recv:expr $(,)?) => {
        impl AsyncChan for $ty {
            async fn send_async<T: Msg>($t: &Self::Tx<T>, $m: T) {
                assert!($send.await.is_ok(), "receivers gone");
            }
            async fn recv_async<T: Msg>($r: &mut Self::Rx<T>) -> Option<T> {
                $recv
            }
        }
    };
}

async_chan!(Conduit, send: |tx, msg| tx.send_async(msg), recv: |rx| rx.recv_async().await.ok());
async_chan!(Flume, send: |tx, msg| tx.send_async(msg), recv: |rx| rx.recv_async().await.ok());
async_chan!(Kanal,
    send: |tx, msg| tx.as_async().send(msg), recv: |rx| rx.as_async().recv().await.ok());
async_chan!(AsyncChannel, send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().await.ok());
async_chan!(Tokio, send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().await);

// ---------------------------------------------------------------------------------------
// In-process scenarios and their two drivers (threads, tasks)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Payload {
    U64,
    Bytes256,
}

struct Scenario {
    name: &'static str,
    flavor: Flavor,
    producers: u64,
    consumers: u64,
    payload: Payload,
    is_async: bool,
    /// Messages per run in full mode.
    msgs: u64,
}

const fn scenario(name: &'static str, flavor: Flavor, producers: u64, consumers: u64) -> Scenario {
    Scenario {
        name,
        flavor,
        producers,
        consumers,
        payload: Payload::U64,
        is_async: false,
        msgs: 2_000_000,
    }
}

/// The in-process scenarios. Message counts are for full mode; quick mode moves a third,
/// and a scenario whose warm-up predicts more than its time budget moves fewer.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        msgs: 100_000,
        ..scenario("rendezvous SPSC", Flavor::Bounded(0), 1, 1)
    },
    Scenario {
        msgs: 200_000,
        ..scenario("bounded(1) SPSC", Flavor::Bounded(1), 1, 1)
    },
    scenario("bounded(1024) SPSC", Flavor::Bounded(1024), 1, 1),
    scenario("unbounded SPSC", Flavor::Unbounded, 1, 1),
    scenario("bounded(1024) MPSC 4x1", Flavor::Bounded(1024), 4, 1),
    scenario("bounded(1024) MPMC 4x4", Flavor::Bounded(1024), 4, 4),
    scenario("unbounded MPMC 4x4", Flavor::Unbounded, 4, 4),
    Scenario {
        is_async: true,
        ..scenario("async bounded(1024) SPSC", Flavor::Bounded(1024), 1, 1)
    },
    Scenario {
        is_async: true,
        ..scenario("async bounded(1024) MPSC 4x1", Flavor::Bounded(1024), 4, 1)
    },
    Scenario {
        payload: Payload::Bytes256,
        msgs: 1_000_000,
        ..scenario("bounded(1024) SPSC 256-byte", Flavor::Bounded(1024), 1, 1)
    },
];

/// The channel plus one receiver handle per consumer; `None` if unsupported.
#[allow(clippy::type_complexity)]
fn open<C: Chan, T: Msg>(s: &Scenario) -> Option<(C::Tx<T>, Vec<C::Rx<T>>)> {
    let (tx, rx) = C::new::<T>(s.flavor)?;
    let mut rxs = Vec::new();
    for _ in 1..s.consumers {
        rxs.push(C::share_rx(&rx)?);
    }
    rxs.push(rx);
    Some((tx, rxs))
}

/// Checks that every message arrived exactly once (the consumers' sums of message ids add
/// up) and returns the time per message in ns.
fn per_message<C: Chan>(s: &Scenario, per_producer: u64, sum: u64, elapsed: Duration) -> f64 {
    let expected = s.producers * (per_producer * per_producer.saturating_sub(1) / 2);
    assert_eq!(sum, expected, "{}: lost or duplicated messages", C::NAME);
    elapsed.as_nanos() as f64 / (per_producer * s.producers) as f64
}

/// Threads: producers and consumers start together at a barrier, and the clock runs from
/// the first thread through the barrier to the last consumer seeing the channel
/// disconnect. (Each thread reads the clock itself: on an oversubscribed machine a
/// coordinating thread may be scheduled long after the workers have finished.)
fn run_threads<C: Chan, T: Msg>(s: &Scenario, n: u64) -> Option<f64> {
    let (tx, rxs) = open::<C, T>(s)?;
    let per = (n / s.producers).max(1);
    let barrier = &Barrier::new((s.producers + s.consumers) as usize);
    let (start, end, sum) = thread::scope(|scope| {
        let producers: Vec<_> = (0..s.producers)
            .map(|_| {
                let tx = tx.clone();
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..per {
                        C::send(&tx, T::new(i));
                    }
                    start
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut sum = 0u64;
                    while let Some(m) = C::recv(&mut rx) {
                        sum += m.id();
                    }
                    (start, Instant::now(), sum)
                })
            })
            .collect();
        let mut start = producers.into_iter().map(|h| h.join().unwrap()).min();
        let (mut end, mut sum) = (None, 0);
        for (s, e, n) in consumers.into_iter().map(|h| h.join().unwrap()) {
            start = start.min(Some(s));
            end = end.max(Some(e));
            sum += n;
        }
        (start.unwrap(), end.unwrap(), sum)
    });
    Some(per_message::<C>(s, per, sum, end - start))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Tasks on the shared 2-worker runtime; the clock runs from spawning the first task to
/// the last consumer task's end (read by that task itself).
fn run_tasks<C: AsyncChan, T: Msg>(s: &Scenario, n: u64) -> Option<f64> {
    let (tx, rxs) = open::<C, T>(s)?;
    let per = (n / s.producers).max(1);
    let (start, end, sum) = runtime().block_on(async move {
        let start = Instant::now();
        let producers: Vec<_> = (0..s.producers)
            .map(|_| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        C::send_async(&tx, T::new(i)).await;
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Some(m) = C::recv_async(&mut rx).await {
                        sum += m.id();
                    }
                    (Instant::now(), sum)
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        let (mut end, mut sum) = (start, 0);
        for c in consumers {
            let (e, n) = c.await.unwrap();
            end = end.max(e);
            sum += n;
        }
        (start, end, sum)
    });
    Some(per_message::<C>(s, per, sum, end - start))
}

type Driver = fn(&Scenario, u64) -> Option<f64>;

/// A contender that runs the scenario with `u64` or 256-byte messages, as it asks.
fn contender(name: &'static str, s: &'static Scenario, small: Driver, big: Driver) -> Contender {
    let driver = match s.payload {
        Payload::U64 => small,
        Payload::Bytes256 => big,
    };
    Contender {
        name,
        run: Box::new(move |n| driver(s, n)),
    }
}

fn threads<C: Chan>(s: &'static Scenario) -> Contender {
    contender(C::NAME, s, run_threads::<C, u64>, run_threads::<C, Msg256>)
}

fn tasks<C: AsyncChan>(s: &'static Scenario) -> Contender {
    contender(C::NAME, s, run_tasks::<C, u64>, run_tasks::<C, Msg256>)
}

/// Every implementation for an in-process scenario, conduit first. Those that cannot do
/// the scenario drop out at the warm-up run.
fn in_process_contenders(s: &'static Scenario) -> Vec<Contender> {
    if s.is_async {
        vec![
            tasks::<Conduit>(s),
            tasks::<Tokio>(s),
            tasks::<Flume>(s),
            tasks::<Kanal>(s),
            tasks::<AsyncChannel>(s),
        ]
    } else {
        vec![
            threads::<Conduit>(s),
            threads::<Crossbeam>(s),
            threads::<Flume>(s),
            threads::<Kanal>(s),
            threads::<AsyncChannel>(s),
            threads::<Tokio>(s),
            threads::<TokioUnbounded>(s),
            threads::<StdSync>(s),
            threads::<StdUnbounded>(s),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Cross-process transports
// ---------------------------------------------------------------------------------------

const PIPE: &str = "pipe";

/// One end of a two-process link; both ends are made before the fork.
trait Transport: Sized {
    const NAME: &'static str;
    /// Whether the transport takes part in this scenario.
    fn supports(_kind: Ipc) -> bool {
        true
    }
    /// `(parent end, child end)` for messages of at most `msg_size` bytes.
    fn pair(msg_size: usize) -> io::Result<(Self, Self)>;
    /// Sends exactly `buf`.
    fn send(&mut self, buf: &[u8]);
    /// Receives a message of exactly `buf.len()` bytes.
    fn recv(&mut self, buf: &mut [u8]);
}

struct Stream<R, W> {
    r: R,
    w: W,
}

impl Transport for Stream<PipeReader, PipeWriter> {
    const NAME: &'static str = PIPE;
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let (r1, w1) = io::pipe()?;
        let (r2, w2) = io::pipe()?;
        Ok((Stream { r: r1, w: w2 }, Stream { r: r2, w: w1 }))
    }
    fn send(&mut self, buf: &[u8]) {
        self.w.write_all(buf).expect("pipe write");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.r.read_exact(buf).expect("pipe read");
    }
}

impl Transport for Stream<UnixStream, UnixStream> {
    const NAME: &'static str = "unix socket";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let (a, b) = UnixStream::pair()?;
        let (a2, b2) = (a.try_clone()?, b.try_clone()?);
        Ok((Stream { r: a, w: a2 }, Stream { r: b, w: b2 }))
    }
    fn send(&mut self, buf: &[u8]) {
        self.w.write_all(buf).expect("socket write");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.r.read_exact(buf).expect("socket read");
    }
}

/// Retries a libc call interrupted by a signal; panics on any other failure.
fn check(what: &str, mut call: impl FnMut() -> isize) -> usize {
    loop {
        let r = call();
        if r >= 0 {
            return r as usize;
        }
        let e = io::Error::last_os_error();
        assert!(e.kind() == io::ErrorKind::Interrupted, "{what}: {e}");
    }
}

const MAX_MSG: usize = 64;

/// One SysV queue; the message type says the direction (1: to the child, 2: to the parent).
struct SysV {
    id: libc::c_int,
    tx_type: libc::c_long,
    rx_type: libc::c_long,
    owner: bool,
}

#[repr(C)]
struct SysVBuf {
    mtype: libc::c_long,
    text: [u8; MAX_MSG],
}

impl Transport for SysV {
    const NAME: &'static str = "SysV msg queue";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        // SAFETY: plain system call.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = |tx_type, rx_type, owner| SysV {
            id,
            tx_type,
            rx_type,
            owner,
        };
        Ok((end(1, 2, true), end(2, 1, false)))
    }
    fn send(&mut self, buf: &[u8]) {
        let mut m = SysVBuf {
            mtype: self.tx_type,
            text: [0; MAX_MSG],
        };
        m.text[..buf.len()].copy_from_slice(buf);
        // SAFETY: `m` is a valid message buffer of `buf.len()` text bytes.
        check("msgsnd", || unsafe {
            libc::msgsnd(self.id, (&raw const m).cast(), buf.len(), 0) as isize
        });
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut m = SysVBuf {
            mtype: 0,
            text: [0; MAX_MSG],
        };
        // SAFETY: `m` has room for `MAX_MSG` text bytes.
        let n = check("msgrcv", || unsafe {
            libc::msgrcv(self.id, (&raw mut m).cast(), MAX_MSG, self.rx_type, 0)
        });
        assert_eq!(n, buf.len(), "msgrcv: unexpected message size");
        buf.copy_from_slice(&m.text[..n]);
    }
}

impl Drop for SysV {
    fn drop(&mut self) {
        if self.owner {
            // SAFETY: removes the queue this end created.
            unsafe { libc::msgctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

/// Two POSIX queues, one per direction, unlinked as soon as both are open.
struct PosixMq {
    tx: libc::mqd_t,
    rx: libc::mqd_t,
    owner: bool,
}

fn mq_create(msg_size: usize) -> io::Result<libc::mqd_t> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "/conduit-bench.{}.{}\0",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    // SAFETY: an all-zero `mq_attr` is valid; the fields that matter are set below.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 10; // the default /proc/sys/fs/mqueue/msg_max
    attr.mq_msgsize = msg_size as _;
    // SAFETY: `name` is NUL-terminated; `attr` outlives the call.
    let q = unsafe {
        libc::mq_open(
            name.as_ptr().cast(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o600 as libc::mode_t,
            &raw const attr,
        )
    };
    if q < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe { libc::mq_unlink(name.as_ptr().cast()) };
    Ok(q)
}

impl Transport for PosixMq {
    const NAME: &'static str = "POSIX msg queue";
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        let a = mq_create(msg_size)?;
        let b = match mq_create(msg_size) {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: closes the queue opened above.
                unsafe { libc::mq_close(a) };
                return Err(e);
            }
        };
        let end = |tx, rx, owner| PosixMq { tx, rx, owner };
        Ok((end(a, b, true), end(b, a, false)))
    }
    fn send(&mut self, buf: &[u8]) {
        // SAFETY: `buf` is valid for its length.
        check("mq_send", || unsafe {
            libc::mq_send(self.tx, buf.as_ptr().cast(), buf.len(), 0) as isize
        });
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut m = [0u8; MAX_MSG];
        // SAFETY: `m` has room for `MAX_MSG` ≥ the queue's message size.
        let n = check("mq_receive", || unsafe {
            libc::mq_receive(
                self.rx,
                m.as_mut_ptr().cast(),
                MAX_MSG,
                std::ptr::null_mut(),
            )
        });
        assert_eq!(n, buf.len(), "mq_receive: unexpected message size");
        buf.copy_from_slice(&m[..n]);
    }
}

impl Drop for PosixMq {
    fn drop(&mut self) {
        if self.owner {
            // SAFETY: closes the queues this end opened.
            unsafe {
                libc::mq_close(self.tx);
                libc::mq_close(self.rx);
            }
        }
    }
}

/// A page (or more) of `MAP_SHARED | MAP_ANONYMOUS` memory, shared with the forked child.
struct SharedMap {
    ptr: *mut u8,
    len: usize,
    owner: bool,
}

impl SharedMap {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping, zero-filled by the kernel.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap {
            ptr: ptr.cast(),
            len,
            owner: true,
        })
    }

    /// A second, non-owning handle for the other process.
    fn peer(&self) -> Self {
        SharedMap {
            ptr: self.ptr,
            len: self.len,
            owner: false,
        }
    }

    /// The atomic word at byte `offset` (8-aligned, in bounds).
    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: in bounds, aligned, and only ever accessed atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) }
    }

    /// Copies `buf` into the mapping at `offset`.
    fn write(&self, offset: usize, buf: &[u8]) {
        assert!(offset + buf.len() <= self.len);
        // SAFETY: in bounds; the protocol gives this process exclusive use of the bytes.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.ptr.add(offset), buf.len()) };
    }

    /// Copies bytes at `offset` out into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset + buf.len() <= self.len);
        // SAFETY: in bounds; the protocol gives this process exclusive use of the bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        if self.owner {
            // SAFETY: unmaps the mapping this handle created.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Spins until `done()`. After a long while (some hundreds of microseconds) it also
/// yields the CPU on every try, so that a peer descheduled on a busy machine gets to run;
/// yielding any sooner costs the ping-pong a multiple of its round trip.
fn spin_until(mut done: impl FnMut() -> bool) {
    let mut spins = 0u32;
    while !done() {
        if spins < 1 << 14 {
            spins += 1;
            spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// The ping-pong limit: both processes spin on ONE cache line holding a token counter and
/// the payload. The token passes on every message and only its holder writes the line;
/// the child holds it first (for its hello). Each side knows the token's next value, so a
/// send is two plain stores. Only strict alternation works, so there is no one-way stream.
struct SpinLine {
    map: SharedMap,
    /// The token's value while this side holds it.
    token: u64,
}

impl Transport for SpinLine {
    const NAME: &'static str = "spin: one cache line";
    fn supports(kind: Ipc) -> bool {
        kind == Ipc::PingPong
    }
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        assert!(msg_size <= 56);
        let map = SharedMap::new(4096)?;
        let child = SpinLine {
            map: map.peer(),
            token: 0,
        };
        Ok((SpinLine { map, token: 1 }, child))
    }
    fn send(&mut self, buf: &[u8]) {
        debug_assert_eq!(self.map.word(0).load(Ordering::Relaxed), self.token);
        self.map.write(8, buf);
        self.token += 2;
        self.map.word(0).store(self.token - 1, Ordering::Release);
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let word = self.map.word(0);
        spin_until(|| word.load(Ordering::Acquire) == self.token);
        self.map.read(8, buf);
    }
}

/// The one-way limit: a single-producer single-consumer ring per direction in shared
/// memory (ping-pong leaves it to [`SpinLine`]), 256 slots of 128 bytes; a slot's first word is 0 when free and `seq + 1` when
/// it holds message `seq`.
struct SpinRing {
    map: SharedMap,
    tx_ring: usize,
    rx_ring: usize,
    tx_seq: u64,
    rx_seq: u64,
}

const RING_SLOTS: usize = 256;
const SLOT_BYTES: usize = 128;
const RING_BYTES: usize = RING_SLOTS * SLOT_BYTES;

impl SpinRing {
    fn slot(ring: usize, seq: u64) -> usize {
        ring + (seq as usize % RING_SLOTS) * SLOT_BYTES
    }
}

impl Transport for SpinRing {
    const NAME: &'static str = "spin: SPSC ring";
    fn supports(kind: Ipc) -> bool {
        kind == Ipc::OneWay
    }
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        assert!(msg_size <= SLOT_BYTES - 8);
        let map = SharedMap::new(2 * RING_BYTES)?;
        let end = |map, tx_ring, rx_ring| SpinRing {
            map,
            tx_ring,
            rx_ring,
            tx_seq: 0,
            rx_seq: 0,
        };
        let child = end(map.peer(), RING_BYTES, 0);
        Ok((end(map, 0, RING_BYTES), child))
    }
    fn send(&mut self, buf: &[u8]) {
        let slot = Self::slot(self.tx_ring, self.tx_seq);
        let stamp = self.map.word(slot);
        spin_until(|| stamp.load(Ordering::Acquire) == 0);
        self.map.write(slot + 8, buf);
        self.tx_seq += 1;
        stamp.store(self.tx_seq, Ordering::Release);
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let slot = Self::slot(self.rx_ring, self.rx_seq);
        let stamp = self.map.word(slot);
        let full = self.rx_seq + 1;
        spin_until(|| stamp.load(Ordering::Acquire) == full);
        self.map.read(slot + 8, buf);
        self.rx_seq = full;
        stamp.store(0, Ordering::Release);
    }
}

/// A reference, neither a peer nor the limit: the ring protocol that `conduit::shm` runs
/// (Vyukov's bounded MPMC queue: a sender claims `tail` by CAS when the slot's stamp says
/// free, a receiver claims `head` when it says full; commits are CASes of the stamp, each
/// followed by a SeqCst fence), bare: no intent lanes or crash recovery, no validation of
/// the shared memory, no futex waits, no peer table. Its distance from the spin limit is
/// what the protocol costs; conduit's distance from it is what the rest costs. 1024 slots
/// per direction, each a stamp and the payload, rounded up to a power of two (16 bytes
/// for the ping-pong's 8-byte messages, 128 for the stream's 64).
struct StampRing {
    map: SharedMap,
    tx_ring: usize,
    rx_ring: usize,
    slot_bytes: usize,
}

const STAMP_SLOTS: u64 = 1024;
/// `head` and `tail` sit on 128-byte blocks of their own before the slots.
const STAMP_SLOTS_OFFSET: usize = 256;

impl StampRing {
    fn ring_bytes(slot_bytes: usize) -> usize {
        STAMP_SLOTS_OFFSET + STAMP_SLOTS as usize * slot_bytes
    }
    fn stamp(&self, ring: usize, pos: u64) -> (&AtomicU64, usize) {
        let slot = ring + STAMP_SLOTS_OFFSET + (pos % STAMP_SLOTS) as usize * self.slot_bytes;
        (self.map.word(slot), slot + 8)
    }
    /// One claim attempt; `false` if the ring is full (or another sender moved on).
    fn try_send(&self, buf: &[u8]) -> bool {
        let tail = self.map.word(self.tx_ring + 128);
        let pos = tail.load(Ordering::Relaxed);
        let (stamp, payload) = self.stamp(self.tx_ring, pos);
        if stamp.load(Ordering::Acquire) != pos
            || tail
                .compare_exchange(pos, pos + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.map.write(payload, buf);
        // Nothing else writes a claimed slot's stamp here; conduit's commit is a CAS
        // because a survivor may publish a skip in it.
        let committed = stamp.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
        debug_assert!(committed.is_ok());
        true
    }
    /// One claim attempt; `false` if the ring is empty (or another receiver moved on).
    fn try_recv(&self, buf: &mut [u8]) -> bool {
        let head = self.map.word(self.rx_ring);
        let pos = head.load(Ordering::Relaxed);
        let (stamp, payload) = self.stamp(self.rx_ring, pos);
        if stamp.load(Ordering::Acquire) != pos + 1
            || head
                .compare_exchange(pos, pos + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.map.read(payload, buf);
        let freed = stamp.compare_exchange(
            pos + 1,
            pos + STAMP_SLOTS,
            Ordering::Release,
            Ordering::Relaxed,
        );
        std::sync::atomic::fence(Ordering::SeqCst);
        debug_assert!(freed.is_ok());
        true
    }
}

impl Transport for StampRing {
    const NAME: &'static str = "ref: MPMC stamp ring";
    fn pair(msg_size: usize) -> io::Result<(Self, Self)> {
        let slot_bytes = (8 + msg_size).next_power_of_two();
        let ring_bytes = Self::ring_bytes(slot_bytes);
        let map = SharedMap::new(2 * ring_bytes)?;
        let end = |map, tx_ring, rx_ring| StampRing {
            map,
            tx_ring,
            rx_ring,
            slot_bytes,
        };
        let parent = end(map, 0, ring_bytes);
        for ring in [0, ring_bytes] {
            for pos in 0..STAMP_SLOTS {
                parent.stamp(ring, pos).0.store(pos, Ordering::Relaxed);
            }
        }
        let child = end(parent.map.peer(), ring_bytes, 0);
        Ok((parent, child))
    }
    fn send(&mut self, buf: &[u8]) {
        spin_until(|| self.try_send(buf));
    }
    fn recv(&mut self, buf: &mut [u8]) {
        spin_until(|| self.try_recv(buf));
    }
}

// ---------------------------------------------------------------------------------------
// Cross-process scenarios
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ipc {
    /// 8-byte message there and back; time per round trip.
    PingPong,
    /// A stream of 64-byte messages, acknowledged once at the end; time per message.
    OneWay,
}

impl Ipc {
    fn name(self) -> &'static str {
        match self {
            Ipc::PingPong => "ipc ping-pong 8-byte (per round trip)",
            Ipc::OneWay => "ipc one-way 64-byte",
        }
    }
    fn msg_size(self) -> usize {
        match self {
            Ipc::PingPong => 8,
            Ipc::OneWay => 64,
        }
    }
    /// Messages per run in full mode.
    fn msgs(self) -> u64 {
        match self {
            Ipc::PingPong => 100_000,
            Ipc::OneWay => 500_000,
        }
    }
}

/// Forks a child that says hello over its end and then runs `child`; the parent waits for
/// the hello, runs `parent` and reaps the child. Only called while this process has a
/// single thread, so the child may do anything the parent could. A watchdog alarm ends
/// both processes if a transport ever wedges, rather than hanging the whole run.
fn with_child<T: Transport, R>(
    (mut parent_end, mut child_end): (T, T),
    child: impl FnOnce(&mut T),
    parent: impl FnOnce(&mut T) -> R,
) -> R {
    const WATCHDOG_SECS: libc::c_uint = 120;
    let threads = fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    assert_eq!(
        threads, 1,
        "the ipc scenarios must fork before any thread starts"
    );
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let pinning = Pinning::new();
    // SAFETY: `alarm` is a plain system call; the process is single-threaded at the fork
    // (see `main`). The alarm is not inherited: the child sets its own.
    unsafe { libc::alarm(WATCHDOG_SECS) };
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => {
            // SAFETY: as above.
            unsafe { libc::alarm(WATCHDOG_SECS) };
            if let Some(p) = &pinning {
                p.pin(p.child);
            }
            let ok = panic::catch_unwind(panic::AssertUnwindSafe(|| {
                child_end.send(&[0; 8]);
                child(&mut child_end);
            }))
            .is_ok();
            // SAFETY: leaves at once, without running the parent's destructors or
            // flushing its buffers a second time.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => {
            drop(child_end);
            // Unpinned again when the run ends, even by a panic.
            let _pinned = pinning.as_ref().map(Pinning::pin_parent);
            parent_end.recv(&mut [0; 8]);
            let result = parent(&mut parent_end);
            let mut status = 0;
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
            // SAFETY: cancels the watchdog.
            unsafe { libc::alarm(0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{}: child failed",
                T::NAME
            );
            result
        }
    }
}

/// Two different CPUs for the two processes of an `ipc` run, and the parent's own CPU
/// set to restore afterwards (the in-process scenarios use every CPU).
struct Pinning {
    allowed: libc::cpu_set_t,
    parent: usize,
    child: usize,
}

impl Pinning {
    /// `None` where this process may run on fewer than two CPUs (or the set cannot be
    /// read): then nothing is pinned.
    fn new() -> Option<Self> {
        // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `allowed` is a writable `cpu_set_t` of the size passed.
        let got = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut allowed)
        };
        if got != 0 {
            return None;
        }
        let mut cpus = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below `CPU_SETSIZE`, the set's capacity.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) });
        let (parent, child) = (cpus.next()?, cpus.next()?);
        Some(Pinning {
            allowed,
            parent,
            child,
        })
    }

    /// Restricts the calling process to `cpu`.
    fn pin(&self, cpu: usize) {
        // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` came from `allowed`, so it is below `CPU_SETSIZE`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        self.set(&set);
    }

    /// Restricts the calling (parent) process to its CPU until the guard is dropped.
    fn pin_parent(&self) -> Pinned<'_> {
        self.pin(self.parent);
        Pinned(self)
    }

    fn set(&self, set: &libc::cpu_set_t) {
        // SAFETY: `set` is a valid `cpu_set_t` of the size passed. A failure only leaves
        // the affinity as it was, which the measurement survives.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    }
}

/// The parent's pinning: dropping it gives the process back every CPU it had.
struct Pinned<'a>(&'a Pinning);

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.0.set(&self.0.allowed);
    }
}

fn run_ipc<T: Transport>(kind: Ipc, n: u64) -> Option<f64> {
    if !T::supports(kind) {
        return None;
    }
    let ends = T::pair(kind.msg_size())
        .map_err(|e| eprintln!("  {} skipped: {e}", T::NAME))
        .ok()?;
    let elapsed = match kind {
        Ipc::PingPong => with_child(
            ends,
            |c| {
                let mut buf = [0u8; 8];
                for _ in 0..n {
                    c.recv(&mut buf);
                    c.send(&buf);
                }
            },
            |p| {
                let start = Instant::now();
                let mut buf = [0u8; 8];
                for i in 0..n {
                    p.send(&i.to_le_bytes());
                    p.recv(&mut buf);
                    assert_eq!(u64::from_le_bytes(buf), i, "{}: wrong reply", T::NAME);
                }
                start.elapsed()
            },
        ),
        Ipc::OneWay => with_child(
            ends,
            |c| {
                let mut buf = [0u8; 64];
                for i in 0..n {
                    c.recv(&mut buf);
                    assert_eq!(buf[..8], i.to_le_bytes(), "{}: out of order", T::NAME);
                }
                c.send(&[1; 8]);
            },
            |p| {
                let start = Instant::now();
                let mut buf = [7u8; 64];
                for i in 0..n {
                    buf[..8].copy_from_slice(&i.to_le_bytes());
                    p.send(&buf);
                }
                p.recv(&mut [0; 8]);
                start.elapsed()
            },
        ),
    };
    Some(elapsed.as_nanos() as f64 / n as f64)
}

fn ipc<T: Transport + 'static>(kind: Ipc) -> Contender {
    Contender {
        name: T::NAME,
        run: Box::new(move |n| run_ipc::<T>(kind, n)),
    }
}

/// conduit's cross-process channel: one `conduit::shm` channel of `[u8; N]` per
/// direction, 1024 slots. The parent creates both (before the fork) and unlinks them when
/// it drops its end; the child opens its handles by name on first use, after the fork,
/// so that each process attaches as a peer of its own.
struct ConduitShm<const N: usize>
where
    [u8; N]: shm::ShmSafe,
{
    /// The channel names: parent to child, child to parent.
    names: [String; 2],
    is_parent: bool,
    ends: Option<ShmEnds<N>>,
}

/// One process's handles: to the peer, from the peer.
type ShmEnds<const N: usize> = (shm::Sender<[u8; N]>, shm::Receiver<[u8; N]>);

impl<const N: usize> ConduitShm<N>
where
    [u8; N]: shm::ShmSafe,
{
    fn ends(&mut self) -> &ShmEnds<N> {
        let (is_parent, names) = (self.is_parent, &self.names);
        self.ends.get_or_insert_with(|| {
            let (to_peer, from_peer) = if is_parent {
                (&names[0], &names[1])
            } else {
                (&names[1], &names[0])
            };
            let open = shm::Options::new();
            let ends = (
                shm::Sender::with(to_peer, &open),
                shm::Receiver::with(from_peer, &open),
            );
            match ends {
                (Ok(tx), Ok(rx)) => (tx, rx),
                (Err(e), _) | (_, Err(e)) => panic!("conduit shm: {e}"),
            }
        })
    }
}

impl<const N: usize> Transport for ConduitShm<N>
where
    [u8; N]: shm::ShmSafe,
{
    const NAME: &'static str = "conduit shm";
    fn supports(kind: Ipc) -> bool {
        kind.msg_size() == N
    }
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let stem = format!(
            "conduit-bench.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let names = [format!("{stem}.down"), format!("{stem}.up")];
        let create = shm::Options::new()
            .capacity(1024)
            .create_new(true)
            .unlink_on_drop(true);
        let tx = shm::Sender::with(&names[0], &create)?;
        let rx = shm::Receiver::with(&names[1], &create)?;
        let child = ConduitShm {
            names: names.clone(),
            is_parent: false,
            ends: None,
        };
        let parent = ConduitShm {
            names,
            is_parent: true,
            ends: Some((tx, rx)),
        };
        Ok((parent, child))
    }
    fn send(&mut self, buf: &[u8]) {
        let mut msg = [0u8; N];
        msg[..buf.len()].copy_from_slice(buf);
        assert!(self.ends().0.send(msg).is_ok(), "conduit shm: send");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let msg = self.ends().1.recv().expect("conduit shm: recv");
        buf.copy_from_slice(&msg[..buf.len()]);
    }
}

/// conduit's own contenders in the `ipc` scenarios (each takes the scenario whose message
/// size it carries). With them, the ipc tables gain a "conduit ÷ pipe, ÷ spin limit" row.
fn conduit_ipc_contenders(kind: Ipc) -> Vec<Contender> {
    vec![ipc::<ConduitShm<8>>(kind), ipc::<ConduitShm<64>>(kind)]
}

fn ipc_contenders(kind: Ipc) -> Vec<Contender> {
    let mut v = conduit_ipc_contenders(kind);
    v.extend([
        ipc::<Stream<PipeReader, PipeWriter>>(kind),
        ipc::<Stream<UnixStream, UnixStream>>(kind),
        ipc::<SysV>(kind),
        ipc::<PosixMq>(kind),
        ipc::<SpinLine>(kind),
        ipc::<SpinRing>(kind),
        ipc::<StampRing>(kind),
    ]);
    v
}

// ---------------------------------------------------------------------------------------

fn main() {
    let cfg = Config::from_env();
    let started = Instant::now();
    match cfg.mode {
        Mode::Full => eprintln!("compare: full mode (pass --quick for a short run)"),
        Mode::Quick => eprintln!("compare: quick mode"),
        Mode::Smoke => eprintln!("compare: smoke test (no --bench argument; nothing is saved)"),
    }
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let mut run = |name: &str, ipc: bool, unit: &str, full: u64, contenders: Vec<Contender>| {
        let t = Instant::now();
        let before = line_round_trip_ns();
        let (msgs, reps, stats) = measure(&cfg, contenders, full);
        let check = Check {
            before,
            after: line_round_trip_ns(),
        };
        let title = format!(
            "{name} — {msgs} msgs × {reps} reps — machine check {:.0} / {:.0} ns",
            check.before, check.after
        );
        rows.extend(report(name, &title, unit, ipc, check, stats));
        checks.push((name.to_string(), check));
        eprintln!("  ({name}: {:.1} s)", t.elapsed().as_secs_f64());
    };

    // The ipc scenarios fork, so they run first, while this process has one thread.
    for kind in [Ipc::PingPong, Ipc::OneWay] {
        if cfg.selects(kind.name()) {
            let unit = if kind == Ipc::PingPong {
                "ns/rt"
            } else {
                "ns/msg"
            };
            run(kind.name(), true, unit, kind.msgs(), ipc_contenders(kind));
        }
    }
    for s in SCENARIOS.iter().filter(|s| cfg.selects(s.name)) {
        run(s.name, false, "ns/msg", s.msgs, in_process_contenders(s));
    }

    eprintln!(
        "\ncompare: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A smoke run's scenarios last milliseconds (unoptimized, under `cargo test`): too
    // short for the check to say anything about them.
    if cfg.mode != Mode::Smoke && !rows.is_empty() {
        warn_about_checks(&checks);
        match write_json(&rows) {
            Ok(path) => eprintln!("compare: results in {}", path.display()),
            Err(e) => eprintln!("compare: could not write results.json: {e}"),
        }
    }
}
