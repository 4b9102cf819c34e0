//! Mailbox scenarios (`conduit::mailbox`, issue #19): send+recv against conduit's own
//! bounded channel, selective receive with a backlog of other tags against the same
//! without one and against SysV `msgrcv` by type, a ping-pong by tag between two
//! threads on one queue (context, no target), request/reply against a tokio `mpsc` +
//! `oneshot` pair (threads and tasks), and request/reply across processes against SysV
//! and a unix socket, with conduit's shared-memory ping-pong for reference.
//!
//! The cross-process conduit row (`conduit::shm::Mailbox`) is added in
//! [`conduit_ipc_contenders`].

use std::hint::black_box;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use conduit::mailbox::{Mailbox, Options, PostOffice, Select};
use conduit::shm;

use crate::inproc::{
    Chan, Conduit, Flavor, Msg, Msg256, Scenario, contender, run_threads, scenario,
};
use crate::ipc::{ConduitShm, round_trips};
use crate::measure::{Area, Contender, Listed, Show};
use crate::tasks::runtime;
use crate::transport::{MAX_MSG, Stream, SysVQueue, Transport, msg_recv, msg_send};

/// The mailbox scenarios, in the order they run.
pub(crate) const SCENARIOS: &[Listed] = &[
    Listed {
        name: "ipc mailbox request/reply 16-byte (per round trip)",
        show: Show {
            area: Area::Mailbox,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(SHM_PING_PONG, 3.0)],
        },
        msgs: 100_000,
        forks: true,
        contenders: ipc_request_contenders,
    },
    Listed {
        name: SEND_RECV.name,
        show: Show {
            area: Area::Mailbox,
            unit: "ns/msg",
            ipc_columns: false,
            targets: &[(CHANNEL, 1.3)],
        },
        msgs: SEND_RECV.msgs,
        forks: false,
        contenders: || send_recv_contenders(&SEND_RECV),
    },
    Listed {
        name: SEND_RECV_MPMC.name,
        show: Show {
            area: Area::Mailbox,
            unit: "ns/msg",
            ipc_columns: false,
            targets: &[],
        },
        msgs: SEND_RECV_MPMC.msgs,
        forks: false,
        contenders: || send_recv_contenders(&SEND_RECV_MPMC),
    },
    Listed {
        name: "mailbox selective receive, 10000 other tags queued",
        show: Show {
            area: Area::Mailbox,
            unit: "ns/msg",
            ipc_columns: false,
            targets: &[(NONE_QUEUED, 2.0)],
        },
        msgs: 100_000,
        forks: false,
        contenders: selective_contenders,
    },
    Listed {
        name: "mailbox ping-pong by tag, threads (per round trip)",
        show: Show {
            area: Area::Mailbox,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[],
        },
        msgs: 50_000,
        forks: false,
        contenders: tag_ping_pong_contenders,
    },
    Listed {
        name: "mailbox request/reply, threads (per round trip)",
        show: Show {
            area: Area::Mailbox,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(TOKIO_RPC, 1.0)],
        },
        msgs: 100_000,
        forks: false,
        contenders: || {
            vec![
                Contender {
                    name: "conduit mailbox",
                    run: Box::new(|n| Some(request_threads(n))),
                },
                Contender {
                    name: TOKIO_RPC,
                    run: Box::new(|n| Some(tokio_request_threads(n))),
                },
            ]
        },
    },
    Listed {
        name: "async mailbox request/reply, tasks (per round trip)",
        show: Show {
            area: Area::Mailbox,
            unit: "ns/rt",
            ipc_columns: false,
            targets: &[(TOKIO_RPC, 1.0)],
        },
        msgs: 200_000,
        forks: false,
        contenders: || {
            vec![
                Contender {
                    name: "conduit mailbox",
                    run: Box::new(|n| Some(request_tasks(n))),
                },
                Contender {
                    name: TOKIO_RPC,
                    run: Box::new(|n| Some(tokio_request_tasks(n))),
                },
            ]
        },
    },
];

const CHANNEL: &str = "ref: conduit bounded(1024)";
/// The channel carrying what the mailbox carries (see [`Addressed`]).
const CHANNEL_ENVELOPE: &str = "ref: conduit bounded(1024), body + tag + sender";
const NONE_QUEUED: &str = "ref: conduit mailbox, none queued";
const TOKIO_RPC: &str = "tokio mpsc + oneshot";
const SHM_PING_PONG: &str = "ref: conduit shm ping-pong";

