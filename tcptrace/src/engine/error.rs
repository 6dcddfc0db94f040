//! What can stop the engine from starting or running: each layer's own error, wrapped.

use std::io;

use crate::{
    filter::TooManyValues,
    kernel::{AttachError, RingError},
    sockdiag,
};

/// The engine's errors: the library's, as the commands see them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Filter(#[from] TooManyValues),
    #[error(transparent)]
    SockDiag(#[from] sockdiag::Error),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("cannot poll the ring buffer")]
    RingReader(#[source] io::Error),
    #[error("cannot handle {0}")]
    Signal(&'static str, #[source] io::Error),
    #[error("cannot start the thread that walks the kernel's socket tables")]
    Walker(#[source] io::Error),
}
