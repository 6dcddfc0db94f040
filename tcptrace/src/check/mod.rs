//! `tcptrace check`: a capacity claim, measured, as pass or fail.
//!
//! A claim is a list of [`Expectation`]s such as `lport=8080 live>=100000`; their grammar
//! and the rule each operator follows are in [`EXPECT_HELP`], which is also the `--help`
//! text of `--expect`. A [`Check`] is fed one [`Observation`] per interval and keeps, for
//! each expectation, the one value its rule is about (the peak, the minimum or the final
//! value). [`Check::report`] turns those into a [`Report`]: a verdict per expectation, the
//! events lost and the drift against their [`Tolerance`], one pass or fail, and with
//! [`Report::outcome`] the exit code.
//!
//! Everything here is pure: the command owns the tracer, the ledger and the clock. The
//! check sees the counts only through the [`Observation`] trait, which the command
//! implements over the ledger and the tests over observations built by hand; so every
//! rule, verdict and report is tested without a kernel.
//!
//! What lives where (the submodules are private; everything public is re-exported here):
//! - `expect`: the claim itself, [`Expectation`] and its [`Selector`], [`Metric`], [`Op`]
//!   and [`Rule`], their canonical form, and the grammar text [`EXPECT_HELP`];
//! - `parse`: text to an [`Expectation`], and the [`ParseError`] that points at the column;
//! - `judge`: [`Observation`] and the values it gives, [`Tolerance`], and [`Check`] with
//!   what it keeps of each expectation over the run;
//! - `report`: [`Verdict`], [`ExpectationResult`], [`Report`] (the JSON of `--report`),
//!   [`summary`] (the text for a person); the exit code is the command's.

mod expect;
#[cfg(test)]
mod fixtures;
mod judge;
mod parse;
mod report;

pub use expect::{EXPECT_HELP, Expectation, Metric, Op, Rule, Selector};
pub use judge::{
    Check, DestinationValues, LimitValues, ListenerValues, Observation, PortValues, Tolerance,
    TotalValues,
};
pub use parse::ParseError;
pub(crate) use report::tolerance_verdicts;
pub use report::{ExpectationResult, Report, Unit, Verdict, summary};
