//! The limits in force, kept to the config by the scanner's pass (off the placement
//! thread: a reload or a hand edit is corrected within one pass, never during a placement):
//!
//! - each governed job's limit files are read and the ones that differ from its target's
//!   limits (or, for a command that is no longer a target, from the limits in force) are
//!   written and read back;
//! - each configured pool is made if missing and its limits are kept the same way;
//! - a pool no longer configured is removed once it is empty.
//!
//! `LimitsKeeper` is the scanner thread's alone; what it did goes to the journal as
//! `LimitFix`es, which alone updates the records (the state file's limits in force) and
//! logs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tracing::{debug, error, info, warn};

use crate::config::{Limits, Settings};
use crate::placer::{limits::changes, LimitWrites, Placer};
use crate::process::ProcessId;

/// A governed process as a scan checks it.
#[derive(Debug, Clone)]
pub struct Governed {
    pub id: ProcessId,
    pub cgroup: Arc<str>,
    pub job_id: Arc<str>,
    pub command: Arc<str>,
    /// The limits in force as its record says (`None`: never known, a predecessor's).
    pub limits: Option<Limits>,
    /// Governed in its systemd service: the unit's cgroup and limits are systemd's.
    pub in_service: bool,
}

/// Whose limits a fix is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Job(ProcessId, Arc<str>),
    Pool { name: String, cgroup: String },
}

/// Limits brought to what they should be: changed (a reload, a restart after a config
/// change, a record that never said), or restored after another writer changed them.
#[derive(Debug)]
pub struct LimitFix {
    pub subject: Subject,
    pub from: Option<Limits>,
    pub to: Limits,
    /// Each file that differed: `file=value (was …)` and how its write went.
    pub writes: Vec<(String, Result<(), String>)>,
    /// The failed files whose write failed the same way at the pass before: said then.
    pub said_before: BTreeSet<String>,
    /// The same change was not all in force at the pass before either: its line was said.
    pub again: bool,
}

impl LimitFix {
    fn new(subject: Subject, from: Option<Limits>, to: Limits, writes: LimitWrites) -> Self {
        let writes = writes
            .into_iter()
            .map(|(l, r)| (l, r.map_err(|e| e.to_string())))
            .collect();
        LimitFix {
            subject,
            from,
            to,
            writes,
            said_before: BTreeSet::new(),
            again: false,
        }
    }

    /// Whose limits: `job X` or `pool Y`.
    fn what(&self) -> String {
        match &self.subject {
            Subject::Job(_, job) => format!("job {job}"),
            Subject::Pool { name, .. } => format!("pool {name}"),
        }
    }

    /// Each failed write: its file and its error.
    fn failures(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.writes.iter().filter_map(|(label, r)| {
            let file = label.split('=').next().unwrap_or(label);
            r.as_ref().err().map(|e| (file, e.as_str()))
        })
    }

    /// Every file now shows its value.
    pub fn in_force(&self) -> bool {
        self.writes.iter().all(|(_, r)| r.is_ok())
    }

    /// A restore after another writer, not a change of the config.
    pub fn is_drift(&self) -> bool {
        self.from.as_ref() == Some(&self.to)
    }

    /// One line for the change or the restore, one error per file that failed (a failure
    /// that repeats each pass, such as a controller the hierarchy lacks, is said once and
    /// then at debug level until it ends or its error changes).
    pub fn log(&self) {
        let what = self.what();
        let done: Vec<&str> = self
            .writes
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(l, _)| l.as_str())
            .collect();
        match &self.from {
            _ if self.again => debug!("Limits of {what} still not all in force: {}", self.to),
            Some(from) if from == &self.to || changes(from, &self.to).is_empty() => {
                if !done.is_empty() {
                    warn!(
                        "Limits of {what} were changed by another writer; restored: {}",
                        done.join(", ")
                    );
                }
            }
            Some(from) => info!("Limits of {what} changed: {}", changes(from, &self.to)),
            None => info!("Limits of {what}: {}", self.to),
        }
        for (label, r) in &self.writes {
            let Err(e) = r else { continue };
            if self
                .said_before
                .contains(label.split('=').next().unwrap_or(label))
            {
                debug!("Still cannot apply the limits of {what}: {label}: {e}");
            } else {
                error!("Cannot apply the limits of {what}: {label}: {e}; tried again at each scan (said again only if the error changes)");
            }
        }
    }
}

