//! The demo's run: the server side's ramp to `--connections` on one port, the client
//! side's exhaustion of an ephemeral range, and the teardown, with the tracer drained
//! throughout and progress on stderr.

use std::{
    collections::HashSet,
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};

use tcptrace_netns::Netns;

use crate::{
    capacity::{Capacity, EphemeralRange},
    conn::{Conn, events_netns},
    engine::{Live, Tick, passes::Pass},
    ledger::Ledger,
    load::{
        fleet::{self, Fleet, WorkerState},
        hold::Progress,
    },
};

use tcptrace_proc::Pid;

use crate::{
    cmd::output::report_sample,
    view::{Snapshot, report::Samples},
};

use super::{
    DemoArgs, SECOND_DESTINATION_CONNECTIONS,
    plan::{Plan, gib, mem_available},
    report::{ClientSide, Results, ServerSide, Teardown, next_limits},
};

/// The server's address in the demo's namespace, and the client side's two servers.
const SERVER_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
const FIRST_DESTINATION: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECOND_DESTINATION: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The client side's one source address.
const CLIENT_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// How long the teardown waits for the workers to exit and the tracer to see it.
const TEARDOWN_WAIT: Duration = Duration::from_mins(3);
/// How long the tracer may take to catch up with what the load already did.
const SETTLE_WAIT: Duration = Duration::from_secs(10);
/// A ramp that makes no progress for this long has failed.
const STALL: Duration = Duration::from_secs(30);
/// Worker processes connecting at the same time (the others wait for their turn).
const CONNECTING_AT_ONCE: usize = 4;

pub(super) enum Phase {
    Done,
    Interrupted,
}

pub(super) struct Demo {
    args: DemoArgs,
    plan: Plan,
    live: Live,
    netns: Option<Netns>,
    /// The netns as the tracer's events name it (0 when the kernel has no BTF to tell).
    traced_netns: u32,
    server: Fleet,
    clients: Fleet,
    pub(super) results: Results,
    progress_on_tty: bool,
    /// SIGINT or SIGTERM came (or --duration ran out): every step stops at its next tick.
    interrupted: bool,
    /// One snapshot per tick, for `--report x.html`; `None` when no HTML report is asked.
    samples: Option<Samples>,
}

impl Demo {
    /// Starts the tracer and the namespace; with `sampled`, a snapshot is kept per tick.
    pub(super) fn start(args: &DemoArgs, plan: Plan, sampled: bool) -> anyhow::Result<Self> {
        // Reconciled at each side's verdict and at the end (and when events were lost):
        // every count on the way comes from the hooks.
        let live = Live::start(&args.trace.options(Duration::ZERO), 0)?;
        let netns = Netns::new("demo-netns")?;
        let traced_netns = events_netns(netns.inode(), live.session.tracer.knows_netns);
        let results = Results {
            backend: live.session.tracer.path.name().to_owned(),
            netns: netns.inode(),
            ..Results::default()
        };
        eprintln!(
            "tcptrace demo: {} connections to {SERVER_IP}:{} in a new network namespace \
             ({}): {} worker processes of up to {}; about {} of kernel memory",
            args.connections,
            args.server_port,
            netns.inode(),
            plan.workers,
            plan.per_worker,
            gib(plan.kernel_bytes),
        );
        Ok(Self {
            args: args.clone(),
            plan,
            live,
            netns: Some(netns),
            traced_netns,
            server: Fleet::new(),
            clients: Fleet::new(),
            results,
            progress_on_tty: std::io::stderr().is_terminal(),
            interrupted: false,
            samples: sampled.then(Samples::default),
        })
    }

    /// The snapshots kept for the HTML report, one per tick (none unless asked).
    pub(super) fn take_samples(&mut self) -> Vec<Snapshot> {
        self.samples.take().map(Samples::into_vec).unwrap_or_default()
    }

    pub(super) fn live(&self) -> &Live {
        &self.live
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.live.session.started.elapsed()
    }

    fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("the namespace lives until teardown")
    }

    pub(super) async fn run_phases(&mut self) -> anyhow::Result<Phase> {
        // A side can be over between two intervals: the report has each one's end.
        let server = self.server_side().await?;
        self.sample(true);
        if let Phase::Interrupted = server {
            return Ok(Phase::Interrupted);
        }
        if !self.args.server_only {
            let client = self.client_side().await?;
            self.sample(true);
            if let Phase::Interrupted = client {
                return Ok(Phase::Interrupted);
            }
        }
        // One last reconciliation, with everything still held.
        self.reconcile_now()?;
        self.results.events = self.live.ledger.events_seen();
        self.results.lost = self.live.session.tracer.lost();
        self.results.drift = self.live.drift_total;
        self.results.tracer_rss_bytes = tcptrace_proc::rss_bytes(Pid::Own).unwrap_or(0);
        self.results.tracer_cpu_s =
            tcptrace_proc::cpu_time(Pid::Own).map_or(0.0, |cpu| cpu.as_secs_f64());
        Ok(Phase::Done)
    }

    async fn server_side(&mut self) -> anyhow::Result<Phase> {
        let started = Instant::now();
        let available_before = mem_available()?;
        let listen = SocketAddr::new(SERVER_IP.into(), self.args.server_port);
        let mut left = self.args.connections;
        for i in 0..self.plan.workers {
            let count = left.min(self.plan.per_worker);
            left -= count;
            let args = vec![
                format!("--listen={listen}"),
                format!("--connect={listen}"),
                format!("--from={}", source_address(i)),
                format!("--count={count}"),
                "--wait-for-go".to_owned(),
            ];
            self.server.spawn(self.netns.as_ref().expect("namespace"), args)?;
        }
        // Every listener must be in the group before the first connect, or the early
        // connections all land on the first few workers.
        let workers = self.server.len();
        let listening = self.ramp("server side: listeners", Side::Server, 0, |states| {
            Goal::reached(listening_workers(states), workers as u64)
        });
        if let Phase::Interrupted = listening.await? {
            return Ok(Phase::Interrupted);
        }
        let target = self.args.connections;
        let ramp = self.ramp("server side", Side::Server, CONNECTING_AT_ONCE, move |states| {
            Goal::reached(both_ends(&fleet::totals(states)), target)
        });
        if let Phase::Interrupted = ramp.await? {
            return Ok(Phase::Interrupted);
        }
        let ramp_s = started.elapsed().as_secs_f64();
        let kernel_bytes_per_socket =
            available_before.saturating_sub(mem_available()?) / (2 * target);
        // The load holds everything; give the tracer the time to drain the last events.
        let traced = self.settle(Self::server_live, target).await?;
        if self.interrupted {
            return Ok(Phase::Interrupted);
        }
        let rows = self.rows_now()?;
        let row = rows.listeners.iter().find(|l| {
            l.netns == self.netns().inode()
                && l.port == self.args.server_port
                && l.addr == IpAddr::from(SERVER_IP)
        });
        let totals = fleet::totals(&self.server.states());
        let sock_diag_live = row.map_or(0, |r| r.live);
        if let Some(limits) = rows.limits.iter().find(|l| l.netns == self.netns().inode()) {
            self.results.next_limits = next_limits(limits, kernel_bytes_per_socket);
        }
        let mut side = ServerSide {
            listen: listen.to_string(),
            target,
            opened: totals.connected,
            accepted: totals.accepted,
            tracer_live: traced,
            sock_diag_live,
            remote_addrs: row.map_or(0, |r| r.remote_addrs),
            max_per_remote: row.map_or(0, |r| r.max_per_remote),
            reuseport_sockets: row.map_or(0, |r| r.reuseport_sockets),
            worker_processes: workers,
            ramp_s,
            kernel_bytes_per_socket,
            over_65535: traced > 65_535,
            passed: false,
        };
        side.passed = side.opened == target
            && side.accepted == target
            && side.tracer_live == target
            && side.sock_diag_live == target;
        self.results.server = Some(side);
        Ok(Phase::Done)
    }

    async fn client_side(&mut self) -> anyhow::Result<Phase> {
        let range = self.client_range()?;
        let ports = range.size();
        let first = SocketAddr::new(FIRST_DESTINATION.into(), self.args.server_port);
        // Enough workers to exhaust the range with room to spare: the range, not the
        // workers' counts, must be what stops them.
        let workers = u64::from(ports).div_ceil(self.plan.per_worker) + 1;
        for _ in 0..workers {
            let args = vec![
                format!("--listen={first}"),
                format!("--connect={first}"),
                format!("--from={CLIENT_SOURCE}"),
                format!("--count={}", self.plan.per_worker),
                "--until-exhausted".to_owned(),
                "--wait-for-go".to_owned(),
            ];
            self.clients.spawn(self.netns.as_ref().expect("namespace"), args)?;
        }
        let n = workers;
        let listening = self.ramp("client side: listeners", Side::Client, 0, move |states| {
            Goal::reached(listening_workers(states), n)
        });
        if let Phase::Interrupted = listening.await? {
            return Ok(Phase::Interrupted);
        }
        let exhausted =
            self.ramp("client side: exhausting", Side::Client, CONNECTING_AT_ONCE, move |states| {
                let done = states.iter().filter(|s| s.progress.done).count() as u64;
                Goal::reached(done, n)
            });
        if let Phase::Interrupted = exhausted.await? {
            return Ok(Phase::Interrupted);
        }
        let totals = fleet::totals(&self.clients.states());

        // The same source, a second server: the same local port numbers serve it too.
        let second = SocketAddr::new(SECOND_DESTINATION.into(), self.args.server_port);
        let second_count = SECOND_DESTINATION_CONNECTIONS.min(u64::from(ports));
        let args = vec![
            format!("--listen={second}"),
            format!("--connect={second}"),
            format!("--from={CLIENT_SOURCE}"),
            format!("--count={second_count}"),
        ];
        self.clients.spawn(self.netns.as_ref().expect("namespace"), args)?;
        let second_index = self.clients.len() - 1;
        let reached = self.ramp(
            "client side: second destination",
            Side::Client,
            CONNECTING_AT_ONCE,
            move |states| Goal::reached(both_ends(&states[second_index].progress), second_count),
        );
        if let Phase::Interrupted = reached.await? {
            return Ok(Phase::Interrupted);
        }
        let second_opened = self.clients.states()[second_index].progress.connected;
        self.settle(|d| d.client_live(second), second_opened).await?;
        if self.interrupted {
            return Ok(Phase::Interrupted);
        }
        let rows = self.rows_now()?;
        let dest = rows.destinations.iter().find(|d| {
            d.netns == self.netns().inode()
                && d.laddr == IpAddr::from(CLIENT_SOURCE)
                && d.raddr == first.ip()
                && d.rport == first.port()
        });
        let first_ports = self.local_ports_to(first).len() as u64;
        let reused = self.reused_ports(first, second);
        let mut side = ClientSide {
            source: CLIENT_SOURCE.into(),
            destination: first.to_string(),
            range_low: range.low,
            range_high: range.high,
            range: ports,
            narrowed: self.plan.client_range.is_some(),
            opened: totals.connected,
            failed: totals.failed,
            tracer_local_ports: first_ports,
            ports_in_use: dest.map_or(0, |d| d.ports_in_use),
            use_pct: dest.map_or(0.0, |d| d.use_pct),
            tracer_failed_connects: dest.map_or(0, |d| d.failed_connects),
            second_destination: second.to_string(),
            second_opened,
            second_reused_local_ports: reused,
            passed: false,
        };
        side.passed = side.opened == u64::from(ports)
            && side.failed > 0
            && side.tracer_local_ports == u64::from(ports)
            && side.ports_in_use == u64::from(ports)
            && side.tracer_failed_connects == side.failed
            && side.second_opened == second_count
            && side.second_reused_local_ports == second_count;
        self.results.client = Some(side);
        Ok(Phase::Done)
    }

    /// The client side's ephemeral range: the namespace's own, or narrowed to fit
    /// `--connections`.
    fn client_range(&self) -> anyhow::Result<EphemeralRange> {
        const PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
        let netns = self.netns();
        if let Some(ports) = self.plan.client_range {
            let (low, high) = narrowed_range(ports);
            netns.sysctl(PORT_RANGE, &format!("{low} {high}"))?;
        }
        parse_range(&netns.read_sysctl(PORT_RANGE)?)
    }

    /// Drains and reports until `goal` says the workers are there, printing progress every
    /// interval. Fails when a worker fails or the ramp stalls.
    async fn ramp(
        &mut self,
        what: &str,
        side: Side,
        connecting_at_once: usize,
        goal: impl Fn(&[WorkerState]) -> Goal,
    ) -> anyhow::Result<Phase> {
        let started = Instant::now();
        let mut best = (0, Instant::now());
        loop {
            if self.interrupted {
                return Ok(Phase::Interrupted);
            }
            let fleet = match side {
                Side::Server => &mut self.server,
                Side::Client => &mut self.clients,
            };
            fleet.go(connecting_at_once);
            let states = fleet.states();
            if let Some(failed) = states.iter().find_map(|s| s.error.as_ref().map(|e| (s.pid, e))) {
                bail!("{what}: worker {} failed: {}", failed.0, failed.1);
            }
            if let Some(gone) = states.iter().find(|s| s.exited) {
                bail!("{what}: worker {} exited early", gone.pid);
            }
            let g = goal(&states);
            if g.done >= g.target {
                self.progress_line(what, &g, &fleet::totals(&states), started, true);
                // A ramp can be over between two walks: the report has its end.
                self.sample(true);
                return Ok(Phase::Done);
            }
            let moved = g.done + activity(&states);
            if moved > best.0 {
                best = (moved, Instant::now());
            } else if best.1.elapsed() > STALL {
                bail!(
                    "{what}: stuck at {} of {} for {} s; see the kernel log (dmesg) and \
                     `ss -s` in the demo's namespace",
                    g.done,
                    g.target,
                    STALL.as_secs()
                );
            }
            let tick = self.next_tick().await?;
            match tick {
                Tick::Stop => {
                    eprintln!("tcptrace demo: {what}: stopping; tearing the load down");
                    return Ok(Phase::Interrupted);
                }
                Tick::Report => {
                    self.progress_line(what, &g, &fleet::totals(&states), started, false);
                }
                Tick::Drain => {}
            }
        }
    }

    /// Waits (draining) until `count` reaches `target`, for at most a few seconds: the
    /// workers already hold everything, so only the tracer's events can be behind.
    async fn settle(&mut self, count: impl Fn(&Self) -> u64, target: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let n = count(self);
            if n == target || Instant::now() > deadline {
                return Ok(n);
            }
            if let Tick::Stop = self.next_tick().await? {
                return Ok(count(self));
            }
        }
    }

    /// Reconciles, then the capacity rows as the kernel has them now: what a side is
    /// judged by once its load holds still and the tracer has caught up.
    fn rows_now(&mut self) -> anyhow::Result<Capacity> {
        self.reconcile_now()?;
        Ok(self.live.capacity.refresh_now(0)?)
    }

    /// A reconciliation now, which must work: a verdict that rests on unverified counts
    /// is none.
    fn reconcile_now(&mut self) -> anyhow::Result<()> {
        self.live.update(&Tick::Stop);
        match (self.live.reconciled, &self.live.passes.record(Pass::Reconciliation).failing) {
            (true, _) => Ok(()),
            (false, why) => anyhow::bail!(
                "the counts could not be checked against the kernel: the reconciliation \
                 failed ({})",
                why.as_deref().unwrap_or("no reason given")
            ),
        }
    }

    /// The session's next tick, applied; remembers a stop.
    async fn next_tick(&mut self) -> anyhow::Result<Tick> {
        let tick = self.live.next().await;
        self.interrupted |= matches!(tick, Tick::Stop);
        if !matches!(tick, Tick::Drain) {
            self.sample(false);
        }
        Ok(tick)
    }

    /// Keeps a snapshot for the HTML report, if one is asked for: of the demo's namespace
    /// only (its listener, its destinations), with the capacity rows as paced for a large
    /// box (the last refresh's until one is due), or walked now at a side's end (`now`).
    fn sample(&mut self, now: bool) {
        if self.samples.is_none() {
            return;
        }
        let rows =
            if now { self.live.current_capacity_rows(0) } else { self.live.capacity_rows(0) };
        let netns = self.netns.as_ref().map(Netns::inode);
        let rows = rows.map(|mut rows| {
            rows.listeners.retain(|l| Some(l.netns) == netns);
            rows.destinations.retain(|d| Some(d.netns) == netns);
            rows
        });
        let sample = report_sample(&self.live, rows);
        self.samples.get_or_insert_default().push(sample);
    }

    fn progress_line(
        &self,
        what: &str,
        goal: &Goal,
        totals: &Progress,
        started: Instant,
        last: bool,
    ) {
        if self.args.json && !self.progress_on_tty {
            // Keep stderr short when a program reads the results.
            if !last {
                return;
            }
        }
        let line = format!(
            "tcptrace demo: {what}: {}/{} ({} opened, {} accepted); tracer: {} live on {SERVER_IP}:{}, lost {}; {:.1}s",
            goal.done,
            goal.target,
            totals.connected,
            totals.accepted,
            self.server_live(),
            self.args.server_port,
            self.live.session.tracer.lost(),
            started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.progress_on_tty {
            let end = if last { "\n" } else { "" };
            let _ = write!(err, "\r\x1b[2K{line}{end}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Live connections on the server port in the demo's namespace, by the tracer.
    fn server_live(&self) -> u64 {
        let (netns, local) =
            (self.traced_netns, SocketAddr::new(SERVER_IP.into(), self.args.server_port));
        count_conns(&self.live.ledger, |c| c.netns == netns && c.local == local)
    }

    /// Live connections from the client source to `dest`, by the tracer.
    fn client_live(&self, dest: SocketAddr) -> u64 {
        count_conns(&self.live.ledger, |c| self.is_client_conn(c, dest))
    }

    fn local_ports_to(&self, dest: SocketAddr) -> HashSet<u16> {
        self.live
            .ledger
            .conns()
            .filter(|c| self.is_client_conn(c, dest))
            .map(|c| c.local.port())
            .collect()
    }

    fn is_client_conn(&self, c: &Conn, dest: SocketAddr) -> bool {
        c.netns == self.traced_netns
            && c.local.ip() == IpAddr::from(CLIENT_SOURCE)
            && c.remote == dest
    }

    /// Connections to `second` whose local port is also in use towards `first`.
    fn reused_ports(&self, first: SocketAddr, second: SocketAddr) -> u64 {
        let first_ports = self.local_ports_to(first);
        self.local_ports_to(second).iter().filter(|p| first_ports.contains(p)).count() as u64
    }

    /// Stops every worker, drops the namespace, and waits (draining, so that the close
    /// storm is counted too) until the workers are gone and the tracer sees the namespace
    /// empty. Ctrl-C here is not a reason to stop early: leaving nothing behind is the point.
    pub(super) async fn teardown(&mut self, interrupted: bool) -> Teardown {
        let workers = self.server.len() + self.clients.len();
        log::debug!("teardown: stopping {workers} workers");
        self.server.kill_all();
        self.clients.kill_all();
        let netns = self.traced_netns;
        let in_netns = |d: &Self| count_conns(&d.live.ledger, |c| c.netns == netns);
        let mut deadline = Instant::now() + TEARDOWN_WAIT;
        let mut workers_stopped = 0;
        loop {
            let gone =
                self.server.reap(&mut workers_stopped) & self.clients.reap(&mut workers_stopped);
            if gone && self.netns.is_some() {
                // The namespace thread is the last holder of the namespace.
                drop(self.netns.take());
                // Every socket is closed now; only the tracer's events can be behind.
                deadline = deadline.min(Instant::now() + SETTLE_WAIT);
            }
            let left = in_netns(self);
            log::debug!("teardown: workers gone {gone}, {left} live in the namespace");
            if (gone && left == 0) || Instant::now() > deadline {
                break;
            }
            self.live.next().await;
        }
        let left_live = in_netns(self);
        if !self.args.json || self.progress_on_tty {
            let why = if interrupted { "interrupted; " } else { "" };
            eprintln!(
                "tcptrace demo: {why}teardown: {workers_stopped} of {workers} worker processes \
                 stopped; {left_live} connections left in the demo's namespace"
            );
        }
        Teardown { workers_stopped, left_live, interrupted }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Server,
    Client,
}

/// How far a ramp has come.
struct Goal {
    done: u64,
    target: u64,
}

impl Goal {
    fn reached(done: u64, target: u64) -> Self {
        Self { done, target }
    }
}

/// Workers whose listener is in the group.
fn listening_workers(states: &[WorkerState]) -> u64 {
    states.iter().filter(|s| s.progress.listening.is_some()).count() as u64
}

/// Connections held at both ends: opened by a worker, and accepted by one.
fn both_ends(progress: &Progress) -> u64 {
    progress.connected.min(progress.accepted)
}

/// What a ramp counts as progress: any connection opened, accepted or refused.
fn activity(states: &[WorkerState]) -> u64 {
    let t = fleet::totals(states);
    t.connected + t.accepted + t.failed
}

fn count_conns(ledger: &Ledger, pred: impl Fn(&Conn) -> bool) -> u64 {
    ledger.conns().filter(|c| pred(c)).count() as u64
}

/// Worker `i`'s source address: 127.1.0.1, 127.1.0.2, ... (never 127.0.0.1).
fn source_address(i: u64) -> Ipv4Addr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + n)
}

/// A namespace's `ip_local_port_range`, by capacity's rule for that text. The demo's
/// namespace is its own and new, so no port in it is reserved.
/// A range of `ports` ports: from 40000 where it fits (clear of the default range's start),
/// else ending at the last port, as the kernel refuses a range past 65535.
fn narrowed_range(ports: u32) -> (u32, u32) {
    let low = 40_000u32.min(65_536 - ports);
    (low, low + ports - 1)
}

fn parse_range(text: &str) -> anyhow::Result<EphemeralRange> {
    EphemeralRange::parse(text, "")
        .map_err(|_| anyhow!("cannot parse ip_local_port_range {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_skip_127_0_0_1_and_count_up() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_address(255), Ipv4Addr::new(127, 1, 1, 0));
        assert_eq!(source_address(124), Ipv4Addr::new(127, 1, 0, 125));
    }

    #[test]
    fn a_narrowed_range_never_passes_the_last_port() {
        assert_eq!(narrowed_range(10_000), (40_000, 49_999));
        assert_eq!(narrowed_range(25_536), (40_000, 65_535));
        // --connections 99,999 narrows to the default range's size, 28,232 ports: from
        // 40000 that would end at 68231, which the kernel refuses.
        assert_eq!(narrowed_range(28_232), (37_304, 65_535));
    }

    #[test]
    fn parses_a_port_range() {
        let range = parse_range("32768\t60999\n").unwrap();
        assert_eq!((range.low, range.high, range.size()), (32_768, 60_999, 28_232));
        assert!(parse_range("60999 32768").is_err());
        assert!(parse_range("x").is_err());
    }
}
