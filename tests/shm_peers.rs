//! Peer liveness with real processes: a channel is one entry in `/dev/shm` however many
//! handle families of however many processes attach, and `shm::remove_stale` removes
//! only what it proves stale (never a channel with a peer moving in, nor a segment of
//! another layout version or with a corrupt header).
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use conduit::RecvTimeoutError;
use conduit::shm::{self, ByteSender, Receiver, Sender};
use shm_support::*;

/// A little more than `shm::remove_stale`'s grace period (5 s).
const PAST_GRACE: Duration = Duration::from_secs(6);

/// Every child process starts here and dispatches on its role.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let name = arg("name");
    match role.as_str() {
        "attach" => {
            // Several handle families and clones, then wait to be killed.
            let tx = Sender::<u64>::open(&name).unwrap();
            let tx2 = Sender::<u64>::open(&name).unwrap();
            let rx = Receiver::<u64>::open(&name).unwrap();
            let _clones = (tx.clone(), tx2.clone(), rx.clone());
            say("attached");
            hang();
        }
        "send_one" => {
            let tx = Sender::<u64>::open(&name).unwrap();
            tx.send(1).unwrap();
            say("sent");
            hang();
        }
        "lock_byte" => {
            // A peer that has taken its slot's lock and not yet marked itself LIVE.
            let _lock = lock_peer_byte(&name, num("slot") as usize);
            say("locked");
            hang();
        }
        other => panic!("unknown role {other}"),
    }
}

/// Handle families of this process and of a child, clones and both sides: the channel is
/// still exactly one entry in `/dev/shm`, also after the child is killed, and none after
/// the unlink. (Before version 4, every family added a `conduit-peer.<name>.<n>` lock
/// file: this test found 7 entries.)
#[test]
fn one_channel_is_one_shm_entry() {
    watchdog(|| {
        let name = Name::new("one-entry");
        let rx = Receiver::<u64>::create(&name, 8).unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        let _more = (
            Receiver::<u64>::open(&name).unwrap(),
            tx.clone(),
            rx.clone(),
        );
        let mut child = Proc::spawn("attach", &[("name", &name)]);
        child.expect("attached");
        assert_eq!(tx.sender_count(), 3, "families attached");
        assert_eq!(rx.receiver_count(), 3, "families attached");
        assert_eq!(shm_entries(&name), [format!("conduit.{}", &*name)]);

        // A byte channel too.
        let bytes = Name::new("one-entry-bytes");
        let btx = ByteSender::create(&bytes, 4).unwrap();
        let _brx = conduit::shm::ByteReceiver::open(&bytes).unwrap();
        let _btx2 = ByteSender::open(&bytes).unwrap();
        assert_eq!(btx.sender_count(), 2);
        assert_eq!(shm_entries(&bytes), [format!("conduit.{}", &*bytes)]);

        child.kill9();
        assert_eq!(shm_entries(&name), [format!("conduit.{}", &*name)]);
        shm::unlink(&name).unwrap();
        shm::unlink(&bytes).unwrap();
        assert_eq!(shm_entries(&name), Vec::<String>::new());
        assert_eq!(shm_entries(&bytes), Vec::<String>::new());
    });
}

/// After the name is unlinked, the processes still attached keep proving deaths: the
/// locks are on the file itself, which lives while mapped. A sender killed after the
/// unlink disconnects the receiver once its message is drained. (With lock files, the
/// unlink removed them and a probe counted every peer as alive from then on: this test
/// got `Timeout` instead of `Disconnected`.)
#[test]
fn deaths_are_noticed_after_unlink() {
    watchdog(|| {
        let name = Name::new("unlinked-death");
        let rx = Receiver::<u64>::create(&name, 4).unwrap();
        let mut child = Proc::spawn("send_one", &[("name", &name)]);
        child.expect("sent");
        shm::unlink(&name).unwrap();
        child.kill9();
        let step = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(step), Ok(1));
        assert_eq!(rx.recv_timeout(step), Err(RecvTimeoutError::Disconnected));
    });
}

/// Overwrites the `u32` at `offset` of the segment file of `name`.
fn write_u32(name: &str, offset: u64, value: u32) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/conduit.{name}"))
        .unwrap();
    file.write_all_at(&value.to_ne_bytes(), offset).unwrap();
}

/// `remove_stale` removes only what it proves stale. Past the grace period:
/// - a channel whose only peer holds its slot's lock but has not marked the slot LIVE
///   (an attach in progress, here a child that took the byte lock itself) survives, and
///   is removed once that child is killed;
/// - segments of another layout version (newer and older) and one with a corrupt header
///   survive, and opening them reports why;
/// - a channel whose only peer was killed with `kill -9` (its slot still marked LIVE) is
///   removed: the control that proves the grace period had passed.
///
/// On the code before this test, the first two kinds were removed: staleness was judged
/// from the slots marked LIVE only, and any `InvalidData` on open counted as stale (a
/// probe of LIVE slots only makes this test fail at "attaching").
#[test]
fn remove_stale_removes_only_proven_stale_channels() {
    watchdog(|| {
        let attaching = Name::new("stale-attaching");
        let newer = Name::new("stale-newer");
        let older = Name::new("stale-older");
        let corrupt = Name::new("stale-corrupt");
        let dead = Name::new("stale-dead");
        for name in [&attaching, &newer, &older, &corrupt, &dead] {
            // Created and detached: no peer attached, no lock held.
            drop(Sender::<u64>::create(name, 4).unwrap());
        }
        let mut locker = Proc::spawn("lock_byte", &[("name", &attaching), ("slot", "5")]);
        locker.expect("locked");
        write_u32(&newer, 8, 5); // layout version
        write_u32(&older, 8, 3);
        write_u32(&corrupt, 16, 3); // capacity: not a power of two
        let mut victim = Proc::spawn("attach", &[("name", &dead)]);
        victim.expect("attached");
        victim.kill9();

        wait_older_than(&[&attaching, &newer, &older, &corrupt, &dead], PAST_GRACE);
        let removed = shm::remove_stale().unwrap();
        assert!(
            removed.contains(&dead.0),
            "the dead peer's channel: {removed:?}"
        );
        let present = shm::list().unwrap();
        for survivor in [&attaching, &newer, &older, &corrupt] {
            assert!(!removed.contains(&survivor.0), "{} removed", &**survivor);
            assert!(present.contains(&survivor.0), "{} gone", &**survivor);
        }
        assert!(!present.contains(&dead.0));

        let err = |name: &str| Sender::<u64>::open(name).unwrap_err();
        for (name, needle) in [
            (&newer, "layout version mismatch: segment has 5"),
            (&older, "layout version mismatch: segment has 3"),
            (&corrupt, "capacity"),
        ] {
            let e = err(name);
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }

        // Once the attaching peer is gone, nothing holds that channel.
        locker.kill9();
        let removed = shm::remove_stale().unwrap();
        assert!(removed.contains(&attaching.0), "{removed:?}");
    });
}
