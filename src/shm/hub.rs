//! Async waits: one helper thread per process sleeps on the async futex words of every
//! side that a task waits on, and wakes those tasks' `Waker`s.
//!
//! A task that must wait counts itself in the side's `async_waiters` (so every commit on
//! that side bumps `async_seq` and issues a wake-up), reads `async_seq`, re-checks the
//! ring, and *arms* a registration `(segment, side, seen, waker)` here. The helper
//! thread builds one `futex_waitv` over the distinct words of all registrations, plus a
//! private control word that arming bumps; whenever a word differs from a registration's
//! `seen`, it wakes that registration's task and drops the registration (the task
//! re-arms when it polls again). No executor thread ever blocks, and the helper also
//! runs peer maintenance for the segments it watches, so tasks learn of dead peers.
//!
//! Without `futex_waitv` (Linux < 5.16) the helper polls the words every millisecond.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

use super::segment::{Segment, Side};
use super::wait::SLICE;

/// `futex_waitv` takes at most this many words.
const WAITV_MAX: usize = 128;

struct Registration {
    seg: Arc<Segment>,
    side: Side,
    seen: u32,
    waker: Waker,
}

struct Hub {
    registrations: Mutex<HashMap<u64, Registration>>,
    /// Bumped (and woken) when a registration is added or re-armed.
    control: AtomicU32,
    next_id: AtomicU64,
    /// `futex_waitv` is unavailable: poll.
    polling: AtomicBool,
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<&'static Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        let hub: &'static Hub = Box::leak(Box::new(Hub {
            registrations: Mutex::new(HashMap::new()),
            control: AtomicU32::new(0),
            next_id: AtomicU64::new(1),
            polling: AtomicBool::new(false),
        }));
        std::thread::Builder::new()
            .name("conduit-shm-waker".into())
            .spawn(move || hub.run())
            .expect("conduit: cannot start the shm async helper thread");
        hub
    })
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registration>> {
        self.registrations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or refreshes the registration `*id` (0: none yet).
    fn arm(&self, id: &mut u64, seg: &Arc<Segment>, side: Side, seen: u32, waker: &Waker) {
        let mut regs = self.lock();
        let nudge = match regs.get_mut(id) {
            Some(r) if *id != 0 => {
                if !r.waker.will_wake(waker) {
                    r.waker = waker.clone();
                }
                let changed = r.seen != seen;
                r.seen = seen;
                changed
            }
            _ => {
                *id = self.next_id.fetch_add(1, Ordering::Relaxed);
                regs.insert(
                    *id,
                    Registration {
                        seg: seg.clone(),
                        side,
                        seen,
                        waker: waker.clone(),
                    },
                );
                true
            }
        };
        drop(regs);
        if nudge {
            self.control.fetch_add(1, Ordering::Release);
            let _ = futex::wake(&self.control, futex::Flags::PRIVATE, 1);
        }
    }

    fn disarm(&self, id: u64) {
        let removed = self.lock().remove(&id);
        // Dropped outside the lock: it may unmap a segment.
        drop(removed);
    }

    fn run(&self) {
        let mut fire = Vec::new();
        let mut segs: Vec<Arc<Segment>> = Vec::new();
        let mut waits: Vec<futex::Wait> = Vec::new();
        loop {
            let control = self.control.load(Ordering::Acquire);
            {
                let mut regs = self.lock();
                regs.retain(|_, r| {
                    let word = &r.seg.signal(r.side).async_seq;
                    let now = word.load(Ordering::SeqCst);
                    if now != r.seen {
                        // Taken, not cloned: no user code runs under the lock (the
                        // registration is dropped here).
                        fire.push(std::mem::replace(&mut r.waker, Waker::noop().clone()));
                        return false;
                    }
                    let addr = word as *const AtomicU32 as *mut core::ffi::c_void;
                    if waits.len() < WAITV_MAX - 1 && !waits.iter().any(|w| w.uaddr.ptr == addr) {
                        let mut w = futex::Wait::new();
                        w.val = u64::from(now);
                        w.uaddr = futex::WaitPtr::new(addr);
                        w.flags = futex::WaitFlags::SIZE_U32;
                        waits.push(w);
                    }
                    if !segs.iter().any(|s| Arc::ptr_eq(s, &r.seg)) {
                        segs.push(r.seg.clone());
                    }
                    true
                });
            }
            // Words beyond what one `futex_waitv` takes are polled.
            let overflow = waits.len() >= WAITV_MAX - 1;
            for waker in fire.drain(..) {
                // A task's waker is user code: if it panics, the panic hook has reported
                // it, and this thread, which every async wait of the process relies on,
                // goes on (there is no caller to pass the panic to).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            }
            for seg in &segs {
                // Bumps `async_seq` (seen next round) if a peer was reaped.
                seg.maintain_if_due();
            }
            let mut control_wait = futex::Wait::new();
            control_wait.val = u64::from(control);
            control_wait.uaddr =
                futex::WaitPtr::new(&self.control as *const AtomicU32 as *mut core::ffi::c_void);
            control_wait.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
            waits.push(control_wait);
            let timeout = if overflow || self.polling.load(Ordering::Relaxed) {
                Duration::from_millis(1)
            } else {
                SLICE
            };
            if self.polling.load(Ordering::Relaxed) {
                std::thread::sleep(timeout);
            } else {
                let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
                let mut deadline = now;
                let nanos = now.tv_nsec + timeout.as_nanos() as i64;
                deadline.tv_sec += nanos / 1_000_000_000;
                deadline.tv_nsec = nanos % 1_000_000_000;
                // The segments in `segs` stay mapped during the wait: their `Arc`s are
                // held until after it.
                if let Err(Errno::NOSYS) = futex::waitv(
                    &waits,
                    futex::WaitvFlags::empty(),
                    Some(&deadline),
                    futex::ClockId::Monotonic,
                ) {
                    self.polling.store(true, Ordering::Relaxed);
                }
            }
            waits.clear();
            segs.clear();
        }
    }
}

/// The state an async wait keeps between polls: counted in the side's `async_waiters`,
/// and armed with the helper thread.
#[derive(Debug, Default)]
pub(crate) struct AsyncWait {
    /// The registration id (0: none).
    id: u64,
    /// The side whose `async_waiters` counts this wait.
    counted: Option<Side>,
}

impl AsyncWait {
    pub(crate) const fn new() -> Self {
        AsyncWait {
            id: 0,
            counted: None,
        }
    }

    /// One poll: `attempt`, and if it must wait, arm a wake-up and re-check first.
    pub(crate) fn poll<R>(
        &mut self,
        seg: &Arc<Segment>,
        side: Side,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut() -> Option<R>,
    ) -> Poll<R> {
        if let Some(r) = attempt() {
            self.cancel(seg);
            return Poll::Ready(r);
        }
        let signal = seg.signal(side);
        if self.counted.is_none() {
            signal.async_waiters.fetch_add(1, Ordering::SeqCst);
            self.counted = Some(side);
        }
        let seen = signal.async_seq.load(Ordering::SeqCst);
        // SeqCst fence before the re-check: the futex module's no-lost-wake-up argument.
        fence(Ordering::SeqCst);
        if let Some(r) = attempt() {
            self.cancel(seg);
            return Poll::Ready(r);
        }
        hub().arm(&mut self.id, seg, side, seen, cx.waker());
        Poll::Pending
    }

    /// Ends the wait (completion or drop): disarm and uncount.
    pub(crate) fn cancel(&mut self, seg: &Segment) {
        if self.id != 0 {
            hub().disarm(self.id);
            self.id = 0;
        }
        if let Some(side) = self.counted.take() {
            seg.signal(side)
                .async_waiters
                .fetch_sub(1, Ordering::Release);
        }
    }
}
