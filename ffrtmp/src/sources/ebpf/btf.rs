//! Byte offset of a struct member, read from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The tp_btf hook needs `offsetof(struct linux_binprm, filename)`, which is not ABI and
//! which Rust BPF cannot relocate (no CO-RE). aya 0.14 parses BTF but keeps its types
//! private, so this is a small reader of the documented format
//! (Documentation/bpf/btf.rst): header, type section (`btf_type` + a kind-specific
//! trailer each), string section. Every read is bounds-checked.

/// Where the running kernel's BTF is.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

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

/// Offset in bytes of `member` in the first `struct strukt` that has members.
pub fn member_offset(btf: &[u8], strukt: &str, member: &str) -> Result<u32, String> {
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

    let mut o = 0usize;
    while o + 12 <= types.len() {
        let name_off = u32_at(types, o)?;
        let info = u32_at(types, o + 4)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 != 0;
        let body = o + 12;
        let trailer = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            k => return Err(format!("unknown BTF kind {k}")),
        };
        if kind == 4 && vlen > 0 && str_at(strs, name_off) == strukt.as_bytes() {
            for m in 0..vlen {
                let mo = body + 12 * m;
                if str_at(strs, u32_at(types, mo)?) == member.as_bytes() {
                    let raw = u32_at(types, mo + 8)?;
                    // With kind_flag the low 24 bits are the bit offset (bitfield size above).
                    let bits = if kind_flag { raw & 0xff_ffff } else { raw };
                    if bits % 8 != 0 {
                        return Err(format!("{strukt}.{member} is a bitfield"));
                    }
                    return Ok(bits / 8);
                }
            }
            return Err(format!("struct {strukt} has no member {member}"));
        }
        o = body + trailer;
    }
    Err(format!("struct {strukt} not found in BTF"))
}

/// `offsetof(struct linux_binprm, filename)` of the running kernel.
pub fn bprm_filename_offset() -> Result<u32, String> {
    let raw = std::fs::read(VMLINUX_BTF).map_err(|e| format!("cannot read {VMLINUX_BTF}: {e}"))?;
    member_offset(&raw, "linux_binprm", "filename")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with: int (id 1), `struct other { int a; }`, `struct linux_binprm
    /// { int x; int filename; }` with member offsets in bits.
    fn blob(filename_bits: u32, kind_flag: bool) -> Vec<u8> {
        let strs = b"\0int\0other\0a\0linux_binprm\0x\0filename\0";
        let off = |s: &str| {
            let needle = [b"\0".as_slice(), s.as_bytes(), b"\0"].concat();
            strs.windows(needle.len())
                .position(|w| w == needle)
                .unwrap() as u32
                + 1
        };
        let mut t: Vec<u8> = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // INT "int": info kind 1, size 4, trailer encoding.
        push(off("int"));
        push(1 << 24);
        push(4);
        push(32);
        // STRUCT other, 1 member.
        push(off("other"));
        push((4 << 24) | 1);
        push(4);
        push(off("a"));
        push(1);
        push(0);
        // STRUCT linux_binprm, 2 members.
        push(off("linux_binprm"));
        push((4 << 24) | 2 | if kind_flag { 1 << 31 } else { 0 });
        push(8);
        push(off("x"));
        push(1);
        push(0);
        push(off("filename"));
        push(1);
        push(filename_bits);
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.push(1); // version
        b.push(0); // flags
        for v in [24u32, 0, t.len() as u32, t.len() as u32, strs.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(strs);
        b
    }

    #[test]
    fn finds_a_member_offset() {
        assert_eq!(
            member_offset(&blob(96 * 8, false), "linux_binprm", "filename"),
            Ok(96)
        );
        // With kind_flag, the bitfield size sits in the top 8 bits and must be ignored.
        assert_eq!(
            member_offset(&blob((3 << 24) | 64, true), "linux_binprm", "filename"),
            Ok(8)
        );
        assert_eq!(member_offset(&blob(0, false), "other", "a"), Ok(0));
    }

    #[test]
    fn reports_what_is_missing() {
        let b = blob(64, false);
        assert!(member_offset(&b, "linux_binprm", "argv")
            .unwrap_err()
            .contains("no member argv"));
        assert!(member_offset(&b, "task_struct", "comm")
            .unwrap_err()
            .contains("not found"));
        assert!(member_offset(&blob(12, false), "linux_binprm", "filename")
            .unwrap_err()
            .contains("bitfield"));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(member_offset(b"", "a", "b").is_err());
        assert!(member_offset(&[0u8; 64], "a", "b").is_err());
        let mut b = blob(64, false);
        b.truncate(40);
        assert!(member_offset(&b, "linux_binprm", "filename").is_err());
        let mut b = blob(64, false);
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes()); // type_len past the end
        assert!(member_offset(&b, "linux_binprm", "filename").is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} does not exist (kernel without BTF)");
            return;
        }
        let off = bprm_filename_offset().unwrap();
        // linux_binprm starts with other members: the filename is never at 0, and the
        // struct is a few hundred bytes.
        assert!(off > 0 && off < 1024 && off % 8 == 0, "{off}");
    }
}
