//! The fuzz tier of the unit tests: what every property test of a parser of untrusted
//! bytes shares. Each parser's own properties (never panic on any input; round trips where
//! the format has a writer) live in its file's tests, next to its plain unit tests.
//!
//! The runs are deterministic and bounded: a fixed seed and [`CASES`] cases per property,
//! so that CI sees the same inputs every time and the tier costs seconds. For a longer
//! local run, `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both (README, Tests).
//! Nothing is written to disk: a failure prints its shrunk input, which becomes a plain
//! unit test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2_000;

/// The seed unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 14;

/// The settings of every property test of the fuzz tier.
pub(crate) fn config() -> Config {
    // `Config::default()` reads the PROPTEST_* variables.
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config.failure_persistence = None;
    config
}

/// Any IP address, weighted toward the ones with special handling: IPv4-mapped IPv6
/// (taken as IPv4), unspecified and loopback.
pub(crate) fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        3 => any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        2 => any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
        1 => prop::sample::select(vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
    ]
}

/// Any socket address from [`ip`], port 0 included.
pub(crate) fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}
