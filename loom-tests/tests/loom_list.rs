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

// Seven messages span three blocks: the first, emptied by the receiver(s), comes back
// as the third while they race. A recycled block that kept a slot's old state shows up
// only with two preemptions (one to let the receiver empty the first block early, one
// between a claim and its write), so the one-receiver model searches that deep.
#[test]
fn recycled_blocks_stream() {
    stream(list, 7, 1, 2);
}

// With two receivers, the receiver of a block's last slot can finish while the other is
// still copying out an earlier slot: the block waits among the retired ones until a
// later retirement (or the channel's drop) finds it read. loom's cell tracking fails the
// model if a block is reused while that copy runs.
#[test]
fn recycled_blocks_two_receivers() {
    stream(list, 7, 2, 1);
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

#[test]
fn async_recv_woken() {
    async_recv_woken_by_send(list);
    async_recv_woken_by_disconnect(list);
}

#[test]
fn async_and_blocking_receivers_both_woken() {
    async_and_blocking_receivers(list);
}

#[test]
fn two_async_receivers_both_woken() {
    two_async_receivers(list);
}

#[test]
fn dropped_recv_wakeup_passes_to_sleeper() {
    dropped_recv_passes_wakeup_to_sleeper(list);
}
