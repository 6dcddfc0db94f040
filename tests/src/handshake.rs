//! Sockets caught between the moments that make a connection live or not: listeners that
//! never accept (their accept queue is the test's to fill), connects left in `SYN_SENT`,
//! resets, TCP Fast Open, and the kernel's own view of a socket's state and counters.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};
use std::{io, mem};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::{Netns, Tuple, canonical};

/// The kernel's TCP states, as `tcpi_state` reports them (one definition, the wire crate's).
pub use tcptrace_common::tcp_state;

/// A listener made inside `ns` with `backlog`, which nobody accepts from: connections wait
/// in its accept queue (established, so live) until the test accepts or closes it. A full
/// queue drops new SYNs (`LISTENOVERFLOWS`), which holds their connects in `SYN_SENT`; the
/// kernel queues one more than `backlog` (`sk_acceptq_is_full` is `>`, not `>=`).
#[must_use]
pub fn listen_unaccepted(ns: &Netns, addr: SocketAddr, backlog: i32) -> TcpListener {
    ns.run(move || -> io::Result<TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.bind(&addr.into())?;
        sock.listen(backlog)?;
        Ok(sock.into())
    })
    .unwrap_or_else(|e| panic!("listen on {addr} (backlog {backlog}): {e}"))
}

/// The kernel's state of a socket (`TCP_INFO`'s `tcpi_state`, what `ss` prints).
#[must_use]
pub fn state_of(sock: &impl AsRawFd) -> u8 {
    // SAFETY: a zeroed tcp_info is valid, and getsockopt writes at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = libc::socklen_t::try_from(mem::size_of::<libc::tcp_info>()).expect("fits");
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_INFO): {}", io::Error::last_os_error());
    info.tcpi_state
}

/// Waits (bounded) until the kernel says `sock` is in `state`; panics with what it is.
pub fn wait_state(sock: &impl AsRawFd, state: u8, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let now = state_of(sock);
        if now == state {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: state {now}, want {state} within {within:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A connect from `from` to `to` made inside `ns` without waiting for the handshake: the
/// socket is non-blocking and in `SYN_SENT` (or already established) on return.
#[must_use]
pub fn start_connect(ns: &Netns, from: SocketAddr, to: SocketAddr) -> Socket {
    start_connects(ns, from, to, 1).pop().expect("one connect")
}

/// `count` connects from `from` (port 0: the kernel picks) to `to`, started like
/// [`start_connect`] in one go inside `ns`.
#[must_use]
pub fn start_connects(ns: &Netns, from: SocketAddr, to: SocketAddr, count: usize) -> Vec<Socket> {
    ns.run(move || {
        (0..count)
            .map(|i| {
                let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)
                    .unwrap_or_else(|e| panic!("socket for {to} (connect {i}): {e}"));
                sock.bind(&from.into())
                    .unwrap_or_else(|e| panic!("bind {from} (connect {i}): {e}"));
                sock.set_nonblocking(true).expect("O_NONBLOCK");
                match sock.connect(&to.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => panic!("connect {from} -> {to} (connect {i}): {e}"),
                }
                sock
            })
            .collect()
    })
}

/// The tuple of a socket whose connect was started to `to` (no peer address before the
/// handshake ends, so it is the target).
#[must_use]
pub fn tuple_to(sock: &Socket, to: SocketAddr) -> Tuple {
    let local = sock.local_addr().expect("getsockname").as_socket().expect("an inet socket");
    Tuple { local: canonical(local), peer: canonical(to) }
}

/// Closes `stream` with a reset (`SO_LINGER` 0, then `close()`), as health checkers do:
/// the peer's end goes straight to `CLOSE`.
pub fn reset(stream: TcpStream) {
    Socket::from(stream).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
}

/// `TCP_FASTOPEN` on a listener: Fast Open requests are served, up to `queue` pending.
pub fn serve_fastopen(listener: &TcpListener, queue: i32) {
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_FASTOPEN,
            (&raw const queue).cast(),
            libc::socklen_t::try_from(mem::size_of::<i32>()).expect("fits"),
        )
    };
    assert_eq!(rc, 0, "setsockopt(TCP_FASTOPEN): {}", io::Error::last_os_error());
}

/// A connect from `from` to `to` inside `ns` that sends `data` in its SYN
/// (`sendto(MSG_FASTOPEN)`); it returns once the handshake is done. With no cookie for
/// `to` cached yet, the kernel asks for one and sends the data after the handshake.
#[must_use]
pub fn connect_fastopen(
    ns: &Netns,
    from: SocketAddr,
    to: SocketAddr,
    data: &'static [u8],
) -> TcpStream {
    ns.run(move || {
        let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)
            .unwrap_or_else(|e| panic!("socket for {to}: {e}"));
        sock.bind(&from.into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
        let sent = sock
            .send_to_with_flags(data, &SockAddr::from(to), libc::MSG_FASTOPEN)
            .unwrap_or_else(|e| panic!("sendto(MSG_FASTOPEN) {from} -> {to}: {e}"));
        assert_eq!(sent, data.len(), "the SYN's data");
        TcpStream::from(sock)
    })
}

/// One counter of `/proc/net/netstat` (`TcpExt` or `IpExt`) as `ns` sees it, e.g.
/// `SyncookiesRecv` or `TCPFastOpenPassive`: the proof that the kernel took the path a test
/// means to exercise.
#[must_use]
pub fn netstat(ns: &Netns, name: &'static str) -> u64 {
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/netstat"));
    let text = text.expect("read /proc/thread-self/net/netstat");
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { break };
        let value = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.parse().expect("a counter"));
        if let Some(value) = value {
            return value;
        }
    }
    panic!("no {name} in /proc/net/netstat")
}
