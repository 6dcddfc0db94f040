//! One thin file per command: its options, turned into [`crate::engine::Options`], a loop
//! on the engine's ticks, and its output. The options every tracing command shares are in
//! [`args`].

pub mod args;
pub mod check;
pub mod demo;
pub mod events;
pub mod output;
pub mod report;
pub mod serve;
pub mod top;
pub mod watch;

use std::io::{self, Write};
use std::process::ExitCode;

/// How a command that gives a verdict (`check`, `demo`) ends, and its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every claim held (check: every expectation, within the loss and drift tolerance;
    /// demo: every count agreed): exit 0.
    Passed,
    /// A claim did not hold (an expectation failed or had no data, loss or drift beyond
    /// the tolerance, a count disagreed): exit 1.
    Failed,
    /// It could not judge: bad input (an expectation or flag did not parse, as clap exits
    /// on bad flags) or nothing could be measured: exit 2.
    BadInput,
    /// Ctrl-C or SIGTERM before the end, and torn down (the demo): exit 130.
    Interrupted,
}

impl Outcome {
    /// A verdict: passed or failed.
    #[must_use]
    pub const fn of(passed: bool) -> Self {
        if passed { Self::Passed } else { Self::Failed }
    }

    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Passed => 0,
            Self::Failed => 1,
            Self::BadInput => 2,
            Self::Interrupted => 130,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        Self::from(outcome.code())
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the command quietly rather than failing.
pub fn print(text: &str) -> io::Result<bool> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Passed.code(), 0);
        assert_eq!(Outcome::Failed.code(), 1);
        assert_eq!(Outcome::BadInput.code(), 2);
        assert_eq!(Outcome::Interrupted.code(), 130);
        assert_eq!((Outcome::of(true), Outcome::of(false)), (Outcome::Passed, Outcome::Failed));
    }
}
