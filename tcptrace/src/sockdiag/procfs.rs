//! What `/proc` says about sockets that sock_diag does not: which processes hold which
//! socket (`/proc/PID/fd/N -> socket:[INODE]`, as `ss -p` finds them) and how many TCP
//! sockets a namespace has (`/proc/thread-self/net/sockstat`).

use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The socket inodes the processes `pids` hold open: for `--pid` on the sock_diag side.
#[must_use]
pub fn sockets_held_by(pids: &[u32]) -> HashSet<u32> {
    let mut inodes = HashSet::new();
    for pid in pids {
        for_each_socket_fd(Path::new(&format!("/proc/{pid}")), |inode| {
            inodes.insert(inode);
        });
    }
    inodes
}

/// The pids whose open files include a socket in `inodes` (as `ss -p` finds them), and
/// whether every process was scanned within `budget`. Processes that exit meanwhile, or
/// that we may not look into, are passed over.
#[must_use]
pub fn holders_of<S: std::hash::BuildHasher>(
    inodes: &hashbrown::HashSet<u32, S>,
    budget: Duration,
) -> (hashbrown::HashMap<u32, Vec<u32>>, bool) {
    let mut found: hashbrown::HashMap<u32, Vec<u32>> = hashbrown::HashMap::new();
    if inodes.is_empty() {
        return (found, true);
    }
    let started = Instant::now();
    let Ok(procs) = fs::read_dir("/proc") else {
        return (found, false);
    };
    for entry in procs.flatten() {
        if started.elapsed() > budget {
            return (found, false);
        }
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Threads share the process's file table (a thread that unshared its files is rare
        // enough to leave out).
        for_each_socket_fd(&entry.path(), |inode| {
            if inodes.contains(&inode) {
                let pids = found.entry(inode).or_default();
                if pids.last() != Some(&pid) {
                    pids.push(pid);
                }
            }
        });
    }
    (found, true)
}

/// Calls `f` with the inode of every socket among the open files of the process whose
/// `/proc` directory is `proc_dir`; nothing if it exited or is not ours to look into.
fn for_each_socket_fd(proc_dir: &Path, mut f: impl FnMut(u32)) {
    let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else { return };
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else { continue };
        if let Some(inode) = socket_inode(target.as_os_str().as_bytes()) {
            f(inode);
        }
    }
}

/// The inode of a `/proc/PID/fd/N` link to a socket: `socket:[12345]`.
fn socket_inode(link: &[u8]) -> Option<u32> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The calling thread's namespace's TCP sockets of one family in the hash tables
/// (listening or connected; not `TIME_WAIT`, not request socks): the `inuse` of the `TCP:`
/// line of `sockstat`, or of `TCP6:` in `sockstat6`. `None` if unknown (no IPv6, an
/// unexpected format).
#[must_use]
pub fn hashed_tcp_sockets(ipv6: bool) -> Option<u64> {
    let (path, key) = if ipv6 {
        ("/proc/thread-self/net/sockstat6", "TCP6:")
    } else {
        ("/proc/thread-self/net/sockstat", "TCP:")
    };
    sockstat_field(&fs::read_to_string(path).ok()?, key, "inuse")
}

/// The calling thread's namespace's timewait sockets, both families (sockstat's `tw`);
/// `None` if unknown.
#[must_use]
pub fn time_wait_sockets() -> Option<u64> {
    sockstat_field(&fs::read_to_string("/proc/thread-self/net/sockstat").ok()?, "TCP:", "tw")
}

