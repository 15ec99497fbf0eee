//! Hook `tracepoint/sched/sched_process_exec` (attach: `TracePoint::attach("sched",
//! "sched_process_exec")`; needs tracefs mounted, for the tracepoint id). The default.
//!
//! Why this one first: the kernel never runs a tracing program twice at once on a CPU; it
//! skips the second run (`bpf_prog_info.recursion_misses`). This hook runs inside the
//! tracepoint's perf handler with preemption off, so it is never preempted itself. A skip
//! still happens while other BPF work runs on that CPU: another program, or a task
//! preempted inside a map system call (why the agent reads `COUNTERS` from memory); the
//! counter shows it. Debian's 7.x kernels run `tp_btf` programs with only migration off:
//! an exec'ing task preempted inside the program makes the kernel skip it for the next
//! task exec'ing on that CPU.
//! Measured on 7.3.4 in bursts of 20 targets: `tp_btf` 1-3 of 20 skipped (2 of 60 even as
//! two programs; 4 of 120 with the agent's reader not real-time), this hook 0 of 120.
//! Attaching it needs `perf_event_open`, which Debian's `perf_event_paranoid=3` allows
//! only with CAP_SYS_ADMIN; without it (or when attaching fails otherwise) the agent uses
//! `tp_btf`.
//!
//! Record layout (`/sys/kernel/tracing/events/sched/sched_process_exec/format`, stable ABI):
//! offset 8 `__data_loc char[] filename` (low 16 bits: offset of the string in the record,
//! high 16 bits: its length), 12 `pid`, 16 `old_pid`.

use aya_ebpf::{programs::TracePointContext, EbpfContext};
use ffrtmp_common::counter;

use crate::{
    forward::{on_exec, NotForwarded},
    maps::count,
};

/// Offset of `__data_loc char[] filename` in the tracepoint record.
const FILENAME_DATA_LOC: usize = 8;

/// What the program returns: the kernel runs every program attached to a tracepoint
/// through perf, ANDs what they return, and gives the event to perf's own listeners on it
/// (`perf stat`, `perf record -e sched:sched_process_exec`, `perf trace`) only if the
/// result is 1. Returning 0, as tracing programs usually do, made every exec on the node
/// invisible to them while the daemon ran. 1 costs, for execs on CPU 0 (where aya opens
/// our perf event, counting only), a count increment.
const PASS_ON: u32 = 1;

/// The entry point, written out as aya-ebpf's `#[tracepoint]` would write it (same
/// section, same symbol) but for the return value: the macro returns 0 whatever the
/// function returns.
#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/sched/sched_process_exec")]
pub fn sched_process_exec(ctx: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    count(counter::EXECS);
    if let Err(e) = try_sched_process_exec(&ctx) {
        e.count();
    }
    PASS_ON
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), NotForwarded> {
    // SAFETY: offset 8 is inside the fixed part of this tracepoint's record.
    let data_loc: u32 =
        unsafe { ctx.read_at(FILENAME_DATA_LOC) }.map_err(|_| NotForwarded::ReadFailed)?;
    // SAFETY: pointer arithmetic only; the string is read by bpf_probe_read_kernel_str,
    // which checks the address.
    let filename = unsafe { (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize) };
    on_exec(filename)
}
