//! Helpers for the cross-process shm tests: re-executing the test binary as child
//! processes, a watchdog that kills them, unique channel names, and raw access to a
//! segment's memory (for simulating crashes and corruption).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable that makes the test binary a child with a role.
pub const ROLE: &str = "CONDUIT_SHM_TEST_ROLE";
/// Prefix of the variables carrying a child's arguments.
const ARG: &str = "CONDUIT_SHM_TEST_ARG_";
/// The test every child runs (each test binary defines it).
pub const ENTRY: &str = "child_entry";

/// How long any one test may run before its watchdog kills its children and fails it.
pub const LIMIT: Duration = Duration::from_secs(40);

/// Pids of the children alive, per test thread, for the watchdog.
fn registry() -> &'static Mutex<HashMap<u32, String>> {
    static R: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

fn kill9(pid: u32) {
    // SAFETY: sending a signal to a pid we spawned has no memory-safety implications.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// A channel name unique to this process and call, removed (with `shm::unlink`) when
/// dropped, even if the test fails.
pub struct Name(pub String);

/// Names in use, for the watchdog to unlink.
fn names() -> &'static Mutex<Vec<String>> {
    static N: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    N.get_or_init(|| Mutex::new(Vec::new()))
}

impl Name {
    pub fn new(tag: &str) -> Name {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        names().lock().unwrap().push(name.clone());
        Name(name)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = conduit::shm::unlink(&self.0);
        names().lock().unwrap().retain(|n| *n != self.0);
    }
}

/// Runs `f` on its own thread; if it has not finished within [`LIMIT`], kills every
/// child process this test binary spawned and fails. Panics inside `f` propagate.
pub fn watchdog<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let r = f();
        let _ = done_tx.send(());
        r
    });
    match done_rx.recv_timeout(LIMIT) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => worker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let pids: Vec<(u32, String)> = registry()
                .lock()
                .unwrap()
                .iter()
                .map(|(p, r)| (*p, r.clone()))
                .collect();
            for (pid, _) in &pids {
                kill9(*pid);
            }
            for name in names().lock().unwrap().iter() {
                let _ = conduit::shm::unlink(name);
            }
            panic!("watchdog: test did not finish within {LIMIT:?}; killed children {pids:?}")
        }
    }
}

