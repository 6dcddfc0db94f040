//! The passes of the loop that read the kernel's tables and can fail: a reconciliation and a
//! capacity refresh (a sock_diag walk of every namespace each: out of file descriptors,
//! a namespace that vanished mid-walk, a kernel that stopped answering). A failed pass is
//! skipped, counted, and said once when it starts failing and once when it works again;
//! the run goes on with the counts the hooks keep, so a failure never ends a command or
//! resets what it has counted.

use std::error::Error as StdError;

use crate::error::Chain;

/// A pass that can fail and be skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Reconciliation,
    CapacityRefresh,
}

impl Pass {
    pub const ALL: [Self; 2] = [Self::Reconciliation, Self::CapacityRefresh];

    /// As metrics label it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Reconciliation => "reconciliation",
            Self::CapacityRefresh => "capacity_refresh",
        }
    }

    /// For a person: "a reconciliation with sock_diag".
    #[must_use]
    pub fn what(self) -> &'static str {
        match self {
            Self::Reconciliation => "a reconciliation with sock_diag",
            Self::CapacityRefresh => "a refresh of the capacity rows",
        }
    }
}

/// One kind of pass's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Passes skipped since the run started.
    pub skipped: u64,
    /// Why the last pass failed, while it keeps failing; `None` once one works.
    pub failing: Option<String>,
    /// Passes skipped since the last one that worked.
    run: u64,
}

/// The records of every kind of pass, and what the user has not been told yet.
#[derive(Debug, Default)]
pub struct Passes {
    records: [Record; 2],
    notices: Vec<String>,
}

impl Passes {
    /// A pass of `pass` failed with `why` and was skipped.
    pub fn failed(&mut self, pass: Pass, why: &dyn StdError) {
        let why = Chain(why).to_string();
        let record = &mut self.records[pass as usize];
        record.skipped += 1;
        record.run += 1;
        if record.failing.is_none() {
            self.notices.push(format!(
                "{} failed and was skipped (tcptrace goes on, and tries again at the next one): {why}",
                pass.what()
            ));
        }
        record.failing = Some(why);
    }

    /// A pass of `pass` worked.
    pub fn worked(&mut self, pass: Pass) {
        let record = &mut self.records[pass as usize];
        if record.failing.take().is_some() {
            let n = std::mem::take(&mut record.run);
            let plural = if n == 1 { "" } else { "es" };
            self.notices
                .push(format!("{} works again, after {n} skipped pass{plural}", pass.what()));
        }
    }

    #[must_use]
    pub fn record(&self, pass: Pass) -> &Record {
        &self.records[pass as usize]
    }

    /// The first pass that is failing now, and why: for a status line.
    #[must_use]
    pub fn failing(&self) -> Option<(Pass, &str)> {
        Pass::ALL.into_iter().find_map(|p| self.record(p).failing.as_deref().map(|why| (p, why)))
    }

    /// What has not been said yet, once.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_said_once_counted_each_time_and_its_end_said_once() {
        let mut passes = Passes::default();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        passes.failed(Pass::Reconciliation, &emfile);
        passes.failed(Pass::Reconciliation, &emfile);
        let notices = passes.take_notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].contains("reconciliation") && notices[0].contains("Too many open files")
        );
        assert_eq!(passes.record(Pass::Reconciliation).skipped, 2);
        assert_eq!(passes.failing().map(|(p, _)| p), Some(Pass::Reconciliation));
        assert_eq!(passes.record(Pass::CapacityRefresh).skipped, 0);

        passes.worked(Pass::Reconciliation);
        passes.worked(Pass::Reconciliation);
        assert_eq!(
            passes.take_notices(),
            ["a reconciliation with sock_diag works again, after 2 skipped passes"]
        );
        assert_eq!(passes.failing(), None);
        assert_eq!(passes.record(Pass::Reconciliation).skipped, 2, "the total stays");
        assert!(passes.take_notices().is_empty());
    }
}
