//! What the kernel's `/proc` says of this box and this process: available memory, and the
//! tracer's own resident memory and CPU time.

use anyhow::Context as _;

pub(super) fn mem_available() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    kib_field(&meminfo, "MemAvailable").context("no MemAvailable in /proc/meminfo")
}

/// User plus system CPU time of this process, from /proc/self/stat.
#[expect(clippy::cast_precision_loss, reason = "clock ticks stay far below 2^52")]
pub(super) fn cpu_seconds() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|stat| {
        // Fields after the parenthesised comm; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    });
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    ticks.map_or(0.0, |t| t as f64 / hz as f64)
}

pub(super) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| kib_field(&status, "VmRSS"))
        .unwrap_or(0)
}

/// The `key:   123 kB` line of a `/proc` file (`meminfo`, `status`), in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kib_field_in_bytes() {
        let meminfo = "MemTotal:       16303428 kB\nMemFree:         1214336 kB\n\
                       MemAvailable:   10526560 kB\n";
        assert_eq!(kib_field(meminfo, "MemAvailable"), Some(10_526_560 * 1024));
        let status = "Name:\ttcptrace\nVmPeak:\t  170000 kB\nVmRSS:\t  161324 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(161_324 * 1024));
    }

    #[test]
    fn a_missing_or_partial_key_is_none() {
        assert_eq!(kib_field("MemFree: 12 kB\n", "MemAvailable"), None);
        // A key is the whole name before the colon, not a prefix of it.
        assert_eq!(kib_field("VmRSSx: 12 kB\n", "VmRSS"), None);
        assert_eq!(kib_field("VmRSS: lots\n", "VmRSS"), None);
    }
}
