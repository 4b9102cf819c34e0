//! Many threads and tasks on one channel: exactly-once delivery, per-producer FIFO,
//! disconnection while blocked, and mixed blocking + async users.

mod common;

use std::collections::HashSet;
use std::thread;

use common::{LIMIT_SECS, Rt, all, run_tokio, watchdog};
use conduit::{RecvError, SendError};

const PRODUCERS: u64 = 4;
const CONSUMERS: usize = 4;
const PER_PRODUCER: u64 = 5_000;

fn tag(producer: u64, seq: u64) -> u64 {
    producer << 32 | seq
}

/// Checks exactly-once delivery and per-producer FIFO as seen by each consumer.
fn check(per_consumer: Vec<Vec<u64>>, producers: u64, per_producer: u64, name: &str) {
    for seen in &per_consumer {
        let mut last = vec![None; producers as usize];
        for &m in seen {
            let (p, s) = ((m >> 32) as usize, m & 0xffff_ffff);
            assert!(last[p] < Some(s), "{name}: producer {p} out of order");
            last[p] = Some(s);
        }
    }
    let all: Vec<u64> = per_consumer.into_iter().flatten().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "{name}: a message was duplicated");
    assert_eq!(
        all.len() as u64,
        producers * per_producer,
        "{name}: a message was lost"
    );
}

#[test]
fn mpmc_4x4_exactly_once() {
    watchdog(|| {
        for (name, make) in all::<u64>() {
            let (tx, rx) = make();
            let per_consumer = thread::scope(|s| {
                for p in 0..PRODUCERS {
                    let tx = tx.clone();
                    s.spawn(move || {
                        for i in 0..PER_PRODUCER {
                            tx.send(tag(p, i)).unwrap();
                        }
                    });
                }
                drop(tx);
                let consumers: Vec<_> = (0..CONSUMERS)
                    .map(|_| {
                        let rx = rx.clone();
                        s.spawn(move || rx.iter().collect::<Vec<_>>())
                    })
                    .collect();
                consumers
                    .into_iter()
                    .map(|c| c.join().unwrap())
                    .collect::<Vec<_>>()
            });
            check(per_consumer, PRODUCERS, PER_PRODUCER, name);
        }
    });
}

#[test]
fn mpmc_4x4_with_try_and_timed_operations() {
    watchdog(|| {
        for (name, make) in all::<u64>() {
            let (tx, rx) = make();
            let per_consumer = thread::scope(|s| {
                for p in 0..PRODUCERS {
                    let tx = tx.clone();
                    s.spawn(move || {
                        for i in 0..PER_PRODUCER / 5 {
                            let mut m = tag(p, i);
                            loop {
                                match tx.try_send(m) {
                                    Ok(()) => break,
                                    Err(e) => m = e.into_inner(),
                                }
                                match tx.send_timeout(m, std::time::Duration::from_micros(50)) {
                                    Ok(()) => break,
                                    Err(e) => m = e.into_inner(),
                                }
                            }
                        }
                    });
                }
                drop(tx);
                let consumers: Vec<_> = (0..CONSUMERS)
                    .map(|c| {
                        let rx = rx.clone();
                        s.spawn(move || {
                            let mut got = vec![];
                            loop {
                                let r = if c % 2 == 0 {
                                    rx.try_recv().map_err(|e| e.is_disconnected())
                                } else {
                                    rx.recv_timeout(std::time::Duration::from_micros(50))
                                        .map_err(|e| e.is_disconnected())
                                };
                                match r {
                                    Ok(m) => got.push(m),
                                    Err(true) => return got,
                                    Err(false) => thread::yield_now(),
                                }
                            }
                        })
                    })
                    .collect();
                consumers
                    .into_iter()
                    .map(|c| c.join().unwrap())
                    .collect::<Vec<_>>()
            });
            check(per_consumer, PRODUCERS, PER_PRODUCER / 5, name);
        }
    });
}

