//! tcptrace: exact, live counts of TCP connections per local port and per remote endpoint,
//! and how close each listener and destination is to its limit.
//!
//! The modules follow the data path, hook to view:
//! - [`kernel`]: the one place that decides how tcptrace hooks into the kernel (the attach
//!   paths as data, feature probes, BTF and tracefs);
//! - [`event`]: decodes what the hooks put in the ring buffer; [`conn`] is the 4-tuple key;
//! - [`filter`]: which connections to report, applied in the hooks and to sock_diag;
//! - [`sockdiag`]: every read of the kernel's socket tables (netlink dumps, namespaces,
//!   `/proc`);
//! - [`engine`]: the runtime: attach, drain the ring, keep the ledger and the capacity rows
//!   current, reconcile them with the kernel, take snapshots;
//! - [`ledger`]: the live counts per local port and per remote endpoint;
//! - [`capacity`]: listeners and destinations against their limits;
//! - [`check`]: a capacity claim as pass or fail;
//! - [`view`]: the snapshot model and its renderings (table, JSON, TUI, metrics, events);
//! - [`cli`] and [`cmd`]: the command line and one thin file per command;
//! - [`load`]: tcptrace's own loopback load generator;
//! - [`error`]: how errors are shown; the engine's [`Error`] wraps each layer's.

pub mod capacity;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod conn;
pub mod engine;
pub mod error;
pub mod event;
pub mod filter;
#[cfg(test)]
mod fuzz;
pub mod kernel;
pub mod ledger;
pub mod load;
pub mod sockdiag;
pub mod view;

pub use engine::Error;
