//! Payloads of every length go through a shared-memory channel intact: byte messages of
//! each length from 0 to `max_message` (multiples of 8 and not, each after a longer one
//! in the same slot), and typed payloads whose size is not a multiple of 8. The copies
//! move whole 8-byte words only (see `shm::ring`); these tests check that the padding
//! of a short last word never leaks into a message.
#![cfg(all(unix, target_pointer_width = "64"))]

mod shm_support;

use std::time::Duration;

use conduit::shm::{ByteReceiver, ByteSender, Options, Receiver, Sender};
use shm_support::*;

/// Every test binary defines the child entry; this one spawns no children.
#[test]
fn child_entry() {}

#[test]
fn byte_messages_of_every_length_round_trip() {
    watchdog(|| {
        for max in [1, 7, 8, 13, 40, 64] {
            let name = Name::new("payload-bytes");
            let opts = Options::new().capacity(2).max_message(max).create_new(true);
            let rx = ByteReceiver::with(&name, &opts).unwrap();
            let tx = ByteSender::open(&name).unwrap();
            let mut buf = vec![0; max];
            for len in 0..=max {
                let msg: Vec<u8> = (0..len).map(|i| (len * 31 + i) as u8 | 1).collect();
                // A longer message of other bytes first, through both slots, so that each
                // slot held one before.
                for _ in 0..2 {
                    tx.send(&vec![0xee; max]).unwrap();
                    assert_eq!(rx.recv().unwrap(), vec![0xee; max]);
                }
                tx.send(&msg).unwrap();
                tx.try_send(&msg).unwrap();
                assert_eq!(rx.try_recv().unwrap(), msg, "max {max}, len {len}");
                assert_eq!(rx.recv_into(&mut buf).unwrap(), len);
                assert_eq!(buf[..len], msg[..], "max {max}, len {len}");
                tx.send_timeout(&msg, Duration::from_secs(10)).unwrap();
                assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), msg);
            }
            let err = tx.try_send(&vec![0; max + 1]).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        }
    });
}

#[test]
fn typed_payloads_of_odd_sizes_round_trip() {
    fn check<T: conduit::shm::ShmSafe + PartialEq + std::fmt::Debug>(values: [T; 3]) {
        let name = Name::new("payload-typed");
        let rx = Receiver::<T>::create(&name, 2).unwrap();
        let tx = Sender::<T>::open(&name).unwrap();
        for _ in 0..3 {
            for v in values {
                tx.send(v).unwrap();
                assert_eq!(rx.recv(), Ok(v));
            }
        }
    }
    watchdog(|| {
        check([1u8, 0xff, 7]);
        check([[1u8, 2, 3], [0xff; 3], [4, 5, 6]]);
        check([[1u16; 7], [0xffff; 7], [3; 7]]);
        check([[1u32; 5], [u32::MAX; 5], [9; 5]]);
        check([[1u8; 13], [0xff; 13], [2; 13]]);
        check([u64::MAX, 0, 1]);
    });
}
