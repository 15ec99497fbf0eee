//! Hook `tp_btf/sched_process_exec`: the same exec handling as `exec.rs`, attached as a BTF
//! tracepoint (`BtfTracePoint::load("sched_process_exec", &Btf::from_sys_fs()?)` then
//! `attach()`), which needs no tracefs. Load only one of the two hooks.
//!
//! Arguments: `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`. The
//! filename is `bprm->filename`; the offset of that member is not ABI (96 on 6.18), and
//! Rust BPF has no CO-RE, so user space reads it from /sys/kernel/btf/vmlinux and sets it
//! in `OFFSETS` at load time. Unknown: events carry `EXEC_FLAG_FILENAME_FAILED`.
//!
//! Two programs, attached in this order. The kernel does not run a tracing program on a
//! CPU where it is already running (`bpf_prog_info.recursion_misses` counts the runs it
//! skipped). Kernels that run tracepoint programs with only migration disabled (Debian's
//! 7.x: a program preempted on a CPU while another task on it execs) skip real execs; on
//! 7.3.4 a burst of 20 targets lost 1-3. The second program is a program of its own, so
//! it runs for an exec the first was skipped for; `forward::claim` keeps them from both
//! forwarding one exec. Only the first counts `EXECS`.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use ffrtmp_common::{counter, OFFSETS_BPRM};

use crate::{
    forward::{on_exec, NotForwarded, Pass},
    maps::{count, offset, offsets_valid},
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    count(counter::EXECS);
    let bprm: *const u8 = ctx.arg(2);
    if let Err(e) = try_sched_process_exec_btf(bprm, Pass::First(bprm as u64)) {
        e.count();
    }
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf_backup(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    if let Err(e) = try_sched_process_exec_btf(bprm, Pass::Backup(bprm as u64)) {
        e.count();
    }
    0
}

#[inline(always)]
fn try_sched_process_exec_btf(bprm: *const u8, pass: Pass) -> Result<(), NotForwarded> {
    let filename: *const u8 = if offsets_valid(OFFSETS_BPRM) {
        // SAFETY: checked read of the `char *filename` member of the live linux_binprm.
        unsafe { bpf_probe_read_kernel(bprm.add(offset(|o| &o.bprm_filename)) as *const *const u8) }
            .unwrap_or(core::ptr::null())
    } else {
        core::ptr::null()
    };
    on_exec(filename, pass)
}