// ---------------------------------------------------------------------------------------
// send+recv: the channel scenarios' threads driver, with the mailbox as the channel
// ---------------------------------------------------------------------------------------

static SEND_RECV: Scenario = Scenario {
    msgs: 1_000_000,
    ..scenario("mailbox send+recv SPSC", Flavor::Bounded(1024), 1, 1)
};

static SEND_RECV_MPMC: Scenario = Scenario {
    msgs: 1_000_000,
    ..scenario("mailbox send+recv MPMC 4x4", Flavor::Bounded(1024), 4, 4)
};

fn send_recv_contenders(s: &'static Scenario) -> Vec<Contender> {
    vec![
        contender(
            MailboxChan::NAME,
            s,
            run_threads::<MailboxChan, u64>,
            run_threads::<MailboxChan, Msg256>,
        ),
        contender(
            CHANNEL,
            s,
            run_threads::<Conduit, u64>,
            run_threads::<Conduit, Msg256>,
        ),
        Contender {
            name: CHANNEL_ENVELOPE,
            run: Box::new(|n| run_threads::<Conduit, Addressed>(s, n)),
        },
    ]
}

/// What a mailbox moves for a `u64` body, as a channel message: the body, its tag and
/// its sender's address (the context row `CHANNEL_ENVELOPE`; the target is against the
/// `u64` channel).
struct Addressed {
    body: u64,
    tag: u64,
    from: u64,
}

impl Msg for Addressed {
    fn new(i: u64) -> Self {
        Addressed {
            body: i,
            tag: 1,
            from: 2,
        }
    }
    fn id(&self) -> u64 {
        self.body + self.tag + self.from - 3
    }
}

/// A mailbox used as a channel: the senders' handles close the mailbox when the last of
/// them goes, so that the receivers, having drained it, see it disconnect as a channel's
/// would.
struct MailboxChan;

/// The sending side: a handle, and the closing of the mailbox when the last clone drops.
struct MailboxTx<T> {
    mailbox: Mailbox<T>,
    closer: Arc<Closer>,
}

impl<T> Clone for MailboxTx<T> {
    fn clone(&self) -> Self {
        MailboxTx {
            mailbox: self.mailbox.clone(),
            closer: self.closer.clone(),
        }
    }
}

/// Closes the mailbox of this name in this post office when dropped.
struct Closer(PostOffice, &'static str);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close(self.1);
    }
}

impl Chan for MailboxChan {
    const NAME: &'static str = "conduit mailbox";
    type Tx<T: Msg> = MailboxTx<T>;
    type Rx<T: Msg> = Mailbox<T>;
    fn new<T: Msg>(flavor: Flavor) -> Option<(Self::Tx<T>, Self::Rx<T>)> {
        let options = match flavor {
            Flavor::Bounded(0) => return None,
            Flavor::Bounded(cap) => Options::new().capacity(cap),
            Flavor::Unbounded => Options::new().unbounded(),
        };
        let po = PostOffice::new();
        let rx = po.open_with::<T>("bench", &options).expect("mailbox");
        let tx = MailboxTx {
            mailbox: po.open::<T>("bench").expect("mailbox"),
            closer: Arc::new(Closer(po, "bench")),
        };
        Some((tx, rx))
    }
    fn share_rx<T: Msg>(rx: &Self::Rx<T>) -> Option<Self::Rx<T>> {
        Some(rx.clone())
    }
    fn send<T: Msg>(tx: &Self::Tx<T>, msg: T) {
        assert!(tx.mailbox.send(msg).is_ok(), "mailbox closed");
    }
    fn recv<T: Msg>(rx: &mut Self::Rx<T>) -> Option<T> {
        rx.recv().ok().map(|env| env.into_body())
    }
}

// ---------------------------------------------------------------------------------------
// Selective receive behind a backlog of other tags
// ---------------------------------------------------------------------------------------

/// Messages of another tag (or SysV type) queued ahead of the one received.
const BACKLOG: u64 = 10_000;

