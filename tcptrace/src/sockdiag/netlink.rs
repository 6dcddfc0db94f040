//! The netlink side of sock_diag: one `NETLINK_SOCK_DIAG` socket, a `SOCK_DIAG_BY_FAMILY`
//! dump request for TCP sockets in some states, and the datagrams of the reply, read to
//! `NLMSG_DONE`. Only each record's fixed header is decoded, plus the one attribute
//! `--cgroup` needs.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netlink_packet_core::{
    ErrorMessage, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

/// Why a `NETLINK_SOCK_DIAG` socket could not be opened: the step, and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("opening a NETLINK_SOCK_DIAG socket: {step}")]
pub struct OpenError {
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

/// Why one dump did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("send")]
    Send(#[source] io::Error),
    #[error("recv")]
    Recv(#[source] io::Error),
    #[error("no answer from the kernel in {0:?}")]
    Timeout(Duration),
    #[error("a {len}-byte datagram overflowed the {buf}-byte buffer")]
    Overflow { len: usize, buf: usize },
    #[error("the kernel closed the dump without NLMSG_DONE")]
    Unfinished,
    #[error(
        "reply for request {got_seq} to port {got_port}, expected request {seq} to port {port}"
    )]
    Foreign { got_seq: u32, got_port: u32, seq: u32, port: u32 },
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("unexpected netlink message type {0}")]
    UnexpectedType(u16),
    /// The kernel's own error code, in `NLMSG_DONE` or `NLMSG_ERROR`.
    #[error("{}", if *.in_done { "the kernel ended the dump with an error" } else { "the kernel answered NLMSG_ERROR" })]
    Kernel {
        in_done: bool,
        #[source]
        source: io::Error,
    },
}

/// Netlink dumps arrive in datagrams of at most 32 KiB (the kernel caps
/// `max_recvmsg_len`); twice that leaves room and `MSG_TRUNC` catches the rest.
const RECV_BUF_LEN: usize = 64 * 1024;
/// Asked for as `SO_RCVBUF`; the kernel clamps it to `net.core.rmem_max`.
const SOCKET_RCVBUF: libc::c_int = 1 << 20;
/// A dump that stalls this long between two datagrams is broken, not slow.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Sequence numbers for requests, unique within the process so that a reply can never be
/// taken for another request's.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);

/// A `NETLINK_SOCK_DIAG` socket in the namespace of the thread that opened it.
pub(super) struct DiagSocket {
    socket: Socket,
    /// Our netlink port id: the kernel addresses its replies to it.
    port: u32,
    buf: Vec<u8>,
}

impl DiagSocket {
    pub(super) fn open() -> Result<Self, OpenError> {
        let at = |step| move |source| OpenError { step, source };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(at("socket"))?;
        if let Err(e) = socket.set_rx_buf_sz(SOCKET_RCVBUF) {
            log::debug!("sock_diag: SO_RCVBUF: {e}");
        }
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs().cast_signed(), 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|errno| at("SO_RCVTIMEO")(errno.into()))?;
        let port = socket.bind_auto().map_err(at("bind"))?.port_number();
        socket.connect(&netlink_sys::SocketAddr::new(0, 0)).map_err(at("connect"))?;
        Ok(Self { socket, port, buf: vec![0; RECV_BUF_LEN] })
    }

    /// One dump request for `family`, read to `NLMSG_DONE`.
    pub(super) fn dump(
        &mut self,
        family: u8,
        states: &StateFlags,
        extensions: ExtensionFlags,
        sink: &mut dyn FnMut(&InetResponseHeader, &[u8]),
    ) -> Result<(), DumpError> {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let request = dump_request(family, states, extensions, seq);
        self.socket.send(&request, 0).map_err(DumpError::Send)?;
        loop {
            let len = loop {
                // MSG_TRUNC makes recv return the datagram's real length even if it did
                // not fit, so a short buffer shows instead of silently losing sockets.
                match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Ok(len) => break len,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(DumpError::Timeout(RECV_TIMEOUT));
                    }
                    Err(e) => return Err(DumpError::Recv(e)),
                }
            };
            if len > self.buf.len() {
                return Err(DumpError::Overflow { len, buf: self.buf.len() });
            }
            if len == 0 {
                return Err(DumpError::Unfinished);
            }
            if parse_datagram(&self.buf[..len], seq, self.port, sink)? == Progress::Done {
                return Ok(());
            }
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets of `family` in `states`, with the
/// attributes `extensions` asks for.
fn dump_request(family: u8, states: &StateFlags, extensions: ExtensionFlags, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let mut message = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions,
            states: states.clone(),
            socket_id,
        })
        .into(),
    );
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

