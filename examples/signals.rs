//! A supervisor and its worker processes, talking in signals over shared memory
//! (`conduit::shm::signal`).
//!
//! - The supervisor owns a named signal target. Its workers (this program again, with
//!   the argument `worker`) raise on it: a queued "ready" and "job done" per job (the
//!   payload says which), and a coalescing "reload" that a handler catches.
//! - SIGTERM is masked while the supervisor collects the jobs (a critical section): one
//!   arriving then stays pending until it is unmasked.
//! - Ctrl-C (SIGINT) and SIGTERM are forwarded from the OS into the supervisor's target
//!   (never handled inside the OS signal handler itself), and the supervisor forwards
//!   the interrupt to every worker's own target, where each worker waits for it.
//! - Dropping the forward guards restores the default dispositions, so a second Ctrl-C
//!   after shutdown ends the process as usual.
//!
//! Run with `cargo run --example signals`. It sends itself SIGINT once the jobs are done
//! (press Ctrl-C earlier to stop it sooner).

#[cfg(unix)]
use conduit::signal::Signal;

#[cfg(unix)]
fn sig(n: u8) -> Signal {
    Signal::new(n).expect("1..=64")
}

/// Coalescing (standard) numbers.
#[cfg(unix)]
const RELOAD: u8 = 1;
#[cfg(unix)]
const INTERRUPT: u8 = 2;
#[cfg(unix)]
const TERMINATE: u8 = 15;
/// Queued numbers, with payloads.
#[cfg(unix)]
const READY: u8 = 40;
#[cfg(unix)]
const JOB_DONE: u8 = 41;

#[cfg(unix)]
const WORKERS: u64 = 3;
#[cfg(unix)]
const JOBS_EACH: u64 = 4;

#[cfg(unix)]
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [w, supervisor, index] if w == "worker" => {
            worker(supervisor, index.parse().expect("a worker index"))
        }
        _ => supervisor(),
    }
}

#[cfg(unix)]
fn worker_name(supervisor: &str, w: u64) -> String {
    format!("{supervisor}-w{w}")
}

#[cfg(unix)]
fn supervisor() -> std::io::Result<()> {
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use conduit::shm;
    use conduit::signal::{Disposition, SigSet, forward_os};

    let name = format!("example-supervisor-{}", std::process::id());
    let opts = shm::Options::new().create_new(true).unlink_on_drop(true);
    let target = shm::signal::Target::with(&name, &opts)?;

    let reloads = Arc::new(AtomicU64::new(0));
    let r = reloads.clone();
    target.set_disposition(
        sig(RELOAD),
        Disposition::catch(move |info| {
            r.fetch_add(info.count(), Ordering::Relaxed);
            println!(
                "supervisor: handler: reload requested ({} raises, last from pid {})",
                info.count(),
                info.pid()
            );
        }),
    );

    // The OS side: Ctrl-C and SIGTERM become target signals.
    let os = target.raiser()?;
    let int_guard = forward_os(libc::SIGINT, &os, sig(INTERRUPT))?;
    let term_guard = forward_os(libc::SIGTERM, &os, sig(TERMINATE))?;

    let exe = std::env::current_exe()?;
    let mut children = (0..WORKERS)
        .map(|w| {
            Command::new(&exe)
                .args(["worker", &name, &w.to_string()])
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;

    // A critical section: SIGTERM is held back (a SIGTERM arriving now stays pending).
    let critical: SigSet = [sig(TERMINATE)].into_iter().collect();
    target.mask(&critical);
    let mut workers = Vec::new();
    let mut done = 0;
    while done < WORKERS * JOBS_EACH || (workers.len() as u64) < WORKERS {
        // Runs the reload handler when it meets it; returns everything else.
        let info = target.wait();
        match info.signal().number() {
            READY => {
                let w = info.payload().expect("queued");
                println!("supervisor: worker {w} (pid {}) is ready", info.pid());
                workers.push(shm::signal::Raiser::open(&worker_name(&name, w))?);
            }
            JOB_DONE => {
                done += 1;
                let job = info.payload().expect("queued");
                println!("supervisor: job {job} done (by pid {})", info.pid());
            }
            n => println!("supervisor: signal {n} during the critical section"),
        }
    }
    target.unmask(&critical);
    target.dispatch();
    println!(
        "supervisor: {} reloads handled",
        reloads.load(Ordering::Relaxed)
    );

    // Shutdown on Ctrl-C or SIGTERM. Send ourselves a Ctrl-C so the example ends.
    // SAFETY: SIGINT is forwarded above, so raising it runs conduit's handler, which
    // only raises on the target (async-signal-safe).
    unsafe { libc::raise(libc::SIGINT) };
    let stop: SigSet = [sig(INTERRUPT), sig(TERMINATE)].into_iter().collect();
    let info = target.wait_for(&stop);
    println!(
        "supervisor: {:?} from the OS; forwarding it to the workers",
        info.signal()
    );
    for raiser in &workers {
        raiser
            .raise(info.signal())
            .expect("a worker waits on its target");
    }
    for child in &mut children {
        assert!(child.wait()?.success(), "a worker failed");
    }
    // The previous dispositions are back: a second Ctrl-C would end the process.
    drop((int_guard, term_guard));
    println!("supervisor: workers stopped");
    Ok(())
}

#[cfg(unix)]
fn worker(supervisor: &str, w: u64) -> std::io::Result<()> {
    use conduit::shm;
    use conduit::signal::SigSet;

    let opts = shm::Options::new().create_new(true).unlink_on_drop(true);
    let own = shm::signal::Target::with(&worker_name(supervisor, w), &opts)?;
    let boss = shm::signal::Raiser::open(supervisor)?;
    boss.raise_with(sig(READY), w)
        .expect("the supervisor waits");
    for j in 0..JOBS_EACH {
        boss.raise_with(sig(JOB_DONE), w * 100 + j)
            .expect("the supervisor waits");
    }
    boss.raise(sig(RELOAD)).expect("the supervisor waits");

    let stop: SigSet = [sig(INTERRUPT), sig(TERMINATE)].into_iter().collect();
    let info = own.wait_for(&stop);
    println!(
        "worker {w}: stopping on {:?} from pid {}",
        info.signal(),
        info.pid()
    );
    Ok(())
}

#[cfg(not(unix))]
fn main() {
    println!("this example needs a Unix system (shared memory, OS signals)");
}
