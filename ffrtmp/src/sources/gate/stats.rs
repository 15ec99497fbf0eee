//! The gate's counters: atomics the gate thread and the engine (which answers most held
//! execs) add to, and the record loop reads for `/metrics`. No lock.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::process::gated::Answer;

/// Upper bounds of the hold time histogram (event read → answer), seconds.
pub const HOLD_BUCKETS: [f64; 13] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,
];

/// The outcomes answers are counted by.
const ANSWERS: [&str; 3] = ["placed", "unplaced", "late"];

#[derive(Debug, Default)]
pub struct GateStats {
    /// Execs held and handed to the engine.
    pub held: AtomicU64,
    /// Answers by outcome, in `ANSWERS` order.
    answers: [AtomicU64; 3],
    /// Execs let go at once: the hot queue was full, or the inode was not a target's.
    pub passed: AtomicU64,
    pub overflows: AtomicU64,
    pub marks: AtomicU64,
    pub remarks: AtomicU64,
    /// Groups the watchdog let go of (the gate thread was stuck).
    pub releases: AtomicU64,
    /// Hold time (read → answer): one count per bucket of `HOLD_BUCKETS`, and the sum.
    hold: [AtomicU64; HOLD_BUCKETS.len()],
    hold_sum_ns: AtomicU64,
}

/// What one read of the counters says.
#[derive(Debug, Clone)]
pub struct GateTotals {
    pub held: u64,
    /// Answers by outcome: placed, unplaced, late.
    pub answers: [(&'static str, u64); 3],
    pub passed: u64,
    pub overflows: u64,
    pub marks: u64,
    pub remarks: u64,
    pub releases: u64,
    /// Answers per bucket of `HOLD_BUCKETS` (not cumulative), and their sum in ns.
    pub hold_buckets: Vec<u64>,
    pub hold_sum_ns: u64,
}

impl GateStats {
    pub fn answered(&self, a: Answer, held_ns: u64) {
        let i = match a {
            Answer::Placed => 0,
            Answer::Unplaced => 1,
            Answer::Late => 2,
        };
        self.answers[i].fetch_add(1, Ordering::Relaxed);
        let secs = held_ns as f64 / 1e9;
        if let Some(i) = HOLD_BUCKETS.iter().position(|b| secs <= *b) {
            self.hold[i].fetch_add(1, Ordering::Relaxed);
        }
        self.hold_sum_ns.fetch_add(held_ns, Ordering::Relaxed);
    }

    pub fn read(&self) -> GateTotals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let answers = [0, 1, 2].map(|i| (ANSWERS[i], get(&self.answers[i])));
        GateTotals {
            held: get(&self.held),
            answers,
            passed: get(&self.passed),
            overflows: get(&self.overflows),
            marks: get(&self.marks),
            remarks: get(&self.remarks),
            releases: get(&self.releases),
            hold_buckets: self.hold.iter().map(get).collect(),
            hold_sum_ns: get(&self.hold_sum_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_outcome_with_their_hold_time() {
        let s = GateStats::default();
        s.answered(Answer::Placed, 40_000); // 40 µs
        s.answered(Answer::Late, 200_000_000); // 200 ms
        let t = s.read();
        assert_eq!(t.answers, [("placed", 1), ("unplaced", 0), ("late", 1)]);
        assert_eq!(t.hold_buckets[1], 1);
        assert_eq!(t.hold_buckets[12], 1);
        assert_eq!(t.hold_buckets.iter().sum::<u64>(), 2);
        assert_eq!(t.hold_sum_ns, 200_040_000);
    }
}
