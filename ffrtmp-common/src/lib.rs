//! Types shared by the kernel program (`ffrtmp-ebpf`) and the agent (`ffrtmp`).
//!
//! Everything here is `#[repr(C)]`, has no `bool` and no implicit padding, and its size
//! is asserted at compile time, so both sides agree on the bytes in the ring buffer and
//! in the maps. `EVENT_ABI` names this layout: the kernel object carries it as the symbol
//! `FFRTMP_EVENT_ABI`, and the agent refuses an object whose number differs.
#![no_std]

/// Version of the layout of every type in this crate. Bump it with any change to them.
pub const EVENT_ABI: u32 = 2;

/// Bytes of a task's comm, including the terminating NUL (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of the exec'd filename carried in an event (truncated beyond this).
pub const FILENAME_LEN: usize = 256;
/// Bytes of argv[0] the kernel program looks at to find its basename.
pub const ARGV0_SCAN: usize = 128;

/// `ExecEvent::flags`: the key that matched was a 15-byte prefix of a longer target name;
/// user space must confirm the full name.
pub const EXEC_FLAG_PREFIX_MATCH: u32 = 1 << 0;
/// `ExecEvent::flags`: the filename did not fit and was cut at `FILENAME_LEN - 1` bytes.
pub const EXEC_FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;
/// `ExecEvent::flags`: the kernel stopped the process (SIGSTOP) for strict placement and
/// recorded the stop in `STOPPED`; the agent must resume it whatever happens.
pub const EXEC_FLAG_STOPPED: u32 = 1 << 2;
/// `ExecEvent::flags`: reading the filename failed; `filename` is empty.
pub const EXEC_FLAG_FILENAME_FAILED: u32 = 1 << 3;
/// `ExecEvent::flags`: the event was forwarded because the kernel filter is off (every exec).
pub const EXEC_FLAG_UNFILTERED: u32 = 1 << 4;
/// `ExecEvent::flags`: the comm was the key that matched a target.
pub const EXEC_FLAG_MATCH_COMM: u32 = 1 << 5;
/// `ExecEvent::flags`: the basename of the exe (the file really executed, after symlinks)
/// was the key that matched.
pub const EXEC_FLAG_MATCH_EXE: u32 = 1 << 6;
/// `ExecEvent::flags`: the basename of argv[0] was the key that matched.
pub const EXEC_FLAG_MATCH_ARGV0: u32 = 1 << 7;
/// `ExecEvent::flags`: `exe_name` is the first 15 bytes of a longer name.
pub const EXEC_FLAG_EXE_TRUNCATED: u32 = 1 << 8;
/// `ExecEvent::flags`: `argv0_name` is the first 15 bytes of a longer name, or argv[0] was
/// longer than `ARGV0_SCAN` bytes and its basename may lie beyond them.
pub const EXEC_FLAG_ARGV0_TRUNCATED: u32 = 1 << 9;
/// `ExecEvent::flags`: the exe name could not be read (unknown offsets or a failed read).
pub const EXEC_FLAG_EXE_FAILED: u32 = 1 << 10;
/// `ExecEvent::flags`: argv[0] could not be read.
pub const EXEC_FLAG_ARGV0_FAILED: u32 = 1 << 11;
/// `ExecEvent::flags`: a strict target whose stop failed (recording or signalling it):
/// it runs, and is placed like a normal one.
pub const EXEC_FLAG_STOP_FAILED: u32 = 1 << 12;
/// `ExecEvent::flags`: `start_ns`, `ppid` and `pidns_level` are unknown (no offsets).
pub const EXEC_FLAG_TASK_FAILED: u32 = 1 << 13;

/// One exec seen by the kernel program, as written into the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    /// `bpf_ktime_get_ns()` at exec (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// `task->start_boottime` (CLOCK_BOOTTIME ns): with `tgid`, the process's identity;
    /// `/proc/PID/stat` shows it in clock ticks. 0 when unknown.
    pub start_ns: u64,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (1 on a v1-only host).
    pub cgroup_id: u64,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id of the exec'ing thread (equals `tgid` after exec).
    pub pid: u32,
    /// `task->real_parent->tgid`; 0 when unknown.
    pub ppid: u32,
    /// Real uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// `EXEC_FLAG_*` bits.
    pub flags: u32,
    /// Length of `filename` without its NUL.
    pub filename_len: u32,
    /// Depth of the process's PID namespace (0: the host's); `u32::MAX` when unknown.
    pub pidns_level: u32,
    /// The new comm, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// Basename of the exe (`mm->exe_file`), first 15 bytes, NUL-padded.
    pub exe_name: [u8; COMM_LEN],
    /// Basename of argv[0], first 15 bytes, NUL-padded.
    pub argv0_name: [u8; COMM_LEN],
    /// The exec'd path as given to execve, NUL-terminated.
    pub filename: [u8; FILENAME_LEN],
}