#[test]
fn last_sender_drop_wakes_blocked_receivers_after_drain() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            let receivers: Vec<_> = (0..3)
                .map(|_| {
                    let rx = rx.clone();
                    thread::spawn(move || rx.iter().collect::<Vec<_>>())
                })
                .collect();
            for i in 0..10 {
                tx.send(i).unwrap();
            }
            drop(tx);
            let mut got: Vec<u32> = receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            got.sort_unstable();
            assert_eq!(got, (0..10).collect::<Vec<_>>(), "{name}");
            assert_eq!(rx.recv(), Err(RecvError), "{name}");
        }
    });
}

#[test]
fn last_receiver_drop_wakes_blocked_senders_with_their_message() {
    watchdog(|| {
        for (name, make) in all::<u32>() {
            let (tx, rx) = make();
            if tx.capacity().is_none() {
                continue; // unbounded senders never block
            }
            let cap = tx.capacity().unwrap();
            for i in 0..cap as u32 {
                tx.send(i).unwrap();
            }
            let senders: Vec<_> = (0..3)
                .map(|k| {
                    let tx = tx.clone();
                    thread::spawn(move || tx.send(100 + k))
                })
                .collect();
            // Only disconnection can complete those sends.
            drop(rx);
            let mut back: Vec<u32> = senders
                .into_iter()
                .map(|s| match s.join().unwrap() {
                    Err(SendError(m)) => m,
                    Ok(()) => panic!("{name}: a send succeeded with no receiver"),
                })
                .collect();
            back.sort_unstable();
            assert_eq!(back, [100, 101, 102], "{name}");
        }
    });
}

fn mixed_users(multi_thread: bool) {
    run_tokio(
        if multi_thread {
            Rt::MultiThread
        } else {
            Rt::CurrentThread
        },
        LIMIT_SECS,
        move || async move {
            for (name, make) in all::<u64>() {
                let (tx, rx) = make();
                let per = 1000u64;
                // Two producer threads (blocking) and two producer tasks (async).
                let threads: Vec<_> = (0..2)
                    .map(|p| {
                        let tx = tx.clone();
                        thread::spawn(move || {
                            for i in 0..per {
                                tx.send(tag(p, i)).unwrap();
                            }
                        })
                    })
                    .collect();
                let tasks: Vec<_> = (2..4)
                    .map(|p| {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            for i in 0..per {
                                tx.send_async(tag(p, i)).await.unwrap();
                            }
                        })
                    })
                    .collect();
                drop(tx);
                // One consumer thread (blocking) and two consumer tasks (async).
                let consumer_thread = {
                    let rx = rx.clone();
                    thread::spawn(move || rx.iter().collect::<Vec<_>>())
                };
                let consumer_tasks: Vec<_> = (0..2)
                    .map(|_| {
                        let rx = rx.clone();
                        tokio::spawn(async move {
                            let mut got = vec![];
                            while let Ok(m) = rx.recv_async().await {
                                got.push(m);
                            }
                            got
                        })
                    })
                    .collect();
                drop(rx);
                for t in tasks {
                    t.await.unwrap();
                }
                let mut per_consumer = vec![];
                for c in consumer_tasks {
                    per_consumer.push(c.await.unwrap());
                }
                for t in threads {
                    t.join().unwrap();
                }
                per_consumer.push(consumer_thread.join().unwrap());
                check(per_consumer, 4, per, name);
            }
        },
    );
}

#[test]
fn mixed_blocking_and_async_current_thread_runtime() {
    mixed_users(false);
}

#[test]
fn mixed_blocking_and_async_multi_thread_runtime() {
    mixed_users(true);
}

#[test]
fn async_only_mpmc_multi_thread_runtime() {
    run_tokio(Rt::MultiThread, LIMIT_SECS, || async {
        for (name, make) in all::<u64>() {
            let (tx, rx) = make();
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        for i in 0..1000 {
                            tx.send_async(tag(p, i)).await.unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let stream = rx.clone().into_stream();
                    tokio::spawn(futures::StreamExt::collect::<Vec<u64>>(stream))
                })
                .collect();
            drop(rx);
            for p in producers {
                p.await.unwrap();
            }
            let mut per_consumer = vec![];
            for c in consumers {
                per_consumer.push(c.await.unwrap());
            }
            check(per_consumer, PRODUCERS, 1000, name);
        }
    });
}
