//! Types shared by the kernel program (`ffrtmp-ebpf`) and the agent (`ffrtmp`).
//!
//! Everything here is `#[repr(C)]`, has no `bool` and no implicit padding, and its size
//! is asserted at compile time, so both sides agree on the bytes in the ring buffer.
#![no_std]

/// Bytes of a task's comm, including the terminating NUL (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of the exec'd filename carried in an event (truncated beyond this).
pub const FILENAME_LEN: usize = 256;

/// `ExecEvent::flags`: the comm only matched a target by its first 15 bytes; user space
/// must confirm the full name.
pub const EXEC_FLAG_PREFIX_MATCH: u32 = 1 << 0;
/// `ExecEvent::flags`: the filename did not fit and was cut at `FILENAME_LEN - 1` bytes.
pub const EXEC_FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;
/// `ExecEvent::flags`: the kernel stopped the process (SIGSTOP) for strict placement; the
/// agent must send SIGCONT whatever happens.
pub const EXEC_FLAG_STOPPED: u32 = 1 << 2;
/// `ExecEvent::flags`: reading the filename failed; `filename` is empty.
pub const EXEC_FLAG_FILENAME_FAILED: u32 = 1 << 3;
/// `ExecEvent::flags`: the event was forwarded because the kernel filter is off (every exec).
pub const EXEC_FLAG_UNFILTERED: u32 = 1 << 4;

/// One exec seen by the kernel program, as written into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    /// `bpf_ktime_get_ns()` at exec (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (1 on a v1-only host).
    pub cgroup_id: u64,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id of the exec'ing thread (equals `tgid` after exec).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `EXEC_FLAG_*` bits.
    pub flags: u32,
    /// Length of `filename` without its NUL.
    pub filename_len: u32,
    /// The new comm, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// The exec'd path as given to execve, NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
}

/// Size of `ExecEvent` in the ring buffer.
pub const EXEC_EVENT_SIZE: usize = 312;
const _: () = assert!(core::mem::size_of::<ExecEvent>() == EXEC_EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<ExecEvent>() == 8);

/// Key of the kernel's target map: a comm, NUL-padded to `COMM_LEN` (targets longer than
/// 15 bytes are cut to 15, like the kernel cuts comm).
pub type TargetKey = [u8; COMM_LEN];

/// Value of the kernel's target map.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TargetValue {
    /// `TARGET_FLAG_*` bits.
    pub flags: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<TargetValue>() == 8);

/// `TargetValue::flags`: the full target name is longer than the key (a prefix match).
pub const TARGET_FLAG_PREFIX: u32 = 1 << 0;
/// `TargetValue::flags`: stop the process at exec (strict placement).
pub const TARGET_FLAG_STRICT: u32 = 1 << 1;

/// Index of the kernel's settings array (single element).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct KernelSettings {
    /// 1 = forward every exec (user space matches everything), 0 = only map hits.
    pub forward_all: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<KernelSettings>() == 8);

/// Indices into the per-CPU counter array.
pub mod counter {
    /// Execs seen by the program.
    pub const EXECS: u32 = 0;
    /// Execs forwarded to the ring buffer.
    pub const FORWARDED: u32 = 1;
    /// `bpf_ringbuf_reserve` failed: an event was lost.
    pub const RINGBUF_FULL: u32 = 2;
    /// Reading the filename or another kernel read failed.
    pub const READ_FAILED: u32 = 3;
    /// `bpf_send_signal(SIGSTOP)` failed in strict mode.
    pub const SIGNAL_FAILED: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
}

#[cfg(feature = "user")]
pub mod user;
