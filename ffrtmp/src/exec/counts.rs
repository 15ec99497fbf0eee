//! Exec notices taken by the engine, by source: atomics the placement thread adds to and
//! the record loop reads for `/metrics`. No lock: a scrape never holds up a placement.

use std::sync::atomic::{AtomicU64, Ordering};

/// The sources counted by name; anything else is counted as `other`.
const NAMES: [&str; 4] = ["ebpf", "gate", "channel", "other"];

#[derive(Debug, Default)]
pub struct ExecCounts([AtomicU64; NAMES.len()]);

impl ExecCounts {
    /// One exec notice from `source`, taken by the engine.
    pub fn count(&self, source: &'static str) {
        let i = NAMES[..NAMES.len() - 1]
            .iter()
            .position(|n| *n == source)
            .unwrap_or(NAMES.len() - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (source, count) of every source that sent one.
    pub fn read(&self) -> Vec<(&'static str, u64)> {
        NAMES
            .iter()
            .zip(&self.0)
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    /// Taken from one source.
    pub fn of(&self, source: &str) -> u64 {
        self.read()
            .into_iter()
            .find(|(n, _)| *n == source)
            .map_or(0, |(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_source_and_the_rest_as_other() {
        let c = ExecCounts::default();
        c.count("ebpf");
        c.count("ebpf");
        c.count("replay");
        assert_eq!(c.read(), vec![("ebpf", 2), ("other", 1)]);
        assert_eq!(c.of("ebpf"), 2);
        assert_eq!(c.of("channel"), 0);
    }
}
