//! A hostile peer overwrites a channel's header, peer table and ring with random bytes
//! while other processes use it. Errors, lost or garbled messages are acceptable; a
//! crash, a hang or undefined behaviour is not: every process must exit normally, and
//! every call must return (each has a deadline).
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::time::{Duration, Instant};

use conduit::shm::{ByteReceiver, ByteSender, Options, Receiver, Sender};
use shm_support::*;

/// How long the users keep going (the hostile child scribbles for most of it).
const RUN: Duration = Duration::from_millis(1500);
const OP: Duration = Duration::from_millis(20);

#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let name = arg("name");
    let bytes = arg("bytes") == "1";
    let end = Instant::now() + RUN;
    match role.as_str() {
        "user_send" => {
            if bytes {
                let tx = ByteSender::open(&name).unwrap();
                say("open");
                let mut i = 0u32;
                while Instant::now() < end {
                    let msg = vec![i as u8; (i % 64) as usize];
                    let _ = tx.send_timeout(&msg, OP);
                    let _ = tx.try_send(&msg);
                    let _ = (tx.len(), tx.is_full(), tx.is_disconnected());
                    i += 1;
                }
            } else {
                let tx = Sender::<[u64; 3]>::open(&name).unwrap();
                say("open");
                let mut i = 0u64;
                while Instant::now() < end {
                    let _ = tx.send_timeout([i, i, i], OP);
                    let _ = tx.try_send([i, i, i]);
                    let _ = (tx.len(), tx.sender_count(), tx.receiver_count());
                    i += 1;
                }
            }
            say("done");
        }
        "user_recv" => {
            if bytes {
                let rx = ByteReceiver::open(&name).unwrap();
                say("open");
                let mut buf = vec![0; rx.max_message()];
                while Instant::now() < end {
                    let _ = rx.recv_timeout(OP);
                    let _ = rx.try_recv();
                    let _ = rx.recv_into(&mut buf[..1]);
                }
            } else {
                let rx = Receiver::<[u64; 3]>::open(&name).unwrap();
                say("open");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                while Instant::now() < end {
                    let _ = rx.recv_timeout(OP);
                    let _ = rx.try_recv();
                    let _ = rt.block_on(async { tokio::time::timeout(OP, rx.recv_async()).await });
                }
            }
            say("done");
        }
        "hostile" => {
            let raw = Raw::map(&name);
            let mut rng = Rng(num("seed") | 1);
            let len = raw.len();
            let stop = Instant::now() + RUN * 2 / 3;
            while Instant::now() < stop {
                // Mostly small scribbles at random places, sometimes whole regions: the
                // header, the peer table, the ring positions, the slots.
                let (offset, n) = match rng.next() % 8 {
                    0 => (0, 384),
                    1 => (PEER_STATES, 64 * 8),
                    2 => (HEAD, 256),
                    3 => (SLOTS, len - SLOTS),
                    _ => ((rng.next() as usize) % len, 8 + (rng.next() as usize) % 64),
                };
                let mut r = Rng(rng.next() | 1);
                raw.scribble(offset, n, || match r.next() % 4 {
                    // Plausible small values hit more code paths than pure noise.
                    0 => r.next() % 64,
                    _ => r.next(),
                });
                std::thread::yield_now();
            }
            say("done");
        }
        other => panic!("unknown role {other}"),
    }
}

/// `spsc`: the channel is in the single-producer mode, used by one sending child and
/// this process as the one receiver.
fn hostile(bytes: bool, seed: u64, spsc: bool) {
    watchdog(move || {
        let name = Name::new("hostile");
        let flag = if bytes { "1" } else { "0" };
        // The creator stays attached as a receiver so nothing is "disconnected" at first.
        let opts = Options::new()
            .capacity(16)
            .max_message(64)
            .create_new(true)
            .spsc(spsc);
        let anchor_bytes;
        let anchor_typed;
        if bytes {
            anchor_bytes = Some(ByteReceiver::with(&name, &opts).unwrap());
            anchor_typed = None;
        } else {
            anchor_typed = Some(Receiver::<[u64; 3]>::with(&name, &opts).unwrap());
            anchor_bytes = None;
        }
        let args = |seed: u64| {
            vec![
                ("name", name.0.clone()),
                ("bytes", flag.to_string()),
                ("seed", seed.to_string()),
            ]
        };
        let spawn = |role: &str, seed: u64| {
            let a = args(seed);
            let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Proc::spawn(role, &a)
        };
        let users = if spsc {
            vec![spawn("user_send", 0)]
        } else {
            vec![
                spawn("user_send", 0),
                spawn("user_send", 0),
                spawn("user_recv", 0),
                spawn("user_recv", 0),
            ]
        };
        // Scribbling starts once every user has opened the channel: an open that meets
        // a scribbled header is refused (`InvalidData`), which is right but would end
        // that user before it did anything.
        for user in &users {
            user.expect("open");
        }
        let attacker = spawn("hostile", seed);
        // This process uses it too, through the handle it created.
        let end = Instant::now() + RUN;
        while Instant::now() < end {
            if let Some(rx) = &anchor_typed {
                let _ = rx.recv_timeout(OP);
            }
            if let Some(rx) = &anchor_bytes {
                let _ = rx.recv_timeout(OP);
            }
        }
        attacker.success();
        for user in users {
            let lines = user.success();
            assert!(lines.iter().any(|l| l == "done"), "{lines:?}");
        }
    });
}

#[test]
fn hostile_peer_typed() {
    hostile(false, 0x9e37_79b9_7f4a_7c15, false);
}

#[test]
fn hostile_peer_bytes() {
    hostile(true, 0xdead_beef_cafe_f00d, false);
}

/// The same in the single-producer mode (`Options::spsc`).
#[test]
fn hostile_peer_typed_spsc() {
    hostile(false, 0x2545_f491_4f6c_dd1d, true);
}

#[test]
fn hostile_peer_bytes_spsc() {
    hostile(true, 0x1405_7b7e_f767_814f, true);
}
