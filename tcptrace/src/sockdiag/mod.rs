//! Every read of the kernel's socket tables: netlink `sock_diag` dumps (what `ss` reads),
//! in every network namespace on the box, with what `/proc` adds.
//!
//! - [`netlink`]: the `NETLINK_SOCK_DIAG` socket, the dump request and its reply;
//! - [`netns`]: finding every network namespace and running work inside each;
//! - [`procfs`]: which processes hold which socket, and sockstat's counts;
//! - here: [`TcpSocket`], the TCP states that matter ([`states`]), [`dump`] (one
//!   namespace), [`Selection`] (the run's filter, as sock_diag applies it) and
//!   [`live_connections`] (every namespace's live connections that pass it: what the ledger
//!   is seeded from and reconciled against).
//!
//! The BPF hooks only see connections change; these dumps say what exists.

pub mod netlink;
pub mod netns;
pub mod procfs;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use netlink_packet_sock_diag::{AF_INET, AF_INET6};

use netlink_packet_sock_diag::inet::ExtensionFlags;
pub use netlink_packet_sock_diag::inet::StateFlags;
pub use netns::{PerNetns, in_every_netns, own_netns};
pub use tcptrace_common::tcp_state;

use crate::{conn::Conn, filter::Filter};

/// What went wrong reading the kernel's socket tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] netlink::OpenError),
    #[error("sock_diag dump of {family} TCP sockets")]
    Dump {
        family: &'static str,
        #[source]
        source: netlink::DumpError,
    },
    #[error("stat /proc/thread-self/ns/net")]
    OwnNetns(#[source] io::Error),
    /// The own namespace is the one that must be read: without it there is no count.
    #[error("dumping the tracer's own network namespace")]
    InOwnNetns(#[source] Box<Error>),
    /// A walk that panicked (a bug, please report it): its pass fails, the next one is
    /// tried, and the process goes on.
    #[error("the walk panicked: {0} (a bug in tcptrace; please report it)")]
    Panicked(String),
}

/// The sets of TCP states tcptrace asks the kernel for. The kernel filters a dump on them
/// (`idiag_states`), so sockets in other states never cross into userspace.
pub mod states {
    use super::{StateFlags, tcp_state};

    /// Live as the ledger counts it: the handshake completed and the local application has
    /// not closed the socket (`ss` shows `ESTABLISHED` and `CLOSE_WAIT`). The same span the
    /// hooks count between open and close.
    #[must_use]
    pub fn live() -> StateFlags {
        StateFlags::ESTABLISHED | StateFlags::CLOSE_WAIT
    }

    /// Every state in which a client socket holds its local port: from `SYN_SENT` until
    /// `TIME_WAIT` ends.
    #[must_use]
    pub fn holding_a_port() -> StateFlags {
        StateFlags::SYN_SENT
            | StateFlags::ESTABLISHED
            | StateFlags::FIN_WAIT1
            | StateFlags::FIN_WAIT2
            | StateFlags::CLOSE_WAIT
            | StateFlags::LAST_ACK
            | StateFlags::CLOSING
            | StateFlags::TIME_WAIT
    }

    #[must_use]
    pub fn is_live(state: u8) -> bool {
        state == tcp_state::ESTABLISHED || state == tcp_state::CLOSE_WAIT
    }

    #[must_use]
    pub fn holds_port(state: u8) -> bool {
        state < 32 && holding_a_port().bits() & (1 << state) != 0
    }
}

/// One TCP socket of a sock_diag dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// For a listener, the remote end is the unspecified address, port 0.
    pub conn: Conn,
    /// One of [`tcp_state`]. A `TIME_WAIT` socket reports its sub-state when it is an
    /// orphaned `FIN_WAIT2` that the kernel turned into a timewait socket.
    pub state: u8,
    /// Inode of the socket file (`/proc/PID/fd/N -> socket:[INODE]`); 0 for sockets no
    /// file holds (`TIME_WAIT`, orphans, request sockets).
    pub inode: u32,
    /// The socket's cgroup v2 id (`INET_DIAG_CGROUP_ID`, Linux 5.9+), for `--cgroup`; 0
    /// when the kernel does not send it.
    pub cgroup: u64,
    /// `idiag_rqueue` (`ss` Recv-Q). For a listener, its accept queue now: connections
    /// that completed the handshake and wait for `accept()`.
    pub rqueue: u32,
    /// `idiag_wqueue` (`ss` Send-Q). For a listener, its backlog (`sk_max_ack_backlog`):
    /// what `listen()` asked for, clamped by `net.core.somaxconn` at that call. The queue
    /// is full past it, so it holds at most backlog + 1.
    pub wqueue: u32,
    /// From a dump that asked for it ([`dump_with_memory`]), of full sockets only.
    pub memory: Option<SkMemInfo>,
}

