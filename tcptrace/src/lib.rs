//! tcptrace: exact, live counts of TCP connections per local port and per remote endpoint.
//!
//! The modules follow the data path:
//! - [`backend`]: chooses and attaches the kernel hooks (fentry, kprobe or tracepoint);
//! - [`filter`]: which connections to report, applied in the hooks and to sock_diag;
//! - [`event`]: decodes what the hooks put in the ring buffer ([`conn`] is the 4-tuple key);
//! - [`seed`]: the connections that already existed at start, from sock_diag;
//! - [`consumer`]: drains the ring buffer into the [`ledger`], which owns the live counts;
//! - [`view`]: renders the ledger as a table, JSON lines or an event log.

pub mod backend;
pub mod capacity;
pub mod check;
pub mod cli;
pub mod cmd;
pub mod conn;
pub mod consumer;
pub mod event;
pub mod filter;
pub mod ledger;
pub mod load;
pub mod reconcile;
pub mod seed;
pub mod view;
