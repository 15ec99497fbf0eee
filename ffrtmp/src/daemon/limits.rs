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

use tracing::{error, info, warn};

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
        }
    }

    /// Every file now shows its value.
    pub fn in_force(&self) -> bool {
        self.writes.iter().all(|(_, r)| r.is_ok())
    }

    /// A restore after another writer, not a change of the config.
    pub fn is_drift(&self) -> bool {
        self.from.as_ref() == Some(&self.to)
    }

    /// One line for the change or the restore, one error per file that failed.
    pub fn log(&self) {
        let what = match &self.subject {
            Subject::Job(_, job) => format!("job {job}"),
            Subject::Pool { name, .. } => format!("pool {name}"),
        };
        let failed: Vec<String> = self
            .writes
            .iter()
            .filter_map(|(l, r)| r.as_ref().err().map(|e| format!("{l}: {e}")))
            .collect();
        let done: Vec<&str> = self
            .writes
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(l, _)| l.as_str())
            .collect();
        match &self.from {
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
        for f in failed {
            error!("Cannot apply the limits of {what}: {f}; tried again at the next scan");
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
}

impl LimitsKeeper {
    /// Bring every governed job's limits to what they should be.
    pub fn jobs(&self, placer: &Placer, s: &Settings, governed: &[Governed]) -> Vec<LimitFix> {
        let mut fixes = Vec::new();
        for g in governed.iter().filter(|g| !g.in_service) {
            let want = match s.target(&g.command) {
                Some(t) => placer.limits_in(&t.limits, t.pool.as_deref()),
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

    /// A pool that holds jobs (configured or left from before): removed once empty and
    /// no longer configured.
    pub fn holds_jobs(&mut self, pool: &str) {
        self.known.insert(pool.to_string());
    }
}
