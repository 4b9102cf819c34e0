//! `signal::forward_os`: real OS signals sent with `kill(2)` arrive as deliveries, a
//! flood of one does not hide another, and dropping the guard restores the default.
//!
//! Signal dispositions are process-wide and tests run on parallel threads, so every test
//! that installs a handler does it in a child process of its own (this test binary
//! re-executed, see `shm_support`).
#![cfg(unix)]

mod shm_support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use conduit::signal::{SigSet, Signal, Target, forward_os};
use shm_support::*;

fn sig(n: u8) -> Signal {
    Signal::new(n).unwrap()
}

/// How long a child waits for a signal its parent sends before failing.
const WAIT: Duration = Duration::from_secs(30);

fn kill(pid: u32, os_signal: i32) {
    // SAFETY: sending a signal to our own child, which is alive (the caller has not
    // reaped it yet).
    assert_eq!(unsafe { libc::kill(pid as i32, os_signal) }, 0);
}

/// Every child process starts here and dispatches on its role.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        "deliver" => {
            let target = Target::new();
            let raiser = target.raiser();
            let rt = libc::SIGRTMIN() + 1;
            let _usr1 = forward_os(libc::SIGUSR1, &raiser, sig(10)).unwrap();
            let _rt = forward_os(rt, &raiser, sig(40)).unwrap();
            say("ready");
            let info = target.wait_timeout(WAIT).expect("SIGUSR1 never arrived");
            assert_eq!(info.signal(), sig(10));
            assert_eq!(info.raiser_id(), raiser.id());
            assert_eq!(info.pid(), std::process::id());
            say("usr1");
            let info = target.wait_timeout(WAIT).expect("SIGRTMIN+1 never arrived");
            assert_eq!(info.signal(), sig(40));
            assert_eq!(info.payload(), Some(rt as u64));
            say("rt");
        }
        "flood" => {
            let target = Target::new();
            let raiser = target.raiser();
            // Kept to the end of the process: the parent may still be sending SIGUSR1s
            // after the deliveries below, and dropping the guards would restore the
            // default action (terminate) for them.
            let usr1 = forward_os(libc::SIGUSR1, &raiser, sig(1)).unwrap();
            let usr2 = forward_os(libc::SIGUSR2, &raiser, sig(2)).unwrap();
            std::mem::forget((usr1, usr2));
            say("ready");
            let only_usr2: SigSet = [sig(2)].into_iter().collect();
            let info = target
                .wait_for_timeout(&only_usr2, WAIT)
                .expect("SIGUSR2 lost in the SIGUSR1 flood");
            assert_eq!(info.count(), 1);
            say("usr2");
            // The flood arrived too (the OS coalesces it, so at least once).
            let info = target.wait_timeout(WAIT).expect("no SIGUSR1 at all");
            assert_eq!(info.signal(), sig(1));
            assert!(info.count() >= 1);
            say("usr1");
        }
        "restore" => {
            let target = Target::new();
            let raiser = target.raiser();
            // Twice: the second forward re-arms the handler the first drop replaced.
            for round in 0..2 {
                let guard = forward_os(libc::SIGTERM, &raiser, sig(15)).unwrap();
                say(format!("forwarded {round}"));
                let info = target.wait_timeout(WAIT).expect("SIGTERM never arrived");
                assert_eq!(info.signal(), sig(15));
                say(format!("got {round}"));
                drop(guard);
            }
            say("dropped");
            // The next SIGTERM must end this process with its default action.
            hang();
        }
        "two_targets" => {
            let (a, b) = (Target::new(), Target::new());
            let ga = forward_os(libc::SIGHUP, &a.raiser(), sig(1)).unwrap();
            let _gb = forward_os(libc::SIGHUP, &b.raiser(), sig(3)).unwrap();
            say("ready");
            assert_eq!(a.wait_timeout(WAIT).unwrap().signal(), sig(1));
            assert_eq!(b.wait_timeout(WAIT).unwrap().signal(), sig(3));
            drop(ga);
            say("one left");
            // Still forwarded to `b` (and the process still survives SIGHUP).
            assert_eq!(b.wait_timeout(WAIT).unwrap().signal(), sig(3));
            say("b");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn os_signals_arrive_as_deliveries() {
    watchdog(|| {
        let child = Proc::spawn("deliver", &[]);
        child.expect("ready");
        kill(child.pid(), libc::SIGUSR1);
        child.expect("usr1");
        kill(child.pid(), libc::SIGRTMIN() + 1);
        child.expect("rt");
        child.success();
    });
}

#[test]
fn flood_of_usr1_does_not_hide_usr2() {
    watchdog(|| {
        let child = Proc::spawn("flood", &[]);
        child.expect("ready");
        // More than a pipe holds (64 KiB), had the handler written one byte per
        // delivery and the pipe carried the numbers.
        for _ in 0..100_000 {
            kill(child.pid(), libc::SIGUSR1);
        }
        kill(child.pid(), libc::SIGUSR2);
        for _ in 0..10_000 {
            kill(child.pid(), libc::SIGUSR1);
        }
        child.expect("usr2");
        child.expect("usr1");
        child.success();
    });
}

#[test]
fn dropping_the_guard_restores_the_default() {
    watchdog(|| {
        let child = Proc::spawn("restore", &[]);
        for round in 0..2 {
            child.expect(&format!("forwarded {round}"));
            kill(child.pid(), libc::SIGTERM);
            child.expect(&format!("got {round}"));
        }
        child.expect("dropped");
        kill(child.pid(), libc::SIGTERM);
        let (status, _) = child.finish();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    });
}

#[test]
fn one_os_signal_to_two_targets() {
    watchdog(|| {
        let child = Proc::spawn("two_targets", &[]);
        child.expect("ready");
        kill(child.pid(), libc::SIGHUP);
        child.expect("one left");
        kill(child.pid(), libc::SIGHUP);
        child.expect("b");
        child.success();
    });
}

// Refused before anything is installed, so it is safe in the test process itself.
#[test]
fn forbidden_signals_are_invalid_input() {
    let target = Target::new();
    let r = target.raiser();
    for s in [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        0,
        -1,
        65,
        32,
    ] {
        let err = forward_os(s, &r, sig(1)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "signal {s}");
    }
}
