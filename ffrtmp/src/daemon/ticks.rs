//! The record loop's clocks: the scan interval (`scan_interval` when the scan is the
//! source, `reconcile_interval` beside an exec source), the state file's flush interval and
//! its coalescing delay, the watchdog's pings, the kernel's counters. One `next` awaits
//! whichever comes first.

use std::time::{Duration, Instant};

use tokio::time::{interval, interval_at, sleep_until, Interval, MissedTickBehavior};

use super::ScanRole;
use crate::config::Settings;

pub(super) enum Tick {
    Scan,
    Flush,
    Watchdog,
    Counters,
}

pub(super) struct Ticks {
    scan: Interval,
    flush: Interval,
    watchdog: Option<Interval>,
    counters: Option<Interval>,
}

/// How often the kernel's counters are read.
const COUNTERS_EVERY: Duration = Duration::from_millis(250);

fn every(period: Duration, from_now: bool) -> Interval {
    let mut i = if from_now {
        interval_at(tokio::time::Instant::now() + period, period)
    } else {
        interval(period)
    };
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// The scan period for a role.
pub(super) fn scan_period(s: &Settings, role: ScanRole) -> Duration {
    match role {
        ScanRole::Primary => s.scan_interval,
        ScanRole::Reconcile => s.reconcile_interval,
    }
}

impl Ticks {
    /// `watchdog`: half of WatchdogSec, when systemd watches; `counters`: whether a kernel
    /// source has counters to read.
    pub fn new(s: &Settings, role: ScanRole, watchdog: Option<Duration>, counters: bool) -> Self {
        Ticks {
            scan: every(scan_period(s, role), true),
            flush: every(s.state_flush_interval, true),
            watchdog: watchdog.map(|w| every(w, false)),
            counters: counters.then(|| every(COUNTERS_EVERY, false)),
        }
    }

    /// New settings: intervals that changed start over.
    pub fn reload(&mut self, s: &Settings, role: ScanRole) {
        let scan = scan_period(s, role);
        if scan != self.scan.period() {
            self.scan = every(scan, true);
        }
        if s.state_flush_interval != self.flush.period() {
            self.flush = every(s.state_flush_interval, true);
        }
    }

    /// The next tick; `flush_at`: when a coalesced state write is due, if one is.
    pub async fn next(&mut self, flush_at: Option<Instant>) -> Tick {
        tokio::select! {
            _ = self.scan.tick() => Tick::Scan,
            _ = self.flush.tick() => Tick::Flush,
            _ = sleep_until(flush_at.unwrap_or_else(Instant::now).into()), if flush_at.is_some() => Tick::Flush,
            _ = tick(&mut self.watchdog), if self.watchdog.is_some() => Tick::Watchdog,
            _ = tick(&mut self.counters), if self.counters.is_some() => Tick::Counters,
        }
    }
}

async fn tick(i: &mut Option<Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
