//! Configuration in three stages: the raw YAML file (`raw`), merged with environment
//! variables and flags (precedence flag > env > file > default), validated into `Settings`.

mod error;
mod ladder;
mod merge;
mod pools;
pub mod raw;
mod services;
pub mod units;
pub mod words;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::{find_key_line, ConfigError};
pub use pools::check_pool_name;
use raw::RawConfig;
pub use raw::{InlinePlacement, JobMetrics, Placement, Services};

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ffrtmp/watch-config.yaml";
pub const DEFAULT_STATE_PATH: &str = "/var/lib/ffrtmp/watch-state.json";
/// The fixed root used outside a delegated cgroup (and `cgroup_root: auto`'s fallback).
pub const DEFAULT_CGROUP_ROOT: &str = "/ffrtmp";
/// Default of `metrics_addr`: loopback only.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
pub const DEFAULT_TARGETS: [&str; 2] = ["ffmpeg", "gst-launch-1.0"];
/// Default of `gate_timeout`.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_millis(100);

/// Default of `strict_timeout`.
pub const DEFAULT_STRICT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an effective value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Default,
    File,
    Env(&'static str),
    Flag(&'static str),
}

/// Resource limits of one job. `None` means not configured: the kernel's default (no limit;
/// for `cpu_weight`, 100) stays, and nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Percent of one core (200 = 2 cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
    /// 1–10000, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let opt = |v: Option<u64>, unit: &str| match v {
            Some(v) => format!("{v}{unit}"),
            None => "max".to_string(),
        };
        write!(
            f,
            "cpu_quota={} cpu_weight={} memory_limit={} pids_max={}",
            opt(self.cpu_quota.map(u64::from), "%"),
            // Unset, the kernel's default weight applies.
            self.cpu_weight.unwrap_or(100),
            opt(self.memory_limit, "MiB"),
            opt(self.pids_max, "")
        )
    }
}

/// A user named in `allowed_users`/`blocked_users`, resolved through /etc/passwd at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRef {
    pub name: String,
    pub uid: Option<u32>,
}

/// Which processes of a target are adopted. Empty allow lists allow everything; block lists win.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Filters {
    #[serde(serialize_with = "ser_opt_duration")]
    pub min_runtime: Option<Duration>,
    #[serde(serialize_with = "ser_opt_duration")]
    pub max_runtime: Option<Duration>,
    pub allowed_users: Vec<UserRef>,
    pub blocked_users: Vec<UserRef>,
    pub allowed_uids: Vec<u32>,
    pub blocked_uids: Vec<u32>,
    pub allowed_parents: Vec<String>,
    pub blocked_parents: Vec<String>,
    pub allowed_dirs: Vec<PathBuf>,
    pub blocked_dirs: Vec<PathBuf>,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&units::format_go_duration(*d)),
        None => s.serialize_none(),
    }
}

/// One command to govern, with its effective limits and filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Target {
    pub name: String,
    pub limits: Limits,
    pub filters: Filters,
    /// Place it even when it runs in a container (default: leave it to its container).
    pub govern_containers: bool,
    /// The pool its jobs go into (`commands.<name>.pool`, else `default_pool`).
    pub pool: Option<Arc<Pool>>,
    /// What happens to it in a systemd service (`commands.<name>.services`, else
    /// `services`).
    pub services: Services,
}

/// A pool: one cgroup under the root (`<cgroup_root>/<name>`) whose limits bound all the
/// jobs placed in it together; each job keeps its own limits inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Pool {
    pub name: String,
    pub limits: Limits,
}

/// The validated, effective configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub scan_interval: Duration,
    pub targets: Vec<Target>,
    pub cgroup_root: String,
    pub state_path: PathBuf,
    pub state_flush_interval: Duration,
    pub max_retry_attempts: u32,
    pub reconcile_interval: Duration,
    pub log_level: tracing::Level,
    /// Placement mode of targets without a `commands.<name>.placement`.
    pub placement: Placement,
    /// `commands.<name>.placement` of targets that set one.
    pub command_placement: BTreeMap<String, Placement>,
    /// The kernel forwards every exec, not only those whose comm names a target.
    pub forward_all: bool,
    /// How long a strict target waits, stopped, before it is resumed unplaced.
    pub strict_timeout: Duration,
    /// Per-job series in `/metrics`.
    pub job_metrics: JobMetrics,
    /// Where `/metrics` and `/healthz` listen (`None`: disabled).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Whether known targets' execs are held at the gate until placed.
    pub inline_placement: InlinePlacement,
    /// How long a held exec waits for its placement at most.
    pub gate_timeout: Duration,
    /// Every configured pool, by name (those no target uses too: their limits are kept).
    pub pools: BTreeMap<String, Arc<Pool>>,
    /// Slices whose services are left whole, `system.slice` first.
    pub service_slices: Vec<String>,
    /// Origin of each top-level value, for `config check` and the startup log.
    pub origins: BTreeMap<&'static str, Origin>,
    /// Things that are legal but probably not meant (unknown user names, commands
    /// configured but not targeted). Logged at startup and printed by `config check`.
    pub warnings: Vec<String>,
}

impl Settings {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The placement mode of a target (its own, else the global one).
    pub fn placement_of(&self, name: &str) -> Placement {
        self.command_placement
            .get(name)
            .copied()
            .unwrap_or(self.placement)
    }
}

/// Values given on the command line; `None`/empty = not given.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub scan_interval: Option<String>,
    pub targets: Vec<String>,
    pub state_path: Option<PathBuf>,
    pub cgroup_root: Option<String>,
    /// `--placement normal|strict`.
    pub placement: Option<String>,
}

/// A snapshot of the environment variables ffrtmp reads (injectable for tests).
#[derive(Debug, Clone, Default)]
pub struct EnvVars(pub BTreeMap<String, String>);

/// The environment variables ffrtmp reads, in documentation order.
pub const ENV_VARS: [&str; 6] = [
    "SCAN_INTERVAL",
    "TARGET_COMMANDS",
    "STATE_FLUSH_INTERVAL",
    "MAX_RETRY_ATTEMPTS",
    "STATE_PATH",
    "LOG_LEVEL",
];

impl EnvVars {
    pub fn from_process() -> Self {
        EnvVars(
            ENV_VARS
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
        )
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// Inputs of `load`.
pub struct Sources<'a> {
    pub config_file: Option<&'a Path>,
    pub env: &'a EnvVars,
    pub flags: &'a FlagOverrides,
    /// The passwd file used to resolve user names (normally /etc/passwd).
    pub passwd: &'a Path,
}

/// Read, merge and validate.
pub fn load(src: &Sources) -> Result<Settings, ConfigError> {
    let text = match src.config_file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?,
        None => String::new(),
    };
    parse(&text, src)
}

/// Merge and validate the text of `src.config_file` (empty when there is no file).
pub fn parse(text: &str, src: &Sources) -> Result<Settings, ConfigError> {
    let raw: Option<RawConfig> = match src.config_file {
        Some(path) => yaml_serde::from_str(text)
            .map_err(|e| ConfigError::from_yaml(path.to_path_buf(), &e))?,
        None => None,
    };
    merge::merge(raw.unwrap_or_default(), text, src)
}

#[cfg(test)]
mod tests;
