//! Byte offsets of struct members, read from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel program reads members of `task_struct`, `mm_struct`, `file`, `dentry`, `pid`
//! and `linux_binprm` whose offsets are not ABI, and Rust BPF cannot relocate them (no
//! CO-RE). aya 0.14 parses BTF but keeps its types private, so this is a small reader of
//! the documented format (Documentation/bpf/btf.rst): header, type section (`btf_type` + a
//! kind-specific trailer each), string section. Members of anonymous structs and unions
//! (`mm_struct` keeps all of its fields in one) are found through them. Every read is
//! bounds-checked.

use ffrtmp_common::{
    KernelOffsets, OFFSETS_ARGV0, OFFSETS_BPRM, OFFSETS_EXE, OFFSETS_IDENTITY, OFFSETS_PIDNS,
};

/// Where the running kernel's BTF is.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

fn u32_at(b: &[u8], o: usize) -> Result<u32, String> {
    let s = b
        .get(o..o.saturating_add(4))
        .ok_or_else(|| format!("BTF truncated at byte {o}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn str_at(strs: &[u8], off: u32) -> &[u8] {
    let s = strs.get(off as usize..).unwrap_or(&[]);
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    &s[..end]
}

/// One entry of the type section.
#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_type: u32,
    /// Offset of the kind-specific trailer in the type section.
    body: usize,
}

/// A parsed BTF blob: the type section indexed by type id.
pub struct Btf<'a> {
    types: &'a [u8],
    strs: &'a [u8],
    /// `index[id - 1]`: type id `id` (0 is void).
    index: Vec<Type>,
}

impl<'a> Btf<'a> {
    pub fn parse(btf: &'a [u8]) -> Result<Self, String> {
        if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != BTF_MAGIC {
            return Err("not little-endian BTF (bad magic)".into());
        }
        let hdr_len = u32_at(btf, 4)? as usize;
        let section = |off: usize, len: usize, what: &str| {
            let start = hdr_len.saturating_add(off);
            btf.get(start..start.saturating_add(len))
                .ok_or_else(|| format!("BTF {what} section out of bounds"))
        };
        let types = section(u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize, "type")?;
        let strs = section(
            u32_at(btf, 16)? as usize,
            u32_at(btf, 20)? as usize,
            "string",
        )?;
        let mut index = Vec::with_capacity(types.len() / 24);
        let mut o = 0usize;
        while o + 12 <= types.len() {
            let info = u32_at(types, o + 4)?;
            let t = Type {
                name_off: u32_at(types, o)?,
                kind: (info >> 24) & 0x1f,
                vlen: (info & 0xffff) as usize,
                kind_flag: info >> 31 != 0,
                size_type: u32_at(types, o + 8)?,
                body: o + 12,
            };
            let trailer = match t.kind {
                1 | 14 | 17 => 4,               // INT, VAR, DECL_TAG
                3 => 12,                        // ARRAY
                4 | 5 | 15 | 19 => 12 * t.vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * t.vlen,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                k => return Err(format!("unknown BTF kind {k}")),
            };
            index.push(t);
            o = t.body + trailer;
        }
        Ok(Btf { types, strs, index })
    }

    fn get(&self, id: u32) -> Option<Type> {
        self.index.get((id as usize).checked_sub(1)?).copied()
    }

