//! An independent harness for the in-process channels, driven the way users drive them:
//! tasks on a tokio multi-thread runtime with 2 workers (a fresh runtime per run), and
//! threads, conduit next to kanal, the contenders taking turns in every round.
//!
//! ```sh
//! cargo run --release --example async_drive -- [ROUNDS] [FILTER] [CONTENDER]
//! ```
//!
//! `FILTER` picks the scenarios whose name contains it, `CONTENDER` runs only the
//! contender of that name (for a profiler). Each task or thread calls the channel
//! directly (`send_async(..).await`, `recv_async().await`, the `Sink`/`Stream` adapters,
//! blocking `send`/`recv`), not through the `compare` bench's transports. Prints the
//! median and the range, in ns per message, of each contender.
//!
//! Environment: `MSGS` (messages per run, 400,000 by default), `WORKERS` (runtime
//! workers, 2 by default; 0 is tokio's current-thread runtime, for instruction counts
//! under `valgrind --tool=callgrind`), `PARKS` (print, after each async run, how many
//! times each worker parked: tokio's `worker_park_count`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};

/// Messages per run.
fn msgs() -> u64 {
    static N: OnceLock<u64> = OnceLock::new();
    *N.get_or_init(|| env_num("MSGS").unwrap_or(400_000))
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number")))
}

fn runtime() -> tokio::runtime::Runtime {
    match env_num("WORKERS").unwrap_or(2) {
        0 => tokio::runtime::Builder::new_current_thread().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n as usize)
            .build(),
    }
    .expect("tokio runtime")
}

/// Runs `fut` on a fresh runtime; with `PARKS` set, prints the workers' park counts.
fn run_tasks<F: Future<Output = Duration>>(fut: F) -> Duration {
    let rt = runtime();
    let took = rt.block_on(fut);
    if std::env::var_os("PARKS").is_some() {
        let m = rt.metrics();
        let parks: Vec<u64> = (0..m.num_workers())
            .map(|w| m.worker_park_count(w))
            .collect();
        println!("    worker parks {parks:?}");
    }
    took
}

#[derive(Clone, Copy)]
enum Cap {
    Bounded(usize),
    Unbounded,
}

/// How conduit's tasks call it.
#[derive(Clone, Copy, PartialEq)]
enum Calls {
    /// `send_async(..).await` and `recv_async().await`.
    Futures,
    /// `Sink::send` on `sink()` and `StreamExt::next` on `stream()`.
    SinkStream,
}

/// The sum the receivers must see: each producer sends `0..per`.
fn expected(producers: u64, per: u64) -> u64 {
    producers * (per * (per - 1) / 2)
}

fn conduit_tasks(cap: Cap, producers: u64, consumers: u64, calls: Calls) -> Duration {
    let (tx, rx) = match cap {
        Cap::Bounded(c) => conduit::bounded::<u64>(c),
        Cap::Unbounded => conduit::unbounded::<u64>(),
    };
    let per = msgs() / producers;
    run_tasks(async move {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..producers {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                if calls == Calls::SinkStream {
                    let mut sink = tx.sink();
                    for i in 0..per {
                        sink.send(i).await.expect("receivers gone");
                    }
                } else {
                    for i in 0..per {
                        tx.send_async(i).await.expect("receivers gone");
                    }
                }
                0
            }));
        }
        drop(tx);
        for _ in 0..consumers {
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut sum = 0;
                if calls == Calls::SinkStream {
                    let mut stream = rx.stream();
                    while let Some(m) = stream.next().await {
                        sum += m;
                    }
                } else {
                    while let Ok(m) = rx.recv_async().await {
                        sum += m;
                    }
                }
                sum
            }));
        }
        drop(rx);
        let mut sum = 0;
        for t in tasks {
            sum += t.await.expect("task panicked");
        }
        assert_eq!(sum, expected(producers, per));
        start.elapsed()
    })
}

fn kanal_tasks(cap: Cap, producers: u64, consumers: u64) -> Duration {
    let (tx, rx) = match cap {
        Cap::Bounded(c) => kanal::bounded_async::<u64>(c),
        Cap::Unbounded => kanal::unbounded_async::<u64>(),
    };
    let per = msgs() / producers;
    run_tasks(async move {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..producers {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    tx.send(i).await.expect("receivers gone");
                }
                0
            }));
        }
        drop(tx);
        for _ in 0..consumers {
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut sum = 0;
                while let Ok(m) = rx.recv().await {
                    sum += m;
                }
                sum
            }));
        }
        drop(rx);
        let mut sum = 0;
        for t in tasks {
            sum += t.await.expect("task panicked");
        }
        assert_eq!(sum, expected(producers, per));
        start.elapsed()
    })
}