fn selective_contenders() -> Vec<Contender> {
    vec![
        Contender {
            name: "conduit mailbox",
            run: Box::new(|n| Some(selective(n, BACKLOG))),
        },
        Contender {
            name: NONE_QUEUED,
            run: Box::new(|n| Some(selective(n, 0))),
        },
        Contender {
            name: "SysV msgrcv by mtype",
            run: Box::new(sysv_selective),
        },
    ]
}

/// One thread: `backlog` messages tagged 1 are queued, then each operation sends one
/// message tagged 2 and receives it with `Select::Tag(2)`. Returns ns per send+receive.
fn selective(n: u64, backlog: u64) -> f64 {
    let mb = PostOffice::new()
        .open_with::<u64>("select", &Options::new().unbounded())
        .expect("mailbox");
    for i in 0..backlog {
        mb.send_tagged(1, i).expect("send");
    }
    let start = Instant::now();
    for i in 0..n {
        mb.send_tagged(2, i).expect("send");
        let env = mb.recv_select(Select::Tag(2)).expect("recv");
        assert_eq!(*env.body(), i, "mailbox: wrong message");
    }
    let elapsed = start.elapsed();
    assert_eq!(mb.len() as u64, backlog, "mailbox: backlog disturbed");
    elapsed.as_nanos() as f64 / n as f64
}

/// The same as [`selective`] on a SysV queue: [`BACKLOG`] messages of type 1 queued,
/// then `msgsnd` of type 2 and `msgrcv` of type 2 (which walks the queue from its oldest
/// message). The backlog's messages are 8 bytes where the queue's byte limit can be
/// raised to hold them, 1 byte otherwise (the kernel's walk costs the same per message
/// whatever its size); the first run says which.
fn sysv_selective(n: u64) -> Option<f64> {
    let q = SysVQueue::new()
        .map_err(|e| eprintln!("  SysV msgrcv skipped: {e}"))
        .ok()?;
    let size = if q.make_room(BACKLOG as usize * 8 + 64) {
        8
    } else {
        1
    };
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "  (SysV: backlog of {BACKLOG} messages of {size} bytes{})",
            if size == 1 {
                ": raising the queue's byte limit (msgmnb) was not allowed"
            } else {
                ""
            }
        )
    });
    for i in 0..BACKLOG {
        if let Err(e) = msg_send(q.0, 1, &i.to_le_bytes()[..size], libc::IPC_NOWAIT) {
            eprintln!("  SysV msgrcv skipped: backlog: {e}");
            return None;
        }
    }
    let mut buf = [0u8; 8];
    let start = Instant::now();
    for i in 0..n {
        msg_send(q.0, 2, &i.to_le_bytes(), libc::IPC_NOWAIT).expect("msgsnd");
        assert_eq!(msg_recv(q.0, 2, &mut buf), 8, "msgrcv: wrong size");
        assert_eq!(u64::from_le_bytes(buf), i, "msgrcv: wrong message");
    }
    Some(start.elapsed().as_nanos() as f64 / n as f64)
}

// ---------------------------------------------------------------------------------------
// Ping-pong by tag: two threads, one queue
// ---------------------------------------------------------------------------------------

fn tag_ping_pong_contenders() -> Vec<Contender> {
    vec![
        Contender {
            name: "conduit mailbox",
            run: Box::new(|n| {
                let po = PostOffice::new();
                let open = || po.open::<u64>("tag-pp").expect("mailbox");
                Some(tag_ping_pong(
                    n,
                    open(),
                    open(),
                    |mb, tag, v| {
                        mb.send_tagged(tag, v).expect("send");
                    },
                    |mb, tag| *mb.recv_select(Select::Tag(tag)).expect("recv").body(),
                ))
            }),
        },
        Contender {
            name: "conduit shm mailbox",
            run: Box::new(|n| {
                let name = format!("conduit-bench.{}.tag-pp", std::process::id());
                let create = shm::Options::new()
                    .capacity(64)
                    .create_new(true)
                    .unlink_on_drop(true);
                let a = shm::Mailbox::<u64>::with(&name, &create)
                    .map_err(|e| eprintln!("  conduit shm mailbox skipped: {e}"))
                    .ok()?;
                let b = shm::Mailbox::<u64>::open(&name).expect("shm mailbox: open");
                Some(tag_ping_pong(
                    n,
                    a,
                    b,
                    |mb, tag, v| {
                        mb.send_tagged(tag, v).expect("send");
                    },
                    |mb, tag| *mb.recv_select(Select::Tag(tag)).expect("recv").body(),
                ))
            }),
        },
        Contender {
            name: "SysV msgrcv by mtype",
            run: Box::new(|n| {
                let q = SysVQueue::new()
                    .map_err(|e| eprintln!("  SysV msgrcv skipped: {e}"))
                    .ok()?;
                let id = q.0;
                Some(tag_ping_pong(
                    n,
                    id,
                    id,
                    |&id, tag, v| {
                        msg_send(id, tag as libc::c_long, &v.to_le_bytes(), 0).expect("msgsnd");
                    },
                    |&id, tag| {
                        let mut buf = [0u8; 8];
                        assert_eq!(msg_recv(id, tag as libc::c_long, &mut buf), 8, "msgrcv");
                        u64::from_le_bytes(buf)
                    },
                ))
            }),
        },
    ]
}