    /// Follow typedefs and qualifiers (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG).
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                8..=11 | 18 => id = t.size_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// Bit offset of `member` in the struct/union `t`, looking through anonymous members.
    /// Each anonymous struct is looked into once (`seen`, by where its body is): one that
    /// did not have the member will not have it on another path, and a blob whose anonymous
    /// members all name one struct would otherwise take vlen^depth steps (the BTF fuzz
    /// target found one that took over a second).
    fn find(
        &self,
        t: Type,
        member: &[u8],
        depth: u32,
        seen: &mut std::collections::HashSet<usize>,
    ) -> Result<Option<u32>, String> {
        if depth > 8 || !seen.insert(t.body) {
            return Ok(None);
        }
        for m in 0..t.vlen {
            let mo = t.body + 12 * m;
            let name = str_at(self.strs, u32_at(self.types, mo)?);
            let raw = u32_at(self.types, mo + 8)?;
            // With kind_flag the low 24 bits are the bit offset (bitfield size above).
            let bits = if t.kind_flag { raw & 0xff_ffff } else { raw };
            if name == member {
                return Ok(Some(bits));
            }
            if name.is_empty() {
                let inner = self.resolve(u32_at(self.types, mo + 4)?);
                if let Some(inner) = inner.filter(|i| i.kind == KIND_STRUCT || i.kind == KIND_UNION)
                {
                    if let Some(b) = self.find(inner, member, depth + 1, seen)? {
                        return Ok(Some(bits + b));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Offset in bytes of `member` in the first `struct strukt` that has members.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, String> {
        let t = self
            .index
            .iter()
            .find(|t| {
                t.kind == KIND_STRUCT
                    && t.vlen > 0
                    && str_at(self.strs, t.name_off) == strukt.as_bytes()
            })
            .copied()
            .ok_or_else(|| format!("struct {strukt} not found in BTF"))?;
        let bits = self
            .find(
                t,
                member.as_bytes(),
                0,
                &mut std::collections::HashSet::new(),
            )?
            .ok_or_else(|| format!("struct {strukt} has no member {member}"))?;
        if bits % 8 != 0 {
            return Err(format!("{strukt}.{member} is a bitfield"));
        }
        Ok(bits / 8)
    }
}

/// The offsets the kernel program reads, from a BTF blob. A group whose members cannot all
/// be found is left out of `valid`, with the reason in the returned list.
pub fn kernel_offsets(btf: &[u8]) -> Result<(KernelOffsets, Vec<String>), String> {
    let b = Btf::parse(btf)?;
    let mut o = KernelOffsets::default();
    let mut missing = Vec::new();
    let mut group =
        |bit: u32, what: &str, f: &mut dyn FnMut(&mut KernelOffsets) -> Result<(), String>| match f(
            &mut o,
        ) {
            Ok(()) => o.valid |= bit,
            Err(e) => missing.push(format!("{what}: {e}")),
        };
    group(OFFSETS_BPRM, "exec filename", &mut |o| {
        o.bprm_filename = b.member_offset("linux_binprm", "filename")?;
        Ok(())
    });
    group(OFFSETS_IDENTITY, "start time and parent", &mut |o| {
        o.task_start_boottime = b.member_offset("task_struct", "start_boottime")?;
        o.task_real_parent = b.member_offset("task_struct", "real_parent")?;
        o.task_tgid = b.member_offset("task_struct", "tgid")?;
        Ok(())
    });
    group(OFFSETS_EXE, "exe name", &mut |o| {
        o.task_mm = b.member_offset("task_struct", "mm")?;
        o.mm_exe_file = b.member_offset("mm_struct", "exe_file")?;
        o.file_dentry = b.member_offset("file", "f_path")? + b.member_offset("path", "dentry")?;
        o.dentry_name = b.member_offset("dentry", "d_name")? + b.member_offset("qstr", "name")?;
        Ok(())
    });
    group(OFFSETS_ARGV0, "argv[0]", &mut |o| {
        o.task_mm = b.member_offset("task_struct", "mm")?;
        o.mm_arg_start = b.member_offset("mm_struct", "arg_start")?;
        Ok(())
    });
    group(OFFSETS_PIDNS, "PID namespace", &mut |o| {
        o.task_thread_pid = b.member_offset("task_struct", "thread_pid")?;
        o.pid_level = b.member_offset("pid", "level")?;
        Ok(())
    });
    Ok((o, missing))
}

/// The offsets of the running kernel.
pub fn running_kernel_offsets() -> Result<(KernelOffsets, Vec<String>), String> {
    let raw = std::fs::read(VMLINUX_BTF).map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))?;
    kernel_offsets(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob type by type.
    #[derive(Default)]
    struct Blob {
        types: Vec<u8>,
        strs: Vec<u8>,
        next_id: u32,
    }

    impl Blob {
        fn new() -> Self {
            Blob {
                strs: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }
        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(s.as_bytes());
            self.strs.push(0);
            off
        }
        fn push(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        fn int(&mut self) -> u32 {
            let n = self.name("int");
            self.push(n);
            self.push(1 << 24);
            self.push(4);
            self.push(32);
            self.id()
        }
        fn id(&mut self) -> u32 {
            self.next_id += 1;
            self.next_id - 1
        }
        /// A struct (or union) with (name, type id, bit offset) members.
        fn strukt(
            &mut self,
            name: &str,
            union: bool,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let n = self.name(name);
            self.push(n);
            let kind = if union { 5 } else { 4 };
            self.push((kind << 24) | members.len() as u32 | if kind_flag { 1 << 31 } else { 0 });
            self.push(64);
            for (m, ty, bits) in members {
                let mn = self.name(m);
                self.push(mn);
                self.push(*ty);
                self.push(*bits);
            }
            self.id()
        }
        fn typedef(&mut self, name: &str, to: u32) -> u32 {
            let n = self.name(name);
            self.push(n);
            self.push(8 << 24);
            self.push(to);
            self.id()
        }
        fn bytes(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            b.push(1);
            b.push(0);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strs.len() as u32,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strs);
            b
        }
    }

    /// A kernel-like set of structs: mm_struct keeps its members in an anonymous struct
    /// reached through a typedef, as BTF of 6.x kernels shows it.
    fn kernelish() -> Vec<u8> {
        let mut b = Blob::new();
        let int = b.int();
        b.strukt(
            "linux_binprm",
            false,
            false,
            &[("x", int, 0), ("filename", int, 96 * 8)],
        );
        b.strukt(
            "task_struct",
            false,
            false,
            &[
                ("state", int, 0),
                ("real_parent", int, 1400 * 8),
                ("tgid", int, 1300 * 8),
                ("mm", int, 900 * 8),
                ("start_boottime", int, 1800 * 8),
                ("thread_pid", int, 1500 * 8),
            ],
        );
        let inner = b.strukt(
            "",
            false,
            false,
            &[
                ("pgd", int, 0),
                ("exe_file", int, 880 * 8),
                ("arg_start", int, 300 * 8),
            ],
        );
        let alias = b.typedef("", inner);
        b.strukt(
            "mm_struct",
            false,
            false,
            &[("", alias, 0), ("cpu_bitmap", int, 1000 * 8)],
        );
        b.strukt(
            "path",
            false,
            false,
            &[("mnt", int, 0), ("dentry", int, 64)],
        );
        b.strukt(
            "file",
            false,
            false,
            &[("f_u", int, 0), ("f_path", int, 16 * 8)],
        );
        let hashes = b.strukt("", false, false, &[("hash", int, 0), ("len", int, 32)]);
        let u = b.strukt("", true, false, &[("", hashes, 0), ("hash_len", int, 0)]);
        b.strukt("qstr", false, false, &[("", u, 0), ("name", int, 64)]);
        b.strukt(
            "dentry",
            false,
            false,
            &[("d_flags", int, 0), ("d_name", int, 32 * 8)],
        );
        // With kind_flag the bitfield size sits in the top 8 bits and must be ignored.
        b.strukt(
            "pid",
            false,
            true,
            &[("count", int, 0), ("level", int, (32 << 24) | 32)],
        );
        b.bytes()
    }

    /// The fuzz target's seed (fuzz/seeds/btf) is this blob; FFRTMP_WRITE_FUZZ_SEEDS=1
    /// writes it again after the blob changed.
    #[test]
    fn the_fuzz_seed_is_the_kernelish_blob() {
        let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/btf/kernelish.btf");
        if std::env::var_os("FFRTMP_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::write(&seed, kernelish()).unwrap();
        }
        let committed = std::fs::read(&seed).unwrap();
        assert!(
            committed == kernelish(),
            "{} is stale: run with FFRTMP_WRITE_FUZZ_SEEDS=1",
            seed.display()
        );
        assert!(kernel_offsets(&committed).unwrap().1.is_empty());
    }

    /// Found by the BTF fuzz target (its input, kept as a seed): anonymous members that
    /// all lead to one struct made the search take vlen^depth steps. Now each anonymous
    /// struct is looked into once, and this returns at once.
    #[test]
    fn anonymous_members_naming_one_struct_are_searched_once() {
        let blob = include_bytes!("../../../../fuzz/seeds/btf/nested-anonymous.btf");
        let _ = kernel_offsets(blob);
        // The same shape built: 40 anonymous members of one struct, nine levels deep.
        let mut b = Blob::new();
        let int = b.int();
        let mut inner = b.strukt("", false, false, &[("leaf", int, 0)]);
        for _ in 0..9 {
            let members: Vec<(&str, u32, u32)> = (0..40).map(|_| ("", inner, 0)).collect();
            inner = b.strukt("", false, false, &members);
        }
        b.strukt("task_struct", false, false, &[("", inner, 0)]);
        let (_, missing) = kernel_offsets(&b.bytes()).unwrap();
        assert!(
            missing
                .iter()
                .any(|m| m.contains("no member start_boottime")),
            "{missing:?}"
        );
    }

    #[test]
    fn finds_every_offset_the_program_needs() {
        let (o, missing) = kernel_offsets(&kernelish()).unwrap();
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(
            o.valid,
            OFFSETS_BPRM | OFFSETS_IDENTITY | OFFSETS_EXE | OFFSETS_ARGV0 | OFFSETS_PIDNS
        );
        assert_eq!(o.bprm_filename, 96);
        assert_eq!(
            (o.task_start_boottime, o.task_real_parent, o.task_tgid),
            (1800, 1400, 1300)
        );
        assert_eq!((o.task_mm, o.mm_exe_file, o.mm_arg_start), (900, 880, 300));
        assert_eq!(o.file_dentry, 16 + 8, "f_path + path.dentry");
        assert_eq!(o.dentry_name, 32 + 8, "d_name + qstr.name");
        assert_eq!((o.task_thread_pid, o.pid_level), (1500, 4));
    }

    #[test]
    fn a_missing_member_drops_only_its_group() {
        let mut b = Blob::new();
        let int = b.int();
        b.strukt("linux_binprm", false, false, &[("filename", int, 64)]);
        b.strukt("task_struct", false, false, &[("tgid", int, 64)]);
        let (o, missing) = kernel_offsets(&b.bytes()).unwrap();
        assert_eq!(o.valid, OFFSETS_BPRM);
        assert_eq!(o.bprm_filename, 8);
        assert!(
            missing.iter().any(|m| m.contains("start_boottime")),
            "{missing:?}"
        );
        assert!(
            missing.iter().any(|m| m.contains("no member mm")),
            "{missing:?}"
        );
        assert_eq!(missing.len(), 4, "{missing:?}");
    }

    #[test]
    fn reports_what_is_missing_and_bitfields() {
        let mut b = Blob::new();
        let int = b.int();
        b.strukt(
            "linux_binprm",
            false,
            false,
            &[("x", int, 0), ("filename", int, 12)],
        );
        let blob = b.bytes();
        let btf = Btf::parse(&blob).unwrap();
        assert!(btf
            .member_offset("linux_binprm", "argv")
            .unwrap_err()
            .contains("no member argv"));
        assert!(btf
            .member_offset("task_struct", "comm")
            .unwrap_err()
            .contains("not found"));
        assert!(btf
            .member_offset("linux_binprm", "filename")
            .unwrap_err()
            .contains("bitfield"));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut b = kernelish();
        b.truncate(40);
        assert!(kernel_offsets(&b).is_err() || kernel_offsets(&b).unwrap().0.valid == 0);
        let mut b = kernelish();
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // type_len past the end
        assert!(kernel_offsets(&b).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} does not exist (kernel without BTF)");
            return;
        }
        let (o, missing) = running_kernel_offsets().unwrap();
        assert!(missing.is_empty(), "{missing:?}");
        // The structs start with other members: none of these is at 0, and all lie within
        // a few KiB.
        for v in [
            o.bprm_filename,
            o.task_start_boottime,
            o.task_real_parent,
            o.task_mm,
            o.mm_exe_file,
            o.mm_arg_start,
            o.task_thread_pid,
        ] {
            assert!(v > 0 && v < 16384 && v % 8 == 0, "{o:?}");
        }
    }
}
