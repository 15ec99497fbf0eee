//! Targets governed in their systemd service (`services: limit_unit`): the job is the unit.
//! Its first target has the unit limited (a chore, over D-Bus); the unit's values from
//! before are kept in the state file and put back when its last target ends; a reload
//! whose limits differ limits it again. The records name the unit as their job and its
//! cgroup as theirs, so status and `/metrics` show the unit.

use chrono::Utc;
use tracing::{debug, error, info, warn};

use super::{Effect, Effects, Journal};
use crate::config::{Limits, Settings};
use crate::daemon::chores::Chore;
use crate::engine::messages::InService;
use crate::placer::{limits::changes, UnitLimits};
use crate::record::state::ProcessRecord;
use crate::record::tally::Count;

/// The unit a record's job is, if its job is a service (job id = the unit's name, cgroup
/// = the unit's).
pub(super) fn unit_of(r: &ProcessRecord) -> Option<&str> {
    let unit = &*r.job_id;
    let cgroup = r.cgroup.as_deref()?;
    (unit.ends_with(".service") && cgroup.rsplit('/').next() == Some(unit)).then_some(unit)
}

/// What the journal keeps of the services it has limited besides the state file's values
/// from before.
#[derive(Debug, Default)]
pub(super) struct UnitBook {
    /// Services a limit chore is out for: one at a time per unit.
    limiting: std::collections::BTreeSet<String>,
    /// Services a restore chore is out for: one at a time per unit.
    restoring: std::collections::BTreeSet<String>,
    /// A dry run: no service is limited or put back (the state file may be a live daemon's).
    dry_run: bool,
    /// Services whose limit failed, with the error said and the attempts since: each scan
    /// tries again; the failure is logged once, and again only if its error changes.
    failing: std::collections::BTreeMap<String, (String, u64)>,
}

impl Journal {
    /// A dry run: services are neither limited nor put back.
    pub fn dry_run(&mut self) {
        self.units.dry_run = true;
    }

