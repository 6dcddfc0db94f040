//! How the ledger stores a connection: its 4-tuple and namespace in a 16-byte [`Tuple`]
//! of either family, with IPv6 addresses interned to 4-byte [`AddrId`]s, and the [`Addr`]
//! trait that lets the tables of both families hash and tag their addresses alike.

use std::hash::{BuildHasher as _, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::conn::{Conn, canonical_ip};

/// An address as the tables store it: 32 bits, an IPv4 address or an interned IPv6 one.
pub(super) trait Addr: Copy + Eq {
    const V6: bool;

    fn bits(self) -> u32;

    /// The address with its family, for the tables both families share.
    fn tagged(self) -> TaggedAddr {
        TaggedAddr(u64::from(Self::V6) << 32 | u64::from(self.bits()))
    }
}

impl Addr for Ipv4Addr {
    const V6: bool = false;

    fn bits(self) -> u32 {
        self.to_bits()
    }
}

impl Addr for AddrId {
    const V6: bool = true;

    fn bits(self) -> u32 {
        self.0
    }
}

/// An address of either family in 33 bits: the 32 the tables store, and whether it is an
/// interned IPv6 one. XOR-able, for
/// [`PortAggregate::remotes_xor`](super::aggregate::PortAggregate::remotes_xor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TaggedAddr(pub(super) u64);

/// A connection key in the compact form the ledger stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tuple<A> {
    pub(super) netns: u32,
    pub(super) local: A,
    pub(super) remote: A,
    pub(super) lport: u16,
    pub(super) rport: u16,
}

/// The keys hash as one or two integers: a derived `Hash` would feed the hasher field by
/// field (and an `Ipv4Addr` as a length-prefixed byte slice), several rounds instead of one.
impl<A: Addr> Hash for Tuple<A> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let addrs = u64::from(self.local.bits()) << 32 | u64::from(self.remote.bits());
        let rest =
            u64::from(self.netns) << 32 | u64::from(self.lport) << 16 | u64::from(self.rport);
        state.write_u128(u128::from(addrs) << 64 | u128::from(rest));
    }
}

impl<A: Copy> Tuple<A> {
    pub(super) fn conn(&self, ip: impl Fn(A) -> IpAddr) -> Conn {
        Conn::new(
            self.netns,
            SocketAddr::new(ip(self.local), self.lport),
            SocketAddr::new(ip(self.remote), self.rport),
        )
    }

    /// The same namespace and ports, with addresses to be filled in.
    pub(super) fn ports_of<B: Default>(&self) -> Tuple<B> {
        Tuple {
            netns: self.netns,
            local: B::default(),
            remote: B::default(),
            lport: self.lport,
            rport: self.rport,
        }
    }
}

/// A connection's key in the table of its address family.
pub(super) enum Key {
    V4(Tuple<Ipv4Addr>),
    V6(Tuple<Ipv6Addr>),
}

impl Key {
    /// Both ends IPv4 go to the IPv4 table. A mixed pair cannot come from the kernel (an
    /// IPv6 socket talking to an IPv4 peer reports both ends mapped, which canonicalise to
    /// IPv4), but if one appears its IPv4 end is stored mapped in the IPv6 table.
    pub(super) fn of(conn: &Conn) -> Self {
        // The common case first: plain IPv4 ends are canonical already.
        if let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (conn.local, conn.remote) {
            let (netns, lport, rport) = (conn.netns, local.port(), remote.port());
            return Self::V4(Tuple {
                netns,
                local: *local.ip(),
                remote: *remote.ip(),
                lport,
                rport,
            });
        }
        let (local, remote) = (canonical_ip(conn.local.ip()), canonical_ip(conn.remote.ip()));
        let (netns, lport, rport) = (conn.netns, conn.local.port(), conn.remote.port());
        match (local, remote) {
            (IpAddr::V4(local), IpAddr::V4(remote)) => {
                Self::V4(Tuple { netns, local, remote, lport, rport })
            }
            _ => {
                Self::V6(Tuple { netns, local: as_v6(local), remote: as_v6(remote), lport, rport })
            }
        }
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// An IPv6 address's number in the [`Interner`]: 4 bytes in every key instead of 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct AddrId(u32);

/// The IPv6 addresses of live connections, each stored once with the number of connection
/// ends that use it, and numbered. A box has few local addresses and usually far fewer
/// remote addresses than connections, so this costs much less than 16-byte keys.
#[derive(Debug, Default)]
pub(super) struct Interner {
    /// Address and number of connection ends using it, by id; a free slot has 0 users.
    slots: Vec<(Ipv6Addr, u32)>,
    /// Ids of the used slots, hashed by their address: 4 bytes a slot rather than 20.
    ids: HashTable<u32>,
    free: Vec<u32>,
    hasher: DefaultHashBuilder,
}

impl Interner {
    pub(super) fn get(&self, ip: Ipv6Addr) -> Option<AddrId> {
        let hash = self.hasher.hash_one(ip);
        self.ids.find(hash, |&id| self.slots[id as usize].0 == ip).map(|&id| AddrId(id))
    }

    /// The address's id, with one more user.
    pub(super) fn acquire(&mut self, ip: Ipv6Addr) -> AddrId {
        let hash = self.hasher.hash_one(ip);
        if let Some(&id) = self.ids.find(hash, |&id| self.slots[id as usize].0 == ip) {
            self.slots[id as usize].1 += 1;
            return AddrId(id);
        }
        let id = if let Some(id) = self.free.pop() {
            self.slots[id as usize] = (ip, 1);
            id
        } else {
            self.slots.push((ip, 1));
            u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 IPv6 addresses")
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.ids.insert_unique(hash, id, |&id| hasher.hash_one(slots[id as usize].0));
        AddrId(id)
    }

    /// One user less; the address is forgotten with its last user.
    pub(super) fn release(&mut self, AddrId(id): AddrId) {
        let slot = &mut self.slots[id as usize];
        slot.1 -= 1;
        if slot.1 == 0 {
            let hash = self.hasher.hash_one(slot.0);
            if let Ok(entry) = self.ids.find_entry(hash, |&other| other == id) {
                entry.remove();
            }
            self.free.push(id);
        }
    }

    pub(super) fn addr(&self, AddrId(id): AddrId) -> Ipv6Addr {
        self.slots[id as usize].0
    }
}

#[cfg(test)]
mod tests {
    use crate::ledger::Ledger;
    use crate::ledger::tests::conn;

    #[test]
    fn ipv6_addresses_are_forgotten_with_their_last_connection() {
        let mut l = Ledger::new();
        let a = conn("[2001:db8::1]:443", "[2001:db8::2]:40000");
        let b = conn("[2001:db8::1]:443", "[2001:db8::3]:40000");
        l.open(a);
        l.open(b);
        assert!(!l.open(a));
        assert_eq!(l.v6_addrs.ids.len(), 3);
        l.close(&a);
        assert_eq!(l.v6_addrs.ids.len(), 2, "2001:db8::2 had no other user");
        assert!(!l.is_live(&a) && l.is_live(&b));
        // Its slot is reused for the next new address.
        let c = conn("[2001:db8::1]:443", "[2001:db8::4]:40000");
        l.open(c);
        assert_eq!(l.v6_addrs.slots.len(), 3);
        assert_eq!(l.conns().filter(|x| *x == c || *x == b).count(), 2);
        l.close(&b);
        l.close(&c);
        assert!(l.v6_addrs.ids.is_empty() && l.live() == 0);
    }
}