/// What `INET_DIAG_SKMEMINFO` says of one socket (`ss -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkMemInfo {
    /// Receive queue + forward-allocated + send queue bytes (`r` + `f` + `w` of `ss -m`):
    /// the socket's part of the pages `tcp_mem` caps.
    pub buffer_bytes: u32,
    /// `sk_drops` (`ss -m` `d`). On a listener it counts every `tcp_listendrop()`: a SYN or
    /// a third ACK dropped because its accept queue or SYN queue was full, or the child
    /// socket could not be made.
    pub drops: u32,
}

/// Every TCP socket (IPv4 and IPv6) whose state is in `states`, in the calling thread's
/// network namespace, labelled `netns` (which should be [`own_netns`] of this thread),
/// sorted by 4-tuple, each socket once. Listeners of one `SO_REUSEPORT` group share a
/// 4-tuple and stay apart by their inodes.
///
/// A dump is not atomic: the kernel resumes each datagram at "the n-th socket of hash
/// bucket b", so a connection opened or closed in the same bucket meanwhile can make it
/// skip or repeat a neighbour. Repeats are removed here; a skipped connection is only
/// caught by the hooks or a later dump.
pub fn dump(netns: u32, states: &StateFlags) -> Result<Vec<TcpSocket>, Error> {
    dump_sorted(netns, states, &ExtensionFlags::empty())
}

/// [`dump`], with each full socket's [`SkMemInfo`]: 40 bytes more per socket from the
/// kernel, within the noise of the dump's time (5.7 to 9.3 ms with it, 6.0 to 13.4 ms
/// without, at 10,002 sockets here).
pub fn dump_with_memory(netns: u32, states: &StateFlags) -> Result<Vec<TcpSocket>, Error> {
    dump_sorted(netns, states, &ExtensionFlags::SKMEMINFO)
}

fn dump_sorted(
    netns: u32,
    states: &StateFlags,
    extensions: &ExtensionFlags,
) -> Result<Vec<TcpSocket>, Error> {
    let mut sockets = Vec::new();
    dump_into(netns, states, extensions, |socket| sockets.push(socket))?;
    sockets.sort_unstable_by_key(|s| (s.conn, s.inode));
    sockets.dedup_by_key(|s| (s.conn, s.inode));
    Ok(sockets)
}

/// Dumps the TCP sockets whose state is in `states`, both families, into `sink`.
fn dump_into(
    netns: u32,
    states: &StateFlags,
    extensions: &ExtensionFlags,
    mut sink: impl FnMut(TcpSocket),
) -> Result<(), Error> {
    let mut diag = None;
    // Timewait sockets are not in sockstat's `inuse` but in its `tw` (both families); the
    // kernel filters them by sub-state, which is FIN_WAIT2 for an orphan that went
    // straight to one.
    let time_waits = if states.intersects(StateFlags::TIME_WAIT | StateFlags::FIN_WAIT2) {
        procfs::time_wait_sockets()
    } else {
        Some(0)
    };
    for (family, name) in [(AF_INET, "AF_INET"), (AF_INET6, "AF_INET6")] {
        // Every network namespace shares the one TCP hash table (unless
        // net.ipv4.tcp_child_ehash_entries is set), so each dump walks every TCP socket on
        // the box whatever namespace asks. The per-namespace count of hashed sockets
        // (listening or connected; not TIME_WAIT, not request socks) tells when a walk
        // cannot find anything: empty namespaces and unused families then cost nothing.
        let countable = !states.contains(StateFlags::SYN_RECV) && time_waits == Some(0);
        if countable && procfs::hashed_tcp_sockets(family == AF_INET6) == Some(0) {
            continue;
        }
        let diag = match &mut diag {
            Some(diag) => diag,
            empty @ None => empty.insert(netlink::DiagSocket::open()?),
        };
        diag.dump(family, states, extensions.clone(), &mut |header, attrs| {
            let id = &header.socket_id;
            sink(TcpSocket {
                conn: Conn::new(
                    netns,
                    SocketAddr::new(id.source_address, id.source_port),
                    SocketAddr::new(id.destination_address, id.destination_port),
                ),
                state: header.state,
                inode: header.inode,
                cgroup: netlink::cgroup_id_attr(attrs),
                rqueue: header.recv_queue,
                wqueue: header.send_queue,
                memory: netlink::sk_meminfo_attr(attrs),
            });
        })
        .map_err(|source| Error::Dump { family: name, source })?;
    }
    Ok(())
}