/// Two threads share one queue: the first sends `i` tagged 1 and waits for the message
/// tagged 2, the second takes the one tagged 1 and answers `i + 1` tagged 2. Each waits
/// with its own message still queued (until the other takes it), so neither may take
/// the first message it finds. Returns ns per round trip.
fn tag_ping_pong<Q: Send>(
    n: u64,
    a: Q,
    b: Q,
    send: impl Fn(&Q, u64, u64) + Sync,
    recv: impl Fn(&Q, u64) -> u64 + Sync,
) -> f64 {
    let barrier = Barrier::new(2);
    let (send, recv, barrier) = (&send, &recv, &barrier);
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            for _ in 0..n {
                let v = recv(&b, 1);
                send(&b, 2, v + 1);
            }
        });
        barrier.wait();
        let start = Instant::now();
        for i in 0..n {
            send(&a, 1, i);
            assert_eq!(recv(&a, 2), i + 1, "ping-pong by tag: wrong answer");
        }
        start.elapsed().as_nanos() as f64 / n as f64
    })
}

// ---------------------------------------------------------------------------------------
// Request/reply in one process
// ---------------------------------------------------------------------------------------

/// A server thread answers `n` requests (`body + 1`) made by this thread with
/// `Mailbox::request`; the clock runs over the requests. Returns ns per round trip.
fn request_threads(n: u64) -> f64 {
    let po = PostOffice::new();
    let server = po.open::<u64>("rpc").expect("mailbox");
    let _ = server.try_recv(); // attached from here on: requests find a responder
    let client = po.open::<u64>("rpc").expect("mailbox");
    let barrier = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            while let Ok(mut env) = server.recv() {
                let reply = env.take_reply::<u64>().expect("a request");
                assert!(reply.reply(env.body() + 1).is_ok(), "requester gone");
            }
        });
        barrier.wait();
        let start = Instant::now();
        for i in 0..n {
            assert_eq!(client.request::<u64>(black_box(i)), Ok(i + 1));
        }
        let elapsed = start.elapsed();
        po.close("rpc");
        elapsed.as_nanos() as f64 / n as f64
    })
}

type TokioRequest = (u64, tokio::sync::oneshot::Sender<u64>);

/// The same with a tokio `mpsc` channel carrying a `oneshot` sender for each answer,
/// used from threads (`blocking_send`, `blocking_recv`).
fn tokio_request_threads(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<TokioRequest>(1024);
    let barrier = &Barrier::new(2);
    thread::scope(|s| {
        s.spawn(move || {
            barrier.wait();
            while let Some((body, reply)) = rx.blocking_recv() {
                assert!(reply.send(body + 1).is_ok(), "requester gone");
            }
        });
        barrier.wait();
        let start = Instant::now();
        for i in 0..n {
            let (reply, answer) = tokio::sync::oneshot::channel();
            assert!(
                tx.blocking_send((black_box(i), reply)).is_ok(),
                "server gone"
            );
            assert_eq!(answer.blocking_recv(), Ok(i + 1));
        }
        let elapsed = start.elapsed();
        drop(tx);
        elapsed.as_nanos() as f64 / n as f64
    })
}

