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
//!   protocol for reference ([`transport::StampRing`]); conduit takes part with its
//!   `conduit::shm` channel (see [`ipc::conduit_ipc_contenders`]). Where the process may run
//!   on two CPUs or more, the parent and the child are pinned to two different ones (see
//!   [`config::Pinning`]), for every transport alike: otherwise the scheduler sometimes leaves
//!   both on one CPU for a whole run, and where the fork landed decides the result;
//! - mailbox and signal scenarios ([`mailbox`], [`signal`]) each time `n` operations of
//!   their own shape (send+receive, selective receive, request/reply, raise, raise-to-wake
//!   ping-pong) against their peers (SysV queues, a unix socket, tokio `mpsc` + `oneshot`,
//!   `tokio::sync::Notify`, `eventfd`, a pipe, `kill` + `sigwaitinfo`) and the references
//!   the issues set targets against.
//!
//! Output: one markdown table per scenario (median and minimum ns per message over the
//! repetitions, and each implementation's median divided by the best peer's, so a ratio
//! below 1.0 means conduit is faster, and a row per target) and
//! `target/conduit-bench/results.json`. Each scenario is bracketed by a machine check
//! ([`config::line_round_trip_ns`]), and the run ends by naming the scenarios timed while
//! the machine was in another state. A run of every scenario then updates
//! `benches/history.json`, `benches/chart.svg` and `benches/ratios.md` ([`chart`]).
//!
//! Arguments (after `--`): `--quick` (or `CONDUIT_BENCH_QUICK=1`) for a run of about two
//! minutes; `--chart` to redraw the chart and the table from the history and run
//! nothing; any other non-flag argument keeps only the scenarios whose name contains it
//! (case-insensitive). Without the `--bench` flag that `cargo bench` passes (for example
//! under `cargo test --benches`) every scenario runs once with a few messages as a smoke
//! test, the chart code is checked on its results, and no file is written.
//!
//! Modules, by concern: [`config`] (mode, filters, budgets, the machine check, CPU
//! pinning), [`measure`] (the round-robin loop every scenario shares), [`inproc`]
//! (channel adapters and the threads scenarios), [`tasks`] (the async scenarios),
//! [`transport`] (the cross-process peers and limits), [`ipc`] (the two-process runner and
//! conduit's shared-memory contenders), [`mailbox`] and [`signal`] (their scenarios),
//! [`report`] (tables and `results.json`), [`chart`] (history, chart, ratio table) and
//! [`json`] (reading and writing the bench's JSON).

mod chart;
mod config;
mod inproc;
mod ipc;
mod ipc_async;
mod json;
mod mailbox;
mod measure;
mod report;
mod signal;
mod tasks;
mod transport;

use std::time::Instant;

use config::{Check, Config, Mode, line_round_trip_ns, warn_about_checks};
use inproc::{SCENARIOS, in_process_contenders};
use ipc::{Ipc, ipc_contenders};
use measure::{Area, Contender, Listed, Show, measure};
use report::{report, results_json, write_json};

fn main() {
    let cfg = Config::from_env();
    if cfg.chart_only {
        if let Err(e) = chart::redraw() {
            eprintln!("compare: could not redraw the chart: {e}");
            std::process::exit(1);
        }
        return;
    }
    let started = Instant::now();
    match cfg.mode {
        Mode::Full => eprintln!("compare: full mode (pass --quick for a short run)"),
        Mode::Quick => eprintln!("compare: quick mode"),
        Mode::Smoke => eprintln!("compare: smoke test (no --bench argument; nothing is saved)"),
    }
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let mut run = |name: &str, show: &Show, full: u64, contenders: Vec<Contender>| {
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
        rows.extend(report(name, &title, show, check, stats));
        checks.push((name.to_string(), check));
        eprintln!("  ({name}: {:.1} s)", t.elapsed().as_secs_f64());
    };

    // The mailbox and signal scenarios: those that fork, then the others.
    let listed = |forks: bool| -> Vec<&'static Listed> {
        (mailbox::SCENARIOS.iter())
            .chain(signal::SCENARIOS)
            .chain(ipc_async::SCENARIOS)
            .filter(|l| l.forks == forks && cfg.selects(l.name))
            .collect()
    };
    // The ipc scenarios fork, so they run first, while this process has one thread.
    for kind in [Ipc::PingPong, Ipc::OneWay] {
        if cfg.selects(kind.name()) {
            let unit = if kind == Ipc::PingPong {
                "ns/rt"
            } else {
                "ns/msg"
            };
            let show = Show {
                area: Area::Ipc,
                unit,
                ipc_columns: true,
                targets: &[],
            };
            run(kind.name(), &show, kind.msgs(), ipc_contenders(kind));
        }
    }
    for l in listed(true) {
        run(l.name, &l.show, l.msgs, (l.contenders)());
    }
    for s in SCENARIOS.iter().filter(|s| cfg.selects(s.name)) {
        let show = Show {
            area: if s.is_async {
                Area::Tasks
            } else {
                Area::Threads
            },
            unit: "ns/msg",
            ipc_columns: false,
            targets: &[],
        };
        run(s.name, &show, s.msgs, in_process_contenders(s));
    }
    for l in listed(false) {
        run(l.name, &l.show, l.msgs, (l.contenders)());
    }

    eprintln!(
        "\ncompare: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if cfg.mode == Mode::Smoke && !rows.is_empty() {
        chart::smoke(&results_json(&rows));
    }
    // A smoke run's scenarios last milliseconds (unoptimized, under `cargo test`): too
    // short for the check to say anything about them.
    if cfg.mode != Mode::Smoke && !rows.is_empty() {
        warn_about_checks(&checks);
        match write_json(&rows) {
            Ok(path) if cfg.filters.is_empty() => {
                eprintln!("compare: results in {}", path.display());
                if let Err(e) = chart::record(&path, cfg.mode) {
                    eprintln!("compare: could not update the history, chart or table: {e}");
                }
            }
            Ok(path) => eprintln!(
                "compare: results in {} (a run of some scenarios: the history, chart and \
                 table in benches/ are left as they were)",
                path.display()
            ),
            Err(e) => eprintln!("compare: could not write results.json: {e}"),
        }
    }
}
