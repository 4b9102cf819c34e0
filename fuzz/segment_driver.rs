//! The segment fuzz driver, shared by the cargo-fuzz target (`fuzz_targets/segment.rs`)
//! and the stable harness that CI runs (`tests/fuzz_segments.rs`).
//!
//! One case: the input bytes become the whole file of a segment, as if a hostile or
//! crashed process had left them there; then every way of looking at or opening it runs,
//! and, where an open succeeds, a fixed, bounded sequence of operations. The property:
//! every call returns (an open returns `Ok` or a clear error, never panics; operations
//! return, err or time out), and the process neither faults nor loops. A panic anywhere
//! fails the case; a hang is caught by the caller's watchdog.

use std::collections::BTreeSet;
use std::io;
use std::time::Duration;

use conduit::mailbox::Select;
use conduit::shm::{self, ByteMailbox, ByteReceiver, ByteSender, Mailbox, Receiver, Sender};
use conduit::signal::{Disposition, SigSet, Signal};

/// What one case reached, for coverage reports: the outcome of each open, by kind of
/// error (its message up to the first colon or digit), and whether operations ran.
#[derive(Debug, Default)]
pub struct Reached {
    pub outcomes: BTreeSet<String>,
}

fn outcome<T>(what: &str, r: &io::Result<T>) -> String {
    match r {
        Ok(_) => format!("{what}: ok"),
        Err(e) => {
            let msg = e.to_string();
            let cut = msg
                .find(|c: char| c == ':' || c.is_ascii_digit())
                .unwrap_or(msg.len());
            format!("{what}: {:?} {}", e.kind(), msg[..cut].trim())
        }
    }
}

/// A bound for every timed operation: short, so a case costs milliseconds.
const OP: Duration = Duration::from_millis(2);

/// Writes `image` as the segment `name` and runs every open and, where one succeeds, the
/// bounded operations. Removes the segment afterwards.
pub fn run_case(name: &str, image: &[u8], reached: &mut Reached) {
    let path = format!("/dev/shm/conduit.{name}");
    let _ = std::fs::remove_file(&path);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("create the segment file");
        io::Write::write_all(&mut f, image).expect("write the segment file");
    }

    let info = shm::inspect(name);
    reached.outcomes.insert(outcome("inspect", &info));
    if let Ok(info) = &info {
        for p in &info.problems {
            let cut = p.find(|c: char| c.is_ascii_digit()).unwrap_or(p.len());
            reached
                .outcomes
                .insert(format!("problem: {}", p[..cut].trim()));
        }
    }

    let rx = Receiver::<u64>::open(name);
    reached.outcomes.insert(outcome("typed receiver", &rx));
    if let Ok(rx) = rx {
        let _ = (rx.try_recv(), rx.recv_timeout(OP), rx.len(), rx.is_empty());
        let _ = (rx.sender_count(), rx.receiver_count(), rx.is_disconnected());
        drop(rx);
    }
    let tx = Sender::<u64>::open(name);
    reached.outcomes.insert(outcome("typed sender", &tx));
    if let Ok(tx) = tx {
        let _ = (
            tx.try_send(1),
            tx.send_timeout(2, OP),
            tx.len(),
            tx.is_full(),
        );
        // A receiver of this process now meets what the sender left.
        if let Ok(rx) = Receiver::<u64>::open(name) {
            let _ = (rx.try_recv(), rx.recv_timeout(OP), rx.try_recv());
        }
    }
    let btx = ByteSender::open(name);
    reached.outcomes.insert(outcome("byte sender", &btx));
    if let Ok(btx) = btx {
        let max = btx.max_message();
        let msg = vec![0xa5; max.min(70)];
        for len in [0, 1, 7, 8, 9, msg.len()] {
            let _ = btx.try_send(&msg[..len.min(msg.len())]);
        }
        let _ = btx.send_timeout(&msg, OP);
        if let Ok(brx) = ByteReceiver::open(name) {
            let mut buf = [0u8; 16];
            let _ = (
                brx.try_recv(),
                brx.recv_timeout(OP),
                brx.recv_into(&mut buf),
            );
            let _ = brx.try_recv();
        }
    }
    mailbox_ops(name, reached);
    // A signal target: raises from a raiser, then the owner's takes (a taken-over owner
    // word, garbage in the words and queues).
    let target = shm::signal::Target::open(name);
    reached.outcomes.insert(outcome("signal target", &target));
    let raiser = shm::signal::Raiser::open(name);
    reached.outcomes.insert(outcome("signal raiser", &raiser));
    if let Ok(r) = &raiser {
        for n in [1, 5, 31, 32, 40, 64] {
            let _ = r.raise_with(Signal::new(n).unwrap(), 7);
        }
        let _ = r.is_disconnected();
    }
    if let Ok(t) = target {
        let _ = (t.try_wait(), t.wait_timeout(OP), t.dispatch(), t.masked());
        t.set_disposition(Signal::new(40).unwrap(), Disposition::Ignore);
        let _ = t.try_wait_for(&SigSet::all());
    }
    let _ = shm::unlink(name);
    let _ = std::fs::remove_file(&path);
}

