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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Text in the shape of the two sysctls, any of it perhaps wrong.
    fn sysctl_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9 \t\n,-]{0,24}",
            "[0-9]{1,6}[ \t]+[0-9]{1,6}\n?",
            "([0-9]{1,6}(-[0-9]{1,6})?[, ]{0,2}){0,6}\n?",
        ]
    }

    /// A range, and a reserved list as the kernel writes it: single ports and ranges,
    /// either way round, overlapping or not, most near the range. The range is mostly
    /// short, so that checking each of its ports stays cheap.
    fn range_and_reserved() -> impl Strategy<Value = ((u16, u16), Vec<(u16, u16)>)> {
        let bounds = prop_oneof![
            19 => (any::<u16>(), 0..2_000u16).prop_map(|(low, n)| (low, low.saturating_add(n))),
            1 => any::<(u16, u16)>().prop_map(|(a, b)| (a.min(b), a.max(b))),
        ];
        bounds.prop_flat_map(|(low, high)| {
            let near = low.saturating_sub(50)..=high.saturating_add(50);
            let item = prop_oneof![
                near.clone().prop_map(|p| (p, p)),
                (near.clone(), near.clone()),
                (near, 0..64u16).prop_map(|(p, n)| (p, p.saturating_add(n))),
                any::<(u16, u16)>(),
            ];
            (Just((low, high)), prop::collection::vec(item, 0..8))
        })
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        /// Any text is a range or an error; a range is well formed, and has a size.
        #[test]
        fn any_sysctl_text_is_a_range_or_an_error(range in sysctl_like(), reserved in sysctl_like()) {
            if let Ok(r) = EphemeralRange::parse(&range, &reserved) {
                prop_assert!(r.low <= r.high);
                for pair in r.reserved.windows(2) {
                    prop_assert!(u32::from(*pair[0].end()) + 1 < u32::from(*pair[1].start()));
                }
                prop_assert!(r.reserved.iter().all(|p| r.low <= *p.start() && *p.end() <= r.high));
                prop_assert!(r.size() <= 65_536);
            }
        }

        /// A range and a reserved list written as text parse back to the reserved ports
        /// within the range, merged, and the size counts the ports left.
        #[test]
        fn ranges_written_parse_back(
            ((low, high), items) in range_and_reserved(),
            spaced in any::<bool>(),
        ) {
            let text: Vec<String> = items
                .iter()
                .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                .collect();
            let text = text.join(if spaced { ", " } else { "," });
            let r = EphemeralRange::parse(&format!("{low}\t{high}\n"), &format!("{text}\n"))
                .unwrap();
            let taken: Vec<u16> = (low..=high)
                .filter(|&port| items.iter().any(|&(a, b)| a <= port && port <= b))
                .collect();
            let mut merged: Vec<RangeInclusive<u16>> = Vec::new();
            for &port in &taken {
                match merged.last_mut() {
                    Some(last) if u32::from(*last.end()) + 1 == u32::from(port) => {
                        *last = *last.start()..=port;
                    }
                    _ => merged.push(port..=port),
                }
            }
            let free = usize::from(high - low) + 1 - taken.len();
            prop_assert_eq!((r.low, r.high), (low, high));
            prop_assert_eq!(&r.reserved, &merged);
            prop_assert_eq!(r.size() as usize, free);
        }
    }
}
