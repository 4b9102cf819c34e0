//! A tour of conduit: threads and async tasks sharing channels of every flavor.
//!
//! Run it with `cargo run --release --example tour`.

use std::thread;
use std::time::{Duration, Instant};

use conduit::{RecvTimeoutError, TrySendError};

/// Set in the environment of the child process the cross-process part spawns.
const SHM_CHILD: &str = "CONDUIT_TOUR_SHM_CHILD";

fn main() {
    if let Ok(name) = std::env::var(SHM_CHILD) {
        return shm_child(&name);
    }
    println!("conduit tour\n============\n");
    bounded_pipeline();
    unbounded_fan_in();
    rendezvous_handoff();
    async_and_threads_together();
    timeouts_and_errors();
    mailboxes();
    signals();
    cross_process();
    println!("\ntour complete");
}

/// Mailboxes: named, many-to-many, with envelopes, selective receive and request/reply.
fn mailboxes() {
    use conduit::mailbox::{PostOffice, Select};
    println!("6. mailboxes: priority tags, receive by sender, request/reply");
    let po = PostOffice::new();
    let jobs = po.open::<String>("jobs").unwrap();
    let client = po.open::<String>("jobs").unwrap();
    client.send_tagged(5, "sweep the floor".into()).unwrap();
    client.send_tagged(1, "put out the fire".into()).unwrap();
    jobs.send_tagged(3, "order lunch".into()).unwrap();
    // Lowest tag first, like msgrcv with a negative type.
    let urgent = jobs.recv_select(Select::TagAtMost(u64::MAX)).unwrap();
    println!("   most urgent (tag {}): {}", urgent.tag(), urgent.body());
    // Only what `jobs` itself sent.
    let own = jobs
        .recv_select(Select::From(jobs.address().clone()))
        .unwrap();
    println!("   from {}: {}", own.from(), own.body());
    // A worker answers requests through the envelope.
    let worker = jobs.clone();
    let answering = thread::spawn(move || {
        // The sweep job left in the queue first, then the request.
        let _ = worker.recv().unwrap();
        let mut request = worker.recv().unwrap();
        let question = request.body().clone();
        request
            .take_reply::<usize>()
            .unwrap()
            .reply(question.len())
            .unwrap();
    });
    let answer = client.request::<usize>("how long is this?".into()).unwrap();
    answering.join().unwrap();
    println!("   request answered: {answer}");
    po.close("jobs");
    println!("   closed: names now {:?}", po.names());
}

/// Signals: coalescing and queued numbers, masks and handlers.
fn signals() {
    use conduit::signal::{Disposition, SigSet, Signal, Target};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    println!("7. signals: coalescing, queued payloads, masks and handlers");
    let target = Target::new();
    let raiser = target.raiser();
    let hup = Signal::new(1).unwrap();
    let usr = Signal::new(10).unwrap();
    let rt = Signal::new(40).unwrap();
    for _ in 0..1000 {
        raiser.raise(hup).unwrap();
    }
    let info = target.wait();
    println!(
        "   1000 raises of {} coalesced into one delivery: count {}",
        info.signal().number(),
        info.count()
    );
    raiser.raise_with(rt, 7).unwrap();
    raiser.raise_with(rt, 8).unwrap();
    let payloads: Vec<_> = (0..2).map(|_| target.wait().payload().unwrap()).collect();
    println!(
        "   queued signal {}: payloads {payloads:?} in order",
        rt.number()
    );
    target.mask(&SigSet::from_iter([usr]));
    raiser.raise(usr).unwrap();
    println!(
        "   masked {}: try_wait gives {:?}",
        usr.number(),
        target.try_wait().map(|i| i.signal())
    );
    let caught = Arc::new(AtomicU64::new(0));
    let c = caught.clone();
    target.set_disposition(
        usr,
        Disposition::catch(move |info| {
            c.fetch_add(info.count(), Ordering::Relaxed);
        }),
    );
    target.unmask(&SigSet::from_iter([usr]));
    target.dispatch();
    println!(
        "   unmasked and caught: the handler ran for {} raise(s) on this thread",
        caught.load(Ordering::Relaxed)
    );
}

/// A channel in named shared memory, shared with a second process (this program,
/// re-spawned).
#[cfg(all(unix, target_pointer_width = "64"))]
fn cross_process() {
    use conduit::shm;

    println!("8. cross-process: a shared-memory mailbox between two processes");
    let name = format!("tour-{}", std::process::id());
    let opts = shm::Options::new()
        .capacity(64)
        .create_new(true)
        .unlink_on_drop(true);
    let rx = shm::Receiver::<u64>::with(&name, &opts).expect("create the segment");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(SHM_CHILD, &name)
        .spawn()
        .expect("spawn the child process");
    let start = Instant::now();
    // The child sends 1..=1000 and exits; we drain until every sender process is gone.
    let (mut count, mut sum) = (0u64, 0u64);
    while let Ok(v) = rx.recv() {
        count += 1;
        sum += v;
    }
    child.wait().expect("child exit");
    println!(
        "   received {count} messages from process {} (sum {sum}) in {:.1?}; segment /dev/shm/conduit.{name}",
        child.id(),
        start.elapsed()
    );
}

