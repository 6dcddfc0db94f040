//! How the library's errors are shown: an error and its sources on one line ([`Chain`]).
//! The errors themselves belong to each layer (`kernel::AttachError`, `sockdiag::Error`,
//! `engine::Error`, which wraps them); `anyhow` is for the commands, at the binary's edge.

use std::{error::Error as StdError, fmt};

/// An error and its sources on one line, `a: b: c`, as `anyhow`'s `{:#}` prints them.
pub struct Chain<'a>(pub &'a dyn StdError);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
