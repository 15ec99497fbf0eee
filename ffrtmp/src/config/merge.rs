//! Stage 2 and 3 of the config: the raw file merged with environment variables and flags
//! (flag > env > file > default), then checked and resolved into `Settings`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::FileErr;
use super::ladder::{env_over, FileShown, Ladder, Rung};
use super::raw::{self, check_target_list, CgroupRoot, RawConfig, RawFilters, RawLimits};
use super::units::{self, FlushInterval, RetryAttempts, ScanInterval};
use super::words::Words;
use super::*;

pub(super) fn merge(raw: RawConfig, text: &str, src: &Sources) -> Result<Settings, ConfigError> {
    let file_err = |key: &str, message: String| match src.config_file {
        Some(p) => ConfigError::File {
            path: p.to_path_buf(),
            line: find_key_line(text, key),
            column: None,
            message: format!("{key}: {message}"),
        },
        None => ConfigError::Other(format!("{key}: {message}")),
    };
    let mut l = Ladder::new(src.config_file);
    let scan_interval = scan_interval(&mut l, &raw, src)?;
    let target_names = target_commands(&mut l, &raw, src)?;
    let cgroup_root = l.pick(
        "cgroup_root",
        src.flags
            .cgroup_root
            .as_ref()
            .map(|t| Rung::new("--cgroup-root", t.clone(), CgroupRoot::parse)),
        None,
        raw.cgroup_root.clone(),
        || CgroupRoot(raw::AUTO.into()),
    )?;
    let metrics_addr = l.file_only(
        "metrics_addr",
        raw.metrics_addr.clone().map(|a| a.0),
        || DEFAULT_METRICS_ADDR.parse().ok(),
    );
    let state_path = state_path(&mut l, &raw, src)?;
    if state_path.as_os_str().is_empty() || state_path.file_name().is_none() {
        return Err(file_err(
            "state_path",
            format!("{:?} is not a file path", state_path.display().to_string()),
        ));
    }
    let (state_flush_interval, max_retry_attempts) = flush_and_retries(&mut l, &raw, src)?;
    let reconcile_interval = l.file_only(
        "reconcile_interval",
        raw.reconcile_interval.map(|d| d.0),
        || Duration::from_secs(60),
    );
    let (log_level, placement) = level_and_placement(&mut l, &raw, src)?;
    let forward_all = l.file_only("forward_all", raw.forward_all, || false);
    let strict_timeout = l.file_only("strict_timeout", raw.strict_timeout.map(|d| d.0), || {
        DEFAULT_STRICT_TIMEOUT
    });
    let job_metrics = l.file_only("job_metrics", raw.job_metrics, JobMetrics::default);
    let inline_placement = l.file_only("inline_placement", raw.inline_placement, Default::default);
    let gate_timeout = l.file_only("gate_timeout", raw.gate_timeout.map(|d| d.0), || {
        DEFAULT_GATE_TIMEOUT
    });
    l.file_only("govern_containers", raw.govern_containers, || false);
    let (origins, mut warnings) = (l.origins, l.warnings);
    let (targets, command_placement, pools) =
        targets(&raw, &target_names, src, &mut warnings, &file_err)?;
    Ok(Settings {
        config_file: src.config_file.map(Path::to_path_buf),
        scan_interval,
        targets,
        cgroup_root: cgroup_root.0,
        state_path,
        state_flush_interval,
        max_retry_attempts,
        reconcile_interval,
        log_level,
        placement,
        command_placement,
        forward_all,
        strict_timeout,
        job_metrics,
        metrics_addr,
        inline_placement,
        gate_timeout,
        pools,
        service_slices: super::services::service_slices(raw.service_slices.as_ref()),
        origins,
        warnings,
    })
}

/// `scan_interval`: `--scan-interval` > `SCAN_INTERVAL` > file > 10s.
fn scan_interval(l: &mut Ladder, raw: &RawConfig, src: &Sources) -> Result<Duration, ConfigError> {
    let v = l.pick(
        "scan_interval",
        src.flags
            .scan_interval
            .as_ref()
            .map(|t| Rung::new("--scan-interval", t.clone(), ScanInterval::parse)),
        src.env.get("SCAN_INTERVAL").map(|v| {
            env_over(
                "SCAN_INTERVAL",
                v,
                ScanInterval::parse,
                raw.scan_interval.as_ref(),
            )
        }),
        raw.scan_interval,
        || ScanInterval::new(Duration::from_secs(10)),
    )?;
    Ok(v.0)
}

