//! What every exec hook does once it has found the filename: filter by name, reserve and
//! fill an `ExecEvent`, stop strict targets, submit. Shared by `exec.rs` (tracepoint) and
//! `exec_btf.rs` (tp_btf), which only differ in where the filename comes from.
//!
//! A target is known by any of three names (each cut to 15 bytes, like comm): its comm,
//! the basename of its exe (it may have been started through a symlink of another name)
//! and the basename of argv[0] (`exec -a`). The first that is a key of `TARGETS` decides.
//!
//! Order matters for strict targets: the ring buffer slot is reserved first, then the stop
//! is recorded in `STOPPED`, and only then is SIGSTOP sent; so a process is never stopped
//! unless its event is on its way to the agent and its stop is in a ledger that outlives
//! the agent. No loop here: the filename is one helper call.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
    bpf_probe_read_kernel,
    generated::{bpf_get_current_comm, bpf_probe_read_kernel_str, bpf_send_signal},
};
use aya_log_ebpf::warn;
use ffrtmp_common::{
    counter, ExecEvent, StopKey, StopValue, TargetValue, COMM_LEN, EXEC_FLAG_FILENAME_FAILED,
    EXEC_FLAG_FILENAME_TRUNCATED, EXEC_FLAG_MATCH_ARGV0, EXEC_FLAG_MATCH_COMM, EXEC_FLAG_MATCH_EXE,
    EXEC_FLAG_PREFIX_MATCH, EXEC_FLAG_STOPPED, EXEC_FLAG_STOP_FAILED, EXEC_FLAG_UNFILTERED,
    FILENAME_LEN, TARGET_FLAG_PREFIX, TARGET_FLAG_STRICT,
};

use crate::maps::{count, forward_all, EVENTS, GATED, STOPPED, TARGETS};
use crate::task::{self, Key};

/// `SIGSTOP` on Linux.
const SIGSTOP: u32 = 19;
/// `BPF_NOEXIST`: insert only if the key is new.
const BPF_NOEXIST: u64 = 1;

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

#[inline(always)]
fn lookup(key: &Key) -> Option<u32> {
    // SAFETY: the value is copied out at once; a concurrent update gives a stale copy.
    unsafe { TARGETS.get(&key.0) }.map(|t: &TargetValue| t.flags)
}

/// `filename` is a kernel pointer to the exec'd path (NUL-terminated), or null when the
/// hook could not find it (the event then carries `EXEC_FLAG_FILENAME_FAILED` and an
/// all-zero filename).
#[inline(always)]
pub fn on_exec(filename: *const u8) -> Result<(), NotForwarded> {
    let comm = current_comm()?;
    let facts = task::current();

    let mut flags = facts.flags;
    let hit = match lookup(&comm) {
        Some(t) => Some((t, EXEC_FLAG_MATCH_COMM)),
        None => match lookup(&facts.exe) {
            Some(t) => Some((t, EXEC_FLAG_MATCH_EXE)),
            None => lookup(&facts.argv0).map(|t| (t, EXEC_FLAG_MATCH_ARGV0)),
        },
    };
    let mut strict = false;
    match hit {
        Some((target_flags, matched)) => {
            flags |= matched;
            if target_flags & TARGET_FLAG_PREFIX != 0 {
                flags |= EXEC_FLAG_PREFIX_MATCH;
            }
            strict = target_flags & TARGET_FLAG_STRICT != 0 && !placed_at_gate(tgid_now());
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
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: `ev` points at a reserved, 8-byte aligned record of size_of::<ExecEvent>();
    // every field is written before submit (filename by the helper, which zero-fills on error).
    unsafe {
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).start_ns = facts.start_ns;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).tgid = tgid;
        (*ev).pid = pid_tgid as u32;
        (*ev).ppid = facts.ppid;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).pidns_level = facts.pidns_level;
        (*ev).comm = comm.0;
        (*ev).exe_name = facts.exe.0;
        (*ev).argv0_name = facts.argv0.0;

        let (len, read_flags) = read_filename(filename, &mut (*ev).filename);
        (*ev).filename_len = len;
        flags |= read_flags;

        if strict {
            flags |= stop(tgid, facts.start_ns, (*ev).ktime_ns);
        }
        (*ev).flags = flags;
    }
    entry.submit(0);
    count(counter::FORWARDED);
    Ok(())
}

