//! Start: prepare the cgroup root, load the state file and re-adopt what is still governed.

use tracing::{error, info, warn};

use super::Daemon;
use crate::placer::limits::needed_controllers;
use crate::record::state::{self, Loaded, ProcessRecord};

impl Daemon {
    pub(super) fn startup(&mut self) {
        info!(
            "Auto-attach service started: {} ({}), cgroup root {}, targets {}",
            self.placer.backend().describe(),
            self.placer.backend().mode(),
            self.placer.root(),
            self.settings
                .targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for w in &self.settings.warnings {
            warn!("config: {w}");
        }
        if self.opts.dry_run {
            info!("dry-run: nothing will be created, moved or written");
        } else {
            self.prepare_root();
            self.placer.remove_stray_spares();
            self.refill_spares();
        }
        self.load_state();
        info!(
            "Retry worker started (max_retry_attempts {})",
            self.settings.max_retry_attempts
        );
    }

    /// Spare cgroups with each target's limits, so placements are only a move (v1).
    pub(super) fn refill_spares(&mut self) {
        let limits: Vec<_> = self
            .settings
            .targets
            .iter()
            .map(|t| t.limits.clone())
            .collect();
        let n = self.placer.refill_spares(limits.iter());
        if n > 0 {
            tracing::debug!("{n} spare cgroup(s) ready under {}", self.placer.root());
        }
    }

    fn prepare_root(&mut self) {
        let report = self.placer.prepare_root();
        info!(
            "Cgroup root {} ready with controllers: {}",
            self.placer.root(),
            report
                .available
                .iter()
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (c, why) in &report.missing {
            let needed_by: Vec<&str> = self
                .settings
                .targets
                .iter()
                .filter(|t| needed_controllers(&t.limits).contains(c))
                .map(|t| t.name.as_str())
                .collect();
            if needed_by.is_empty() {
                info!(
                    "Controller {} unavailable (no configured limit needs it): {why}",
                    c.name()
                );
            } else {
                error!(
                    "Controller {} unavailable, so the limits of {} that need it will NOT be applied: {why}",
                    c.name(),
                    needed_by.join(", ")
                );
            }
        }
    }

    fn load_state(&mut self) {
        let path = self.settings.state_path.clone();
        let loaded = if self.opts.dry_run {
            match std::fs::read(&path) {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(s) => Loaded::Ok(s),
                    Err(e) => {
                        warn!("dry-run: state file {} is not valid ({e}); a real run would set it aside", path.display());
                        Loaded::Missing
                    }
                },
                Err(_) => Loaded::Missing,
            }
        } else {
            state::load(&path)
        };
        match loaded {
            Loaded::Missing => info!("No state file at {}; starting fresh", path.display()),
            Loaded::SetAside {
                error,
                moved_to,
                rename_error,
            } => {
                match (moved_to, rename_error) {
                    (Some(m), _) => warn!("State file {} is unusable ({error}); moved it to {} and starting fresh", path.display(), m.display()),
                    (None, Some(r)) => error!("State file {} is unusable ({error}) and could not be moved aside ({r}); starting fresh", path.display()),
                    _ => {}
                }
                self.mark_dirty();
            }
            Loaded::Ok(file) => {
                let records: Vec<ProcessRecord> = file.processes.values().cloned().collect();
                self.state = file;
                self.state.processes.clear();
                let (mut adopted, mut dropped) = (0, 0);
                for r in records {
                    if self.readopt(r) {
                        adopted += 1;
                    } else {
                        dropped += 1;
                    }
                }
                info!(
                    "State loaded from {} ({adopted} re-adopted, {dropped} dropped)",
                    path.display()
                );
                self.mark_dirty();
            }
        }
    }

    /// Re-adopt one record without moving it: only if the same process (PID and start
    /// time) is alive and still in its job cgroup.
    fn readopt(&mut self, mut r: ProcessRecord) -> bool {
        let pid = r.pid;
        let cgroup = r
            .cgroup
            .clone()
            .unwrap_or_else(|| self.placer.cgroup_of(&r.job_id));
        let pinned = match self.placer.proc().pin(pid) {
            Ok(p) => p,
            Err(_) => {
                info!(
                    pid,
                    "Dropping PID {pid} (job {}): it exited while ffrtmp was not running", r.job_id
                );
                return false;
            }
        };
        if let Some(st) = r.start_time {
            if st != pinned.id.start_time {
                info!(
                    pid,
                    "Dropping PID {pid} (job {}): the PID now belongs to another process", r.job_id
                );
                return false;
            }
        }
        let in_cgroup = self
            .placer
            .proc()
            .cgroups(pid)
            .is_ok_and(|l| self.placer.backend().is_member(&cgroup, &l));
        if !in_cgroup {
            info!(
                pid,
                "Dropping PID {pid} (job {}): it is no longer in {cgroup}; the scan decides afresh",
                r.job_id
            );
            return false;
        }
        if r.limits.is_none() && !self.opts.dry_run {
            // A predecessor's entry: its limits were never applied. Apply the current ones.
            if let Some(t) = self.settings.target(&r.command) {
                let limits = t.limits.clone();
                for (label, res) in self.placer.backend().apply_limits(&cgroup, &limits) {
                    match res {
                        Ok(()) => info!(pid, "Applied {label} to predecessor job {}", r.job_id),
                        Err(e) => error!(
                            pid,
                            "Limit {label} NOT applied to predecessor job {}: {e}", r.job_id
                        ),
                    }
                }
                r.limits = Some(limits);
            }
        }
        r.start_time = Some(pinned.id.start_time);
        r.cgroup = Some(cgroup.clone());
        r.last_seen_at = Some(chrono::Utc::now());
        info!(pid, job = %r.job_id, "Re-adopted PID {pid} ({}) in {cgroup} without moving it", r.command);
        self.adopt(pinned, cgroup, r);
        true
    }
}
