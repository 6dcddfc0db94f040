//! The sockets of one dump split into the server side (per listener: an accepted
//! connection belongs to the listener on its exact local address, else the wildcard one)
//! and the client side (per destination, the local ports in use).

use hashbrown::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{DestKey, LocalKey, NetnsDump};
use crate::conn::NETNS_UNKNOWN;
use crate::sockdiag::{TcpSocket, states, tcp_state};

/// The sockets of a dump split into server side (by listener) and client side.
pub(super) struct Sides {
    pub(super) listeners: Listeners,
    /// Client sockets holding a port, per destination.
    pub(super) in_use: HashMap<DestKey, u64>,
    /// Of those, the ones whose local address and port another destination uses too.
    pub(super) shared: HashMap<DestKey, u64>,
    /// Client sockets holding a port, per local address and port.
    pub(super) local_uses: HashMap<LocalKey, u32>,
}

/// Which side of a dump one socket counts on.
enum Side {
    /// Accepted by listener `i` (counted if live).
    Server(usize),
    /// A client end holding a port: its destination and its local end.
    Client(DestKey, LocalKey),
    /// A listener, a socket the filter leaves out, or a client end holding no port.
    Neither,
}

impl Sides {
    /// A socket whose local end is a listener's (see [`Listeners::owner`]) is server side,
    /// counted if live; any other is client side, counted if it holds a port. Only sockets
    /// that `passes` are counted, but every listener decides which side a socket is on.
    pub(super) fn of(dumps: &[NetnsDump], passes: &dyn Fn(&TcpSocket) -> bool) -> Self {
        let sockets = || dumps.iter().flat_map(|d| &d.sockets);
        let mut listeners = Listeners::default();
        for socket in sockets() {
            if socket.state == tcp_state::LISTEN {
                listeners.add(socket, passes(socket));
            }
        }
        let mut in_use: HashMap<DestKey, u64> = HashMap::new();
        let mut local_uses: HashMap<LocalKey, u32> = HashMap::new();
        let mut any_shared = false;
        for socket in sockets() {
            match Self::side(&listeners, socket, passes) {
                Side::Server(i) if states::is_live(socket.state) => {
                    listeners.live(i, socket.conn.remote.ip());
                }
                Side::Client(destination, local) => {
                    *in_use.entry(destination).or_default() += 1;
                    let uses = local_uses.entry(local).or_default();
                    *uses += 1;
                    any_shared |= *uses > 1;
                }
                Side::Server(_) | Side::Neither => {}
            }
        }
        // A second walk only when some local port serves several destinations: the
        // common case pays nothing for it.
        let mut shared: HashMap<DestKey, u64> = HashMap::new();
        if any_shared {
            for socket in sockets() {
                if let Side::Client(destination, local) = Self::side(&listeners, socket, passes)
                    && local_uses.get(&local).is_some_and(|&uses| uses > 1)
                {
                    *shared.entry(destination).or_default() += 1;
                }
            }
        }
        Self { listeners, in_use, shared, local_uses }
    }

    fn side(
        listeners: &Listeners,
        socket: &TcpSocket,
        passes: &dyn Fn(&TcpSocket) -> bool,
    ) -> Side {
        let c = &socket.conn;
        if socket.state == tcp_state::LISTEN || !passes(socket) {
            Side::Neither
        } else if let Some(i) = listeners.owner(c.netns, c.local.ip(), c.local.port()) {
            Side::Server(i)
        } else if states::holds_port(socket.state) {
            Side::Client(
                (c.netns, c.local.ip(), c.remote.ip(), c.remote.port()),
                (c.netns, c.local.ip(), c.local.port()),
            )
        } else {
            Side::Neither
        }
    }
}

#[derive(Default)]
pub(super) struct Listeners {
    pub(super) rows: Vec<Listener>,
    index: HashMap<LocalKey, usize>,
    /// The first listener per (address, port) in any namespace: for events without a
    /// namespace id.
    any_netns: HashMap<(IpAddr, u16), usize>,
    pub(super) ports: PortSet,
}

pub(super) struct Listener {
    pub(super) key: LocalKey,
    pub(super) inodes: Vec<u32>,
    pub(super) live: u64,
    pub(super) per_remote: HashMap<IpAddr, u64>,
    /// Whether a socket of the group passes the filter itself; a listener that does not
    /// has a row only for the connections that do (under `--rport` or `--addr`, say).
    pub(super) passes: bool,
    /// Per socket of the group: accept queue now, backlog, drops (if the kernel sent
    /// meminfo).
    pub(super) queues: Vec<Queue>,
}

/// One LISTEN socket's accept queue (see [`crate::sockdiag::TcpSocket::rqueue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Queue {
    pub(super) waiting: u32,
    pub(super) backlog: u32,
    pub(super) drops: Option<u32>,
}

impl Listeners {
    fn add(&mut self, socket: &TcpSocket, passes: bool) {
        let (ip, port) = (socket.conn.local.ip(), socket.conn.local.port());
        let key = (socket.conn.netns, ip, port);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.rows.push(Listener {
                key,
                inodes: Vec::new(),
                live: 0,
                per_remote: HashMap::new(),
                passes: false,
                queues: Vec::new(),
            });
            self.rows.len() - 1
        });
        self.any_netns.entry((ip, port)).or_insert(i);
        self.rows[i].inodes.push(socket.inode);
        self.rows[i].passes |= passes;
        self.rows[i].queues.push(Queue {
            waiting: socket.rqueue,
            backlog: socket.wqueue,
            drops: socket.memory.map(|m| m.drops),
        });
        self.ports.insert(port);
    }

    /// The listener a connection with this local end was accepted from: the one on its
    /// exact address, else the IPv4 wildcard, else the IPv6 one (dual-stack).
    /// [`NETNS_UNKNOWN`] (an event without a namespace id) matches any namespace.
    pub(super) fn owner(&self, netns: u32, ip: IpAddr, port: u16) -> Option<usize> {
        if !self.ports.contains(port) {
            return None;
        }
        let lookup = |ip: IpAddr| {
            if netns == NETNS_UNKNOWN {
                self.any_netns.get(&(ip, port)).copied()
            } else {
                self.index.get(&(netns, ip, port)).copied()
            }
        };
        let any_v4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let any_v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        lookup(ip).or_else(|| match ip {
            IpAddr::V4(_) => lookup(any_v4).or_else(|| lookup(any_v6)),
            IpAddr::V6(_) => lookup(any_v6),
        })
    }

    fn live(&mut self, i: usize, remote: IpAddr) {
        let row = &mut self.rows[i];
        row.live += 1;
        *row.per_remote.entry(remote).or_default() += 1;
    }
}

/// A set of port numbers: 8 KiB, one bit a port.
#[derive(Clone, Debug)]
pub(super) struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        Self(Box::new([0; 1024]))
    }
}

impl PortSet {
    fn insert(&mut self, port: u16) {
        self.0[usize::from(port / 64)] |= 1 << (port % 64);
    }

    pub(super) fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }
}
