//! loom models of the async waiter protocol (`chan::signal`) on the flavors that use it,
//! bounded and unbounded: arm, disarm and re-poll with another waker, and the waiter
//! counts after a disconnection with async (and blocking) waiters pending.
#![cfg(loom)]

use loom_tests::async_models::*;

fn cap1<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::bounded(1)
}

fn list<T>() -> (conduit::Sender<T>, conduit::Receiver<T>) {
    conduit::unbounded()
}

#[test]
fn bounded_arm_disarm_repoll() {
    arm_disarm_repoll(cap1);
}

#[test]
fn unbounded_arm_disarm_repoll() {
    arm_disarm_repoll(list);
}

#[test]
fn bounded_disconnect_with_pending_async_receivers() {
    disconnect_with_pending_async(cap1, Pending::Receivers);
}

#[test]
fn bounded_disconnect_with_pending_async_senders() {
    disconnect_with_pending_async(cap1, Pending::Senders { prefill: 1 });
}

// Unbounded senders never wait.
#[test]
fn unbounded_disconnect_with_pending_async_receivers() {
    disconnect_with_pending_async(list, Pending::Receivers);
}

#[test]
fn bounded_blocking_count_after_disconnect() {
    blocking_waiter_count_after_disconnect(cap1);
}

#[test]
fn unbounded_blocking_count_after_disconnect() {
    blocking_waiter_count_after_disconnect(list);
}
