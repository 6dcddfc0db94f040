//! Heap bytes per live connection in the ledger, counted by a global allocator that keeps
//! the bytes currently allocated: `cargo bench -p tcptrace --bench ledger_memory`.
//!
//! Hash tables grow by doubling once 7/8 full, so the figure depends on where the count
//! falls between two growths: besides the sizes asked for, each shape is measured at 24
//! sizes spread over the octave below, and the lowest and highest figures are printed (the
//! highest is just after a growth: about half of every table empty).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tcptrace::conn::Conn;
use tcptrace::ledger::Ledger;

mod common;
use common::Family;

/// Counts the bytes currently allocated through it.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes per live connection of a ledger holding `conns`.
#[expect(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
fn bytes_per_conn(conns: &[Conn]) -> f64 {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let mut ledger = Ledger::new();
    for &c in conns {
        ledger.open(c);
    }
    let used = ALLOCATED.load(Ordering::Relaxed) - before;
    assert_eq!(ledger.live(), conns.len(), "every synthetic connection is distinct");
    let per = used as f64 / ledger.live() as f64;
    drop(ledger);
    per
}

/// The figure at `n` connections, and the lowest and highest over sizes in `n/2..=n`.
fn measure(name: &str, n: usize, make: impl Fn(usize) -> Vec<Conn>) {
    const POINTS: usize = 24;
    let started = Instant::now();
    let conns = make(n);
    let at_n = bytes_per_conn(&conns);
    let (mut low, mut high) = ((f64::MAX, 0), (0.0_f64, 0));
    for k in 0..=POINTS {
        let m = n / 2 + n / 2 * k / POINTS;
        let per = bytes_per_conn(&conns[..m * conns.len() / n]);
        if per < low.0 {
            low = (per, m);
        }
        if per > high.0 {
            high = (per, m);
        }
    }
    println!(
        "{name:<34} {:>9} live: {at_n:6.1} B/conn; over {}..{}: lowest {:.1} (at {}), highest {:.1} (at {}) [{:.1?}]",
        conns.len(),
        n / 2,
        n,
        low.0,
        low.1 * conns.len() / n,
        high.0,
        high.1 * conns.len() / n,
        started.elapsed()
    );
}

/// A named way to make `n` connections.
type Shape = (&'static str, usize, fn(Family, usize) -> Vec<Conn>);

const MILLION: usize = 1_000_000;

fn main() {
    // `cargo bench` passes --bench; a filter argument picks shapes by name.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let shapes: [Shape; 3] = [
        ("server ends, 125 remote addrs", MILLION, common::server_ends),
        ("demo: both ends", MILLION, common::demo),
        ("distinct remote addrs", MILLION, common::distinct_remote_addrs),
    ];
    println!("heap bytes per live connection in the ledger (counting allocator)");
    for family in [Family::V4, Family::V6] {
        for (shape, n, make) in shapes {
            let name = format!("{family:?} {shape}");
            if wanted(&name) {
                measure(&name, n, |n| make(family, n));
            }
        }
    }
}
