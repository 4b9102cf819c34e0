//! Channel names and the files they map to.
//!
//! A channel `<name>` is the POSIX shared-memory object `/conduit.<name>` (the file
//! `/dev/shm/conduit.<name>` on Linux), and that one object is all there is of it: its
//! peers' liveness locks are byte-range locks on that file (see [`super::lock`]).

use std::io;

/// The prefix of segment object names (after the leading `/`).
pub(crate) const SEGMENT_PREFIX: &str = "conduit.";

/// Checks a channel name: 1 to [`MAX_NAME_LEN`](crate::names::MAX_NAME_LEN) bytes of
/// `[A-Za-z0-9._-]`, not `.` or `..`. Anything else is [`io::ErrorKind::InvalidInput`].
pub(crate) fn validate(name: &str) -> io::Result<()> {
    crate::names::validate(name, "shm channel")
}

/// The `shm_open` name of a channel's segment.
pub(crate) fn segment_object(name: &str) -> String {
    format!("/{SEGMENT_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::MAX_NAME_LEN;

    #[test]
    fn names() {
        for ok in ["a", "A-b_c.9", "..x", &"n".repeat(MAX_NAME_LEN)] {
            validate(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/a",
            "a b",
            "é",
            "a\0",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(
                validate(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
        assert_eq!(segment_object("x"), "/conduit.x");
    }
}
