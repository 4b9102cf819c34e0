//! Per-operation costs, measured with criterion (`cargo bench --bench ops`):
//! uncontended `try_send` + `try_recv` per flavor, the cost of a failing rendezvous
//! `try_send`, and a round trip with a peer thread that parks between messages.
//! conduit and crossbeam-channel side by side.

use std::hint::black_box;
use std::thread;

use criterion::{Criterion, criterion_group, criterion_main};

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("try_send+try_recv");
    let (tx, rx) = conduit::bounded(1024);
    g.bench_function("conduit bounded(1024)", |b| {
        b.iter(|| {
            tx.try_send(black_box(1u64)).unwrap();
            black_box(rx.try_recv().unwrap());
        })
    });
    let (tx, rx) = crossbeam_channel::bounded(1024);
    g.bench_function("crossbeam bounded(1024)", |b| {
        b.iter(|| {
            tx.try_send(black_box(1u64)).unwrap();
            black_box(rx.try_recv().unwrap());
        })
    });
    let (tx, rx) = conduit::unbounded();
    g.bench_function("conduit unbounded", |b| {
        b.iter(|| {
            tx.try_send(black_box(1u64)).unwrap();
            black_box(rx.try_recv().unwrap());
        })
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    g.bench_function("crossbeam unbounded", |b| {
        b.iter(|| {
            tx.try_send(black_box(1u64)).unwrap();
            black_box(rx.try_recv().unwrap());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rendezvous try_send, no receiver");
    let (tx, _rx) = conduit::rendezvous();
    g.bench_function("conduit", |b| {
        b.iter(|| tx.try_send(black_box(1u64)).is_err())
    });
    let (tx, _rx) = crossbeam_channel::bounded(0);
    g.bench_function("crossbeam", |b| {
        b.iter(|| tx.try_send(black_box(1u64)).is_err())
    });
    g.finish();
}

/// A round trip through two bounded(1) channels to an echo thread, which parks
/// whenever it waits: the cost of a send that must wake a parked receiver.
fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round trip with a parked peer");
    {
        let (ping_tx, ping_rx) = conduit::bounded::<u64>(1);
        let (pong_tx, pong_rx) = conduit::bounded::<u64>(1);
        let echo = thread::spawn(move || {
            for m in ping_rx.iter() {
                pong_tx.send(m).unwrap();
            }
        });
        g.bench_function("conduit bounded(1)", |b| {
            b.iter(|| {
                ping_tx.send(1).unwrap();
                black_box(pong_rx.recv().unwrap());
            })
        });
        drop(ping_tx);
        echo.join().unwrap();
    }
    {
        let (ping_tx, ping_rx) = crossbeam_channel::bounded::<u64>(1);
        let (pong_tx, pong_rx) = crossbeam_channel::bounded::<u64>(1);
        let echo = thread::spawn(move || {
            for m in ping_rx.iter() {
                pong_tx.send(m).unwrap();
            }
        });
        g.bench_function("crossbeam bounded(1)", |b| {
            b.iter(|| {
                ping_tx.send(1).unwrap();
                black_box(pong_rx.recv().unwrap());
            })
        });
        drop(ping_tx);
        echo.join().unwrap();
    }
    g.finish();
}

criterion_group!(benches, uncontended, round_trip);
criterion_main!(benches);
