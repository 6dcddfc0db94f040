//! Wire events decoded into the domain: what happened to which connection, and who did it.

use std::{borrow::Cow, fmt, net::SocketAddr};

use serde::Serialize;
use tcptrace_common::{self as wire, kind};

use crate::conn::{Conn, ip_from_bytes};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Connect,
    Accept,
    /// Server-side handshake completed (fentry/kprobe paths); see `tcptrace_common::kind`.
    Established,
    Close,
    /// `connect()` failed with `EADDRNOTAVAIL`: the ephemeral range toward that destination
    /// is exhausted. Only the remote end is known.
    ConnectFailed,
}

impl EventKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Accept => "accept",
            Self::Established => "established",
            Self::Close => "close",
            Self::ConnectFailed => "connect_failed",
        }
    }
}

/// A decoded connection event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub conn: Conn,
    /// Kernel address of the socket: links a close to its open.
    pub sock: u64,
    pub ts_ns: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub comm: Comm,
}

/// A task's `comm` as the kernel sent it: up to 15 bytes, NUL-padded. Kept as bytes, so
/// that decoding an event allocates nothing; only the events view turns it into text.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Comm([u8; 16]);

impl Comm {
    /// The name, lossily as UTF-8 (the kernel copies whatever bytes the task chose).
    #[must_use]
    pub fn as_str(&self) -> Cow<'_, str> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        String::from_utf8_lossy(&self.0[..len])
    }
}

impl From<&str> for Comm {
    /// The first 15 bytes of `name`, as the kernel truncates it.
    fn from(name: &str) -> Self {
        let mut raw = [0; 16];
        let len = name.len().min(15);
        raw[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self(raw)
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_str(), f)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {expected}", expected = size_of::<wire::Event>())]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
}

impl Event {
    /// Decodes one ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < size_of::<wire::Event>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: the length was checked; `wire::Event` is plain old data and the read is
        // unaligned-safe.
        let raw: wire::Event = unsafe { bytes.as_ptr().cast::<wire::Event>().read_unaligned() };
        Self::from_wire(&raw)
    }