#[cfg(not(all(unix, target_pointer_width = "64")))]
fn cross_process() {
    println!("8. cross-process: conduit::shm needs a 64-bit Unix");
}

/// The child side of [`cross_process`].
#[cfg(all(unix, target_pointer_width = "64"))]
fn shm_child(name: &str) {
    let tx = conduit::shm::Sender::<u64>::open(name).expect("open the segment");
    for v in 1..=1000 {
        tx.send(v).expect("send");
    }
}

#[cfg(not(all(unix, target_pointer_width = "64")))]
fn shm_child(_name: &str) {}

/// A bounded channel applies back-pressure: producers wait while it is full.
fn bounded_pipeline() {
    println!("1. bounded(8): 2 producer threads -> 2 consumer threads");
    let (tx, rx) = conduit::bounded::<u64>(8);
    let start = Instant::now();
    let n = 100_000u64;
    thread::scope(|s| {
        for p in 0..2 {
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..n {
                    tx.send(p * n + i).unwrap();
                }
            });
        }
        drop(tx);
        let sums: Vec<_> = (0..2)
            .map(|_| {
                let rx = rx.clone();
                s.spawn(move || rx.iter().fold((0u64, 0u64), |(c, t), m| (c + 1, t + m)))
            })
            .collect();
        let (count, total) = sums
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(c, t), (c2, t2)| (c + c2, t + t2));
        let expect: u64 = (0..2 * n).sum();
        println!(
            "   {count} messages, checksum {} in {:.1?}",
            if total == expect { "ok" } else { "MISMATCH" },
            start.elapsed()
        );
    });
}

/// An unbounded channel never blocks the sender.
fn unbounded_fan_in() {
    println!("2. unbounded: 4 threads report to one collector");
    let (tx, rx) = conduit::unbounded();
    thread::scope(|s| {
        for id in 0..4 {
            let tx = tx.clone();
            s.spawn(move || {
                for step in 0..3 {
                    tx.send(format!("worker {id} finished step {step}"))
                        .unwrap();
                }
            });
        }
    });
    drop(tx);
    let reports: Vec<String> = rx.iter().collect();
    println!(
        "   collected {} reports; first: {:?}",
        reports.len(),
        reports[0]
    );
}

/// A rendezvous channel hands each message over directly.
fn rendezvous_handoff() {
    println!("3. rendezvous: send returns only once the receiver has the message");
    let (tx, rx) = conduit::rendezvous();
    assert!(matches!(tx.try_send(1), Err(TrySendError::Full(1))));
    println!("   try_send with nobody receiving: Full");
    let receiver = thread::spawn(move || {
        let got: Vec<i32> = rx.iter().collect();
        got
    });
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    drop(tx);
    println!("   receiver got {:?}", receiver.join().unwrap());
}

/// Blocking threads and async tasks on the same channels.
fn async_and_threads_together() {
    println!("4. async tasks (tokio) and threads on one channel");
    let (jobs_tx, jobs_rx) = conduit::bounded::<u32>(4);
    let (done_tx, done_rx) = conduit::unbounded::<(String, u32)>();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Two async workers.
    for w in 0..2 {
        let jobs = jobs_rx.clone();
        let done = done_tx.clone();
        rt.spawn(async move {
            let mut stream = jobs.into_stream();
            while let Some(job) = futures::StreamExt::next(&mut stream).await {
                done.send_async((format!("task {w}"), job * job))
                    .await
                    .unwrap();
            }
        });
    }
    // One thread worker.
    let worker = {
        let jobs = jobs_rx;
        let done = done_tx;
        thread::spawn(move || {
            for job in jobs.iter() {
                done.send(("thread".to_string(), job * job)).unwrap();
            }
        })
    };
    // An async producer feeds them all.
    rt.block_on(async move {
        for job in 1..=12 {
            jobs_tx.send_async(job).await.unwrap();
        }
    });
    worker.join().unwrap();
    let mut results: Vec<(String, u32)> = done_rx.iter().collect();
    results.sort_by_key(|r| r.1);
    let by_thread = results.iter().filter(|r| r.0 == "thread").count();
    println!(
        "   12 jobs squared: {:?} ({} by the thread, {} by tasks)",
        results.iter().map(|r| r.1).collect::<Vec<_>>(),
        by_thread,
        results.len() - by_thread
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Timeouts and disconnection are values, not panics.
fn timeouts_and_errors() {
    println!("5. timeouts and disconnection");
    let (tx, rx) = conduit::bounded::<&str>(1);
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Timeout)
    );
    println!("   recv_timeout on an empty channel: Timeout");
    tx.send("last words").unwrap();
    drop(tx);
    println!(
        "   after the sender left: {:?}, then {:?}",
        rx.recv(),
        rx.recv()
    );
}