const INET_DIAG_MSG_LEN: usize = 72;

/// Walks the netlink messages of one datagram. Socket records go to `sink`; only their
/// fixed header is decoded (the attributes that follow are not needed, and skipping them
/// saves a few allocations per socket, which adds up over 100,000 sockets).
fn parse_datagram(
    mut datagram: &[u8],
    seq: u32,
    port: u32,
    sink: &mut dyn FnMut(&InetResponseHeader, &[u8]),
) -> Result<Progress, DumpError> {
    let malformed = |what| {
        move |e: netlink_packet_core::DecodeError| DumpError::Malformed { what, why: e.to_string() }
    };
    while !datagram.is_empty() {
        let message = NetlinkBuffer::new_checked(datagram).map_err(malformed("netlink message"))?;
        let len = message.length() as usize;
        if message.sequence_number() != seq || message.port_number() != port {
            return Err(DumpError::Foreign {
                got_seq: message.sequence_number(),
                got_port: message.port_number(),
                seq,
                port,
            });
        }
        match message.message_type() {
            SOCK_DIAG_BY_FAMILY => {
                let header = InetResponseHeader::parse(message.payload())
                    .map_err(malformed("inet_diag_msg"))?;
                // The attributes follow the 72-byte `inet_diag_msg`.
                sink(&header, message.payload().get(INET_DIAG_MSG_LEN..).unwrap_or_default());
            }
            NLMSG_NOOP => {}
            NLMSG_DONE | NLMSG_ERROR => {
                let control = NetlinkMessage::<SockDiagMessage>::deserialize(&datagram[..len])
                    .map_err(malformed("netlink control message"))?;
                match control.payload {
                    // The errno is the code negated. A code of i32::MIN has none; it stays
                    // as it is rather than overflowing (and `ErrorMessage::to_io`, which
                    // takes `abs`, would overflow on it too).
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        let source = io::Error::from_raw_os_error(done.code.wrapping_neg());
                        return Err(DumpError::Kernel { in_done: true, source });
                    }
                    NetlinkPayload::Done(_) => return Ok(Progress::Done),
                    NetlinkPayload::Error(ErrorMessage { code: Some(code), .. }) => {
                        let source = io::Error::from_raw_os_error(code.get().wrapping_abs());
                        return Err(DumpError::Kernel { in_done: false, source });
                    }
                    // An ACK: not asked for, harmless.
                    _ => {}
                }
            }
            other => return Err(DumpError::UnexpectedType(other)),
        }
        // Messages start on 4-byte boundaries (NLMSG_ALIGN).
        datagram = datagram.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(Progress::More)
}

/// `INET_DIAG_CGROUP_ID` (attribute 21, a u64) from the attributes of one sock_diag
/// record; 0 when absent (kernels before 5.9, or without `CONFIG_SOCK_CGROUP_DATA`).
#[must_use]
pub(super) fn cgroup_id_attr(attrs: &[u8]) -> u64 {
    const INET_DIAG_CGROUP_ID: u16 = 21;
    attr(attrs, INET_DIAG_CGROUP_ID)
        .and_then(|value| value.get(..8))
        .map_or(0, |v| u64::from_ne_bytes(v.try_into().expect("8 bytes")))
}

/// `INET_DIAG_SKMEMINFO` (attribute 7: `u32 meminfo[SK_MEMINFO_VARS]`, what `ss -m` shows),
/// sent for full sockets when the request asked for it; `None` for timewait and request
/// sockets, or an older kernel's shorter array than the fields read here.
#[must_use]
pub(super) fn sk_meminfo_attr(attrs: &[u8]) -> Option<super::SkMemInfo> {
    const INET_DIAG_SKMEMINFO: u16 = 7;
    // SK_MEMINFO_RMEM_ALLOC 0, RCVBUF 1, WMEM_ALLOC 2, SNDBUF 3, FWD_ALLOC 4,
    // WMEM_QUEUED 5, OPTMEM 6, BACKLOG 7, DROPS 8 (include/uapi/linux/sock_diag.h, 4.7+).
    let value = attr(attrs, INET_DIAG_SKMEMINFO)?;
    let field = |i: usize| {
        value.get(i * 4..i * 4 + 4).map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    };
    Some(super::SkMemInfo {
        buffer_bytes: field(0)?.saturating_add(field(4)?).saturating_add(field(5)?),
        drops: field(8)?,
    })
}

