//! The name rules shared by every named kind: shm channels and mailboxes.

use std::io;

/// The longest accepted name, in bytes: with the prefixes and suffixes `shm` adds, every
/// object name stays well below the 255-byte `NAME_MAX`.
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Checks a name of the kind `what` (for the message, e.g. "shm channel"): 1 to
/// [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, not `.` or `..`. Anything else is
/// [`io::ErrorKind::InvalidInput`].
pub(crate) fn validate(name: &str, what: &str) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} name {name:?}: {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad(&format!("longer than {MAX_NAME_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are reserved");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!("{c:?} is not one of [A-Za-z0-9._-]"));
    }
    Ok(())
}
