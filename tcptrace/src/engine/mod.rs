//! The runtime every counting command shares: the hooks attached, the ring drained, the
//! ledger and the capacity rows kept current, and both checked against the kernel.
//!
//! - [`session`]: attaches ([`crate::kernel`]) and turns ring wake-ups, timers, the
//!   deadline and signals into one stream of [`Tick`]s;
//! - [`ring`]: the reader thread that drains the ring buffer into decoded events;
//! - [`live`]: [`Live`], which seeds the ledger and the first capacity rows from one
//!   sock_diag walk, applies every event to everything that counts it, reconciles, and
//!   takes [`Snapshot`](crate::view::Snapshot)s;
//! - [`reconcile`]: the ledger checked against the kernel's own table;
//! - [`passes`]: a reconciliation or a capacity refresh that fails is skipped and said, and
//!   the run goes on;
//! - [`walker`]: the sock_diag walks, on a thread of their own.
//!
//! Commands build [`Options`] from their flags and never reach past this module into the
//! kernel or sock_diag themselves.

pub mod error;
pub mod live;
pub mod passes;
pub mod reconcile;
pub mod ring;
pub mod session;
pub mod walker;

use std::time::Duration;

use tcptrace_common::attach::Request;

pub use error::Error;
pub use live::Live;
pub use session::{Session, Tick};

use crate::filter::Filter;

/// What a run asks of the engine.
#[derive(Clone, Debug)]
pub struct Options {
    /// The attach paths to try (`--attach`).
    pub request: &'static Request,
    /// The ring buffer's size in bytes.
    pub ring_bytes: u32,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    /// How often a [`Tick::Report`] comes.
    pub interval: Duration,
    /// How often [`Live`] reconciles with the kernel; zero: only when the run stops, events
    /// were lost, or a difference waits for its confirming pass.
    pub reconcile_every: Duration,
    /// Whether the run's last tick reconciles (and waits for it): the verdict commands and
    /// `watch` report it; `serve` and `top`, stopped, have nobody to tell.
    pub reconcile_on_stop: bool,
    /// Which connections to count, in the hooks and on the sock_diag side alike.
    pub filter: Filter,
    /// Events say when and who (the events view); counting alone costs less without.
    pub details: bool,
}