    /// The live jobs of a unit.
    fn of_unit<'a>(&'a self, unit: &'a str) -> impl Iterator<Item = &'a ProcessRecord> + 'a {
        (self.jobs.iter())
            .map(|j| &j.record)
            .filter(move |r| unit_of(r) == Some(unit))
    }

    pub(super) fn in_service(&mut self, s: InService, fx: &mut Effects) {
        let InService {
            id,
            pidfd,
            unit,
            command,
            limits,
            exe,
            source,
        } = s;
        let pid = id.pid;
        self.tally.add(Count::Discovered, 1);
        info!(pid, job = %unit.name, command = %command, source, "Attaching to PID {pid} ({command}) as job {}: it stays in its service; its limits go onto the unit (services: limit_unit)", unit.name);
        let in_force = self.of_unit(&unit.name).find_map(|r| r.limits.clone());
        let first = self.of_unit(&unit.name).next().is_none();
        let now = Utc::now();
        let record = ProcessRecord {
            pid,
            job_id: unit.name.as_str().into(),
            command: command.into(),
            discovered_at: now,
            attached_at: Some(now),
            last_seen_at: Some(now),
            start_time: Some(id.start_time),
            cgroup: Some(unit.cgroup.into()),
            exe,
            limits: in_force,
        };
        self.add_job(id, pidfd, record, fx);
        if first {
            self.limit(unit.name, limits, fx);
        }
    }

    /// Have a service limited (one chore out per unit at a time), with its values from
    /// before the first job if this daemon or an earlier one read them.
    fn limit(&mut self, unit: String, limits: Limits, fx: &mut Effects) {
        if self.units.dry_run {
            return debug!("Dry run: service {unit} would get {limits}");
        }
        if self.units.limiting.insert(unit.clone()) {
            let before = self.stored.units.get(&unit).copied();
            fx.push(Effect::Chore(Chore::LimitUnit {
                unit,
                limits,
                before,
            }));
        }
    }

    pub(super) fn unit_limited(
        &mut self,
        unit: String,
        limits: Limits,
        result: crate::placer::unit::UnitLimited,
        fx: &mut Effects,
    ) {
        self.units.limiting.remove(&unit);
        let (before, now) = match result {
            Ok(v) => v,
            Err((read, e)) => {
                // Kept as its values from before: the write may have gone through.
                if let Some(before) = read {
                    self.stored.units.entry(unit.clone()).or_insert(before);
                    self.mark_dirty();
                }
                return self.unit_failed(unit, e, fx);
            }
        };
        if let Some((_, n)) = self.units.failing.remove(&unit) {
            info!("Service {unit} is limited after {n} failed attempt(s)");
        }
        // The values from before the first job: a later limit (a reload) keeps them.
        let before = *self.stored.units.entry(unit.clone()).or_insert(before);
        let was = self.of_unit(&unit).find_map(|r| r.limits.clone());
        match &was {
            Some(was) if !changes(was, &limits).is_empty() => {
                info!("Limits of job {unit} changed: {}", changes(was, &limits))
            }
            Some(_) => {}
            None => {
                self.tally.placement("placed");
                self.placement_health(true);
                info!("Limits applied to service {unit} (job {unit}): {}; its values from before ({}) are put back when the job ends", now.describe(), before.describe());
            }
        }
        let pids: Vec<u32> = self.of_unit(&unit).map(|r| r.pid).collect();
        for j in self.jobs.iter_mut().filter(|j| pids.contains(&j.id.pid)) {
            j.record.limits = Some(limits.clone());
        }
        self.republish = true;
        if pids.is_empty() {
            // Its targets ended while the limits were being set.
            self.restore_unit(&unit, fx);
        }
        self.mark_dirty();
    }

    /// A service could not be limited: said the first time (and when the error changes), at
    /// debug level at each scan's retry after. Each failed attempt is counted as a failed
    /// placement and towards health, so an alert on failures keeps firing while the unit
    /// runs without ffrtmp's limits.
    fn unit_failed(&mut self, unit: String, e: String, fx: &mut Effects) {
        self.tally.placement("failed");
        self.placement_health(false);
        match self.units.failing.get_mut(&unit) {
            Some((said, n)) if *said == e => {
                *n += 1;
                debug!("Still cannot put limits on service {unit} (attempt {n}): {e}");
            }
            _ => {
                error!("Cannot put limits on service {unit}: {e}; its targets run without ffrtmp's limits (with services: move they would be moved out of it instead); tried again at each scan");
                let n = self.units.failing.get(&unit).map_or(0, |(_, n)| *n);
                self.units.failing.insert(unit.clone(), (e, n + 1));
            }
        }
        // Its targets ended while the chore was out: nothing to try again, nothing to keep;
        // whatever the attempt may have set goes back.
        if self.of_unit(&unit).next().is_none() {
            self.units.failing.remove(&unit);
            self.restore_unit(&unit, fx);
        }
    }

    /// The last target of a service ended: its values from before go back.
    pub(super) fn restore_unit(&mut self, unit: &str, fx: &mut Effects) {
        if self.of_unit(unit).next().is_some() || self.units.dry_run {
            return;
        }
        self.units.failing.remove(unit);
        if let Some(before) = self.stored.units.get(unit) {
            if !self.units.restoring.insert(unit.to_string()) {
                return;
            }
            fx.push(Effect::Chore(Chore::RestoreUnit {
                unit: unit.to_string(),
                before: *before,
            }));
        }
    }

    pub(super) fn unit_restored(
        &mut self,
        unit: String,
        before: UnitLimits,
        result: Result<(), String>,
    ) {
        self.units.restoring.remove(&unit);
        match result {
            Ok(()) => info!("Service {unit}: its values from before the job are back ({})", before.describe()),
            Err(e) => warn!("Cannot put back the values of service {unit} from before its job ({}): {e}; ffrtmp's stay, as runtime properties, until the node reboots or `systemctl revert {unit}`", before.describe()),
        }
        // Tried once: a unit that is gone took its runtime properties with it.
        if self.of_unit(&unit).next().is_none() {
            self.stored.units.remove(&unit);
            self.mark_dirty();
            return;
        }
        // A target came into it while its values went back: limited again by the next
        // pass (its record must not say limits that are not in force).
        let pids: Vec<u32> = self.of_unit(&unit).map(|r| r.pid).collect();
        for j in self.jobs.iter_mut().filter(|j| pids.contains(&j.id.pid)) {
            j.record.limits = None;
        }
    }

    /// After each scan: services whose limits are not the config's (a reload, a restart
    /// after a config change, an earlier attempt that failed) are limited again.
    pub fn relimit_units(&mut self, s: &Settings, fx: &mut Effects) {
        // One unit, one set of limits: those of the command of its first target.
        let mut first: std::collections::BTreeMap<&str, &ProcessRecord> = Default::default();
        for r in self.jobs.iter().map(|j| &j.record) {
            if let Some(unit) = unit_of(r) {
                let e = first.entry(unit).or_insert(r);
                if r.discovered_at < e.discovered_at {
                    *e = r;
                }
            }
        }
        let due: Vec<(String, Limits)> = (first.into_iter())
            .filter_map(|(unit, r)| {
                let t = s.target(&r.command)?;
                (r.limits.as_ref() != Some(&t.limits)).then(|| (unit.to_string(), t.limits.clone()))
            })
            .collect();
        for (unit, limits) in due {
            self.limit(unit, limits, fx);
        }
    }

    /// Services limited by a run of the daemon whose jobs all ended while it was not
    /// running: their values from before go back.
    pub(super) fn restore_orphan_units(&mut self, fx: &mut Effects) {
        let units: Vec<String> = self.stored.units.keys().cloned().collect();
        for u in units {
            self.restore_unit(&u, fx);
        }
    }
}
