//! Kernel half of ffrtmp: sees every exec, forwards the interesting ones to the agent.
//!
//! One hook per file: `exec.rs` (tracepoint, the default) and `exec_btf.rs` (tp_btf, no
//! tracefs needed) are two attachments of the same logic in `forward.rs`; user space loads
//! one of them.
//! `task.rs` reads what the event says about the task (identity, names, namespace); maps
//! and the counter helper live in `maps.rs`. The types in the ring buffer and the maps
//! come from `ffrtmp-common`, so both halves agree on every byte. Everything that can be
//! decided in user space is (full-name matching, rules, placement); the kernel only
//! filters by name and, for strict targets, records the stop and stops the process.
#![no_std]
#![no_main]

mod exec;
mod exec_btf;
mod forward;
mod maps;
mod task;

/// The kernel refuses GPL-only helpers (`bpf_probe_read_kernel*`) to non-GPL programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The layout of the types shared with the agent (`ffrtmp_common::EVENT_ABI`). The agent
/// reads this symbol from the object before loading it and refuses another number.
#[unsafe(no_mangle)]
#[used]
static FFRTMP_EVENT_ABI: u32 = ffrtmp_common::EVENT_ABI;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No panics are reachable (no indexing, no unwrap); the verifier would reject the
    // program if one were, because this never returns.
    loop {}
}
