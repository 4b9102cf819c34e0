//! Cross-process scenarios: 8-byte ping-pong round trips and 64-byte one-way
//! throughput between two processes (a parent and a forked child).
//!
//! Transports: a pipe pair, a unix socket pair, a SysV message queue, a POSIX message
//! queue, and the physical limit, two processes spinning on one shared cache line.
//! conduit's shared-memory channel joins these once `conduit::shm` exists: add it to
//! [`transports`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Run, Scenario};

/// What the child does: echo each ping (`pingpong`) or consume `n` messages and ack.
#[derive(Clone, Copy)]
enum Mode {
    PingPong,
    OneWay,
}

/// One side's operations over a transport, set up before the fork.
trait Transport {
    const NAME: &'static str;
    fn setup() -> Self;
    /// Parent → child, `buf.len()` bytes as one message.
    fn send_to_child(&self, buf: &[u8]);
    fn recv_in_child(&self, buf: &mut [u8]);
    /// Child → parent.
    fn send_to_parent(&self, buf: &[u8]);
    fn recv_in_parent(&self, buf: &mut [u8]);
    fn teardown(self);
}

/// Runs `n` messages of `size` bytes through `T` with a forked child.
fn run<T: Transport>(mode: Mode, size: usize, n: u64) -> Duration {
    let t = T::setup();
    // SAFETY: the benchmark forks before it starts any thread (cross-process scenarios
    // run first), and the child only makes system calls and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    let mut buf = vec![0u8; size];
    if pid == 0 {
        match mode {
            Mode::PingPong => {
                for _ in 0..n {
                    t.recv_in_child(&mut buf);
                    t.send_to_parent(&buf);
                }
            }
            Mode::OneWay => {
                for _ in 0..n {
                    t.recv_in_child(&mut buf);
                }
                t.send_to_parent(&buf[..8]);
            }
        }
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    let start = Instant::now();
    match mode {
        Mode::PingPong => {
            for i in 0..n {
                buf[..8].copy_from_slice(&i.to_ne_bytes());
                t.send_to_child(&buf);
                t.recv_in_parent(&mut buf);
            }
        }
        Mode::OneWay => {
            for i in 0..n {
                buf[..8].copy_from_slice(&i.to_ne_bytes());
                t.send_to_child(&buf);
            }
            t.recv_in_parent(&mut buf[..8]);
        }
    }
    let elapsed = start.elapsed();
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    t.teardown();
    elapsed
}

fn check(ret: isize, what: &str) {
    if ret < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
}

fn write_all(fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes from a live buffer of the given length.
        let r = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        check(r, "write");
        done += r as usize;
    }
}

fn read_exact(fd: i32, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reads into a live buffer of the given length.
        let r = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        check(r, "read");
        assert!(r > 0, "peer closed");
        done += r as usize;
    }
}

/// A byte stream in each direction: two pipes, or one socket pair.
struct Fds {
    to_child_w: i32,
    to_child_r: i32,
    to_parent_w: i32,
    to_parent_r: i32,
}

impl Fds {
    fn close(self) {
        for fd in [
            self.to_child_w,
            self.to_child_r,
            self.to_parent_w,
            self.to_parent_r,
        ] {
            // SAFETY: closes descriptors this struct owns (a socket pair appears twice;
            // the second close fails harmlessly).
            unsafe { libc::close(fd) };
        }
    }
}

macro_rules! fd_transport {
    ($ty:ident, $name:literal, $setup:expr) => {
        struct $ty(Fds);
        impl Transport for $ty {
            const NAME: &'static str = $name;
            fn setup() -> Self {
                $ty($setup)
            }
            fn send_to_child(&self, buf: &[u8]) {
                write_all(self.0.to_child_w, buf)
            }
            fn recv_in_child(&self, buf: &mut [u8]) {
                read_exact(self.0.to_child_r, buf)
            }
            fn send_to_parent(&self, buf: &[u8]) {
                write_all(self.0.to_parent_w, buf)
            }
            fn recv_in_parent(&self, buf: &mut [u8]) {
                read_exact(self.0.to_parent_r, buf)
            }
            fn teardown(self) {
                self.0.close()
            }
        }
    };
}