/// [`request_threads`] with a server task and a client task on the shared 2-worker tokio
/// runtime (`request_async`, `recv_async`); the client task reads the clock.
fn request_tasks(n: u64) -> f64 {
    let po = PostOffice::new();
    let server = po.open::<u64>("rpc").expect("mailbox");
    let _ = server.try_recv();
    let client = po.open::<u64>("rpc").expect("mailbox");
    runtime().block_on(async move {
        let server = tokio::spawn(async move {
            while let Ok(mut env) = server.recv_async().await {
                let reply = env.take_reply::<u64>().expect("a request");
                assert!(reply.reply(env.body() + 1).is_ok(), "requester gone");
            }
        });
        let client = tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..n {
                assert_eq!(client.request_async::<u64>(black_box(i)).await, Ok(i + 1));
            }
            start.elapsed()
        });
        let elapsed = client.await.expect("client task");
        po.close("rpc");
        server.await.expect("server task");
        elapsed.as_nanos() as f64 / n as f64
    })
}

/// [`tokio_request_threads`] on tasks.
fn tokio_request_tasks(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<TokioRequest>(1024);
    runtime().block_on(async move {
        let server = tokio::spawn(async move {
            while let Some((body, reply)) = rx.recv().await {
                assert!(reply.send(body + 1).is_ok(), "requester gone");
            }
        });
        let client = tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..n {
                let (reply, answer) = tokio::sync::oneshot::channel();
                assert!(tx.send((black_box(i), reply)).await.is_ok(), "server gone");
                assert_eq!(answer.await, Ok(i + 1));
            }
            start.elapsed()
        });
        let elapsed = client.await.expect("client task");
        server.await.expect("server task");
        elapsed.as_nanos() as f64 / n as f64
    })
}

// ---------------------------------------------------------------------------------------
// Request/reply across processes
// ---------------------------------------------------------------------------------------

/// Bytes per request and per reply: a correlation number and a body.
const RPC_SIZE: usize = 16;

/// A contender that runs `n` requests, `RPC_SIZE` bytes each way, through a
/// [`Transport`]: the parent process is the client (`send` the request, `recv` its reply),
/// the forked child the server (`recv` a request, `send` the answer). See
/// [`ipc::round_trips`](crate::ipc::round_trips): the child's first `send` is the 8-byte
/// hello of [`with_child`](crate::ipc::with_child), before any request.
pub(crate) fn requests<T: Transport + 'static>(name: &'static str) -> Contender {
    Contender {
        name,
        run: Box::new(|n| {
            let ends = T::pair(RPC_SIZE)
                .map_err(|e| eprintln!("  {} skipped: {e}", T::NAME))
                .ok()?;
            Some(round_trips(ends, n, RPC_SIZE, true))
        }),
    }
}

/// conduit's own contenders in "ipc mailbox request/reply": the cross-process mailbox
/// (`conduit::shm::Mailbox`), through [`ShmMailboxRpc`].
fn conduit_ipc_contenders() -> Vec<Contender> {
    vec![requests::<ShmMailboxRpc>("conduit shm mailbox")]
}

/// One end of request/reply through a shared `conduit::shm::Mailbox<[u8; RPC_SIZE]>`:
/// the parent's `send` keeps the request and its `recv` makes it with `request` (tag 1)
/// and copies the reply out; the child's `recv` takes a request and keeps its reply
/// capability, and its `send` answers through it. The child's first `send`, the hello,
/// is a plain message (tag 0), which the parent's first `recv` takes. The parent creates
/// the mailbox before the fork (and unlinks it when its end drops); the child opens it
/// by name on first use, and receives once at once so that it is attached as a receiver
/// before the hello (requests find a responder).
pub(crate) struct ShmMailboxRpc {
    name: String,
    parent: bool,
    mb: Option<shm::Mailbox<[u8; RPC_SIZE]>>,
    /// The parent's request, between its `send` and its `recv`.
    request: Option<[u8; RPC_SIZE]>,
    /// The child's capability for the request it took, between its `recv` and `send`.
    reply: Option<conduit::mailbox::Reply<[u8; RPC_SIZE]>>,
}

