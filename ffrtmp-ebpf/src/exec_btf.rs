//! Hook `tp_btf/sched_process_exec`: the same exec handling as `exec.rs`, attached as a BTF
//! tracepoint (`BtfTracePoint::load("sched_process_exec", &Btf::from_sys_fs()?)` then
//! `attach()`), which needs no tracefs. Load only one of the two hooks.
//!
//! Arguments: `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`. The
//! filename is `bprm->filename`; the offset of that member is not ABI (96 on 6.18), and
//! Rust BPF has no CO-RE, so user space reads it from /sys/kernel/btf/vmlinux and sets
//! `BPRM_FILENAME_OFFSET` at load time (`EbpfLoader::override_global`). 0 means unknown:
//! events then carry `EXEC_FLAG_FILENAME_FAILED` (and `READ_FAILED` counts them).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use ffrtmp_common::counter;

use crate::{
    forward::{on_exec, NotForwarded},
    maps::count,
};

/// Byte offset of `filename` in `struct linux_binprm`, set by user space from BTF.
#[unsafe(no_mangle)]
static BPRM_FILENAME_OFFSET: u32 = 0;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    count(counter::EXECS);
    if let Err(e) = try_sched_process_exec_btf(&ctx) {
        e.count();
    }
    0
}

fn try_sched_process_exec_btf(ctx: &BtfTracePointContext) -> Result<(), NotForwarded> {
    // SAFETY: volatile, so the compiler keeps the load-time value instead of folding the 0.
    let offset = unsafe { core::ptr::read_volatile(&BPRM_FILENAME_OFFSET) } as usize;
    let filename: *const u8 = if offset == 0 {
        core::ptr::null()
    } else {
        let bprm: *const u8 = ctx.arg(2);
        // SAFETY: checked read of the `char *filename` member of the live linux_binprm.
        unsafe { bpf_probe_read_kernel(bprm.add(offset) as *const *const u8) }
            .unwrap_or(core::ptr::null())
    };
    on_exec(filename)
}
