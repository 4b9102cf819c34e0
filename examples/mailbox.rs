//! Worker processes sharing one job mailbox in shared memory (`conduit::shm::Mailbox`).
//!
//! The client (this process) creates the mailbox, starts three worker processes (this
//! program again, with the argument `worker`), and then:
//! - posts jobs with priority tags (1 = urgent … 5 = whenever); workers take the lowest
//!   tag first (`Select::TagAtMost`, SysV `msgrcv` with a negative type);
//! - collects the results, which workers send back with the tag `RESULT`, by selecting
//!   that tag only (`Select::Tag`): the jobs still queued are never looked at;
//! - asks a worker for its status with a request (`request_tagged`), answered through the
//!   envelope's reply capability;
//! - stops the workers with one `STOP` message each: its tag sorts after every job, so a
//!   worker stops only once no job is left.
//!
//! Run with `cargo run --release --example mailbox`.

#[cfg(unix)]
fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("worker") => {
            let name = args.next().expect("worker NAME");
            worker(&name)
        }
        _ => client(),
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("this example needs a Unix system (POSIX shared memory)");
}

/// One message: what to do and its number.
#[cfg(unix)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Msg {
    /// The job's id (for results: the id of the job done).
    id: u64,
    /// The job's input, or the result, or (for a status reply) the jobs done so far.
    value: u64,
    /// The worker's pid, in results and status replies.
    pid: u64,
}

/// Job priorities: tags 1 (urgent) to 5.
#[cfg(unix)]
const URGENT: u64 = 1;
#[cfg(unix)]
const WHENEVER: u64 = 5;
/// After every job: a worker takes it only when no job is queued.
#[cfg(unix)]
const STOP: u64 = 9;
/// Results, sent back to the client: above `STOP`, so workers never select them.
#[cfg(unix)]
const RESULT: u64 = 100;
/// Status requests: urgent, a worker answers between jobs.
#[cfg(unix)]
const STATUS: u64 = 0;

#[cfg(unix)]
fn client() -> std::io::Result<()> {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use conduit::mailbox::Select;
    use conduit::shm;

    const WORKERS: usize = 3;
    const JOBS: u64 = 30;

    let name = format!("example-jobs-{}", std::process::id());
    let opts = shm::Options::new()
        .create_new(true)
        .capacity(64)
        .unlink_on_drop(true);
    let mailbox = shm::Mailbox::<Msg>::with(&name, &opts)?;
    println!(
        "client: mailbox {name:?}, {} slots",
        mailbox.capacity().unwrap_or(0)
    );

    let exe = std::env::current_exe()?;
    let mut workers = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", &name])
                .stdin(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<Vec<_>>>()?;

    // Jobs: every third one urgent, the rest whenever.
    for id in 0..JOBS {
        let tag = if id % 3 == 0 { URGENT } else { WHENEVER };
        mailbox
            .send_tagged(
                tag,
                Msg {
                    id,
                    value: 20_000 + 1_000 * id,
                    pid: 0,
                },
            )
            .expect("the mailbox is open");
    }

    // Results, by tag: the queued jobs of other tags are not scanned.
    let mut done = vec![false; JOBS as usize];
    for received in 0..JOBS {
        if received == JOBS / 2 {
            // A status request, answered by whichever worker takes it first.
            match mailbox.request_tagged_timeout(STATUS, Msg::default(), Duration::from_secs(10)) {
                Ok(status) => println!(
                    "client: worker {} reports {} jobs done so far",
                    status.pid, status.value
                ),
                Err(e) => println!("client: status request failed: {e}"),
            }
        }
        let env = mailbox
            .recv_select_timeout(Select::Tag(RESULT), Duration::from_secs(30))
            .expect("a worker answers each job");
        let r = env.body();
        assert!(
            !std::mem::replace(&mut done[r.id as usize], true),
            "job {} twice",
            r.id
        );
        assert_eq!(r.value, primes_below(20_000 + 1_000 * r.id));
        if received < 6 {
            println!(
                "client: job {:2} done by worker {} (from {})",
                r.id,
                r.pid,
                env.from()
            );
        }
    }
    println!("client: all {JOBS} results in, each exactly once");

    for _ in 0..WORKERS {
        mailbox
            .send_tagged(STOP, Msg::default())
            .expect("the mailbox is open");
    }
    for w in &mut workers {
        assert!(w.wait()?.success(), "a worker failed");
    }
    println!("client: workers stopped; the mailbox is unlinked when it is dropped");
    Ok(())
}

#[cfg(unix)]
fn worker(name: &str) -> std::io::Result<()> {
    use conduit::mailbox::Select;
    use conduit::shm;

    let mailbox = shm::Mailbox::<Msg>::open(name)?;
    let pid = u64::from(std::process::id());
    let mut done = 0u64;
    loop {
        // The lowest tag first: status requests, urgent jobs, the rest, then STOP.
        let mut env = match mailbox.recv_select(Select::TagAtMost(STOP)) {
            Ok(env) => env,
            Err(_) => break, // closed
        };
        match env.tag() {
            STOP => break,
            STATUS => {
                if let Some(reply) = env.take_reply::<Msg>() {
                    let _ = reply.reply(Msg {
                        id: 0,
                        value: done,
                        pid,
                    });
                }
            }
            _job => {
                let job = *env.body();
                let result = Msg {
                    id: job.id,
                    value: primes_below(job.value),
                    pid,
                };
                mailbox
                    .send_tagged(RESULT, result)
                    .expect("the mailbox is open");
                done += 1;
            }
        }
    }
    println!("worker {pid}: {done} jobs");
    Ok(())
}

/// The work: how many primes are below `n`, by trial division (a few milliseconds).
#[cfg(unix)]
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}
