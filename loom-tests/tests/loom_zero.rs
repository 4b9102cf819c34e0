//! loom models of the rendezvous flavor.
#![cfg(loom)]

use loom_tests::*;

fn zero<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::rendezvous()
}

#[test]
fn send_recv_race() {
    two_senders_one_receiver(zero, Wait::Block);
}

#[test]
fn receivers_race() {
    one_sender_two_receivers(zero, Wait::Block);
}

#[test]
fn last_sender_drop_wakes_parked_receiver() {
    last_sender_drop_wakes_receiver(zero, false);
}

#[test]
fn last_receiver_drop_wakes_blocked_sender() {
    last_receiver_drop_wakes_sender(zero, 0);
}

#[test]
fn blocked_sender_woken() {
    blocked_sender_woken_by_recv(zero, 0);
}

#[test]
fn cancelled_recv_wakeup_passes_on() {
    cancelled_recv_passes_wakeup(zero);
}
