//! The kernel program's per-CPU counters, read by the record loop every 250 ms: they go to
//! `/metrics`, and when they show lost events or strict targets the kernel could not stop,
//! the daemon reconciles or warns.

use aya::maps::{MapData, PerCpuArray};
use ffrtmp_common::counter;

/// Lost-event accounting from the kernel's cumulative counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LossTracker {
    pub reported: u64,
    pub stop_failures: u64,
}

impl LossTracker {
    /// How many events were lost since the last call, given the kernel's totals.
    pub fn newly_lost(&mut self, ringbuf_full: u64, read_failed: u64) -> u64 {
        let lost = ringbuf_full + read_failed;
        let new = lost.saturating_sub(self.reported);
        self.reported = self.reported.max(lost);
        new
    }

    /// How many more strict targets the kernel could not stop.
    pub fn newly_unstopped(&mut self, signal_failed: u64) -> u64 {
        let new = signal_failed.saturating_sub(self.stop_failures);
        self.stop_failures = self.stop_failures.max(signal_failed);
        new
    }
}

/// What one read of the counters says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterReading {
    /// `[execs, forwarded, ring full, read failures, stop failures]`, cumulative.
    pub totals: [u64; 5],
    /// Events lost since the last read.
    pub lost: u64,
    /// Strict targets not stopped since the last read.
    pub unstopped: u64,
}

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
    loss: LossTracker,
}

impl KernelCounters {
    pub(super) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        KernelCounters {
            map,
            loss: LossTracker::default(),
        }
    }

    fn counter(&self, index: u32) -> u64 {
        self.map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    pub fn read(&mut self) -> CounterReading {
        let totals = [
            self.counter(counter::EXECS),
            self.counter(counter::FORWARDED),
            self.counter(counter::RINGBUF_FULL),
            self.counter(counter::READ_FAILED),
            self.counter(counter::SIGNAL_FAILED),
        ];
        let [_, _, full, read, signal] = totals;
        CounterReading {
            totals,
            lost: self.loss.newly_lost(full, read),
            unstopped: self.loss.newly_unstopped(signal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(t.newly_unstopped(0), 0);
        assert_eq!(t.newly_unstopped(2), 2);
        assert_eq!(t.newly_unstopped(2), 0);
    }
}
