//! loom models of the rendezvous flavor's async operations: an async send's offer
//! (`poll_send`, `cancel_send`) dropped while a receiver takes it, and a disconnection
//! while async senders or receivers are pending.
#![cfg(loom)]

use loom_tests::async_models::*;

fn zero<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::rendezvous()
}

#[test]
fn dropped_send_delivered_once() {
    dropped_send_offer_delivered_once(zero);
}

#[test]
fn disconnect_with_pending_async_receivers() {
    disconnect_with_pending_async(zero, Pending::Receivers);
}

#[test]
fn disconnect_with_pending_async_senders() {
    disconnect_with_pending_async(zero, Pending::Senders { prefill: 0 });
}