/// `state_path`: `--state-path` > `STATE_PATH` > file > the default.
fn state_path(l: &mut Ladder, raw: &RawConfig, src: &Sources) -> Result<PathBuf, ConfigError> {
    l.pick(
        "state_path",
        src.flags
            .state_path
            .as_ref()
            .map(|p| Rung::new("--state-path", p.display().to_string(), |_| Ok(p.clone()))),
        src.env.get("STATE_PATH").map(|v| {
            let shown = raw.state_path.as_ref().map(|p| p.display().to_string());
            (
                Rung::new("STATE_PATH", v, |t: &str| Ok(PathBuf::from(t))),
                Box::new(move |_: &PathBuf| shown) as FileShown<'_, PathBuf>,
            )
        }),
        raw.state_path.clone(),
        || PathBuf::from(DEFAULT_STATE_PATH),
    )
}

/// `state_flush_interval` and `max_retry_attempts`: environment > file > default.
fn flush_and_retries(
    l: &mut Ladder,
    raw: &RawConfig,
    src: &Sources,
) -> Result<(Duration, u32), ConfigError> {
    let flush = l.pick(
        "state_flush_interval",
        None,
        src.env.get("STATE_FLUSH_INTERVAL").map(|v| {
            let file = raw.state_flush_interval.as_ref();
            env_over("STATE_FLUSH_INTERVAL", v, FlushInterval::parse, file)
        }),
        raw.state_flush_interval,
        || FlushInterval::new(Duration::from_secs(30)),
    )?;
    let retries = l.pick(
        "max_retry_attempts",
        None,
        src.env.get("MAX_RETRY_ATTEMPTS").map(|v| {
            let file = raw.max_retry_attempts.as_ref();
            env_over("MAX_RETRY_ATTEMPTS", v, RetryAttempts::parse, file)
        }),
        raw.max_retry_attempts,
        || RetryAttempts::value(5),
    )?;
    Ok((flush.0, retries.get().unwrap_or(0) as u32))
}

/// `log_level` (`LOG_LEVEL` > info) and `placement` (`--placement` > file > normal).
fn level_and_placement(
    l: &mut Ladder,
    raw: &RawConfig,
    src: &Sources,
) -> Result<(tracing::Level, Placement), ConfigError> {
    let level = l.pick(
        "log_level",
        None,
        src.env.get("LOG_LEVEL").map(|v| {
            let none: Option<&()> = None;
            env_over("LOG_LEVEL", v, parse_log_level, none)
        }),
        None,
        || tracing::Level::INFO,
    )?;
    let placement = l.pick(
        "placement",
        src.flags
            .placement
            .as_ref()
            .map(|t| Rung::new("--placement", t.clone(), Placement::parse)),
        None,
        raw.placement,
        || Placement::Normal,
    )?;
    Ok((level, placement))
}

/// Every target with its limits and filters (the command's over the defaults, field by
/// field), and the placement of those that set their own; `commands.<name>` that name no
/// target are warned about.
/// The targets, the placement of those that set their own, and the pools.
type Resolved = (
    Vec<Target>,
    BTreeMap<String, Placement>,
    BTreeMap<String, std::sync::Arc<Pool>>,
);

