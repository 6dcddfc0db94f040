//! Offsets of the `struct sock` fields the programs read, taken from the running kernel's
//! BTF at load time, so that one binary works across kernels whose layouts differ.

use std::path::Path;

use btf_rs::{Btf, Member, Struct, Type};
use tcptrace_common::{AcceptOffsets, BitField, CgroupOffsets, SockOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no kernel BTF at {VMLINUX_BTF} (kernel built without CONFIG_DEBUG_INFO_BTF)")]
    Missing,
    #[error("cannot parse kernel BTF: {0}")]
    Parse(String),
    #[error("kernel BTF has no {0}")]
    NoField(String),
}

/// The longest chain of typedefs and qualifiers followed to a type. The kernel's are a few
/// links long.
const MAX_CHAIN: usize = 32;
/// How deep a member is looked for in anonymous structs and unions. The kernel nests them
/// a few levels deep.
const MAX_ANONYMOUS_DEPTH: u32 = 16;
/// How many members one lookup looks at, in all its anonymous levels. On Linux 6.x the
/// longest (`task_struct.nsproxy`) looks at 135.
const MAX_MEMBERS_VISITED: u32 = 1 << 12;

/// The kernel's BTF, parsed once and asked for the handful of things tcptrace needs.
pub struct KernelBtf {
    btf: Btf,
}

/// Where a field lives: byte offset from the start of the outer struct, bitfield details.
struct Field {
    bit_offset: u32,
    bitfield_size: Option<u32>,
    ty: Type,
}

impl KernelBtf {
    pub fn load() -> Result<Self, BtfError> {
        if !Path::new(VMLINUX_BTF).exists() {
            return Err(BtfError::Missing);
        }
        // Mmap parses only the types asked for (a full parse takes ~0.6 s and ~40 MB), but
        // sysfs BTF can be mmapped only since Linux 6.16: fall back to reading it all.
        Btf::from_file_with_backend(VMLINUX_BTF, btf_rs::Backend::Mmap)
            .or_else(|e| {
                log::debug!("cannot mmap {VMLINUX_BTF} ({e}); parsing it whole");
                Btf::from_file(VMLINUX_BTF)
            })
            .map(|btf| Self { btf })
            .map_err(|e| BtfError::Parse(e.to_string()))
    }

