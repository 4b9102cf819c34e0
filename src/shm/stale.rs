//! Listing channels and removing stale ones.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

use super::header::{Expect, Kind};
use super::name::{self, LOCK_PREFIX, SEGMENT_PREFIX};
use super::segment::{self, Segment};

/// Where POSIX shared memory objects live.
const SHM_DIR: &str = "/dev/shm";

/// Segments changed more recently than this are never considered stale: their creator
/// may not have attached yet.
const GRACE: Duration = Duration::from_secs(5);

/// The names of the shared-memory channels present on this system (files
/// `/dev/shm/conduit.<name>`), sorted.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-list-{}", std::process::id());
/// let _tx = shm::Sender::<u8>::create(&name, 1)?;
/// assert!(shm::list()?.contains(&name));
/// shm::unlink(&name)?;
/// assert!(!shm::list()?.contains(&name));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn list() -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(SHM_DIR)?
        .filter_map(|entry| {
            let file = entry.ok()?.file_name().into_string().ok()?;
            let name = file.strip_prefix(SEGMENT_PREFIX)?;
            name::validate(name).ok()?;
            Some(name.to_string())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Seconds since the segment file's status last changed, if known.
fn age(name: &str) -> Option<Duration> {
    let meta = std::fs::metadata(format!("{SHM_DIR}/{SEGMENT_PREFIX}{name}")).ok()?;
    let ctime = UNIX_EPOCH
        + Duration::new(
            meta.ctime().max(0) as u64,
            meta.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    SystemTime::now().duration_since(ctime).ok()
}

/// Whether the channel `name` is stale: no live process is attached, or it cannot be
/// opened as a channel at all (corrupt, or its creator died while initialising it).
fn is_stale(name: &str) -> bool {
    if age(name).is_none_or(|age| age < GRACE) {
        return false;
    }
    // Open without type expectations: take the header's own.
    let seg = match Segment::open_unchecked(name) {
        Ok(seg) => seg,
        Err(e) => return e.kind() == io::ErrorKind::InvalidData,
    };
    !seg.any_peer_alive()
}

/// Unlinks every channel that no live process has attached (crashed owners leave them
/// behind), and every channel that is corrupt or was never initialised, along with
/// their peer lock objects; also removes lock objects left without a channel. Returns
/// the names of the channels removed.
///
/// Channels changed in the last few seconds are left alone (their creator may be about
/// to attach). A removed channel's queued messages are lost; processes that still have
/// it mapped keep working on their mapping. Channels owned by other users cannot be
/// removed (the `/dev/shm` sticky bit) and are skipped.
///
/// ```
/// use conduit::shm;
/// let removed = shm::remove_stale()?;
/// for name in &removed {
///     assert!(!shm::list()?.contains(name));
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn remove_stale() -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list()? {
        if is_stale(&name) && segment::unlink(&name).is_ok() {
            removed.push(name);
        }
    }
    remove_orphan_locks()?;
    Ok(removed)
}

/// Removes peer lock objects whose channel is gone and which nobody holds.
fn remove_orphan_locks() -> io::Result<()> {
    let present = list()?;
    for entry in std::fs::read_dir(SHM_DIR)? {
        let Ok(file) = entry?.file_name().into_string() else {
            continue;
        };
        let Some(rest) = file.strip_prefix(LOCK_PREFIX) else {
            continue;
        };
        let Some((name, n)) = rest.rsplit_once('.') else {
            continue;
        };
        if present.iter().any(|p| p == name) || n.parse::<usize>().is_err() {
            continue;
        }
        let object = format!("/{file}");
        if let Ok(fd) = rustix::shm::open(
            object.as_str(),
            rustix::shm::OFlags::RDWR,
            rustix::fs::Mode::empty(),
        ) && rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_ok()
        {
            let _ = rustix::shm::unlink(object.as_str());
        }
    }
    Ok(())
}

impl Segment {
    /// Opens `name` accepting whatever valid layout its header describes.
    pub(crate) fn open_unchecked(name: &str) -> io::Result<Segment> {
        // Try both kinds; the header check fails fast on the wrong one.
        let typed = Expect::any(Kind::Typed);
        match Segment::open(name, &typed) {
            Err(e)
                if e.kind() == io::ErrorKind::InvalidData
                    && e.to_string().starts_with("kind mismatch") =>
            {
                Segment::open(name, &Expect::any(Kind::Bytes))
            }
            other => other,
        }
    }
}

/// TEMPORARY: the names `remove_stale` would remove, with a grace period.
pub fn find_stale(grace: Duration) -> io::Result<Vec<String>> {
    Ok(list()?
        .into_iter()
        .filter(|name| {
            super::inspect(name).is_ok_and(|i| {
                i.version == super::Inspection::SUPPORTED_VERSION
                    && i.age.is_some_and(|a| a >= grace)
                    && i.live_peers().next().is_none()
            })
        })
        .collect())
}