/// The selections a mailbox case receives with.
fn selections(from: &conduit::mailbox::Address) -> [Select; 5] {
    [
        Select::Any,
        Select::Tag(1),
        Select::TagAtMost(2),
        Select::TagExcept(0),
        Select::From(from.clone()),
    ]
}

/// Opens `name` as a typed and as a byte mailbox and, where one opens, sends, receives
/// with every selection, and makes a request (bounded by [`OP`]).
fn mailbox_ops(name: &str, reached: &mut Reached) {
    let mb = Mailbox::<u64>::open(name);
    reached.outcomes.insert(outcome("mailbox", &mb));
    if let Ok(mb) = mb {
        let _ = (mb.try_send_tagged(1, 1), mb.send_tagged_timeout(2, 2, OP));
        for sel in selections(mb.address()) {
            let _ = (
                mb.try_recv_select(sel.clone()),
                mb.recv_select_timeout(sel, OP),
            );
        }
        let _ = (
            mb.request_timeout(3, OP),
            mb.try_recv(),
            mb.len(),
            mb.is_closed(),
        );
    }
    let bmb = ByteMailbox::open(name);
    reached.outcomes.insert(outcome("byte mailbox", &bmb));
    if let Ok(bmb) = bmb {
        let msg = vec![0x5a; bmb.max_message().min(70)];
        for len in [0, 1, 7, 8, 9, msg.len()] {
            let _ = bmb.try_send_tagged(len as u64, &msg[..len.min(msg.len())]);
        }
        for sel in selections(bmb.address()) {
            let _ = (
                bmb.try_recv_select(sel.clone()),
                bmb.recv_select_timeout(sel, OP),
            );
        }
        let _ = (bmb.request_timeout(b"q", OP), bmb.len());
    }
}

/// A small xorshift generator: the harness needs no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The bytes of a real, freshly made segment (typed `u64` or bytes), used as the seed
/// that mutations start from, so that cases get past the magic and the version check.
pub fn valid_image(name: &str, bytes: bool, queued: usize) -> Vec<u8> {
    let _ = shm::unlink(name);
    if bytes {
        let tx = ByteSender::create(name, 4).expect("create a byte channel");
        for i in 0..queued {
            let _ = tx.try_send(&vec![i as u8; i * 5]);
        }
    } else {
        let tx = Sender::<u64>::create(name, 4).expect("create a channel");
        for i in 0..queued {
            let _ = tx.try_send(i as u64);
        }
    }
    let image = std::fs::read(format!("/dev/shm/conduit.{name}")).expect("read the segment");
    let _ = shm::unlink(name);
    image
}

/// [`valid_image`] for a channel in the single-producer mode (`shm::Options::spsc`),
/// whose header carries the mode's flag in its kind word.
pub fn valid_spsc_image(name: &str, bytes: bool, queued: usize) -> Vec<u8> {
    let _ = shm::unlink(name);
    let opts = shm::Options::new().create_new(true).capacity(4).spsc(true);
    if bytes {
        let tx = ByteSender::with(name, &opts).expect("create a byte channel");
        for i in 0..queued {
            let _ = tx.try_send(&vec![i as u8; i * 5]);
        }
    } else {
        let tx = Sender::<u64>::with(name, &opts).expect("create a channel");
        for i in 0..queued {
            let _ = tx.try_send(i as u64);
        }
    }
    let image = std::fs::read(format!("/dev/shm/conduit.{name}")).expect("read the segment");
    let _ = shm::unlink(name);
    image
}

