//! loom models of the bounded (ring) flavor.
#![cfg(loom)]

use loom_tests::*;

fn cap1<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::bounded(1)
}

fn cap2<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::bounded(2)
}

// Three messages through two slots: the senders' claims wrap around the ring.
#[test]
fn send_recv_race() {
    two_senders_one_receiver(cap2, Wait::Spin);
}

#[test]
fn receivers_race() {
    one_sender_two_receivers(cap1, Wait::Spin);
}

// Two receivers parked at once: each send must wake one of them (the waiter count's
// claim/withdraw accounting).
#[test]
fn parked_receivers_each_woken() {
    one_sender_two_receivers(cap1, Wait::Block);
}

#[test]
fn last_sender_drop_wakes_parked_receiver() {
    last_sender_drop_wakes_receiver(cap1, false);
    last_sender_drop_wakes_receiver(cap1, true);
}

#[test]
fn last_receiver_drop_wakes_blocked_sender() {
    last_receiver_drop_wakes_sender(cap1, 1);
}

#[test]
fn blocked_sender_woken() {
    blocked_sender_woken_by_recv(cap1, 1);
}

#[test]
fn queued_dropped_once() {
    queued_messages_dropped_once(cap2, 1);
}

#[test]
fn cancelled_recv_wakeup_passes_on() {
    cancelled_recv_passes_wakeup(cap1);
}

#[test]
fn async_recv_woken() {
    async_recv_woken_by_send(cap1);
    async_recv_woken_by_disconnect(cap1);
}

#[test]
fn async_send_woken() {
    async_send_woken_by_recv(cap1, 1);
}

#[test]
fn async_and_blocking_receivers_both_woken() {
    async_and_blocking_receivers(cap1);
}

#[test]
fn two_async_receivers_both_woken() {
    two_async_receivers(cap1);
}

#[test]
fn dropped_recv_wakeup_passes_to_sleeper() {
    dropped_recv_passes_wakeup_to_sleeper(cap1);
}
