//! One classification of every library error ([`ErrorKind`]), so each front
//! end maps outcomes once (the mount to an errno, the console to an HTTP
//! status, the command line to an exit code and message, the audit log to
//! a label), and one cause-chain formatter ([`Chain`]). A leaf: it imports
//! nothing from the crate.

use std::error::Error;
use std::fmt;

/// What went wrong, in the terms a caller decides on. Like
/// [`std::io::ErrorKind`], new kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The secret, scope or vault does not exist.
    NotFound,
    /// The secret or scope exists already.
    Exists,
    /// The request itself is wrong (an empty value, a bad recipient).
    InvalidInput,
    /// The value is over the size limit.
    TooLarge,
    /// The scope still holds secrets.
    NotEmpty,
    /// This store cannot do that (e.g. rename in the fleet vault).
    Unsupported,
    /// Not allowed: the global scope, a host not enrolled in the fleet.
    Denied,
    /// A service the store needs did not answer (a keystore, etcd, a lock
    /// held too long); trying again later may work.
    Unavailable,
    /// Stored data failed its checks: a blob that does not authenticate,
    /// a vault rolled back or moved, a replayed fleet record.
    Integrity,
    /// Anything else: I/O, configuration, a bug.
    Other,
}

impl ErrorKind {
    /// A short label for the audit log's `detail` of a failed operation.
    pub fn audit_label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Exists => "exists",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::TooLarge => "too large",
            ErrorKind::NotEmpty => "not empty",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Denied => "denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Other => "error",
        }
    }
}

/// Displays an error and its causes on one line, `outer: cause: cause`,
/// skipping a cause whose text the outer message already ends with (a
/// `#[error(transparent)]` or `"{0}"` wrapper).
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cur = self.0.source();
        while let Some(c) = cur {
            let text = c.to_string();
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cur = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_chain_is_one_line_without_repeats() {
        let e = E(
            "cannot open the vault",
            Some(Box::new(E(
                "disk full",
                Some(Box::new(E("disk full", None))),
            ))),
        );
        assert_eq!(Chain(&e).to_string(), "cannot open the vault: disk full");
    }
}
