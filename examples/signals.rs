//! A supervisor built on `conduit::signal`: workers report finished jobs with queued
//! signals (payload: the job id), a "reload" signal is caught by a handler, SIGTERM is
//! masked during a critical section, and Ctrl-C (SIGINT) and SIGTERM are forwarded from
//! the OS into the target. Dropping the forward guards at the end restores the default
//! dispositions, so a second Ctrl-C after shutdown ends the process as usual.
//!
//! Run with `cargo run --example signals`. It sends itself SIGINT once the jobs are
//! done (press Ctrl-C earlier to stop it sooner).

#[cfg(unix)]
fn main() -> std::io::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::thread;

    use conduit::signal::{Disposition, SigSet, Signal, Target, forward_os};

    let sig = |n| Signal::new(n).unwrap();
    let (reload, interrupt, terminate, job_done) = (sig(1), sig(2), sig(15), sig(40));

    let target = Target::new();
    let reloads = Arc::new(AtomicU64::new(0));
    let r = reloads.clone();
    target.set_disposition(
        reload,
        Disposition::catch(move |info| {
            r.fetch_add(info.count(), Ordering::Relaxed);
            println!("handler: reload requested ({} raises)", info.count());
        }),
    );

    // The OS side: Ctrl-C and SIGTERM become target signals (never handled inside the
    // OS signal handler itself).
    let os = target.raiser();
    let _int = forward_os(libc::SIGINT, &os, interrupt)?;
    let _term = forward_os(libc::SIGTERM, &os, terminate)?;

    // Workers: each finishes four jobs and asks for one reload.
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let raiser = target.raiser();
            thread::spawn(move || {
                for j in 0..4 {
                    raiser.raise_with(job_done, w * 100 + j).unwrap();
                }
                raiser.raise(reload).unwrap();
            })
        })
        .collect();

    // A critical section: SIGTERM is held back (a SIGTERM arriving now stays pending).
    let critical: SigSet = [terminate].into_iter().collect();
    target.mask(&critical);
    let mut done = 0;
    while done < 12 {
        // Runs the reload handler when it meets it; returns everything else.
        let info = target.wait();
        if info.signal() == job_done {
            done += 1;
            println!("job {} done", info.payload().unwrap());
        } else {
            println!("{:?} during the critical section", info.signal());
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    target.unmask(&critical);
    target.dispatch();
    println!("{} reloads handled", reloads.load(Ordering::Relaxed));

    // Shutdown on Ctrl-C or SIGTERM. Send ourselves a Ctrl-C so the example ends.
    // SAFETY: SIGINT is forwarded above, so raising it runs conduit's handler.
    unsafe { libc::raise(libc::SIGINT) };
    let stop: SigSet = [interrupt, terminate].into_iter().collect();
    let info = target.wait_for(&stop);
    println!("shutting down on {:?}", info.signal());
    Ok(())
}

#[cfg(not(unix))]
fn main() {
    println!("forward_os needs a Unix system");
}
