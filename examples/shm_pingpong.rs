//! Ping-pong between two processes over `conduit::shm`: this program re-spawns itself
//! as the "pong" side, then measures round trips.
//!
//! ```text
//! cargo run --release --example shm_pingpong [round_trips] [spsc]
//! ```
//!
//! With `spsc`, both channels are created in the single-producer single-consumer mode
//! (`shm::Options::spsc`).
//!
//! The ping side creates two channels (ping → pong and pong → ping), spawns
//! `current_exe()` with `CONDUIT_PINGPONG_CHILD` set, and times `round_trips` messages
//! there and back, blocking on each reply. It prints the mean round-trip time, once with
//! blocking receives and once with async ones.

#[cfg(all(unix, target_pointer_width = "64"))]
fn main() -> std::io::Result<()> {
    use std::time::Instant;

    use conduit::shm::{self, Options, Receiver, Sender};

    const CHILD: &str = "CONDUIT_PINGPONG_CHILD";

    if let Ok(base) = std::env::var(CHILD) {
        // The pong side: echo every value back, until the ping side goes away.
        let rx = Receiver::<u64>::open(&format!("{base}.ping"))?;
        let tx = Sender::<u64>::open(&format!("{base}.pong"))?;
        while let Ok(v) = rx.recv() {
            if tx.send(v + 1).is_err() {
                break;
            }
        }
        return Ok(());
    }

    let round_trips: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let spsc = std::env::args().skip(1).any(|a| a == "spsc");
    let base = format!("pingpong-{}", std::process::id());
    let opts = Options::new()
        .capacity(1)
        .create_new(true)
        .unlink_on_drop(true)
        .spsc(spsc);
    let ping = Sender::<u64>::with(&format!("{base}.ping"), &opts)?;
    let pong = Receiver::<u64>::with(&format!("{base}.pong"), &opts)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(CHILD, &base)
        .spawn()?;

    // Warm up (and wait for the child to attach).
    for i in 0..1000 {
        ping.send(i).unwrap();
        assert_eq!(pong.recv(), Ok(i + 1));
    }

    let start = Instant::now();
    for i in 0..round_trips {
        ping.send(i).unwrap();
        assert_eq!(pong.recv(), Ok(i + 1));
    }
    let blocking = start.elapsed();

    let start = Instant::now();
    futures::executor::block_on(async {
        for i in 0..round_trips {
            ping.send_async(i).await.unwrap();
            assert_eq!(pong.recv_async().await, Ok(i + 1));
        }
    });
    let asynchronous = start.elapsed();

    println!(
        "{round_trips} round trips over conduit::shm (capacity 1, u64, {})\n  \
         blocking: {:>8.2} µs per round trip\n  \
         async:    {:>8.2} µs per round trip",
        if spsc { "spsc" } else { "many-to-many" },
        blocking.as_secs_f64() * 1e6 / round_trips as f64,
        asynchronous.as_secs_f64() * 1e6 / round_trips as f64,
    );

    drop(ping); // the child sees the disconnection and exits
    child.wait()?;
    drop(pong);
    debug_assert!(!shm::list()?.contains(&format!("{base}.ping")));
    Ok(())
}

#[cfg(not(all(unix, target_pointer_width = "64")))]
fn main() {
    eprintln!("conduit::shm needs 64-bit Unix");
}
