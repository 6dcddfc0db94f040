//! The connections that already existed when tracing started, from netlink `sock_diag` (what
//! `ss -t state established state close-wait` reads), in every network namespace on the box.
//!
//! The BPF hooks only see connections change; seeding the ledger with this snapshot makes
//! the counts right from the first second. A connection is live while its socket is
//! `ESTABLISHED` or `CLOSE_WAIT`: the handshake completed and the local application has not
//! closed it yet. That is the same span the hooks count between open and close.
//!
//! A netlink socket answers for the network namespace it was created in, so each foreign
//! namespace is dumped from a short-lived thread that first `setns()`es into it: `setns`
//! with `CLONE_NEWNET` moves only the calling thread.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, Parseable,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, InetResponseHeader, SocketId},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};
use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::conn::Conn;

/// Every live TCP connection on the box at one moment, per network namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Each connection once; both ends of a loopback connection appear, as two `Conn`s.
    /// Sorted within a namespace; the own namespace comes first.
    pub conns: Vec<Conn>,
    /// Inodes of the network namespaces that were dumped, the tracer's own first.
    pub namespaces: Vec<u32>,
    /// One line per namespace (or group of tasks) that could not be read, and why.
    pub skipped: Vec<String>,
}

/// The kernel filters on this (`idiag_states`), so sockets in other states (listeners,
/// `TIME_WAIT`, `FIN_WAIT*`) never cross into userspace.
fn live_states() -> StateFlags {
    StateFlags::ESTABLISHED | StateFlags::CLOSE_WAIT
}

/// Walked per task, not per process: a thread can sit in a namespace of its own
/// (`unshare(CLONE_NEWNET)` in one thread).
const PROC: &str = "/proc";
/// `ip netns add` bind-mounts namespaces here; one can exist with no process in it.
const RUN_NETNS: &str = "/run/netns";
/// Paths kept per namespace, to fall back on when the first one's task has exited.
const MAX_CANDIDATES: usize = 8;

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

