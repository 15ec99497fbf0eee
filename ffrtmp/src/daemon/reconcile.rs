//! The scan pass: find targets nobody reported, check governed processes are still in
//! their cgroups (and put back those another writer moved), collect empty job cgroups.

use std::time::Instant;

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::handle::Looked;
use super::Daemon;
use crate::config::units::format_go_duration;
use crate::process::{is_gone, ProcessId};

impl Daemon {
    pub(super) fn scan_now(&mut self, reason: &str) {
        let started = Instant::now();
        let now = Instant::now();
        self.failed.retain(|_, again| *again > now);
        let (governed, pending, failed) = (&self.governed, &self.pending, &self.failed);
        let known = |id: ProcessId| {
            governed.get(&id.pid).is_some_and(|g| g.id == id)
                || pending.contains(&id)
                || failed.contains_key(&id)
        };
        let outcome = match self.scanner.scan(&self.settings.targets, &known) {
            Ok(o) => o,
            Err(e) => {
                error!(
                    "Scan failed: cannot list {}: {e}",
                    self.placer.proc().root().display()
                );
                if self.health.scan(false).is_some() {
                    self.log_health();
                }
                return;
            }
        };
        self.state.statistics.total_scans += 1;
        {
            let mut t = self.telemetry();
            t.scan_duration.observe(outcome.duration.as_secs_f64());
            *t.exec_events.entry("scan").or_default() += outcome.candidates.len() as u64;
        }
        self.state.last_scan_at = Some(Utc::now());

        // Pin and decide first, so "Discovered" comes before the attach lines.
        let mut pinned = Vec::new();
        for stat in outcome.candidates {
            // A candidate that exited since the listing is simply gone.
            if let Ok(p) = self.placer.proc().pin(stat.pid) {
                pinned.push(p);
            }
        }
        let mut new = 0usize;
        let count_targets = pinned.len();
        if count_targets > 0 {
            debug!("{count_targets} candidate(s) in this scan ({reason})");
        }
        let mut results = Vec::with_capacity(pinned.len());
        for p in pinned {
            results.push(self.look_at(p, None));
        }
        new += results.iter().filter(|r| **r == Looked::Governing).count();
        if new > 0 {
            info!("Discovered {new} new process(es)");
        }

        self.check_governed();
        self.collect_leftovers();

        info!(
            "Scan complete: new={new} tracked={} duration={}",
            self.governed.len(),
            format_go_duration(started.elapsed())
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
    }

    /// Governed processes: still alive, still in their cgroup? Drift is logged, counted and
    /// corrected.
    fn check_governed(&mut self) {
        let now = Utc::now();
        let mut gone = Vec::new();
        let mut drifted = Vec::new();
        for g in self.governed.values_mut() {
            let pid = g.id.pid;
            match self.placer.proc().stat(pid) {
                Ok(s) if s.start_time == g.id.start_time && !s.is_zombie() => {}
                Ok(_) => {
                    gone.push(g.id);
                    continue;
                }
                Err(e) if is_gone(&e) => {
                    gone.push(g.id);
                    continue;
                }
                // Out of file descriptors or memory is not an exit: keep governing it.
                Err(e) => {
                    warn!("Cannot read /proc/{pid}/stat: {e}");
                    continue;
                }
            }
            match self.placer.proc().cgroups(pid) {
                Ok(lines) => {
                    g.record.last_seen_at = Some(now);
                    if !self.placer.backend().is_member(&g.cgroup, &lines) {
                        drifted.push((
                            g.id,
                            g.cgroup.clone(),
                            self.placer.backend().location(&lines),
                        ));
                    }
                }
                Err(e) if is_gone(&e) => gone.push(g.id),
                Err(e) => warn!("Cannot read /proc/{pid}/cgroup: {e}"),
            }
        }
        for id in gone {
            self.on_exit(id);
        }
        for (id, cgroup, location) in drifted {
            self.state.statistics.total_drift_corrections += 1;
            self.telemetry().drift_corrections += 1;
            let job = self
                .governed
                .get(&id.pid)
                .map(|g| g.record.job_id.clone())
                .unwrap_or_default();
            warn!(pid = id.pid, job = %job, "PID {} (job {job}) was moved out of {cgroup} to {location} by another writer; moving it back", id.pid);
            if self.opts.dry_run {
                continue;
            }
            match self.placer.backend().move_process(&cgroup, id.pid) {
                Ok(()) => info!(pid = id.pid, "PID {} is back in {cgroup}", id.pid),
                Err(e) => error!(
                    pid = id.pid,
                    "Cannot move PID {} back into {cgroup}: {e}", id.pid
                ),
            }
        }
    }

    /// Remove job cgroups that are empty and belong to no governed process.
    fn collect_leftovers(&mut self) {
        if self.opts.dry_run {
            return;
        }
        self.placer.remove_stray_spares();
        let owned: Vec<String> = self.governed.values().map(|g| g.cgroup.clone()).collect();
        let mut candidates: Vec<String> = std::mem::take(&mut self.leftovers);
        match self.placer.backend().children(self.placer.root()) {
            Ok(names) => {
                for n in names.into_iter().filter(|n| n.starts_with("auto-")) {
                    let cg = self.placer.cgroup_of(&n);
                    if !owned.contains(&cg) && !candidates.contains(&cg) {
                        candidates.push(cg);
                    }
                }
            }
            Err(e) if is_gone(&e) => {}
            Err(e) => warn!("Cannot list {}: {e}", self.placer.root()),
        }
        for cg in candidates {
            if owned.contains(&cg) {
                continue;
            }
            match self.placer.remove_if_empty(&cg) {
                Ok(true) => info!("Removed leftover cgroup {cg}"),
                Ok(false) => {
                    if !self.adopt_untracked(&cg) {
                        self.leftovers.push(cg);
                    }
                }
                Err(e) if is_gone(&e) => {}
                Err(e) => {
                    warn!("Cannot remove leftover cgroup {cg}: {e}");
                    self.leftovers.push(cg);
                }
            }
        }
    }
}

impl Daemon {
    /// A job cgroup `auto-<command>-<pid>` whose process is alive but not tracked (the state
    /// was lost, e.g. a crash before a flush): govern it again without moving it.
    fn adopt_untracked(&mut self, cgroup: &str) -> bool {
        let Some(name) = cgroup.rsplit('/').next() else {
            return false;
        };
        let Some((prefix, pid)) = name.rsplit_once('-') else {
            return false;
        };
        let (Some(command), Ok(pid)) = (prefix.strip_prefix("auto-"), pid.parse::<u32>()) else {
            return false;
        };
        if self.governed.contains_key(&pid) {
            return false;
        }
        let Ok(pinned) = self.placer.proc().pin(pid) else {
            return false;
        };
        let in_cgroup = self
            .placer
            .proc()
            .cgroups(pid)
            .is_ok_and(|l| self.placer.backend().is_member(cgroup, &l));
        if !in_cgroup {
            return false;
        }
        let now = Utc::now();
        let record = crate::record::state::ProcessRecord {
            pid,
            job_id: name.to_string(),
            command: command.to_string(),
            discovered_at: now,
            attached_at: None,
            last_seen_at: Some(now),
            start_time: Some(pinned.id.start_time),
            cgroup: Some(cgroup.to_string()),
            exe: self
                .placer
                .proc()
                .exe(pid)
                .ok()
                .map(|p| p.display().to_string()),
            limits: Some(self.placer.backend().read_limits(cgroup)),
        };
        info!(pid, job = %name, "Re-adopted untracked PID {pid} ({command}) found in {cgroup}");
        self.adopt(pinned, cgroup.to_string(), record);
        true
    }
}