/// The bytes of a freshly made mailbox (typed `u64` or bytes) with `queued` messages of
/// several tags, one of them a request whose requester gave up.
pub fn valid_mailbox_image(name: &str, bytes: bool, queued: usize) -> Vec<u8> {
    let _ = shm::unlink(name);
    if bytes {
        let mb = ByteMailbox::create(name, 4).expect("create a byte mailbox");
        let _ = mb.try_recv();
        let _ = mb.request_timeout(b"req", Duration::ZERO);
        for i in 0..queued {
            let _ = mb.try_send_tagged(i as u64 % 3, &vec![i as u8; i * 5]);
        }
    } else {
        let mb = Mailbox::<u64>::create(name, 4).expect("create a mailbox");
        let _ = mb.try_recv();
        let _ = mb.request_timeout(7, Duration::ZERO);
        for i in 0..queued {
            let _ = mb.try_send_tagged(i as u64 % 3, i as u64);
        }
    }
    let image = std::fs::read(format!("/dev/shm/conduit.{name}")).expect("read the segment");
    let _ = shm::unlink(name);
    image
}

/// The bytes of a real, freshly made signal target (queue depth 4) with `queued` raises
/// of a standard and a queued number pending, as a seed like [`valid_image`]'s.
pub fn valid_signal_image(name: &str, queued: u64) -> Vec<u8> {
    let _ = shm::unlink(name);
    let opts = shm::Options::new().create_new(true).capacity(4);
    let target = shm::signal::Target::with(name, &opts).expect("create a signal target");
    let raiser = shm::signal::Raiser::open(name).expect("open a raiser");
    for i in 0..queued {
        let _ = raiser.raise(Signal::new(3).unwrap());
        let _ = raiser.raise_with(Signal::new(40).unwrap(), i);
    }
    let image = std::fs::read(format!("/dev/shm/conduit.{name}")).expect("read the segment");
    drop((raiser, target));
    let _ = shm::unlink(name);
    image
}

/// Mutates `image` in place: a few random bytes or 8-byte words overwritten, with offsets
/// biased to the header, peer table and ring positions (the first 14 KiB) where the
/// validation lives, and sometimes a truncation or extension.
pub fn mutate(image: &mut Vec<u8>, rng: &mut Rng) {
    let edits = 1 + rng.below(6);
    for _ in 0..edits {
        if image.is_empty() {
            break;
        }
        let span = if rng.below(4) == 0 {
            image.len()
        } else {
            image.len().min(14 * 1024)
        };
        let at = rng.below(span as u64) as usize;
        match rng.below(4) {
            0 => image[at] = rng.next() as u8,
            1 => {
                let at = at & !7;
                let word = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => rng.below(1 << 20),
                    _ => rng.next(),
                };
                let end = (at + 8).min(image.len());
                image[at..end].copy_from_slice(&word.to_ne_bytes()[..end - at]);
            }
            2 => image[at] ^= 1 << rng.below(8),
            _ => {
                let at = at & !7;
                let end = (at + 8).min(image.len());
                let delta = rng.below(5) as i64 - 2;
                let mut w = [0u8; 8];
                w[..end - at].copy_from_slice(&image[at..end]);
                let v = (u64::from_ne_bytes(w) as i64).wrapping_add(delta) as u64;
                image[at..end].copy_from_slice(&v.to_ne_bytes()[..end - at]);
            }
        }
    }
    match rng.below(16) {
        0 => {
            let keep = rng.below(image.len() as u64 + 1) as usize;
            image.truncate(keep);
        }
        1 => image.extend(std::iter::repeat_n(0, rng.below(4096) as usize)),
        _ => {}
    }
}