/// The value of the first netlink attribute of `kind` among `attrs`.
fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let this = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        if this == kind {
            return Some(&attrs[4..len]);
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::num::NonZeroI32;

    use netlink_packet_core::{DoneMessage, Emitable};
    use netlink_packet_sock_diag::{AF_INET6, inet::InetResponse};
    use proptest::prelude::*;

    use super::*;
    use crate::conn::Conn;
    use crate::sockdiag::states;

    // ---- pure: request and reply encoding ----

    fn serialize(header: NetlinkHeader, payload: NetlinkPayload<SockDiagMessage>) -> Vec<u8> {
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    fn reply_header(seq: u32, port: u32) -> NetlinkHeader {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.port_number = port;
        header.flags = netlink_packet_core::NLM_F_MULTIPART;
        header
    }

    fn socket_record(
        seq: u32,
        port: u32,
        state: u8,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Vec<u8> {
        let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        let mut socket_id = if local.is_ipv4() { SocketId::new_v4() } else { SocketId::new_v6() };
        socket_id.source_address = local.ip();
        socket_id.source_port = local.port();
        socket_id.destination_address = remote.ip();
        socket_id.destination_port = remote.port();
        let response = InetResponse {
            header: InetResponseHeader {
                family,
                state,
                timer: None,
                socket_id,
                recv_queue: 0,
                send_queue: 0,
                uid: 0,
                inode: 4242,
            },
            nlas: std::iter::empty().collect(),
        };
        serialize(reply_header(seq, port), SockDiagMessage::InetResponse(Box::new(response)).into())
    }

    fn done(seq: u32, port: u32, code: i32) -> Vec<u8> {
        let mut done = DoneMessage::default();
        done.code = code;
        serialize(reply_header(seq, port), NetlinkPayload::Done(done))
    }

    fn collect(
        datagram: &[u8],
        seq: u32,
        port: u32,
    ) -> Result<(Progress, Vec<(u8, Conn)>), DumpError> {
        let mut got = Vec::new();
        let progress = parse_datagram(datagram, seq, port, &mut |h, _| {
            let id = &h.socket_id;
            got.push((
                h.state,
                Conn::new(
                    7,
                    SocketAddr::new(id.source_address, id.source_port),
                    SocketAddr::new(id.destination_address, id.destination_port),
                ),
            ));
        })?;
        Ok((progress, got))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn request_asks_the_kernel_for_live_tcp_states_only() {
        let request = dump_request(AF_INET6, &states::live(), ExtensionFlags::empty(), 77);
        let nl = NetlinkBuffer::new_checked(&request[..]).unwrap();
        assert_eq!(nl.message_type(), SOCK_DIAG_BY_FAMILY);
        assert_eq!(nl.flags(), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(nl.sequence_number(), 77);
        // struct inet_diag_req_v2: family, protocol, ext, pad, idiag_states (u32), id.
        let body = nl.payload();
        assert_eq!(body.len(), 56);
        assert_eq!((body[0], body[1], body[2]), (AF_INET6, IPPROTO_TCP, 0));
        let states = u32::from_ne_bytes(body[4..8].try_into().unwrap());
        assert_eq!(states, (1 << 1) | (1 << 8), "TCPF_ESTABLISHED | TCPF_CLOSE_WAIT");
    }

    #[test]
    fn datagram_with_records_then_done() {
        let mut datagram = socket_record(5, 99, 1, sa("127.0.0.2:80"), sa("127.0.0.3:40000"));
        datagram.extend(socket_record(
            5,
            99,
            8,
            sa("[::ffff:10.1.2.3]:443"),
            sa("[::ffff:127.0.0.9]:5"),
        ));
        datagram.extend(socket_record(5, 99, 1, sa("[::1]:22"), sa("[::1]:50000")));
        let (progress, got) = collect(&datagram, 5, 99).unwrap();
        assert_eq!(progress, Progress::More);
        assert_eq!(
            got,
            vec![
                (1, Conn::new(7, sa("127.0.0.2:80"), sa("127.0.0.3:40000"))),
                // IPv4 peers of dual-stack sockets come out as IPv4.
                (8, Conn { netns: 7, local: sa("10.1.2.3:443"), remote: sa("127.0.0.9:5") }),
                (1, Conn::new(7, sa("[::1]:22"), sa("[::1]:50000"))),
            ]
        );
        let (progress, got) = collect(&done(5, 99, 0), 5, 99).unwrap();
        assert_eq!((progress, got.len()), (Progress::Done, 0));
    }

    #[test]
    fn kernel_errors_and_foreign_replies_are_errors() {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-libc::EPERM);
        let nack = serialize(reply_header(5, 99), NetlinkPayload::Error(error));
        let e = collect(&nack, 5, 99).unwrap_err();
        assert!(e.to_string().contains("NLMSG_ERROR"), "{e}");
        let DumpError::Kernel { source, .. } = e else { panic!("not the kernel's error") };
        assert_eq!(source.raw_os_error(), Some(libc::EPERM));

        let e = collect(&done(5, 99, -libc::EINTR), 5, 99).unwrap_err();
        assert!(e.to_string().contains("ended the dump"), "{e}");

        let stale = socket_record(4, 99, 1, sa("127.0.0.2:80"), sa("127.0.0.3:40000"));
        assert!(collect(&stale, 5, 99).is_err());
        assert!(collect(&stale[..20], 4, 99).is_err(), "truncated message");
    }

    #[test]
    fn an_error_code_without_an_errno_is_an_error_not_an_overflow() {
        // Found by the fuzz tier: -i32::MIN overflowed (a panic in a debug build).
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(i32::MIN);
        let nack = serialize(reply_header(5, 99), NetlinkPayload::Error(error));
        for datagram in [nack, done(5, 99, i32::MIN)] {
            let e = collect(&datagram, 5, 99).unwrap_err();
            let DumpError::Kernel { source, .. } = e else { panic!("not the kernel's error") };
            assert_eq!(source.raw_os_error(), Some(i32::MIN));
        }
    }

    #[test]
    fn cgroup_id_attribute_is_found_among_others() {
        let mut attrs = Vec::new();
        // INET_DIAG_MARK (15): u32, then INET_DIAG_CGROUP_ID (21): u64.
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&15u16.to_ne_bytes());
        attrs.extend_from_slice(&7u32.to_ne_bytes());
        attrs.extend_from_slice(&12u16.to_ne_bytes());
        attrs.extend_from_slice(&21u16.to_ne_bytes());
        attrs.extend_from_slice(&4242u64.to_ne_bytes());
        assert_eq!(cgroup_id_attr(&attrs), 4242);
        assert_eq!(cgroup_id_attr(&attrs[..8]), 0);
        assert_eq!(cgroup_id_attr(&[1, 0]), 0);
    }

    // ---- fuzz tier (crate::fuzz): any datagram, and datagrams built from records ----

    const SEQ: u32 = 5;
    const PORT: u32 = 99;
    /// `INET_DIAG_CGROUP_ID`.
    const CGROUP_ID: u16 = 21;

    /// `addr` in the other family if it is not in the one asked for: IPv4 as IPv4-mapped
    /// IPv6, IPv6 as its last four bytes.
    fn in_family(addr: SocketAddr, ipv6: bool) -> SocketAddr {
        let ip = match (addr.ip(), ipv6) {
            (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
            (IpAddr::V6(v6), false) => {
                let [.., a, b, c, d] = v6.octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            (ip, _) => ip,
        };
        SocketAddr::new(ip, addr.port())
    }

    /// A socket record as the kernel sends it: state, local and remote, one family.
    fn record() -> impl Strategy<Value = (u8, SocketAddr, SocketAddr)> {
        (any::<u8>(), any::<bool>(), crate::fuzz::socket_addr(), crate::fuzz::socket_addr())
            .prop_map(|(state, v6, l, r)| (state, in_family(l, v6), in_family(r, v6)))
    }

    /// One message of a reply to request SEQ of port PORT: a socket record, a done or an
    /// error with any code, or any header and payload; then perhaps cut short.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        let code =
            prop_oneof![Just(0), Just(i32::MIN), Just(i32::MAX), -200..=200i32, any::<i32>()];
        let raw = (any::<u16>(), prop::collection::vec(any::<u8>(), 0..120), -20..20i64).prop_map(
            |(kind, payload, skew)| {
                let len = i64::try_from(16 + payload.len()).expect("short") + skew;
                let mut header = reply_header(SEQ, PORT);
                header.length = u32::try_from(len.max(0)).expect("short");
                header.message_type = kind;
                let mut m = vec![0; 16];
                header.emit(&mut m);
                m.extend(payload);
                m
            },
        );
        let whole = prop_oneof![
            3 => record().prop_map(|(state, l, r)| socket_record(SEQ, PORT, state, l, r)),
            2 => code.clone().prop_map(|code| done(SEQ, PORT, code)),
            2 => code.prop_map(|code| {
                let mut error = ErrorMessage::default();
                error.code = NonZeroI32::new(code);
                serialize(reply_header(SEQ, PORT), NetlinkPayload::Error(error))
            }),
            1 => Just(serialize(reply_header(SEQ, PORT), NetlinkPayload::Noop)),
            2 => raw,
        ];
        (whole, any::<prop::sample::Index>(), prop::bool::weighted(0.2)).prop_map(
            |(mut m, at, cut)| {
                if cut {
                    m.truncate(at.index(m.len() + 1));
                }
                m
            },
        )
    }

    /// Messages one after another, with a few bytes overwritten; or any bytes at all.
    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        let built = (
            prop::collection::vec(message(), 0..6),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        )
            .prop_map(|(messages, writes)| {
                let mut datagram = messages.concat();
                for (at, byte) in writes {
                    if !datagram.is_empty() {
                        let at = at.index(datagram.len());
                        datagram[at] = byte;
                    }
                }
                datagram
            });
        prop_oneof![4 => built, 1 => prop::collection::vec(any::<u8>(), 0..300)]
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn any_datagram_is_walked_or_refused(datagram in datagram()) {
            let mut records = 0;
            let _ = parse_datagram(&datagram, SEQ, PORT, &mut |_, attrs| {
                records += 1;
                let _ = cgroup_id_attr(attrs);
            });
            prop_assert!(records * (16 + INET_DIAG_MSG_LEN) <= datagram.len());
        }

        #[test]
        fn records_built_parse_back_to_them(
            records in prop::collection::vec(record(), 0..8),
            end in any::<bool>(),
        ) {
            let mut datagram: Vec<u8> =
                records.iter().flat_map(|&(s, l, r)| socket_record(SEQ, PORT, s, l, r)).collect();
            if end {
                datagram.extend(done(SEQ, PORT, 0));
            }
            let expected: Vec<_> =
                records.iter().map(|&(s, l, r)| (s, Conn::new(7, l, r))).collect();
            let progress = if end { Progress::Done } else { Progress::More };
            prop_assert_eq!(collect(&datagram, SEQ, PORT).ok(), Some((progress, expected)));
        }

        #[test]
        fn any_attributes_are_walked(attrs in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = cgroup_id_attr(&attrs);
        }

        /// Attributes of any kind and length, the cgroup id among them or not, with the
        /// nested and byte-order flags on its kind or not.
        #[test]
        fn cgroup_id_is_found_among_any_attributes(
            others in prop::collection::vec(
                (any::<u16>().prop_filter("not the cgroup id", |k| k & 0x3fff != CGROUP_ID),
                 prop::collection::vec(any::<u8>(), 0..20)),
                0..6,
            ),
            cgroup in prop::option::of((any::<u64>(), 0..=3u16, any::<prop::sample::Index>())),
        ) {
            let mut attrs = Vec::new();
            let mut put = |kind: u16, payload: &[u8]| {
                let len = u16::try_from(4 + payload.len()).expect("short");
                attrs.extend(len.to_ne_bytes());
                attrs.extend(kind.to_ne_bytes());
                attrs.extend(payload);
                attrs.resize(attrs.len().next_multiple_of(4), 0);
            };
            let at = cgroup.map(|(_, _, at)| at.index(others.len() + 1));
            for (i, (kind, payload)) in others.iter().enumerate() {
                if let (Some(at), Some((id, flags, _))) = (at, cgroup) && at == i {
                    put(CGROUP_ID | flags << 14, &id.to_ne_bytes());
                }
                put(*kind, payload);
            }
            if let (Some(at), Some((id, flags, _))) = (at, cgroup) && at == others.len() {
                put(CGROUP_ID | flags << 14, &id.to_ne_bytes());
            }
            prop_assert_eq!(cgroup_id_attr(&attrs), cgroup.map_or(0, |(id, _, _)| id));
        }
    }
}
