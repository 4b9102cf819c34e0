//! loom models of the in-process mailbox: selections racing for messages, close racing
//! receive, a request's reply racing the requester's timeout, the reply slot, and the
//! lock-free inbox (an `Any` pop racing a move aside, a lock-free send racing a
//! registration, close racing lock-free sends, drops of queued messages, a sender on a
//! full mailbox racing the receive that frees its place).
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use conduit::mailbox::{Mailbox, Options, PostOffice, RequestError, Select};
use loom::thread;

/// Runs a model with a branch budget large enough for the waiting machinery.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    builder.check(f);
}

fn open(po: &PostOffice, name: &str) -> Mailbox<u32> {
    po.open_with(name, &Options::new().capacity(4)).unwrap()
}

/// A receiver selecting `Any` and one selecting `Tag(1)` race for three queued messages,
/// tags 1, 2, 1: the `Any` receive (lock-free while nothing is aside, under the lock
/// once the selective receive moved the inbox aside) races the move aside. Whichever
/// goes first takes its oldest: `Any` gets 10 and `Tag(1)` then 11, or `Tag(1)` gets 10
/// and `Any` then 20 (never 11 while 20 is older, never a message twice).
#[test]
fn select_any_races_select_tag() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "m");
        let any = open(&po, "m");
        let tag1 = open(&po, "m");
        tx.send_tagged(1, 10).unwrap();
        tx.send_tagged(2, 20).unwrap();
        tx.send_tagged(1, 11).unwrap();
        let a = thread::spawn(move || any.recv().unwrap().into_body());
        let got_tag = tag1.recv_select(Select::Tag(1)).unwrap().into_body();
        let got_any = a.join().unwrap();
        assert!(
            (got_any, got_tag) == (10, 11) || (got_any, got_tag) == (20, 10),
            "{got_any} {got_tag}"
        );
    });
}

/// A blocked `Tag(1)` receiver, lock-free sends of tags 2 and 1, then an `Any` receive
/// by the sender: the send of 20 must not wake the `Tag(1)` receiver for nothing and
/// leave it asleep, the send of 10 must reach it (aimed wake-up or its re-check after
/// registering), and the `Any` receive (lock-free, or under the lock once the selective
/// receive moved the inbox aside) takes the oldest, 20, never 10 while 20 is queued.
/// With [`select_any_races_select_tag`], [`tag_receive_races_woken_any_receiver`],
/// [`any_and_tag_receivers_share_queued_and_sent`] and
/// [`sends_wake_the_matching_one_of_two_selections`] this covers the race of the
/// former three-thread model (both selections blocked, three sends), whose search was
/// too large for a preemption bound above 1.
#[test]
fn any_receive_races_blocked_tag_receiver() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "m");
        let tag1 = open(&po, "m");
        let b = thread::spawn(move || tag1.recv_select(Select::Tag(1)).unwrap().into_body());
        tx.send_tagged(2, 20).unwrap();
        tx.send_tagged(1, 10).unwrap();
        assert_eq!(tx.recv().unwrap().into_body(), 20);
        assert_eq!(b.join().unwrap(), 10);
    });
}

/// A blocked `Any` receiver, lock-free sends of tags 2 and 1, then a `Tag(1)` receive by
/// the sender: the first send must wake the `Any` receiver (it takes 20, the oldest,
/// lock-free or from the messages the selective receive moved aside), and the
/// `Tag(1)` receive takes 10.
#[test]
fn tag_receive_races_woken_any_receiver() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "m");
        let any = open(&po, "m");
        let a = thread::spawn(move || any.recv().unwrap().into_body());
        tx.send_tagged(2, 20).unwrap();
        tx.send_tagged(1, 10).unwrap();
        assert_eq!(tx.recv_select(Select::Tag(1)).unwrap().into_body(), 10);
        assert_eq!(a.join().unwrap(), 20);
    });
}

/// Two receivers selecting different tags are both registered when the messages come:
/// each lock-free send must aim its wake-up at the receiver its message is for (a
/// wake-up of the other would be lost in its re-check), and neither sleeps through its
/// message. The three-thread case the two-thread models above cannot reach: the aimed
/// wake-up choosing among registered selections.
///
/// A race model at bound 3 (`LOOM_RACE_PREEMPTIONS` overrides it; 3 takes about 4 s,
/// 4 about 33 s, 6 over 100 s).
#[test]
fn sends_wake_the_matching_one_of_two_selections() {
    loom_tests::race_model_bounded(3, || {
        let po = PostOffice::new();
        let tx = open(&po, "m");
        let (r1, r2) = (open(&po, "m"), open(&po, "m"));
        let a = thread::spawn(move || r1.recv_select(Select::Tag(1)).unwrap().into_body());
        let b = thread::spawn(move || r2.recv_select(Select::Tag(2)).unwrap().into_body());
        tx.send_tagged(2, 20).unwrap();
        tx.send_tagged(1, 10).unwrap();
        assert_eq!((a.join().unwrap(), b.join().unwrap()), (10, 20));
    });
}

