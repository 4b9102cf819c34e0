//! In-process scenarios on threads: the channel adapters (one trait, a few lines per
//! peer), the scenario list, and the threads driver.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::measure::Contender;
use crate::tasks::tasks;

// ---------------------------------------------------------------------------------------
// In-process adapters: one trait, a few lines per peer
// ---------------------------------------------------------------------------------------

/// A message: built from a sequence number that the receivers sum up as a check.
pub(crate) trait Msg: Send + 'static {
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
pub(crate) struct Msg256([u64; 32]);

impl Msg for Msg256 {
    fn new(i: u64) -> Self {
        Msg256([i; 32])
    }
    fn id(&self) -> u64 {
        self.0[31]
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Flavor {
    /// Capacity; 0 is a rendezvous channel.
    Bounded(usize),
    Unbounded,
}

/// Blocking use of one channel implementation.
pub(crate) trait Chan: 'static {
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

/// An adapter in a few lines: the handle types (generic over `T`), how to make a flavor
/// (`None`: not offered), another receiver (`None`: single consumer), and the blocking
/// send (an expression giving a `Result`) and receive (giving `Option<T>`).
macro_rules! chan {
    ($ty:ident, $name:literal, Tx = $tx:ty, Rx = $rx:ty,
     new: |$f:ident| $new:expr, share: |$s:ident| $share:expr,
     send: |$t:ident, $m:ident| $send:expr, recv: |$r:ident| $recv:expr $(,)?) => {
        pub(crate) struct $ty;
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

// ---------------------------------------------------------------------------------------
// In-process scenarios and their two drivers (threads, tasks)
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub(crate) enum Payload {
    U64,
    Bytes256,
}

pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) flavor: Flavor,
    pub(crate) producers: u64,
    pub(crate) consumers: u64,
    pub(crate) payload: Payload,
    pub(crate) is_async: bool,
    /// Messages per run in full mode.
    pub(crate) msgs: u64,
}

pub(crate) const fn scenario(
    name: &'static str,
    flavor: Flavor,
    producers: u64,
    consumers: u64,
) -> Scenario {
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
pub(crate) const SCENARIOS: &[Scenario] = &[
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
        is_async: true,
        msgs: 200_000,
        ..scenario("async bounded(1) SPSC", Flavor::Bounded(1), 1, 1)
    },
    Scenario {
        is_async: true,
        ..scenario("async unbounded SPSC", Flavor::Unbounded, 1, 1)
    },
    Scenario {
        is_async: true,
        ..scenario("async unbounded MPMC 4x4", Flavor::Unbounded, 4, 4)
    },
    Scenario {
        payload: Payload::Bytes256,
        msgs: 1_000_000,
        ..scenario("bounded(1024) SPSC 256-byte", Flavor::Bounded(1024), 1, 1)
    },
];

/// The channel plus one receiver handle per consumer; `None` if unsupported.
#[allow(clippy::type_complexity)]
pub(crate) fn open<C: Chan, T: Msg>(s: &Scenario) -> Option<(C::Tx<T>, Vec<C::Rx<T>>)> {
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
pub(crate) fn per_message<C: Chan>(
    s: &Scenario,
    per_producer: u64,
    sum: u64,
    elapsed: Duration,
) -> f64 {
    let expected = s.producers * (per_producer * per_producer.saturating_sub(1) / 2);
    assert_eq!(sum, expected, "{}: lost or duplicated messages", C::NAME);
    elapsed.as_nanos() as f64 / (per_producer * s.producers) as f64
}

/// Threads: producers and consumers start together at a barrier, and the clock runs from
/// the first thread through the barrier to the last consumer seeing the channel
/// disconnect. (Each thread reads the clock itself: on an oversubscribed machine a
/// coordinating thread may be scheduled long after the workers have finished.)
pub(crate) fn run_threads<C: Chan, T: Msg>(s: &Scenario, n: u64) -> Option<f64> {
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

pub(crate) type Driver = fn(&Scenario, u64) -> Option<f64>;

/// A contender that runs the scenario with `u64` or 256-byte messages, as it asks.
pub(crate) fn contender(
    name: &'static str,
    s: &'static Scenario,
    small: Driver,
    big: Driver,
) -> Contender {
    let driver = match s.payload {
        Payload::U64 => small,
        Payload::Bytes256 => big,
    };
    Contender {
        name,
        run: Box::new(move |n| driver(s, n)),
    }
}

pub(crate) fn threads<C: Chan>(s: &'static Scenario) -> Contender {
    contender(C::NAME, s, run_threads::<C, u64>, run_threads::<C, Msg256>)
}

/// Every implementation for an in-process scenario, conduit first. Those that cannot do
/// the scenario drop out at the warm-up run.
pub(crate) fn in_process_contenders(s: &'static Scenario) -> Vec<Contender> {
    if s.is_async {
        vec![
            tasks::<Conduit>(s),
            tasks::<Tokio>(s),
            tasks::<TokioUnbounded>(s),
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
