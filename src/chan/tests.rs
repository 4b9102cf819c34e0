//! Unit tests of the flavors, small enough to run under miri
//! (`cargo +nightly miri test -p conduit --lib`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::{Receiver, Sender, TryRecvError, bounded, rendezvous, unbounded};

type Make = fn() -> (Sender<usize>, Receiver<usize>);

fn flavors() -> Vec<(&'static str, Make)> {
    vec![
        ("bounded(1)", || bounded(1)),
        ("bounded(3)", || bounded(3)),
        ("unbounded", unbounded),
    ]
}

#[test]
fn fifo_across_wraps_and_blocks() {
    for (name, make) in flavors() {
        let (tx, rx) = make();
        let cap = tx.capacity().unwrap_or(usize::MAX);
        let mut next_in = 0;
        let mut next_out = 0;
        // Fill to capacity (or 40 for unbounded, crossing a block), drain, repeat.
        for _ in 0..5 {
            for _ in 0..cap.min(40) {
                tx.try_send(next_in).unwrap();
                next_in += 1;
            }
            assert_eq!(rx.len(), cap.min(40), "{name}");
            while let Ok(m) = rx.try_recv() {
                assert_eq!(m, next_out, "{name}");
                next_out += 1;
            }
        }
        assert_eq!(next_in, next_out, "{name}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "{name}");
    }
}

struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn queued_messages_dropped_once() {
    for cap in [Some(4), Some(64), None] {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = match cap {
            Some(c) => bounded(c),
            None => unbounded(),
        };
        let n = cap.unwrap_or(70);
        for _ in 0..n {
            tx.send(Counted(drops.clone())).unwrap();
        }
        drop(rx.recv().unwrap());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(rx);
        // Dropped when the last receiver went, while the sender is still alive.
        assert_eq!(drops.load(Ordering::SeqCst), n);
        let err = tx.send(Counted(drops.clone())).unwrap_err();
        drop(err);
        drop(tx);
        assert_eq!(drops.load(Ordering::SeqCst), n + 1);
    }
}

#[test]
fn unread_messages_dropped_with_channel() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = unbounded();
    let weak = tx.downgrade();
    for _ in 0..40 {
        tx.send(Counted(drops.clone())).unwrap();
    }
    drop(tx);
    drop(rx);
    assert_eq!(drops.load(Ordering::SeqCst), 40);
    assert!(weak.upgrade().is_none());
}

#[test]
fn threads_exchange_exactly_once() {
    let per_sender = if cfg!(miri) { 50 } else { 5_000 };
    let mut makers = flavors();
    makers.push(("rendezvous", rendezvous));
    for (name, make) in makers {
        let (tx, rx) = make();
        let got: usize = thread::scope(|s| {
            for p in 0..2 {
                let tx = tx.clone();
                s.spawn(move || {
                    for i in 0..per_sender {
                        tx.send(p * per_sender + i).unwrap();
                    }
                });
            }
            drop(tx);
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let rx = rx.clone();
                    s.spawn(move || rx.iter().collect::<Vec<_>>())
                })
                .collect();
            let mut all: Vec<usize> = consumers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            all.sort_unstable();
            assert!(all.iter().copied().eq(0..2 * per_sender), "{name}");
            all.len()
        });
        assert_eq!(got, 2 * per_sender, "{name}");
    }
}
