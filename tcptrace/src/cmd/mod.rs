//! One thin file per command: its options, turned into [`crate::engine::Options`], a loop
//! on the engine's ticks, and its output. The options every tracing command shares are in
//! [`args`].

pub mod args;
pub mod check;
pub mod demo;
pub mod events;
pub mod serve;
pub mod top;
pub mod watch;

use std::io::{self, Write};

/// Writes to stdout; a closed pipe (`| head`) ends the command quietly rather than failing.
pub fn print(text: &str) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}
