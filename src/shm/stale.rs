//! Listing channels and removing stale ones.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::header::{Expect, Kind};
use super::name::{self, SEGMENT_PREFIX};
use super::peers::AllDead;
use super::segment::{self, Segment};

/// Where POSIX shared memory objects live.
const SHM_DIR: &str = "/dev/shm";

/// Segments changed more recently than this are never considered stale (belt and
/// braces: a creator holds a peer lock from the moment it creates a segment, see
/// [`super::segment`]).
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

/// What [`judge`] found about one channel.
enum Verdict {
    /// Changed within the grace period, or its age is unknown: left alone.
    Young,
    /// A peer lock is held: someone is attached, attaching or detaching.
    Alive,
    /// Proven stale: no peer lock is held, and none can be taken while the proof lives.
    Stale(#[allow(dead_code)] AllDead),
    /// Not a channel of this build's layout that could be opened (another layout version,
    /// a corrupt or uninitialised header, no permission, ...): nothing can be proven.
    Unreadable,
}

/// Decides whether the channel `name` is stale. Only a proof counts: a segment this
/// build cannot read, or whose peer locks it cannot probe, is never stale.
fn judge(name: &str, grace: Duration) -> Verdict {
    if age(name).is_none_or(|age| age < grace) {
        return Verdict::Young;
    }
    // Open without type expectations: take the header's own. Any error, `InvalidData`
    // (another layout version, a corrupt header) included, proves nothing: a process of
    // another conduit version may be using it, with locks this build does not know.
    let Ok(seg) = Segment::open_unchecked(name) else {
        return Verdict::Unreadable;
    };
    match seg.prove_all_dead() {
        Ok(Some(proof)) => Verdict::Stale(proof),
        Ok(None) => Verdict::Alive,
        Err(_) => Verdict::Unreadable,
    }
}

/// Unlinks every channel that is proven stale: no process is attached to it or
/// attaching, whatever its peer table says (crashed owners leave such channels behind).
/// Returns the names of the channels removed.
///
/// A channel is stale when no peer liveness lock on its file is held (every attached
/// handle family holds one, from before it marks itself attached until after it marks
/// itself gone, and the kernel releases it when the process dies). The check takes every
/// lock at once and holds them across the unlink, so no process can attach in between.
///
/// Never removed, and not returned:
/// - channels changed in the last few seconds;
/// - channels a live process is attached to, or attaching to;
/// - segments this build cannot open as a channel: another layout version (of an older
///   or newer conduit, whose processes may be using it), a corrupt header, a segment its
///   creator is still initialising (or died initialising), or one this user may not
///   open. Opening one with [`Sender::open`](super::Sender::open) (or any `open`)
///   reports why: [`io::ErrorKind::InvalidData`] naming the version or field that
///   differs, or the open error. Remove them with [`super::unlink`] (or `rm`) once you
///   know they are unused.
///
/// A removed channel's queued messages are lost. Channels owned by other users cannot be
/// removed (the `/dev/shm` sticky bit) and are skipped.
///
/// ```
/// use conduit::shm;
/// let name = format!("doc-stale-{}", std::process::id());
/// let rx = shm::Receiver::<u8>::create(&name, 1)?;
/// let removed = shm::remove_stale()?;
/// assert!(!removed.contains(&name), "an attached channel is never stale");
/// for name in &removed {
///     assert!(!shm::list()?.contains(name));
/// }
/// drop(rx);
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn remove_stale() -> io::Result<Vec<String>> {
    remove_stale_with_grace(GRACE)
}

/// [`remove_stale`] with another grace period: channels changed within `grace` are left
/// alone (`Duration::ZERO` judges every channel by its locks alone). What `conduit
/// clean --grace` runs.
///
/// ```
/// use std::time::Duration;
/// use conduit::shm;
/// let name = format!("doc-stale-grace-{}", std::process::id());
/// drop(shm::Receiver::<u8>::create(&name, 1)?); // nobody attached any more
/// assert!(shm::find_stale(Duration::ZERO)?.contains(&name));
/// assert!(shm::remove_stale_with_grace(Duration::ZERO)?.contains(&name));
/// assert!(!shm::list()?.contains(&name));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn remove_stale_with_grace(grace: Duration) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list()? {
        if let Verdict::Stale(proof) = judge(&name, grace) {
            // The proof (every peer lock, shared) is held until after the unlink.
            if segment::unlink(&name).is_ok() {
                removed.push(name);
            }
            drop(proof);
        }
    }
    Ok(removed)
}

impl Segment {
    /// Opens `name` accepting whatever valid layout its header describes.
    pub(crate) fn open_unchecked(name: &str) -> io::Result<Segment> {
        // Try every kind; the header check fails fast on the wrong one.
        let mut kinds = [
            Kind::Typed,
            Kind::Bytes,
            Kind::Signal,
            Kind::Mailbox,
            Kind::ByteMailbox,
        ]
        .into_iter()
        .peekable();
        loop {
            let kind = kinds.next().expect("at least one kind");
            match Segment::open(name, &Expect::any(kind)) {
                Err(e)
                    if kinds.peek().is_some()
                        && e.kind() == io::ErrorKind::InvalidData
                        && e.to_string().starts_with("kind mismatch") => {}
                other => return other,
            }
        }
    }
}

/// The names [`remove_stale_with_grace`] would remove now: channels older than `grace`
/// that are proven stale (every peer lock taken at once, then released again). A dry
/// run: by the time the caller acts, a process may have attached.
///
/// ```
/// use std::time::Duration;
/// use conduit::shm;
/// let name = format!("doc-find-stale-{}", std::process::id());
/// let rx = shm::Receiver::<u8>::create(&name, 1)?;
/// assert!(!shm::find_stale(Duration::ZERO)?.contains(&name), "attached");
/// drop(rx);
/// assert!(shm::find_stale(Duration::ZERO)?.contains(&name));
/// assert!(shm::list()?.contains(&name), "nothing removed");
/// shm::unlink(&name)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn find_stale(grace: Duration) -> io::Result<Vec<String>> {
    Ok(list()?
        .into_iter()
        .filter(|name| matches!(judge(name, grace), Verdict::Stale(_)))
        .collect())
}
