//! Child namespaces that come and go: each a thread of this process in a network namespace
//! of its own (`tcptrace_netns::Netns`), holding a listener and two loopback connections
//! to it, for a while. The tracer's walks must find them, enter them and forget them.
//! Its filter (`--netns`, the soak's own namespace) keeps their sockets out of its counts.

use std::{
    collections::VecDeque,
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tcptrace_netns::Netns;

/// Connections each child holds (both ends, plus the listener: five sockets).
const CONNECTIONS: usize = 2;
const LISTEN: &str = "127.0.0.1:23600";

/// Fields drop in order: the sockets close before the namespace's thread ends, so the
/// namespace is never left holding sockets with no task in it (where no walk finds it).
struct Child {
    born: Duration,
    _sockets: Vec<TcpStream>,
    _listener: TcpListener,
    _netns: Netns,
}

/// The children alive now, oldest first.
pub(super) struct Children {
    every: Duration,
    life: Duration,
    alive: VecDeque<Child>,
    made: u64,
}

impl Children {
    pub(super) fn new(every: Duration, life: Duration) -> Self {
        Self { every, life, alive: VecDeque::new(), made: 0 }
    }

    /// At `t`: drops those past their life, and makes the next one when it is due.
    pub(super) fn tick(&mut self, t: Duration) -> Result<()> {
        while self.alive.front().is_some_and(|c| t.saturating_sub(c.born) >= self.life) {
            self.alive.pop_front();
        }
        if self.every * u32::try_from(self.made).unwrap_or(u32::MAX) <= t {
            self.alive.push_back(make(t)?);
            self.made += 1;
        }
        Ok(())
    }

    pub(super) fn alive(&self) -> u64 {
        self.alive.len() as u64
    }

    pub(super) fn made(&self) -> u64 {
        self.made
    }

    pub(super) fn clear(&mut self) {
        self.alive.clear();
    }
}

fn make(born: Duration) -> Result<Child> {
    let netns = Netns::new("soak-child").context("making a child namespace")?;
    let (listener, sockets) = netns
        .run(|| -> std::io::Result<_> {
            let listener = TcpListener::bind(LISTEN)?;
            let addr: SocketAddr = listener.local_addr()?;
            let mut sockets = Vec::new();
            for _ in 0..CONNECTIONS {
                sockets.push(TcpStream::connect(addr)?);
                sockets.push(listener.accept()?.0);
            }
            Ok((listener, sockets))
        })
        .context("connecting in a child namespace")?;
    Ok(Child { born, _sockets: sockets, _listener: listener, _netns: netns })
}
