//! Signal scenarios (`conduit::signal`, issue #20): a raise with nobody waiting against a
//! plain atomic `fetch_or` (and an `eventfd` write), and raise-to-wake latency, measured
//! as a ping-pong in which each side waits for the other's raise: between two threads
//! and between two tasks against `tokio::sync::Notify`, and between two processes
//! against `eventfd`, a pipe and `kill` + `sigwaitinfo`.
//!
//! The cross-process conduit rows (`conduit::shm::signal`) are `conduit shm signal`: a
//! raise with nobody waiting on a shared-memory target, and the ping-pong between two
//! processes over two targets ([`ShmSignalEnd`]).

use std::hint::black_box;
use std::io::{self, PipeReader, PipeWriter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use conduit::shm::signal::{Raiser as ShmRaiser, Target as ShmTarget};
use conduit::signal::{Signal, Target};
use tokio::sync::Notify;

use crate::ipc::round_trips;
use crate::measure::{Area, Contender, Listed, Show};
use crate::tasks::runtime;
use crate::transport::{Stream, Transport, check};

/// The signal scenarios, in the order they run.
pub(crate) const SCENARIOS: &[Listed] = &[
    Listed {
        name: "ipc signal raise-to-wake ping-pong (per round trip)",
        show: Show {
            area: Area::Signal,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(EVENTFD, 1.0)],
        },
        msgs: 100_000,
        forks: true,
        contenders: ipc_contenders,
    },
    Listed {
        name: "signal raise, no waiter",
        show: Show {
            area: Area::Signal,
            unit: "ns/op",
            ipc_columns: false,
            targets: &[(FETCH_OR, 2.0)],
        },
        msgs: 2_000_000,
        forks: false,
        contenders: || {
            vec![
                Contender {
                    name: "conduit signal",
                    run: Box::new(|n| Some(raise_unwaited(n))),
                },
                Contender {
                    name: "conduit shm signal",
                    run: Box::new(raise_unwaited_shm),
                },
                Contender {
                    name: FETCH_OR,
                    run: Box::new(|n| Some(fetch_or(n))),
                },
                Contender {
                    name: "eventfd write",
                    run: Box::new(eventfd_unwaited),
                },
            ]
        },
    },
    Listed {
        name: "signal raise-to-wake ping-pong, threads (per round trip)",
        show: Show {
            area: Area::Signal,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(NOTIFY_THREADS, 1.0)],
        },
        msgs: 100_000,
        forks: false,
        contenders: || {
            vec![
                Contender {
                    name: "conduit signal",
                    run: Box::new(|n| Some(ping_pong_threads(n))),
                },
                Contender {
                    name: NOTIFY_THREADS,
                    run: Box::new(|n| Some(notify_threads(n))),
                },
            ]
        },
    },
    Listed {
        name: "async signal raise-to-wake ping-pong, tasks (per round trip)",
        show: Show {
            area: Area::Signal,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(NOTIFY, 1.0)],
        },
        msgs: 200_000,
        forks: false,
        contenders: || {
            vec![
                Contender {
                    name: "conduit signal",
                    run: Box::new(|n| Some(ping_pong_tasks(n))),
                },
                Contender {
                    name: NOTIFY,
                    run: Box::new(|n| Some(notify_tasks(n))),
                },
            ]
        },
    },
];

const FETCH_OR: &str = "ref: AtomicU64::fetch_or";
const NOTIFY: &str = "tokio Notify";
const NOTIFY_THREADS: &str = "tokio Notify (block_on)";
const EVENTFD: &str = "eventfd";

/// The signal raised: a standard (coalescing) number, SIGUSR1's.
fn usr1() -> Signal {
    Signal::new(10).expect("a signal number")
}

// ---------------------------------------------------------------------------------------
// Raise with nobody waiting
// ---------------------------------------------------------------------------------------

/// `n` raises of one standard signal on a target nobody waits on; then one wait checks
/// that they coalesced into one delivery counting all of them. Returns ns per raise.
fn raise_unwaited(n: u64) -> f64 {
    let target = Target::new();
    let raiser = target.raiser();
    let sig = usr1();
    let start = Instant::now();
    for _ in 0..n {
        assert!(black_box(&raiser).raise(sig).is_ok(), "target gone");
    }
    let elapsed = start.elapsed();
    let info = target.try_wait().expect("a pending signal");
    assert_eq!(info.count(), n, "raises lost");
    elapsed.as_nanos() as f64 / n as f64
}