/// Inode number of the network namespace the calling thread is in: the namespace a socket
/// it creates belongs to, and the number the BPF side reports (`net->ns.inum`).
///
/// This reads `/proc/thread-self/ns/net` rather than `/proc/self/ns/net`: the two differ
/// only in a thread that has `setns()`ed or `unshare()`d, and then the thread's own is the
/// one its sockets live in.
pub fn own_netns() -> io::Result<u32> {
    let meta = fs::metadata("/proc/thread-self/ns/net")?;
    ns_inode(&meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Every live TCP connection in every network namespace that can be found: the calling
/// thread's own, every one a task is in (`/proc/*/task/*/ns/net`) and every one under
/// `/run/netns`.
///
/// Fails only if the own namespace cannot be dumped; a foreign namespace that cannot be
/// entered or dumped is listed in [`Snapshot::skipped`], and tasks that exit during the walk
/// are passed over without a word.
pub fn snapshot() -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    let found = in_every_netns(dump_current_netns)?;
    let namespaces: Vec<u32> = found.results.iter().map(|&(netns, _)| netns).collect();
    let conns: Vec<Conn> = found.results.into_iter().flat_map(|(_, conns)| conns).collect();
    log::debug!(
        "sock_diag: {} live connections in {} network namespaces ({} skipped) in {:?}",
        conns.len(),
        namespaces.len(),
        found.skipped.len(),
        started.elapsed()
    );
    Ok(Snapshot { conns, namespaces, skipped: found.skipped })
}

/// What [`in_every_netns`] got from each network namespace it could enter.
#[derive(Debug)]
pub struct PerNetns<T> {
    /// `(namespace inode, result)`; the calling thread's own namespace comes first.
    pub results: Vec<(u32, T)>,
    /// One line per namespace (or group of tasks) that could not be read, and why.
    pub skipped: Vec<String>,
}

/// Runs `work(inode)` once inside every network namespace that can be found (see
/// [`snapshot`]): in the calling thread for its own namespace, and in a short-lived thread
/// that `setns()`ed into it for each other one. Whatever `work` opens there (a netlink
/// socket, a file under `/proc/sys/net`) belongs to that namespace.
///
/// Fails only if `work` fails in the own namespace; a foreign namespace that cannot be
/// entered, or where `work` fails, is listed in [`PerNetns::skipped`].
pub fn in_every_netns<T, F>(work: F) -> anyhow::Result<PerNetns<T>>
where
    T: Send,
    F: Fn(u32) -> anyhow::Result<T> + Sync,
{
    let own_meta =
        fs::metadata("/proc/thread-self/ns/net").context("stat /proc/thread-self/ns/net")?;
    let own = ns_inode(&own_meta).map_err(|e| anyhow!(e))?;
    // Every nsfs inode lives on the one nsfs superblock; a file under /run/netns whose
    // mount is gone is a plain tmpfs file on another device.
    let nsfs_dev = own_meta.dev();

    let mine = work(own).context("dumping the tracer's own network namespace")?;
    let mut results = vec![(own, mine)];
    let mut found = Discovered::default();
    found.walk_run_netns(nsfs_dev);
    found.walk_proc(nsfs_dev);
    let mut skipped = found.unreadable_summary().into_iter().collect::<Vec<_>>();

    for (&inode, paths) in found.namespaces.iter().filter(|&(&inode, _)| inode != own) {
        match in_foreign(inode, paths, nsfs_dev, &work) {
            Ok(Some(result)) => results.push((inode, result)),
            Ok(None) => log::debug!("netns {inode}: gone before it could be opened"),
            Err(why) => skipped.push(why),
        }
    }
    Ok(PerNetns { results, skipped })
}

/// Every live TCP connection (IPv4 and IPv6) in the calling thread's network namespace,
/// labelled `netns` (which should be [`own_netns`] of this thread), sorted, each once.
///
/// A dump is not atomic: the kernel resumes each datagram at "the n-th socket of hash
/// bucket b", so a connection opened or closed in the same bucket meanwhile can make it
/// skip or repeat a neighbour. Repeats are removed here; a skipped connection is only
/// caught by the hooks or a later dump.
pub fn dump_current_netns(netns: u32) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    dump_states(netns, &live_states(), |socket| conns.push(socket.conn))?;
    conns.sort_unstable();
    conns.dedup();
    Ok(conns)
}

/// TCP states as sock_diag reports them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub use netlink_packet_sock_diag::constants::{
        TCP_CLOSE as CLOSE, TCP_CLOSE_WAIT as CLOSE_WAIT, TCP_CLOSING as CLOSING,
        TCP_ESTABLISHED as ESTABLISHED, TCP_FIN_WAIT1 as FIN_WAIT1, TCP_FIN_WAIT2 as FIN_WAIT2,
        TCP_LAST_ACK as LAST_ACK, TCP_LISTEN as LISTEN, TCP_SYN_RECV as SYN_RECV,
        TCP_SYN_SENT as SYN_SENT, TCP_TIME_WAIT as TIME_WAIT,
    };
}

pub use netlink_packet_sock_diag::inet::StateFlags;

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
}

/// Every TCP socket (IPv4 and IPv6) whose state is in `states`, in the calling thread's
/// network namespace, labelled `netns`, sorted by 4-tuple, each socket once (a dump can
/// repeat a socket: see [`dump_current_netns`]). Listeners of one `SO_REUSEPORT` group
/// share a 4-tuple and stay apart by their inodes.
pub fn dump_sockets(netns: u32, states: &StateFlags) -> anyhow::Result<Vec<TcpSocket>> {
    let mut sockets = Vec::new();
    dump_states(netns, states, |socket| sockets.push(socket))?;
    sockets.sort_unstable_by_key(|s| (s.conn, s.inode));
    sockets.dedup_by_key(|s| (s.conn, s.inode));
    Ok(sockets)
}

/// Every live TCP connection in the calling thread's network namespace, with its socket
/// inode and cgroup: for the `--pid` and `--cgroup` filters.
pub fn dump_live(netns: u32) -> anyhow::Result<Vec<TcpSocket>> {
    dump_sockets(netns, &live_states())
}

