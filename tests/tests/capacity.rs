//! The client-side capacity view against a real exhaustion: a namespace with a 10-port
//! ephemeral range, connects until `EADDRNOTAVAIL`, and the tracer's destination row (own
//! network namespace, 127.79.0.0/16, port 21971).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use tcptrace_tests::{Accepted, INTERVAL, Netns, Server, Tracer};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 79, 0, 1)), 21971);

#[test]
fn ephemeral_exhaustion_and_failed_connects_are_reported() {
    const ATTEMPTS: usize = 14;
    println!(
        "checks: with a 10-port ephemeral range, the destination row shows every port in use, \
         use 100% of the range, and exactly the connect() calls that failed with EADDRNOTAVAIL"
    );
    let ns = Netns::new("ns-exhaust");
    let range: u32 = ns.run(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40009").expect("set range");
        let text =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("range");
        let ends: Vec<u32> = text.split_whitespace().map(|p| p.parse().expect("port")).collect();
        ends[1] - ends[0] + 1
    });
    let server = Server::listen(&ns, SERVER, Accepted::Hold);
    let tracer = Tracer::watch(&["--top", "0", "--interval", INTERVAL]);

    // Unbound sockets: the kernel picks the source address and a port from the range.
    let (clients, failed) = ns
        .run(|| {
            let mut clients = Vec::new();
            let mut failed = 0u64;
            for _ in 0..ATTEMPTS {
                match TcpStream::connect(SERVER) {
                    Ok(s) => clients.push(s),
                    Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => failed += 1,
                    Err(e) => panic!("connect: {e}"),
                }
            }
            Ok::<_, io::Error>((clients, failed))
        })
        .expect("connects");
    server.wait_accepted(clients.len());
    println!("  range {range}: {} connected, {failed} failed with EADDRNOTAVAIL", clients.len());
    assert!(failed > 0, "the range must run out within {ATTEMPTS} attempts");

    let in_use = clients.len() as u64;
    let row = tracer.wait_for("the exhausted destination", |s| {
        let Some(d) =
            s.destinations.iter().find(|d| d.raddr == SERVER.ip() && d.rport == SERVER.port())
        else {
            return Err("no destination row".into());
        };
        let in_use_f = f64::from(u32::try_from(in_use).expect("a handful of ports"));
        let full = (d.use_pct - 100.0 * in_use_f / f64::from(range)).abs() < 1e-6;
        if d.ports_in_use == in_use && d.range == range && full && d.failed_connects == failed {
            Ok(())
        } else {
            Err(format!("{d:?}"))
        }
    });
    let d = row.destinations.iter().find(|d| d.rport == SERVER.port()).expect("row");
    assert_eq!(d.netns, ns.inode(), "{d:?}");
    println!("  tracer: {d:?}");
    drop(clients);
}
