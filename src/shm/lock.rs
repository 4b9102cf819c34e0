//! Peer liveness locks: open-file-description byte-range locks on the segment file.
//!
//! # What is locked
//! The owner of peer slot `n` holds an exclusive lock on byte [`lock_byte`]`(n)` of the
//! segment file for as long as it is attached (see [`super::peers`]). The lock is an
//! *open-file-description* (OFD) lock, `fcntl(F_OFD_SETLK)`:
//! - it belongs to one open file description (one `shm_open`, and the descriptors
//!   duplicated or inherited from it), and the kernel drops it when the last of those
//!   descriptors closes: when the owner detaches, or when its process dies, however it
//!   dies (`kill -9` included);
//! - it covers a byte range, so every peer slot has a lock of its own on one file, and a
//!   channel is one object in `/dev/shm`;
//! - it is advisory: reads and writes through the mapping ignore it, so it does not
//!   matter that the locked bytes lie in the header;
//! - unlike a process-associated `fcntl` lock (`F_SETLK`), closing some *other*
//!   descriptor of the same file does not drop it.
//!
//! # Descriptions
//! Locks of one description never conflict with each other (a second lock through it
//! replaces the first on the bytes they share), and an unlock through it releases the
//! byte whichever thread locked it. Hence:
//! 1. each attached handle family maps the segment through a description of its own (its
//!    own `shm_open`: one [`super::segment::Segment`] per family) and locks its slot's
//!    byte through it, so that two families of one process exclude each other exactly as
//!    two processes do, and one family's detach cannot release another's lock;
//! 2. a probe (a reaper, [`super::remove_stale`]) uses a description opened for that
//!    probe alone ([`reopen`]) and closed after it, never a family's: through the
//!    family's description, the family's own lock would not conflict, and an unlock would
//!    drop it.
//!
//! `rustix` offers `flock` and whole-file process-associated `fcntl` locks but no OFD
//! byte-range lock, so the one call goes through `libc`.

use std::io;

use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::shm;

use super::header::MAX_PEERS;
use super::segment::stat_of;

/// The byte of the segment file whose lock is peer slot `n`'s (`n < MAX_PEERS`): byte `n`.
/// The locks of all slots are the bytes `0..MAX_PEERS`.
pub(crate) const fn lock_byte(n: usize) -> u64 {
    assert!(n < MAX_PEERS);
    n as u64
}

/// The byte of the segment file whose lock a single-producer channel's sender
/// (`send`) or receiver family holds while attached (see `super::spsc`): bytes
/// `MAX_PEERS` and `MAX_PEERS + 1`, after every peer slot's.
pub(crate) const fn side_lock_byte(send: bool) -> u64 {
    MAX_PEERS as u64 + if send { 0 } else { 1 }
}

/// The kind of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// A read lock: any number of descriptions may hold one at once (probes).
    Shared,
    /// A write lock: excludes every lock of other descriptions (owners).
    Exclusive,
}

/// A `struct flock` for `len` bytes from `start` with lock type `l_type`.
fn flock_for(start: u64, len: u64, l_type: libc::c_int) -> io::Result<libc::flock> {
    let range = |v: u64| {
        libc::off_t::try_from(v)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock range out of range"))
    };
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero bytes are a
    // valid value (and zero is what `F_OFD_SETLK` and `F_OFD_GETLK` require of `l_pid`
    // and of any field a platform adds).
    let mut fl: libc::flock = unsafe { core::mem::zeroed() };
    fl.l_type = l_type as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = range(start)?;
    fl.l_len = range(len)?;
    Ok(fl)
}

