//! Start: prepare the cgroup root, publish it, load the state file. The records it holds
//! go to the engine, which governs again those still alive in their cgroups.

use tracing::{error, info, warn};

use super::{Chore, Daemon};
use crate::placer::limits::needed_controllers;
use crate::record::state::{self, Loaded, ProcessRecord};

impl Daemon {
    /// Everything before the engine starts; returns the state file's records.
    pub(super) fn startup(&mut self) -> Vec<ProcessRecord> {
        info!(
            "Auto-attach service started: {} ({}), cgroup root {}, targets {}",
            self.placer.backend().describe(),
            self.placer.backend().mode(),
            self.placer.root(),
            self.target_names()
        );
        if let Some(note) = self.placer.backend().move_cost() {
            info!("{note}");
        }
        for w in &self.settings.warnings {
            warn!("config: {w}");
        }
        if self.opts.dry_run {
            info!("dry-run: nothing will be created, moved, stopped or written");
        } else {
            self.prepare_root();
            self.placer.remove_stray_spares();
            let n = self.placer.refill_spares(self.target_limits().iter());
            if n > 0 {
                tracing::debug!("{n} spare cgroup(s) ready under {}", self.placer.root());
            }
            match crate::placer::registry::publish_root(&self.opts.runtime_dir, self.placer.root()) {
                Ok(()) => {}
                Err(e) => warn!(
                    "Cannot publish the cgroup root in {} ({e}): `ffrtmp run` and `ffrtmp attach` will not find it and use /ffrtmp",
                    self.opts.runtime_dir.display()
                ),
            }
            let me = std::process::id();
            let start = self.proc.stat(me).map_or(0, |s| s.start_time);
            if let Err(e) = crate::placer::registry::publish_daemon(
                &self.opts.runtime_dir,
                me,
                start,
                &std::path::absolute(&self.settings.state_path)
                    .unwrap_or_else(|_| self.settings.state_path.clone()),
            ) {
                warn!(
                    "Cannot publish the state file's path in {} ({e}): `ffrtmp status` needs --state-path {}",
                    self.opts.runtime_dir.display(),
                    self.settings.state_path.display()
                );
            }
        }
        let records = self.load_state();
        info!(
            "Retry worker started (max_retry_attempts {})",
            self.settings.max_retry_attempts
        );
        records
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

    fn load_state(&mut self) -> Vec<ProcessRecord> {
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
            Loaded::Missing => {
                info!("No state file at {}; starting fresh", path.display());
                Vec::new()
            }
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
                Vec::new()
            }
            Loaded::Ok(file) => {
                let records: Vec<ProcessRecord> = file.processes.values().cloned().collect();
                self.state = file;
                self.state.processes.clear();
                info!(
                    "State loaded from {} ({} record(s) to check)",
                    path.display(),
                    records.len()
                );
                self.mark_dirty();
                records
            }
        }
    }
}

impl Daemon {
    /// Queue the removal of an ended job's cgroup (a dry run only reads its numbers).
    pub(super) fn remove_later(&mut self, pid: u32, cgroup: String) {
        self.chores.push_back(Chore::Remove { pid, cgroup });
    }
}
