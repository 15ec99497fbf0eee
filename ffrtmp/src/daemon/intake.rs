//! Outcomes held before they are written down. Writing one down (log lines, the journal,
//! the exit watch, metrics) would take the CPU beside the target that has just been placed,
//! or from the next placement, so outcomes wait for the same pause in placements as chores
//! (`quiet`), at most `chores::MAX_WAIT` or `HELD_MAX` outcomes. Whatever reads the journal
//! takes in what is held first (`take`), so nothing acts on a journal behind the engine's
//! table.

use std::time::{Duration, Instant};

use super::chores::{Activity, MAX_WAIT};
use crate::engine::Outcome;

/// Outcomes held at most this many before they are written down regardless of the pause.
const HELD_MAX: usize = 256;

pub struct Intake {
    held: Vec<Outcome>,
    /// When the oldest held outcome arrived.
    since: Option<Instant>,
    /// When the engine last reported (also read by the chore runner).
    activity: Activity,
    last: Instant,
    quiet: Duration,
}

impl Intake {
    pub fn new(quiet: Duration, activity: Activity) -> Intake {
        Intake {
            held: Vec::new(),
            since: None,
            activity,
            last: Instant::now(),
            quiet,
        }
    }

    /// An outcome arrived; `true` when so many are held that they must be written now.
    pub fn hold(&mut self, o: Outcome) -> bool {
        let now = Instant::now();
        self.last = now;
        self.activity.stamp();
        self.since.get_or_insert(now);
        self.held.push(o);
        self.held.len() >= HELD_MAX
    }

    /// When the held outcomes are due (placements paused, or the oldest waited enough).
    pub fn due(&self) -> Option<Instant> {
        self.since
            .map(|since| (self.last + self.quiet).min(since + MAX_WAIT))
    }

    /// Every held outcome, in the order the engine sent them, and since when the oldest
    /// waited (what they queue counts its wait from then).
    pub fn take(&mut self) -> Option<(Instant, Vec<Outcome>)> {
        let since = self.since.take()?;
        Some((since, std::mem::take(&mut self.held)))
    }
}
