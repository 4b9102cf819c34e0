//! Blocking waits: spin briefly, then sleep on the side's futex word in slices.

use std::time::{Duration, Instant};

use super::futex::Woke;
use super::segment::{Segment, Side};
use crate::sync::QuickBackoff;

/// The longest a blocking waiter sleeps before re-checking the ring and running
/// maintenance (see [`super::peers`] for the resulting bounds).
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// How many times a waiter polls with a single spin-loop hint between polls before
/// backing off exponentially ([`QuickBackoff`]): a peer's commit is then seen within
/// about one hint for the first few microseconds of a wait, which is what a round trip
/// between two processes spends; an exponential backoff from the start would add, per
/// hop, a delay of the order of the time already waited.
const QUICK_POLLS: u32 = 64;

/// Runs `attempt` until it returns `Some` or `deadline` passes (`None`). `side` is the
/// waiter's side: senders sleep on the send words, receivers on the receive words.
///
/// Every loop here is bounded by the deadline: it is checked after each attempt that
/// fails, in the spin as in the sleeps. Each attempt is bounded in turn (the claim loops
/// and retries of `chan::ring` and `shm::protocol` give up after a fixed number of failed
/// rounds), so a timed wait returns at most one attempt after its deadline however a
/// peer moves the positions, and a wait without a deadline keeps coming back here, where
/// it sleeps and runs maintenance, rather than spinning inside one attempt.
pub(crate) fn block<R>(
    seg: &Segment,
    side: Side,
    deadline: Option<Instant>,
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
    let signal = seg.signal(side);
    loop {
        seg.maintain_if_due();
        let slice = match deadline {
            None => SLICE,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                (d - now).min(SLICE)
            }
        };
        let seen = signal.register();
        if let Some(r) = attempt() {
            signal.unregister();
            return Some(r);
        }
        let woke = signal.sleep(seen, slice);
        signal.unregister();
        if let Some(r) = attempt() {
            return Some(r);
        }
        if woke == Woke::TimedOut && deadline.is_none_or(|d| Instant::now() < d) {
            // A whole slice without news: a peer may have died.
            seg.maintain_if_due();
        }
    }
}
