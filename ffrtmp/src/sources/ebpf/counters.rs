//! The kernel program's counters, read by the record loop every 250 ms: they go to
//! `/metrics`, and when they show lost events or strict targets the kernel could not stop,
//! the daemon reconciles or warns.
//!
//! They are read from memory (the map is `BPF_F_MMAPABLE` and mapped here), never by a
//! system call: a map lookup marks its CPU as running BPF for its length, and a preemptible
//! kernel that switches to a task exec'ing there skips the exec hook for it (`maps.rs` in
//! the kernel crate). A lookup every 250 ms is the likely cause of one burst target of 60
//! not forwarded on 7.3 in CI.
//!
//! Beside the program's own counters, the kernel keeps one of its own per program: the
//! runs it skipped (`recursion_misses` of `bpf_prog_info`, Linux 5.12+). The kernel skips
//! the hook when the program is already running on that CPU (a kernel that runs it
//! preemptibly: `tp_btf` on 7.x, see `exec.rs` in the kernel crate). An exec it skipped
//! was not looked at and may have been a target, so the daemon reconciles; most are not
//! targets, so they are counted apart from lost events (no warning, no `events_lost`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sources::{CounterReading, KernelTotals};
use aya::maps::{Array, Map, MapData};
use ffrtmp_common::counter;

/// Lost-event accounting from the kernel's cumulative counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LossTracker {
    pub reported: u64,
    pub stop_failures: u64,
    pub skips: u64,
}

impl LossTracker {
    /// How many events were lost since the last call, given the kernel's totals.
    pub fn newly_lost(&mut self, ringbuf_full: u64, read_failed: u64) -> u64 {
        newly(&mut self.reported, ringbuf_full + read_failed)
    }

    /// How many more strict targets the kernel could not stop.
    pub fn newly_unstopped(&mut self, signal_failed: u64) -> u64 {
        newly(&mut self.stop_failures, signal_failed)
    }

    /// How many more execs the kernel skipped the hook for.
    pub fn newly_skipped(&mut self, skipped: u64) -> u64 {
        newly(&mut self.skips, skipped)
    }
}

/// The growth of a cumulative `total` since `seen`, which then takes it (a total that went
/// down, as a reloaded program's would, reports nothing).
fn newly(seen: &mut u64, total: u64) -> u64 {
    let new = total.saturating_sub(*seen);
    *seen = (*seen).max(total);
    new
}

// A 64-bit atomic load may be a compare-and-swap on a 32-bit target, which a read-only
// mapping would fault.
const _: () = assert!(
    cfg!(target_pointer_width = "64"),
    "MappedCounters needs a 64-bit target"
);

/// The possible CPUs (`/sys/devices/system/cpu/possible`): the kernel program counts on
/// each in a stride of its own.
fn cpus() -> Result<usize, String> {
    aya::util::nr_cpus().map_err(|(path, e)| format!("cannot read {path}: {e}"))
}

/// `COUNTERS`' size, set at load: a stride for each possible CPU.
pub(super) fn entries() -> Result<u32, super::EbpfError> {
    let detail = |what: String| super::EbpfError::Load {
        detail: format!("COUNTERS: {what}"),
    };
    let n = cpus().map_err(detail)?;
    u32::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(counter::STRIDE))
        .ok_or_else(|| detail(format!("{n} possible CPUs")))
}

/// The kernel program's `COUNTERS` array, mapped read-only into this process.
pub struct MappedCounters {
    base: NonNull<AtomicU64>,
    bytes: usize,
    cpus: usize,
    /// The map the mapping shows (the mapping holds it too).
    _map: MapData,
}

// SAFETY: the mapping is only read, with atomic loads, and lives until `drop`.
unsafe impl Send for MappedCounters {}

