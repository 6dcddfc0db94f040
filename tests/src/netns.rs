//! Network namespaces for the tests: [`tcptrace_netns::Netns`], the thread living in a fresh
//! namespace that creates the tests' sockets there (so that the tracer can tell them from
//! everything else on the box), wrapped so that making one cannot fail in a test.

use std::ops::Deref;

use crate::init;

/// A [`tcptrace_netns::Netns`] for a test, which reaches all of its methods (`run`, `inode`,
/// `tid`, `comm`, `sysctl`) through `Deref`. Making one raises the open-file limit first
/// ([`init`]) and panics when no namespace can be made: no test can go on without one.
pub struct Netns(tcptrace_netns::Netns);

impl Netns {
    /// A new namespace whose thread is called `name` (the kernel keeps 15 bytes of it as
    /// the thread's comm, which is what connect events report).
    #[must_use]
    pub fn new(name: &str) -> Self {
        init();
        let ns = tcptrace_netns::Netns::new(name)
            .unwrap_or_else(|e| panic!("cannot set up a network namespace: {e}"));
        Self(ns)
    }
}

impl Deref for Netns {
    type Target = tcptrace_netns::Netns;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
