//! The aggregates the views rank, kept up to date on every open and close: per local port
//! ([`LocalPorts`], shared by both families) and per remote endpoint (in each [`Family`],
//! with that family's connections), with the compact keys of their tables.

use std::hash::{Hash, Hasher};

use hashbrown::hash_map::Entry;
use hashbrown::{HashMap, HashSet};

use super::LocalPortRow;
use super::key::{Addr, TaggedAddr, Tuple};

/// (local port, remote address of either family): 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PortRemote {
    addr: u32,
    pub(super) port: u16,
    v6: bool,
}

impl PortRemote {
    fn new(port: u16, TaggedAddr(tagged): TaggedAddr) -> Self {
        #[expect(clippy::cast_possible_truncation, reason = "the low 32 bits are the address")]
        let addr = tagged as u32;
        Self { addr, port, v6: tagged >> 32 != 0 }
    }
}

impl Hash for PortRemote {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let port = u64::from(self.port) << 1 | u64::from(self.v6);
        state.write_u64(port << 32 | u64::from(self.addr));
    }
}

/// (remote address, remote port): a remote endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RemoteKey<A>(pub(super) A, pub(super) u16);

impl<A: Addr> Hash for RemoteKey<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0.bits()) << 16 | u64::from(self.1));
    }
}

/// (remote address, remote port, local port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EndpointPort<A>(A, u16, u16);

impl<A: Addr> Hash for EndpointPort<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(
            u64::from(self.0.bits()) << 32 | u64::from(self.1) << 16 | u64::from(self.2),
        );
    }
}

/// Live connections of a local port, and how many distinct remote addresses they have.
///
/// As for [`Endpoint`]: a port with a single remote address (a client's ephemeral port,
/// connected to one server) keeps it inline, as the XOR of its distinct remote addresses;
/// only a port with several keeps per-address counts in [`LocalPorts::remotes`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PortAggregate {
    pub(super) live: u32,
    pub(super) distinct: u32,
    remotes_xor: TaggedAddr,
}

impl PortAggregate {
    pub(super) fn row(&self, port: u16) -> LocalPortRow {
        LocalPortRow { port, live: u64::from(self.live), remote_addrs: u64::from(self.distinct) }
    }
}

/// The per-local-port aggregates of both families.
///
/// Indexed by port number rather than hashed: every event touches its port's aggregate,
/// and an array costs one cache line (four ports) and no hashing, where a hash table
/// costs a control byte and a slot in two places. 65,536 × 16 bytes = 1 MiB, fixed: a
/// byte a connection at a million, and busy ephemeral ports sit close together in it.
pub(super) struct LocalPorts {
    by_port: Box<[PortAggregate]>,
    /// Ports with live connections.
    in_use: usize,
    /// (local port, remote address) → live connections, for the ports with more than one
    /// remote address only: the distinct remote addresses of such a port are the keys that
    /// carry its number.
    pub(super) remotes: HashMap<PortRemote, u32>,
}

impl Default for LocalPorts {
    fn default() -> Self {
        Self {
            by_port: vec![PortAggregate::default(); 1 << 16].into_boxed_slice(),
            in_use: 0,
            remotes: HashMap::default(),
        }
    }
}

impl std::fmt::Debug for LocalPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPorts")
            .field("in_use", &self.in_use)
            .field("remotes", &self.remotes.len())
            .finish_non_exhaustive()
    }
}

impl LocalPorts {
    pub(super) fn get(&self, port: u16) -> Option<&PortAggregate> {
        Some(&self.by_port[usize::from(port)]).filter(|agg| agg.live > 0)
    }

    /// The ports with live connections, by port number.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u16, &PortAggregate)> {
        (0..=u16::MAX).zip(self.by_port.iter()).filter(|(_, agg)| agg.live > 0)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.in_use
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.in_use == 0
    }

    /// One more connection on `port` to `remote`.
    fn up(&mut self, port: u16, remote: TaggedAddr) {
        let agg = &mut self.by_port[usize::from(port)];
        let new_remote = match agg.distinct {
            0 => {
                self.in_use += 1;
                true
            }
            1 if agg.remotes_xor == remote => false,
            // A second remote address: the first one's count moves out of line.
            1 => {
                self.remotes.insert(PortRemote::new(port, agg.remotes_xor), agg.live);
                self.remotes.insert(PortRemote::new(port, remote), 1);
                true
            }
            _ => count_up(&mut self.remotes, PortRemote::new(port, remote)),
        };
        agg.live += 1;
        if new_remote {
            agg.distinct += 1;
            agg.remotes_xor.0 ^= remote.0;
        }
    }

    /// One connection less on `port` to `remote`.
    fn down(&mut self, port: u16, remote: TaggedAddr) {
        let agg = &mut self.by_port[usize::from(port)];
        match agg.live {
            0 => unreachable!("ledger port closed more often than opened"),
            1 => {
                *agg = PortAggregate::default();
                self.in_use -= 1;
                return;
            }
            _ => agg.live -= 1,
        }
        if agg.distinct > 1 && count_down(&mut self.remotes, PortRemote::new(port, remote)) {
            agg.distinct -= 1;
            agg.remotes_xor.0 ^= remote.0;
            if agg.distinct == 1 {
                // Back to one remote address: its count is `live` again.
                self.remotes.remove(&PortRemote::new(port, agg.remotes_xor));
            }
        }
    }
}