/// Dumps the TCP sockets whose state is in `states`, both families, into `sink`.
fn dump_states(
    netns: u32,
    states: &StateFlags,
    mut sink: impl FnMut(TcpSocket),
) -> anyhow::Result<()> {
    let mut diag = None;
    // Timewait sockets are not in sockstat's `inuse` but in its `tw` (both families); the
    // kernel filters them by sub-state, which is FIN_WAIT2 for an orphan that went
    // straight to one.
    let time_waits = if states.intersects(StateFlags::TIME_WAIT | StateFlags::FIN_WAIT2) {
        parse_sockstat_field(
            &fs::read_to_string("/proc/thread-self/net/sockstat").unwrap_or_default(),
            "TCP:",
            "tw",
        )
    } else {
        Some(0)
    };
    for (family, name, sockstat, key) in [
        (AF_INET, "AF_INET", "/proc/thread-self/net/sockstat", "TCP:"),
        (AF_INET6, "AF_INET6", "/proc/thread-self/net/sockstat6", "TCP6:"),
    ] {
        // Every network namespace shares the one TCP hash table (unless
        // net.ipv4.tcp_child_ehash_entries is set), so each dump walks every TCP socket on
        // the box whatever namespace asks. The per-namespace count of hashed sockets
        // (listening or connected; not TIME_WAIT, not request socks) tells when a walk
        // cannot find anything: empty namespaces and unused families then cost nothing.
        let countable = !states.contains(StateFlags::SYN_RECV) && time_waits == Some(0);
        if countable && hashed_tcp_sockets(sockstat, key) == Some(0) {
            continue;
        }
        let diag = match &mut diag {
            Some(diag) => diag,
            empty @ None => {
                empty.insert(DiagSocket::open().context("opening a NETLINK_SOCK_DIAG socket")?)
            }
        };
        diag.dump(family, states, &mut |header, attrs| {
            let id = &header.socket_id;
            sink(TcpSocket {
                conn: Conn::new(
                    netns,
                    SocketAddr::new(id.source_address, id.source_port),
                    SocketAddr::new(id.destination_address, id.destination_port),
                ),
                state: header.state,
                inode: header.inode,
                cgroup: crate::filter::cgroup_id_attr(attrs),
            });
        })
        .with_context(|| format!("sock_diag dump of {name} TCP sockets"))?;
    }
    Ok(())
}

/// The `inuse` count of the `key` line (`TCP:` or `TCP6:`) of a sockstat file of the calling
/// thread's namespace: its TCP sockets of that family in the hash tables. `None` if unknown
/// (no IPv6, an unexpected format): then the dump is done anyway.
fn hashed_tcp_sockets(path: &str, key: &str) -> Option<u64> {
    parse_sockstat_inuse(&fs::read_to_string(path).ok()?, key)
}

fn parse_sockstat_inuse(text: &str, key: &str) -> Option<u64> {
    parse_sockstat_field(text, key, "inuse")
}

/// The number after `field` on the `key` line of a sockstat file.
fn parse_sockstat_field(text: &str, key: &str, field: &str) -> Option<u64> {
    let mut words = text.lines().find(|line| line.starts_with(key))?.split_whitespace();
    words.find(|&word| word == field)?;
    words.next()?.parse().ok()
}

/// Opens the namespace, checks it is still the one that was found, and runs `work` in a
/// thread that entered it. `Ok(None)`: every path vanished (the namespace is gone or has
/// no task left that we know of). `Err`: the line for [`PerNetns::skipped`].
fn in_foreign<T, F>(
    inode: u32,
    paths: &[PathBuf],
    nsfs_dev: u64,
    work: &F,
) -> Result<Option<T>, String>
where
    T: Send,
    F: Fn(u32) -> anyhow::Result<T> + Sync,
{
    let mut refused = None;
    let mut opened = None;
    for path in paths {
        match File::open(path).and_then(|f| Ok((f.metadata()?, f))) {
            // The task may have exited and its pid been reused by one in another
            // namespace between the walk and now.
            Ok((meta, file)) if meta.dev() == nsfs_dev && ns_inode(&meta) == Ok(inode) => {
                opened = Some((file, path));
                break;
            }
            Ok(_) => {}
            Err(e) if vanished(&e) => {}
            Err(e) => refused = Some(format!("netns {inode} ({}): open: {e}", path.display())),
        }
    }
    let Some((file, path)) = opened else {
        return refused.map_or(Ok(None), Err);
    };
    let label = format!("netns {inode} ({})", path.display());
    // A scoped thread, so that `work` can borrow from the caller; it exits (and leaves the
    // namespace with it) before this returns.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tcptrace-netns".into())
            .spawn_scoped(scope, move || -> Result<T, String> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    let hint = if errno == Errno::EPERM { " (needs CAP_SYS_ADMIN)" } else { "" };
                    format!("setns: {}{hint}", errno_name(errno))
                })?;
                work(inode).map_err(|e| format!("{e:#}"))
            })
            .map_err(|e| format!("{label}: spawning a thread: {e}"))?;
        match worker.join() {
            Ok(Ok(result)) => Ok(Some(result)),
            Ok(Err(why)) => Err(format!("{label}: {why}")),
            Err(_) => Err(format!("{label}: the thread in the namespace panicked")),
        }
    })
}

