//! Kernel half of ffrtmp: sees every exec, forwards the interesting ones to the agent.
//!
//! One hook per file: `exec.rs` (tracepoint) and `exec_btf.rs` (tp_btf, no tracefs needed)
//! are two attachments of the same logic in `forward.rs`; user space loads one of them.
//! Maps and the counter helper live in `maps.rs`. The types in the ring buffer and the
//! maps come from `ffrtmp-common`, so both halves agree on every byte. Everything that can be decided in user space is (full-name matching, rules,
//! placement); the kernel only filters by comm and, for strict targets, stops the process.
#![no_std]
#![no_main]

mod exec;
mod exec_btf;
mod forward;
mod maps;

/// The kernel refuses GPL-only helpers (`bpf_probe_read_kernel*`) to non-GPL programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No panics are reachable (no indexing, no unwrap); the verifier would reject the
    // program if one were, because this never returns.
    loop {}
}