/// This process's tgid.
#[inline(always)]
fn tgid_now() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Whether the agent placed this process while the exec gate held its exec, within the
/// last second (the entry is consumed).
#[inline(always)]
fn placed_at_gate(tgid: u32) -> bool {
    // SAFETY: the value is copied out before the entry is removed.
    let Some(at) = (unsafe { GATED.get(&tgid) }).copied() else {
        return false;
    };
    let _ = GATED.remove(&tgid);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    now.saturating_sub(at) < 1_000_000_000
}

/// Record the stop, then stop: `EXEC_FLAG_STOPPED`, or `EXEC_FLAG_STOP_FAILED` (counted)
/// when either step failed — the process then runs and is placed like a normal target.
/// Without a start time there is no ledger key, so no stop.
#[inline(always)]
fn stop(tgid: u32, start_ns: u64, now: u64) -> u32 {
    if start_ns == 0 {
        count(counter::SIGNAL_FAILED);
        return EXEC_FLAG_STOP_FAILED;
    }
    let key = StopKey {
        tgid,
        _pad: 0,
        start_ns,
    };
    if let Err(ret) = STOPPED.insert(&key, &StopValue { ktime_ns: now }, BPF_NOEXIST) {
        warn!(
            &(),
            target: "ffrtmp::kernel",
            "strict target tgid {} not stopped: its stop could not be recorded in the ledger (map insert returned {})",
            tgid,
            ret
        );
        count(counter::SIGNAL_FAILED);
        return EXEC_FLAG_STOP_FAILED;
    }
    // Takes effect when the task returns to user space: no user instruction of the new
    // program runs before the agent's SIGCONT.
    // SAFETY: plain helper call.
    let ret = unsafe { bpf_send_signal(SIGSTOP) };
    if ret != 0 {
        warn!(
            &(),
            target: "ffrtmp::kernel",
            "strict target tgid {} not stopped: bpf_send_signal returned {}",
            tgid,
            ret
        );
        let _ = STOPPED.remove(&key);
        count(counter::SIGNAL_FAILED);
        return EXEC_FLAG_STOP_FAILED;
    }
    EXEC_FLAG_STOPPED
}

/// The current task's comm: the new program's name at this point (exec sets it before the
/// tracepoint fires), NUL-padded, i.e. exactly a `TargetKey`.
///
/// The buffer is zeroed first. The helper does not promise to pad: Linux 6.1 copies with
/// `strscpy`, which stops at the NUL and leaves the bytes after it as they were, so a key
/// read into uninitialised stack carried garbage after the name and never matched a
/// target (no event-driven placement at all on Debian 12's kernel). Kernels that copy with
/// `strscpy_pad` (5.10, 6.12+) pad it themselves; zeroing works on both.
///
/// A failed read drops the event (counted as `READ_FAILED`, and said to the agent's log).
#[inline(always)]
fn current_comm() -> Result<Key, NotForwarded> {
    let mut comm = Key::zeroed();
    // SAFETY: the helper writes at most COMM_LEN bytes into the buffer.
    let ret = unsafe { bpf_get_current_comm(comm.0.as_mut_ptr().cast(), COMM_LEN as u32) };
    if ret != 0 {
        warn!(
            &(),
            target: "ffrtmp::kernel",
            "exec of tgid {} dropped: its comm could not be read (bpf_get_current_comm returned {})",
            (bpf_get_current_pid_tgid() >> 32) as u32,
            ret
        );
        return Err(NotForwarded::ReadFailed);
    }
    Ok(comm)
}

/// Copies the NUL-terminated kernel string at `src` into `dst`. Returns the length without
/// the NUL and `EXEC_FLAG_FILENAME_*` bits. One helper call and at most one more 1-byte
/// read: no loop.
#[inline(always)]
unsafe fn read_filename(src: *const u8, dst: &mut [u8; FILENAME_LEN]) -> (u32, u32) {
    // SAFETY: the helper checks `src` (a null `src` simply fails) and writes at most
    // FILENAME_LEN bytes into `dst`, always NUL-terminated; on failure it zero-fills `dst`.
    let ret = unsafe {
        bpf_probe_read_kernel_str(dst.as_mut_ptr().cast(), FILENAME_LEN as u32, src.cast())
    };
    if ret <= 0 {
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
