//! Opening, creating and validating shm channels: names, modes, existence, and every
//! kind of mismatch or damage a segment can show at open time.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;

use conduit::shm::{self, ByteReceiver, ByteSender, Options, Receiver, Sender};
use shm_support::*;

/// Every test binary defines the child entry; this one spawns no children.
#[test]
fn child_entry() {}

fn path(name: &str) -> String {
    format!("/dev/shm/conduit.{name}")
}

fn invalid_data(err: std::io::Error, needle: &str) {
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn bad_names_are_invalid_input() {
    watchdog(|| {
        let long = "n".repeat(201);
        for bad in [
            "", ".", "..", "a/b", "/a", "a b", "tab\t", "é", "nul\0", "x:y", &long,
        ] {
            assert_eq!(
                Sender::<u8>::create(bad, 1).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
            assert_eq!(
                Receiver::<u8>::open(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                ByteSender::open(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                shm::unlink(bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    });
}

#[test]
fn missing_is_not_found() {
    watchdog(|| {
        let name = Name::new("missing");
        assert_eq!(
            Sender::<u8>::open(&name).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            ByteReceiver::open(&name).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(shm::unlink(&name).unwrap_err().kind(), ErrorKind::NotFound);
    });
}

#[test]
fn create_new_is_exclusive_and_create_opens() {
    watchdog(|| {
        let name = Name::new("exists");
        let a = Sender::<u32>::create(&name, 4).unwrap();
        let err = Receiver::<u32>::create(&name, 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let b = Receiver::<u32>::with(&name, &Options::new().create(true)).unwrap();
        a.send(5).unwrap();
        assert_eq!(b.recv(), Ok(5));
    });
}

#[test]
fn default_mode_is_0600_and_mode_is_honoured() {
    watchdog(|| {
        let name = Name::new("mode");
        let _tx = Sender::<u8>::create(&name, 1).unwrap();
        let mode = std::fs::metadata(path(&name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let other = Name::new("mode640");
        let _rx =
            Receiver::<u8>::with(&other, &Options::new().mode(0o640).create_new(true)).unwrap();
        let mode = std::fs::metadata(path(&other))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    });
}

#[test]
fn wrong_type_is_invalid_data() {
    watchdog(|| {
        let name = Name::new("type");
        let _tx = Sender::<u32>::create(&name, 4).unwrap();
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "type mismatch");
        invalid_data(
            Receiver::<[u16; 2]>::open(&name).unwrap_err(),
            "type mismatch",
        );
        // Same size and alignment, another type: told apart by the type name.
        invalid_data(Receiver::<i32>::open(&name).unwrap_err(), "type mismatch");
        invalid_data(ByteReceiver::open(&name).unwrap_err(), "kind mismatch");
        Receiver::<u32>::open(&name).unwrap();

        let bytes = Name::new("kind");
        let _b = ByteSender::create(&bytes, 4).unwrap();
        invalid_data(Receiver::<u32>::open(&bytes).unwrap_err(), "kind mismatch");
    });
}

#[test]
fn wrong_capacity_or_max_message_is_invalid_data() {
    watchdog(|| {
        let name = Name::new("cap");
        let _tx = Sender::<u64>::create(&name, 64).unwrap();
        let err = Receiver::<u64>::with(&name, &Options::new().capacity(128)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "capacity mismatch: segment has 64, expected 128"
        );
        // Rounded up before comparing.
        Receiver::<u64>::with(&name, &Options::new().capacity(33)).unwrap();

        let bytes = Name::new("maxmsg");
        let opts = Options::new().max_message(100).create_new(true);
        let _b = ByteSender::with(&bytes, &opts).unwrap();
        let err = ByteReceiver::with(&bytes, &Options::new().max_message(200)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_message mismatch: segment has 100, expected 200"
        );
        assert_eq!(ByteReceiver::open(&bytes).unwrap().max_message(), 100);
    });
}

#[test]
fn out_of_range_options_are_invalid_input() {
    watchdog(|| {
        let name = Name::new("range");
        for opts in [
            Options::new().capacity(0).create_new(true),
            Options::new().capacity(usize::MAX).create_new(true),
            Options::new().max_message(0).create_new(true),
            Options::new().max_message(1 << 40).create_new(true),
        ] {
            let err = ByteSender::with(&name, &opts).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{opts:?}");
        }
        assert!(shm::list().unwrap().iter().all(|n| n != &*name));
    });
}

/// Creates a channel and detaches, leaving the segment for the test to damage.
fn left_behind(tag: &str) -> Name {
    let name = Name::new(tag);
    drop(Sender::<u64>::create(&name, 8).unwrap());
    name
}

#[test]
fn truncated_or_extended_file_is_invalid_data() {
    watchdog(|| {
        let name = left_behind("trunc");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path(&name))
            .unwrap();
        let full = file.metadata().unwrap().len();
        file.set_len(1000).unwrap();
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "size mismatch");
        file.set_len(full + 4096).unwrap();
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "size mismatch");
        file.set_len(full).unwrap();
        Receiver::<u64>::open(&name).unwrap();
        // Too short for a header: waited for (a creator may be initialising), then refused.
        file.set_len(0).unwrap();
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "not initialised");
    });
}

#[test]
fn bad_magic_or_header_is_invalid_data() {
    watchdog(|| {
        let name = left_behind("magic");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path(&name))
            .unwrap();
        let write_at = |file: &mut std::fs::File, offset: u64, bytes: &[u8]| {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(bytes).unwrap();
        };
        write_at(&mut file, 0, b"NOTMAGIC");
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "bad magic");
        write_at(&mut file, 0, b"CONDUIT\x01");
        Receiver::<u64>::open(&name).unwrap();
        let mut version = [0u8; 4];
        file.seek(SeekFrom::Start(8)).unwrap();
        file.read_exact(&mut version).unwrap();
        write_at(&mut file, 8, &7u32.to_ne_bytes()); // layout version
        invalid_data(
            Receiver::<u64>::open(&name).unwrap_err(),
            "layout version mismatch",
        );
        write_at(&mut file, 8, &version);
        write_at(&mut file, 24, &48u64.to_ne_bytes()); // slot size
        invalid_data(
            Receiver::<u64>::open(&name).unwrap_err(),
            "slot size mismatch",
        );
        write_at(&mut file, 24, &32u64.to_ne_bytes());
        write_at(&mut file, 16, &3u64.to_ne_bytes()); // capacity, not a power of two
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "invalid layout");
        write_at(&mut file, 16, &8u64.to_ne_bytes());
        Receiver::<u64>::open(&name).unwrap();
    });
}

#[test]
fn zero_magic_is_waited_for_then_invalid_data() {
    watchdog(|| {
        // A creator that died before storing the magic leaves this behind.
        let name = left_behind("nomagic");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path(&name))
            .unwrap();
        file.write_all(&[0; 8]).unwrap();
        invalid_data(Receiver::<u64>::open(&name).unwrap_err(), "not initialised");
        // `unlink` is the way out.
        shm::unlink(&name).unwrap();
        Sender::<u64>::create(&name, 8).unwrap();
    });
}

#[test]
fn unlink_on_drop_only_for_the_creator() {
    watchdog(|| {
        let name = Name::new("uod");
        let opts = Options::new().create_new(true).unlink_on_drop(true);
        let creator = Receiver::<u8>::with(&name, &opts).unwrap();
        let opener = Sender::<u8>::with(&name, &Options::new().unlink_on_drop(true)).unwrap();
        drop(opener);
        assert!(shm::list().unwrap().contains(&name.0));
        let clone = creator.clone();
        drop(creator);
        assert!(
            shm::list().unwrap().contains(&name.0),
            "a clone is still alive"
        );
        drop(clone);
        assert!(!shm::list().unwrap().contains(&name.0));
        assert!(shm_entries(&name).is_empty(), "{:?}", shm_entries(&name));
    });
}

#[test]
fn unlink_while_open_keeps_the_mapping() {
    watchdog(|| {
        let name = Name::new("unlinked");
        let tx = Sender::<u16>::create(&name, 2).unwrap();
        let rx = Receiver::<u16>::open(&name).unwrap();
        shm::unlink(&name).unwrap();
        tx.send(3).unwrap();
        assert_eq!(rx.recv(), Ok(3));
        // The name is free for a new channel.
        let fresh = Sender::<u16>::create(&name, 4).unwrap();
        assert_eq!(fresh.capacity(), 4);
        assert_eq!(fresh.receiver_count(), 0);
    });
}

#[test]
fn list_and_remove_stale_keep_live_channels() {
    watchdog(|| {
        let name = Name::new("live");
        let _rx = Receiver::<u8>::create(&name, 1).unwrap();
        assert!(shm::list().unwrap().contains(&name.0));
        let removed = shm::remove_stale().unwrap();
        assert!(!removed.contains(&name.0));
        assert!(shm::list().unwrap().contains(&name.0));
    });
}

#[test]
fn handles_are_debug_clone_send_sync() {
    watchdog(|| {
        fn check<T: Clone + Send + Sync + std::fmt::Debug>() {}
        check::<Sender<u8>>();
        check::<Receiver<[u64; 4]>>();
        check::<ByteSender>();
        check::<ByteReceiver>();
        check::<Options>();
        let name = Name::new("debug");
        let tx = Sender::<u8>::create(&name, 1).unwrap();
        assert!(format!("{tx:?}").contains(&name.0));
    });
}
