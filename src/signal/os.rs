//! The bridge from OS signals: [`forward_os`].
//!
//! The bridge's design is documented on [`forward_os`] (this module is private).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::{RaiseError, Raiser, Signal};

/// Deliveries of each OS signal (by number, `1..=64`) not yet forwarded: the OS
/// handler's only state besides the pipe. Process-wide statics, outside loom's reach
/// (this module is not built under loom).
static DELIVERIES: [AtomicU64; 65] = [const { AtomicU64::new(0) }; 65];

/// The pipe's write end, or -1 before the forwarder starts.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Signals whose handlers must not be replaced (POSIX forbids catching the first two;
/// the others are the program's own faults).
const FORBIDDEN: [i32; 6] = [
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
];

/// Whether the C library keeps `os_signal` for itself (glibc and musl use the realtime
/// numbers below `SIGRTMIN()` for thread cancellation and `setxid`).
fn libc_reserved(os_signal: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        (32..libc::SIGRTMIN()).contains(&os_signal)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = os_signal;
        false
    }
}

/// The forwarding registry, behind one lock (never taken by the OS handler).
struct Registry {
    next_id: u64,
    forwards: Vec<Forward>,
    /// Per OS signal conduit has forwarded (see the module docs).
    signals: Vec<OsSignal>,
    started: bool,
}

/// conduit's state for one OS signal.
struct OsSignal {
    os_signal: i32,
    /// The registry action while any forward of this signal exists.
    action: Option<signal_hook_registry::SigId>,
    /// The disposition before conduit's first forward.
    before: libc::sigaction,
    /// The disposition the registry installed (once it has).
    installed: Option<libc::sigaction>,
}

struct Forward {
    id: u64,
    os_signal: i32,
    raiser: sealed::AnyRaiser,
    signal: Signal,
}

/// The raisers [`forward_os`] forwards into: an in-process [`Raiser`] or a
/// [`crate::shm::signal::Raiser`] (whose target may be in another process). Sealed:
/// implemented by those two only.
///
/// ```
/// use conduit::shm::signal::{Raiser, Target};
/// use conduit::signal::{Signal, forward_os};
///
/// let name = format!("doc-forward-shm-{}", std::process::id());
/// let target = Target::create(&name)?; // usually owned by another process
/// let winch = Signal::new(28).unwrap();
/// let guard = forward_os(libc::SIGWINCH, &Raiser::open(&name)?, winch)?;
/// // SAFETY: raising a signal this process now handles.
/// unsafe { libc::raise(libc::SIGWINCH) };
/// let info = target.wait();
/// assert_eq!((info.signal(), info.pid()), (winch, std::process::id()));
/// drop(guard);
/// conduit::shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait ForwardTo: sealed::Sealed {}

impl ForwardTo for Raiser {}
#[cfg(target_pointer_width = "64")]
impl ForwardTo for crate::shm::signal::Raiser {}

mod sealed {
    use super::{RaiseError, Raiser, Signal};

    /// A raiser of either kind, kept by a forward.
    #[derive(Clone, Debug)]
    pub enum AnyRaiser {
        Heap(Raiser),
        #[cfg(target_pointer_width = "64")]
        Shm(crate::shm::signal::Raiser),
    }

    impl AnyRaiser {
        pub(super) fn raise_times(
            &self,
            signal: Signal,
            payload: u64,
            times: u64,
        ) -> Result<(), RaiseError> {
            match self {
                AnyRaiser::Heap(r) => r.raise_times(signal, payload, times),
                #[cfg(target_pointer_width = "64")]
                AnyRaiser::Shm(r) => r.raise_times(signal, payload, times),
            }
        }
    }

    /// [`super::ForwardTo`]'s seal.
    pub trait Sealed {
        /// The raiser, to keep.
        fn any_raiser(&self) -> AnyRaiser;
    }

    impl Sealed for Raiser {
        fn any_raiser(&self) -> AnyRaiser {
            AnyRaiser::Heap(self.clone())
        }
    }

    #[cfg(target_pointer_width = "64")]
    impl Sealed for crate::shm::signal::Raiser {
        fn any_raiser(&self) -> AnyRaiser {
            AnyRaiser::Shm(self.clone())
        }
    }
}

// SAFETY: `libc::sigaction` is plain data (a handler address, flags and a signal set);
// the registry moves it between threads only under its lock.
unsafe impl Send for OsSignal {}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 0,
    forwards: Vec::new(),
    signals: Vec::new(),
    started: false,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forwards the OS signal `os_signal` (a `libc::SIG*` number) to `signal` on the
