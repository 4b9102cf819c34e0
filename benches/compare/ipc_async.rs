//! Cross-process scenarios between async tasks (issue #22, item 2): an 8-byte ping-pong
//! and a stream of 64-byte messages, each side a task on a tokio current-thread runtime
//! of its own process, over `conduit::shm` (`send_async` / `recv_async`), tokio's
//! `UnixStream` and a tokio pipe.
//!
//! Both processes of a run are forked from a child of the bench ([`in_child`]): an async
//! `conduit::shm` wait starts the process's helper thread, which runs for the life of the
//! process, and the bench itself must stay single-threaded for the scenarios that fork
//! after these. The two processes are pinned to two CPUs as in the other `ipc` scenarios
//! (see `ipc::with_child`); each runtime, and conduit's helper thread, shares its
//! process's CPU.

use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::panic;
use std::time::Instant;

use conduit::shm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::ipc::{ConduitShm, Ipc, with_child};
use crate::measure::{Area, Contender, Listed, Show};
use crate::transport::{MAX_MSG, Stream, Transport};

const TOKIO_UNIX: &str = "tokio UnixStream";
const TOKIO_PIPE: &str = "tokio pipe";

/// The async cross-process scenarios, with issue #22's target: conduit's round trip at
/// most a quarter of tokio `UnixStream`'s.
pub(crate) const SCENARIOS: &[Listed] = &[
    Listed {
        name: "ipc async ping-pong 8-byte (per round trip)",
        show: Show {
            area: Area::Ipc,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(TOKIO_UNIX, 0.25)],
        },
        msgs: 100_000,
        forks: true,
        contenders: || contenders(Ipc::PingPong),
    },
    Listed {
        name: "ipc async one-way 64-byte",
        show: Show {
            area: Area::Ipc,
            unit: "ns/msg",
            ipc_columns: false,
            targets: &[],
        },
        msgs: 500_000,
        forks: true,
        contenders: || contenders(Ipc::OneWay),
    },
];

fn contenders(kind: Ipc) -> Vec<Contender> {
    vec![
        contender::<ConduitShm<8>>(kind),
        contender::<ConduitShm<64>>(kind),
        contender::<ConduitShm<8, 1024, true>>(kind),
        contender::<ConduitShm<64, 1024, true>>(kind),
        contender::<Stream<UnixStream, UnixStream>>(kind),
        contender::<Stream<PipeReader, PipeWriter>>(kind),
    ]
}

fn contender<T: AsyncEnd + 'static>(kind: Ipc) -> Contender {
    Contender {
        name: T::ASYNC_NAME,
        run: Box::new(move |n| run::<T>(kind, n)),
    }
}

/// A transport's end that can be driven from a task: its blocking form says hello (see
/// `ipc::with_child`), then, inside the process's runtime, [`AsyncEnd::to_async`] makes
/// its async form.
pub(crate) trait AsyncEnd: Transport {
    const ASYNC_NAME: &'static str;
    type Io: AsyncIo;
    /// The async form of this end; called inside a runtime.
    fn to_async(&mut self) -> Self::Io;
}

/// One end, async.
pub(crate) trait AsyncIo {
    /// Sends exactly `buf`.
    async fn send(&mut self, buf: &[u8]);
    /// Receives a message of exactly `buf.len()` bytes.
    async fn recv(&mut self, buf: &mut [u8]);
}

impl<const N: usize, const SLOTS: usize, const SPSC: bool> AsyncEnd for ConduitShm<N, SLOTS, SPSC>
where
    [u8; N]: shm::ShmSafe,
{
    const ASYNC_NAME: &'static str = <Self as Transport>::NAME;
    type Io = (shm::Sender<[u8; N]>, shm::Receiver<[u8; N]>);
    fn to_async(&mut self) -> Self::Io {
        self.ends().clone()
    }
}

impl<const N: usize> AsyncIo for (shm::Sender<[u8; N]>, shm::Receiver<[u8; N]>)
where
    [u8; N]: shm::ShmSafe,
{
    async fn send(&mut self, buf: &[u8]) {
        let mut msg = [0u8; N];
        msg[..buf.len()].copy_from_slice(buf);
        assert!(self.0.send_async(msg).await.is_ok(), "conduit shm: send");
    }
    async fn recv(&mut self, buf: &mut [u8]) {
        let msg = self.1.recv_async().await.expect("conduit shm: recv");
        buf.copy_from_slice(&msg[..buf.len()]);
    }
}

impl AsyncEnd for Stream<UnixStream, UnixStream> {
    const ASYNC_NAME: &'static str = TOKIO_UNIX;
    type Io = tokio::net::UnixStream;
    fn to_async(&mut self) -> Self::Io {
        let s = self.r.try_clone().expect("socket clone");
        s.set_nonblocking(true).expect("socket nonblocking");
        tokio::net::UnixStream::from_std(s).expect("tokio UnixStream")
    }
}

