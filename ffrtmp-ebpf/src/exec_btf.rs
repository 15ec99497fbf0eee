//! Hook `tp_btf/sched_process_exec`: the same exec handling as `exec.rs`, attached as a BTF
//! tracepoint (`BtfTracePoint::load("sched_process_exec", &Btf::from_sys_fs()?)` then
//! `attach()`), which needs no tracefs or perf event: the fallback where the classic
//! tracepoint cannot be attached. Load only
//! one of the two hooks. On a kernel that runs it preemptibly (7.x) the kernel skips it
//! for some execs (see `exec.rs`); the agent counts those (`ffrtmp_kernel_skipped_total`,
//! not lost events) and reconciles, which places a skipped target.
//!
//! Arguments: `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`. The
//! filename is `bprm->filename`; the offset of that member is not ABI (96 on 6.18), and
//! Rust BPF has no CO-RE, so user space reads it from /sys/kernel/btf/vmlinux and sets it
//! in `OFFSETS` at load time. Unknown: events carry `EXEC_FLAG_FILENAME_FAILED`.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use ffrtmp_common::{counter, OFFSETS_BPRM};

use crate::{
    forward::{on_exec, NotForwarded},
    maps::{count, offset, offsets_valid},
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    count(counter::EXECS);
    if let Err(e) = try_sched_process_exec_btf(&ctx) {
        e.count();
    }
    0
}

fn try_sched_process_exec_btf(ctx: &BtfTracePointContext) -> Result<(), NotForwarded> {
    let filename: *const u8 = if offsets_valid(OFFSETS_BPRM) {
        let bprm: *const u8 = ctx.arg(2);
        // SAFETY: checked read of the `char *filename` member of the live linux_binprm.
        unsafe { bpf_probe_read_kernel(bprm.add(offset(|o| &o.bprm_filename)) as *const *const u8) }
            .unwrap_or(core::ptr::null())
    } else {
        core::ptr::null()
    };
    on_exec(filename)
}