impl MappedCounters {
    /// Maps the `COUNTERS` map of a loaded object, or says why it cannot be.
    pub fn new(map: Map) -> Result<Self, String> {
        let stale = |what: String| {
            format!(
                "COUNTERS: {what} (the embedded object does not match this ffrtmp: rebuild both)"
            )
        };
        Array::<&MapData, u64>::try_from(&map).map_err(|e| stale(super::error::chain_text(&e)))?;
        let Map::Array(data) = map else {
            return Err(stale("not an array".into()));
        };
        let info = data.info().map_err(|e| {
            let e = super::error::chain_text(&e);
            format!("COUNTERS: the kernel does not describe the map: {e}")
        })?;
        let cpus = cpus().map_err(|e| format!("COUNTERS: {e}"))?;
        let entries = cpus * counter::STRIDE as usize;
        if (info.max_entries() as usize) < entries {
            let n = info.max_entries();
            return Err(stale(format!("{n} entries, {entries} needed")));
        }
        if info.map_flags() & counter::MAP_FLAGS == 0 {
            return Err(stale("not memory-mappable (BPF_F_MMAPABLE)".into()));
        }
        let page = rustix::param::page_size();
        let bytes = (entries * 8).div_ceil(page) * page;
        // SAFETY: a new shared read-only mapping of the map's values, which the kernel sizes
        // to whole pages; nothing else is mapped at the address it picks.
        let at = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                bytes,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                data.fd().as_fd(),
                0,
            )
        }
        .map_err(|e| {
            format!("COUNTERS: the kernel's counters cannot be mapped into memory: {e}")
        })?;
        let base = NonNull::new(at.cast::<AtomicU64>())
            .ok_or_else(|| "COUNTERS: mapped at address 0".to_string())?;
        Ok(MappedCounters {
            base,
            bytes,
            cpus,
            _map: data,
        })
    }

    /// Counter `index`, summed over the CPUs.
    pub fn get(&self, index: u32) -> u64 {
        assert!(index < counter::COUNT, "counter {index} out of range");
        (0..self.cpus)
            .map(|cpu| {
                let at = cpu * counter::STRIDE as usize + index as usize;
                // SAFETY: `at` is within the mapped entries (checked in `new`), which stay
                // mapped as long as `self` lives. A relaxed 8-byte atomic load of read-only
                // memory is a plain load on 64-bit targets (asserted above).
                unsafe { self.base.add(at).as_ref() }.load(Ordering::Relaxed)
            })
            .sum()
    }
}

impl Drop for MappedCounters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; nothing borrows from it past here.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

pub struct KernelCounters {
    map: MappedCounters,
    /// The attached program (a duplicate of its descriptor), for the kernel's skip count.
    prog: Option<OwnedFd>,
    /// The last skip count the kernel gave (a failed query keeps it).
    skipped: Option<u64>,
    loss: LossTracker,
}

impl KernelCounters {
    pub(super) fn new(map: MappedCounters, prog: Option<OwnedFd>) -> Self {
        KernelCounters {
            map,
            prog,
            skipped: None,
            loss: LossTracker::default(),
        }
    }

    fn counter(&self, index: u32) -> u64 {
        self.map.get(index)
    }
}

impl crate::sources::CounterSource for KernelCounters {
    fn read(&mut self) -> CounterReading {
        if let Some(n) = self.prog.as_ref().and_then(recursion_misses) {
            self.skipped = Some(n);
        }
        let totals = KernelTotals {
            execs: self.counter(counter::EXECS),
            forwarded: self.counter(counter::FORWARDED),
            ring_full: self.counter(counter::RINGBUF_FULL),
            read_failed: self.counter(counter::READ_FAILED),
            stop_failed: self.counter(counter::SIGNAL_FAILED),
            skipped: self.skipped,
        };
        CounterReading {
            totals,
            lost: self.loss.newly_lost(totals.ring_full, totals.read_failed),
            skipped: self.loss.newly_skipped(totals.skipped.unwrap_or(0)),
            unstopped: self.loss.newly_unstopped(totals.stop_failed),
        }
    }
}

/// The head of the kernel's `struct bpf_prog_info` (uapi/linux/bpf.h, append-only ABI) up
/// to `recursion_misses`; the kernel fills what it has and says how much in `info_len`.
#[repr(C)]
#[derive(Default)]
struct ProgInfoHead {
    _before: [u64; 26],
    recursion_misses: u64,
}

/// `recursion_misses` of the program, or None on a kernel without it (before 5.12) or when
/// the query fails.
fn recursion_misses(prog: &OwnedFd) -> Option<u64> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = ProgInfoHead::default();
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfoHead>() as u32,
        info: &mut info as *mut ProgInfoHead as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    let filled = std::mem::offset_of!(ProgInfoHead, recursion_misses) + 8;
    (r == 0 && attr.info_len as usize >= filled).then_some(info.recursion_misses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursion_misses_sits_where_the_kernel_puts_it() {
        // uapi/linux/bpf.h: run_time_ns at 192, run_cnt at 200, recursion_misses at 208.
        assert_eq!(std::mem::offset_of!(ProgInfoHead, recursion_misses), 208);
    }

    #[test]
    fn losses_and_failed_stops_are_reported_once() {
        let mut t = LossTracker::default();
        assert_eq!(t.newly_lost(0, 0), 0);
        assert_eq!(t.newly_lost(3, 0), 3);
        assert_eq!(
            t.newly_lost(3, 0),
            0,
            "the same total is not reported twice"
        );
        assert_eq!(t.newly_lost(3, 2), 2);
        assert_eq!(t.newly_skipped(4), 4);
        assert_eq!(t.newly_skipped(4), 0);
        assert_eq!(t.newly_lost(3, 2), 0, "skips are not losses");
        assert_eq!(t.newly_unstopped(0), 0);
        assert_eq!(t.newly_unstopped(2), 2);
        assert_eq!(t.newly_unstopped(2), 0);
    }
}
