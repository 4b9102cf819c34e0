//! conduit against its peers, side by side in one run.
//!
//! `cargo bench --bench compare` runs every scenario for conduit and each peer that
//! supports it, interleaved (round-robin over implementations within each repetition),
//! and prints one markdown table per scenario: median and minimum ns per message, and
//! each implementation's ratio to the best *peer*'s median (`< 1.0`: faster than every
//! peer). Results also go to `target/conduit-bench/results.json`.
//!
//! Options (after `--`): `--quick` (or `CONDUIT_BENCH_QUICK=1`) for a run of under two
//! minutes; any other word filters scenarios by substring.
//!
//! In-process peers: crossbeam-channel, flume, kanal, async-channel, tokio::sync::mpsc,
//! std::sync::mpsc. Cross-process peers: a pipe, a unix socket pair, a SysV message
//! queue, a POSIX message queue, and the physical limit: two processes spinning on one
//! shared cache line.

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

mod ipc;

/// A blocking channel implementation under test.
trait SyncImpl {
    const NAME: &'static str;
    type Tx<M: Send + 'static>: Clone + Send;
    type Rx<M: Send + 'static>: Send;
    /// `None` capacity = unbounded; `None` result = not supported.
    fn make<M: Send + 'static>(cap: Option<usize>) -> Option<(Self::Tx<M>, Self::Rx<M>)>;
    fn send<M: Send + 'static>(tx: &Self::Tx<M>, m: M);
    /// `None` once disconnected and empty.
    fn recv<M: Send + 'static>(rx: &Self::Rx<M>) -> Option<M>;
    /// A second consumer, if the implementation is multi-consumer.
    fn clone_rx<M: Send + 'static>(rx: &Self::Rx<M>) -> Option<Self::Rx<M>>;
}

/// An async channel implementation under test.
trait AsyncImpl {
    const NAME: &'static str;
    type Tx<M: Send + 'static>: Clone + Send + 'static;
    type Rx<M: Send + 'static>: Send + 'static;
    fn make<M: Send + 'static>(cap: usize) -> (Self::Tx<M>, Self::Rx<M>);
    fn send<M: Send + 'static>(tx: &Self::Tx<M>, m: M) -> impl Future<Output = ()> + Send;
    fn recv<M: Send + 'static>(rx: &mut Self::Rx<M>) -> impl Future<Output = Option<M>> + Send;
}

/// Defines a blocking adapter in a few lines.
macro_rules! sync_impl {
    ($ty:ident, $name:literal, $tx:ident, $rx:ident,
     make: |$cap:ident| $make:expr,
     send: |$t:ident, $m:ident| $send:expr,
     recv: |$r:ident| $recv:expr,
     clone_rx: |$c:ident| $clone:expr) => {
        struct $ty;
        impl SyncImpl for $ty {
            const NAME: &'static str = $name;
            type Tx<M: Send + 'static> = $tx<M>;
            type Rx<M: Send + 'static> = $rx<M>;
            fn make<M: Send + 'static>($cap: Option<usize>) -> Option<($tx<M>, $rx<M>)> {
                $make
            }
            fn send<M: Send + 'static>($t: &$tx<M>, $m: M) {
                $send
            }
            fn recv<M: Send + 'static>($r: &$rx<M>) -> Option<M> {
                $recv
            }
            fn clone_rx<M: Send + 'static>($c: &$rx<M>) -> Option<$rx<M>> {
                $clone
            }
        }
    };
}

use async_channel::{Receiver as AcRx, Sender as AcTx};
use conduit::{Receiver as CdRx, Sender as CdTx};
use crossbeam_channel::{Receiver as CbRx, Sender as CbTx};
use flume::{Receiver as FlRx, Sender as FlTx};
use kanal::{Receiver as KnRx, Sender as KnTx};

sync_impl!(Conduit, "conduit", CdTx, CdRx,
    make: |cap| Some(match cap { Some(c) => conduit::bounded(c), None => conduit::unbounded() }),
    send: |tx, m| assert!(tx.send(m).is_ok(), "send"),
    recv: |rx| rx.recv().ok(),
    clone_rx: |rx| Some(rx.clone()));
sync_impl!(Crossbeam, "crossbeam-channel", CbTx, CbRx,
    make: |cap| Some(match cap {
        Some(c) => crossbeam_channel::bounded(c),
        None => crossbeam_channel::unbounded(),
    }),
    send: |tx, m| assert!(tx.send(m).is_ok(), "send"),
    recv: |rx| rx.recv().ok(),
    clone_rx: |rx| Some(rx.clone()));
