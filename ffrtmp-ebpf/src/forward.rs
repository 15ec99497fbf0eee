//! What every exec hook does once it has found the filename: filter by comm, reserve and
//! fill an `ExecEvent`, stop strict targets, submit. Shared by `exec.rs` (tracepoint) and
//! `exec_btf.rs` (tp_btf), which only differ in where the filename comes from.
//!
//! Order matters for strict targets: the ring buffer slot is reserved before SIGSTOP, so a
//! process is never stopped unless its event is on its way to the agent (which must send
//! SIGCONT). There is no loop anywhere: the filename is one helper call.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
    bpf_probe_read_kernel,
    generated::{bpf_get_current_comm, bpf_probe_read_kernel_str, bpf_send_signal},
};
use ffrtmp_common::{
    counter, ExecEvent, TargetKey, COMM_LEN, EXEC_FLAG_FILENAME_FAILED,
    EXEC_FLAG_FILENAME_TRUNCATED, EXEC_FLAG_PREFIX_MATCH, EXEC_FLAG_STOPPED, EXEC_FLAG_UNFILTERED,
    FILENAME_LEN, TARGET_FLAG_PREFIX, TARGET_FLAG_STRICT,
};

use crate::maps::{count, forward_all, EVENTS, TARGETS};

/// `SIGSTOP` on Linux.
const SIGSTOP: u32 = 19;

/// Why an exec was not forwarded.
pub enum NotForwarded {
    /// Not a target and the filter is on: the normal case, not counted.
    NotTarget,
    /// `bpf_ringbuf_reserve` failed (ring full): the event is lost. `RINGBUF_FULL`.
    RingFull,
    /// A read the event cannot do without failed (comm, tracepoint record). `READ_FAILED`.
    ReadFailed,
}

impl NotForwarded {
    /// Adds this outcome to its counter (hooks call this on `Err`).
    #[inline(always)]
    pub fn count(self) {
        match self {
            NotForwarded::NotTarget => {}
            NotForwarded::RingFull => count(counter::RINGBUF_FULL),
            NotForwarded::ReadFailed => count(counter::READ_FAILED),
        }
    }
}

/// `filename` is a kernel pointer to the exec'd path (NUL-terminated), or null when the
/// hook could not find it (the event then carries `EXEC_FLAG_FILENAME_FAILED` and an
/// all-zero filename).
#[inline(always)]
pub fn on_exec(filename: *const u8) -> Result<(), NotForwarded> {
    let comm = current_comm().ok_or(NotForwarded::ReadFailed)?;

    let mut flags = 0u32;
    let mut strict = false;
    // SAFETY: the value is copied out at once; a concurrent update can only give a stale copy.
    match unsafe { TARGETS.get(&comm.0) } {
        Some(target) => {
            let target_flags = target.flags;
            if target_flags & TARGET_FLAG_PREFIX != 0 {
                flags |= EXEC_FLAG_PREFIX_MATCH;
            }
            strict = target_flags & TARGET_FLAG_STRICT != 0;
        }
        None if forward_all() => flags |= EXEC_FLAG_UNFILTERED,
        None => return Err(NotForwarded::NotTarget),
    }

    // Reserve before anything irreversible (see the module comment).
    let mut entry = EVENTS
        .reserve::<ExecEvent>(0)
        .ok_or(NotForwarded::RingFull)?;
    let ev: *mut ExecEvent = entry.as_mut_ptr();

    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `ev` points at a reserved, 8-byte aligned record of size_of::<ExecEvent>();
    // every field is written before submit (filename by the helper, which zero-fills on error).
    unsafe {
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).pid = pid_tgid as u32;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).comm = comm.0;

        let (len, read_flags) = read_filename(filename, &mut (*ev).filename);
        (*ev).filename_len = len;
        flags |= read_flags;

        if strict {
            // Takes effect when the task returns to user space: no user instruction of the
            // new program runs before the agent's SIGCONT.
            if bpf_send_signal(SIGSTOP) == 0 {
                flags |= EXEC_FLAG_STOPPED;
            } else {
                count(counter::SIGNAL_FAILED);
            }
        }
        (*ev).flags = flags;
    }
    entry.submit(0);
    count(counter::FORWARDED);
    Ok(())
}

/// A comm on an 8-byte boundary, so it is copied as two words.
#[repr(C, align(8))]
struct Comm(TargetKey);

/// The current task's comm: the new program's name at this point (exec sets it before the
/// tracepoint fires), NUL-padded, i.e. exactly a `TargetKey`.
///
/// The buffer is zeroed first. The helper does not promise to pad: Linux 6.1 copies with
/// `strscpy`, which stops at the NUL and leaves the bytes after it as they were, so a key
/// read into uninitialised stack carried garbage after the name and never matched a
/// target (no event-driven placement at all on Debian 12's kernel). Kernels that copy with
/// `strscpy_pad` (5.10, 6.12+) pad it themselves; zeroing works on both.
#[inline(always)]
fn current_comm() -> Option<Comm> {
    let mut comm = Comm([0u8; COMM_LEN]);
    // SAFETY: the helper writes at most COMM_LEN bytes into the buffer.
    let ret = unsafe { bpf_get_current_comm(comm.0.as_mut_ptr().cast(), COMM_LEN as u32) };
    if ret != 0 {
        return None;
    }
    Some(comm)
}

/// Copies the NUL-terminated kernel string at `src` into `dst`. Returns the length without
/// the NUL and `EXEC_FLAG_FILENAME_*` bits; counts `READ_FAILED` on failure. One helper call
/// and at most one more 1-byte read: no loop.
#[inline(always)]
unsafe fn read_filename(src: *const u8, dst: &mut [u8; FILENAME_LEN]) -> (u32, u32) {
    // SAFETY: the helper checks `src` (a null `src` simply fails) and writes at most
    // FILENAME_LEN bytes into `dst`, always NUL-terminated; on failure it zero-fills `dst`.
    let ret = unsafe {
        bpf_probe_read_kernel_str(dst.as_mut_ptr().cast(), FILENAME_LEN as u32, src.cast())
    };
    if ret <= 0 {
        count(counter::READ_FAILED);
        return (0, EXEC_FLAG_FILENAME_FAILED);
    }
    // `ret` counts the NUL. A full buffer is either an exact fit (255 bytes) or a cut:
    // look at the byte after the copied ones to tell which.
    let len = (ret as u32).min(FILENAME_LEN as u32) - 1;
    if len as usize == FILENAME_LEN - 1 {
        // SAFETY: checked 1-byte read just past the copied bytes.
        let next: u8 = unsafe { bpf_probe_read_kernel(src.add(FILENAME_LEN - 1)) }.unwrap_or(0);
        if next != 0 {
            return (len, EXEC_FLAG_FILENAME_TRUNCATED);
        }
    }
    (len, 0)
}
