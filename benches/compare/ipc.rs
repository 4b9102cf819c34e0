//! Cross-process scenarios: the two-process runner ([`with_child`]), the scenarios, and
//! conduit's shared-memory contenders.

use std::io::{self, PipeReader, PipeWriter, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use std::{fs, panic};

use conduit::shm;

use crate::config::Pinning;
use crate::measure::Contender;
use crate::transport::{
    MAX_MSG, PosixMq, SpinLine, SpinRing, SpscRing, StampRing, Stream, SysV, Transport,
};

// ---------------------------------------------------------------------------------------
// Cross-process scenarios
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ipc {
    /// 8-byte message there and back; time per round trip.
    PingPong,
    /// A stream of 64-byte messages, acknowledged once at the end; time per message.
    OneWay,
}

impl Ipc {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ipc::PingPong => "ipc ping-pong 8-byte (per round trip)",
            Ipc::OneWay => "ipc one-way 64-byte",
        }
    }
    pub(crate) fn msg_size(self) -> usize {
        match self {
            Ipc::PingPong => 8,
            Ipc::OneWay => 64,
        }
    }
    /// Messages per run in full mode.
    pub(crate) fn msgs(self) -> u64 {
        match self {
            Ipc::PingPong => 100_000,
            Ipc::OneWay => 500_000,
        }
    }
}

/// Forks a child that says hello over its end and then runs `child`; the parent waits for
/// the hello, runs `parent` and reaps the child. Only called while this process has a
/// single thread, so the child may do anything the parent could. A watchdog alarm ends
/// both processes if a transport ever wedges, rather than hanging the whole run.
pub(crate) fn with_child<T: Transport, R>(
    (mut parent_end, mut child_end): (T, T),
    child: impl FnOnce(&mut T),
    parent: impl FnOnce(&mut T) -> R,
) -> R {
    const WATCHDOG_SECS: libc::c_uint = 120;
    let threads = fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    assert_eq!(
        threads, 1,
        "the ipc scenarios must fork before any thread starts"
    );
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let pinning = Pinning::new();
    // SAFETY: `alarm` is a plain system call; the process is single-threaded at the fork
    // (see `main`). The alarm is not inherited: the child sets its own.
    unsafe { libc::alarm(WATCHDOG_SECS) };
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => {
            // SAFETY: as above.
            unsafe { libc::alarm(WATCHDOG_SECS) };
            if let Some(p) = &pinning {
                p.pin(p.child);
            }
            let ok = panic::catch_unwind(panic::AssertUnwindSafe(|| {
                child_end.send(&[0; 8]);
                child(&mut child_end);
            }))
            .is_ok();
            // SAFETY: leaves at once, without running the parent's destructors or
            // flushing its buffers a second time.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => {
            drop(child_end);
            // Unpinned again when the run ends, even by a panic.
            let _pinned = pinning.as_ref().map(Pinning::pin_parent);
            parent_end.recv(&mut [0; 8]);
            let result = parent(&mut parent_end);
            let mut status = 0;
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
            // SAFETY: cancels the watchdog.
            unsafe { libc::alarm(0) };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "{}: child failed",
                T::NAME
            );
            result
        }
    }
}

pub(crate) fn run_ipc<T: Transport>(kind: Ipc, n: u64) -> Option<f64> {
    if !T::supports(kind) {
        return None;
    }
    let ends = T::pair(kind.msg_size())
        .map_err(|e| eprintln!("  {} skipped: {e}", T::NAME))
        .ok()?;
    let elapsed = match kind {
        Ipc::PingPong => return Some(round_trips(ends, n, 8, true)),
        Ipc::OneWay => with_child(
            ends,
            |c| {
                let mut buf = [0u8; 64];
                for i in 0..n {
                    c.recv(&mut buf);
                    assert_eq!(buf[..8], i.to_le_bytes(), "{}: out of order", T::NAME);
                }
                c.send(&[1; 8]);
            },
            |p| {
                let start = Instant::now();
                let mut buf = [7u8; 64];
                for i in 0..n {
                    buf[..8].copy_from_slice(&i.to_le_bytes());
                    p.send(&buf);
                }
                p.recv(&mut [0; 8]);
                start.elapsed()
            },
        ),
    };
    Some(elapsed.as_nanos() as f64 / n as f64)
}

/// `n` round trips of `size`-byte messages (8 to [`MAX_MSG`]) between the two ends: the
/// parent sends message `i` (its first 8 bytes), the child sends back what it received,
/// and the parent checks, where `echoed`, that the answer is message `i` again (a
/// transport that carries no bytes, such as a signal, passes `false`). Returns ns per
/// round trip. The ping-pong scenarios of every kind (channels, requests, signals) run
/// here.
pub(crate) fn round_trips<T: Transport>(ends: (T, T), n: u64, size: usize, echoed: bool) -> f64 {
    assert!((8..=MAX_MSG).contains(&size));
    let elapsed = with_child(
        ends,
        |c| {
            let mut buf = [0u8; MAX_MSG];
            for _ in 0..n {
                c.recv(&mut buf[..size]);
                c.send(&buf[..size]);
            }
        },
        |p| {
            let start = Instant::now();
            let (mut msg, mut buf) = ([0u8; MAX_MSG], [0u8; MAX_MSG]);
            for i in 0..n {
                msg[..8].copy_from_slice(&i.to_le_bytes());
                p.send(&msg[..size]);
                p.recv(&mut buf[..size]);
                assert!(
                    !echoed || buf[..size] == msg[..size],
                    "{}: wrong reply",
                    T::NAME
                );
            }
            start.elapsed()
        },
    );
    elapsed.as_nanos() as f64 / n as f64
}