    fn named_struct(&self, name: &str) -> Result<Struct, BtfError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| BtfError::NoField(format!("struct {name}")))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoField(format!("struct {name}")))
    }

    /// Follows typedefs and qualifiers (`volatile`, `const`) to the type underneath; Void
    /// if the chain is longer than [`MAX_CHAIN`] (a chain that loops would never end).
    fn strip(&self, mut ty: Type) -> Type {
        for _ in 0..MAX_CHAIN {
            ty = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t),
                Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t),
                _ => return ty,
            }
            .unwrap_or(Type::Void);
        }
        Type::Void
    }

    /// Finds `name` among the members of `s`, descending into anonymous structs and unions
    /// (`struct sock_common` keeps its addresses and ports in anonymous unions).
    fn member(&self, s: &Struct, name: &str) -> Option<Field> {
        let mut visits = MAX_MEMBERS_VISITED;
        self.member_within(s, name, &mut visits, MAX_ANONYMOUS_DEPTH)
    }

    /// [`Self::member`], looking at no more than `visits` members in all and descending
    /// no more than `depth` anonymous levels: an anonymous struct that contains itself
    /// would otherwise recurse until the stack overflows.
    fn member_within(&self, s: &Struct, name: &str, visits: &mut u32, depth: u32) -> Option<Field> {
        for m in &s.members {
            *visits = visits.checked_sub(1)?;
            let member_name = self.btf.resolve_name(m).unwrap_or_default();
            let ty = self.member_type(m);
            if member_name == name {
                return Some(Field {
                    bit_offset: m.bit_offset(),
                    bitfield_size: m.bitfield_size(),
                    ty,
                });
            }
            if member_name.is_empty()
                && depth > 0
                && let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(mut f) = self.member_within(inner, name, visits, depth - 1)
            {
                f.bit_offset = f.bit_offset.checked_add(m.bit_offset())?;
                return Some(f);
            }
        }
        None
    }

    fn member_type(&self, m: &Member) -> Type {
        self.strip(self.btf.resolve_chained_type(m).unwrap_or(Type::Void))
    }

    /// Byte offset of a dotted path of members (`__sk_common.skc_net.net`) in `struct root`.
    fn path(&self, root: &str, path: &str) -> Result<Field, BtfError> {
        let missing = || BtfError::NoField(format!("struct {root}.{path}"));
        let mut current = self.named_struct(root)?;
        let mut total = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let field = self.member(&current, part).ok_or_else(missing)?;
            total = field.bit_offset.checked_add(total).ok_or_else(missing)?;
            if parts.peek().is_none() {
                return Ok(Field { bit_offset: total, ..field });
            }
            current = match field.ty {
                Type::Struct(s) | Type::Union(s) => s,
                _ => return Err(missing()),
            };
        }
        Err(missing())
    }

    fn byte_offset(&self, root: &str, path: &str) -> Result<u32, BtfError> {
        self.path(root, path).map(|f| f.bit_offset / 8)
    }

    /// The offsets of every `struct sock` field the programs read.
    pub fn sock_offsets(&self) -> Result<SockOffsets, BtfError> {
        let sk = |p: &str| self.byte_offset("sock", p);
        Ok(SockOffsets {
            family: sk("__sk_common.skc_family")?,
            state: sk("__sk_common.skc_state")?,
            sport: self.byte_offset("inet_sock", "inet_sport")?,
            dport: sk("__sk_common.skc_dport")?,
            rcv_saddr: sk("__sk_common.skc_rcv_saddr")?,
            daddr: sk("__sk_common.skc_daddr")?,
            v6_rcv_saddr: sk("__sk_common.skc_v6_rcv_saddr")?,
            v6_daddr: sk("__sk_common.skc_v6_daddr")?,
            net: sk("__sk_common.skc_net.net")?,
            net_inum: self.byte_offset("net", "ns.inum")?,
            protocol: self.bit_field("sk_protocol")?,
            shutdown: self.bit_field("sk_shutdown")?,
            valid: 1,
        })
    }

    /// `sk->sk_cgrp_data.cgroup->kn->id`: a socket's cgroup v2 id. Since Linux 5.15
    /// `sock_cgroup_data` is a plain pointer; before, the same 8 bytes are the union member
    /// `val`, the pointer itself unless its low bits flag net_cls/net_prio data (see
    /// `cgroup_of` in tcptrace-ebpf).
    pub fn cgroup_offsets(&self) -> Result<CgroupOffsets, BtfError> {
        let sock_cgroup = self
            .byte_offset("sock", "sk_cgrp_data.cgroup")
            .or_else(|_| self.byte_offset("sock", "sk_cgrp_data.val"))?;
        Ok(CgroupOffsets {
            sock_cgroup,
            cgroup_kn: self.byte_offset("cgroup", "kn")?,
            kn_id: self.byte_offset("kernfs_node", "id")?,
            valid: 1,
        })
    }

    /// `current->files->fdt->fd[n]->private_data->sk`: the socket behind a file descriptor
    /// of the calling task.
    pub fn accept_offsets(&self) -> Result<AcceptOffsets, BtfError> {
        Ok(AcceptOffsets {
            task_files: self.byte_offset("task_struct", "files")?,
            files_fdt: self.byte_offset("files_struct", "fdt")?,
            fdt_max_fds: self.byte_offset("fdtable", "max_fds")?,
            fdt_fd: self.byte_offset("fdtable", "fd")?,
            file_private_data: self.byte_offset("file", "private_data")?,
            socket_sk: self.byte_offset("socket", "sk")?,
            ret: 0, // from tracefs, by the caller
            valid: 1,
        })
    }

    /// A field of `struct sock` that is a bitfield in some kernels and a plain integer in
    /// others: `sk_protocol` is a u16 since Linux 5.6 and an 8-bit bitfield before it,
    /// `sk_shutdown` a u8 or a 2-bit bitfield.
    fn bit_field(&self, name: &str) -> Result<BitField, BtfError> {
        let f = self.path("sock", name)?;
        let bits = match (f.bitfield_size, &f.ty) {
            (Some(n), _) if n > 0 => n,
            (_, Type::Int(i)) => (i.size() * 8) as u32,
            _ => 16,
        };
        // Read an aligned 4-byte word holding the field and shift it down.
        let word = f.bit_offset / 32 * 4;
        let shift = f.bit_offset - word * 8;
        let mask = if bits >= 32 { u32::MAX } else { (1 << bits) - 1 };
        Ok(BitField { offset: word, shift, mask })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs against the kernel the tests run on; every kernel tcptrace supports with BTF
    /// has these fields, and `struct sock` starts with `struct sock_common`.
    #[test]
    fn running_kernel_sock_offsets_are_plausible() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("skipped: no kernel BTF at {VMLINUX_BTF}");
            return;
        };
        let o = btf.sock_offsets().expect("sock offsets");
        // __addrpair comes first in sock_common: daddr then rcv_saddr.
        assert_eq!(o.daddr, 0);
        assert_eq!(o.rcv_saddr, 4);
        // struct inet_sock starts with struct sock; inet_sport lies past it.
        assert!(o.sport > o.net, "{o:?}");
        assert_eq!(o.family, o.dport + 4);
        assert!(o.v6_rcv_saddr == o.v6_daddr + 16);
        assert_eq!(o.protocol.mask, 0xffff, "sk_protocol is a u16 since 5.6");
        assert!(o.shutdown.mask == 0xff || o.shutdown.mask == 0b11, "{:?}", o.shutdown);
    }

    // ---- fuzz tier (crate::fuzz): any BTF, through both of btf-rs's backends; and BTF
    // built from a layout ----
    //
    // The kernel writes /sys/kernel/btf/vmlinux; only root could put something else there
    // (a bind mount). The point is that a broken or hostile BTF is an error, not a panic
    // or a hang, in btf-rs or in the lookups here.

    /// The names the lookups ask for, and the empty name of anonymous members.
    const NAMES: &[&str] = &[
        "",
        "sock",
        "sock_common",
        "__sk_common",
        "skc_family",
        "skc_state",
        "skc_dport",
        "skc_rcv_saddr",
        "skc_daddr",
        "skc_v6_rcv_saddr",
        "skc_v6_daddr",
        "skc_net",
        "net",
        "inet_sock",
        "inet_sport",
        "ns",
        "inum",
        "sk_protocol",
        "sk_shutdown",
        "sk_cgrp_data",
        "cgroup",
        "kn",
        "kernfs_node",
        "id",
        "task_struct",
        "nsproxy",
        "net_ns",
        "pt_regs",
        "si",
        "files",
        "files_struct",
        "fdt",
        "fdtable",
        "max_fds",
        "fd",
        "file",
        "private_data",
        "socket",
        "sk",
        "possible_net_t",
        "ns_common",
        "int",
    ];

    /// The string section: every name, NUL-terminated, the empty one first.
    fn strings() -> Vec<u8> {
        NAMES.iter().flat_map(|n| n.bytes().chain([0])).collect()
    }

    /// Where `NAMES[name]` starts in [`strings`].
    fn name_off(name: &str) -> u32 {
        let i = NAMES.iter().position(|&n| n == name).expect("a known name");
        NAMES[..i].iter().map(|n| n.len() as u32 + 1).sum()
    }

    /// One BTF type record: `btf_type` (name, info, size or type) and what follows it.
    #[derive(Clone, Debug)]
    struct Record {
        name_off: u32,
        kind: u32,
        kind_flag: bool,
        vlen: u32,
        size_or_type: u32,
        tail: Vec<u8>,
    }

    impl Record {
        fn new(name: &str, kind: u32, size_or_type: u32) -> Self {
            let name_off = name_off(name);
            Self { name_off, kind, kind_flag: false, vlen: 0, size_or_type, tail: Vec::new() }
        }

        fn int(name: &str, size: u32) -> Self {
            let mut r = Self::new(name, 1, size);
            r.tail.extend((size * 8).to_le_bytes());
            r
        }

        /// A struct (kind 4) or union (5) of `(name, type id, bit offset)`; `kind_flag`
        /// puts a bitfield size in the offset's top byte.
        fn aggregate(name: &str, kind: u32, members: &[(&str, u32, u32)], kind_flag: bool) -> Self {
            let mut r = Self::new(name, kind, 4096);
            r.kind_flag = kind_flag;
            r.vlen = members.len() as u32;
            for &(name, ty, offset) in members {
                r.tail.extend(name_off(name).to_le_bytes());
                r.tail.extend(ty.to_le_bytes());
                r.tail.extend(offset.to_le_bytes());
            }
            r
        }

        fn encode(&self, out: &mut Vec<u8>) {
            let info = (u32::from(self.kind_flag) << 31) | (self.kind & 0x1f) << 24 | self.vlen;
            for word in [self.name_off, info, self.size_or_type] {
                out.extend(word.to_le_bytes());
            }
            out.extend(&self.tail);
        }
    }

    /// A little-endian BTF blob of `records`, with the header's section sizes taken from
    /// `sections` where given instead of from the data.
    fn blob(records: &[Record], sections: Option<(u32, u32, u32)>) -> Vec<u8> {
        let mut types = Vec::new();
        for r in records {
            r.encode(&mut types);
        }
        let strings = strings();
        let (type_len, str_off, str_len) =
            sections.unwrap_or((types.len() as u32, types.len() as u32, strings.len() as u32));
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for word in [24, 0, type_len, str_off, str_len] {
            out.extend(u32::to_le_bytes(word));
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    /// Types of every kind, named from [`NAMES`] (members often anonymous, structs often
    /// the ones looked up), pointing at any type id (itself, each other, none), with any
    /// sizes and offsets: cycles and all.
    fn record(types: usize) -> impl Strategy<Value = Record> {
        let any_name = || prop::sample::select(NAMES);
        let struct_name = prop_oneof![
            3 => prop::sample::select(&["sock", "sock_common", "inet_sock", "net", "task_struct"][..]),
            1 => any_name(),
        ];
        let member_name = prop_oneof![
            2 => Just(""),
            2 => prop::sample::select(&["__sk_common", "skc_family", "skc_net", "net", "ns", "inum",
                "sk_protocol", "sk_shutdown", "nsproxy"][..]),
            1 => any_name(),
        ];
        let id = || 0..types as u32 + 2;
        let offset = prop_oneof![0..4096u32, any::<u32>()];
        let members = prop::collection::vec((member_name, id(), offset), 0..6);
        prop_oneof![
            4 => (struct_name, 4..=5u32, members, any::<bool>()).prop_map(
                |(n, kind, members, flag)| Record::aggregate(n, kind, &members, flag)
            ),
            3 => (any_name(), prop::sample::select(&[2u32, 8, 9, 10, 11, 18][..]), id())
                .prop_map(|(n, kind, ty)| Record::new(n, kind, ty)),
            1 => (any_name(), 0..=16u32).prop_map(|(n, size)| Record::int(n, size)),
            1 => (any_name(), id(), id()).prop_map(|(n, elem, index)| {
                let mut r = Record::new(n, 3, 0);
                for word in [elem, index, 4] {
                    r.tail.extend(word.to_le_bytes());
                }
                r
            }),
            1 => (any::<u32>(), 0..32u32, any::<bool>(), 0..8u32, any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(name_off, kind, kind_flag, vlen, size_or_type, tail)| Record {
                    name_off: name_off % 512, kind, kind_flag, vlen, size_or_type, tail,
                }),
        ]
    }

    /// A BTF blob of such types, its header's sizes perhaps wrong, a few bytes perhaps
    /// overwritten; or any bytes after a valid magic.
    fn btf_bytes() -> impl Strategy<Value = Vec<u8>> {
        let built = (1..12usize)
            .prop_flat_map(|n| prop::collection::vec(record(n), n))
            .prop_flat_map(|records| {
                let sections = prop::option::weighted(0.1, any::<(u16, u16, u16)>());
                let writes =
                    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
                (Just(records), sections, prop::option::weighted(0.2, writes))
            })
            .prop_map(|(records, sections, writes)| {
                let sections = sections.map(|(a, b, c)| (a.into(), b.into(), c.into()));
                let mut bytes = blob(&records, sections);
                for (at, byte) in writes.unwrap_or_default() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                bytes
            });
        let any_tail = prop::collection::vec(any::<u8>(), 0..200).prop_map(|tail| {
            let mut bytes = vec![0x9f, 0xeb, 1, 0];
            bytes.extend(tail);
            bytes
        });
        prop_oneof![9 => built, 1 => any_tail]
    }

    /// Every lookup tcptrace makes; what they answer does not matter here.
    fn ask_everything(btf: Btf) {
        let btf = KernelBtf { btf };
        let _ = btf.sock_offsets();
        let _ = btf.cgroup_offsets();
        let _ = btf.accept_offsets();
    }

    /// `bytes` through the mmap backend, which needs a file: one in memory (a memfd), so
    /// that thousands of cases touch no disk.
    fn from_mmap(bytes: &[u8]) -> Option<Btf> {
        use std::io::Write as _;
        use std::os::fd::FromRawFd as _;

        // SAFETY: a plain syscall; the fd it returns is owned by the File below.
        let fd = unsafe { libc::memfd_create(c"tcptrace-btf".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is open and nothing else owns it.
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(bytes).expect("memfd");
        Btf::from_file_with_backend(format!("/proc/self/fd/{fd}"), btf_rs::Backend::Mmap).ok()
    }

    /// Records, numbered from 1 as BTF numbers types.
    #[derive(Default)]
    struct Types(Vec<Record>);

    /// Where a member sits: its byte offset, and perhaps an anonymous struct (false) or
    /// union (true) at a byte offset of its own around it.
    type Placement = (u32, Option<(bool, u32)>);

    impl Types {
        fn add(&mut self, r: Record) -> u32 {
            self.0.push(r);
            self.0.len() as u32
        }

        /// `ty` behind a chain of typedefs and qualifiers of `kinds`.
        fn behind(&mut self, ty: u32, kinds: &[u32]) -> u32 {
            kinds.iter().fold(ty, |ty, &kind| self.add(Record::new("", kind, ty)))
        }

        /// Member `name` of type `ty` placed at `place`: itself, or the anonymous struct or
        /// union around it.
        fn member(
            &mut self,
            name: &'static str,
            ty: u32,
            place: Placement,
        ) -> (&'static str, u32, u32) {
            let (offset, around) = place;
            match around {
                None => (name, ty, offset * 8),
                Some((union, at)) => {
                    let kind = if union { 5 } else { 4 };
                    let inner =
                        self.add(Record::aggregate("", kind, &[(name, ty, offset * 8)], false));
                    ("", inner, at * 8)
                }
            }
        }
    }

    /// Where tcptrace looks, as a kernel could lay it out: byte offsets of every field and
    /// of `__sk_common`, each `sock_common` field perhaps inside an anonymous struct or
    /// union, the structs behind typedefs and qualifiers, `sk_protocol` and `sk_shutdown`
    /// as bitfields (bit offsets) or as a u16 and a u8.
    #[derive(Clone, Debug)]
    struct Layout {
        common: [Placement; 8],
        net_in_possible_net: u32,
        sk_common: u32,
        inet_sport: u32,
        ns: u32,
        inum: u32,
        chains: [Vec<u32>; 4],
        bitfields: bool,
        protocol: u32,
        shutdown: u32,
    }

    fn layout() -> impl Strategy<Value = Layout> {
        let place = (0..4096u32, prop::option::of((any::<bool>(), 0..4096u32)));
        let chain = prop::collection::vec(prop::sample::select(&[8u32, 9, 10, 11, 18][..]), 0..3);
        (
            prop::array::uniform8(place),
            (0..64u32, 0..4096u32, 0..8192u32, 0..4096u32, 0..256u32),
            prop::array::uniform4(chain),
            (any::<bool>(), 0..32_768u32, 0..32_768u32),
        )
            .prop_map(|(common, (net, sk_common, inet_sport, ns, inum), chains, bits)| {
                let (bitfields, protocol, shutdown) = bits;
                // As u16 and u8 they sit at byte offsets.
                let (protocol, shutdown) = if bitfields {
                    (protocol, shutdown)
                } else {
                    (protocol / 8 * 8, shutdown / 8 * 8)
                };
                Layout {
                    common,
                    net_in_possible_net: net,
                    sk_common,
                    inet_sport,
                    ns,
                    inum,
                    chains,
                    bitfields,
                    protocol,
                    shutdown,
                }
            })
    }

    /// The BTF of `layout`.
    fn layout_btf(l: &Layout) -> Vec<u8> {
        let mut t = Types::default();
        let int = t.add(Record::int("int", 4));
        let u16_ty = t.add(Record::int("", 2));
        let u8_ty = t.add(Record::int("", 1));
        let ptr = t.add(Record::new("", 2, 0));
        let net = t.add(Record::aggregate(
            "possible_net_t",
            4,
            &[("net", ptr, l.net_in_possible_net * 8)],
            false,
        ));
        let net = t.behind(net, &l.chains[0]);
        // The fields of `struct sock_common`, `skc_family` to `skc_net`, in `common` order.
        let names = &NAMES[4..12];
        assert_eq!((names[0], names[7]), ("skc_family", "skc_net"));
        let members: Vec<_> = names
            .iter()
            .zip(l.common)
            .map(|(&name, place)| t.member(name, if name == "skc_net" { net } else { int }, place))
            .collect();
        let common = t.add(Record::aggregate("sock_common", 4, &members, false));
        let common = t.behind(common, &l.chains[1]);
        let (protocol, shutdown) = if l.bitfields {
            ((int, 8 << 24 | l.protocol), (u8_ty, 2 << 24 | l.shutdown))
        } else {
            let protocol = t.behind(u16_ty, &l.chains[3]);
            ((protocol, l.protocol), (u8_ty, l.shutdown))
        };
        let sock = t.add(Record::aggregate(
            "sock",
            4,
            &[
                ("__sk_common", common, l.sk_common * 8),
                ("sk_protocol", protocol.0, protocol.1),
                ("sk_shutdown", shutdown.0, shutdown.1),
            ],
            l.bitfields,
        ));
        t.add(Record::aggregate(
            "inet_sock",
            4,
            &[("sk", sock, 0), ("inet_sport", u16_ty, l.inet_sport * 8)],
            false,
        ));
        let ns_common =
            t.add(Record::aggregate("ns_common", 4, &[("inum", int, l.inum * 8)], false));
        let ns_common = t.behind(ns_common, &l.chains[2]);
        t.add(Record::aggregate("net", 4, &[("ns", ns_common, l.ns * 8)], false));
        blob(&t.0, None)
    }

    /// A field read as an aligned 4-byte word at `offset`, shifted and masked, is the
    /// `bits` bits at `bit_offset`.
    fn reads(field: BitField, bit_offset: u32, bits: u32) -> bool {
        field.offset.is_multiple_of(4)
            && field.offset * 8 + field.shift == bit_offset
            && field.mask == (1 << bits) - 1
    }

    #[test]
    fn btf_that_loops_is_an_error_not_a_hang() {
        // Found by the fuzz tier: a typedef chain that loops never ended, and an anonymous
        // struct that contains itself recursed until the stack overflowed.
        let typedef_loop = [
            Record::aggregate("sock", 4, &[("__sk_common", 2, 0)], false),
            Record::new("", 8, 3),
            Record::new("", 8, 2),
        ];
        let anonymous_loop = [Record::aggregate("sock", 4, &[("", 1, 0)], false)];
        for records in [&typedef_loop[..], &anonymous_loop[..]] {
            let btf = KernelBtf { btf: Btf::from_bytes(&blob(records, None)).unwrap() };
            assert!(btf.sock_offsets().is_err());
        }
    }

    #[test]
    fn offsets_past_u32_are_an_error_not_an_overflow() {
        // Found by the fuzz tier: offsets that add up past u32::MAX overflowed (a panic in
        // a debug build).
        let records = [
            Record::aggregate(
                "sock",
                4,
                &[("__sk_common", 2, u32::MAX - 7), ("", 2, u32::MAX - 7)],
                false,
            ),
            Record::aggregate("sock_common", 4, &[("skc_family", 3, 16)], false),
            Record::int("int", 2),
        ];
        let btf = KernelBtf { btf: Btf::from_bytes(&blob(&records, None)).unwrap() };
        assert!(btf.byte_offset("sock", "__sk_common.skc_family").is_err());
        assert!(btf.byte_offset("sock", "skc_family").is_err());
        assert_eq!(btf.byte_offset("sock", "__sk_common").unwrap(), (u32::MAX - 7) / 8);
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz::config())]

        /// Offsets written into BTF come back from both backends.
        #[test]
        fn offsets_built_into_btf_parse_back(l in layout()) {
            let bytes = layout_btf(&l);
            let at = |(offset, around): Placement| offset + around.map_or(0, |(_, at)| at);
            let [family, state, dport, rcv_saddr, daddr, v6_rcv_saddr, v6_daddr, net] =
                l.common.map(|place| l.sk_common + at(place));
            for btf in [Btf::from_bytes(&bytes).ok(), from_mmap(&bytes)] {
                let btf = KernelBtf { btf: btf.expect("BTF built whole") };
                let o = btf.sock_offsets().expect("every field is there");
                prop_assert_eq!(
                    (o.family, o.state, o.dport, o.rcv_saddr, o.daddr, o.v6_rcv_saddr, o.v6_daddr),
                    (family, state, dport, rcv_saddr, daddr, v6_rcv_saddr, v6_daddr)
                );
                prop_assert_eq!(o.net, net + l.net_in_possible_net);
                prop_assert_eq!((o.sport, o.net_inum), (l.inet_sport, l.ns + l.inum));
                let (protocol_bits, shutdown_bits) = if l.bitfields { (8, 2) } else { (16, 8) };
                prop_assert!(reads(o.protocol, l.protocol, protocol_bits), "{:?}", o.protocol);
                prop_assert!(reads(o.shutdown, l.shutdown, shutdown_bits), "{:?}", o.shutdown);
            }
        }

        #[test]
        fn any_btf_is_read_or_refused(bytes in btf_bytes()) {
            if let Ok(btf) = Btf::from_bytes(&bytes) {
                ask_everything(btf);
            }
            if let Some(btf) = from_mmap(&bytes) {
                ask_everything(btf);
            }
        }
    }
}