/// The run's filter as it applies to a dump: the filter itself, and the socket inodes
/// that the `--pid` processes held when the dump began (a socket opened in between has its
/// own event).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub filter: Filter,
    held: HashSet<u32>,
}

impl Selection {
    /// Reads what `--pid` needs now (nothing without it): call it before the dump.
    #[must_use]
    pub fn now(filter: &Filter) -> Self {
        let held = if filter.pid.is_empty() {
            HashSet::new()
        } else {
            procfs::sockets_held_by(&filter.pid)
        };
        Self { filter: filter.clone(), held }
    }

    /// Whether a socket of a dump passes every filter. A listener's remote end is
    /// `0.0.0.0:0`, so `--rport` and `--addr` never pass one.
    #[must_use]
    pub fn passes(&self, s: &TcpSocket) -> bool {
        self.filter.matches_socket(&s.conn, s.cgroup, || self.held.contains(&s.inode))
    }
}

/// The live connections of every namespace that could be read, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveConnections {
    /// Each connection once; both ends of a loopback connection appear, as two `Conn`s.
    /// The own namespace's come first.
    pub conns: Vec<Conn>,
    /// Inodes of the network namespaces that were dumped, the tracer's own first.
    pub namespaces: Vec<u32>,
    /// One line per namespace (or group of tasks) that could not be read, and why.
    pub skipped: Vec<String>,
}

impl LiveConnections {
    /// The live sockets of per-namespace dumps that `selection` passes: the one rule of
    /// "live and selected", whether the dump holds live states only or more.
    pub fn of<'a>(
        namespaces: impl IntoIterator<Item = (u32, &'a [TcpSocket])>,
        skipped: Vec<String>,
        selection: &Selection,
    ) -> Self {
        let mut live = Self { skipped, ..Self::default() };
        for (netns, sockets) in namespaces {
            live.namespaces.push(netns);
            live.conns.extend(
                sockets
                    .iter()
                    .filter(|s| states::is_live(s.state) && selection.passes(s))
                    .map(|s| s.conn),
            );
        }
        live
    }
}

