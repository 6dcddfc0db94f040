//! tcptrace's last word on a run: the last line of `tcptrace watch --json`.

use anyhow::{Context as _, Result};
use serde_json::Value;

/// `events`, `lost` and `drift` of a `tcptrace watch --json` line.
pub(super) fn parse_watch_line(line: &str) -> Result<WatchEnd> {
    let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
    let field = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {line}"));
    Ok(WatchEnd { events: field("events")?, lost: field("lost")?, drift: field("drift")? })
}

/// tcptrace's last word on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WatchEnd {
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) drift: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_watch_line() {
        let watch =
            r#"{"elapsed_s":1.0,"backend":"tp_btf","events":9,"lost":2,"drift":1,"live":0}"#;
        assert_eq!(parse_watch_line(watch).unwrap(), WatchEnd { events: 9, lost: 2, drift: 1 });
        assert!(parse_watch_line(r#"{"lost":1}"#).is_err());
    }
}
