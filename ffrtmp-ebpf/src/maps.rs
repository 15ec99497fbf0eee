//! The program's maps, shared by every hook, and the failure counters.
//!
//! User space owns the contents of `TARGETS` and `SETTINGS` and may resize `EVENTS` and
//! `TARGETS` at load time (`EbpfLoader::set_max_entries`), so the sizes here are defaults.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use ffrtmp_common::{counter, KernelSettings, TargetKey, TargetValue};

/// Default ring size: 4 MiB holds about 13 000 events of 312 bytes (+8 header each).
pub const EVENTS_DEFAULT_BYTES: u32 = 4 << 20;
/// Default capacity of the target table.
pub const TARGETS_DEFAULT_ENTRIES: u32 = 1024;

/// `ExecEvent` records for the agent.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_DEFAULT_BYTES, 0);

/// comm (NUL-padded, cut to 15 bytes like the kernel cuts it) → what to do on exec.
#[map(name = "TARGETS")]
pub static TARGETS: HashMap<TargetKey, TargetValue> =
    HashMap::with_max_entries(TARGETS_DEFAULT_ENTRIES, 0);

/// Single element: global switches set by the agent.
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<KernelSettings> = Array::with_max_entries(1, 0);

/// `counter::*` indices; user space sums the per-CPU values.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Add one to counter `index` on this CPU. Per-CPU, so no atomics are needed; a program
/// is not preempted by itself on the same CPU (tracepoint programs run with migration off).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
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
