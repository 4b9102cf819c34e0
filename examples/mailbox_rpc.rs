//! Request/reply between two processes over a `conduit::shm::Mailbox`, for profiling
//! the round trip: this program re-spawns itself as the server, then times requests.
//!
//! ```text
//! cargo run --release --example mailbox_rpc [round_trips] [batches]
//! ```
//!
//! The client creates the mailbox, spawns `current_exe()` with `CONDUIT_MBRPC_CHILD`
//! set (the server: receive a request, answer it through its reply capability), and
//! times `batches` batches of `round_trips` requests each, printing each batch's mean
//! round trip and the median over the batches. Where the machine has two CPUs the two
//! processes are pinned to one each (as `benches/compare` pins its ipc scenarios).

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn main() -> std::io::Result<()> {
    use std::time::Instant;

    use conduit::mailbox::Select;
    use conduit::shm::{Mailbox, Options};

    const CHILD: &str = "CONDUIT_MBRPC_CHILD";

    /// Pins this process to the `nth` CPU it may run on, if there is one.
    fn pin(nth: usize) {
        // SAFETY: `set` is a plain bit set owned here; the calls only read and write it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return;
            }
            let Some(cpu) = (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .nth(nth)
            else {
                return;
            };
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    }

    if let Ok(name) = std::env::var(CHILD) {
        pin(1);
        let mb = Mailbox::<[u8; 16]>::open(&name)?;
        let _ = mb.try_recv_select(Select::Tag(u64::MAX)); // the receiver role
        mb.send_tagged(0, [0; 16]).unwrap(); // hello
        while let Ok(mut env) = mb.recv_select(Select::Tag(1)) {
            let mut answer = *env.body();
            answer[0] = answer[0].wrapping_add(1);
            let reply = env.take_reply::<[u8; 16]>().expect("a request");
            if reply.reply(answer).is_err() {
                break;
            }
        }
        return Ok(());
    }

    let mut args = std::env::args().skip(1);
    let round_trips: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let name = format!("mbrpc-{}", std::process::id());
    let opts = Options::new()
        .capacity(64)
        .create_new(true)
        .unlink_on_drop(true);
    let mb = Mailbox::<[u8; 16]>::with(&name, &opts)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD, &name)
        .spawn()?;
    pin(0);
    mb.recv_select(Select::Tag(0)).expect("hello");
    for i in 0..1000u64 {
        let r = mb.request_tagged(1, [i as u8; 16]).expect("request");
        assert_eq!(r[0], (i as u8).wrapping_add(1));
    }
    let mut means = Vec::new();
    for _ in 0..batches {
        let start = Instant::now();
        for i in 0..round_trips {
            let r = mb.request_tagged(1, [i as u8; 16]).expect("request");
            assert_eq!(r[0], (i as u8).wrapping_add(1));
        }
        let ns = start.elapsed().as_nanos() as f64 / round_trips as f64;
        println!("{ns:.1} ns per round trip");
        means.push(ns);
    }
    // One more batch timed request by request: the distribution of single round trips
    // (each includes one `Instant::now`).
    let mut each: Vec<u64> = (0..round_trips)
        .map(|i| {
            let start = Instant::now();
            let r = mb.request_tagged(1, [i as u8; 16]).expect("request");
            assert_eq!(r[0], (i as u8).wrapping_add(1));
            start.elapsed().as_nanos() as u64
        })
        .collect();
    each.sort_unstable();
    let pct = |p: usize| each[(each.len() - 1) * p / 100];
    println!(
        "single round trips: p10 {} ns, p50 {}, p90 {}, p99 {}, max {}",
        pct(10),
        pct(50),
        pct(90),
        pct(99),
        pct(100)
    );
    means.sort_by(f64::total_cmp);
    println!(
        "median {:.1} ns, min {:.1}, max {:.1}",
        means[means.len() / 2],
        means[0],
        means[means.len() - 1]
    );
    mb.close()?;
    child.wait()?;
    Ok(())
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn main() {}
