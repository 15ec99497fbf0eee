//! Embeds the kernel program (built by `cargo xtask build-ebpf`) into the agent.
//!
//! The object is copied to `$OUT_DIR/ffrtmp-ebpf.o`, which `sources::ebpf::object` includes
//! 8-byte aligned. Without an object the copy is empty: the host workspace still builds
//! (CI steps, laptops without the BPF toolchain), and the eBPF source reports at run time
//! that the binary was built without it. `FFRTMP_EBPF_OBJECT` names another object.

use std::path::{Path, PathBuf};

const DEFAULT_OBJECT: &str = "../ffrtmp-ebpf/target/bpfel-unknown-none/release/ffrtmp-ebpf";

fn main() {
    println!("cargo::rerun-if-env-changed=FFRTMP_EBPF_OBJECT");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let object = match std::env::var_os("FFRTMP_EBPF_OBJECT") {
        Some(p) if !p.is_empty() => manifest.join(p),
        _ => manifest.join(DEFAULT_OBJECT),
    };
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("ffrtmp-ebpf.o");
    // Watch the object if it exists, else the nearest existing directory above it, so the
    // agent is rebuilt when the object appears (a missing path would rerun this every build).
    println!(
        "cargo::rerun-if-changed={}",
        nearest_existing(&object).display()
    );
    let bytes = if object.is_file() {
        std::fs::read(&object)
            .unwrap_or_else(|e| panic!("cannot read the eBPF object {}: {e}", object.display()))
    } else {
        if std::env::var_os("FFRTMP_EBPF_OBJECT").is_some() {
            println!(
                "cargo::warning=FFRTMP_EBPF_OBJECT={} does not exist; building without the eBPF object",
                object.display()
            );
        }
        Vec::new()
    };
    // An id of the object for `ffrtmp --version`, the start-up log and ffrtmp_build_info:
    // FNV-1a of its bytes (two nodes with the same id run the same kernel program).
    let id = if bytes.is_empty() {
        "none".to_string()
    } else {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    };
    println!("cargo::rustc-env=FFRTMP_EBPF_ID={id}");
    // Write only on change, so an unchanged object does not recompile the crate.
    if std::fs::read(&out).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(&out, &bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    }
}

fn nearest_existing(p: &Path) -> &Path {
    let mut cur = p;
    while !cur.exists() {
        match cur.parent() {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    cur
}