/// raiser's target, until the returned guard is dropped. Several forwards of one OS
/// signal (to one or several targets) each get every delivery. Deliveries are raised
/// by the raiser given (its [`id`](Raiser::id)); the pid reported is this process's.
/// The raiser may be an in-process [`Raiser`] or a [`crate::shm::signal::Raiser`]
/// (the "interrupt handler" then raises on a target owned by another process); see
/// [`ForwardTo`].
///
/// # What runs where
///
/// - **In the OS signal handler** (installed through `signal-hook-registry`, so it
///   chains with other libraries' handlers for the same signal): one `fetch_add` on a
///   static per-signal counter of deliveries, then a one-byte `write(2)` to a
///   non-blocking pipe. Both are async-signal-safe; the handler neither locks nor
///   allocates nor touches a target. (The registry saves and restores `errno` around
///   it.) A full pipe drops the byte, not the delivery: the counters hold the
///   deliveries, the pipe only wakes the forwarder.
/// - **On the forwarder thread** (`conduit-signals`, one per process, started by the
///   first [`forward_os`] and alive until the process ends): it blocks reading the pipe,
///   then swaps every signal's counter to zero and raises each nonzero count on the
///   targets forwarding that signal. A standard target signal gets the count in one
///   raise (its delivery's [`count`](super::SigInfo::count) says how many OS
///   deliveries it absorbed); a queued one gets one raise per OS delivery with the OS
///   signal's number as payload, and the raises beyond the queue's depth fail and are
///   dropped (the OS queue for realtime signals is bounded the same way).
///
/// Each OS signal has its own counter, so a flood of one signal never hides another
/// (signal-hook #36: a pipe that carried the signal numbers filled up and lost them).
/// The OS itself coalesces standard signals that arrive while one is pending, so the
/// counts are deliveries of the handler, not `kill` calls.
///
/// # Restoring on drop
///
/// `signal-hook-registry` never uninstalls its handler: once the last action for a
/// signal is unregistered, its handler still runs and, when the disposition it replaced
/// was the default (`SIG_DFL`) or `SIG_IGN`, does nothing, so a `SIGTERM` would be
/// swallowed from then on (signal-hook #23, tokio #7905). conduit therefore records,
/// per OS signal, the disposition in place just before its first forward (`before`) and
/// the one the registry installed (`installed`). When the last [`ForwardGuard`] for a
/// signal is dropped, conduit unregisters its action and, if the signal's disposition
/// is still `installed`, puts `before` back with `sigaction(2)`: the default action (a
/// `SIGTERM` ends the process again), `SIG_IGN`, or the handler of whoever installed one
/// before. A later [`forward_os`] for the signal puts `installed` back first (the
/// registry believes it is still in place). Limits: if another library registered its
/// own action for the same signal through `signal-hook-registry` *after* conduit's
/// first forward, the restore also stops that action from running; if someone else
/// changed the disposition in between (it is no longer `installed`), conduit leaves it
/// alone.
///
/// # Errors
/// `InvalidInput` for `SIGKILL`, `SIGSTOP`, `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`,
/// numbers outside `1..=64` and, on Linux, the numbers below `SIGRTMIN()` that the C
/// library reserves for itself (32 and 33 with glibc); the OS's error if the handler
/// or the forwarder thread cannot be installed.
///
/// ```
/// use conduit::signal::{Signal, Target, forward_os};
///
/// let target = Target::new();
/// let usr1 = Signal::new(10).unwrap();
/// let guard = forward_os(libc::SIGUSR1, &target.raiser(), usr1)?;
/// // SAFETY: raising a signal this process now handles.
/// unsafe { libc::raise(libc::SIGUSR1) };
/// assert_eq!(target.wait().signal(), usr1);
/// drop(guard);
/// assert_eq!(
///     forward_os(libc::SIGKILL, &target.raiser(), usr1).unwrap_err().kind(),
///     std::io::ErrorKind::InvalidInput,
/// );
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn forward_os<R: ForwardTo + ?Sized>(
    os_signal: i32,
    raiser: &R,
    signal: Signal,
) -> io::Result<ForwardGuard> {
    if !(1..=64).contains(&os_signal) || FORBIDDEN.contains(&os_signal) || libc_reserved(os_signal)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "this OS signal cannot be forwarded",
        ));
    }
    let mut reg = registry();
    if !reg.started {
        start_forwarder()?;
        reg.started = true;
    }
    let i = match reg.signals.iter().position(|s| s.os_signal == os_signal) {
        Some(i) => i,
        None => {
            let before = query(os_signal)?;
            reg.signals.push(OsSignal {
                os_signal,
                action: None,
                before,
                installed: None,
            });
            reg.signals.len() - 1
        }
    };
    let entry = &mut reg.signals[i];
    if entry.action.is_none() {
        if let Some(installed) = &entry.installed {
            // conduit restored `before` when the last forward went; the registry
            // believes its handler is still in place, so put it back, unless someone
            // changed the disposition since.
            if query(os_signal)?.sa_sigaction == entry.before.sa_sigaction {
                set(os_signal, installed)?;
            }
        }
        let slot = os_signal as usize;
        let action = move || {
            DELIVERIES[slot].fetch_add(1, Ordering::SeqCst);
            let fd = WAKE_FD.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: `WAKE_FD` holds the pipe's write end, open for the rest of the
                // process once set.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                let _ = rustix::io::write(fd, &[1]);
            }
        };
        // SAFETY: `action` is async-signal-safe: an atomic add on a static, an atomic
        // load and a `write(2)` of one byte to a non-blocking pipe; it neither
        // allocates nor locks nor panics. The signal is not one of the registry's
        // forbidden ones (checked above).
        let id = unsafe { signal_hook_registry::register(os_signal, action) }?;
        if entry.installed.is_none() {
            entry.installed = Some(query(os_signal)?);
        }
        entry.action = Some(id);
    }
    reg.next_id += 1;
    let id = reg.next_id;
    reg.forwards.push(Forward {
        id,
        os_signal,
        raiser: raiser.any_raiser(),
        signal,
    });
    Ok(ForwardGuard { id, os_signal })
}