/// What the scanner thread keeps of pools between passes.
#[derive(Debug, Default)]
pub struct LimitsKeeper {
    /// The limits in force in each pool this run made or kept.
    pools: BTreeMap<String, Limits>,
    /// Pools seen holding jobs, configured or not: removed once empty and unconfigured.
    known: BTreeSet<String>,
    /// The limit files that failed at the last pass (`<job or pool> <file>`) and how: a
    /// failure that repeats is not logged again. Made anew each pass, so a job that ended
    /// or a file that now works leaves nothing behind.
    failing: BTreeMap<String, String>,
}

impl LimitsKeeper {
    /// Bring every governed job's limits to what they should be.
    pub fn jobs(&self, placer: &Placer, s: &Settings, governed: &[Governed]) -> Vec<LimitFix> {
        let mut fixes = Vec::new();
        for g in governed.iter().filter(|g| !g.in_service) {
            // Capped (v1) by the pool its cgroup is in, not the one a reload may have given
            // its command since.
            let pool = (placer.pool_of(&g.cgroup)).and_then(|p| s.pools.get(p).map(|p| &**p));
            let want = match s.target(&g.command) {
                Some(t) => placer.limits_in(&t.limits, pool),
                // No longer a target: it keeps the limits in force until it exits.
                None => match &g.limits {
                    Some(l) => l.clone(),
                    None => continue,
                },
            };
            let writes = placer.enforce_limits(&g.cgroup, &want);
            if !writes.is_empty() || g.limits.as_ref() != Some(&want) {
                let subject = Subject::Job(g.id, g.job_id.clone());
                fixes.push(LimitFix::new(subject, g.limits.clone(), want, writes));
            }
        }
        fixes
    }

    /// Make and keep every configured pool; remove the empty ones no longer configured.
    /// Removed pools are named in `removed`; problems go to `warnings`.
    pub fn pools(
        &mut self,
        placer: &Placer,
        s: &Settings,
        removed: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) -> Vec<LimitFix> {
        let mut fixes = Vec::new();
        for (name, pool) in &s.pools {
            self.known.insert(name.clone());
            let writes = match placer.prepare_pool(pool) {
                Ok(w) => w,
                Err(e) => {
                    warnings.push(format!("Cannot make pool {name}: {e}"));
                    continue;
                }
            };
            let from = self.pools.get(name).cloned();
            if !writes.is_empty() || from.as_ref() != Some(&pool.limits) {
                let subject = Subject::Pool {
                    name: name.clone(),
                    cgroup: placer.pool_cgroup(name),
                };
                let fix = LimitFix::new(subject, from, pool.limits.clone(), writes);
                if fix.in_force() {
                    self.pools.insert(name.clone(), pool.limits.clone());
                }
                fixes.push(fix);
            }
        }
        let dirs = match placer.pool_dirs() {
            Ok(d) => d,
            Err(e) => {
                warnings.push(format!("Cannot list {}: {e}", placer.root()));
                return fixes;
            }
        };
        // Known, unconfigured, and gone (removed by hand, or while ffrtmp was stopped).
        let gone: Vec<String> = (self.known.iter())
            .filter(|n| !s.pools.contains_key(*n) && !dirs.contains(n))
            .cloned()
            .collect();
        for name in gone {
            self.known.remove(&name);
            self.pools.remove(&name);
            removed.push(placer.pool_cgroup(&name));
        }
        for name in dirs.iter().filter(|n| !s.pools.contains_key(*n)) {
            if !self.known.contains(name) {
                continue;
            }
            match placer.remove_if_empty(&placer.pool_cgroup(name)) {
                Ok(true) => {
                    self.known.remove(name);
                    self.pools.remove(name);
                    removed.push(placer.pool_cgroup(name));
                }
                Ok(false) => {}
                Err(e) => warnings.push(format!(
                    "Cannot remove pool {name}, no longer configured: {e}"
                )),
            }
        }
        fixes
    }

