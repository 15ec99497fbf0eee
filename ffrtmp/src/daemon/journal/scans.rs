//! What the journal writes down when a scan pass is back: candidates to the engine,
//! governed processes seen or gone, drift and limits corrected, leftovers removed, untracked
//! jobs to take back, and the pass's log lines.

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::{Effect, Effects, Journal};
use crate::config::units::format_go_duration;
use crate::daemon::limits::LimitFix;
use crate::daemon::scanner::{Drift, ScanReport};
use crate::exec::Work;
use crate::record::tally::Count;

impl Journal {
    /// A scan pass is back.
    pub fn scanned(&mut self, r: ScanReport, fx: &mut Effects) {
        for w in &r.warnings {
            warn!("{w}");
        }
        let outcome = match r.outcome {
            Ok(o) => o,
            Err(e) => {
                error!("Scan failed: cannot list /proc: {e}");
                if self.health.scan(false).is_some() {
                    self.log_health();
                }
                return;
            }
        };
        self.stored.last_scan_at = Some(Utc::now());
        self.tally
            .scan_duration
            .observe(outcome.duration.as_secs_f64());
        let new = outcome.candidates.len();
        self.tally.add(Count::ScanCandidates, new as u64);
        if new > 0 {
            debug!("{new} candidate(s) in this scan ({})", r.reason);
            info!("Discovered {new} new process(es)");
        }
        fx.extend(
            outcome
                .candidates
                .into_iter()
                .map(|s| Effect::Engine(Work::Candidate(s))),
        );
        let now = Utc::now();
        for id in &r.seen {
            if let Some(g) = self.jobs.get_mut(*id) {
                g.record.last_seen_at = Some(now);
            }
        }
        for id in r.gone {
            self.exited(id, fx);
        }
        self.corrected(r.drift, r.limits, r.removed);
        if r.reason != "startup" {
            // After the start's re-adoption: services whose jobs ended meanwhile.
            self.restore_orphan_units(fx);
        }
        fx.extend(
            r.untracked
                .into_iter()
                .map(|(pid, cgroup, job_id, command)| {
                    Effect::Engine(Work::Adopt {
                        pid,
                        cgroup,
                        job_id,
                        command,
                    })
                }),
        );
        info!(
            "Scan complete: new={new} tracked={} duration={}",
            self.jobs.len(),
            format_go_duration(r.took)
        );
        debug!(
            processes = outcome.processes,
            "scan of {} processes read in {}",
            outcome.processes,
            format_go_duration(outcome.duration)
        );
        if self.health.scan(true).is_some() {
            self.log_health();
        }
        self.mark_dirty();
    }

    /// What the pass put right: memberships, limits, leftover cgroups removed.
    fn corrected(&mut self, drift: Vec<Drift>, limits: Vec<LimitFix>, removed: Vec<String>) {
        for d in drift {
            self.tally.add(Count::DriftCorrections, 1);
            d.log();
        }
        for fix in limits {
            self.limits_fixed(fix);
        }
        for cg in removed {
            if !self.pool_removed(&cg) {
                info!("Removed leftover cgroup {cg}");
            }
        }
    }
}