/// One tag-1 message queued, receivers selecting `Any` and `Tag(1)`, and one more tag-1
/// message sent: each receiver gets one of them, never both the same one, and the
/// `Tag(1)` receive, when `Any` took the first, is woken for the second (by the send or
/// by a pass-on) while the `Any` receive may be registered too (in the `Any` receivers'
/// queue, which the send notifies apart).
///
/// Three threads, but one send. A race model at bound 5 (`LOOM_RACE_PREEMPTIONS`
/// overrides it): 5 takes about 18 s, 4 about 3 s, 6 about 100 s.
#[test]
fn any_and_tag_receivers_share_queued_and_sent() {
    loom_tests::race_model_bounded(5, || {
        let po = PostOffice::new();
        let tx = open(&po, "m");
        let any = open(&po, "m");
        let tag1 = open(&po, "m");
        tx.send_tagged(1, 10).unwrap();
        let a = thread::spawn(move || any.recv().unwrap().into_body());
        let b = thread::spawn(move || tag1.recv_select(Select::Tag(1)).unwrap().into_body());
        tx.send_tagged(1, 11).unwrap();
        let mut got = [a.join().unwrap(), b.join().unwrap()];
        got.sort_unstable();
        assert_eq!(got, [10, 11]);
    });
}

/// `close` races a blocked selective receive and a queued message: the receiver takes
/// the message if it matches, and otherwise wakes with `Disconnected`; never both
/// missed (hang) nor taken twice.
#[test]
fn close_races_receive() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "c");
        let rx = open(&po, "c");
        let r = thread::spawn(move || {
            let mut got = vec![];
            while let Ok(env) = rx.recv_select(Select::TagAtMost(5)) {
                got.push(env.into_body());
            }
            got
        });
        tx.send_tagged(3, 1).unwrap();
        assert!(po.close("c"));
        assert!(tx.send(2).is_err());
        assert_eq!(r.join().unwrap(), [1]);
    });
}

/// A request with a zero timeout (the requester gives up at its first look) races the
/// reply: the requester gets the reply or `Timeout(None)`, and in the second case the
/// replier gets its value back; nothing hangs or is lost.
#[test]
fn reply_races_requester_timeout() {
    model(|| {
        let po = PostOffice::new();
        let client = open(&po, "r");
        let server = open(&po, "r");
        server.try_recv().ok(); // attach
        let s = thread::spawn(move || {
            let mut env = server.recv().unwrap();
            let reply = env.take_reply::<u32>().unwrap();
            reply.reply(7)
        });
        let got = client.request_timeout::<u32>(1, Duration::ZERO);
        let replied = s.join().unwrap();
        match got {
            Ok(v) => {
                assert_eq!(v, 7);
                assert_eq!(replied, Ok(()));
            }
            Err(RequestError::Timeout(None)) => {
                // The reply lost the race: either handed back, or stored and then
                // dropped by the leaving requester (it came in between its last look
                // and its leaving, and the requester took it: then got would be Ok).
                assert_eq!(replied, Err(7));
            }
            Err(e) => panic!("{e:?}"),
        }
    });
}

/// The reply slot alone: a requester, blocking or async (its future polled by loom's
/// executor, the waker stored once and kept across polls: the replier wakes it by
/// reference while the requester may be looking at it), waits while the replier either
/// answers or drops the capability; the requester wakes with the value or
/// `Unanswered`.
#[test]
fn reply_slot_answer_or_drop() {
    for (answer, blocking) in [(true, true), (false, true), (true, false), (false, false)] {
        model(move || {
            let po = PostOffice::new();
            let client = open(&po, "s");
            let server = open(&po, "s");
            server.try_recv().ok();
            let s = thread::spawn(move || {
                let mut env = server.recv().unwrap();
                let reply = env.take_reply::<u32>().unwrap();
                if answer {
                    reply.reply(5).unwrap();
                }
            });
            let got = if blocking {
                client.request::<u32>(1)
            } else {
                loom::future::block_on(client.request_async::<u32>(1))
            };
            s.join().unwrap();
            let want = if answer {
                Ok(5)
            } else {
                Err(RequestError::Unanswered)
            };
            assert_eq!(got, want);
        });
    }
}