/// A fresh name for a benchmark's shared-memory signal target.
fn shm_name(what: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "conduit-bench.{}.{}.{what}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// [`raise_unwaited`] on a shared-memory target (`conduit::shm::signal`), owned by this
/// process: what a raiser in another process does (its raises find the number pending
/// from the second on, so each also checks, rate limited, that the owner lives).
fn raise_unwaited_shm(n: u64) -> Option<f64> {
    let name = shm_name("unwaited");
    let opts = conduit::shm::Options::new()
        .create_new(true)
        .unlink_on_drop(true);
    let target = ShmTarget::with(&name, &opts)
        .map_err(|e| eprintln!("  conduit shm signal skipped: {e}"))
        .ok()?;
    let raiser = ShmRaiser::open(&name).expect("open a raiser");
    let sig = usr1();
    let start = Instant::now();
    for _ in 0..n {
        assert!(black_box(&raiser).raise(sig).is_ok(), "target gone");
    }
    let elapsed = start.elapsed();
    let info = target.try_wait().expect("a pending signal");
    assert_eq!(info.count(), n, "raises lost");
    Some(elapsed.as_nanos() as f64 / n as f64)
}

/// The floor: `n` atomic `fetch_or`s of one bit into one word.
fn fetch_or(n: u64) -> f64 {
    let word = AtomicU64::new(0);
    let start = Instant::now();
    for _ in 0..n {
        black_box(black_box(&word).fetch_or(1 << 9, Ordering::AcqRel));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// An eventfd's counter, closed on drop.
struct EventFd(libc::c_int);

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain system call.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    /// Adds 1 to the counter, waking a reader.
    fn add(fd: libc::c_int) {
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one`.
        let n = check("eventfd write", || unsafe {
            libc::write(fd, (&raw const one).cast(), 8)
        });
        assert_eq!(n, 8, "eventfd write");
    }

    /// Waits for a non-zero counter and takes it.
    fn take(fd: libc::c_int) -> u64 {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into `value`.
        let n = check("eventfd read", || unsafe {
            libc::read(fd, (&raw mut value).cast(), 8)
        });
        assert_eq!(n, 8, "eventfd read");
        value
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this handle opened.
        unsafe { libc::close(self.0) };
    }
}

/// `n` eventfd writes with nobody reading (a system call each: what a notification costs
/// when it does not know whether anyone waits).
fn eventfd_unwaited(n: u64) -> Option<f64> {
    let efd = EventFd::new()
        .map_err(|e| eprintln!("  eventfd skipped: {e}"))
        .ok()?;
    let start = Instant::now();
    for _ in 0..n {
        EventFd::add(efd.0);
    }
    let elapsed = start.elapsed();
    assert_eq!(EventFd::take(efd.0), n, "eventfd: writes lost");
    Some(elapsed.as_nanos() as f64 / n as f64)
}

// ---------------------------------------------------------------------------------------
// Raise-to-wake in one process
// ---------------------------------------------------------------------------------------

/// Two threads, each the owner of a target: this one raises on the other's and waits on
/// its own, `n` times; the other waits and raises back. Returns ns per round trip.
fn ping_pong_threads(n: u64) -> f64 {
    let (mine, theirs) = (Target::new(), Target::new());
    let (to_me, to_them) = (mine.raiser(), theirs.raiser());
    let sig = usr1();
    let barrier = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            for _ in 0..n {
                assert_eq!(theirs.wait().signal(), sig);
                assert!(to_me.raise(sig).is_ok(), "target gone");
            }
        });
        barrier.wait();
        let start = Instant::now();
        for _ in 0..n {
            assert!(to_them.raise(sig).is_ok(), "target gone");
            assert_eq!(mine.wait().signal(), sig);
        }
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

/// The same with two `tokio::sync::Notify`, each thread waiting with
/// `futures::executor::block_on(notified())` (a `notify_one` with nobody waiting leaves a
/// permit, so no wake-up is lost).
fn notify_threads(n: u64) -> f64 {
    let (mine, theirs) = (Notify::new(), Notify::new());
    let (mine, theirs) = (&mine, &theirs);
    let barrier = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            for _ in 0..n {
                futures::executor::block_on(theirs.notified());
                mine.notify_one();
            }
        });
        barrier.wait();
        let start = Instant::now();
        for _ in 0..n {
            theirs.notify_one();
            futures::executor::block_on(mine.notified());
        }
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

/// [`ping_pong_threads`] with two tasks on the shared 2-worker tokio runtime
/// (`wait_async`); the first task reads the clock.
fn ping_pong_tasks(n: u64) -> f64 {
    let (mine, theirs) = (Target::new(), Target::new());
    let (to_me, to_them) = (mine.raiser(), theirs.raiser());
    let sig = usr1();
    runtime().block_on(async move {
        let other = tokio::spawn(async move {
            for _ in 0..n {
                assert_eq!(theirs.wait_async().await.signal(), sig);
                assert!(to_me.raise(sig).is_ok(), "target gone");
            }
        });
        let this = tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..n {
                assert!(to_them.raise(sig).is_ok(), "target gone");
                assert_eq!(mine.wait_async().await.signal(), sig);
            }
            start.elapsed()
        });
        let elapsed = this.await.expect("task");
        other.await.expect("task");
        elapsed.as_nanos() as f64 / n as f64
    })
}

/// [`notify_threads`] on two tasks.
fn notify_tasks(n: u64) -> f64 {
    let (mine, theirs) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (mine2, theirs2) = (mine.clone(), theirs.clone());
    runtime().block_on(async move {
        let other = tokio::spawn(async move {
            for _ in 0..n {
                theirs2.notified().await;
                mine2.notify_one();
            }
        });
        let this = tokio::spawn(async move {
            let start = Instant::now();
            for _ in 0..n {
                theirs.notify_one();
                mine.notified().await;
            }
            start.elapsed()
        });
        let elapsed = this.await.expect("task");
        other.await.expect("task");
        elapsed.as_nanos() as f64 / n as f64
    })
}

// ---------------------------------------------------------------------------------------
// Raise-to-wake between two processes
// ---------------------------------------------------------------------------------------

/// A contender that measures wake-up round trips between two processes through a
/// [`Transport`] whose `send` raises (or writes, or signals) and whose `recv` waits for
/// the other side's: nothing is carried but the wake-up, and the bytes passed are
/// ignored. See [`ipc::round_trips`](crate::ipc::round_trips).
pub(crate) fn wakes<T: Transport + 'static>(name: &'static str) -> Contender {
    Contender {
        name,
        run: Box::new(|n| {
            let ends = T::pair(8)
                .map_err(|e| eprintln!("  {} skipped: {e}", T::NAME))
                .ok()?;
            Some(round_trips(ends, n, 8, false))
        }),
    }
}

/// conduit's own contenders in "ipc signal raise-to-wake ping-pong": the cross-process
/// signal target (`conduit::shm::signal`).
fn conduit_ipc_contenders() -> Vec<Contender> {
    vec![wakes::<ShmSignalEnd>("conduit shm signal")]
}

/// One process's end of a ping-pong over two shared-memory signal targets, one owned by
/// each process: `send` raises on the other's, `recv` waits on its own.
///
/// The parent creates both names in `pair`, before the fork, owning "up" and giving
/// "down" up again (a target has one owner, and the child owns "down"). The child opens
/// its handles on first use, after the fork, so that it attaches as a peer of its own
/// and takes "down" over; its first `send` (the hello the parent waits for) comes after
/// that, so the parent's raises find "down" owned. The parent unlinks both names when
/// its end drops.
struct ShmSignalEnd {
    /// Parent to child, child to parent.
    names: [String; 2],
    is_parent: bool,
    ends: Option<(ShmRaiser, ShmTarget)>,
}

impl ShmSignalEnd {
    fn ends(&mut self) -> &(ShmRaiser, ShmTarget) {
        let (is_parent, names) = (self.is_parent, &self.names);
        self.ends.get_or_insert_with(|| {
            assert!(!is_parent, "the parent's ends are made in `pair`");
            let target = ShmTarget::open(&names[0]).expect("conduit shm signal: own down");
            let raiser = ShmRaiser::open(&names[1]).expect("conduit shm signal: raise up");
            (raiser, target)
        })
    }
}

impl Transport for ShmSignalEnd {
    const NAME: &'static str = "conduit shm signal";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let names = [shm_name("down"), shm_name("up")];
        let create = conduit::shm::Options::new().create_new(true);
        drop(ShmTarget::with(&names[0], &create)?);
        let up = ShmTarget::with(&names[1], &create)?;
        let down = ShmRaiser::open(&names[0])?;
        let child = ShmSignalEnd {
            names: names.clone(),
            is_parent: false,
            ends: None,
        };
        let parent = ShmSignalEnd {
            names,
            is_parent: true,
            ends: Some((down, up)),
        };
        Ok((parent, child))
    }
    fn send(&mut self, _: &[u8]) {
        assert!(
            self.ends().0.raise(usr1()).is_ok(),
            "conduit shm signal: raise"
        );
    }
    fn recv(&mut self, _: &mut [u8]) {
        assert_eq!(self.ends().1.wait().signal(), usr1());
    }
}

impl Drop for ShmSignalEnd {
    fn drop(&mut self) {
        if self.is_parent {
            for name in &self.names {
                let _ = conduit::shm::unlink(name);
            }
        }
    }
}

fn ipc_contenders() -> Vec<Contender> {
    let mut v = conduit_ipc_contenders();
    v.extend([
        wakes::<EventFdPair>(EVENTFD),
        wakes::<Stream<PipeReader, PipeWriter>>("pipe"),
        wakes::<KillWait>("kill + sigwaitinfo"),
    ]);
    v
}

/// One eventfd per direction, made before the fork: `send` adds 1 to the other side's,
/// `recv` waits for its own. The parent's end closes both.
struct EventFdPair {
    own: libc::c_int,
    peer: libc::c_int,
    _fds: Option<(EventFd, EventFd)>,
}

impl Transport for EventFdPair {
    const NAME: &'static str = EVENTFD;
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let (a, b) = (EventFd::new()?, EventFd::new()?);
        let child = EventFdPair {
            own: b.0,
            peer: a.0,
            _fds: None,
        };
        let parent = EventFdPair {
            own: a.0,
            peer: b.0,
            _fds: Some((a, b)),
        };
        Ok((parent, child))
    }
    fn send(&mut self, _: &[u8]) {
        EventFd::add(self.peer);
    }
    fn recv(&mut self, _: &mut [u8]) {
        assert_eq!(EventFd::take(self.own), 1, "eventfd: lost a wake-up");
    }
}

/// POSIX signals: `send` is `kill(peer, SIGUSR1)`, `recv` is `sigwaitinfo` on SIGUSR1,
/// which both processes block (the parent from `pair` until its end drops; the child
/// inherits the mask at the fork). The parent learns the child's pid from the first
/// signal it receives (the child's hello).
struct KillWait {
    peer: libc::pid_t,
    /// The parent's: its signal mask before `pair`, restored on drop.
    restore: Option<libc::sigset_t>,
}

fn usr1_set() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initializes the zeroed set; SIGUSR1 is a valid signal.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGUSR1);
        set
    }
}

impl Transport for KillWait {
    const NAME: &'static str = "kill + sigwaitinfo";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let set = usr1_set();
        // SAFETY: a zeroed `sigset_t` is a valid buffer for the old mask.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid; blocking SIGUSR1 in this (single) thread.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, &raw mut old) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let parent = KillWait {
            peer: 0,
            restore: Some(old),
        };
        // SAFETY: plain system call.
        let child = KillWait {
            peer: unsafe { libc::getpid() },
            restore: None,
        };
        Ok((parent, child))
    }
    fn send(&mut self, _: &[u8]) {
        assert!(self.peer > 0, "kill: the peer is not known yet");
        // SAFETY: plain system call, to the other process of the run.
        check("kill", || unsafe { libc::kill(self.peer, libc::SIGUSR1) }
            as isize);
    }
    fn recv(&mut self, _: &mut [u8]) {
        let set = usr1_set();
        // SAFETY: a zeroed `siginfo_t` is a valid buffer for the kernel to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `info` are valid for the call.
        check("sigwaitinfo", || unsafe {
            libc::sigwaitinfo(&raw const set, &raw mut info) as isize
        });
        if self.peer == 0 {
            // SAFETY: a SIGUSR1 sent by `kill` carries the sender's pid.
            self.peer = unsafe { info.si_pid() };
        }
    }
}

impl Drop for KillWait {
    fn drop(&mut self) {
        let Some(old) = self.restore else { return };
        let set = usr1_set();
        // Takes a SIGUSR1 still pending (a run cut short), which unblocking would
        // deliver with its default action: ending the process.
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timeout; a null `siginfo_t` pointer is allowed.
        while unsafe { libc::sigtimedwait(&raw const set, std::ptr::null_mut(), &raw const zero) }
            > 0
        {}
        // SAFETY: restores the mask saved in `pair`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut()) };
    }
}