pub(crate) fn ipc<T: Transport + 'static>(kind: Ipc) -> Contender {
    Contender {
        name: T::NAME,
        run: Box::new(move |n| run_ipc::<T>(kind, n)),
    }
}

/// conduit's cross-process channel: one `conduit::shm` channel of `[u8; N]` per
/// direction, `SLOTS` slots (1024 unless named otherwise), in the single-producer mode
/// (`shm::Options::spsc`) if `SPSC` ("conduit spsc"), many-to-many otherwise. The parent creates both (before
/// the fork) and unlinks them when it drops its end; the child opens its handles by name
/// on first use, after the fork, so that each process attaches as a peer of its own.
pub(crate) struct ConduitShm<const N: usize, const SLOTS: usize = 1024, const SPSC: bool = false>
where
    [u8; N]: shm::ShmSafe,
{
    /// The channel names: parent to child, child to parent.
    names: [String; 2],
    is_parent: bool,
    ends: Option<ShmEnds<N>>,
}

/// One process's handles: to the peer, from the peer.
pub(crate) type ShmEnds<const N: usize> = (shm::Sender<[u8; N]>, shm::Receiver<[u8; N]>);

impl<const N: usize, const SLOTS: usize, const SPSC: bool> ConduitShm<N, SLOTS, SPSC>
where
    [u8; N]: shm::ShmSafe,
{
    pub(crate) fn ends(&mut self) -> &ShmEnds<N> {
        let (is_parent, names) = (self.is_parent, &self.names);
        self.ends.get_or_insert_with(|| {
            let (to_peer, from_peer) = if is_parent {
                (&names[0], &names[1])
            } else {
                (&names[1], &names[0])
            };
            let open = shm::Options::new();
            let ends = (
                shm::Sender::with(to_peer, &open),
                shm::Receiver::with(from_peer, &open),
            );
            match ends {
                (Ok(tx), Ok(rx)) => (tx, rx),
                (Err(e), _) | (_, Err(e)) => panic!("conduit shm: {e}"),
            }
        })
    }
}

impl<const N: usize, const SLOTS: usize, const SPSC: bool> Transport for ConduitShm<N, SLOTS, SPSC>
where
    [u8; N]: shm::ShmSafe,
{
    const NAME: &'static str = if SLOTS == 1024 && SPSC {
        "conduit spsc"
    } else if SLOTS == 1024 {
        "conduit shm"
    } else if SLOTS == SMALL_RING {
        // A reference: the same channel, small enough that its slots share one line.
        "ref: conduit shm, 4 slots"
    } else {
        panic!("name this capacity")
    };
    fn supports(kind: Ipc) -> bool {
        kind.msg_size() == N
    }
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let stem = format!(
            "conduit-bench.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let names = [format!("{stem}.down"), format!("{stem}.up")];
        let create = shm::Options::new()
            .capacity(SLOTS)
            .create_new(true)
            .unlink_on_drop(true)
            .spsc(SPSC);
        let tx = shm::Sender::with(&names[0], &create)?;
        let rx = shm::Receiver::with(&names[1], &create)?;
        let child = ConduitShm {
            names: names.clone(),
            is_parent: false,
            ends: None,
        };
        let parent = ConduitShm {
            names,
            is_parent: true,
            ends: Some((tx, rx)),
        };
        Ok((parent, child))
    }
    fn send(&mut self, buf: &[u8]) {
        let mut msg = [0u8; N];
        msg[..buf.len()].copy_from_slice(buf);
        assert!(self.ends().0.send(msg).is_ok(), "conduit shm: send");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let msg = self.ends().1.recv().expect("conduit shm: recv");
        buf.copy_from_slice(&msg[..buf.len()]);
    }
}

/// conduit's own contenders in the `ipc` scenarios (each takes the scenario whose message
/// size it carries), in both modes: many-to-many ("conduit shm") and single-producer
/// ("conduit spsc"). With them, the ipc tables gain a "conduit ÷ pipe, ÷ spin limit" row,
/// for the faster of the two.
pub(crate) fn conduit_ipc_contenders(kind: Ipc) -> Vec<Contender> {
    vec![
        ipc::<ConduitShm<8>>(kind),
        ipc::<ConduitShm<64>>(kind),
        ipc::<ConduitShm<8, 1024, true>>(kind),
        ipc::<ConduitShm<64, 1024, true>>(kind),
    ]
}

/// The capacity of `ref: conduit shm, 4 slots`: with 8-byte messages (16-byte slots) the
/// whole ring is one cache line, as on the spin line, where the 1024-slot ring walks
/// through 256 lines per direction (issue #22, item 3: what that walk costs).
pub(crate) const SMALL_RING: usize = 4;

pub(crate) fn ipc_contenders(kind: Ipc) -> Vec<Contender> {
    let mut v = conduit_ipc_contenders(kind);
    v.extend([
        ipc::<Stream<PipeReader, PipeWriter>>(kind),
        ipc::<Stream<UnixStream, UnixStream>>(kind),
        ipc::<SysV>(kind),
        ipc::<PosixMq>(kind),
        ipc::<SpinLine>(kind),
        ipc::<SpinRing>(kind),
        ipc::<StampRing>(kind),
        ipc::<SpscRing>(kind),
        ipc::<ConduitShm<8, SMALL_RING>>(kind),
    ]);
    v
}
