//! The reference model of selective receive, shared by the in-process mailbox tests
//! (`tests/mailbox.rs`) and the shared-memory ones (`tests/shm_mailbox.rs`): a `Vec` in
//! send order, scanned linearly with SysV `msgrcv` semantics, and a driver that runs
//! random sends and selective `try_recv`s against a mailbox and the model at once.
#![allow(dead_code)]

use conduit::mailbox::{Address, Select};
use conduit::{TryRecvError, TrySendError};

/// xorshift64*: a small deterministic generator, so failures replay by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The reference: a `Vec` in send order, scanned linearly with SysV `msgrcv` semantics.
#[derive(Default)]
pub struct Model {
    pub queue: Vec<(u64, usize, u32)>, // (tag, sender index, body)
}

impl Model {
    pub fn take(&mut self, sel: &ModelSel) -> Option<(u64, usize, u32)> {
        let i = match *sel {
            ModelSel::Any => (!self.queue.is_empty()).then_some(0),
            ModelSel::Tag(t) => self.queue.iter().position(|m| m.0 == t),
            ModelSel::TagAtMost(n) => {
                // msgrcv(msgtyp < 0): the first message of the lowest type <= |msgtyp|.
                let lowest = self.queue.iter().map(|m| m.0).filter(|&t| t <= n).min();
                lowest.and_then(|l| self.queue.iter().position(|m| m.0 == l))
            }
            ModelSel::TagExcept(t) => self.queue.iter().position(|m| m.0 != t),
            ModelSel::From(s) => self.queue.iter().position(|m| m.1 == s),
        }?;
        Some(self.queue.remove(i))
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ModelSel {
    Any,
    Tag(u64),
    TagAtMost(u64),
    TagExcept(u64),
    From(usize),
}

/// A mailbox handle of `u32` messages under test.
pub trait Target {
    fn address(&self) -> Address;
    fn try_send_tagged(&self, tag: u64, body: u32) -> Result<(), TrySendError<u32>>;
    /// (tag, sender, body) of the message `sel` takes.
    fn try_recv_select(&self, sel: Select) -> Result<(u64, Address, u32), TryRecvError>;
    fn len(&self) -> usize;
}

/// The blocking calls of a mailbox handle of `u32` messages under test.
pub trait Blocking: Target {
    fn send_tagged(&self, tag: u64, body: u32);
    /// The body of the message `sel` takes, waiting for one.
    fn recv_select(&self, sel: Select) -> u32;
}

/// Receivers by tag wait while messages of other tags stay queued (the count never drops
/// to zero) and take what they select as it comes. Three messages tagged 5 are queued;
/// then `mb` and `peer`, in another thread, play 200 rounds of ping-pong by tag, each
/// waiting with its own message still queued until the other takes it (in one process,
/// each receive moves the other side's answer aside with its own message); then `after`
/// runs with both handles, and the three messages must still be there, in order.
pub fn past_other_tags<H: Blocking + Send + 'static>(mb: &H, peer: H, after: impl FnOnce(&H, H)) {
    for v in 0..3 {
        mb.send_tagged(5, v);
    }
    let rounds = 200;
    let ponger = std::thread::spawn(move || {
        for _ in 0..rounds {
            let v = peer.recv_select(Select::Tag(1));
            peer.send_tagged(2, v + 1);
        }
        peer
    });
    for v in 0..rounds {
        mb.send_tagged(1, v);
        assert_eq!(mb.recv_select(Select::Tag(2)), v + 1);
    }
    after(mb, ponger.join().unwrap());
    assert_eq!(mb.len(), 3);
    for v in 0..3 {
        assert_eq!(mb.try_recv_select(Select::Tag(5)).unwrap().2, v);
    }
}

/// Random sends (from the handle families `handles`, five tags) and random selective
/// `try_recv`s, `steps` of them, each result compared with the linear-scan model: body,
/// tag, sender, the `Empty` answers, `Full` at capacity `cap`, and `len` after every
/// step.
pub fn run_against_model<H: Target>(seed: u64, cap: usize, handles: &[H], steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = handles.len() as u64;
    let addrs: Vec<Address> = handles.iter().map(|h| h.address()).collect();
    let mut model = Model::default();
    let mut body = 0u32;
    for step in 0..steps {
        let s = rng.below(n) as usize;
        let h = &handles[s];
        if rng.below(100) < 50 {
            let tag = rng.below(5);
            body += 1;
            let res = h.try_send_tagged(tag, body);
            if model.queue.len() == cap {
                assert_eq!(
                    res,
                    Err(TrySendError::Full(body)),
                    "seed {seed} step {step}"
                );
            } else {
                res.unwrap();
                model.queue.push((tag, s, body));
            }
        } else {
            let x = rng.below(6);
            let (msel, sel) = match rng.below(5) {
                0 => (ModelSel::Any, Select::Any),
                1 => (ModelSel::Tag(x), Select::Tag(x)),
                2 => (ModelSel::TagAtMost(x), Select::TagAtMost(x)),
                3 => (ModelSel::TagExcept(x), Select::TagExcept(x)),
                _ => {
                    let s = (x % n) as usize;
                    (ModelSel::From(s), Select::From(addrs[s].clone()))
                }
            };
            let got = h.try_recv_select(sel.clone());
            match model.take(&msel) {
                None => assert_eq!(
                    got.map(|e| e.2),
                    Err(TryRecvError::Empty),
                    "seed {seed} step {step} {sel:?}"
                ),
                Some((tag, s, b)) => {
                    let got = got.unwrap_or_else(|e| {
                        panic!("seed {seed} step {step} {sel:?}: {e:?}, model has {b}")
                    });
                    assert_eq!(
                        got,
                        (tag, addrs[s].clone(), b),
                        "seed {seed} step {step} {sel:?}"
                    );
                }
            }
        }
        assert_eq!(h.len(), model.queue.len(), "seed {seed} step {step}");
    }
}
