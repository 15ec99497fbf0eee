//! The program's maps, shared by every hook, and the failure counters.
//!
//! User space owns the contents of `TARGETS` and `SETTINGS`, may resize `EVENTS` at load
//! time (`EbpfLoader::map_max_entries`), pins `STOPPED` in bpffs so that the stops it
//! records outlive a daemon that dies, and sets `OFFSETS` from the kernel's BTF.

use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, LruHashMap, RingBuf},
};
use ffrtmp_common::{
    counter, KernelOffsets, KernelSettings, StopKey, StopValue, TargetKey, TargetValue,
    STOPPED_ENTRIES,
};

/// Default ring size. User space sizes it for the rate it expects (docs/ebpf.md).
pub const EVENTS_DEFAULT_BYTES: u32 = 256 << 10;
/// Default capacity of the target table.
pub const TARGETS_DEFAULT_ENTRIES: u32 = 1024;

/// `ExecEvent` records for the agent.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_DEFAULT_BYTES, 0);

/// Name (comm, exe or argv[0] basename; NUL-padded, cut to 15 bytes) → what to do on exec.
#[map(name = "TARGETS")]
pub static TARGETS: HashMap<TargetKey, TargetValue> =
    HashMap::with_max_entries(TARGETS_DEFAULT_ENTRIES, 0);

/// Single element: global switches set by the agent.
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<KernelSettings> = Array::with_max_entries(1, 0);

/// `counter::*` indices, `counter::STRIDE` entries per CPU; user space sets the size (one
/// stride per possible CPU) at load time and sums the CPUs. Memory-mapped
/// (`BPF_F_MMAPABLE`, Linux 5.5+): user space reads it without a system call. A map lookup
/// by system call marks the CPU as running BPF for its length
/// (`bpf_disable_instrumentation`); a preemptible kernel (Debian's 7.x) can switch to a task
/// that execs in that window, and the kernel then skips this program for that exec
/// (`trace_call_bpf`; `bpf_prog_info.recursion_misses`). A per-CPU array can only be read by
/// system call, so the record loop's reads every 250 ms could make the kernel skip execs
/// (the likely cause of one burst target of 60 not forwarded on 7.3 in CI).
#[map(name = "COUNTERS")]
pub static COUNTERS: Array<u64> =
    Array::with_max_entries(counter::STRIDE, counter::MAP_FLAGS);

/// The ledger of strict stops: (process, start time) → when it was stopped. An entry is
/// written before the SIGSTOP and removed by whoever resumes the process.
#[map(name = "STOPPED")]
pub static STOPPED: HashMap<StopKey, StopValue> = HashMap::with_max_entries(STOPPED_ENTRIES, 0);

/// Processes the agent placed while the exec gate held their exec (tgid → when, the
/// agent's CLOCK_MONOTONIC ns): their exec event follows, and a strict target among them is
/// not stopped, as it runs nothing outside its cgroup. Read and removed at that event; an
/// exec that failed after the gate leaves an entry the LRU evicts.
#[map(name = "GATED")]
pub static GATED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(GATED_ENTRIES, 0);

/// Capacity of `GATED`.
pub const GATED_ENTRIES: u32 = 4096;

/// Member offsets of kernel structures, set by user space from BTF at load time.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    bprm_filename: 0,
    task_start_boottime: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_mm: 0,
    mm_exe_file: 0,
    mm_arg_start: 0,
    file_dentry: 0,
    dentry_name: 0,
    task_thread_pid: 0,
    pid_level: 0,
};

/// One field of `OFFSETS`, read so that the compiler keeps the load-time value instead of
/// folding the zero it was compiled with.
#[inline(always)]
pub fn offset(field: fn(&KernelOffsets) -> &u32) -> usize {
    // SAFETY: a volatile read of a field of a static that lives as long as the program.
    unsafe { core::ptr::read_volatile(field(&OFFSETS)) as usize }
}

/// Whether user space found every offset of the `OFFSETS_*` group `bit`.
#[inline(always)]
pub fn offsets_valid(bit: u32) -> bool {
    offset(|o| &o.valid) as u32 & bit != 0
}

/// Add one to counter `index` on this CPU. Its own cache line, and no atomics needed: the
/// kernel never runs the program twice at once on one CPU (it skips the second run and
/// counts it in `bpf_prog_info.recursion_misses`, which the agent reads; see `exec.rs`).
#[inline(always)]
pub fn count(index: u32) {
    // SAFETY: a helper without arguments; the program runs with migration disabled, so the
    // CPU stays the same until it returns.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(p) = COUNTERS.get_ptr_mut(cpu * counter::STRIDE + index) {
        // SAFETY: the pointer comes from a successful map lookup of this CPU's slot.
        unsafe { *p += 1 };
    }
}

/// True when the agent asked for every exec (its own matcher decides).
#[inline(always)]
pub fn forward_all() -> bool {
    match SETTINGS.get(0) {
        Some(s) => s.forward_all != 0,
        None => false,
    }
}