/// Keeps a [`forward_os`] forwarding; dropping it stops it and, for the last forward of
/// its OS signal, restores the disposition that was there before (see
/// [`forward_os`]).
///
/// ```
/// use conduit::signal::{Signal, Target, forward_os};
///
/// let target = Target::new();
/// let guard = forward_os(libc::SIGUSR2, &target.raiser(), Signal::new(12).unwrap())?;
/// assert_eq!(guard.os_signal(), libc::SIGUSR2);
/// drop(guard); // SIGUSR2's default action (terminate) is back
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping the guard stops the forwarding"]
pub struct ForwardGuard {
    id: u64,
    os_signal: i32,
}

impl ForwardGuard {
    /// The OS signal forwarded.
    ///
    /// ```
    /// # use conduit::signal::{Signal, Target, forward_os};
    /// let target = Target::new();
    /// let guard = forward_os(libc::SIGHUP, &target.raiser(), Signal::new(1).unwrap())?;
    /// assert_eq!(guard.os_signal(), libc::SIGHUP);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn os_signal(&self) -> i32 {
        self.os_signal
    }
}

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        let mut reg = registry();
        reg.forwards.retain(|f| f.id != self.id);
        if reg.forwards.iter().any(|f| f.os_signal == self.os_signal) {
            return;
        }
        let Some(entry) = reg
            .signals
            .iter_mut()
            .find(|s| s.os_signal == self.os_signal)
        else {
            return;
        };
        if let Some(action) = entry.action.take() {
            signal_hook_registry::unregister(action);
        }
        if let Some(installed) = &entry.installed
            && query(self.os_signal).is_ok_and(|c| c.sa_sigaction == installed.sa_sigaction)
        {
            // Best effort: `sigaction` with a disposition it returned cannot fail for a
            // signal it accepted.
            let _ = set(self.os_signal, &entry.before);
        }
    }
}

/// The disposition of `os_signal` now.
fn query(os_signal: i32) -> io::Result<libc::sigaction> {
    // SAFETY: `sigaction` is plain data; all-zero is a valid (empty) value.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid place to write.
    if unsafe { libc::sigaction(os_signal, core::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old)
}

/// Installs `action` for `os_signal`.
fn set(os_signal: i32, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: `action` is a disposition `sigaction` returned for this signal earlier
    // (so its handler, if any, is one that was installed for it); the old one is not
    // wanted.
    if unsafe { libc::sigaction(os_signal, action, core::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the pipe and starts the forwarder thread.
fn start_forwarder() -> io::Result<()> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    rustix::fs::fcntl_setfl(&write, rustix::fs::OFlags::NONBLOCK)?;
    std::thread::Builder::new()
        .name("conduit-signals".into())
        .spawn(move || forwarder(read))?;
    // The write end stays open for the rest of the process (the handler may use it at
    // any time).
    WAKE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(write), Ordering::SeqCst);
    Ok(())
}

/// The forwarder thread: wait for a byte, forward every signal's deliveries.
///
/// No delivery is left behind: the handler adds to its counter *before* writing its
/// byte, and the forwarder reads the byte *before* swapping the counters, so an add
/// that a swap misses comes with a byte the next read returns (or the pipe already
/// held one when the write found it full).
fn forwarder(read: OwnedFd) {
    let mut buf = [0u8; 64];
    loop {
        match rustix::io::read(read.as_fd(), &mut buf) {
            Ok(0) => return,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        for (os_signal, deliveries) in DELIVERIES.iter().enumerate().skip(1) {
            let times = deliveries.swap(0, Ordering::SeqCst);
            if times == 0 {
                continue;
            }
            let targets: Vec<(sealed::AnyRaiser, Signal)> = registry()
                .forwards
                .iter()
                .filter(|f| f.os_signal == os_signal as i32)
                .map(|f| (f.raiser.clone(), f.signal))
                .collect();
            for (raiser, signal) in targets {
                // A gone target or a full queue: dropped (see the module docs).
                let _ = raiser.raise_times(signal, os_signal as u64, times);
            }
        }
    }
}
