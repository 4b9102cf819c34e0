//! The measurement loop, shared by every scenario: contenders run round-robin.

use std::time::Instant;

use crate::config::Config;

// ---------------------------------------------------------------------------------------
// The measurement loop, shared by every scenario
// ---------------------------------------------------------------------------------------

/// One implementation in one scenario: `run(n)` moves `n` messages and returns the
/// wall time per message in ns, or `None` if the implementation cannot do the scenario.
pub(crate) struct Contender {
    pub(crate) name: &'static str,
    pub(crate) run: Box<dyn Fn(u64) -> Option<f64>>,
}

pub(crate) struct Stat {
    pub(crate) name: &'static str,
    pub(crate) median: f64,
    pub(crate) min: f64,
}

/// Warms up (and drops the contenders that do not support the scenario), sizes the runs
/// to the budget, then runs up to `reps` round-robin repetitions: after three, a
/// scenario that has overrun its budget twice over (a machine that got busy) stops.
/// Returns the message count and the number of repetitions used.
pub(crate) fn measure(
    cfg: &Config,
    contenders: Vec<Contender>,
    full_msgs: u64,
) -> (u64, usize, Vec<Stat>) {
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
// How a scenario is shown, and the scenarios kept as plain lists (mailbox, signal)
// ---------------------------------------------------------------------------------------

/// What a scenario measures, for grouping (the chart's groups, the table's order).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// Channels between threads.
    Threads,
    /// Channels between async tasks.
    Tasks,
    /// Channels between processes.
    Ipc,
    /// `conduit::mailbox` and its cross-process twin.
    Mailbox,
    /// `conduit::signal` and its cross-process twin.
    Signal,
}

impl Area {
    pub(crate) const ALL: [Area; 5] = [
        Area::Threads,
        Area::Tasks,
        Area::Ipc,
        Area::Mailbox,
        Area::Signal,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Area::Threads => "channels, threads",
            Area::Tasks => "channels, async tasks",
            Area::Ipc => "channels, two processes",
            Area::Mailbox => "mailboxes",
            Area::Signal => "signals",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// How one scenario's results are shown.
pub(crate) struct Show {
    pub(crate) area: Area,
    /// The unit of its times: `ns/msg`, `ns/rt` (per round trip), `ns/op`.
    pub(crate) unit: &'static str,
    /// The channel `ipc` tables' columns (÷ pipe, ÷ spin limit) instead of ÷ best peer.
    pub(crate) ipc_columns: bool,
    /// The issues' targets: `(name, most)` says that conduit's median ÷ the median of the
    /// contender `name` should be at most `most`. Each gets a row of its own in the table
    /// and a `target` field in `results.json`.
    pub(crate) targets: &'static [(&'static str, f64)],
}

/// A scenario given by its contenders alone (the mailbox and signal scenarios): each
/// contender's `run(n)` does `n` operations its own way and returns ns per operation.
pub(crate) struct Listed {
    pub(crate) name: &'static str,
    pub(crate) show: Show,
    /// Operations per run in full mode (quick mode does a third).
    pub(crate) msgs: u64,
    /// Whether it forks (see `ipc::with_child`): such scenarios run first, while the
    /// process has a single thread.
    pub(crate) forks: bool,
    pub(crate) contenders: fn() -> Vec<Contender>,
}
