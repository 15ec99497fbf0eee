//! What the journal writes down when the scanner brought limits to the config: the log
//! line, the tally, and a job's limits in force (its record, so the state file says them).

use std::collections::btree_map::Entry;

use tracing::info;

use super::Journal;
use crate::config::Settings;
use crate::daemon::limits::{LimitFix, Subject};
use crate::record::state::PoolRecord;
use crate::record::tally::Count;

impl Journal {
    pub(super) fn limits_fixed(&mut self, fix: LimitFix) {
        // A job that ended in the same pass: nothing to say about its limits.
        if let Subject::Job(id, _) = &fix.subject {
            if self.jobs.get(*id).is_none() {
                return;
            }
        }
        fix.log();
        let failed = fix.writes.iter().filter(|(_, r)| r.is_err()).count();
        self.tally.add(Count::LimitFailures, failed as u64);
        if fix.is_drift() && fix.writes.iter().any(|(_, r)| r.is_ok()) {
            self.tally.add(Count::DriftCorrections, 1);
        }
        if !fix.in_force() {
            // A pool shown all the same (status, /metrics), with the limits it is meant to
            // have; its failures are logged and counted.
            if let Subject::Pool { name, cgroup } = fix.subject {
                if let Entry::Vacant(e) = self.stored.pools.entry(name) {
                    let limits = fix.to;
                    e.insert(PoolRecord { cgroup, limits });
                    self.mark_dirty();
                }
            }
            return;
        }
        match fix.subject {
            Subject::Job(id, _) => {
                if let Some(job) = self.jobs.get_mut(id) {
                    job.record.limits = Some(fix.to);
                }
            }
            Subject::Pool { name, cgroup } => {
                let limits = fix.to;
                self.stored
                    .pools
                    .insert(name, PoolRecord { cgroup, limits });
            }
        }
        self.mark_dirty();
    }

    /// A pool's cgroup the scanner removed (no longer configured, empty).
    /// `false`: not a pool's.
    pub(super) fn pool_removed(&mut self, cgroup: &str) -> bool {
        let before = self.stored.pools.len();
        self.stored.pools.retain(|_, p| p.cgroup != cgroup);
        let was = self.stored.pools.len() != before;
        if was {
            info!("Removed pool cgroup {cgroup}: no longer configured, and empty");
            self.mark_dirty();
        }
        was
    }

    /// The pools the state file names.
    pub fn pool_names(&self) -> Vec<String> {
        self.stored.pools.keys().cloned().collect()
    }

    /// The pools for `/metrics`, each with the number of governed jobs in it.
    pub(super) fn pools_view(&self) -> Vec<(String, PoolRecord, u64)> {
        self.stored
            .pools
            .iter()
            .map(|(name, p)| {
                let prefix = format!("{}/", p.cgroup);
                let jobs = self.jobs.iter().filter(|j| j.cgroup().starts_with(&prefix));
                (name.clone(), p.clone(), jobs.count() as u64)
            })
            .collect()
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