/// A child process running this test binary's [`ENTRY`] test with a role.
pub struct Proc {
    child: Option<Child>,
    pid: u32,
    role: String,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns a child with `role` and `args` (read with [`arg`] in the child).
    pub fn spawn(role: &str, args: &[(&str, &str)]) -> Proc {
        Proc::spawn_env(role, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables `env` for the child.
    pub fn spawn_env(role: &str, args: &[(&str, &str)], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.envs(env.iter().copied());
        cmd.args(["--exact", ENTRY, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in args {
            cmd.env(format!("{ARG}{k}"), v);
        }
        let mut child = cmd.spawn().expect("spawn child");
        let pid = child.id();
        registry().lock().unwrap().insert(pid, role.to_string());
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(msg) = line.strip_prefix('@')
                    && tx.send(msg.to_string()).is_err()
                {
                    break;
                }
            }
        });
        Proc {
            child: Some(child),
            pid,
            role: role.to_string(),
            lines,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line the child [`say`]s, waiting at most `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the child to say exactly `what`.
    pub fn expect(&self, what: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.line(left) {
                Some(l) if l == what => return,
                Some(_) => continue,
                None => panic!("child {} never said {what:?}", self.role),
            }
        }
    }

    /// `kill -9`, and reaps the child.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            registry().lock().unwrap().remove(&self.pid);
        }
    }

    /// Waits for the child to exit (the watchdog bounds the wait) and returns its status
    /// and every line it said that was not consumed yet.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("already finished");
        let status = child.wait().unwrap();
        registry().lock().unwrap().remove(&self.pid);
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(l);
        }
        (status, rest)
    }

    /// [`Proc::finish`], asserting a successful exit.
    pub fn success(self) -> Vec<String> {
        let role = self.role.clone();
        let (status, lines) = self.finish();
        assert!(status.success(), "child {role} failed: {status:?}");
        lines
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The role of this process, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// A child's argument.
pub fn arg(key: &str) -> String {
    std::env::var(format!("{ARG}{key}")).unwrap_or_else(|_| panic!("missing arg {key}"))
}

/// A child's numeric argument.
pub fn num(key: &str) -> u64 {
    arg(key).parse().unwrap()
}

/// Says a line to the parent.
pub fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    // The leading newline ends libtest's "test child_entry ... " line.
    writeln!(out, "\n@{line}").unwrap();
    out.flush().unwrap();
}

/// Blocks forever (a child waiting to be killed).
pub fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

/// A raw read-write mapping of a channel's segment file.
pub struct Raw {
    ptr: *mut u8,
    len: usize,
}

// Offsets of the documented layout (version 1).
pub const PEER_STATES: usize = 384;
pub const PEER_ENTRIES: usize = 1024;
pub const PEER_ENTRY_SIZE: usize = 192;
pub const INTENTS: usize = 24;
pub const HEAD: usize = 13312;
pub const TAIL: usize = 13440;
pub const SLOTS: usize = 13568;

impl Raw {
    pub fn map(name: &str) -> Raw {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/shm/conduit.{name}"))
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of the whole file; it is only accessed through
        // atomics and stays mapped until `Raw` is dropped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Raw {
            ptr: ptr.cast(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The 8-byte word at `offset`.
    pub fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `self`.
        unsafe { &*self.ptr.add(offset).cast::<AtomicU64>() }
    }

    /// The 4-byte word at `offset` (for words the layout accesses as `u32`).
    pub fn word32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `self`.
        unsafe { &*self.ptr.add(offset).cast::<std::sync::atomic::AtomicU32>() }
    }

    /// Overwrites `len` bytes at `offset` with `byte`s from `fill`.
    pub fn scribble(&self, offset: usize, len: usize, mut fill: impl FnMut() -> u64) {
        let end = (offset + len).min(self.len) & !7;
        let mut o = offset & !7;
        while o < end {
            self.word(o).store(fill(), Ordering::Relaxed);
            o += 8;
        }
    }

    /// The peer slot whose entry records this process's pid and whose state is LIVE
    /// with `role` (1 = sender, 2 = receiver).
    pub fn my_peer_slot(&self, role: u64) -> usize {
        let pid = std::process::id() as u64;
        (0..64)
            .find(|&n| {
                let state = self.word(PEER_STATES + 8 * n).load(Ordering::SeqCst);
                let entry_pid = self
                    .word(PEER_ENTRIES + PEER_ENTRY_SIZE * n)
                    .load(Ordering::SeqCst)
                    & 0xffff_ffff;
                (state >> 8) & 0xff == 1 && state & role != 0 && entry_pid == pid
            })
            .expect("own peer slot")
    }

    /// Intent lane `lane` of peer slot `n`.
    pub fn intent(&self, n: usize, lane: usize) -> &AtomicU64 {
        self.word(PEER_ENTRIES + PEER_ENTRY_SIZE * n + INTENTS + 8 * lane)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The entries of `/dev/shm` that belong to the channel `name` (any file whose name
/// contains `name` followed by nothing or a `.`), sorted.
pub fn shm_entries(name: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|file| {
            file.match_indices(name)
                .any(|(at, _)| matches!(file[at + name.len()..].chars().next(), None | Some('.')))
        })
        .collect();
    found.sort();
    found
}

/// Takes the liveness lock of peer slot `n` of channel `name` the way an attaching peer
/// does (an exclusive open-file-description lock on byte `n` of the segment file, per
/// the documented layout), without touching the peer table: a peer caught between
/// taking its lock and marking itself LIVE. Held until the returned file is closed.
pub fn lock_peer_byte(name: &str, n: usize) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/conduit.{name}"))
        .unwrap();
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = n as _;
    fl.l_len = 1;
    // SAFETY: `file` is open; F_OFD_SETLK only reads `fl`, which outlives the call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    assert_eq!(r, 0, "lock byte {n}: {}", std::io::Error::last_os_error());
    file
}

/// Waits (bounded by the watchdog) until every named segment file's status last changed
/// more than `age` ago: `shm::remove_stale` leaves younger ones alone.
pub fn wait_older_than(names: &[&str], age: Duration) {
    use std::os::unix::fs::MetadataExt;
    let older = |name: &&str| {
        let meta = std::fs::metadata(format!("/dev/shm/conduit.{name}"))
            .unwrap_or_else(|e| panic!("segment {name} vanished: {e}"));
        let ctime =
            std::time::UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
        std::time::SystemTime::now()
            .duration_since(ctime)
            .is_ok_and(|a| a > age)
    };
    while !names.iter().all(older) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The ring position after `pos` in a ring of `cap` slots (a power of two).
pub fn next_pos(pos: u64, cap: u64) -> u64 {
    let one_lap = 2 * (cap + 1).next_power_of_two();
    if (pos & (one_lap / 2 - 1)) + 1 < cap {
        pos + 1
    } else {
        (pos & !(one_lap - 1)) + one_lap
    }
}

/// The intent word a peer records before claiming `pos`.
pub fn intent_word(recv: bool, pos: u64) -> u64 {
    (1 << 63) | if recv { 1 << 62 } else { 0 } | pos
}

/// A small xorshift generator for the scribbling tests (deterministic per seed; a seed
/// must not be 0).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Receives what a sender killed mid-stream left: every message from `next` on, in order
/// with no gap, each within `step`, until the ring reports the disconnection. Returns
/// the number after the last one received.
pub fn drain_until_disconnected(
    rx: &conduit::shm::Receiver<u64>,
    mut next: u64,
    step: Duration,
) -> u64 {
    loop {
        match rx.recv_timeout(step) {
            Ok(i) => {
                assert_eq!(i, next);
                next += 1;
            }
            Err(e) => {
                assert_eq!(e, conduit::RecvTimeoutError::Disconnected);
                return next;
            }
        }
    }
}