fn targets(
    raw: &RawConfig,
    names: &[String],
    src: &Sources,
    warnings: &mut Vec<String>,
    file_err: FileErr,
) -> Result<Resolved, ConfigError> {
    let commands = raw.commands.clone().unwrap_or_default();
    let targeted: std::collections::HashSet<&String> = names.iter().collect();
    for name in commands.keys() {
        if let Err(message) = raw::check_command_name(name) {
            return Err(file_err(
                &format!("commands.{}", name.escape_debug()),
                message,
            ));
        }
        if !targeted.contains(name) {
            warnings.push(format!(
                "commands.{name} is configured but {name:?} is not a target ({}); its settings are unused",
                names.join(", ")
            ));
        }
    }
    let defaults = Defaults {
        services: raw.services,
        limits: raw.default_limits.clone().unwrap_or_default(),
        filters: raw.filters.clone().unwrap_or_default(),
        govern_containers: raw.govern_containers,
        users: read_passwd(src.passwd),
    };
    let mut warned = std::collections::HashSet::new();
    let mut targets = Vec::new();
    let mut command_placement = BTreeMap::new();
    for name in names {
        let cmd = commands.get(name);
        if let Some(p) = cmd.and_then(|c| c.placement) {
            command_placement.insert(name.clone(), p);
        }
        targets.push(target(
            name,
            cmd,
            &defaults,
            (warnings, &mut warned),
            file_err,
        )?);
    }
    let pools = super::pools::resolve(raw, file_err)?;
    super::pools::assign(&mut targets, raw, &pools, warnings, file_err)?;
    Ok((targets, command_placement, pools))
}

/// What a command without its own section takes.
struct Defaults {
    services: Option<raw::Services>,
    limits: RawLimits,
    filters: RawFilters,
    govern_containers: Option<bool>,
    users: BTreeMap<String, u32>,
}

/// One target: its merged limits and filters, checked (`min_runtime` ≤ `max_runtime`), a
/// warning for a `min_runtime` (the target runs unconstrained meanwhile).
fn target(
    name: &str,
    cmd: Option<&raw::RawCommand>,
    d: &Defaults,
    (warnings, warned): (&mut Vec<String>, &mut std::collections::HashSet<String>),
    file_err: FileErr,
) -> Result<Target, ConfigError> {
    let limits = d.limits.under(cmd.and_then(|c| c.limits.as_ref()));
    let own_filters = cmd.and_then(|c| c.filters.as_ref());
    let raw_filters = merge_filters(&d.filters, own_filters);
    let filters = resolve_filters(raw_filters, &d.users, warnings, warned);
    let key = |own: bool| {
        if own {
            format!("commands.{name}.filters.min_runtime")
        } else {
            "filters.min_runtime".to_string()
        }
    };
    if let (Some(min), Some(max)) = (filters.min_runtime, filters.max_runtime) {
        if min > max {
            return Err(file_err(
                &key(own_filters.is_some()),
                format!(
                    "min_runtime {} is longer than max_runtime {}: no {name} process could ever be adopted",
                    units::format_go_duration(min),
                    units::format_go_duration(max)
                ),
            ));
        }
    }
    if let Some(min) = filters.min_runtime.filter(|m| !m.is_zero()) {
        warnings.push(format!(
            "{} {}: every new {name} runs unconstrained, outside its cgroup, for its first {} before it is placed",
            key(own_filters.and_then(|f| f.min_runtime).is_some()),
            units::format_go_duration(min),
            units::format_go_duration(min)
        ));
    }
    Ok(Target {
        name: name.to_string(),
        limits,
        filters,
        govern_containers: cmd
            .and_then(|c| c.govern_containers)
            .or(d.govern_containers)
            .unwrap_or(false),
        pool: None,
        services: cmd
            .and_then(|c| c.services)
            .or(d.services)
            .unwrap_or_default(),
    })
}

/// `target_commands`: `--target` > `TARGET_COMMANDS` > file > default. An environment list
/// that overrides the file's says which of the file's names are then NOT governed.
fn target_commands(
    l: &mut Ladder,
    raw: &RawConfig,
    src: &Sources,
) -> Result<Vec<String>, ConfigError> {
    let flag = (!src.flags.targets.is_empty()).then(|| {
        Rung::new("--target", src.flags.targets.join(","), |_: &str| {
            check_target_list(src.flags.targets.iter().cloned())
        })
    });
    let env = src.env.get("TARGET_COMMANDS").map(|v| {
        let file = raw.target_commands.as_ref();
        let shown: FileShown<'_, Vec<String>> = Box::new(move |names: &Vec<String>| {
            let file = file?;
            let kept: std::collections::HashSet<&String> = names.iter().collect();
            let dropped: Vec<&str> = file
                .0
                .iter()
                .filter(|n| !kept.contains(n))
                .map(String::as_str)
                .collect();
            let effect = if dropped.is_empty() {
                String::new()
            } else {
                format!(" — {} NOT governed", dropped.join(", "))
            };
            Some(format!("[{}]{effect}", file.0.join(", ")))
        });
        let parse = |v: &str| check_target_list(v.split(',').map(str::to_string));
        (Rung::new("TARGET_COMMANDS", v, parse), shown)
    });
    l.pick(
        "target_commands",
        flag,
        env,
        raw.target_commands.clone().map(|t| t.0),
        || DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect(),
    )
}