/// A request future polled once and dropped while the replier answers: the answer is
/// taken by the first poll, handed back to the replier, or dropped with the slot (loom
/// checks the slot's two cells' accesses for races).
#[test]
fn reply_slot_dropped_requester() {
    model(|| {
        let po = PostOffice::new();
        let client = open(&po, "q");
        let server = open(&po, "q");
        server.try_recv().ok();
        let s = thread::spawn(move || {
            let mut env = server.recv().unwrap();
            env.take_reply::<u32>().unwrap().reply(5)
        });
        let mut fut = client.request_async::<u32>(1);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = Pin::new(&mut fut).poll(&mut cx);
        drop(fut);
        let replied = s.join().unwrap();
        match first {
            Poll::Ready(r) => {
                assert_eq!(r, Ok(5));
                assert_eq!(replied, Ok(()));
            }
            Poll::Pending => assert!(matches!(replied, Ok(()) | Err(5)), "{replied:?}"),
        }
    });
}

/// An async `Any` receive is registered first and then dropped while an async `Tag(3)`
/// receive sleeps in another thread and a tag-3 message is sent: the `Tag(3)` receive
/// must wake however the send, its wake-up of the `Any` receive and that one's drop
/// interleave (the send aims at the selective receivers apart from waking an `Any` one;
/// loom reports a deadlock if the `Tag(3)` receive is left asleep).
#[test]
fn dropped_async_receive_passes_wakeup_to_other_selection() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "a");
        let rx = open(&po, "a");
        let rx3 = rx.clone();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut any = rx.recv_async();
        assert!(matches!(Pin::new(&mut any).poll(&mut cx), Poll::Pending));
        let b = thread::spawn(move || {
            loom::future::block_on(rx3.recv_select_async(Select::Tag(3)))
                .unwrap()
                .into_body()
        });
        tx.send_tagged(3, 30).unwrap();
        drop(any);
        assert_eq!(b.join().unwrap(), 30);
    });
}

/// A lock-free `Any` receive races a selective receive that moves the inbox aside.
/// Queued from one sender: 1 and 2 (tag 1), then 3 (tag 2). The `Tag(2)` receive moves
/// all three aside and takes 3; the `Any` receiver takes two messages and must get 1
/// then 2 (per-sender FIFO): a pop of 2 from the inbox while 1 had just been moved
/// aside would return them the other way round (the gate prevents it).
#[test]
fn any_pop_races_move_aside() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "g");
        let any = open(&po, "g");
        let sel = open(&po, "g");
        tx.send_tagged(1, 1).unwrap();
        tx.send_tagged(1, 2).unwrap();
        tx.send_tagged(2, 3).unwrap();
        let a = thread::spawn(move || {
            let first = any.try_recv().unwrap().into_body();
            let second = any.try_recv().unwrap().into_body();
            [first, second]
        });
        let got = sel.try_recv_select(Select::Tag(2)).unwrap().into_body();
        assert_eq!(got, 3);
        assert_eq!(a.join().unwrap(), [1, 2]);
    });
}

/// A lock-free send races a selective receiver that registers: either the receiver's
/// re-check after registering finds the message, or the send sees the registration and
/// wakes it (loom reports a deadlock if both miss).
#[test]
fn lock_free_send_races_selective_registration() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "w");
        let rx = open(&po, "w");
        let r = thread::spawn(move || rx.recv_select(Select::Tag(1)).unwrap().into_body());
        tx.send_tagged(1, 10).unwrap();
        assert_eq!(r.join().unwrap(), 10);
    });
}

/// Close races a lock-free send, and the closing thread then drains: the send either
/// fails (message handed back) or its message is received, even when its reservation
/// came before the close and its push after the receiver's first look (the receiver
/// waits for it instead of reporting `Disconnected` over it); never a hang.
#[test]
fn close_races_lock_free_send_and_receive() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "x");
        let rx = open(&po, "x");
        let s = thread::spawn(move || tx.send(1).is_ok());
        assert!(po.close("x"));
        let mut got = vec![];
        while let Ok(env) = rx.recv() {
            got.push(env.into_body());
        }
        let sent = s.join().unwrap();
        assert_eq!(got, if sent { vec![1] } else { vec![] });
    });
}

