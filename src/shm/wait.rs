//! Blocking waits: spin briefly, then sleep on the side's futex word in slices; and the
//! receive check that tells an empty ring from a disconnected one.

use std::time::{Duration, Instant};

use super::futex::{SideSignal, Woke};
use crate::chan::ring::Stall;
use crate::error::TryRecvError;
use crate::sync::{Deadline, QuickBackoff};

/// The longest a blocking waiter sleeps before re-checking the ring and running
/// maintenance (see [`super::peers`] for the resulting bounds).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// How many times a waiter polls with a single spin-loop hint between polls before
/// backing off exponentially ([`QuickBackoff`]): a peer's commit is then seen within
/// about one hint for the first few microseconds of a wait, which is what a round trip
/// between two processes spends; an exponential backoff from the start would add, per
/// hop, a delay of the order of the time already waited.
pub(crate) const QUICK_POLLS: u32 = 64;

/// Runs `attempt` until it returns `Some` or `deadline` passes (`None`), sleeping on
/// `signal`, the waiter's side's words (senders sleep on the send words, receivers on the
/// receive words). `heavy`: the other side publishes or commits with light fences (a
/// single-producer channel's, see `super::asym`), so each registration issues a heavy
/// fence before its re-check; were that to fail, the sleep is cut to [`SHORT_SLICE`].
/// `maintain` runs peer maintenance when due (a dead peer's claims are settled there).
/// Under loom (`conduit::__loom_shm`) this same loop runs with the futex
/// modelled (`SideSignal::sleep_model`).
///
/// Every loop here is bounded by the deadline: it is checked after each attempt that
/// fails, in the spin as in the sleeps. Each attempt is bounded in turn (the claim loops
/// and retries of `chan::ring` and `shm::protocol` give up after a fixed number of failed
/// rounds), so a timed wait returns at most one attempt after its deadline however a
/// peer moves the positions, and a wait without a deadline keeps coming back here, where
/// it sleeps and runs maintenance, rather than spinning inside one attempt.
pub(crate) fn block<R>(
    signal: &SideSignal,
    heavy: bool,
    deadline: Option<Instant>,
    mut maintain: impl FnMut(),
    mut may_proceed: impl FnMut() -> bool,
    mut attempt: impl FnMut() -> Option<R>,
) -> Option<R> {
    let mut spin = QuickBackoff::new(QUICK_POLLS);
    'spin: loop {
        if let Some(r) = attempt() {
            return Some(r);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        loop {
            if spin.is_completed() {
                break 'spin;
            }
            spin.snooze();
            if may_proceed() {
                break;
            }
        }
    }
    let mut deadline = Deadline::new(deadline);
    loop {
        maintain();
        if deadline.passed() {
            return None;
        }
        let seen = signal.register();
        // Sync point: the slow side of the asymmetric fence (`asym`), between the
        // registration and the re-check.
        let fenced = !heavy || super::asym::heavy();
        if let Some(r) = attempt() {
            signal.unregister();
            return Some(r);
        }
        let woke = sleep(signal, seen, &mut deadline, fenced);
        signal.unregister();
        // Always one attempt after a sleep, however it ended: a wake-up this waiter took
        // is acted on before it can give up.
        if let Some(r) = attempt() {
            return Some(r);
        }
        if woke == Woke::TimedOut && !deadline.passed() {
            // A whole slice without news: a peer may have died.
            maintain();
        }
    }
}

/// How long a waiter sleeps at most when its heavy fence failed (see [`block`]): a
/// wake-up it may have missed is then late by at most this much.
const SHORT_SLICE: Duration = Duration::from_millis(1);

/// One sleep on `signal` while its sequence holds `seen`: at most a [`SLICE`] (a
/// [`SHORT_SLICE`] unless `fenced`), and not past the deadline.
fn sleep(signal: &SideSignal, seen: u32, deadline: &mut Deadline, fenced: bool) -> Woke {
    #[cfg(not(loom))]
    {
        let longest = if fenced { SLICE } else { SHORT_SLICE };
        let slice = deadline.at().map_or(longest, |d| {
            d.saturating_duration_since(Instant::now()).min(longest)
        });
        signal.sleep(seen, slice)
    }
    #[cfg(loom)]
    {
        debug_assert!(fenced, "the modelled heavy fence never fails");
        signal.sleep_model(seen, deadline.model())
    }
}

/// A non-blocking receive's outcome from `recv(peek)`, one claim-read-free attempt (see
/// `Endpoint::recv_once`), and `senders_gone`, whether every sender has detached (after
/// maintenance, if the caller runs it).
///
/// A ring found empty (or its slot claimed) is only reported disconnected after a second
/// look made once every sender is known gone: a sender may have committed its last
/// message just before detaching, and the detach (a SeqCst store, read with Acquire by
/// `senders_gone`) makes that commit visible to the second look. The second look does
/// not peek: a claim that a dead sender left must be told from an empty ring (it is
/// reported as empty until the dead sender's reaper has reclaimed it, and the reaper
/// wakes the waiters when it has).
#[inline]
pub(crate) fn try_recv<R>(
    mut recv: impl FnMut(bool) -> Result<R, Stall>,
    senders_gone: impl FnOnce() -> bool,
) -> Result<R, TryRecvError> {
    match recv(true) {
        Ok(msg) => Ok(msg),
        Err(Stall::Corrupt | Stall::Disconnected) => Err(TryRecvError::Disconnected),
        Err(Stall::Blocked | Stall::Busy) => {
            if !senders_gone() {
                return Err(TryRecvError::Empty);
            }
            match recv(false) {
                Ok(msg) => Ok(msg),
                Err(Stall::Busy) => Err(TryRecvError::Empty),
                Err(_) => Err(TryRecvError::Disconnected),
            }
        }
    }
}
