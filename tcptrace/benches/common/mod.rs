//! Connection sets and event streams shaped like the ones tcptrace meets, shared by the
//! benchmarks. Nothing here touches the network: these are ledger inputs only.

#![allow(dead_code, reason = "each benchmark uses some of the shapes")]
#![expect(clippy::cast_precision_loss, reason = "nanosecond and element counts far below 2^52")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tcptrace::conn::Conn;
use tcptrace::event::{Event, EventKind};

/// The network namespace every synthetic connection is in (the demo uses one).
pub const NETNS: u32 = 4_026_531_840;
/// The demo's server port.
pub const PORT: u16 = 9_000;
/// Connections per source address in the demo: 125 × 8,000 = 1,000,000.
pub const PER_SOURCE: usize = 8_000;
/// First port of the default ephemeral range.
const EPHEMERAL_LOW: u16 = 32_768;

/// Which addresses a shape uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The `i`-th client's (address, port): 8,000 ephemeral ports from each of 125 addresses.
fn client(family: Family, i: usize) -> SocketAddr {
    let source = i / PER_SOURCE;
    let port = EPHEMERAL_LOW + (i % PER_SOURCE) as u16;
    let ip = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(127, 1, (source >> 8) as u8, source as u8)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, source as u16 + 1)),
    };
    SocketAddr::new(ip, port)
}

fn server(family: Family) -> SocketAddr {
    match family {
        Family::V4 => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), PORT),
        Family::V6 => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), PORT),
    }
}

/// The server ends of `n` connections to one port from 125 source addresses (for `n` of
/// 1,000,000): what a busy server's ledger holds.
pub fn server_ends(family: Family, n: usize) -> Vec<Conn> {
    (0..n).map(|i| Conn::new(NETNS, server(family), client(family, i))).collect()
}

/// The demo: `n` loopback connections to one port, both ends on this host, so `2 n`
/// ledger entries (client end, then server end).
pub fn demo(family: Family, n: usize) -> Vec<Conn> {
    (0..n)
        .flat_map(|i| {
            let (c, s) = (client(family, i), server(family));
            [Conn::new(NETNS, c, s), Conn::new(NETNS, s, c)]
        })
        .collect()
}

/// `n` connections to one port, each from a remote address of its own: the hardest shape
/// for the per-(port, remote address) counts.
pub fn distinct_remote_addrs(family: Family, n: usize) -> Vec<Conn> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            let ip = match family {
                Family::V4 => IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (i + 2))),
                Family::V6 => IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i))),
            };
            Conn::new(NETNS, server(family), SocketAddr::new(ip, 40_000 + (i % 20_000) as u16))
        })
        .collect()
}

pub fn event(kind: EventKind, conn: Conn) -> Event {
    Event { kind, conn, sock: 0, ts_ns: 0, pid: 1, tid: 1, comm: "load".into() }
}

/// Loopback churn as the hooks report it: each connection opens (the client end's
/// connect, the server end's accept) and, `window` connections later, closes (both ends).
/// Ends with the last `window` closed, so a ledger replaying it returns to where it was.
/// Returns 4 events per connection, `n` connections, over `sources` distinct source
/// addresses that do not collide with [`server_ends`] or [`demo`].
pub fn churn(family: Family, n: usize, window: usize) -> Vec<Event> {
    let conn = |i: usize| {
        let mut c = client(family, i);
        // Ports of a busy client cycle through the ephemeral range; keep them apart from
        // the demo's clients with another address block.
        match &mut c {
            SocketAddr::V4(a) => {
                let o = a.ip().octets();
                a.set_ip(Ipv4Addr::new(127, 2, o[2], o[3]));
            }
            SocketAddr::V6(a) => {
                let s = a.ip().segments();
                a.set_ip(Ipv6Addr::new(s[0], s[1], 2, 0, 0, 0, 0, s[7]));
            }
        }
        let s = server(family);
        (Conn::new(NETNS, c, s), Conn::new(NETNS, s, c))
    };
    let mut events = Vec::with_capacity(4 * n);
    for i in 0..n + window {
        if i < n {
            let (c, s) = conn(i);
            events.push(event(EventKind::Connect, c));
            events.push(event(EventKind::Accept, s));
        }
        if let Some(old) = i.checked_sub(window) {
            let (c, s) = conn(old);
            events.push(event(EventKind::Close, c));
            events.push(event(EventKind::Close, s));
        }
    }
    events
}

/// Criterion measurement of the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`)
/// rather than wall time: the box these run on is shared, and time spent waiting for a
/// core is not the code's cost. Cache and memory-bandwidth contention still show.
pub struct ThreadCpuTime;

fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl criterion::measurement::Measurement for ThreadCpuTime {
    type Intermediate = std::time::Duration;
    type Value = std::time::Duration;

    fn start(&self) -> Self::Intermediate {
        thread_cpu_time()
    }

    fn end(&self, started: Self::Intermediate) -> Self::Value {
        thread_cpu_time().saturating_sub(started)
    }

    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        *v1 + *v2
    }

    fn zero(&self) -> Self::Value {
        std::time::Duration::ZERO
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &CpuNanos
    }
}

/// Formats CPU nanoseconds like wall time ("ms", "µs"), and throughput per CPU second.
struct CpuNanos;

impl criterion::measurement::ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        for v in values.iter_mut() {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        typical: f64,
        throughput: &criterion::Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per = match throughput {
            criterion::Throughput::Elements(n)
            | criterion::Throughput::ElementsAndBytes { elements: n, .. }
            | criterion::Throughput::Bytes(n)
            | criterion::Throughput::BytesDecimal(n)
            | criterion::Throughput::Bits(n) => *n as f64,
        };
        // Elements per CPU second, in millions, whatever the typical value.
        let _ = typical;
        for v in values.iter_mut() {
            *v = per * 1e9 / *v / 1e6;
        }
        "M/s cpu"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

/// The criterion configuration of these benchmarks: CPU time, 10 samples.
pub fn criterion() -> criterion::Criterion<ThreadCpuTime> {
    criterion::Criterion::default().with_measurement(ThreadCpuTime).sample_size(10)
}