/// The same shapes on threads, with blocking calls.
macro_rules! threads {
    ($name:ident, $bounded:path, $unbounded:path) => {
        fn $name(cap: Cap, producers: u64, consumers: u64) -> Duration {
            let (tx, rx) = match cap {
                Cap::Bounded(c) => $bounded(c),
                Cap::Unbounded => $unbounded(),
            };
            let per = msgs() / producers;
            let start = Instant::now();
            let sum: u64 = std::thread::scope(|s| {
                for _ in 0..producers {
                    let tx = tx.clone();
                    s.spawn(move || {
                        for i in 0..per {
                            tx.send(i).expect("receivers gone");
                        }
                    });
                }
                drop(tx);
                let receivers: Vec<_> = (0..consumers)
                    .map(|_| {
                        let rx = rx.clone();
                        s.spawn(move || {
                            let mut sum = 0;
                            while let Ok(m) = rx.recv() {
                                sum += m;
                            }
                            sum
                        })
                    })
                    .collect();
                drop(rx);
                receivers
                    .into_iter()
                    .map(|r| r.join().expect("thread panicked"))
                    .sum()
            });
            let took = start.elapsed();
            assert_eq!(sum, expected(producers, per));
            took
        }
    };
}

threads!(
    conduit_threads,
    conduit::bounded::<u64>,
    conduit::unbounded::<u64>
);
threads!(
    kanal_threads,
    kanal::bounded::<u64>,
    kanal::unbounded::<u64>
);

type Run = Box<dyn Fn() -> Duration>;

fn scenarios() -> Vec<(&'static str, Vec<(&'static str, Run)>)> {
    let b = Cap::Bounded(1024);
    let u = Cap::Unbounded;
    let one = Cap::Bounded(1);
    let tasks = |cap, p, c| -> Vec<(&'static str, Run)> {
        vec![
            (
                "conduit",
                Box::new(move || conduit_tasks(cap, p, c, Calls::Futures)),
            ),
            (
                "conduit sink/stream",
                Box::new(move || conduit_tasks(cap, p, c, Calls::SinkStream)),
            ),
            ("kanal", Box::new(move || kanal_tasks(cap, p, c))),
        ]
    };
    let threads = |cap, p, c| -> Vec<(&'static str, Run)> {
        vec![
            ("conduit", Box::new(move || conduit_threads(cap, p, c))),
            ("kanal", Box::new(move || kanal_threads(cap, p, c))),
        ]
    };
    vec![
        ("async bounded(1024) SPSC", tasks(b, 1, 1)),
        ("async bounded(1024) MPSC 4x1", tasks(b, 4, 1)),
        ("async bounded(1024) MPMC 4x4", tasks(b, 4, 4)),
        ("async unbounded SPSC", tasks(u, 1, 1)),
        ("async unbounded MPMC 4x4", tasks(u, 4, 4)),
        ("async bounded(1) SPSC", tasks(one, 1, 1)),
        ("threads bounded(1) SPSC", threads(one, 1, 1)),
        ("threads unbounded SPSC", threads(u, 1, 1)),
        ("threads unbounded MPMC 4x4", threads(u, 4, 4)),
    ]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(7, |a| a.parse().expect("ROUNDS"));
    let filter = args.next().unwrap_or_default().to_lowercase();
    let only = args.next();
    for (name, contenders) in scenarios() {
        if !name.to_lowercase().contains(&filter) {
            continue;
        }
        let picked: Vec<_> = contenders
            .iter()
            .filter(|(who, _)| only.as_deref().is_none_or(|o| o == *who))
            .collect();
        let mut times = vec![Vec::new(); picked.len()];
        for round in 0..rounds {
            // Rotate who goes first, so that a slow spell does not always hit one.
            for k in 0..picked.len() {
                let i = (k + round) % picked.len();
                let took = (picked[i].1)();
                times[i].push(took.as_nanos() as f64 / msgs() as f64);
            }
        }
        println!("{name}");
        for ((who, _), t) in picked.iter().zip(&mut times) {
            t.sort_by(f64::total_cmp);
            println!(
                "  {who:20} median {:7.1}  range {:7.1} – {:7.1} ns/msg",
                t[t.len() / 2],
                t[0],
                t[t.len() - 1]
            );
        }
    }
}
