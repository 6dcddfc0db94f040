//! Servers: listeners created inside a namespace, with a thread that accepts every
//! connection and holds (or closes) the server ends.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use std::{io, mem};

use socket2::{Domain, Socket, Type};

use crate::{Netns, Tuple, WAIT};

/// What a [`Server`] does with the connections it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Keep them open until the test closes them.
    Hold,
    /// Close each one right away (for churn).
    Close,
}

struct ServerState {
    open: Mutex<Vec<(Tuple, TcpStream)>>,
    accepted: AtomicUsize,
    stop: AtomicBool,
}

/// A listener created inside a namespace, with a thread that accepts every connection (the
/// fentry and kprobe paths count the server side from `accept()` returning).
pub struct Server {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    state: Arc<ServerState>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` inside `ns`. An IPv6 wildcard address listens dual-stack, so IPv4
    /// clients arrive as IPv4-mapped IPv6 connections.
    #[must_use]
    pub fn listen(ns: &Netns, addr: SocketAddr, mode: Accepted) -> Self {
        Self::listen_with(ns, addr, mode, false)
    }

    /// Listens on `addr` with `SO_REUSEPORT`, holding what it accepts: call it again with
    /// the same address for another socket of the group (the kernel spreads the
    /// connections over them).
    #[must_use]
    pub fn listen_reuseport(ns: &Netns, addr: SocketAddr) -> Self {
        Self::listen_with(ns, addr, Accepted::Hold, true)
    }

    fn listen_with(ns: &Netns, addr: SocketAddr, mode: Accepted, reuse_port: bool) -> Self {
        let listener = ns.run(move || -> io::Result<TcpListener> {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            sock.set_reuse_port(reuse_port)?;
            if addr.is_ipv6() {
                sock.set_only_v6(false)?;
            }
            sock.bind(&addr.into())?;
            // The kernel caps the backlog at net.core.somaxconn (4096 by default).
            sock.listen(4096)?;
            Ok(sock.into())
        });
        let listener = Arc::new(listener.unwrap_or_else(|e| panic!("listen on {addr}: {e}")));
        let state = Arc::new(ServerState {
            open: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let state = Arc::clone(&state);
            let listener = Arc::clone(&listener);
            thread::Builder::new()
                .name(format!("accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &state, mode))
                .expect("spawn the accept thread")
        };
        Self { addr, listener, state, thread: Some(thread) }
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening socket (for options set after `listen()`, such as `TCP_FASTOPEN`).
    #[must_use]
    pub fn listener(&self) -> &TcpListener {
        &self.listener
    }

    /// Connections accepted so far (closed ones included).
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `count` connections have been accepted.
    pub fn wait_accepted(&self, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.accepted() < count {
            assert!(
                Instant::now() < deadline,
                "{}: accepted {} connections, expected {count}",
                self.addr,
                self.accepted()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The server ends still open.
    #[must_use]
    pub fn open(&self) -> Vec<Tuple> {
        self.lock().iter().map(|(t, _)| *t).collect()
    }

    /// Closes the server ends whose tuple matches, from the calling thread; returns them.
    pub fn close_where(&self, mut matches: impl FnMut(&Tuple) -> bool) -> Vec<Tuple> {
        let closing: Vec<(Tuple, TcpStream)> = {
            let mut open = self.lock();
            let (closing, kept) = mem::take(&mut *open).into_iter().partition(|(t, _)| matches(t));
            *open = kept;
            closing
        };
        closing
            .into_iter()
            .map(|(t, stream)| {
                drop(stream);
                t
            })
            .collect()
    }

    /// Closes the server end of each connection to this listener's port whose client end
    /// is among `clients` (others are ignored, so one list can serve several listeners).
    pub fn close_peers_of(&self, clients: &[Tuple]) {
        let peers: BTreeSet<SocketAddr> =
            clients.iter().filter(|c| c.peer.port() == self.addr.port()).map(|c| c.local).collect();
        let closed = self.close_where(|t| peers.contains(&t.peer));
        assert_eq!(closed.len(), peers.len(), "{}: server ends of {clients:?}", self.addr);
    }

    /// Closes the listener and returns the server ends it accepted, still open: the
    /// connections that outlive their listener.
    #[must_use]
    pub fn close_listener(self) -> Vec<TcpStream> {
        let held = mem::take(&mut *self.lock());
        drop(self);
        held.into_iter().map(|(_, stream)| stream).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Tuple, TcpStream)>> {
        self.state.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Shutting a listener down wakes the accept() blocked on it (with EINVAL).
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Blocking accept() until the listener is shut down: no polling, so the accept hooks see
/// one call per connection (plus the last, failing one).
fn accept_loop(listener: &TcpListener, state: &ServerState, mode: Accepted) {
    loop {
        let accepted = listener.accept();
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, _)) => {
                if mode == Accepted::Hold {
                    let tuple = Tuple::of(&stream);
                    state
                        .open
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((tuple, stream));
                }
                state.accepted.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ECONNABORTED and the like: the client gave up; nothing to count.
            Err(e) => eprintln!("accept on {:?}: {e}", listener.local_addr()),
        }
    }
}