    pub fn from_wire(raw: &wire::Event) -> Result<Self, DecodeError> {
        let kind = match raw.kind {
            kind::CONNECT => EventKind::Connect,
            kind::ACCEPT => EventKind::Accept,
            kind::ESTABLISHED => EventKind::Established,
            kind::CLOSE => EventKind::Close,
            kind::CONNECT_FAILED => EventKind::ConnectFailed,
            other => return Err(DecodeError::Kind(other)),
        };
        let family = u16::from(raw.family);
        if family != wire::AF_INET && family != wire::AF_INET6 {
            return Err(DecodeError::Family(raw.family));
        }
        let local = SocketAddr::new(ip_from_bytes(family, &raw.laddr), raw.lport);
        let remote = SocketAddr::new(ip_from_bytes(family, &raw.raddr), raw.rport);
        Ok(Self {
            kind,
            conn: Conn::new(raw.netns, local, remote),
            sock: raw.sock,
            ts_ns: raw.ts_ns,
            pid: raw.tgid,
            tid: raw.pid,
            comm: Comm(raw.comm),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;

    fn raw(kind: u8, family: u16) -> wire::Event {
        let mut e = wire::Event {
            kind,
            family: family as u8,
            lport: 8080,
            rport: 40000,
            netns: 4_026_531_840,
            tgid: 42,
            pid: 43,
            sock: 0xffff_8880_0000_1000,
            ts_ns: 7,
            ..wire::Event::default()
        };
        e.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.raddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        e.comm[..4].copy_from_slice(b"curl");
        e
    }

    /// The bytes of a record, as the ring buffer holds them.
    fn bytes_of(r: &wire::Event) -> &[u8] {
        // SAFETY: `wire::Event` is plain old data without implicit padding.
        unsafe {
            std::slice::from_raw_parts((&raw const *r).cast::<u8>(), size_of::<wire::Event>())
        }
    }

    #[test]
    fn decodes_ipv4_accept() {
        let r = raw(kind::ACCEPT, wire::AF_INET);
        let e = Event::decode(bytes_of(&r)).unwrap();
        assert_eq!(e.kind, EventKind::Accept);
        assert_eq!(e.conn.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.conn.remote, "127.0.0.2:40000".parse().unwrap());
        assert_eq!((e.pid, e.tid, &*e.comm.as_str()), (42, 43, "curl"));
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert_eq!(Event::decode(&[0u8; 10]), Err(DecodeError::Size(10)));
        assert_eq!(Event::from_wire(&raw(9, wire::AF_INET)), Err(DecodeError::Kind(9)));
        assert_eq!(Event::from_wire(&raw(kind::CLOSE, 1)), Err(DecodeError::Family(1)));
    }

    #[test]
    fn mapped_ipv6_decodes_as_ipv4() {
        let mut r = raw(kind::CONNECT, wire::AF_INET6);
        let mapped: std::net::Ipv6Addr = "::ffff:127.0.0.3".parse().unwrap();
        r.raddr = mapped.octets();
        r.laddr = std::net::Ipv6Addr::LOCALHOST.octets();
        let e = Event::from_wire(&r).unwrap();
        assert_eq!(e.conn.remote, "127.0.0.3:40000".parse().unwrap());
        assert_eq!(e.conn.local, "[::1]:8080".parse().unwrap());
    }

    // ---- fuzz tier (crate::fuzz): any record; and records built from events ----

    const KINDS: [(u8, EventKind); 5] = [
        (kind::CONNECT, EventKind::Connect),
        (kind::ACCEPT, EventKind::Accept),
        (kind::ESTABLISHED, EventKind::Established),
        (kind::CLOSE, EventKind::Close),
        (kind::CONNECT_FAILED, EventKind::ConnectFailed),
    ];

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        /// A BPF side of another version may send anything: a record decodes or is
        /// refused, for its size, kind or family, and never panics.
        #[test]
        fn any_record_decodes_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            match Event::decode(&bytes) {
                Ok(e) => {
                    prop_assert!(KINDS.iter().any(|&(_, k)| k == e.kind));
                    let _ = e.comm.as_str();
                }
                Err(DecodeError::Size(n)) => prop_assert!(n == bytes.len() && n < 88),
                Err(DecodeError::Kind(k)) => prop_assert!(KINDS.iter().all(|&(w, _)| w != k)),
                Err(DecodeError::Family(f)) => {
                    prop_assert!(u16::from(f) != wire::AF_INET && u16::from(f) != wire::AF_INET6);
                }
            }
        }

        #[test]
        fn records_built_from_events_decode_back(
            (wire_kind, kind) in prop::sample::select(&KINDS[..]),
            (v6, local, remote) in (any::<bool>(), crate::fuzz::socket_addr(), crate::fuzz::socket_addr()),
            (netns, tgid, pid, sock, ts_ns) in any::<(u32, u32, u32, u64, u64)>(),
            (comm, pad, tail) in any::<([u8; 16], [u8; 6], Vec<u8>)>(),
        ) {
            let octets = |addr: SocketAddr| match (addr.ip(), v6) {
                (IpAddr::V4(ip), false) => {
                    let mut field = [0; 16];
                    field[..4].copy_from_slice(&ip.octets());
                    field
                }
                (IpAddr::V4(ip), true) => ip.to_ipv6_mapped().octets(),
                (IpAddr::V6(ip), _) => ip.octets(),
            };
            let r = wire::Event {
                ts_ns,
                sock,
                netns,
                tgid,
                pid,
                lport: local.port(),
                rport: remote.port(),
                kind: wire_kind,
                family: if v6 { wire::AF_INET6 } else { wire::AF_INET } as u8,
                _pad: pad,
                laddr: octets(local),
                raddr: octets(remote),
                comm,
            };
            let family = u16::from(r.family);
            let at = |field: &[u8; 16], port| SocketAddr::new(ip_from_bytes(family, field), port);
            let expected = Event {
                kind,
                conn: Conn::new(netns, at(&r.laddr, r.lport), at(&r.raddr, r.rport)),
                sock,
                ts_ns,
                pid: tgid,
                tid: pid,
                comm: Comm(comm),
            };
            // What the ring adds after a record (alignment) is not part of it.
            let mut bytes = bytes_of(&r).to_vec();
            bytes.extend(tail);
            prop_assert_eq!(Event::decode(&bytes), Ok(expected));
        }
    }
}
