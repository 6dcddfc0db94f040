//! Drains the ring buffer. A reader thread empties the ring a while after the kernel
//! wakes it (the kernel wakes it when the first event lands in an empty ring, and not
//! again until the reader has caught up; see [`next_gather`] for how long it lets a batch
//! gather) and every [`READ_EVERY`] regardless, and forwards the decoded events to the
//! session, which applies them when it is free. The session blocks
//! at times (a sock_diag dump of every socket on the box for the capacity rows or a
//! reconciliation takes from 0.2 s to several seconds on a busy box); before the reader
//! thread, nothing emptied the ring meanwhile, and a connection storm filled it: 50,000
//! to 130,000 events lost in 5 s of `tcptrace load churn` on the 2-core benchmark box
//! with the default 4 MiB ring (BENCHMARKS.md).
//!
//! Order is kept: the reader holds the ring's lock while it forwards a batch, and
//! [`Consumer::drain`] takes the lock before it hands out the forwarded batches and then
//! what is still in the ring, so the session sees events in the kernel's order, and a
//! drain sees every event the kernel committed before it (reconciliation relies on that).

use std::{
    io,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::event::Event;

/// How long the reader sleeps when the kernel does not wake it.
const READ_EVERY: Duration = Duration::from_millis(100);

/// How long the reader lets a batch gather once woken, at most and at least. Each batch
/// has a fixed cost (wake-ups, and the ledger's tables gone cold in the cache meanwhile):
/// on the benchmark box's connection storm, batches every 10 ms cost the tracer 1.6 times
/// the CPU that batches every 50 ms did (BENCHMARKS.md).
const GATHER_MAX: Duration = Duration::from_millis(50);
const GATHER_MIN: Duration = Duration::from_millis(1);

/// Bytes a record takes in the ring: the event and the ring's 8-byte header.
const RECORD_BYTES: usize = size_of::<tcptrace_common::Event>() + 8;

type Ring = Arc<Mutex<RingBuf<MapData>>>;

pub struct Consumer {
    ring: Ring,
    batches: UnboundedReceiver<Vec<Event>>,
    /// Batches [`Consumer::wait`] received and [`Consumer::drain`] has not handed out yet.
    received: Vec<Vec<Event>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    /// Records that did not decode (a userspace/kernel version mismatch); reported, not fatal.
    malformed: AtomicU64,
    /// How often the kernel woke the reader (the batching target is at most ~1,000 a second).
    wakeups: AtomicU64,
}

impl Consumer {
    /// `ring_bytes`: the ring's size, which bounds how long a batch may gather.
    pub fn new(ring: RingBuf<MapData>, ring_bytes: u32) -> io::Result<Self> {
        let ring = Arc::new(Mutex::new(ring));
        let counters = Arc::new(Counters::default());
        let (tx, batches) = unbounded_channel();
        let reader = (Arc::clone(&ring), Arc::clone(&counters));
        let ring_bytes = ring_bytes as usize;
        thread::Builder::new()
            .name("ring-reader".into())
            .spawn(move || read(&reader.0, &tx, &reader.1, ring_bytes))?;
        Ok(Self { ring, batches, received: Vec::new(), counters })
    }

    /// Hands every event forwarded so far and every record now in the ring to `sink`, in
    /// the order the kernel produced them. Returns how many records were drained.
    pub fn drain(&mut self, mut sink: impl FnMut(Event)) -> usize {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        while let Ok(batch) = self.batches.try_recv() {
            self.received.push(batch);
        }
        for batch in self.received.drain(..) {
            n += batch.len();
            batch.into_iter().for_each(&mut sink);
        }
        n + read_ring(&mut ring, &self.counters, sink)
    }

    /// Waits until the reader forwards a batch.
    pub async fn wait(&mut self) -> io::Result<()> {
        match self.batches.recv().await {
            Some(batch) => self.received.push(batch),
            // The reader stopped (poll failed; it said why): the session's drain timer
            // still empties the ring.
            None => std::future::pending().await,
        }
        Ok(())
    }

    #[must_use]
    pub fn malformed(&self) -> u64 {
        self.counters.malformed.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn wakeups(&self) -> u64 {
        self.counters.wakeups.load(Ordering::Relaxed)
    }
}

/// The reader thread: empties the ring, forwards the batch, sleeps until the kernel wakes
/// it (or data is already waiting) or [`READ_EVERY`] passes, lets a batch gather. Ends
/// when the consumer is dropped.
fn read(ring: &Ring, tx: &UnboundedSender<Vec<Event>>, counters: &Counters, ring_bytes: usize) {
    let fd = ring.lock().unwrap_or_else(PoisonError::into_inner).as_raw_fd();
    let mut gather = GATHER_MAX;
    loop {
        {
            let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
            let mut batch = Vec::new();
            let n = read_ring(&mut ring, counters, |ev| batch.push(ev));
            gather = next_gather(gather, n * RECORD_BYTES, ring_bytes);
            // Sent under the lock: a drain cannot overtake a batch in flight.
            if !batch.is_empty() && tx.send(batch).is_err() {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let timeout = i32::try_from(READ_EVERY.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd; the fd stays open while the ring (shared) lives.
        match unsafe { libc::poll(&raw mut pollfd, 1, timeout) } {
            n if n > 0 => {
                counters.wakeups.fetch_add(1, Ordering::Relaxed);
                thread::sleep(gather);
            }
            0 => {}
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warn!("ring buffer poll failed: {e}; draining on a timer only");
                    return;
                }
            }
        }
    }
}

/// How long to let the next batch gather, after a drain of `drained` bytes: half as long
/// when the ring was over a quarter full, so that a storm never fills it between drains;
/// twice as long (up to [`GATHER_MAX`]) when it was under a sixteenth full.
fn next_gather(gather: Duration, drained: usize, ring_bytes: usize) -> Duration {
    if drained > ring_bytes / 4 {
        (gather / 2).max(GATHER_MIN)
    } else if drained < ring_bytes / 16 {
        (gather * 2).min(GATHER_MAX)
    } else {
        gather
    }
}

/// Decodes every record now in the ring into `sink`. Returns how many were read.
fn read_ring(
    ring: &mut RingBuf<MapData>,
    counters: &Counters,
    mut sink: impl FnMut(Event),
) -> usize {
    let mut n = 0;
    while let Some(record) = ring.next() {
        n += 1;
        match Event::decode(&record) {
            Ok(ev) => sink(ev),
            Err(e) => {
                if counters.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::warn!("undecodable ring buffer record: {e}");
                }
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_gather_for_less_time_as_the_ring_fills() {
        let ring = 4 << 20;
        let ms = Duration::from_millis;
        // A quarter of the ring or more between drains: halve, down to the floor.
        assert_eq!(next_gather(ms(50), ring / 2, ring), ms(25));
        assert_eq!(next_gather(ms(1), ring, ring), GATHER_MIN);
        // In between: keep.
        assert_eq!(next_gather(ms(25), ring / 8, ring), ms(25));
        // Little: double, up to the ceiling.
        assert_eq!(next_gather(ms(25), 0, ring), GATHER_MAX);
        assert_eq!(next_gather(ms(2), ring / 32, ring), ms(4));
    }
}