impl AsyncIo for tokio::net::UnixStream {
    async fn send(&mut self, buf: &[u8]) {
        self.write_all(buf).await.expect("socket write");
    }
    async fn recv(&mut self, buf: &mut [u8]) {
        self.read_exact(buf).await.expect("socket read");
    }
}

impl AsyncEnd for Stream<PipeReader, PipeWriter> {
    const ASYNC_NAME: &'static str = TOKIO_PIPE;
    type Io = (pipe::Sender, pipe::Receiver);
    fn to_async(&mut self) -> Self::Io {
        let w = OwnedFd::from(self.w.try_clone().expect("pipe clone"));
        let r = OwnedFd::from(self.r.try_clone().expect("pipe clone"));
        (
            pipe::Sender::from_owned_fd(w).expect("tokio pipe sender"),
            pipe::Receiver::from_owned_fd(r).expect("tokio pipe receiver"),
        )
    }
}

impl AsyncIo for (pipe::Sender, pipe::Receiver) {
    async fn send(&mut self, buf: &[u8]) {
        self.0.write_all(buf).await.expect("pipe write");
    }
    async fn recv(&mut self, buf: &mut [u8]) {
        self.1.read_exact(buf).await.expect("pipe read");
    }
}

/// This process's runtime: one thread, the task's.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `n` round trips (ns per round trip) or `n` streamed messages (ns per message) between
/// two tasks in two processes, as `ipc::run_ipc` and `ipc::round_trips` do between two
/// threads.
fn run<T: AsyncEnd>(kind: Ipc, n: u64) -> Option<f64> {
    if !T::supports(kind) {
        return None;
    }
    let size = kind.msg_size();
    let ends = T::pair(size)
        .map_err(|e| eprintln!("  {} skipped: {e}", T::ASYNC_NAME))
        .ok()?;
    let ns = in_child(move || {
        let elapsed = match kind {
            Ipc::PingPong => with_child(
                ends,
                |c| {
                    runtime().block_on(async {
                        let mut io = c.to_async();
                        let mut buf = [0u8; MAX_MSG];
                        for _ in 0..n {
                            io.recv(&mut buf[..size]).await;
                            io.send(&buf[..size]).await;
                        }
                    });
                },
                |p| {
                    runtime().block_on(async {
                        let mut io = p.to_async();
                        let start = Instant::now();
                        let (mut msg, mut buf) = ([0u8; MAX_MSG], [0u8; MAX_MSG]);
                        for i in 0..n {
                            msg[..8].copy_from_slice(&i.to_le_bytes());
                            io.send(&msg[..size]).await;
                            io.recv(&mut buf[..size]).await;
                            assert!(buf[..size] == msg[..size], "{}: wrong reply", T::ASYNC_NAME);
                        }
                        start.elapsed()
                    })
                },
            ),
            Ipc::OneWay => with_child(
                ends,
                |c| {
                    runtime().block_on(async {
                        let mut io = c.to_async();
                        let mut buf = [0u8; 64];
                        for i in 0..n {
                            io.recv(&mut buf).await;
                            assert_eq!(
                                buf[..8],
                                i.to_le_bytes(),
                                "{}: out of order",
                                T::ASYNC_NAME
                            );
                        }
                        io.send(&[1; 8]).await;
                    });
                },
                |p| {
                    runtime().block_on(async {
                        let mut io = p.to_async();
                        let start = Instant::now();
                        let mut buf = [7u8; 64];
                        for i in 0..n {
                            buf[..8].copy_from_slice(&i.to_le_bytes());
                            io.send(&buf).await;
                        }
                        io.recv(&mut [0; 8]).await;
                        start.elapsed()
                    })
                },
            ),
        };
        elapsed.as_nanos() as f64 / n as f64
    });
    Some(ns)
}

/// Runs `f` in a forked child and returns what it returns; the child exits after it (see
/// the module docs for why). The bench is single-threaded here (`ipc::with_child`
/// checks it again in the child, before forking the second process).
fn in_child(f: impl FnOnce() -> f64) -> f64 {
    let (mut r, mut w) = io::pipe().expect("pipe");
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process is single-threaded at the fork (see `main`), so the child may
    // do anything the parent could.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => {
            drop(r);
            let ok = panic::catch_unwind(panic::AssertUnwindSafe(|| {
                let ns = f();
                w.write_all(&ns.to_le_bytes()).expect("result pipe");
            }))
            .is_ok();
            // SAFETY: leaves at once, without running the parent's destructors (the shm
            // channels' unlink among them) or flushing its buffers a second time.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => {
            drop(w);
            let mut out = [0u8; 8];
            let got = r.read_exact(&mut out);
            let mut status = 0;
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(pid, &raw mut status, 0) };
            assert!(
                got.is_ok() && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "async ipc run failed"
            );
            f64::from_le_bytes(out)
        }
    }
}
