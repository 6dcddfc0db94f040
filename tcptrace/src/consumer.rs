//! Drains the ring buffer. The kernel side wakes us only when a batch is waiting, so the
//! caller also calls [`Consumer::drain`] on a short timer to pick up a quiet trickle.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::event::Event;

pub struct Consumer {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records that did not decode (a userspace/kernel version mismatch); reported, not fatal.
    pub malformed: u64,
    /// How often the kernel woke us (the batching target is at most ~1,000 a second).
    pub wakeups: u64,
}

impl Consumer {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring owns its fd, and the AsyncFd owns the ring, so the fd stays open
        // for as long as it is registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { ring, malformed: 0, wakeups: 0 })
    }

    /// Hands every record now in the ring to `sink`, in the order the kernel produced
    /// them. Returns how many were drained.
    pub fn drain(&mut self, mut sink: impl FnMut(Event)) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(record) = ring.next() {
            n += 1;
            match Event::decode(&record) {
                Ok(ev) => sink(ev),
                Err(e) => {
                    if self.malformed == 0 {
                        log::warn!("undecodable ring buffer record: {e}");
                    }
                    self.malformed += 1;
                }
            }
        }
        n
    }

    /// Waits until the kernel signals a batch.
    pub async fn wait(&mut self) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        self.wakeups += 1;
        Ok(())
    }
}