/// `Any` receivers wait on the mailbox's `Any` queue: a lock-free send races an async
/// `Any` receive that registers there (either its re-check finds the message or the send
/// sees it registered and wakes it), and a close races a blocking `Any` receive on the
/// then empty mailbox (either its re-check sees the `closed` flag or the close's
/// notification wakes it). Loom reports a deadlock if either is missed.
#[test]
fn any_receivers_woken_by_send_and_close() {
    model(|| {
        let po = PostOffice::new();
        let tx = open(&po, "w");
        let rx = open(&po, "w");
        let rx2 = rx.clone();
        let a = thread::spawn(move || loom::future::block_on(rx.recv_async()).unwrap().into_body());
        tx.send(7).unwrap();
        assert_eq!(a.join().unwrap(), 7);
        let b = thread::spawn(move || rx2.recv().is_err());
        assert!(po.close("w"));
        assert!(b.join().unwrap());
    });
}

/// A lock-free request races the detach of the last receiver: the requester gets
/// `NoResponders` (the detach came first) or `Unanswered` (its request was queued and
/// failed by the detach, or by the requester itself when it saw the detach after its
/// push); never a hang (loom reports the deadlock).
#[test]
fn request_races_last_receiver_detach() {
    model(|| {
        let po = PostOffice::new();
        let client = open(&po, "d");
        let server = open(&po, "d");
        assert!(server.try_recv().is_err()); // attached
        let a = thread::spawn(move || client.request::<u32>(1));
        drop(server);
        let r = a.join().unwrap();
        assert!(
            matches!(
                r,
                Err(RequestError::NoResponders(1) | RequestError::Unanswered)
            ),
            "{r:?}"
        );
    });
}

/// A message whose drop is counted.
struct Dropped(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Queued messages, some moved aside by a concurrent selective receive and some still
/// in the inbox, are each dropped exactly once when the mailbox goes.
#[test]
fn queued_messages_dropped_once() {
    model(|| {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let po = PostOffice::new();
        let tx: Mailbox<Dropped> = po.open_with("d", &Options::new().capacity(4)).unwrap();
        let rx: Mailbox<Dropped> = po.open_with("d", &Options::new()).unwrap();
        tx.send_tagged(1, Dropped(drops.clone())).unwrap();
        let r = thread::spawn(move || rx.try_recv_select(Select::Tag(9)).is_err());
        tx.send_tagged(2, Dropped(drops.clone())).unwrap();
        assert!(r.join().unwrap());
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(po.close("d"));
        drop(tx);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 2);
    });
}

/// A sender waiting on a full mailbox (capacity 1) races a selective receive that moves
/// the queued message aside and takes it: the place comes free with the take from the
/// index (under the lock), not with any claim at the inbox's front, and the sender must
/// see it, at its reservation or through a wake-up (loom reports a deadlock if both
/// miss); an `Any` receive then gets the second message.
#[test]
fn full_send_races_selective_take() {
    model(|| {
        let (_po, tx, rx) = full_mailbox(1);
        let t = thread::spawn(move || tx.send_tagged(2, 20).unwrap());
        assert_eq!(rx.recv_select(Select::Tag(1)).unwrap().into_body(), 10);
        t.join().unwrap();
        assert_eq!(rx.try_recv().unwrap().into_body(), 20);
    });
}

/// The same with a lock-free `Any` receive: its claim at the inbox's front is what frees
/// the place (the count of messages taken is derived from the front's position), and a
/// `try_send` after the receive returned must find the room.
#[test]
fn full_send_races_any_receive() {
    model(|| {
        let (_po, tx, rx) = full_mailbox(0);
        let tx2 = tx.clone();
        let t = thread::spawn(move || tx.send(20).unwrap());
        assert_eq!(rx.recv().unwrap().into_body(), 10);
        t.join().unwrap();
        assert_eq!(rx.recv().unwrap().into_body(), 20);
        tx2.try_send(30).unwrap();
    });
}

/// A mailbox of capacity 1 holding 10 (sent with `tag`), a sending and a receiving handle.
fn full_mailbox(tag: u64) -> (PostOffice, Mailbox<u32>, Mailbox<u32>) {
    let po = PostOffice::new();
    let tx = po.open_with("full", &Options::new().capacity(1)).unwrap();
    let rx = po.open("full").unwrap();
    tx.send_tagged(tag, 10).unwrap();
    (po, tx, rx)
}