/// Live connections to a remote endpoint, and how many distinct local ports they have.
///
/// Most endpoints (a client's ephemeral port seen from a server) have a single local port:
/// for them the per-local-port count is `live` itself and nothing else is stored. Only an
/// endpoint with several local ports keeps per-port counts in `endpoint_ports`. The XOR of
/// the distinct local ports is the remaining one when an endpoint is back to one.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Endpoint {
    pub(super) live: u32,
    /// A live connection's local port is never 0, so at most 65,535.
    pub(super) distinct: u16,
    ports_xor: u16,
}

/// The connections of one address family and their per-endpoint aggregates.
#[derive(Debug)]
pub(super) struct Family<A> {
    pub(super) conns: HashSet<Tuple<A>>,
    /// (remote address, remote port) → aggregate.
    pub(super) endpoints: HashMap<RemoteKey<A>, Endpoint>,
    /// (remote address, remote port, local port) → live connections, for the endpoints
    /// with more than one local port only.
    pub(super) endpoint_ports: HashMap<EndpointPort<A>, u32>,
}

impl<A> Default for Family<A> {
    fn default() -> Self {
        Self {
            conns: HashSet::default(),
            endpoints: HashMap::default(),
            endpoint_ports: HashMap::default(),
        }
    }
}

impl<A: Addr> Family<A> {
    pub(super) fn open(&mut self, t: Tuple<A>, ports: &mut LocalPorts) -> bool {
        if !self.conns.insert(t) {
            return false;
        }
        ports.up(t.lport, t.remote.tagged());
        self.endpoint_up(RemoteKey(t.remote, t.rport), t.lport);
        true
    }

    pub(super) fn close(&mut self, t: &Tuple<A>, ports: &mut LocalPorts) -> bool {
        if !self.conns.remove(t) {
            return false;
        }
        ports.down(t.lport, t.remote.tagged());
        self.endpoint_down(RemoteKey(t.remote, t.rport), t.lport);
        true
    }

    fn endpoint_up(&mut self, key: RemoteKey<A>, lport: u16) {
        let ep = self.endpoints.entry(key).or_default();
        let new_port = match ep.distinct {
            0 => true,
            1 if ep.ports_xor == lport => false,
            // A second local port: the first one's count moves out of line.
            1 => {
                self.endpoint_ports.insert(EndpointPort(key.0, key.1, ep.ports_xor), ep.live);
                self.endpoint_ports.insert(EndpointPort(key.0, key.1, lport), 1);
                true
            }
            _ => count_up(&mut self.endpoint_ports, EndpointPort(key.0, key.1, lport)),
        };
        ep.live += 1;
        if new_port {
            ep.distinct += 1;
            ep.ports_xor ^= lport;
        }
    }

    /// Removes the endpoint with its last connection, so endpoints that come and go do
    /// not pile up.
    fn endpoint_down(&mut self, key: RemoteKey<A>, lport: u16) {
        let Entry::Occupied(mut entry) = self.endpoints.entry(key) else {
            unreachable!("ledger endpoint closed more often than opened");
        };
        let ep = entry.get_mut();
        if ep.live == 1 {
            entry.remove();
            return;
        }
        ep.live -= 1;
        if ep.distinct > 1
            && count_down(&mut self.endpoint_ports, EndpointPort(key.0, key.1, lport))
        {
            ep.distinct -= 1;
            ep.ports_xor ^= lport;
            if ep.distinct == 1 {
                // Back to one local port: its count is `live` again.
                self.endpoint_ports.remove(&EndpointPort(key.0, key.1, ep.ports_xor));
            }
        }
    }
}

/// One more connection under `key`; true if it is the first.
fn count_up<K: Eq + Hash>(counts: &mut HashMap<K, u32>, key: K) -> bool {
    let n = counts.entry(key).or_insert(0);
    *n += 1;
    *n == 1
}

/// One connection less under `key`; true if it was the last, and the key is gone.
fn count_down<K: Eq + Hash>(counts: &mut HashMap<K, u32>, key: K) -> bool {
    match counts.entry(key) {
        Entry::Occupied(mut e) if *e.get() > 1 => {
            *e.get_mut() -= 1;
            false
        }
        Entry::Occupied(e) => {
            e.remove();
            true
        }
        // Every count was raised by the open of a connection that is being closed now.
        Entry::Vacant(_) => unreachable!("ledger count closed more often than opened"),
    }
}
