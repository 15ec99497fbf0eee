//! Stage 1 of the config: the YAML file as written, every key optional, unknown keys
//! rejected. Values are range-checked while parsing (see `units`), so errors carry lines.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub use super::services::{Services, SliceName};

use super::units::TextVisitor;
use super::units::{
    CpuQuota, CpuWeight, FlushInterval, GateTimeout, MemoryMib, PidsMax, ReconcileInterval,
    RetryAttempts, Runtime, ScanInterval, StrictTimeout,
};
use super::words::words_setting;

/// The config file. Keys and meanings of the predecessor are kept; see docs/configuration.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub scan_interval: Option<ScanInterval>,
    /// An explicit empty value (`target_commands:`) is an error, not "use the default".
    #[serde(default, deserialize_with = "present")]
    pub target_commands: Option<TargetList>,
    pub default_limits: Option<RawLimits>,
    pub filters: Option<RawFilters>,
    pub commands: Option<BTreeMap<String, RawCommand>>,
    pub cgroup_root: Option<CgroupRoot>,
    pub state_path: Option<PathBuf>,
    pub state_flush_interval: Option<FlushInterval>,
    pub max_retry_attempts: Option<RetryAttempts>,
    pub reconcile_interval: Option<ReconcileInterval>,
    /// Default placement mode of every target (`normal` or `strict`).
    pub placement: Option<Placement>,
    /// How long a strict target may wait, stopped, for its placement before it is resumed
    /// unplaced.
    pub strict_timeout: Option<StrictTimeout>,
    /// Place targets that run in containers too (default: never; see docs/configuration.md).
    pub govern_containers: Option<bool>,
    /// Per-job series in `/metrics`: `per_job`, `per_command` or `off`.
    pub job_metrics: Option<JobMetrics>,
    /// Forward every exec from the kernel to the user-space matcher (no kernel prefilter).
    pub forward_all: Option<bool>,
    /// `host:port` of `/metrics` and `/healthz`; empty disables them.
    pub metrics_addr: Option<MetricsAddr>,
    /// Hold a known target's exec in the kernel until it is placed (`auto`, `on`, `off`).
    pub inline_placement: Option<InlinePlacement>,
    /// How long a held exec may wait for its placement before it is let go unplaced.
    pub gate_timeout: Option<GateTimeout>,
    /// Shared budgets: `pools.<name>.limits` bound every job placed in the pool together.
    pub pools: Option<BTreeMap<String, RawPool>>,
    /// The pool of targets without a `commands.<name>.pool`.
    pub default_pool: Option<String>,
    /// A target in a systemd service: its limits go onto the unit (`limit_unit`), or it is
    /// moved out of it as any other (`move`).
    pub services: Option<Services>,
    /// Slices besides `system.slice` whose services are left whole.
    pub service_slices: Option<Vec<SliceName>>,
}

/// `pools.<name>`: one cgroup under the root that holds its jobs' cgroups.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub limits: Option<RawLimits>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub cpu_quota: Option<CpuQuota>,
    pub cpu_weight: Option<CpuWeight>,
    pub memory_limit: Option<MemoryMib>,
    pub pids_max: Option<PidsMax>,
}

impl RawLimits {
    /// `own` over these, field by field (a command's limits over `default_limits`).
    pub fn under(&self, own: Option<&RawLimits>) -> super::Limits {
        let own = own.cloned().unwrap_or_default();
        super::Limits {
            cpu_quota: own
                .cpu_quota
                .or(self.cpu_quota)
                .and_then(|v| v.get())
                .map(|v| v as u32),
            cpu_weight: own
                .cpu_weight
                .or(self.cpu_weight)
                .and_then(|v| v.get())
                .map(|v| v as u32),
            memory_limit: own.memory_limit.or(self.memory_limit).and_then(|v| v.get()),
            pids_max: own.pids_max.or(self.pids_max).and_then(|v| v.get()),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilters {
    pub min_runtime: Option<Runtime>,
    pub max_runtime: Option<Runtime>,
    pub allowed_users: Option<Vec<String>>,
    pub blocked_users: Option<Vec<String>>,
    pub allowed_uids: Option<Vec<u32>>,
    pub blocked_uids: Option<Vec<u32>>,
    pub allowed_parents: Option<Vec<String>>,
    pub blocked_parents: Option<Vec<String>>,
    pub allowed_dirs: Option<Vec<AbsDir>>,
    pub blocked_dirs: Option<Vec<AbsDir>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub limits: Option<RawLimits>,
    pub filters: Option<RawFilters>,
    pub placement: Option<Placement>,
    pub govern_containers: Option<bool>,
    pub pool: Option<String>,
    pub services: Option<Services>,
}

/// Which per-job series `/metrics` has (docs/fleet.md: cardinality).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JobMetrics {
    /// One series per governed job and family, labelled job, command and pid.
    #[default]
    PerJob,
    /// Sums per command (label command only) and the number of jobs per command.
    PerCommand,
    /// No per-job series.
    Off,
}

words_setting!(
    JobMetrics,
    "a job_metrics mode",
    [PerJob = "per_job", PerCommand = "per_command", Off = "off"]
);

/// How a target is placed when the eBPF source reports its exec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Placement {
    /// Placed as soon as the agent hears of it; it runs meanwhile.
    #[default]
    Normal,
    /// Stopped by the kernel at exec (SIGSTOP) and continued after placement, so it runs
    /// no instruction of its own outside its cgroup. Its parent can see the stop.
    Strict,
}

words_setting!(
    Placement,
    "a placement mode",
    any_case,
    [Normal = "normal", Strict = "strict"]
);

/// Whether the exec gate holds a known target's exec until it is placed
/// (docs/inline.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InlinePlacement {
    /// On where the kernel and the daemon's capabilities allow, else off with one line
    /// saying why.
    #[default]
    Auto,
    /// On, or the daemon does not start.
    On,
    Off,
}

