//! What `watch` does every interval at the demo's scale: a snapshot of the ledger (top 20
//! local ports and remote endpoints) and its rendering as a table and as a JSON line, with
//! 1,000,000 live loopback connections (2,000,000 ledger entries: both ends are local).
//! `cargo bench -p tcptrace --bench views`; the target is 100 ms for all three.

use std::hint::black_box;
use std::time::Duration;

use common::ThreadCpuTime;
use criterion::{Criterion, criterion_group, criterion_main};
use tcptrace::capacity::Capacity;
use tcptrace::ledger::Ledger;
use tcptrace::view::{self, Snapshot, Trust};

mod common;
use common::Family;

const TOP: usize = 20;

fn snapshot(ledger: &Ledger) -> Snapshot {
    view::snapshot(
        ledger,
        "tracepoint",
        Duration::from_mins(1),
        Trust::default(),
        TOP,
        Capacity::default(),
    )
}

fn views(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("views");
    for (name, conns) in [
        ("1M_demo", common::demo(Family::V4, 1_000_000)),
        ("1M_distinct_remote_addrs", common::distinct_remote_addrs(Family::V4, 1_000_000)),
    ] {
        let mut ledger = Ledger::new();
        for conn in conns {
            ledger.open(conn);
        }
        group.bench_function(format!("{name}/snapshot_top20"), |b| {
            b.iter(|| snapshot(black_box(&ledger)));
        });
        let s = snapshot(&ledger);
        group.bench_function(format!("{name}/table"), |b| {
            b.iter(|| view::table::render(black_box(&s)));
        });
        group.bench_function(format!("{name}/json"), |b| {
            b.iter(|| view::json::watch_line(black_box(&s)));
        });
        group.bench_function(format!("{name}/snapshot_table_json"), |b| {
            b.iter(|| {
                let s = snapshot(black_box(&ledger));
                (view::table::render(&s), view::json::watch_line(&s))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = views
}
criterion_main!(benches);