fd_transport!(Pipe, "pipe", {
    let mut a = [0; 2];
    let mut b = [0; 2];
    // SAFETY: `pipe` fills the two-element arrays.
    check(unsafe { libc::pipe(a.as_mut_ptr()) } as isize, "pipe");
    // SAFETY: as above.
    check(unsafe { libc::pipe(b.as_mut_ptr()) } as isize, "pipe");
    Fds {
        to_child_r: a[0],
        to_child_w: a[1],
        to_parent_r: b[0],
        to_parent_w: b[1],
    }
});

fd_transport!(SocketPair, "unix socketpair", {
    let mut s = [0; 2];
    // SAFETY: `socketpair` fills the two-element array.
    check(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, s.as_mut_ptr()) } as isize,
        "socketpair",
    );
    Fds {
        to_child_w: s[0],
        to_parent_r: s[0],
        to_child_r: s[1],
        to_parent_w: s[1],
    }
});

/// A SysV message queue: type 1 to the child, type 2 to the parent.
struct SysV(i32);

#[repr(C)]
struct SysVMsg {
    mtype: libc::c_long,
    data: [u8; 64],
}

impl SysV {
    fn send(&self, mtype: libc::c_long, buf: &[u8]) {
        let mut m = SysVMsg {
            mtype,
            data: [0; 64],
        };
        m.data[..buf.len()].copy_from_slice(buf);
        // SAFETY: sends from a live message whose text holds `buf.len()` bytes.
        let r = unsafe { libc::msgsnd(self.0, (&raw const m).cast(), buf.len(), 0) };
        check(r as isize, "msgsnd");
    }
    fn recv(&self, mtype: libc::c_long, buf: &mut [u8]) {
        let mut m = SysVMsg {
            mtype: 0,
            data: [0; 64],
        };
        // SAFETY: receives into a live message with 64 bytes of text.
        let r = unsafe { libc::msgrcv(self.0, (&raw mut m).cast(), 64, mtype, 0) };
        check(r, "msgrcv");
        let len = buf.len();
        buf.copy_from_slice(&m.data[..len]);
    }
}

impl Transport for SysV {
    const NAME: &'static str = "SysV msgqueue";
    fn setup() -> Self {
        // SAFETY: creates a private queue.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        check(id as isize, "msgget");
        SysV(id)
    }
    fn send_to_child(&self, buf: &[u8]) {
        self.send(1, buf)
    }
    fn recv_in_child(&self, buf: &mut [u8]) {
        self.recv(1, buf)
    }
    fn send_to_parent(&self, buf: &[u8]) {
        self.send(2, buf)
    }
    fn recv_in_parent(&self, buf: &mut [u8]) {
        self.recv(2, buf)
    }
    fn teardown(self) {
        // SAFETY: removes the queue we created.
        unsafe { libc::msgctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// Two POSIX message queues, one per direction.
struct PosixMq {
    to_child: libc::mqd_t,
    to_parent: libc::mqd_t,
    names: [std::ffi::CString; 2],
}

impl PosixMq {
    fn open(name: &std::ffi::CString) -> libc::mqd_t {
        // SAFETY: a zeroed attr is valid; we set the fields we need.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = 10;
        attr.mq_msgsize = 64;
        // SAFETY: a valid name and attr pointer.
        let q = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_RDWR,
                0o600 as libc::mode_t,
                &raw mut attr,
            )
        };
        check(q as isize, "mq_open");
        q
    }
    fn send(q: libc::mqd_t, buf: &[u8]) {
        // SAFETY: sends from a live buffer.
        let r = unsafe { libc::mq_send(q, buf.as_ptr().cast(), buf.len(), 0) };
        check(r as isize, "mq_send");
    }
    fn recv(q: libc::mqd_t, buf: &mut [u8]) {
        let mut tmp = [0u8; 64];
        // SAFETY: receives into a 64-byte buffer (the queue's message size).
        let r = unsafe { libc::mq_receive(q, tmp.as_mut_ptr().cast(), 64, std::ptr::null_mut()) };
        check(r, "mq_receive");
        let len = buf.len();
        buf.copy_from_slice(&tmp[..len]);
    }
}

impl Transport for PosixMq {
    const NAME: &'static str = "POSIX mqueue";
    fn setup() -> Self {
        let pid = std::process::id();
        let names = [
            std::ffi::CString::new(format!("/conduit-bench-{pid}-c")).unwrap(),
            std::ffi::CString::new(format!("/conduit-bench-{pid}-p")).unwrap(),
        ];
        PosixMq {
            to_child: Self::open(&names[0]),
            to_parent: Self::open(&names[1]),
            names,
        }
    }
    fn send_to_child(&self, buf: &[u8]) {
        Self::send(self.to_child, buf)
    }
    fn recv_in_child(&self, buf: &mut [u8]) {
        Self::recv(self.to_child, buf)
    }
    fn send_to_parent(&self, buf: &[u8]) {
        Self::send(self.to_parent, buf)
    }
    fn recv_in_parent(&self, buf: &mut [u8]) {
        Self::recv(self.to_parent, buf)
    }
    fn teardown(self) {
        for (q, name) in [self.to_child, self.to_parent].into_iter().zip(&self.names) {
            // SAFETY: closes and unlinks the queues we created.
            unsafe {
                libc::mq_close(q);
                libc::mq_unlink(name.as_ptr());
            }
        }
    }
}

/// The physical limit: one shared cache line holding a state word and up to 56
/// payload bytes. State 0: free; 1: a message for the child; 2: one for the parent.
/// Both sides spin.
struct SpinLine(*mut u8);

const LINE_PAYLOAD: usize = 56;
const FREE: u64 = 0;
const TO_CHILD: u64 = 1;
const TO_PARENT: u64 = 2;

impl SpinLine {
    fn state(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, lives until teardown, and offset 0 is
        // only accessed atomically.
        unsafe { &*(self.0 as *const AtomicU64) }
    }

