//! Per-operation costs of `conduit` next to crossbeam-channel, with criterion:
//! `cargo bench --bench ops` (add a filter such as `-- ping-pong` to run a subset).
//!
//! - `try_send+try_recv/<flavor>`: one uncontended `try_send` followed by one `try_recv`
//!   on a `bounded(1024)` and on an `unbounded` channel, single thread: the fast path.
//! - `rendezvous try_send (fails)`: `try_send` on a `bounded(0)` channel with a live
//!   receiver that is not waiting, so it must fail with `Full`: the cost of finding out.
//! - `ping-pong bounded(1)`: a round trip between two threads over two `bounded(1)`
//!   channels: the peer blocks in `recv`, so this is send/recv latency including the
//!   wake-up of a waiting (spinning or parked) peer.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// The operations measured, for `u64` messages.
trait Chan {
    const NAME: &'static str;
    type Tx: Send;
    type Rx: Send;
    fn bounded(cap: usize) -> (Self::Tx, Self::Rx);
    fn unbounded() -> (Self::Tx, Self::Rx);
    fn try_send(tx: &Self::Tx, msg: u64) -> bool;
    fn try_recv(rx: &Self::Rx) -> Option<u64>;
    fn send(tx: &Self::Tx, msg: u64) -> bool;
    fn recv(rx: &Self::Rx) -> Option<u64>;
}

/// Both crates share the crossbeam-channel API shape.
macro_rules! chan {
    ($ty:ident, $name:literal, $krate:ident) => {
        struct $ty;
        impl Chan for $ty {
            const NAME: &'static str = $name;
            type Tx = $krate::Sender<u64>;
            type Rx = $krate::Receiver<u64>;
            fn bounded(cap: usize) -> (Self::Tx, Self::Rx) {
                $krate::bounded(cap)
            }
            fn unbounded() -> (Self::Tx, Self::Rx) {
                $krate::unbounded()
            }
            fn try_send(tx: &Self::Tx, msg: u64) -> bool {
                tx.try_send(msg).is_ok()
            }
            fn try_recv(rx: &Self::Rx) -> Option<u64> {
                rx.try_recv().ok()
            }
            fn send(tx: &Self::Tx, msg: u64) -> bool {
                tx.send(msg).is_ok()
            }
            fn recv(rx: &Self::Rx) -> Option<u64> {
                rx.recv().ok()
            }
        }
    };
}

chan!(Conduit, "conduit", conduit);
chan!(Crossbeam, "crossbeam-channel", crossbeam_channel);

/// A constructor for one flavor.
type New<C> = fn() -> (<C as Chan>::Tx, <C as Chan>::Rx);

fn try_send_recv<C: Chan>(c: &mut Criterion) {
    let flavors: [(&str, New<C>); 2] = [
        ("bounded(1024)", || C::bounded(1024)),
        ("unbounded", C::unbounded),
    ];
    for (flavor, new) in flavors {
        let (tx, rx) = new();
        c.bench_function(&format!("try_send+try_recv/{flavor}/{}", C::NAME), |b| {
            b.iter(|| {
                assert!(C::try_send(&tx, black_box(7)));
                black_box(C::try_recv(&rx))
            })
        });
    }
}

fn rendezvous_try_send<C: Chan>(c: &mut Criterion) {
    let (tx, _rx) = C::bounded(0);
    c.bench_function(&format!("rendezvous try_send (fails)/{}", C::NAME), |b| {
        b.iter(|| assert!(!C::try_send(&tx, black_box(7))))
    });
}

fn ping_pong<C: Chan>(c: &mut Criterion) {
    let (ping_tx, ping_rx) = C::bounded(1);
    let (pong_tx, pong_rx) = C::bounded(1);
    thread::scope(|s| {
        s.spawn(move || {
            while let Some(v) = C::recv(&ping_rx) {
                assert!(C::send(&pong_tx, v));
            }
        });
        c.bench_function(&format!("ping-pong bounded(1)/{}", C::NAME), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    assert!(C::send(&ping_tx, i));
                    assert_eq!(C::recv(&pong_rx), Some(i));
                }
                start.elapsed()
            })
        });
        drop(ping_tx); // ends the echo thread
    });
}

/// Each operation for conduit, then for crossbeam-channel, so that the pairs print together.
fn benches(c: &mut Criterion) {
    try_send_recv::<Conduit>(c);
    try_send_recv::<Crossbeam>(c);
    rendezvous_try_send::<Conduit>(c);
    rendezvous_try_send::<Crossbeam>(c);
    ping_pong::<Conduit>(c);
    ping_pong::<Crossbeam>(c);
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(group);
