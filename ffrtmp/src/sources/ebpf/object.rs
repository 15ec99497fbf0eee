//! The kernel program's object file, embedded at build time by `build.rs` from
//! `ffrtmp-ebpf/target/bpfel-unknown-none/release/ffrtmp-ebpf` (or `FFRTMP_EBPF_OBJECT`).
//! A binary built before `cargo xtask build-ebpf` carries an empty object.
//!
//! Before anything is loaded the object is checked against this agent: its symbol
//! `FFRTMP_EVENT_ABI` must be `ffrtmp_common::EVENT_ABI`, the layout of the event and map
//! types both halves were compiled with. A stale object is a start-up error that says how
//! to rebuild, never a stream of misread events.

use object::{Object, ObjectSection, ObjectSymbol};

use super::error::EbpfError;

const ABI_SYMBOL: &str = "FFRTMP_EVENT_ABI";

/// The object, 8-byte aligned as aya's ELF parser requires.
fn embedded() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ffrtmp-ebpf.o"))
}

/// The object, once checked against this agent's event layout.
pub fn object() -> Result<&'static [u8], EbpfError> {
    let bytes = embedded();
    if bytes.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    check_abi(bytes)?;
    Ok(bytes)
}

/// Whether this binary carries the object (for tests that need it to run).
pub fn is_embedded() -> bool {
    !embedded().is_empty()
}

/// A short identifier of the embedded object (FNV-1a of its bytes, computed by build.rs),
/// for `--version`, the start-up log and `ffrtmp_build_info`: two nodes with the same id
/// run the same kernel program. `None` without an object.
pub fn build_id() -> Option<&'static str> {
    let id = env!("FFRTMP_EBPF_ID");
    (id != "none").then_some(id)
}

/// The `FFRTMP_EVENT_ABI` of an object, if it has one.
pub fn abi_of(bytes: &[u8]) -> Result<Option<u32>, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not an ELF object: {e}"))?;
    let Some(sym) = file.symbols().find(|s| s.name() == Ok(ABI_SYMBOL)) else {
        return Ok(None);
    };
    let section = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or_else(|| format!("{ABI_SYMBOL} has no section"))?;
    let data = section
        .data()
        .map_err(|e| format!("cannot read the section of {ABI_SYMBOL}: {e}"))?;
    let at = (sym.address() - section.address()) as usize;
    let b = data
        .get(at..at + 4)
        .ok_or_else(|| format!("{ABI_SYMBOL} lies outside its section"))?;
    Ok(Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
}

fn check_abi(bytes: &[u8]) -> Result<(), EbpfError> {
    let want = ffrtmp_common::EVENT_ABI;
    let stale = |what: String| EbpfError::StaleObject {
        detail: format!("{what}; this agent reads event layout {want}"),
    };
    match abi_of(bytes) {
        Ok(Some(v)) if v == want => Ok(()),
        Ok(Some(v)) => Err(stale(format!(
            "the embedded kernel object writes event layout {v}"
        ))),
        Ok(None) => Err(stale(format!(
            "the embedded kernel object has no {ABI_SYMBOL} (it predates event layout 2)"
        ))),
        Err(e) => Err(stale(format!(
            "the embedded kernel object is unreadable ({e})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_object_matches_this_agent() {
        if !is_embedded() {
            eprintln!("skipped: built without the eBPF object");
            return;
        }
        assert_eq!(abi_of(embedded()), Ok(Some(ffrtmp_common::EVENT_ABI)));
        assert!(object().is_ok());
        assert_eq!(build_id().map(str::len), Some(16));
    }

    #[test]
    fn a_stale_or_foreign_object_is_refused_with_the_fix() {
        assert!(abi_of(b"not elf").is_err());
        let e = check_abi(b"not elf").unwrap_err().to_string();
        assert!(e.contains("cargo xtask build-ebpf"), "{e}");
        if is_embedded() {
            // The same object with the symbol renamed reads as an older one.
            let mut b = embedded().to_vec();
            let hits: Vec<usize> = b
                .windows(ABI_SYMBOL.len())
                .enumerate()
                .filter(|(_, w)| *w == ABI_SYMBOL.as_bytes())
                .map(|(i, _)| i)
                .collect();
            assert!(!hits.is_empty());
            for at in hits {
                b[at] = b'X';
            }
            let e = check_abi(&b).unwrap_err().to_string();
            assert!(e.contains("predates"), "{e}");
        }
    }
}
