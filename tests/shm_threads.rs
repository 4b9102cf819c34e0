//! Threads of one process sharing shm handles: more of them than a handle has intent
//! lanes, all sending or receiving through the same `Sender` or `Receiver`.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::collections::HashSet;

use conduit::shm::{Options, Receiver, Sender};
use shm_support::*;

/// Every test binary defines the child entry; this one spawns no children.
#[test]
fn child_entry() {}

/// 20 sender threads share one `Sender` and 20 receiver threads one `Receiver` (a handle
/// has 16 intent lanes: its first user keeps lane 0, the others take turns with the
/// rest, waiting when all are taken), over a ring small enough to fill: every message
/// arrives exactly once, and a thread's own messages in the order it sent them.
#[test]
fn more_threads_than_lanes_share_one_handle_exactly_once() {
    watchdog(|| {
        const THREADS: u64 = 20;
        const EACH: u64 = 2_000;
        let name = Name::new("lanes");
        let opts = Options::new().capacity(64).create_new(true);
        let tx = Sender::<u64>::with(&name, &opts).unwrap();
        let rx = Receiver::<u64>::open(&name).unwrap();
        let received: Vec<Vec<u64>> = std::thread::scope(|s| {
            for t in 0..THREADS {
                let tx = &tx;
                s.spawn(move || {
                    for i in 0..EACH {
                        tx.send(t * EACH + i).unwrap();
                    }
                });
            }
            let receivers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let rx = &rx;
                    s.spawn(move || (0..EACH).map(|_| rx.recv().unwrap()).collect())
                })
                .collect();
            receivers.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for got in &received {
            let mut last = vec![None; THREADS as usize];
            for &m in got {
                let sender = (m / EACH) as usize;
                assert!(sender < last.len(), "{m} was never sent");
                assert!(
                    last[sender] < Some(m),
                    "sender {sender}'s messages out of order"
                );
                last[sender] = Some(m);
            }
        }
        let all: HashSet<u64> = received.iter().flatten().copied().collect();
        assert_eq!(
            received.iter().map(Vec::len).sum::<usize>(),
            all.len(),
            "duplicates"
        );
        assert_eq!(all.len() as u64, THREADS * EACH, "lost messages");
    });
}
