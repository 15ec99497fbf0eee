//! The matcher: config + process facts in, a decision out. Pure; no I/O.

pub mod containers;
mod filters;
pub mod services;

use std::path::Path;
use std::time::Duration;

use crate::config::Target;
use crate::process::{basename, Needs, ProcessFacts, ProcessId};
use std::os::unix::ffi::OsStrExt;

pub use filters::check_filters;

/// Bytes of a comm the kernel keeps (TASK_COMM_LEN - 1).
pub const COMM_MAX: usize = 15;

/// What to do with one process.
#[derive(Debug, PartialEq)]
pub enum Decision<'a> {
    /// Place it now.
    Govern(&'a Target),
    /// A target that has not run `min_runtime` yet: decide again after `remaining`.
    Defer {
        target: &'a Target,
        remaining: Duration,
    },
    /// Leave it alone.
    Skip(Skip),
}

/// Why a process is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NotATarget,
    Init,
    KernelThread,
    Zombie,
    /// ffrtmp itself or one of its ancestors.
    SelfOrAncestor,
    /// Already in a cgroup under `cgroup_root` (governed, or placed by `ffrtmp run`).
    UnderCgroupRoot(String),
    /// In a cgroup under a root that `ffrtmp run`/`attach` used (another `--cgroup-root`).
    PlacedByTool(String),
    /// In a container (its own PID namespace, or a container manager's cgroup): its
    /// manager's limits apply, not ours.
    Container {
        target: String,
        reason: String,
    },
    /// A target rejected by one of its filters.
    Filtered {
        target: String,
        reason: String,
    },
    /// Ran longer than `max_runtime`: not adopted.
    TooOld {
        target: String,
        age: Duration,
        max: Duration,
    },
}

impl Skip {
    /// Whether this skip concerns a target (worth an info line) rather than a bystander.
    pub fn is_target(&self) -> bool {
        matches!(
            self,
            Skip::Filtered { .. }
                | Skip::TooOld { .. }
                | Skip::Container { .. }
                | Skip::PlacedByTool(_)
        )
    }

    /// Counted in `ffrtmp_skipped_total` (and so said once per process): a target's skip,
    /// or a process already beneath the cgroup root.
    pub fn is_counted(&self) -> bool {
        self.is_target() || matches!(self, Skip::UnderCgroupRoot(_))
    }

    /// The `reason` label of `ffrtmp_skipped_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NotATarget => "not_target",
            Skip::Init | Skip::KernelThread | Skip::SelfOrAncestor => "self",
            Skip::Zombie => "exited",
            Skip::UnderCgroupRoot(_) => "governed",
            Skip::PlacedByTool(_) => "ffrtmp_run",
            Skip::Container { .. } => "container",
            Skip::Filtered { .. } => "filtered",
            Skip::TooOld { .. } => "too_old",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Skip::NotATarget => f.write_str("not a target"),
            Skip::Init => f.write_str("PID 1 is never governed"),
            Skip::KernelThread => f.write_str("kernel thread"),
            Skip::Zombie => f.write_str("already exited"),
            Skip::SelfOrAncestor => f.write_str("ffrtmp itself or its ancestor"),
            Skip::UnderCgroupRoot(p) => write!(f, "already in {p}, under the cgroup root"),
            Skip::PlacedByTool(p) => write!(
                f,
                "already in {p}, placed by ffrtmp run or ffrtmp attach"
            ),
            Skip::Container { reason, .. } => write!(
                f,
                "{reason}; it keeps its container's limits (govern_containers: true to place it anyway)"
            ),
            Skip::Filtered { reason, .. } => f.write_str(reason),
            Skip::TooOld { age, max, .. } => write!(
                f,
                "has run {} which is longer than max_runtime {}",
                crate::config::units::format_go_duration(Duration::from_secs(age.as_secs())),
                crate::config::units::format_go_duration(*max)
            ),
        }
    }
}

/// Processes that are never governed, whatever the config says.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// ffrtmp's own process and its ancestors.
    pub protected: Vec<ProcessId>,
    /// The daemon's cgroup root (`/ffrtmp`): a process already under it is not placed again.
    pub cgroup_root: String,
    /// Other roots `ffrtmp run`/`attach` placed jobs under (`placer::registry`).
    pub tool_roots: Vec<String>,
}

/// `path` equals `root` or lies beneath it.
pub(crate) fn is_under(path: &str, root: &str) -> bool {
    !root.is_empty()
        && (path == root
            || (path.starts_with(root) && path.as_bytes().get(root.len()) == Some(&b'/')))
}

