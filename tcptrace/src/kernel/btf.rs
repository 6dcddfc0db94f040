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

    /// Follows typedefs and qualifiers (`volatile`, `const`) to the type underneath.
    fn strip(&self, mut ty: Type) -> Type {
        loop {
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
    }

    /// Finds `name` among the members of `s`, descending into anonymous structs and unions
    /// (`struct sock_common` keeps its addresses and ports in anonymous unions).
    fn member(&self, s: &Struct, name: &str) -> Option<Field> {
        for m in &s.members {
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
                && let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some(mut f) = self.member(inner, name)
            {
                f.bit_offset += m.bit_offset();
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
            total += field.bit_offset;
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

    /// `sk->sk_cgrp_data.cgroup->kn->id`: a socket's cgroup v2 id (the shape since Linux
    /// 5.15, when `sock_cgroup_data` became a plain pointer).
    pub fn cgroup_offsets(&self) -> Result<CgroupOffsets, BtfError> {
        Ok(CgroupOffsets {
            sock_cgroup: self.byte_offset("sock", "sk_cgrp_data.cgroup")?,
            cgroup_kn: self.byte_offset("cgroup", "kn")?,
            kn_id: self.byte_offset("kernfs_node", "id")?,
            valid: 1,
        })
    }

    /// `current->nsproxy->net_ns`, for events that have no socket (failed connects).
    pub fn task_netns_offsets(&self) -> Result<(u32, u32), BtfError> {
        Ok((self.byte_offset("task_struct", "nsproxy")?, self.byte_offset("nsproxy", "net_ns")?))
    }

    /// Where `connect()`'s second argument is in `struct pt_regs`: the `si` register on
    /// x86-64 (the syscall ABI passes it there, and the kernel saves it at entry).
    pub fn connect_uservaddr_in_regs(&self) -> Result<u32, BtfError> {
        if cfg!(target_arch = "x86_64") {
            self.byte_offset("pt_regs", "si")
        } else {
            Err(BtfError::NoField("pt_regs layout tcptrace knows (x86-64 only)".into()))
        }
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
}