/// Size of `ExecEvent` in the ring buffer.
pub const EXEC_EVENT_SIZE: usize = 360;
const _: () = assert!(core::mem::size_of::<ExecEvent>() == EXEC_EVENT_SIZE);
const _: () = assert!(core::mem::align_of::<ExecEvent>() == 8);

/// Key of the kernel's target map: a name (comm, exe or argv[0] basename), NUL-padded to
/// `COMM_LEN` (targets longer than 15 bytes are cut to 15, like the kernel cuts comm).
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

/// The kernel's settings array (single element).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct KernelSettings {
    /// 1 = forward every exec (user space matches everything), 0 = only map hits.
    pub forward_all: u32,
    pub _reserved: u32,
}
const _: () = assert!(core::mem::size_of::<KernelSettings>() == 8);

/// Byte offsets of the kernel structure members the program reads, taken by user space
/// from the running kernel's BTF and set as the global `OFFSETS` at load time (Rust BPF
/// has no CO-RE). A group whose `OFFSETS_*` bit is missing from `valid` is not read.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub valid: u32,
    /// `linux_binprm.filename`.
    pub bprm_filename: u32,
    /// `task_struct.start_boottime`, `.real_parent`, `.tgid`.
    pub task_start_boottime: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    /// `task_struct.mm`, `mm_struct.exe_file`, `mm_struct.arg_start`.
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    /// `file.f_path` + `path.dentry`.
    pub file_dentry: u32,
    /// `dentry.d_name` + `qstr.name`.
    pub dentry_name: u32,
    /// `task_struct.thread_pid`, `pid.level`.
    pub task_thread_pid: u32,
    pub pid_level: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 48);

/// `KernelOffsets::valid`: `bprm_filename` (tp_btf hook).
pub const OFFSETS_BPRM: u32 = 1 << 0;
/// `KernelOffsets::valid`: start time, parent and tgid.
pub const OFFSETS_IDENTITY: u32 = 1 << 1;
/// `KernelOffsets::valid`: the exe's name.
pub const OFFSETS_EXE: u32 = 1 << 2;
/// `KernelOffsets::valid`: argv[0].
pub const OFFSETS_ARGV0: u32 = 1 << 3;
/// `KernelOffsets::valid`: the PID namespace level.
pub const OFFSETS_PIDNS: u32 = 1 << 4;

/// Key of `STOPPED`, the ledger of processes the kernel stopped for strict placement.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StopKey {
    pub tgid: u32,
    pub _pad: u32,
    /// `ExecEvent::start_ns` of the stopped process.
    pub start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<StopKey>() == 16);

/// Value of `STOPPED`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct StopValue {
    /// `bpf_ktime_get_ns()` when the process was stopped.
    pub ktime_ns: u64,
}
const _: () = assert!(core::mem::size_of::<StopValue>() == 8);

/// Capacity of `STOPPED`. A strict target is stopped only once its stop is recorded; when
/// the ledger is full it runs and is placed like a normal target (`STOP_FAILED`).
pub const STOPPED_ENTRIES: u32 = 4096;

/// Indices into the counter array (`COUNTERS`, memory-mapped by the agent): CPU `c`'s
/// counter `i` is entry `c * STRIDE + i`.
pub mod counter {
    /// Entries per CPU: one 64-byte cache line, so no two CPUs add to the same line.
    pub const STRIDE: u32 = 8;
    /// `BPF_F_MMAPABLE` (uapi/linux/bpf.h): the map's values can be mmap'ed by user space.
    pub const MAP_FLAGS: u32 = 1 << 10;
    /// Execs seen by the program.
    pub const EXECS: u32 = 0;
    /// Execs forwarded to the ring buffer.
    pub const FORWARDED: u32 = 1;
    /// `bpf_ringbuf_reserve` failed: an event was lost.
    pub const RINGBUF_FULL: u32 = 2;
    /// An exec could not be looked at (its comm could not be read): a lost event. Reads
    /// whose failure only leaves a field empty are flagged in the event, not counted.
    pub const READ_FAILED: u32 = 3;
    /// A strict target was not stopped: `bpf_send_signal(SIGSTOP)` failed or the stop
    /// could not be recorded in `STOPPED`.
    pub const SIGNAL_FAILED: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
    const _: () = assert!(COUNT <= STRIDE);
}

#[cfg(feature = "user")]
pub mod user;
