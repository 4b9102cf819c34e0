//! conduit inside a user's own loom model: compiled with `--cfg loom`, conduit's
//! atomics, locks, threads and parks are loom's, so a downstream crate that model-checks
//! its own code can keep conduit's channels in it. These models use only the public API,
//! the way such a user would (no helpers from `loom_tests`).
//!
//! A user's model explores conduit's states along with its own, so its cost grows with
//! the preemption bound like any other (see `loom-tests/README.md` for the measurements).
//! These run at `LOOM_USER_PREEMPTIONS` (default 3) rather than CI's
//! `LOOM_MAX_PREEMPTIONS`: they check that conduit keeps working inside a model, which
//! conduit's own models check in depth.
#![cfg(loom)]

use loom::thread;

/// `loom::model` at `LOOM_USER_PREEMPTIONS` (default 3). Prints how many executions
/// loom explored (shown with `--nocapture`): the machine-independent cost.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    let f = move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    };
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(
        std::env::var("LOOM_USER_PREEMPTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    );
    builder.check(f);
    eprintln!("executions: {}", executions.load(Ordering::Relaxed));
}

/// One thread sends twice, the other receives twice: both messages arrive, in order.
fn send_twice_recv_twice(make: fn() -> (conduit::Sender<u32>, conduit::Receiver<u32>)) {
    model(move || {
        let (tx, rx) = make();
        let t = thread::spawn(move || {
            tx.send(1).unwrap();
            tx.send(2).unwrap();
        });
        assert_eq!(rx.recv(), Ok(1));
        assert_eq!(rx.recv(), Ok(2));
        t.join().unwrap();
        assert_eq!(rx.recv(), Err(conduit::RecvError));
    });
}

#[test]
fn bounded_send_twice_recv_twice() {
    send_twice_recv_twice(|| conduit::bounded(1));
}

#[test]
fn unbounded_send_twice_recv_twice() {
    send_twice_recv_twice(conduit::unbounded);
}

#[test]
fn rendezvous_send_twice_recv_twice() {
    send_twice_recv_twice(conduit::rendezvous);
}
