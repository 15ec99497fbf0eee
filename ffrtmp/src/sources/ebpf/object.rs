//! The kernel program's object file, embedded at build time by `build.rs` from
//! `ffrtmp-ebpf/target/bpfel-unknown-none/release/ffrtmp-ebpf` (or `FFRTMP_EBPF_OBJECT`).
//! A binary built before `cargo xtask build-ebpf` carries an empty object.

use super::error::EbpfError;

/// The object, 8-byte aligned as aya's ELF parser requires.
pub fn object() -> Result<&'static [u8], EbpfError> {
    let bytes: &'static [u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ffrtmp-ebpf.o"));
    if bytes.is_empty() {
        return Err(EbpfError::NotBuilt);
    }
    Ok(bytes)
}

/// Whether this binary carries the object (for tests that need it to run).
pub fn is_embedded() -> bool {
    object().is_ok()
}
