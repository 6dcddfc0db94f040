//! The ephemeral range: the ports `connect()` picks a local port from, per network
//! namespace (`ip_local_port_range` minus `ip_local_reserved_ports`).

use std::fs;
use std::ops::RangeInclusive;

use std::io;

/// Why a namespace's ephemeral range could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("reading {path}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Parse(String),
}

/// `ip_local_port_range` of a fresh network namespace, assumed when it cannot be read.
pub const DEFAULT_RANGE: (u16, u16) = (32_768, 60_999);

/// The ports `connect()` picks a local port from, in one network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EphemeralRange {
    pub low: u16,
    pub high: u16,
    /// `ip_local_reserved_ports` within `low..=high`, sorted and merged.
    pub reserved: Vec<RangeInclusive<u16>>,
}

impl EphemeralRange {
    /// From the two sysctls' text: `"32768\t60999"` and `"8080,9000-9010"` (empty when
    /// nothing is reserved).
    pub fn parse(port_range: &str, reserved_ports: &str) -> Result<Self, String> {
        let bad = |what: &str| format!("unexpected {what}");
        let mut words = port_range.split_whitespace();
        let (Some(low), Some(high), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad(&format!("ip_local_port_range {port_range:?}")));
        };
        let port = |s: &str| s.parse::<u16>().map_err(|_| bad(&format!("port {s:?}")));
        let (low, high) = (port(low)?, port(high)?);
        if low > high {
            return Err(bad(&format!("ip_local_port_range {port_range:?}")));
        }
        let mut reserved = Vec::new();
        for item in reserved_ports.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (port(a.trim())?, port(b.trim())?),
                None => (port(item)?, port(item)?),
            };
            let (first, last) = (first.max(low), last.min(high));
            if first <= last {
                reserved.push(first..=last);
            }
        }
        reserved.sort_unstable_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u16>> = Vec::with_capacity(reserved.len());
        for r in reserved {
            match merged.last_mut() {
                Some(last) if u32::from(*r.start()) <= u32::from(*last.end()) + 1 => {
                    *last = *last.start()..=(*last.end()).max(*r.end());
                }
                _ => merged.push(r),
            }
        }
        Ok(Self { low, high, reserved: merged })
    }

    /// The calling thread's network namespace's range: `/proc/sys/net` shows the sysctls
    /// of the namespace of the thread that opens the file.
    pub fn read() -> Result<Self, RangeError> {
        const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
        const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
        let range =
            fs::read_to_string(RANGE).map_err(|source| RangeError::Read { path: RANGE, source })?;
        // Absent on kernels without it: nothing is reserved then.
        let reserved = fs::read_to_string(RESERVED).unwrap_or_default();
        Self::parse(&range, &reserved).map_err(RangeError::Parse)
    }

    /// Ports `connect()` can choose from.
    #[must_use]
    pub fn size(&self) -> u32 {
        let span = |r: &RangeInclusive<u16>| u32::from(*r.end()) - u32::from(*r.start()) + 1;
        span(&(self.low..=self.high)) - self.reserved.iter().map(span).sum::<u32>()
    }
}