/// `fcntl(fd, F_OFD_SETLK)` on `len` bytes from `start` with lock type `l_type`.
fn set_lock(fd: BorrowedFd<'_>, start: u64, len: u64, l_type: libc::c_int) -> io::Result<()> {
    let fl = flock_for(start, len, l_type)?;
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call, and
    // `F_OFD_SETLK` only reads the `struct flock` that `&fl` points to, which lives
    // across the call. It cannot block.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Tries to lock `len` bytes from `start` through `fd`'s description, without waiting.
/// `Ok(false)` if another description holds a conflicting lock on any of them (then
/// nothing was locked).
pub(crate) fn try_lock(fd: BorrowedFd<'_>, start: u64, len: u64, kind: Lock) -> io::Result<bool> {
    let l_type = match kind {
        Lock::Shared => libc::F_RDLCK,
        Lock::Exclusive => libc::F_WRLCK,
    };
    match set_lock(fd, start, len, l_type) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a description other than `fd`'s holds any lock on `len` bytes from `start`
/// (`fcntl(F_OFD_GETLK)`): a query that takes nothing, so nobody can notice it. For
/// read-only inspection ([`super::inspect()`]); a reaper takes the lock instead, since it
/// must hold it while it acts.
pub(crate) fn is_held(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    // Asking about a write lock reports any conflicting lock, shared or exclusive.
    let mut fl = flock_for(start, len, libc::F_WRLCK)?;
    // SAFETY: `fd` is borrowed for the call; `F_OFD_GETLK` reads and writes the `flock`
    // that `&mut fl` points to, which lives across the call. It never blocks.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }
}

/// Releases whatever `fd`'s description holds on `len` bytes from `start`.
pub(crate) fn unlock(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    set_lock(fd, start, len, libc::F_UNLCK)
}

/// A new open file description of the file `fd` refers to (read-write), for a probe.
///
/// Opens `/proc/self/fd/<fd>`, which reaches the file even after its name was unlinked
/// or reused. Without `/proc`, opens `object` by name, and only if the name still refers
/// to the same file (same device and inode); otherwise fails with
/// [`io::ErrorKind::NotFound`].
pub(crate) fn reopen(fd: &OwnedFd, object: &str) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Ok(new) = rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
    {
        return Ok(new);
    }
    let new = shm::open(object, shm::OFlags::RDWR, Mode::empty())?;
    let (_, _, dev, ino) = stat_of(&new)?;
    let (_, _, want_dev, want_ino) = stat_of(fd)?;
    if (dev, ino) != (want_dev, want_ino) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{object} now names another file"),
        ));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    /// Two descriptions of one file exclude each other byte by byte; one description's
    /// own locks never conflict; closing a description drops its locks.
    #[test]
    #[cfg_attr(miri, ignore = "shm_open and fcntl")]
    fn descriptions_exclude_each_other_per_byte() {
        let object = format!("/unit-lock-{}", std::process::id());
        let a = shm::open(
            object.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .unwrap();
        let _ = shm::unlink(object.as_str());
        let b = reopen(&a, &object).unwrap();
        assert!(try_lock(a.as_fd(), 3, 1, Lock::Exclusive).unwrap());
        assert!(
            try_lock(a.as_fd(), 3, 1, Lock::Shared).unwrap(),
            "own lock conflicts"
        );
        assert!(try_lock(a.as_fd(), 3, 1, Lock::Exclusive).unwrap());
        assert!(
            !try_lock(b.as_fd(), 3, 1, Lock::Shared).unwrap(),
            "byte 3 is held"
        );
        assert!(
            !try_lock(b.as_fd(), 0, 8, Lock::Shared).unwrap(),
            "a range over byte 3"
        );
        assert!(
            try_lock(b.as_fd(), 4, 1, Lock::Exclusive).unwrap(),
            "byte 4 is free"
        );
        let c = reopen(&a, &object).unwrap();
        assert!(try_lock(c.as_fd(), 5, 1, Lock::Shared).unwrap());
        drop(a);
        assert!(
            try_lock(c.as_fd(), 3, 1, Lock::Exclusive).unwrap(),
            "closing drops it"
        );
        unlock(c.as_fd(), 3, 1).unwrap();
        assert!(
            !try_lock(c.as_fd(), 4, 1, Lock::Shared).unwrap(),
            "b still holds 4"
        );
    }
}