words_setting!(
    InlinePlacement,
    "an inline_placement mode",
    any_case,
    [Auto = "auto", On = "on", Off = "off"]
);

/// Deserialize a key that is present as `Some`, even when its value is null, so the
/// value's own checks see it.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The longest target name: it becomes part of a job id (`crate::job::JobId`).
pub const MAX_COMMAND_NAME: usize = crate::job::JobId::MAX_COMMAND_NAME;

/// Check one command name: a basename, as matched against argv[0], comm and exe, that
/// becomes part of job ids and cgroup directory names.
pub fn check_command_name(name: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() {
        return Err("an empty command name".into());
    }
    if n.contains('/') {
        return Err(format!(
            "{n:?} contains '/': targets are matched by basename, write {:?}",
            n.rsplit('/').next().unwrap_or(n)
        ));
    }
    if let Some(c) = n.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{n:?} contains the control character {c:?}: a command name is one line of printable text"
        ));
    }
    if n == "." || n == ".." {
        return Err(format!("{n:?} is not a valid command name"));
    }
    if n.len() > MAX_COMMAND_NAME {
        return Err(format!(
            "{:?}… is {} bytes long; at most {MAX_COMMAND_NAME} fit in a job cgroup's name (auto-<name>-<pid>-<start time>)",
            n.chars().take(20).collect::<String>(),
            n.len()
        ));
    }
    Ok(n.to_string())
}

/// Check a whole target list (non-empty, no duplicates).
pub fn check_target_list(names: impl IntoIterator<Item = String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for raw in names {
        let n = check_command_name(&raw)?;
        if !seen.insert(n.clone()) {
            return Err(format!("{n:?} is listed twice"));
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err("the list is empty: name at least one command, e.g. [ffmpeg]".into());
    }
    Ok(out)
}

/// `target_commands`: a non-empty list of basenames (a comma-separated string is accepted too).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetList(pub Vec<String>);

impl<'de> Deserialize<'de> for TargetList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of command names, e.g. [ffmpeg, gst-launch-1.0]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetList, E> {
                check_target_list(v.split(',').map(str::to_string))
                    .map(TargetList)
                    .map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<TargetList, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                check_target_list(names)
                    .map(TargetList)
                    .map_err(de::Error::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<TargetList, E> {
                Err(E::custom(
                    "the list is empty: name at least one command, e.g. [ffmpeg]",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// An absolute directory for `allowed_dirs` / `blocked_dirs`, without a trailing slash.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsDir(pub PathBuf);

impl AbsDir {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "{text:?} is not an absolute path (dirs are matched against the process's working directory)"
            ));
        }
        let trimmed = text.trim_end_matches('/');
        Ok(AbsDir(PathBuf::from(if trimmed.is_empty() {
            "/"
        } else {
            trimmed
        })))
    }
}

impl<'de> Deserialize<'de> for AbsDir {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor(
            AbsDir::parse,
            "an absolute directory such as /srv/streams",
        ))
    }
}

/// `cgroup_root`: a path inside the cgroup hierarchy such as `/ffrtmp`, or `auto`.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupRoot(pub String);

/// The `cgroup_root` value that asks ffrtmp to choose (see `placer::delegation`).
pub const AUTO: &str = "auto";

impl CgroupRoot {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == AUTO {
            return Ok(CgroupRoot(AUTO.to_string()));
        }
        if !t.starts_with('/') {
            return Err(format!(
                "{t:?} must be auto or an absolute path inside the cgroup hierarchy, e.g. /ffrtmp"
            ));
        }
        let parts: Vec<&str> = t.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(
                "\"/\" is the hierarchy's root; use a directory of ffrtmp's own such as /ffrtmp"
                    .into(),
            );
        }
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(format!("{t:?} contains . or .."));
        }
        Ok(CgroupRoot(format!("/{}", parts.join("/"))))
    }
}

/// `metrics_addr`: a socket address, or empty for "off".
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

impl MetricsAddr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(MetricsAddr(None));
        }
        t.parse().map(|a| MetricsAddr(Some(a))).map_err(|_| {
            format!("{t:?} is not host:port (e.g. 127.0.0.1:9464, [::1]:9464, or \"\" to disable)")
        })
    }
}

impl<'de> Deserialize<'de> for MetricsAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor(
            MetricsAddr::parse,
            "host:port such as 127.0.0.1:9464",
        ))
    }
}

impl<'de> Deserialize<'de> for CgroupRoot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor(
            CgroupRoot::parse,
            "a cgroup path such as /ffrtmp",
        ))
    }
}