sync_impl!(Flume, "flume", FlTx, FlRx,
    make: |cap| Some(match cap { Some(c) => flume::bounded(c), None => flume::unbounded() }),
    send: |tx, m| assert!(tx.send(m).is_ok(), "send"),
    recv: |rx| rx.recv().ok(),
    clone_rx: |rx| Some(rx.clone()));
sync_impl!(Kanal, "kanal", KnTx, KnRx,
    make: |cap| Some(match cap { Some(c) => kanal::bounded(c), None => kanal::unbounded() }),
    send: |tx, m| assert!(tx.send(m).is_ok(), "send"),
    recv: |rx| rx.recv().ok(),
    clone_rx: |rx| Some(rx.clone()));
sync_impl!(AsyncChan, "async-channel", AcTx, AcRx,
    make: |cap| match cap {
        Some(0) => None,
        Some(c) => Some(async_channel::bounded(c)),
        None => Some(async_channel::unbounded()),
    },
    send: |tx, m| assert!(tx.send_blocking(m).is_ok(), "send"),
    recv: |rx| rx.recv_blocking().ok(),
    clone_rx: |rx| Some(rx.clone()));

/// std's channel: `sync_channel(n)` when bounded, `channel()` when not.
enum StdTx<M> {
    Sync(std::sync::mpsc::SyncSender<M>),
    Async(std::sync::mpsc::Sender<M>),
}
impl<M> Clone for StdTx<M> {
    fn clone(&self) -> Self {
        match self {
            StdTx::Sync(t) => StdTx::Sync(t.clone()),
            StdTx::Async(t) => StdTx::Async(t.clone()),
        }
    }
}
type StdRx<M> = std::sync::mpsc::Receiver<M>;
sync_impl!(StdMpsc, "std::sync::mpsc", StdTx, StdRx,
    make: |cap| Some(match cap {
        Some(c) => {
            let (t, r) = std::sync::mpsc::sync_channel(c);
            (StdTx::Sync(t), r)
        }
        None => {
            let (t, r) = std::sync::mpsc::channel();
            (StdTx::Async(t), r)
        }
    }),
    send: |tx, m| match tx {
        StdTx::Sync(t) => assert!(t.send(m).is_ok(), "send"),
        StdTx::Async(t) => assert!(t.send(m).is_ok(), "send"),
    },
    recv: |rx| rx.recv().ok(),
    clone_rx: |_rx| None);

/// Defines an async adapter in a few lines.
macro_rules! async_impl {
    ($ty:ident, $name:literal, $tx:ty, $rx:ty,
     make: |$cap:ident| $make:expr,
     send: |$t:ident, $m:ident| $send:expr,
     recv: |$r:ident| $recv:expr) => {
        struct $ty;
        impl AsyncImpl for $ty {
            const NAME: &'static str = $name;
            type Tx<M: Send + 'static> = $tx;
            type Rx<M: Send + 'static> = $rx;
            fn make<M: Send + 'static>($cap: usize) -> (Self::Tx<M>, Self::Rx<M>) {
                $make
            }
            fn send<M: Send + 'static>($t: &Self::Tx<M>, $m: M) -> impl Future<Output = ()> + Send {
                async move { $send }
            }
            fn recv<M: Send + 'static>(
                $r: &mut Self::Rx<M>,
            ) -> impl Future<Output = Option<M>> + Send {
                async move { $recv }
            }
        }
    };
}

async_impl!(ConduitAsync, "conduit", CdTx<M>, CdRx<M>,
    make: |cap| conduit::bounded(cap),
    send: |tx, m| assert!(tx.send_async(m).await.is_ok(), "send"),
    recv: |rx| rx.recv_async().await.ok());
async_impl!(FlumeAsync, "flume", FlTx<M>, FlRx<M>,
    make: |cap| flume::bounded(cap),
    send: |tx, m| assert!(tx.send_async(m).await.is_ok(), "send"),
    recv: |rx| rx.recv_async().await.ok());
async_impl!(KanalAsync, "kanal", kanal::AsyncSender<M>, kanal::AsyncReceiver<M>,
    make: |cap| kanal::bounded_async(cap),
    send: |tx, m| assert!(tx.send(m).await.is_ok(), "send"),
    recv: |rx| rx.recv().await.ok());
async_impl!(AsyncChanAsync, "async-channel", AcTx<M>, AcRx<M>,
    make: |cap| async_channel::bounded(cap),
    send: |tx, m| assert!(tx.send(m).await.is_ok(), "send"),
    recv: |rx| rx.recv().await.ok());
async_impl!(TokioAsync, "tokio::sync::mpsc", tokio::sync::mpsc::Sender<M>,
    tokio::sync::mpsc::Receiver<M>,
    make: |cap| tokio::sync::mpsc::channel(cap),
    send: |tx, m| assert!(tx.send(m).await.is_ok(), "send"),
    recv: |rx| rx.recv().await);