fn parse_log_level(v: &str) -> Result<tracing::Level, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "trace" => Ok(tracing::Level::TRACE),
        "debug" => Ok(tracing::Level::DEBUG),
        "info" => Ok(tracing::Level::INFO),
        "warn" | "warning" => Ok(tracing::Level::WARN),
        "error" => Ok(tracing::Level::ERROR),
        other => Err(format!(
            "{other:?} is not a log level (accepted: error, warn, info, debug, trace)"
        )),
    }
}

/// Per-command filters override the global ones field by field (not ANDed).
fn merge_filters(global: &RawFilters, cmd: Option<&RawFilters>) -> RawFilters {
    let Some(c) = cmd else {
        return global.clone();
    };
    let g = global.clone();
    RawFilters {
        min_runtime: c.min_runtime.or(g.min_runtime),
        max_runtime: c.max_runtime.or(g.max_runtime),
        allowed_users: c.allowed_users.clone().or(g.allowed_users),
        blocked_users: c.blocked_users.clone().or(g.blocked_users),
        allowed_uids: c.allowed_uids.clone().or(g.allowed_uids),
        blocked_uids: c.blocked_uids.clone().or(g.blocked_uids),
        allowed_parents: c.allowed_parents.clone().or(g.allowed_parents),
        blocked_parents: c.blocked_parents.clone().or(g.blocked_parents),
        allowed_dirs: c.allowed_dirs.clone().or(g.allowed_dirs),
        blocked_dirs: c.blocked_dirs.clone().or(g.blocked_dirs),
    }
}

/// `warned` holds the warnings already given, so each is given once however many targets
/// share the filter (a set: a config may name 100 000 targets).
fn resolve_filters(
    raw: RawFilters,
    users: &BTreeMap<String, u32>,
    warnings: &mut Vec<String>,
    warned: &mut std::collections::HashSet<String>,
) -> Filters {
    let mut resolve = |names: Option<Vec<String>>, key: &str| -> Vec<UserRef> {
        names
            .unwrap_or_default()
            .into_iter()
            .map(|name| {
                let uid = users.get(&name).copied();
                if uid.is_none() {
                    let w = format!(
                        "{key}: no user {name:?} in the passwd file; it matches no process until it exists and the config is reloaded"
                    );
                    if warned.insert(w.clone()) {
                        warnings.push(w);
                    }
                }
                UserRef { name, uid }
            })
            .collect()
    };
    Filters {
        min_runtime: raw.min_runtime.map(|d| d.0),
        max_runtime: raw.max_runtime.map(|d| d.0),
        allowed_users: resolve(raw.allowed_users, "allowed_users"),
        blocked_users: resolve(raw.blocked_users, "blocked_users"),
        allowed_uids: raw.allowed_uids.unwrap_or_default(),
        blocked_uids: raw.blocked_uids.unwrap_or_default(),
        allowed_parents: raw.allowed_parents.unwrap_or_default(),
        blocked_parents: raw.blocked_parents.unwrap_or_default(),
        allowed_dirs: raw
            .allowed_dirs
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.0)
            .collect(),
        blocked_dirs: raw
            .blocked_dirs
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.0)
            .collect(),
    }
}

/// name → uid from a passwd file; an unreadable file gives an empty map.
fn read_passwd(path: &Path) -> BTreeMap<String, u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((name.to_string(), uid))
        })
        .collect()
}
