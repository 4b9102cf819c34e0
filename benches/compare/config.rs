//! The run's configuration (mode, filters, budgets), the machine check around every
//! scenario, the CPU pinning of two-sided runs, and the spinning wait they share.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{env, thread};

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Full,
    Quick,
    Smoke,
}

pub(crate) struct Config {
    pub(crate) mode: Mode,
    pub(crate) filters: Vec<String>,
    /// `--chart`: only redraw the chart and the table (see `chart`), run nothing.
    pub(crate) chart_only: bool,
}

impl Config {
    pub(crate) fn from_env() -> Self {
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
        let chart_only = args.iter().any(|a| a == "--chart");
        let filters = args
            .into_iter()
            .filter(|a| !a.starts_with('-'))
            .map(|a| a.to_lowercase())
            .collect();
        Config {
            mode,
            filters,
            chart_only,
        }
    }

    pub(crate) fn selects(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    pub(crate) fn reps(&self) -> usize {
        match self.mode {
            Mode::Full => 7,
            Mode::Quick => 5,
            Mode::Smoke => 1,
        }
    }

    /// Scales a scenario's full-mode message count.
    pub(crate) fn messages(&self, full: u64) -> u64 {
        match self.mode {
            Mode::Full => full,
            Mode::Quick => full / 3,
            Mode::Smoke => (full / 200).max(64),
        }
    }

    /// Wall-time budget for one scenario's repetitions; message counts shrink to fit.
    pub(crate) fn budget(&self) -> Duration {
        match self.mode {
            Mode::Full => Duration::from_secs(50),
            Mode::Quick => Duration::from_secs(6),
            Mode::Smoke => Duration::from_secs(2),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Machine check
// ---------------------------------------------------------------------------------------

/// Round trips timed per machine check (about 1.5 ms at the usual 75 ns).
pub(crate) const CHECK_TRIPS: u64 = 20_000;

/// A scenario whose check read more than this many times the run's median check ran,
/// at least in part, on a machine in a slower state than usual, and is flagged.
pub(crate) const CHECK_SPREAD: f64 = 1.5;

/// The machine check around one scenario: ns per round trip of one cache line between
/// two threads ([`line_round_trip_ns`]) just before and just after it.
#[derive(Clone, Copy)]
pub(crate) struct Check {
    pub(crate) before: f64,
    pub(crate) after: f64,
}

impl Check {
    pub(crate) fn worst(self) -> f64 {
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
pub(crate) fn line_round_trip_ns() -> f64 {
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
pub(crate) fn warn_about_checks(scenarios: &[(String, Check)]) {
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

/// Two different CPUs for the two processes of an `ipc` run, and the parent's own CPU
/// set to restore afterwards (the in-process scenarios use every CPU).
pub(crate) struct Pinning {
    allowed: libc::cpu_set_t,
    pub(crate) parent: usize,
    pub(crate) child: usize,
}

impl Pinning {
    /// `None` where this process may run on fewer than two CPUs (or the set cannot be
    /// read): then nothing is pinned.
    pub(crate) fn new() -> Option<Self> {
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
    pub(crate) fn pin(&self, cpu: usize) {
        // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` came from `allowed`, so it is below `CPU_SETSIZE`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        self.set(&set);
    }

    /// Restricts the calling (parent) process to its CPU until the guard is dropped.
    pub(crate) fn pin_parent(&self) -> Pinned<'_> {
        self.pin(self.parent);
        Pinned(self)
    }

    pub(crate) fn set(&self, set: &libc::cpu_set_t) {
        // SAFETY: `set` is a valid `cpu_set_t` of the size passed. A failure only leaves
        // the affinity as it was, which the measurement survives.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    }
}

/// The parent's pinning: dropping it gives the process back every CPU it had.
pub(crate) struct Pinned<'a>(&'a Pinning);

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.0.set(&self.0.allowed);
    }
}

/// Spins until `done()`. After a long while (some hundreds of microseconds) it also
/// yields the CPU on every try, so that a peer descheduled on a busy machine gets to run;
/// yielding any sooner costs the ping-pong a multiple of its round trip.
pub(crate) fn spin_until(mut done: impl FnMut() -> bool) {
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
