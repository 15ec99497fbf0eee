//! Governing again without moving: the records of the state file at start, and job cgroups
//! the scan finds with a live process the table does not know (a state file lost in a
//! crash). Only the same process (PID and start time) still inside its job cgroup is
//! taken back; anything else is left to a fresh decision.

use std::sync::Arc;

use chrono::Utc;

use super::{Engine, Outcome};
use crate::process::Pinned;
use crate::record::state::ProcessRecord;

impl Engine {
    pub(super) fn readopt_all(&mut self, records: Vec<ProcessRecord>) {
        for r in records {
            self.readopt(r);
        }
    }

    /// Still where its record says: in its job cgroup, or (a job governed in its systemd
    /// service, whose id is the unit's name) anywhere in that unit.
    fn in_cgroup(&self, pid: u32, cgroup: &str, job_id: &str) -> bool {
        if job_id.ends_with(".service") {
            let slices = &self.settings.service_slices;
            return (self.proc.cgroups(pid).ok())
                .and_then(|l| crate::matcher::services::service_of(&l, slices))
                .is_some_and(|u| u.name == job_id && u.cgroup == cgroup);
        }
        matches!(self.placer.whereabouts(pid, cgroup), Ok(None))
    }

    fn readopt(&mut self, mut r: ProcessRecord) {
        let (pid, job_id) = (r.pid, r.job_id.clone());
        let dropped = |why: &str| Outcome::Dropped {
            pid,
            job_id: job_id.to_string(),
            why: why.to_string(),
        };
        let cgroup: Arc<str> = r
            .cgroup
            .clone()
            .unwrap_or_else(|| self.placer.cgroup_of(&r.job_id).into());
        let Ok(pinned) = self.proc.pin(pid) else {
            return self.emit(dropped("it exited while ffrtmp was not running"));
        };
        if r.start_time.is_some_and(|st| st != pinned.id.start_time) {
            return self.emit(dropped("the PID now belongs to another process"));
        }
        if !self.in_cgroup(pid, &cgroup, &job_id) {
            return self.emit(dropped(&format!(
                "it is no longer in {cgroup}; the scan decides afresh"
            )));
        }
        // Its limits (none in a predecessor's entry, the old ones after a config change)
        // are brought to the config by the scanner's next pass, as a reload's are.
        r.start_time = Some(pinned.id.start_time);
        r.cgroup = Some(cgroup);
        r.last_seen_at = Some(Utc::now());
        self.take_back(pinned, r, false);
    }

    pub(super) fn adopt_untracked(&mut self, pid: u32, cgroup: &str, job_id: &str, command: &str) {
        let Ok(pinned) = self.proc.pin(pid) else {
            return;
        };
        if self.table.knows(pinned.id) || !self.in_cgroup(pid, cgroup, job_id) {
            return;
        }
        let now = Utc::now();
        let record = ProcessRecord {
            pid,
            job_id: job_id.into(),
            command: command.into(),
            discovered_at: now,
            attached_at: None,
            last_seen_at: Some(now),
            start_time: Some(pinned.id.start_time),
            cgroup: Some(cgroup.into()),
            exe: self.proc.exe(pid).ok().map(|p| p.display().to_string()),
            // Not known: the scanner's next pass writes the configured ones.
            limits: None,
        };
        self.take_back(pinned, record, true);
    }

    fn take_back(&mut self, pinned: Pinned, record: ProcessRecord, untracked: bool) {
        self.table.governed(pinned.id);
        self.emit(Outcome::Readopted {
            id: pinned.id,
            pidfd: self.out.handed_on(pinned.pidfd),
            record,
            untracked,
        });
    }
}
