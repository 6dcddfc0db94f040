//! `tcptrace top` used as a person would: in a real terminal (a detached tmux session of a
//! fixed size), keys sent with `tmux send-keys`, the screen read back with
//! `tmux capture-pane`, while the test holds connections of its own (own network
//! namespace, 127.82.0.0/16, listener ports 21982 and 21983).
//!
//! Not run in the VM tier (busybox has no tmux): the full-screen view reads the same ledger
//! whatever the attach path, and the live tier runs this on the host.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use tcptrace_tests::{
    ATTACH_WAIT, Accepted, Netns, Server, WAIT, attach_path, connect, run_to_exit, tracer_bin,
    tuples,
};

const BUSY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 82, 0, 1)), 21982);
const QUIET: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 82, 0, 2)), 21983);
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 82, 0, 9));
/// What the pane's shell prints once `tcptrace top` has exited.
const EXITED: &str = "top exited with status";

/// A tmux server of our own (its own socket), running one session of one pane.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached session of `width` x `height` cells.
    fn start(command: &str, width: u16, height: u16) -> Self {
        let tmux = Self { socket: format!("tcptrace-top-test-{}", std::process::id()) };
        let out = tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run tmux ({e}): `cargo xtask setup` installs it (apt package tmux)")
        })
    }

    /// Presses keys by their tmux names (`Left`, `Enter`, `Escape`, `q`).
    fn press(&self, keys: &[&str]) {
        let out = self.run(&[&["send-keys", "-t", "top"], keys].concat());
        assert!(out.status.success(), "tmux send-keys {keys:?}");
    }

    /// Types text literally.
    fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", "top", "-l", text]);
        assert!(out.status.success(), "tmux send-keys -l {text:?}");
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        assert!(out.status.success(), "tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the pane shows the alternate screen (a full-screen program is running).
    fn alternate_screen(&self) -> bool {
        let out = self.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Reads the screen until `check` accepts it; panics with the last screen after
    /// `timeout`, or at once if tcptrace exited.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut(&str) -> Result<T, String>,
    ) -> T {
        self.poll(what, timeout, true, check)
    }

    fn poll<T>(
        &self,
        what: &str,
        timeout: Duration,
        stop_at_exit: bool,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            match check(&screen) {
                Ok(found) => return found,
                Err(why)
                    if Instant::now() >= deadline || (stop_at_exit && screen.contains(EXITED)) =>
                {
                    panic!("waiting for {what}: {why}\n--- screen ---\n{screen}--------------")
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The rows of the table titled `title`, each split into its cells (on whitespace).
fn table(screen: &str, title: &str) -> Vec<Vec<String>> {
    let is_title = |l: &str| {
        ["Listeners", "Destinations", "Local ports", "Remote endpoints"]
            .iter()
            .any(|t| l.starts_with(&format!(" {t}  ")))
    };
    screen
        .lines()
        .skip_while(|l| !l.starts_with(&format!(" {title}  ")))
        .skip(2) // its title and column headers
        .take_while(|l| !l.trim().is_empty() && !is_title(l) && !l.starts_with("q quit"))
        .filter(|l| !l.starts_with('('))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The first cell of each row of the table titled `title`.
fn first_cells(screen: &str, title: &str) -> Vec<String> {
    table(screen, title).into_iter().map(|mut cells| cells.swap_remove(0)).collect()
}

/// The row whose first cell is `first`, if shown.
fn row(screen: &str, title: &str, first: &str) -> Option<Vec<String>> {
    table(screen, title).into_iter().find(|cells| cells[0] == first)
}

/// A listener row's LIVE cell (columns: LISTENER NETNS LIVE ...), checked to be in `netns`.
fn listener_live(screen: &str, addr: SocketAddr, netns: u32) -> Result<u64, String> {
    let cells = row(screen, "Listeners", &addr.to_string()).ok_or(format!("no row for {addr}"))?;
    if cells[1] != netns.to_string() {
        return Err(format!("{addr} is in netns {}, expected {netns}", cells[1]));
    }
    cells[2].parse().map_err(|e| format!("LIVE {:?}: {e}", cells[2]))
}

#[test]
fn top_shows_sorts_filters_and_quits_in_a_real_terminal() {
    println!(
        "checks: in a tmux terminal, `tcptrace top` shows our listeners with their exact live \
         counts (seeded and from events), follows closes, sorts by the chosen column both \
         ways, filters with the / prompt, and on q exits 0 with the terminal restored"
    );
    let ns = Netns::new("ns-top");
    let busy = Server::listen(&ns, BUSY, Accepted::Hold);
    let quiet = Server::listen(&ns, QUIET, Accepted::Hold);
    // Seeded from sock_diag: these exist before tcptrace starts.
    let quiet_clients = connect(&ns, CLIENT, QUIET, 3);
    quiet.wait_accepted(3);

    // The box's own connection churn can overflow the ring (`lost` > 0); reconciling every
    // second makes the ledger's rows exact again within a second whatever was lost.
    let command = format!(
        "'{}' top --attach {} --interval 200ms --reconcile-every 1s; echo \"{EXITED} $?\"; \
         echo \"tty: $(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' ')\"; \
         exec sleep 600",
        tracer_bin().display(),
        attach_path()
    );
    let tmux = Tmux::start(&command, 200, 70);
    tmux.wait_for("the full-screen view", ATTACH_WAIT, |s| {
        if s.contains("tcptrace top") && s.contains("q quit") && tmux.alternate_screen() {
            Ok(())
        } else {
            Err("not drawn yet".into())
        }
    });

    // From connect and accept events, while the view runs.
    let mut busy_clients: Vec<TcpStream> = connect(&ns, CLIENT, BUSY, 5);
    busy.wait_accepted(5);

    // Narrow every table to our addresses: the box has listeners of its own.
    tmux.press(&["/"]);
    tmux.type_text("127.82.0.");
    tmux.press(&["Enter"]);
    let screen = tmux.wait_for("our listeners, destination and endpoint rows", WAIT, |s| {
        our_rows(s, ns.inode())
    });
    println!(
        "  listeners: {BUSY} live 5, {QUIET} live 3 (netns {}); endpoint {BUSY} live 5",
        ns.inode()
    );
    assert_eq!(first_cells(&screen, "Listeners"), [BUSY.to_string(), QUIET.to_string()], "LIVE v");

    // Sorting: flip LIVE, then sort by the address both ways.
    tmux.press(&["r"]);
    wait_for_listener_order(&tmux, "LIVE ^", [QUIET, BUSY]);
    tmux.press(&["Left", "Left"]);
    wait_for_listener_order(&tmux, "LISTENER ^", [BUSY, QUIET]);
    tmux.press(&["r"]);
    wait_for_listener_order(&tmux, "LISTENER v", [QUIET, BUSY]);
    println!("  sorting: r flips LIVE, Left picks LISTENER, r flips it: each reorders the rows");

    // Closing two connections (both ends) shows at the next refresh.
    let closing = tuples(&busy_clients[..2]);
    busy.close_peers_of(&closing);
    busy_clients.drain(..2);
    tmux.wait_for("3 live on the busy listener", WAIT, |s| {
        match listener_live(s, BUSY, ns.inode())? {
            3 => Ok(()),
            n => Err(format!("live {n}")),
        }
    });
    println!("  after closing 2: {BUSY} live 3");

    // The prompt: typing narrows the rows as it goes; Esc clears the filter.
    tmux.press(&["/"]);
    tmux.type_text("2");
    tmux.wait_for("the prompt, and only the quiet listener", WAIT, |s| {
        let footer = s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default();
        let order = first_cells(s, "Listeners");
        if footer.starts_with("/127.82.0.2") && order == [QUIET.to_string()] {
            Ok(())
        } else {
            Err(format!("footer {footer:?}, listeners {order:?}"))
        }
    });
    tmux.press(&["Escape"]);
    tmux.wait_for("the filter cleared", WAIT, |s| {
        let first = s.lines().next().unwrap_or_default();
        let shown = first_cells(s, "Listeners");
        if !first.contains("filter") && s.contains("q quit") && shown.len() >= 2 {
            Ok(())
        } else {
            Err(format!("header {first:?}, listeners {shown:?}"))
        }
    });
    // The local port's own row, found with a port filter.
    tmux.press(&["/"]);
    tmux.type_text(&BUSY.port().to_string());
    tmux.press(&["Enter"]);
    tmux.wait_for("the busy port's row", WAIT, |s| {
        let port = BUSY.port().to_string();
        match row(s, "Local ports", &port) {
            Some(cells) if cells[1..] == ["3", "1"] => Ok(()),
            other => Err(format!("local port row {other:?}")),
        }
    });
    println!(
        "  filter: /2 leaves {QUIET}; Esc shows all again; /{} shows local port 3 live",
        BUSY.port()
    );

    quit_and_check_the_terminal(&tmux);
    drop((quiet_clients, busy_clients));
}

/// Waits until the listeners table is sorted as the header `marker` says ("LIVE ^") and
/// shows exactly `order`.
fn wait_for_listener_order(tmux: &Tmux, marker: &str, order: [SocketAddr; 2]) {
    tmux.wait_for(marker, WAIT, |s| {
        let shown = first_cells(s, "Listeners");
        if s.contains(marker) && shown == order.map(|a| a.to_string()) {
            Ok(())
        } else {
            Err(format!("order {shown:?}"))
        }
    });
}

/// Presses q; tcptrace must exit 0 and leave the terminal as it found it: off the
/// alternate screen, and out of raw mode (what the pane's shell prints after it).
fn quit_and_check_the_terminal(tmux: &Tmux) {
    tmux.press(&["q"]);
    // The shell prints the exit status, then the tty modes: wait for both.
    let screen = tmux.poll("tcptrace to exit", WAIT, false, |s| {
        if s.contains("tty: ") { Ok(s.to_owned()) } else { Err("still running".into()) }
    });
    let status = screen.lines().find(|l| l.starts_with(EXITED)).expect("exit line");
    assert_eq!(status, format!("{EXITED} 0"), "{screen}");
    assert!(!tmux.alternate_screen(), "the alternate screen was left:\n{screen}");
    let tty = screen.lines().find(|l| l.starts_with("tty: ")).expect("tty line");
    assert_eq!(tty.split_whitespace().collect::<Vec<_>>(), ["tty:", "icanon", "echo"], "{screen}");
    println!("  q: exit status 0, alternate screen left, terminal back in cooked mode ({tty})");
}

/// The screen once it shows, filtered by "127.82.0.", our listeners with 5 and 3 live in
/// `netns`, the busy destination with 5 ports in use, and the ledger's endpoint row for it.
fn our_rows(s: &str, netns: u32) -> Result<String, String> {
    // Keys reach the view asynchronously, as a person's do: wait for the filter too.
    let header = s.lines().next().unwrap_or_default();
    if !header.contains("filter \"127.82.0.\"") || !s.contains("q quit") {
        return Err(format!("filter not applied yet: {header:?}"));
    }
    let counts = (listener_live(s, BUSY, netns)?, listener_live(s, QUIET, netns)?);
    if counts != (5, 3) {
        return Err(format!("listeners live {counts:?}"));
    }
    // The client side: the destination's ports in use, and the ledger's remote endpoint.
    let dest = table(s, "Destinations")
        .into_iter()
        .find(|cells| cells[..3] == [CLIENT.to_string(), "->".to_owned(), BUSY.to_string()]);
    if dest.as_ref().is_none_or(|cells| cells[4] != "5") {
        return Err(format!("destination row {dest:?}"));
    }
    match row(s, "Remote endpoints", &BUSY.to_string()) {
        Some(cells) if cells[1..] == ["5", "5"] => Ok(s.to_owned()),
        other => Err(format!("remote endpoint row {other:?}")),
    }
}

#[test]
fn top_prints_the_watch_table_when_stdout_is_not_a_terminal() {
    const PIPED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 82, 1, 1)), 21984);
    println!("checks: `tcptrace top | ...` prints watch's plain table (no escape codes), exit 0");
    let ns = Netns::new("ns-top-pipe");
    let server = Server::listen(&ns, PIPED, Accepted::Hold);
    let clients = connect(&ns, CLIENT, PIPED, 2);
    server.wait_accepted(2);
    let attach = attach_path();
    let args = ["top", "--attach", &attach, "--duration", "1s", "--interval", "200ms"];
    let exit = run_to_exit(&args, ATTACH_WAIT);
    assert_eq!(exit.code(), Some(0), "{}", exit.stderr);
    assert!(!exit.stdout.contains('\x1b'), "escape codes in a pipe:\n{}", exit.stdout);
    let last = exit.stdout.rsplit("elapsed ").next().expect("a table");
    let row = last
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&"21984"))
        .unwrap_or_else(|| panic!("no LOCAL PORT row for 21984 in the last table:\n{last}"));
    assert_eq!(row, ["21984", "2", "1"], "LOCAL PORT, LIVE, REMOTE ADDRS");
    println!("  last table: local port 21984 live 2 from 1 remote address");
    drop(clients);
}