/// Every live TCP connection that `filter` selects, in every network namespace that can be
/// found: the calling thread's own, every one a task is in and every one under
/// `/run/netns`.
///
/// Fails only if the own namespace cannot be dumped; a foreign namespace that cannot be
/// entered or dumped is listed in [`LiveConnections::skipped`], and tasks that exit during
/// the walk are passed over without a word.
pub fn live_connections(filter: &Filter) -> Result<LiveConnections, Error> {
    let started = Instant::now();
    let selection = Selection::now(filter);
    let found = in_every_netns(|netns| dump(netns, &states::live()))?;
    let live = LiveConnections::of(
        found.results.iter().map(|(netns, sockets)| (*netns, sockets.as_slice())),
        found.skipped,
        &selection,
    );
    log::debug!(
        "sock_diag: {} live connections in {} network namespaces ({} skipped) in {:?}",
        live.conns.len(),
        live.namespaces.len(),
        live.skipped.len(),
        started.elapsed()
    );
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::{self, Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    fn everything() -> Result<LiveConnections, Error> {
        live_connections(&Filter::default())
    }

    /// The connections of one namespace's live dump.
    fn live_in(netns: u32) -> Vec<Conn> {
        dump(netns, &states::live()).unwrap().into_iter().map(|s| s.conn).collect()
    }
    // ---- live: real sockets on loopback (needs root for the namespace test) ----

    /// Binds a listener on `ip` at a port outside the ephemeral range (32768-60999), from
    /// a start that depends on the pid so that concurrent test runs do not collide.
    fn listen_on(ip: IpAddr) -> TcpListener {
        const FIRST: u16 = 21_000;
        const COUNT: u16 = 1_000;
        let start = (std::process::id() % u32::from(COUNT)) as u16;
        for i in 0..COUNT {
            let port = FIRST + (start + i) % COUNT;
            match TcpListener::bind((ip, port)) {
                Ok(listener) => return listener,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => panic!("bind {ip}:{port}: {e}"),
            }
        }
        panic!("no free port on {ip} in {FIRST}..{}", FIRST + COUNT);
    }

    /// `n` connections to `listener`, accepted: (clients, servers).
    fn connect_n(listener: &TcpListener, n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
        let target = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..n)
            .map(|_| TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap())
            .collect();
        let servers = (0..n).map(|_| listener.accept().unwrap().0).collect();
        (clients, servers)
    }

    /// Both ends of each client's connection, as the snapshot should report them.
    fn both_ends(netns: u32, clients: &[TcpStream]) -> BTreeSet<Conn> {
        clients
            .iter()
            .flat_map(|c| {
                let (local, remote) = (c.local_addr().unwrap(), c.peer_addr().unwrap());
                [Conn::new(netns, local, remote), Conn::new(netns, remote, local)]
            })
            .collect()
    }

    /// The snapshot's connections in `netns` that touch `server`, duplicates kept.
    fn touching(conns: &[Conn], netns: u32, server: SocketAddr) -> Vec<Conn> {
        let server = Conn::new(netns, server, server).local;
        conns
            .iter()
            .filter(|c| c.netns == netns && (c.local == server || c.remote == server))
            .copied()
            .collect()
    }

    fn assert_exactly(got: &[Conn], want: &BTreeSet<Conn>) {
        let got_set: BTreeSet<Conn> = got.iter().copied().collect();
        assert_eq!(got.len(), got_set.len(), "duplicates in {got:?}");
        assert_eq!(&got_set, want);
    }

    #[test]
    fn live_loopback_connections_in_own_netns() {
        const N: usize = 50;
        let own = own_netns().unwrap();
        let v4 = listen_on(IpAddr::V4(Ipv4Addr::new(127, 61, 0, 1)));
        let v6 = listen_on(IpAddr::V6(Ipv6Addr::LOCALHOST));
        // A dual-stack socket bound to an IPv4-mapped address: the kernel reports its
        // accepted sockets as AF_INET6 with mapped addresses.
        let mapped = listen_on("::ffff:127.61.0.3".parse().unwrap());
        let (c4, _s4) = connect_n(&v4, N);
        let (c6, _s6) = connect_n(&v6, N);
        let mapped_target = SocketAddr::new(
            Ipv4Addr::new(127, 61, 0, 3).into(),
            mapped.local_addr().unwrap().port(),
        );
        let cm: Vec<_> = (0..5).map(|_| TcpStream::connect(mapped_target).unwrap()).collect();
        let _sm: Vec<_> = (0..5).map(|_| mapped.accept().unwrap().0).collect();

        let started = Instant::now();
        let snap = everything().unwrap();
        eprintln!(
            "snapshot: {} conns in {} namespaces in {:?}; skipped {:?}",
            snap.conns.len(),
            snap.namespaces.len(),
            started.elapsed(),
            snap.skipped
        );
        assert_eq!(snap.namespaces.first(), Some(&own), "the own namespace comes first");

        let got4 = touching(&snap.conns, own, v4.local_addr().unwrap());
        assert_eq!(got4.len(), 2 * N, "the listener itself must not be reported");
        assert_exactly(&got4, &both_ends(own, &c4));
        assert_exactly(&touching(&snap.conns, own, v6.local_addr().unwrap()), &both_ends(own, &c6));
        let want_mapped = both_ends(own, &cm);
        assert!(want_mapped.iter().all(|c| c.local.is_ipv4() && c.remote.is_ipv4()));
        assert_exactly(&touching(&snap.conns, own, mapped_target), &want_mapped);

        // The single-namespace dump agrees.
        let direct = live_in(own);
        assert_exactly(&touching(&direct, own, v4.local_addr().unwrap()), &both_ends(own, &c4));
    }

    #[test]
    fn connections_in_a_thread_own_netns_are_found_there() {
        const N: usize = 10;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(u32, BTreeSet<Conn>), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let setup = || -> io::Result<(u32, BTreeSet<Conn>, Vec<TcpStream>)> {
                let inode = tcptrace_netns::enter_new()?;
                let v4 = TcpListener::bind((Ipv4Addr::new(127, 62, 0, 1), 21_000))?;
                let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 21_001))?;
                let (mut c, mut s) = connect_n(&v4, N);
                let (c6, s6) = connect_n(&v6, N);
                c.extend(c6);
                s.extend(s6);
                let want = both_ends(inode, &c);
                c.extend(s);
                Ok((inode, want, c))
            };
            match setup() {
                Ok((inode, want, keep)) => {
                    ready_tx.send(Ok((inode, want))).unwrap();
                    // Bounded: the test signals (or drops the sender on panic) long before.
                    let _ = stop_rx.recv_timeout(Duration::from_mins(1));
                    drop(keep);
                }
                Err(e) => ready_tx.send(Err(e.to_string())).unwrap(),
            }
        });
        let (inode, want) = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("namespace thread did not report")
            .expect("setting up the namespace");
        let own = own_netns().unwrap();
        assert_ne!(inode, own);

        let snap = everything().unwrap();
        assert!(snap.namespaces.len() >= 2, "{snap:?}");
        let in_ns: Vec<Conn> = snap.conns.iter().filter(|c| c.netns == inode).copied().collect();
        assert_exactly(&in_ns, &want);
        let own_dump = live_in(own);
        for conn in &want {
            let as_own = Conn { netns: own, ..*conn };
            assert!(!own_dump.contains(&as_own), "{as_own:?} leaked into the own namespace");
        }
        assert!(
            !snap
                .conns
                .iter()
                .any(|c| c.netns != inode && want.contains(&Conn { netns: inode, ..*c }))
        );

        stop_tx.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn close_wait_is_live_fin_wait2_is_not() {
        let own = own_netns().unwrap();
        let listener = listen_on(IpAddr::V4(Ipv4Addr::new(127, 63, 0, 1)));
        let (mut clients, mut servers) = connect_n(&listener, 3);
        // Client 0 closes its socket, client 1 half-closes (shutdown(SHUT_WR)); both send a
        // FIN, so their server ends go to CLOSE_WAIT and they go to FIN_WAIT2. Client 2
        // stays open and must still be seen.
        let kept = clients.pop().unwrap();
        clients[1].shutdown(Shutdown::Write).unwrap();
        let closed = clients.remove(0);
        let (closed_local, server) = (closed.local_addr().unwrap(), closed.peer_addr().unwrap());
        drop(closed);
        let half = clients.pop().unwrap();
        let half_local = half.local_addr().unwrap();
        // Wait for the FINs to land (immediate on loopback, bounded anyway): the server
        // ends read EOF.
        for s in servers.iter_mut().take(2) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0, "expected EOF");
        }

        // The kernel's view across all states, to be sure the test sets up what it claims.
        // The server ACKs a FIN with a delayed ACK, so the clients sit in FIN_WAIT1 for up
        // to ~200 ms before FIN_WAIT2: wait for that, bounded.
        let conn = |l, r| Conn::new(own, l, r);
        let deadline = Instant::now() + Duration::from_secs(5);
        let all = loop {
            let mut all = BTreeMap::new();
            dump_into(own, &StateFlags::all(), &ExtensionFlags::empty(), |socket| {
                all.insert(socket.conn, socket.state);
            })
            .unwrap();
            let fin_wait2 = [closed_local, half_local]
                .iter()
                .all(|&client| all.get(&conn(client, server)) == Some(&5));
            if fin_wait2 || Instant::now() > deadline {
                break all;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            all.get(&conn(server, closed_local)),
            Some(&8),
            "server end of closed: CLOSE_WAIT"
        );
        assert_eq!(
            all.get(&conn(server, half_local)),
            Some(&8),
            "server end of half-closed: CLOSE_WAIT"
        );
        assert_eq!(all.get(&conn(half_local, server)), Some(&5), "half-closed client: FIN_WAIT2");
        assert_eq!(all.get(&conn(closed_local, server)), Some(&5), "closed client: FIN_WAIT2");

        let live = touching(&live_in(own), own, server);
        let kept_local = kept.local_addr().unwrap();
        let want: BTreeSet<Conn> = [
            conn(server, closed_local),
            conn(server, half_local),
            conn(kept_local, server),
            conn(server, kept_local),
        ]
        .into();
        assert_exactly(&live, &want);

        // The server ends stay live until the application closes them.
        servers[1].write_all(b"bye").unwrap();
        drop(servers);
        let live = touching(&live_in(own), own, server);
        assert_exactly(&live, &[conn(kept_local, server)].into());
    }
}