/// A 256-byte message.
#[derive(Clone, Copy)]
#[allow(dead_code)] // its bytes are only moved and handed to `black_box`
struct Big([u64; 32]);

/// One measured run: `Some(total time)` or `None` if unsupported.
type Run = Box<dyn Fn(u64) -> Option<Duration>>;

/// Blocking scenario: `producers` threads send `n` messages in total, `consumers`
/// threads receive them all.
fn sync_run<I: SyncImpl, M: Send + 'static>(
    cap: Option<usize>,
    producers: u64,
    consumers: usize,
    msg: fn(u64) -> M,
) -> Run {
    Box::new(move |n| {
        let (tx, rx) = I::make::<M>(cap)?;
        let mut rxs = vec![rx];
        for _ in 1..consumers {
            rxs.push(I::clone_rx(&rxs[0])?);
        }
        let per = n / producers;
        let start = Instant::now();
        let received: u64 = std::thread::scope(|s| {
            for _ in 0..producers {
                let tx = tx.clone();
                s.spawn(move || {
                    for i in 0..per {
                        I::send(&tx, msg(i));
                    }
                });
            }
            drop(tx);
            let handles: Vec<_> = rxs
                .into_iter()
                .map(|rx| {
                    s.spawn(move || {
                        let mut k = 0u64;
                        while let Some(m) = I::recv(&rx) {
                            std::hint::black_box(m);
                            k += 1;
                        }
                        k
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let elapsed = start.elapsed();
        assert_eq!(received, per * producers, "{} lost messages", I::NAME);
        Some(elapsed)
    })
}

/// Async scenario on a 2-worker tokio runtime: `producers` tasks, one consumer task.
fn async_run<I: AsyncImpl>(cap: usize, producers: u64) -> Run {
    Box::new(move |n| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let per = n / producers;
        let start = Instant::now();
        let received = rt.block_on(async move {
            let (tx, mut rx) = I::make::<u64>(cap);
            for _ in 0..producers {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        I::send(&tx, i).await;
                    }
                });
            }
            drop(tx);
            let consumer = tokio::spawn(async move {
                let mut k = 0u64;
                while let Some(m) = I::recv(&mut rx).await {
                    std::hint::black_box(m);
                    k += 1;
                }
                k
            });
            consumer.await.unwrap()
        });
        let elapsed = start.elapsed();
        assert_eq!(received, per * producers, "{} lost messages", I::NAME);
        Some(elapsed)
    })
}

/// A scenario: a name, messages per run, and one run function per implementation.
struct Scenario {
    name: String,
    messages: u64,
    impls: Vec<(&'static str, Run)>,
}

fn sync_scenario<M: Send + 'static>(
    name: &str,
    messages: u64,
    cap: Option<usize>,
    producers: u64,
    consumers: usize,
    msg: fn(u64) -> M,
) -> Scenario {
    let impls: Vec<(&'static str, Run)> = vec![
        (
            Conduit::NAME,
            sync_run::<Conduit, M>(cap, producers, consumers, msg),
        ),
        (
            Crossbeam::NAME,
            sync_run::<Crossbeam, M>(cap, producers, consumers, msg),
        ),
        (
            Flume::NAME,
            sync_run::<Flume, M>(cap, producers, consumers, msg),
        ),
        (
            Kanal::NAME,
            sync_run::<Kanal, M>(cap, producers, consumers, msg),
        ),
        (
            AsyncChan::NAME,
            sync_run::<AsyncChan, M>(cap, producers, consumers, msg),
        ),
        (
            StdMpsc::NAME,
            sync_run::<StdMpsc, M>(cap, producers, consumers, msg),
        ),
    ];
    Scenario {
        name: name.to_string(),
        messages,
        impls,
    }
}

fn async_scenario(name: &str, messages: u64, cap: usize, producers: u64) -> Scenario {
    let impls: Vec<(&'static str, Run)> = vec![
        (
            ConduitAsync::NAME,
            async_run::<ConduitAsync>(cap, producers),
        ),
        (FlumeAsync::NAME, async_run::<FlumeAsync>(cap, producers)),
        (KanalAsync::NAME, async_run::<KanalAsync>(cap, producers)),
        (
            AsyncChanAsync::NAME,
            async_run::<AsyncChanAsync>(cap, producers),
        ),
        (TokioAsync::NAME, async_run::<TokioAsync>(cap, producers)),
    ];
    Scenario {
        name: name.to_string(),
        messages,
        impls,
    }
}

fn scenarios(scale: u64) -> Vec<Scenario> {
    let word = |i| i;
    let big = |i| Big([i; 32]);
    vec![
        sync_scenario("rendezvous SPSC", scale / 20, Some(0), 1, 1, word),
        sync_scenario("bounded(1) SPSC", scale / 10, Some(1), 1, 1, word),
        sync_scenario("bounded(1024) SPSC", scale, Some(1024), 1, 1, word),
        sync_scenario("unbounded SPSC", scale, None, 1, 1, word),
        sync_scenario("bounded(1024) MPSC 4x1", scale, Some(1024), 4, 1, word),
        sync_scenario("bounded(1024) MPMC 4x4", scale / 4, Some(1024), 4, 4, word),
        sync_scenario("unbounded MPMC 4x4", scale / 4, None, 4, 4, word),
        sync_scenario(
            "bounded(1024) SPSC 256-byte",
            scale / 2,
            Some(1024),
            1,
            1,
            big,
        ),
        async_scenario("async bounded(1024) SPSC", scale / 2, 1024, 1),
        async_scenario("async bounded(1024) MPSC 4x1", scale / 2, 1024, 4),
    ]
}

/// One implementation's result in one scenario.
struct Row {
    scenario: String,
    name: &'static str,
    median_ns: f64,
    min_ns: f64,
    ratio: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Runs each scenario's implementations round-robin, `reps` times, and prints a table.
fn measure(s: &Scenario, reps: usize, out: &mut Vec<Row>) {
    let mut samples: Vec<Vec<f64>> = vec![vec![]; s.impls.len()];
    let mut supported = vec![true; s.impls.len()];
    for rep in 0..=reps {
        for (i, (_, run)) in s.impls.iter().enumerate() {
            if !supported[i] {
                continue;
            }
            match run(s.messages) {
                // Repetition 0 warms up caches, allocators and thread pools.
                Some(t) if rep > 0 => {
                    samples[i].push(t.as_nanos() as f64 / s.messages as f64);
                }
                Some(_) => {}
                None => supported[i] = false,
            }
        }
    }
    let stats: Vec<Option<(f64, f64)>> = samples
        .iter_mut()
        .map(|v| {
            (!v.is_empty()).then(|| {
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                (median(v), min)
            })
        })
        .collect();
    let best_peer = stats
        .iter()
        .enumerate()
        .filter(|(i, _)| s.impls[*i].0 != "conduit")
        .filter_map(|(_, st)| st.map(|(m, _)| m))
        .fold(f64::INFINITY, f64::min);
    let mut table = format!(
        "\n### {} ({} messages, {} reps)\n\n| implementation | median ns/msg | min ns/msg | ratio to best peer |\n|---|---:|---:|---:|\n",
        s.name, s.messages, reps
    );
    for (i, st) in stats.iter().enumerate() {
        let name = s.impls[i].0;
        match st {
            Some((med, min)) => {
                let ratio = med / best_peer;
                let mark = if name == "conduit" { "**" } else { "" };
                let _ = writeln!(
                    table,
                    "| {mark}{name}{mark} | {med:.1} | {min:.1} | {mark}{ratio:.2}{mark} |"
                );
                out.push(Row {
                    scenario: s.name.clone(),
                    name,
                    median_ns: *med,
                    min_ns: *min,
                    ratio,
                });
            }
            None => {
                let _ = writeln!(table, "| {name} | n/a | n/a | n/a |");
            }
        }
    }
    print!("{table}");
}

fn write_json(rows: &[Row]) {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("conduit-bench");
    let _ = std::fs::create_dir_all(&dir);
    let mut json = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(
            json,
            "  {{\"scenario\": \"{}\", \"implementation\": \"{}\", \"median_ns\": {:.2}, \"min_ns\": {:.2}, \"ratio\": {:.4}}}{}",
            r.scenario,
            r.name,
            r.median_ns,
            r.min_ns,
            r.ratio,
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    json.push(']');
    let path = dir.join("results.json");
    match std::fs::write(&path, json) {
        Ok(()) => println!("\nresults written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var("CONDUIT_BENCH_QUICK").is_ok_and(|v| v != "0");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let (scale, reps) = if quick { (100_000, 3) } else { (1_000_000, 7) };
    println!(
        "# conduit vs peers ({} mode, {} cores)",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = vec![];
    // Cross-process scenarios fork, so they run first, while this process has one thread.
    for s in ipc::scenarios(quick) {
        if wanted(&s.name) {
            measure(&s, reps, &mut rows);
        }
    }
    for s in scenarios(scale) {
        if wanted(&s.name) {
            measure(&s, reps, &mut rows);
        }
    }
    write_json(&rows);
}