/// `EPERM` rather than nix's `EPERM: Operation not permitted`, to keep the line short.
fn errno_name(errno: Errno) -> String {
    format!("{errno:?}")
}

/// The namespace's inode: `stat()` follows the `/proc` magic link to the nsfs inode, whose
/// number is the kernel's `ns.inum`, a `u32`.
fn ns_inode(meta: &fs::Metadata) -> Result<u32, String> {
    u32::try_from(meta.ino()).map_err(|_| format!("namespace inode {} exceeds u32", meta.ino()))
}

/// A task or mount that went away while we looked: normal on a live box.
fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Network namespaces found on the box, each with the paths it was seen at.
#[derive(Default)]
struct Discovered {
    namespaces: BTreeMap<u32, Vec<PathBuf>>,
    /// `ns/net` links that could not be stat'ed for lack of privilege, and the first one.
    unreadable: usize,
    first_unreadable: Option<PathBuf>,
}

impl Discovered {
    fn add(&mut self, inode: u32, path: PathBuf) {
        let paths = self.namespaces.entry(inode).or_default();
        if paths.len() < MAX_CANDIDATES {
            paths.push(path);
        }
    }

    /// Stats `path` once and records it if it is a network namespace file.
    fn consider(&mut self, path: PathBuf, nsfs_dev: u64) {
        match fs::metadata(&path) {
            Ok(meta) if meta.dev() == nsfs_dev => match ns_inode(&meta) {
                Ok(inode) => self.add(inode, path),
                Err(e) => log::debug!("{}: {e}", path.display()),
            },
            Ok(_) => log::debug!("{}: not a namespace file (stale mount?)", path.display()),
            Err(e) if vanished(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.unreadable += 1;
                self.first_unreadable.get_or_insert(path);
            }
            Err(e) => log::debug!("{}: {e}", path.display()),
        }
    }

    fn walk_run_netns(&mut self, nsfs_dev: u64) {
        let entries = match fs::read_dir(RUN_NETNS) {
            Ok(entries) => entries,
            Err(e) if vanished(&e) => return,
            Err(e) => {
                log::debug!("{RUN_NETNS}: {e}");
                return;
            }
        };
        for entry in entries.flatten() {
            self.consider(entry.path(), nsfs_dev);
        }
    }

    fn walk_proc(&mut self, nsfs_dev: u64) {
        let procs = match fs::read_dir(PROC) {
            Ok(procs) => procs,
            Err(e) => {
                log::warn!("{PROC}: {e}; only the own network namespace is seeded");
                return;
            }
        };
        for proc_entry in procs.flatten() {
            let name = proc_entry.file_name();
            if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
                continue;
            }
            let task_dir = proc_entry.path().join("task");
            let Ok(tasks) = fs::read_dir(&task_dir) else {
                // The process exited, or is not ours to look at; its main thread's link
                // would say the same.
                continue;
            };
            for task in tasks.flatten() {
                self.consider(task.path().join("ns/net"), nsfs_dev);
            }
        }
    }

    fn unreadable_summary(&self) -> Option<String> {
        let first = self.first_unreadable.as_ref()?;
        Some(format!(
            "{} tasks' network namespaces could not be inspected (first: {}): permission \
             denied by the ptrace access check (no CAP_SYS_PTRACE, or a non-dumpable task)",
            self.unreadable,
            first.display()
        ))
    }
}

