//! Reading `tcptrace serve`'s `/metrics` (OpenMetrics text) back as numbers: what the live
//! tests and xtask's soak benchmark check the scraped counts with.

use std::collections::BTreeMap;

/// The samples of an OpenMetrics text exposition, `name{labels}` (as written) → value.
/// Descriptor lines (`# HELP`, `# TYPE`, ...) are skipped; the text must end with `# EOF`,
/// as OpenMetrics requires, so that a cut-off answer is an error and not fewer series.
pub fn samples(text: &str) -> Result<BTreeMap<String, f64>, String> {
    if !text.ends_with("# EOF\n") {
        return Err(format!("not OpenMetrics text (no `# EOF` at the end): {text}"));
    }
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) =
                l.rsplit_once(' ').ok_or_else(|| format!("not a sample line: {l}"))?;
            let value = value.parse().map_err(|e| format!("{e}: {l}"))?;
            Ok((series.to_owned(), value))
        })
        .collect()
}

/// The series of one family (`name{...}`), as (labels, value), in label order.
#[must_use]
pub fn family<'a>(samples: &'a BTreeMap<String, f64>, name: &str) -> Vec<(&'a str, f64)> {
    let prefix = format!("{name}{{");
    samples.iter().filter_map(|(k, &v)| k.strip_prefix(&prefix).map(|labels| (labels, v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_and_families() {
        let text = "# HELP tcptrace_live_connections Live.\n# TYPE tcptrace_live_connections gauge\n\
                    tcptrace_live_connections 130\n\
                    tcptrace_events_total{kind=\"connect\"} 66\n\
                    tcptrace_events_total{kind=\"close\"} 2\n\
                    tcptrace_lost_events_total 0\n# EOF\n";
        let m = samples(text).unwrap();
        assert_eq!(m.len(), 4);
        assert!((m["tcptrace_live_connections"] - 130.0).abs() < f64::EPSILON);
        let events = family(&m, "tcptrace_events_total");
        assert_eq!(events, [("kind=\"close\"}", 2.0), ("kind=\"connect\"}", 66.0)]);
        assert!(family(&m, "tcptrace_events").is_empty(), "a family is its whole name");
    }

    #[test]
    fn a_cut_off_or_garbled_answer_is_an_error() {
        assert!(samples("tcptrace_live_connections 130\n").is_err());
        assert!(samples("tcptrace_live_connections\n# EOF\n").is_err());
        assert!(samples("tcptrace_live_connections many\n# EOF\n").is_err());
        assert_eq!(samples("# EOF\n").unwrap().len(), 0);
    }
}