impl Guard {
    fn under<'a>(facts: &'a ProcessFacts, root: &str) -> Option<&'a str> {
        facts
            .cgroups
            .iter()
            .map(|c| c.path.as_str())
            .find(|p| is_under(p, root))
    }

    fn under_root<'a>(&self, facts: &'a ProcessFacts) -> Option<&'a str> {
        Self::under(facts, &self.cgroup_root)
    }

    fn under_tool_root<'a>(&self, facts: &'a ProcessFacts) -> Option<&'a str> {
        self.tool_roots.iter().find_map(|r| Self::under(facts, r))
    }
}

/// Whether a comm could belong to a target: the cheap first test of the scan.
pub fn comm_could_match(targets: &[Target], comm: &[u8]) -> bool {
    targets
        .iter()
        .any(|t| comm_matches(t.name.as_bytes(), comm))
}

fn comm_matches(name: &[u8], comm: &[u8]) -> bool {
    if name.len() <= COMM_MAX {
        comm == name
    } else {
        comm == &name[..COMM_MAX]
    }
}

/// The facts a decision about a process with this comm needs. A comm equal to a target's
/// (short) name decides the name by itself; filters are read only if some target has them.
pub fn needs(targets: &[Target], comm: &[u8]) -> Needs {
    let any = |f: &dyn Fn(&crate::config::Filters) -> bool| targets.iter().any(|t| f(&t.filters));
    Needs {
        names: !targets
            .iter()
            .any(|t| t.name.len() <= COMM_MAX && t.name.as_bytes() == comm),
        cwd: any(&|f| !f.allowed_dirs.is_empty() || !f.blocked_dirs.is_empty()),
        uid: any(&|f| {
            !f.allowed_uids.is_empty()
                || !f.blocked_uids.is_empty()
                || !f.allowed_users.is_empty()
                || !f.blocked_users.is_empty()
        }),
        parent: any(&|f| !f.allowed_parents.is_empty() || !f.blocked_parents.is_empty()),
        pidns: targets.iter().any(|t| !t.govern_containers),
    }
}

/// The target a process is, if any: the basename of argv[0], its comm or the basename of
/// its exe equals the target's name. A comm only proves names of up to 15 bytes; longer
/// names need argv[0] or exe to confirm. Targets are tried in config order.
pub fn match_name<'a>(
    targets: &'a [Target],
    comm: &[u8],
    argv0: Option<&[u8]>,
    exe: Option<&Path>,
) -> Option<&'a Target> {
    let argv0 = argv0.map(basename);
    let exe = exe.map(|p| basename(p.as_os_str().as_bytes()));
    targets.iter().find(|t| {
        let name = t.name.as_bytes();
        argv0 == Some(name) || exe == Some(name) || (name.len() <= COMM_MAX && comm == name)
    })
}

/// Decide what to do with a process.
pub fn decide<'a>(targets: &'a [Target], guard: &Guard, facts: &ProcessFacts) -> Decision<'a> {
    let s = &facts.stat;
    if facts.id.pid == 1 {
        return Decision::Skip(Skip::Init);
    }
    if s.is_kernel_thread() {
        return Decision::Skip(Skip::KernelThread);
    }
    let Some(target) = match_name(
        targets,
        &s.comm,
        facts.argv0.as_deref(),
        facts.exe.as_deref(),
    ) else {
        return Decision::Skip(Skip::NotATarget);
    };
    if s.is_zombie() {
        return Decision::Skip(Skip::Zombie);
    }
    if guard.protected.contains(&facts.id) {
        return Decision::Skip(Skip::SelfOrAncestor);
    }
    if let Some(p) = guard.under_root(facts) {
        return Decision::Skip(Skip::UnderCgroupRoot(p.to_string()));
    }
    if let Some(p) = guard.under_tool_root(facts) {
        return Decision::Skip(Skip::PlacedByTool(p.to_string()));
    }
    if !target.govern_containers {
        if let Some(reason) = containers::container_reason(facts) {
            return Decision::Skip(Skip::Container {
                target: target.name.clone(),
                reason,
            });
        }
    }
    if let Err(reason) = check_filters(&target.filters, facts) {
        return Decision::Skip(Skip::Filtered {
            target: target.name.clone(),
            reason,
        });
    }
    if let Some(max) = target.filters.max_runtime {
        if facts.age > max {
            return Decision::Skip(Skip::TooOld {
                target: target.name.clone(),
                age: facts.age,
                max,
            });
        }
    }
    if let Some(min) = target.filters.min_runtime {
        if facts.age < min {
            return Decision::Defer {
                target,
                remaining: min - facts.age,
            };
        }
    }
    Decision::Govern(target)
}

#[cfg(test)]
mod tests;
