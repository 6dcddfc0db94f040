//! Consumer speed: events replayed into the ledger on one core, as the consumer applies
//! them after draining the ring. `cargo bench -p tcptrace --bench consumer`.
//!
//! - `churn`: loopback churn (connect and accept, then both closes 10,000 connections
//!   later), 4 events a connection, into a ledger that also holds a steady population
//!   (none, or the demo's 1,000,000 connections = 2,000,000 entries, so that the tables
//!   are as large and as cold in the cache as at that scale);
//! - `seed`: the bulk open at start-up, 1,000,000 server ends into an empty ledger;
//! - `decode_and_apply`: the churn from ring-buffer records: decoding (with its `comm`
//!   string) plus applying.

use std::hint::black_box;
use std::net::IpAddr;

use common::ThreadCpuTime;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tcptrace::event::{Event, EventKind};
use tcptrace::ledger::Ledger;
use tcptrace_common as wire;

mod common;
use common::Family;

const CHURN: usize = 250_000;
const WINDOW: usize = 10_000;

fn churn(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("consumer/churn");
    for family in [Family::V4, Family::V6] {
        let events = common::churn(family, CHURN, WINDOW);
        group.throughput(Throughput::Elements(events.len() as u64));
        for (population, steady) in [("empty", 0), ("1M_demo", 1_000_000)] {
            let mut ledger = Ledger::new();
            for conn in common::demo(family, steady) {
                ledger.open(conn);
            }
            let live = ledger.live();
            group.bench_function(format!("{family:?}/{population}"), |b| {
                b.iter(|| {
                    for ev in &events {
                        ledger.apply(black_box(ev));
                    }
                });
            });
            // The stream closes everything it opened: the ledger is back where it began.
            assert_eq!(ledger.live(), live);
        }
    }
    group.finish();
}

fn seed(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("consumer/seed");
    for family in [Family::V4, Family::V6] {
        let conns = common::server_ends(family, 1_000_000);
        group.throughput(Throughput::Elements(conns.len() as u64));
        group.bench_function(format!("{family:?}/1M_server_ends"), |b| {
            b.iter_batched(
                Ledger::new,
                |mut ledger| {
                    for &conn in &conns {
                        ledger.open(conn);
                    }
                    ledger
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

/// The ring-buffer record the hooks would have written for `ev`.
fn to_wire(ev: &Event) -> wire::Event {
    let mut raw = wire::Event {
        kind: match ev.kind {
            EventKind::Connect => wire::kind::CONNECT,
            EventKind::Accept => wire::kind::ACCEPT,
            EventKind::Established => wire::kind::ESTABLISHED,
            EventKind::Close => wire::kind::CLOSE,
            EventKind::ConnectFailed => wire::kind::CONNECT_FAILED,
        },
        lport: ev.conn.local.port(),
        rport: ev.conn.remote.port(),
        netns: ev.conn.netns,
        ..wire::Event::default()
    };
    for (ip, field) in [(ev.conn.local.ip(), &mut raw.laddr), (ev.conn.remote.ip(), &mut raw.raddr)]
    {
        match ip {
            IpAddr::V4(a) => {
                raw.family = wire::AF_INET as u8;
                field[..4].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                raw.family = wire::AF_INET6 as u8;
                *field = a.octets();
            }
        }
    }
    raw.comm[..4].copy_from_slice(b"load");
    raw
}

fn decode_and_apply(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("consumer/decode_and_apply");
    let records: Vec<wire::Event> =
        common::churn(Family::V4, CHURN, WINDOW).iter().map(to_wire).collect();
    group.throughput(Throughput::Elements(records.len() as u64));
    let mut ledger = Ledger::new();
    group.bench_function("V4/empty", |b| {
        b.iter(|| {
            for raw in &records {
                ledger.apply(&Event::from_wire(black_box(raw)).expect("a valid record"));
            }
        });
    });
    assert_eq!(ledger.live(), 0);
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = churn, seed, decode_and_apply
}
criterion_main!(benches);
