//! [`Options`]: how to open or create a channel.

use std::io;

use super::header::{Kind, MAX_CAPACITY, MAX_MESSAGE};

/// The capacity of a channel created without [`Options::capacity`].
pub const DEFAULT_CAPACITY: usize = 64;
/// The maximum byte message of a byte channel created without [`Options::max_message`].
pub const DEFAULT_MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    Existing,
    Create,
    CreateNew,
}

/// How to open or create a shared-memory channel: a by-value builder, like
/// [`std::fs::OpenOptions`].
///
/// The default opens an existing channel ([`Options::open_existing`]) and checks
/// nothing beyond what the handle's type implies. [`Options::capacity`] and
/// [`Options::max_message`] are used when creating, and checked when opening (a
/// mismatch is [`io::ErrorKind::InvalidData`]).
///
/// | setting | default | limits |
/// |---|---|---|
/// | `capacity` | [`DEFAULT_CAPACITY`] when creating; unchecked when opening | 1 to 4 194 304 slots, rounded up to a power of two |
/// | `max_message` (byte channels) | [`DEFAULT_MAX_MESSAGE`] when creating; unchecked when opening | 1 byte to 64 MiB |
/// | `max_bytes` (byte mailboxes) | capacity × max_message when creating; unchecked when opening | at least 1; clamped to capacity × max_message |
/// | `mode` | `0o600` | permission bits only |
/// | open mode | [`open_existing`](Options::open_existing) | |
/// | `unlink_on_drop` | `false` | |
/// | [`spsc`](Options::spsc) (typed and byte channels) | many-to-many when creating; unchecked when opening | |
/// | [`asymmetric_fences`](Options::asymmetric_fences) (single-producer channels) | asymmetric where `membarrier` works, when creating; unchecked when opening | |
///
/// ```
/// use conduit::shm::{self, Options};
///
/// let name = format!("doc-options-{}", std::process::id());
/// let opts = Options::new().capacity(100).create(true).unlink_on_drop(true);
/// let rx = shm::Receiver::<u64>::with(&name, &opts)?;
/// assert_eq!(rx.capacity(), 128);
/// let tx = shm::Sender::<u64>::with(&name, &Options::new().capacity(128))?;
/// tx.send(1).unwrap();
/// assert_eq!(rx.recv(), Ok(1));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) capacity: Option<usize>,
    pub(crate) max_message: Option<usize>,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) mode: u32,
    pub(crate) open: OpenMode,
    pub(crate) unlink_on_drop: bool,
    /// The single-producer single-consumer mode to create with, or to check.
    pub(crate) spsc: Option<bool>,
    /// The fences of a single-producer channel to create with, or to check.
    pub(crate) asymmetric_fences: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Options that open an existing channel, checking nothing extra.
    ///
    /// ```
    /// let opts = conduit::shm::Options::new();
    /// # let _ = opts;
    /// ```
    pub fn new() -> Self {
        Options {
            capacity: None,
            max_message: None,
            max_bytes: None,
            mode: 0o600,
            open: OpenMode::Existing,
            unlink_on_drop: false,
            spsc: None,
            asymmetric_fences: None,
        }
    }

    /// The number of slots: used when creating (rounded up to a power of two), and
    /// checked (after the same rounding) when opening.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-capacity-{}", std::process::id());
    /// let tx = shm::Sender::<u32>::with(&name, &Options::new().capacity(5).create_new(true))?;
    /// assert_eq!(tx.capacity(), 8);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn capacity(mut self, slots: usize) -> Self {
        self.capacity = Some(slots);
        self
    }

    /// The longest message of a byte channel: used when creating, checked when opening.
    /// Ignored by typed channels.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-max-message-{}", std::process::id());
    /// let opts = Options::new().max_message(16).create_new(true).unlink_on_drop(true);
    /// let tx = shm::ByteSender::with(&name, &opts)?;
    /// assert_eq!(tx.max_message(), 16);
    /// assert_eq!(tx.try_send(&[0; 17]).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = Some(bytes);
        self
    }

    /// The most bytes a byte mailbox ([`ByteMailbox`](super::ByteMailbox)) holds queued
    /// at once, its messages' lengths summed, like SysV's per-queue `msg_qbytes`: used
    /// when creating, checked when opening (a mismatch is
    /// [`io::ErrorKind::InvalidData`]); 0 is [`io::ErrorKind::InvalidInput`]. Clamped to capacity × max_message, the default
    /// (which bounds nothing beyond the slots); fixed for the mailbox's life. A send that
    /// would go over it finds the mailbox full (it waits, or `try_send` fails); a message
    /// longer than the bound by itself is [`io::ErrorKind::InvalidInput`]. Ignored by
    /// channels and typed mailboxes.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-max-bytes-{}", std::process::id());
    /// let opts = Options::new().max_message(64).max_bytes(100).create_new(true);
    /// let mb = shm::ByteMailbox::with(&name, &opts)?;
    /// assert_eq!(mb.max_bytes(), 100);
    /// mb.try_send(&[1; 60])?;
    /// assert!(mb.try_send(&[2; 60]).is_err()); // 120 bytes would be queued
    /// mb.try_send(&[3; 40])?;
    /// mb.close()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The permission bits of a created segment (default `0o600`); not subject to the
    /// umask. (The peers' liveness locks are on the segment file itself: there is no other
    /// file.)
    ///
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-mode-{}", std::process::id());
    /// let opts = Options::new().mode(0o640).create_new(true).unlink_on_drop(true);
    /// let _tx = shm::Sender::<u8>::with(&name, &opts)?;
    /// let meta = std::fs::metadata(format!("/dev/shm/conduit.{name}"))?;
    /// assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// With `true`: open the channel, or create it if it does not exist. With `false`:
    /// back to [`open_existing`](Options::open_existing).
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-create-{}", std::process::id());
    /// let a = shm::Sender::<u8>::with(&name, &Options::new().create(true))?; // creates
    /// let b = shm::Receiver::<u8>::with(&name, &Options::new().create(true))?; // opens
    /// a.send(7).unwrap();
    /// assert_eq!(b.recv(), Ok(7));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(mut self, create: bool) -> Self {
        self.open = if create {
            OpenMode::Create
        } else {
            OpenMode::Existing
        };
        self
    }

    /// With `true`: create the channel, failing with [`io::ErrorKind::AlreadyExists`] if
    /// the name exists (`O_EXCL`). With `false`: back to
    /// [`open_existing`](Options::open_existing).
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-create-new-{}", std::process::id());
    /// let opts = Options::new().create_new(true);
    /// let _a = shm::Sender::<u8>::with(&name, &opts)?;
    /// let err = shm::Sender::<u8>::with(&name, &opts).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create_new(mut self, create_new: bool) -> Self {
        self.open = if create_new {
            OpenMode::CreateNew
        } else {
            OpenMode::Existing
        };
        self
    }

    /// Open an existing channel only ([`io::ErrorKind::NotFound`] if missing): the
    /// default.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let opts = Options::new().create(true).open_existing();
    /// let err = shm::Receiver::<u8>::with("doc-open-existing-missing", &opts).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// ```
    pub fn open_existing(mut self) -> Self {
        self.open = OpenMode::Existing;
        self
    }

    /// With `true`, a handle that *created* the channel unlinks its name when the last
    /// clone of that handle is dropped, if the name still refers to that segment.
    /// Handles that opened an existing channel never unlink. Processes still attached
    /// keep working on their mapping (and, where `/proc` is mounted, still notice each
    /// other's deaths: the liveness locks are on the file, which lives while mapped), but
    /// nobody can open the channel by name any more, so unlink last.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-unlink-on-drop-{}", std::process::id());
    /// let tx = shm::Sender::<u8>::with(&name, &Options::new().create_new(true).unlink_on_drop(true))?;
    /// drop(tx);
    /// let err = shm::Sender::<u8>::open(&name).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn unlink_on_drop(mut self, unlink: bool) -> Self {
        self.unlink_on_drop = unlink;
        self
    }

    /// Chooses the single-producer single-consumer mode (`true`) or the many-to-many
    /// one (`false`, the default) for a typed or byte channel this call creates, and
    /// checks it when opening ([`io::ErrorKind::InvalidData`] naming both modes if the
    /// channel is in the other; unset, either mode opens). Mailboxes and signal targets
    /// have one mode only: asking for this one is [`io::ErrorKind::InvalidInput`].
    ///
    /// In this mode at most one sender handle family and one receiver handle family may
    /// be attached at a time (clones of a handle share it; its threads take turns). A
    /// second `Sender` (`Receiver`) attach, in any process, fails with
    /// [`io::ErrorKind::ResourceBusy`] while the first one's family lives; once it is
    /// dropped, or its process dies (`kill -9` included), the next attach takes over.
    /// Everything else is as in the default mode: the same handles, operations, errors
    /// and crash guarantees (a peer killed mid-operation loses no completed send and
    /// wedges nothing). What changes is the cost: only the sender writes a slot, and the
    /// receiver frees slots by moving a position of its own, so a message moves one
    /// cache line between the processes where the default mode moves it, and its
    /// slot's line, back and forth (see `shm::spsc`'s notes in the source).
    ///
    /// Where the kernel offers `membarrier(2)`'s `MEMBARRIER_CMD_GLOBAL_EXPEDITED`
    /// (Linux 4.16 and later, unless a seccomp filter refuses it), neither side executes
    /// a locked instruction per message: sends and receives publish with plain stores and
    /// a compiler barrier, and a waiter about to sleep issues the system call instead
    /// (about 10 µs, only on the way to sleep). A channel created by a process that
    /// cannot use it (or that has `CONDUIT_NO_MEMBARRIER` set to anything but `0`), or
    /// with [`Options::asymmetric_fences`]`(false)`, uses SeqCst read-modify-writes
    /// instead, and works with any peer; a channel created with
    /// the fast fences refuses to be opened by such a process
    /// ([`io::ErrorKind::Unsupported`], naming the cause), since its waiters could miss
    /// a wake-up.
    ///
    /// The mode is a flag in the segment's header; a build that predates it refuses to
    /// open such a channel (`InvalidData`, "kind ... is invalid").
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-spsc-{}", std::process::id());
    /// let opts = Options::new().capacity(8).create_new(true).spsc(true);
    /// let tx = shm::Sender::<u64>::with(&name, &opts)?;
    /// let rx = shm::Receiver::<u64>::open(&name)?;
    /// tx.send(7).unwrap();
    /// assert_eq!(rx.recv(), Ok(7));
    /// let second = shm::Sender::<u64>::open(&name).unwrap_err();
    /// assert_eq!(second.kind(), std::io::ErrorKind::ResourceBusy);
    /// drop(tx);
    /// let tx = shm::Sender::<u64>::open(&name)?; // takes over
    /// # drop((tx, rx));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spsc(mut self, spsc: bool) -> Self {
        self.spsc = Some(spsc);
        self
    }

    /// Chooses the fences of a single-producer channel this call creates: asymmetric
    /// (`true`: plain stores per message, and a `membarrier(2)` system call by each
    /// waiter on its way to sleep, see [`Options::spsc`]) or SeqCst read-modify-writes
    /// per message (`false`). Unset, a channel is created with asymmetric fences wherever
    /// this process can issue them. When opening, a setting is checked: a channel with
    /// the other fences is [`io::ErrorKind::InvalidData`] naming both (a many-to-many
    /// channel, a mailbox or a signal target always has SeqCst fences).
    ///
    /// Choose `false` for a channel whose waiters sleep often, a receiver woken for each
    /// of a trickle of messages, say: each such sleep then saves the system call (about
    /// 10 µs of CPU time on a busy machine, and an interrupt to each CPU running a
    /// process that uses asymmetric fences) at the price of a locked instruction per
    /// message on each side (two pinned processes streaming 64-byte messages: 45 ns a
    /// message against 38 here; see `benches/README.md`).
    ///
    /// Asking for `true` is [`io::ErrorKind::Unsupported`] when creating in a process that
    /// cannot use `membarrier` (an old kernel, a seccomp filter, or
    /// `CONDUIT_NO_MEMBARRIER` set), and [`io::ErrorKind::InvalidInput`] when creating a
    /// many-to-many channel or opening a mailbox or a signal target, which have no such
    /// fences.
    ///
    /// ```
    /// use conduit::shm::{self, Options};
    /// let name = format!("doc-fences-{}", std::process::id());
    /// let create = Options::new().create_new(true).spsc(true).asymmetric_fences(false);
    /// let tx = shm::Sender::<u64>::with(&name, &create)?;
    /// let rx = shm::Receiver::<u64>::with(&name, &Options::new().asymmetric_fences(false))?;
    /// tx.send(7).unwrap();
    /// assert_eq!(rx.recv(), Ok(7));
    /// let err = shm::Receiver::<u64>::with(&name, &Options::new().asymmetric_fences(true))
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    /// # drop((tx, rx));
    /// shm::unlink(&name)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn asymmetric_fences(mut self, asymmetric: bool) -> Self {
        self.asymmetric_fences = Some(asymmetric);
        self
    }

    /// [`io::ErrorKind::InvalidInput`] if these options ask a segment of `kind` for a
    /// mode it does not have: the single-producer mode, or its asymmetric fences, of
    /// anything but a typed or byte channel.
    pub(crate) fn check_modes(&self, kind: Kind) -> io::Result<()> {
        if kind.has_modes() {
            return Ok(());
        }
        let what = if self.spsc == Some(true) {
            "the single-producer single-consumer mode"
        } else if self.asymmetric_fences == Some(true) {
            "asymmetric fences (a setting of the single-producer mode)"
        } else {
            return Ok(());
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} is for typed and byte channels"),
        ))
    }

    /// The fences to create a channel with (light: asymmetric): as set, or asymmetric
    /// where available for a single-producer channel; the errors of
    /// [`Options::asymmetric_fences`] for a setting that cannot be honoured.
    pub(crate) fn light_fences(&self, spsc: bool) -> io::Result<bool> {
        match self.asymmetric_fences {
            None => Ok(spsc && super::asym::available()),
            Some(false) => Ok(false),
            Some(true) if !spsc => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "asymmetric fences are a setting of the single-producer mode: create the \
                 channel with spsc(true)",
            )),
            Some(true) if !super::asym::available() => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("asymmetric fences need {}", super::asym::UNAVAILABLE),
            )),
            Some(true) => Ok(true),
        }
    }

    /// The capacity to create with, or to check: rounded up to a power of two.
    pub(crate) fn slots(&self) -> io::Result<Option<usize>> {
        match self.capacity {
            None => Ok(None),
            Some(0) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "shm channel capacity must be at least 1",
            )),
            Some(n) => match n.checked_next_power_of_two() {
                Some(p) if p <= MAX_CAPACITY => Ok(Some(p)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("shm channel capacity {n} exceeds {MAX_CAPACITY}"),
                )),
            },
        }
    }

    /// The maximum message to create with or check, validated.
    pub(crate) fn message_limit(&self) -> io::Result<Option<usize>> {
        match self.max_message {
            Some(n) if n == 0 || n > MAX_MESSAGE => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("max_message {n} is not in 1..={MAX_MESSAGE}"),
            )),
            m => Ok(m),
        }
    }
}
