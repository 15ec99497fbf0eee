//! Hook `tracepoint/sched/sched_process_exec` (attach: `TracePoint::attach("sched",
//! "sched_process_exec")`; needs tracefs mounted, for the tracepoint id).
//!
//! Record layout (`/sys/kernel/tracing/events/sched/sched_process_exec/format`, stable ABI):
//! offset 8 `__data_loc char[] filename` (low 16 bits: offset of the string in the record,
//! high 16 bits: its length), 12 `pid`, 16 `old_pid`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use ffrtmp_common::counter;

use crate::{
    forward::{on_exec, NotForwarded, Pass},
    maps::count,
};

/// Offset of `__data_loc char[] filename` in the tracepoint record.
const FILENAME_DATA_LOC: usize = 8;

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    count(counter::EXECS);
    if let Err(e) = try_sched_process_exec(&ctx) {
        e.count();
    }
    0
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<(), NotForwarded> {
    // SAFETY: offset 8 is inside the fixed part of this tracepoint's record.
    let data_loc: u32 =
        unsafe { ctx.read_at(FILENAME_DATA_LOC) }.map_err(|_| NotForwarded::ReadFailed)?;
    // SAFETY: pointer arithmetic only; the string is read by bpf_probe_read_kernel_str,
    // which checks the address.
    let filename = unsafe { (ctx.as_ptr() as *const u8).add((data_loc & 0xffff) as usize) };
    on_exec(filename, Pass::Only)
}
