//! The library's errors: one enum for what the engine reports, wrapping each layer's own
//! (`kernel::AttachError`, `sockdiag::Error`, aya's map errors) with `#[from]`. `anyhow`
//! is for the commands, at the binary's edge.

use std::{error::Error as StdError, fmt, io};

use crate::{filter::TooManyValues, kernel::AttachError, sockdiag};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Filter(#[from] TooManyValues),
    #[error(transparent)]
    SockDiag(#[from] sockdiag::Error),
    #[error("the BPF object has no {0} map")]
    NoMap(&'static str),
    #[error("the ring buffer")]
    Ring(#[from] aya::maps::MapError),
    #[error("cannot poll the ring buffer")]
    RingReader(#[source] io::Error),
    #[error("cannot handle {0}")]
    Signal(&'static str, #[source] io::Error),
    #[error("cannot start the thread that walks the kernel's socket tables")]
    Walker(#[source] io::Error),
}

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
