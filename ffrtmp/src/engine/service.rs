//! A target in a systemd service (`services: limit_unit`) is governed where it is: no move
//! (a process moved out of its unit outlives `systemctl stop`); the record loop has its
//! limits put on the unit. The engine only decides, and lets a held or stopped exec go on.

use super::messages::InService;
use super::{Engine, Origin, Outcome};
use crate::config::{Services, Target};
use crate::job::JobId;
use crate::matcher::services::{service_of, ServiceUnit};
use crate::process::{CgroupLine, Pinned};

impl Engine {
    /// The service a target's process is to be left in, if any.
    pub(super) fn service_for(
        &self,
        target: &Target,
        cgroups: &[CgroupLine],
    ) -> Option<ServiceUnit> {
        if target.services != Services::LimitUnit {
            return None;
        }
        service_of(cgroups, &self.settings.service_slices)
    }

    /// Govern it in its service: it runs on from where it is (a held exec goes on, a
    /// stopped one is resumed), and the record loop limits the unit.
    pub(super) fn govern_in_service(
        &mut self,
        pinned: Pinned,
        target: &Target,
        unit: ServiceUnit,
        origin: Origin,
    ) {
        let source = origin.source;
        drop(origin);
        let pid = pinned.id.pid;
        self.table.governed(pinned.id);
        let exe = self.proc.exe(pid).ok().map(|p| p.display().to_string());
        self.emit(Outcome::InService(Box::new(InService {
            id: pinned.id,
            pidfd: self.out.handed_on(pinned.pidfd),
            unit,
            command: target.name.clone(),
            limits: target.limits.clone(),
            exe,
            source,
        })));
    }

    /// `--dry-run`: what `govern_in_service` would do, said; the target runs on.
    pub(super) fn dry_run_in_service(
        &mut self,
        pinned: Pinned,
        target: &Target,
        unit: ServiceUnit,
        origin: Origin,
    ) {
        drop(origin);
        let pid = pinned.id.pid;
        // A unit's name is a plain name (systemd allows no '/' in it).
        let job_id = JobId::named(&unit.name).unwrap_or_else(|_| JobId::new(&target.name, pid));
        self.emit(Outcome::Discovered {
            pid,
            job_id: job_id.clone(),
            command: target.name.clone(),
        });
        self.emit(Outcome::DryRun {
            pid,
            job_id,
            command: target.name.clone(),
            cgroup: unit.cgroup,
            limits: target.limits.clone(),
            in_service: true,
        });
    }
}