/// A `NETLINK_SOCK_DIAG` socket in the namespace of the thread that opened it.
struct DiagSocket {
    socket: Socket,
    /// Our netlink port id: the kernel addresses its replies to it.
    port: u32,
    buf: Vec<u8>,
}

impl DiagSocket {
    fn open() -> anyhow::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("socket")?;
        if let Err(e) = socket.set_rx_buf_sz(SOCKET_RCVBUF) {
            log::debug!("sock_diag: SO_RCVBUF: {e}");
        }
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT.as_secs().cast_signed(), 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .context("SO_RCVTIMEO")?;
        let port = socket.bind_auto().context("bind")?.port_number();
        socket.connect(&netlink_sys::SocketAddr::new(0, 0)).context("connect")?;
        Ok(Self { socket, port, buf: vec![0; RECV_BUF_LEN] })
    }

    /// One dump request for `family`, read to `NLMSG_DONE`.
    fn dump(
        &mut self,
        family: u8,
        states: &StateFlags,
        sink: &mut dyn FnMut(&InetResponseHeader, &[u8]),
    ) -> anyhow::Result<()> {
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let request = dump_request(family, states, seq);
        self.socket.send(&request, 0).context("send")?;
        loop {
            let len = loop {
                // MSG_TRUNC makes recv return the datagram's real length even if it did
                // not fit, so a short buffer shows instead of silently losing sockets.
                match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Ok(len) => break len,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        bail!("no answer from the kernel in {RECV_TIMEOUT:?}")
                    }
                    Err(e) => return Err(e).context("recv"),
                }
            };
            if len > self.buf.len() {
                bail!("a {len}-byte datagram overflowed the {}-byte buffer", self.buf.len());
            }
            if len == 0 {
                bail!("the kernel closed the dump without NLMSG_DONE");
            }
            if parse_datagram(&self.buf[..len], seq, self.port, sink)? == Progress::Done {
                return Ok(());
            }
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets of `family` in `states`.
fn dump_request(family: u8, states: &StateFlags, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let mut message = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
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
) -> anyhow::Result<Progress> {
    while !datagram.is_empty() {
        let message = NetlinkBuffer::new_checked(datagram)
            .map_err(|e| anyhow!("malformed netlink message: {e}"))?;
        let len = message.length() as usize;
        if message.sequence_number() != seq || message.port_number() != port {
            bail!(
                "reply for request {} to port {}, expected request {seq} to port {port}",
                message.sequence_number(),
                message.port_number()
            );
        }
        match message.message_type() {
            SOCK_DIAG_BY_FAMILY => {
                let header = InetResponseHeader::parse(message.payload())
                    .map_err(|e| anyhow!("malformed inet_diag_msg: {e}"))?;
                // The attributes follow the 72-byte `inet_diag_msg`.
                sink(&header, message.payload().get(INET_DIAG_MSG_LEN..).unwrap_or_default());
            }
            NLMSG_NOOP => {}
            NLMSG_DONE | NLMSG_ERROR => {
                let control = NetlinkMessage::<SockDiagMessage>::deserialize(&datagram[..len])
                    .map_err(|e| anyhow!("malformed netlink control message: {e}"))?;
                match control.payload {
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(io::Error::from_raw_os_error(-done.code))
                            .context("the kernel ended the dump with an error");
                    }
                    NetlinkPayload::Done(_) => return Ok(Progress::Done),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io()).context("the kernel answered NLMSG_ERROR");
                    }
                    // An ACK: not asked for, harmless.
                    _ => {}
                }
            }
            other => bail!("unexpected netlink message type {other}"),
        }
        // Messages start on 4-byte boundaries (NLMSG_ALIGN).
        datagram = datagram.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(Progress::More)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage};
    use netlink_packet_sock_diag::inet::InetResponse;
    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
    use std::num::NonZeroI32;
    use std::sync::mpsc;

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
    ) -> anyhow::Result<(Progress, Vec<(u8, Conn)>)> {
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
        let request = dump_request(AF_INET6, &live_states(), 77);
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
    fn sockstat_inuse_per_family() {
        let v4 = "sockets: used 140\nTCP: inuse 3 orphan 0 tw 18350 alloc 5 mem 1\n\
                  UDP: inuse 0 mem 0\nRAW: inuse 0\n";
        assert_eq!(parse_sockstat_inuse(v4, "TCP:"), Some(3));
        let v6 = "TCP6: inuse 0\nUDP6: inuse 1\nUDPLITE6: inuse 0\nRAW6: inuse 0\n";
        assert_eq!(parse_sockstat_inuse(v6, "TCP6:"), Some(0));
        assert_eq!(parse_sockstat_inuse(v6, "TCP:"), None);
        assert_eq!(parse_sockstat_inuse("TCP: inuse x\n", "TCP:"), None);
        assert_eq!(parse_sockstat_inuse("TCP: orphan 0\n", "TCP:"), None);
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
        assert!(format!("{e:#}").contains("NLMSG_ERROR"), "{e:#}");
        assert_eq!(e.downcast_ref::<io::Error>().unwrap().raw_os_error(), Some(libc::EPERM));

        let e = collect(&done(5, 99, -libc::EINTR), 5, 99).unwrap_err();
        assert!(format!("{e:#}").contains("ended the dump"), "{e:#}");

        let stale = socket_record(4, 99, 1, sa("127.0.0.2:80"), sa("127.0.0.3:40000"));
        assert!(collect(&stale, 5, 99).is_err());
        assert!(collect(&stale[..20], 4, 99).is_err(), "truncated message");
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
        let snap = snapshot().unwrap();
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
        let direct = dump_current_netns(own).unwrap();
        assert_exactly(&touching(&direct, own, v4.local_addr().unwrap()), &both_ends(own, &c4));
    }

    /// Brings `lo` up in the calling thread's network namespace.
    pub(crate) fn loopback_up() -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = (*src).cast_signed();
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own, on a socket we own.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) < 0 {
                return Err(io::Error::last_os_error());
            }
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    #[test]
    fn connections_in_a_thread_own_netns_are_found_there() {
        const N: usize = 10;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(u32, BTreeSet<Conn>), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let setup = || -> io::Result<(u32, BTreeSet<Conn>, Vec<TcpStream>)> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                loopback_up()?;
                let inode = own_netns()?;
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

        let snap = snapshot().unwrap();
        assert!(snap.namespaces.len() >= 2, "{snap:?}");
        let in_ns: Vec<Conn> = snap.conns.iter().filter(|c| c.netns == inode).copied().collect();
        assert_exactly(&in_ns, &want);
        let own_dump = dump_current_netns(own).unwrap();
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
            dump_states(own, &StateFlags::all(), |socket| {
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

        let live = touching(&dump_current_netns(own).unwrap(), own, server);
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
        let live = touching(&dump_current_netns(own).unwrap(), own, server);
        assert_exactly(&live, &[conn(kept_local, server)].into());
    }

    /// Seeding cost at scale: `cargo test -p tcptrace --lib seed -- --ignored --nocapture`.
    /// 8,000 loopback connections are 16,000 sockets, under the 20,000 file limit.
    #[test]
    #[ignore = "opens 16,000 sockets; a measurement, not a check"]
    fn snapshot_of_16k_sockets() {
        const N: usize = 8_000;
        let own = own_netns().unwrap();
        let listener = listen_on(IpAddr::V4(Ipv4Addr::new(127, 64, 0, 1)));
        let server = listener.local_addr().unwrap();
        let pairs: Vec<_> = (0..N)
            .map(|_| (TcpStream::connect(server).unwrap(), listener.accept().unwrap().0))
            .collect();
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let snap = snapshot().unwrap();
            times.push(started.elapsed());
            assert_eq!(touching(&snap.conns, own, server).len(), 2 * N);
        }
        times.sort();
        eprintln!(
            "snapshot with {} extra sockets: min {:?}, median {:?}",
            2 * N,
            times[0],
            times[2]
        );
        drop(pairs);
    }
}
