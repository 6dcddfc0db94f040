//! Connections: client sockets bound to a chosen source address, and their tuples as `ss`
//! shows them (what the expected counts are computed from).

use std::net::{IpAddr, SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};

use crate::Netns;

/// One end of a connection as `ss` would print it: local and peer address from
/// getsockname/getpeername, IPv4-mapped IPv6 addresses shown as IPv4 (as tcptrace does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

impl Tuple {
    /// The tuple of a connected socket.
    #[must_use]
    pub fn of(stream: &TcpStream) -> Self {
        let local = stream.local_addr().expect("getsockname");
        let peer = stream.peer_addr().expect("getpeername");
        Self { local: canonical(local), peer: canonical(peer) }
    }

    /// The same connection seen from the other end.
    #[must_use]
    pub fn reversed(self) -> Self {
        Self { local: self.peer, peer: self.local }
    }
}

/// `::ffff:a.b.c.d` becomes `a.b.c.d` (only mapped addresses: `::1` stays IPv6).
#[must_use]
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    SocketAddr::new(ip, addr.port())
}

/// The tuples of the given sockets.
pub fn tuples<'a>(streams: impl IntoIterator<Item = &'a TcpStream>) -> Vec<Tuple> {
    streams.into_iter().map(Tuple::of).collect()
}

/// Opens `count` connections to `to` from `from` (bound to `from:0` first, so the kernel
/// picks the ephemeral port), created inside `ns`. Each connect returns after the
/// handshake.
#[must_use]
pub fn connect(ns: &Netns, from: IpAddr, to: SocketAddr, count: usize) -> Vec<TcpStream> {
    ns.run(move || {
        (0..count)
            .map(|i| {
                let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)
                    .unwrap_or_else(|e| panic!("socket for {to}: {e}"));
                sock.bind(&SocketAddr::new(from, 0).into())
                    .unwrap_or_else(|e| panic!("bind {from}:0 (connection {i}): {e}"));
                sock.connect(&to.into())
                    .unwrap_or_else(|e| panic!("connect {from} -> {to} (connection {i}): {e}"));
                TcpStream::from(sock)
            })
            .collect()
    })
}
