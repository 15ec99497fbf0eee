//! What the journal writes down when the scanner brought limits to the config: the log
//! line, the tally, and a job's limits in force (its record, so the state file says them).

use tracing::info;

use super::Journal;
use crate::config::Settings;
use crate::daemon::limits::{LimitFix, Subject};
use crate::record::tally::Count;

impl Journal {
    pub(super) fn limits_fixed(&mut self, fix: LimitFix) {
        fix.log();
        let failed = fix.writes.iter().filter(|(_, r)| r.is_err()).count();
        self.tally.add(Count::LimitFailures, failed as u64);
        if fix.is_drift() && fix.writes.iter().any(|(_, r)| r.is_ok()) {
            self.tally.add(Count::DriftCorrections, 1);
        }
        if let (Subject::Job(id, _), true) = (&fix.subject, fix.in_force()) {
            if let Some(job) = self.jobs.get_mut(*id) {
                job.record.limits = Some(fix.to);
                self.mark_dirty();
            }
        }
    }

    /// After a reload: each job whose command was a target and is no longer one keeps its
    /// limits until it exits (said once, here).
    pub fn no_longer_targets(&self, old: &Settings, new: &Settings) {
        for job in self.jobs.iter() {
            let command = &*job.record.command;
            if old.target(command).is_some() && new.target(command).is_none() {
                info!(
                    pid = job.id.pid,
                    "Job {}: {command} is no longer a target; it keeps its limits until it exits",
                    job.record.job_id
                );
            }
        }
    }
}
