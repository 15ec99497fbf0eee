//! The daemon's counters, kept once: `/metrics` shows them as they are (since this daemon
//! started), the state file's `statistics` are them plus what the state file said at start
//! (`Tally::statistics`), so a restart never loses a total and nothing is booked twice.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::state::Statistics;

/// Upper bounds of the exec → placed latency histogram, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the scan duration histogram, seconds.
pub const SCAN_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A cumulative histogram.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// From counts per bucket (not cumulative) kept elsewhere: `count` includes values
    /// above the last bound.
    pub fn from_buckets(bounds: &'static [f64], per_bucket: &[u64], sum: f64, count: u64) -> Self {
        let mut total = 0;
        let counts = (bounds.iter().zip(per_bucket))
            .map(|(_, n)| {
                total += n;
                total
            })
            .collect();
        Histogram {
            bounds,
            counts,
            sum,
            count,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// A plain counter of the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Count {
    /// Targets found and decided to be governed.
    Discovered,
    /// Events a source lost.
    EventsLost,
    /// Kernel records that could not be decoded.
    Undecodable,
    /// Limits not applied.
    LimitFailures,
    /// Governed processes moved out by another writer (and back).
    DriftCorrections,
    /// Strict targets resumed unplaced after `strict_timeout`.
    StrictTimeouts,
    /// Candidates the scans found (an exec source of their own in `/metrics`).
    ScanCandidates,
    /// Processes placed at the exec gate looked at again after their exec.
    GateExecsChecked,
}

/// Results of `ffrtmp_placements_total` shown from the start (at 0), so that the first
/// of each is an increase a rule can see.
pub const PLACEMENT_RESULTS: [&str; 6] = [
    "placed",
    "partial",
    "failed",
    "vanished",
    "retried",
    "moved_back",
];
/// Likewise for `ffrtmp_skipped_total`.
pub const SKIP_REASONS: [&str; 4] = ["container", "filtered", "too_old", "ffrtmp_run"];

#[derive(Debug, Clone)]
pub struct Tally {
    counts: BTreeMap<Count, u64>,
    placements: BTreeMap<&'static str, u64>,
    skipped: BTreeMap<&'static str, u64>,
    /// Exec → verified move, seconds.
    pub exec_to_placed: Histogram,
    /// One scan pass, seconds (its count is the number of scans done).
    pub scan_duration: Histogram,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            counts: BTreeMap::new(),
            placements: PLACEMENT_RESULTS.iter().map(|r| (*r, 0)).collect(),
            skipped: SKIP_REASONS.iter().map(|r| (*r, 0)).collect(),
            exec_to_placed: Histogram::new(LATENCY_BUCKETS),
            scan_duration: Histogram::new(SCAN_BUCKETS),
        }
    }
}

impl Tally {
    pub fn add(&mut self, c: Count, n: u64) {
        *self.counts.entry(c).or_default() += n;
    }

    pub fn get(&self, c: Count) -> u64 {
        self.counts.get(&c).copied().unwrap_or(0)
    }

    /// One placement by result (`placed`, `partial`, `failed`, `vanished`, `retried`).
    pub fn placement(&mut self, result: &'static str) {
        *self.placements.entry(result).or_default() += 1;
    }

    pub fn placements(&self) -> &BTreeMap<&'static str, u64> {
        &self.placements
    }

    /// One counted skip by reason label.
    pub fn skip(&mut self, reason: &'static str) {
        *self.skipped.entry(reason).or_default() += 1;
    }

    pub fn skipped(&self) -> &BTreeMap<&'static str, u64> {
        &self.skipped
    }

    /// Scans done.
    pub fn scans(&self) -> u64 {
        self.scan_duration.count()
    }

    fn placed(&self, result: &str) -> u64 {
        self.placements.get(result).copied().unwrap_or(0)
    }

    /// The state file's totals: `base` (what the file said at start) plus this tally.
    pub fn statistics(&self, base: &Statistics) -> Statistics {
        Statistics {
            total_scans: base.total_scans + self.scans(),
            total_discovered: base.total_discovered + self.get(Count::Discovered),
            total_attachments: base.total_attachments
                + self.placed("placed")
                + self.placed("partial"),
            total_placement_failures: base.total_placement_failures + self.placed("failed"),
            total_limit_failures: base.total_limit_failures + self.get(Count::LimitFailures),
            total_drift_corrections: base.total_drift_corrections
                + self.get(Count::DriftCorrections),
            total_events_lost: base.total_events_lost + self.get(Count::EventsLost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&[0.001, 0.01]);
        for v in [0.0005, 0.005, 0.5] {
            h.observe(v);
        }
        let mut s = String::new();
        h.render(&mut s, "x", "h");
        assert!(s.contains("x_bucket{le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.01\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"));
    }

    #[test]
    fn the_state_files_totals_are_the_base_plus_the_tally() {
        let mut t = Tally::default();
        t.add(Count::Discovered, 2);
        t.placement("placed");
        t.placement("partial");
        t.placement("failed");
        t.add(Count::LimitFailures, 1);
        t.scan_duration.observe(0.01);
        let base = Statistics {
            total_scans: 10,
            total_attachments: 5,
            ..Default::default()
        };
        let s = t.statistics(&base);
        assert_eq!(s.total_scans, 11);
        assert_eq!(s.total_discovered, 2);
        assert_eq!(s.total_attachments, 7);
        assert_eq!(s.total_placement_failures, 1);
        assert_eq!(s.total_limit_failures, 1);
        assert_eq!(
            t.placements()["vanished"],
            0,
            "every result is shown from 0"
        );
    }
}
