//! Scraping `tcptrace serve` as Prometheus would: `GET /metrics` and `GET /healthz`, each on
//! a connection of its own, from the namespace serve listens in (the soak made it; no
//! traffic on the host's loopback). The samples are read with the contract's reader.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use tcptrace_json::metrics::{family, samples};
use tcptrace_netns::Netns;

/// What one scrape may take, each of the two requests (the tracer answers from its last
/// rendering, so a healthy one takes a millisecond or two).
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);

/// The counts the soak records, from one `/metrics` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) live: u64,
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) drift: u64,
    pub(super) drift_total: u64,
    pub(super) skipped_passes: u64,
    pub(super) unreconciled_netns: u64,
}

impl Counts {
    fn of(metrics: &BTreeMap<String, f64>) -> Result<Self> {
        let one = |name: &str| {
            metrics.get(name).map(|&v| v as u64).with_context(|| format!("no {name} in /metrics"))
        };
        let sum = |name: &str| family(metrics, name).iter().map(|&(_, v)| v as u64).sum();
        Ok(Self {
            live: one("tcptrace_live_connections")?,
            events: sum("tcptrace_events_total"),
            lost: one("tcptrace_lost_events_total")?,
            drift: one("tcptrace_drift_connections")?,
            drift_total: one("tcptrace_drift_corrections_total")?,
            skipped_passes: sum("tcptrace_skipped_passes_total"),
            unreconciled_netns: one("tcptrace_unreconciled_namespaces")?,
        })
    }
}

/// One second's scrape.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scrape {
    pub(super) counts: Option<Counts>,
    pub(super) metrics_ms: Option<f64>,
    pub(super) healthz: Option<u16>,
    /// Why it was not answered in full, if it was not.
    pub(super) error: Option<String>,
}

impl Scrape {
    pub(super) fn answered(&self) -> bool {
        self.counts.is_some() && self.healthz == Some(200)
    }
}

pub(super) struct Scraper {
    netns: Arc<Netns>,
    addr: SocketAddr,
}

impl Scraper {
    pub(super) fn new(netns: Arc<Netns>, addr: SocketAddr) -> Self {
        Self { netns, addr }
    }

    pub(super) fn scrape(&self) -> Scrape {
        let started = Instant::now();
        let metrics = self.get("/metrics").and_then(|(status, body)| {
            if status != 200 {
                bail!("/metrics answered {status}: {}", first_line(&body));
            }
            Counts::of(&samples(&body).map_err(anyhow::Error::msg)?)
        });
        let metrics_ms = metrics.is_ok().then(|| started.elapsed().as_secs_f64() * 1e3);
        let healthz = self.get("/healthz");
        let error = match (&metrics, &healthz) {
            (Err(e), _) => Some(format!("{e:#}")),
            (_, Err(e)) => Some(format!("/healthz: {e:#}")),
            (_, Ok((status, body))) if *status != 200 => {
                Some(format!("/healthz answered {status}: {}", first_line(body)))
            }
            _ => None,
        };
        Scrape {
            counts: metrics.ok(),
            metrics_ms,
            healthz: healthz.ok().map(|(status, _)| status),
            error,
        }
    }

    /// A plain HTTP/1.0 GET: (status, body).
    pub(super) fn get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self.addr;
        // The socket is made in serve's namespace; it works from this thread after.
        let mut stream = self
            .netns
            .run(move || TcpStream::connect_timeout(&addr, TIMEOUT))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response).with_context(|| format!("reading {path}"))?;
        parse_response(&response)
    }
}

fn parse_response(response: &str) -> Result<(u16, String)> {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {}", first_line(head)))?;
    Ok((status, body.to_owned()))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counts_the_soak_records() {
        // Recorded (tests/fixtures/contract/metrics.http), cut to the families read here.
        let body = "tcptrace_attach_info{attach=\"tp_btf\"} 1\n\
                    tcptrace_live_connections 130\n\
                    tcptrace_events_total{kind=\"connect\"} 66\n\
                    tcptrace_events_total{kind=\"close\"} 2\n\
                    tcptrace_events_total{kind=\"accept\"} 66\n\
                    tcptrace_lost_events_total 3\n\
                    tcptrace_drift_connections 1\n\
                    tcptrace_drift_corrections_total 4\n\
                    tcptrace_unreconciled_namespaces 0\n\
                    tcptrace_skipped_passes_total{pass=\"reconciliation\"} 1\n\
                    tcptrace_skipped_passes_total{pass=\"capacity_refresh\"} 2\n# EOF\n";
        let counts = Counts::of(&samples(body).unwrap()).unwrap();
        assert_eq!(
            counts,
            Counts {
                live: 130,
                events: 134,
                lost: 3,
                drift: 1,
                drift_total: 4,
                skipped_passes: 3,
                unreconciled_netns: 0
            }
        );
        assert!(Counts::of(&samples("tcptrace_live_connections 1\n# EOF\n").unwrap()).is_err());
    }

    #[test]
    fn reads_a_response() {
        let ok = "HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nok: attached via tp_btf";
        assert_eq!(parse_response(ok).unwrap(), (200, "ok: attached via tp_btf".into()));
        let stale = "HTTP/1.1 503 Service Unavailable\r\n\r\nstale: no refresh for 12 s\n";
        assert_eq!(parse_response(stale).unwrap().0, 503);
        assert!(parse_response("").is_err());
    }
}
