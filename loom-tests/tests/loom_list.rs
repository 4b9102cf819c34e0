//! loom models of the unbounded (block list) flavor; blocks hold 3 messages under loom, so models cross block boundaries.
#![cfg(loom)]

use loom_tests::*;

fn list<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::unbounded()
}

#[test]
fn send_recv_race() {
    two_senders_one_receiver(list, Wait::Spin);
}

#[test]
fn receivers_race() {
    one_sender_two_receivers(list, Wait::Spin);
}

// Two receivers parked at once: each send must wake one of them (the waiter count's
// claim/withdraw accounting).
#[test]
fn parked_receivers_each_woken() {
    one_sender_two_receivers(list, Wait::Block);
}

#[test]
fn last_sender_drop_wakes_parked_receiver() {
    last_sender_drop_wakes_receiver(list, false);
    last_sender_drop_wakes_receiver(list, true);
}

#[test]
fn queued_across_blocks_dropped_once() {
    queued_messages_dropped_once(list, 3);
}

#[test]
fn queued_dropped_once() {
    queued_messages_dropped_once(list, 1);
}

#[test]
fn cancelled_recv_wakeup_passes_on() {
    cancelled_recv_passes_wakeup(list);
}