    /// Mark in this pass's fixes the failures said at the pass before (the same file
    /// failing the same way), and remember this pass's for the next.
    pub fn mark_repeats(&mut self, fixes: &mut [LimitFix]) {
        let mut now = BTreeMap::new();
        for fix in fixes.iter_mut() {
            let what = fix.what();
            if !fix.in_force() {
                let change = format!("{:?} → {}", fix.from, fix.to);
                fix.again = self.failing.get(&what) == Some(&change);
                now.insert(what.clone(), change);
            }
            let mut said = BTreeSet::new();
            for (file, e) in fix.failures() {
                let key = format!("{what} {file}");
                if self.failing.get(&key).map(String::as_str) == Some(e) {
                    said.insert(file.to_string());
                }
                now.insert(key, e.to_string());
            }
            fix.said_before = said;
        }
        self.failing = now;
    }

    /// A pool that holds jobs (configured or left from before): removed once empty and
    /// no longer configured.
    pub fn holds_jobs(&mut self, pool: &str) {
        self.known.insert(pool.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(file: &str, result: Result<(), &str>) -> LimitFix {
        let id = ProcessId {
            pid: 7,
            start_time: 1,
        };
        LimitFix {
            subject: Subject::Job(id, "auto-ffmpeg-7".into()),
            from: None,
            to: Limits::default(),
            writes: vec![(format!("{file}=1"), result.map_err(str::to_string))],
            said_before: BTreeSet::new(),
            again: false,
        }
    }

    /// One pass's fixes: whether each one's `cpu.max` failure was said at the pass before.
    fn said(k: &mut LimitsKeeper, mut pass: Vec<LimitFix>) -> Vec<bool> {
        k.mark_repeats(&mut pass);
        pass.iter()
            .map(|f| f.said_before.contains("cpu.max"))
            .collect()
    }

    #[test]
    fn a_failure_is_said_once_again_when_its_error_changes_and_after_it_ended() {
        let mut k = LimitsKeeper::default();
        let down = || fix("cpu.max", Err("No such file or directory"));
        assert_eq!(said(&mut k, vec![down()]), [false], "the first failure");
        assert_eq!(said(&mut k, vec![down()]), [true], "the same, a pass later");
        assert_eq!(said(&mut k, vec![down()]), [true]);
        let other = fix("cpu.max", Err("Permission denied"));
        assert_eq!(said(&mut k, vec![other]), [false], "another error");
        // A pass where it went through (or the job ended): forgotten.
        assert_eq!(said(&mut k, vec![fix("cpu.max", Ok(()))]), [false]);
        assert_eq!(said(&mut k, vec![down()]), [false], "failing again is news");
        assert_eq!(said(&mut k, vec![]), Vec::<bool>::new());
        assert_eq!(said(&mut k, vec![down()]), [false]);
    }

    #[test]
    fn a_change_not_all_in_force_is_said_once() {
        let mut k = LimitsKeeper::default();
        let pass = |k: &mut LimitsKeeper, f: LimitFix| {
            let mut v = vec![f];
            k.mark_repeats(&mut v);
            v[0].again
        };
        let failing = || fix("pids.max", Err("No such file or directory"));
        assert!(!pass(&mut k, failing()), "the first pass says the change");
        assert!(pass(&mut k, failing()), "the next ones do not");
        let mut other = failing();
        other.to.cpu_quota = Some(50);
        assert!(!pass(&mut k, other), "another change (a reload) is said");
        assert!(!pass(&mut k, fix("pids.max", Ok(()))), "in force");
        assert!(!pass(&mut k, failing()), "failing again is news");
    }
}
