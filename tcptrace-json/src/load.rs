//! What a `tcptrace load hold` worker prints on stdout, one JSON object a line: the wire
//! format between a worker and whatever drives it (the demo's fleet, xtask's soak).

use serde::{Deserialize, Serialize};

/// One progress line of a worker: what it holds so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The port the worker listens on, once it does.
    pub listening: Option<u16>,
    /// Connections it opened and holds.
    pub connected: u64,
    /// Connections its listener accepted and it holds.
    pub accepted: u64,
    /// Connect attempts that failed with EADDRNOTAVAIL.
    pub failed: u64,
    /// True once it stopped opening connections (count reached, exhausted or error).
    pub done: bool,
}

/// A line a worker prints when it cannot go on; the parent shows it to the user.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_keep_their_wire_format() {
        let progress =
            Progress { listening: Some(8080), connected: 3, accepted: 2, failed: 1, done: true };
        let line = r#"{"listening":8080,"connected":3,"accepted":2,"failed":1,"done":true}"#;
        assert_eq!(serde_json::to_string(&progress).unwrap(), line);
        assert_eq!(serde_json::from_str::<Progress>(line).unwrap(), progress);
        assert_eq!(
            serde_json::to_string(&Progress::default()).unwrap(),
            r#"{"listening":null,"connected":0,"accepted":0,"failed":0,"done":false}"#
        );
        let failure: Failure = serde_json::from_str(r#"{"error":"bind 127.0.0.1:1"}"#).unwrap();
        assert_eq!(failure.error, "bind 127.0.0.1:1");
    }
}