    fn wait_for(&self, want: u64) {
        while self.state().load(Ordering::Acquire) != want {
            std::hint::spin_loop();
        }
    }

    fn put(&self, buf: &[u8], to: u64) {
        self.wait_for(FREE);
        let len = buf.len().min(LINE_PAYLOAD);
        // SAFETY: while the state is FREE, bytes 8..64 belong to the writer.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.0.add(8), len) };
        self.state().store(to, Ordering::Release);
    }

    fn take(&self, buf: &mut [u8], to: u64) {
        self.wait_for(to);
        let len = buf.len().min(LINE_PAYLOAD);
        // SAFETY: while the state names us, bytes 8..64 belong to us.
        unsafe { std::ptr::copy_nonoverlapping(self.0.add(8), buf.as_mut_ptr(), len) };
        self.state().store(FREE, Ordering::Release);
    }
}

impl Transport for SpinLine {
    const NAME: &'static str = "shared cache line (spin limit)";
    fn setup() -> Self {
        // SAFETY: a fresh shared anonymous page (zeroed: state FREE), inherited by the
        // forked child.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        SpinLine(p.cast())
    }
    fn send_to_child(&self, buf: &[u8]) {
        self.put(buf, TO_CHILD)
    }
    fn recv_in_child(&self, buf: &mut [u8]) {
        self.take(buf, TO_CHILD)
    }
    fn send_to_parent(&self, buf: &[u8]) {
        self.put(buf, TO_PARENT)
    }
    fn recv_in_parent(&self, buf: &mut [u8]) {
        self.take(buf, TO_PARENT)
    }
    fn teardown(self) {
        // SAFETY: unmaps the page we mapped.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

fn transport_runs(mode: Mode, size: usize) -> Vec<(&'static str, Run)> {
    fn boxed<T: Transport>(mode: Mode, size: usize) -> (&'static str, Run) {
        (T::NAME, Box::new(move |n| Some(run::<T>(mode, size, n))))
    }
    vec![
        boxed::<Pipe>(mode, size),
        boxed::<SocketPair>(mode, size),
        boxed::<SysV>(mode, size),
        boxed::<PosixMq>(mode, size),
        boxed::<SpinLine>(mode, size),
    ]
}

/// The cross-process scenarios.
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let n = if quick { 20_000 } else { 100_000 };
    vec![
        Scenario {
            name: "ipc ping-pong 8-byte round trip".into(),
            messages: n,
            impls: transport_runs(Mode::PingPong, 8),
        },
        Scenario {
            name: "ipc one-way 64-byte".into(),
            messages: n * 5,
            impls: transport_runs(Mode::OneWay, 64),
        },
    ]
}