impl ShmMailboxRpc {
    fn mb(&mut self) -> &shm::Mailbox<[u8; RPC_SIZE]> {
        let name = &self.name;
        self.mb.get_or_insert_with(|| {
            let mb = shm::Mailbox::open(name).expect("conduit shm mailbox: open");
            let _ = mb.try_recv_select(Select::Tag(u64::MAX)); // the receiver role
            mb
        })
    }
}

impl Transport for ShmMailboxRpc {
    const NAME: &'static str = "conduit shm mailbox";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let name = format!("conduit-bench.{}.mailbox", std::process::id());
        let create = shm::Options::new()
            .capacity(64)
            .create_new(true)
            .unlink_on_drop(true);
        let mb = shm::Mailbox::with(&name, &create)?;
        let end = |parent, mb| ShmMailboxRpc {
            name: name.clone(),
            parent,
            mb,
            request: None,
            reply: None,
        };
        Ok((end(true, Some(mb)), end(false, None)))
    }
    fn send(&mut self, buf: &[u8]) {
        let mut msg = [0u8; RPC_SIZE];
        msg[..buf.len()].copy_from_slice(buf);
        if self.parent {
            self.request = Some(msg);
        } else if let Some(reply) = self.reply.take() {
            assert!(reply.reply(msg).is_ok(), "requester gone");
        } else {
            assert!(self.mb().send(msg).is_ok(), "conduit shm mailbox: hello");
        }
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let body = match self.request.take() {
            Some(req) => self
                .mb()
                .request_tagged(1, req)
                .expect("conduit shm mailbox: request"),
            None => {
                let sel = Select::Tag(u64::from(!self.parent));
                let mut env = self
                    .mb()
                    .recv_select(sel)
                    .expect("conduit shm mailbox: recv");
                self.reply = env.take_reply();
                *env.body()
            }
        };
        buf.copy_from_slice(&body[..buf.len()]);
    }
}

fn ipc_request_contenders() -> Vec<Contender> {
    let mut v = conduit_ipc_contenders();
    v.extend([
        requests::<ConduitShm<RPC_SIZE>>(SHM_PING_PONG),
        requests::<SysVRpc>("SysV msg queue"),
        requests::<Stream<UnixStream, UnixStream>>("unix socket"),
    ]);
    v
}

/// Request/reply over one SysV queue the way its users do it: requests go as type 1
/// with the requester's pid in front, and each answer goes back with the requester's
/// pid as its type, which the requester selects on.
struct SysVRpc {
    /// The client's: the queue, removed when the client's end drops.
    _queue: Option<SysVQueue>,
    id: libc::c_int,
    /// The client: `None`; the server: the pid its next answer goes to.
    server: Option<libc::c_long>,
    /// The client's pid.
    pid: libc::c_long,
}

impl Transport for SysVRpc {
    const NAME: &'static str = "SysV msg queue";
    fn pair(_: usize) -> io::Result<(Self, Self)> {
        let queue = SysVQueue::new()?;
        let (id, pid) = (queue.0, libc::c_long::from(std::process::id() as i32));
        let server = SysVRpc {
            _queue: None,
            id,
            server: Some(pid),
            pid,
        };
        let client = SysVRpc {
            _queue: Some(queue),
            id,
            server: None,
            pid,
        };
        Ok((client, server))
    }
    fn send(&mut self, buf: &[u8]) {
        let mut text = [0u8; MAX_MSG];
        let (mtype, text) = match self.server {
            Some(to) => (to, buf),
            None => {
                text[..8].copy_from_slice(&(self.pid as u64).to_le_bytes());
                text[8..8 + buf.len()].copy_from_slice(buf);
                (1, &text[..8 + buf.len()])
            }
        };
        msg_send(self.id, mtype, text, 0).expect("msgsnd");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut text = [0u8; MAX_MSG];
        if self.server.is_some() {
            let n = msg_recv(self.id, 1, &mut text);
            assert_eq!(n, 8 + buf.len(), "msgrcv: unexpected size");
            let pid = u64::from_le_bytes(text[..8].try_into().expect("8 bytes"));
            self.server = Some(pid as libc::c_long);
            buf.copy_from_slice(&text[8..n]);
        } else {
            let n = msg_recv(self.id, self.pid, &mut text);
            assert_eq!(n, buf.len(), "msgrcv: unexpected size");
            buf.copy_from_slice(&text[..n]);
        }
    }
}