use tcptrace_proc::sockstat_field;

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[4026532]"), Some(4_026_532));
        assert_eq!(socket_inode(b"pipe:[12]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    #[test]
    fn sockstat_fields_per_family() {
        let v4 = "sockets: used 140\nTCP: inuse 3 orphan 0 tw 18350 alloc 5 mem 1\n\
                  UDP: inuse 0 mem 0\nRAW: inuse 0\n";
        assert_eq!(sockstat_field(v4, "TCP:", "inuse"), Some(3));
        assert_eq!(sockstat_field(v4, "TCP:", "tw"), Some(18_350));
        let v6 = "TCP6: inuse 0\nUDP6: inuse 1\nUDPLITE6: inuse 0\nRAW6: inuse 0\n";
        assert_eq!(sockstat_field(v6, "TCP6:", "inuse"), Some(0));
        assert_eq!(sockstat_field(v6, "TCP:", "inuse"), None);
        assert_eq!(sockstat_field("TCP: inuse x\n", "TCP:", "inuse"), None);
        assert_eq!(sockstat_field("TCP: orphan 0\n", "TCP:", "inuse"), None);
    }

    #[test]
    fn this_process_holds_its_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = sockets_held_by(&[std::process::id()]);
        assert!(!held.is_empty(), "a bound listener is an open socket file");
        let inodes: hashbrown::HashSet<u32> = held.iter().copied().collect();
        let (holders, complete) = holders_of(&inodes, Duration::from_secs(30));
        assert!(complete);
        assert!(holders.values().all(|pids| pids.contains(&std::process::id())));
        drop(listener);
    }

    // ---- fuzz tier (crate::fuzz): any link and any sockstat text; and built ones ----

    const SOCKSTAT_KEYS: &[&str] =
        &["sockets:", "TCP:", "TCP6:", "UDP:", "UDPLITE:", "RAW:", "FRAG:"];
    const SOCKSTAT_FIELDS: &[&str] = &["used", "inuse", "orphan", "tw", "alloc", "mem", "memory"];

    /// Text in the shape of a sockstat file, any of it perhaps wrong.
    fn sockstat_like() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            prop::sample::select(SOCKSTAT_KEYS).prop_map(str::to_owned),
            prop::sample::select(SOCKSTAT_FIELDS).prop_map(str::to_owned),
            "-?[0-9]{1,22}",
            any::<char>().prop_map(String::from),
        ];
        let line = prop::collection::vec(word, 0..8).prop_map(|words| words.join(" "));
        prop::collection::vec(line, 0..6).prop_map(|lines| lines.join("\n"))
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        #[test]
        fn any_link_is_a_socket_or_not(
            link in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..32),
                "socket:\\[[+-]?[0-9]{0,12}\\]?".prop_map(String::into_bytes),
            ],
        ) {
            let _ = socket_inode(&link);
        }

        #[test]
        fn socket_links_parse_back(inode in any::<u32>()) {
            prop_assert_eq!(socket_inode(format!("socket:[{inode}]").as_bytes()), Some(inode));
        }

        #[test]
        fn any_sockstat_text_is_read_or_not(
            text in prop_oneof![any::<String>(), sockstat_like()],
            key in prop::sample::select(SOCKSTAT_KEYS),
            field in prop::sample::select(SOCKSTAT_FIELDS),
        ) {
            let _ = sockstat_field(&text, key, field);
        }

        /// A sockstat file of every key in any order, each line with any fields and
        /// values: the value after each field of each line is found.
        #[test]
        fn sockstat_lines_parse_back(
            lines in Just(SOCKSTAT_KEYS.to_vec()).prop_shuffle().prop_flat_map(|keys| {
                let fields = Just(SOCKSTAT_FIELDS.to_vec()).prop_shuffle();
                let line = (fields, 0..=SOCKSTAT_FIELDS.len(), any::<[u64; 7]>());
                (Just(keys), prop::collection::vec(line, SOCKSTAT_KEYS.len()))
            }),
        ) {
            let (keys, lines) = lines;
            let mut text = String::new();
            for (key, (fields, n, values)) in keys.iter().zip(&lines) {
                text.push_str(key);
                for (field, value) in fields.iter().zip(values).take(*n) {
                    write!(text, " {field} {value}").unwrap();
                }
                text.push('\n');
            }
            for (key, (fields, n, values)) in keys.iter().zip(&lines) {
                for (i, field) in fields.iter().enumerate() {
                    let expected = (i < *n).then_some(values[i]);
                    prop_assert_eq!(sockstat_field(&text, key, field), expected, "{}", text);
                }
            }
        }
    }
}
