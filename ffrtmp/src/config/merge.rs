//! Stage 2 and 3 of the config: the raw file merged with environment variables and flags
//! (flag > env > file > default), then checked and resolved into `Settings`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, check_target_list, CgroupRoot, RawConfig, RawFilters, RawLimits};
use super::units::{self, FlushInterval, RetryAttempts, ScanInterval};
use super::*;

pub(super) fn merge(raw: RawConfig, text: &str, src: &Sources) -> Result<Settings, ConfigError> {
    let mut origins = BTreeMap::new();
    let mut warnings = Vec::new();
    let file_err = |key: &str, message: String| match src.config_file {
        Some(p) => ConfigError::File {
            path: p.to_path_buf(),
            line: find_key_line(text, key),
            column: None,
            message: format!("{key}: {message}"),
        },
        None => ConfigError::Other(format!("{key}: {message}")),
    };

    // scan_interval: flag > env > file > default
    // An environment variable that overrides what the file says is the most common way a
    // node ends up doing something else than its config file reads: say so every time.
    let mut env_over = |var: &str, key: &str, env_value: &str, file_value: Option<String>| {
        if let (Some(file_value), Some(path)) = (file_value, src.config_file) {
            warnings.push(format!(
                "environment variable {var}={env_value:?} overrides {key} {file_value} from {} (precedence: flag > environment > file); remove {var} from the environment (watch.env) to use the file's value",
                path.display()
            ));
        }
    };
    let scan_interval = if let Some(v) = &src.flags.scan_interval {
        origins.insert("scan_interval", Origin::Flag("--scan-interval"));
        ScanInterval::parse(v).map_err(|message| ConfigError::Flag {
            flag: "--scan-interval",
            value: v.clone(),
            message,
        })?
    } else if let Some(v) = src.env.get("SCAN_INTERVAL") {
        origins.insert("scan_interval", Origin::Env("SCAN_INTERVAL"));
        env_over(
            "SCAN_INTERVAL",
            "scan_interval",
            v,
            raw.scan_interval.map(|d| format!("{d:?}")),
        );
        env_parse("SCAN_INTERVAL", v, ScanInterval::parse)?
    } else if let Some(v) = raw.scan_interval {
        origins.insert("scan_interval", Origin::File);
        v
    } else {
        origins.insert("scan_interval", Origin::Default);
        ScanInterval::new(Duration::from_secs(10))
    };

    let target_names: Vec<String> = if !src.flags.targets.is_empty() {
        origins.insert("target_commands", Origin::Flag("--target"));
        check_target_list(src.flags.targets.iter().cloned()).map_err(|message| {
            ConfigError::Flag {
                flag: "--target",
                value: src.flags.targets.join(","),
                message,
            }
        })?
    } else if let Some(v) = src.env.get("TARGET_COMMANDS") {
        origins.insert("target_commands", Origin::Env("TARGET_COMMANDS"));
        let names = env_parse("TARGET_COMMANDS", v, |v| {
            check_target_list(v.split(',').map(str::to_string))
        })?;
        if let Some(file) = &raw.target_commands {
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
            env_over(
                "TARGET_COMMANDS",
                "target_commands",
                v,
                Some(format!("[{}]{effect}", file.0.join(", "))),
            );
        }
        names
    } else if let Some(v) = &raw.target_commands {
        origins.insert("target_commands", Origin::File);
        v.0.clone()
    } else {
        origins.insert("target_commands", Origin::Default);
        DEFAULT_TARGETS.iter().map(|s| s.to_string()).collect()
    };

    let cgroup_root = if let Some(v) = &src.flags.cgroup_root {
        origins.insert("cgroup_root", Origin::Flag("--cgroup-root"));
        CgroupRoot::parse(v).map_err(|message| ConfigError::Flag {
            flag: "--cgroup-root",
            value: v.clone(),
            message,
        })?
    } else if let Some(v) = raw.cgroup_root {
        origins.insert("cgroup_root", Origin::File);
        v
    } else {
        origins.insert("cgroup_root", Origin::Default);
        CgroupRoot(raw::AUTO.into())
    };
    let metrics_addr = match raw.metrics_addr.clone() {
        Some(a) => {
            origins.insert("metrics_addr", Origin::File);
            a.0
        }
        None => {
            origins.insert("metrics_addr", Origin::Default);
            DEFAULT_METRICS_ADDR.parse().ok()
        }
    };

    let state_path = if let Some(v) = &src.flags.state_path {
        origins.insert("state_path", Origin::Flag("--state-path"));
        v.clone()
    } else if let Some(v) = src.env.get("STATE_PATH") {
        origins.insert("state_path", Origin::Env("STATE_PATH"));
        env_over(
            "STATE_PATH",
            "state_path",
            v,
            raw.state_path.as_ref().map(|p| p.display().to_string()),
        );
        PathBuf::from(v)
    } else if let Some(v) = raw.state_path.clone() {
        origins.insert("state_path", Origin::File);
        v
    } else {
        origins.insert("state_path", Origin::Default);
        PathBuf::from(DEFAULT_STATE_PATH)
    };
    if state_path.as_os_str().is_empty() || state_path.file_name().is_none() {
        return Err(file_err(
            "state_path",
            format!("{:?} is not a file path", state_path.display().to_string()),
        ));
    }

    let state_flush_interval = if let Some(v) = src.env.get("STATE_FLUSH_INTERVAL") {
        origins.insert("state_flush_interval", Origin::Env("STATE_FLUSH_INTERVAL"));
        env_over(
            "STATE_FLUSH_INTERVAL",
            "state_flush_interval",
            v,
            raw.state_flush_interval.map(|d| format!("{d:?}")),
        );
        env_parse("STATE_FLUSH_INTERVAL", v, FlushInterval::parse)?
    } else if let Some(v) = raw.state_flush_interval {
        origins.insert("state_flush_interval", Origin::File);
        v
    } else {
        origins.insert("state_flush_interval", Origin::Default);
        FlushInterval::new(Duration::from_secs(30))
    };

    let max_retry_attempts = if let Some(v) = src.env.get("MAX_RETRY_ATTEMPTS") {
        origins.insert("max_retry_attempts", Origin::Env("MAX_RETRY_ATTEMPTS"));
        env_over(
            "MAX_RETRY_ATTEMPTS",
            "max_retry_attempts",
            v,
            raw.max_retry_attempts.map(|n| format!("{n:?}")),
        );
        env_parse("MAX_RETRY_ATTEMPTS", v, RetryAttempts::parse)?
    } else if let Some(v) = raw.max_retry_attempts {
        origins.insert("max_retry_attempts", Origin::File);
        v
    } else {
        origins.insert("max_retry_attempts", Origin::Default);
        RetryAttempts::value(5)
    };

    let reconcile_interval = match raw.reconcile_interval {
        Some(v) => {
            origins.insert("reconcile_interval", Origin::File);
            v.0
        }
        None => {
            origins.insert("reconcile_interval", Origin::Default);
            Duration::from_secs(60)
        }
    };

    let log_level = match src.env.get("LOG_LEVEL") {
        Some(v) => {
            origins.insert("log_level", Origin::Env("LOG_LEVEL"));
            env_parse("LOG_LEVEL", v, parse_log_level)?
        }
        None => {
            origins.insert("log_level", Origin::Default);
            tracing::Level::INFO
        }
    };

    let placement = if let Some(v) = &src.flags.placement {
        origins.insert("placement", Origin::Flag("--placement"));
        Placement::parse(v).map_err(|message| ConfigError::Flag {
            flag: "--placement",
            value: v.clone(),
            message,
        })?
    } else if let Some(v) = raw.placement {
        origins.insert("placement", Origin::File);
        v
    } else {
        origins.insert("placement", Origin::Default);
        Placement::Normal
    };
    origins.insert(
        "forward_all",
        if raw.forward_all.is_some() {
            Origin::File
        } else {
            Origin::Default
        },
    );

    let strict_timeout = match raw.strict_timeout {
        Some(v) => {
            origins.insert("strict_timeout", Origin::File);
            v.0
        }
        None => {
            origins.insert("strict_timeout", Origin::Default);
            DEFAULT_STRICT_TIMEOUT
        }
    };
    origins.insert(
        "job_metrics",
        if raw.job_metrics.is_some() {
            Origin::File
        } else {
            Origin::Default
        },
    );
    origins.insert(
        "govern_containers",
        if raw.govern_containers.is_some() {
            Origin::File
        } else {
            Origin::Default
        },
    );

    let users = read_passwd(src.passwd);
    let default_limits = raw.default_limits.clone().unwrap_or_default();
    let default_filters = raw.filters.clone().unwrap_or_default();
    let commands = raw.commands.clone().unwrap_or_default();
    let targeted: std::collections::HashSet<&String> = target_names.iter().collect();
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
                target_names.join(", ")
            ));
        }
    }
    let mut warned = std::collections::HashSet::new();
    let mut targets = Vec::new();
    let mut command_placement = BTreeMap::new();
    for name in &target_names {
        let cmd = commands.get(name);
        if let Some(p) = cmd.and_then(|c| c.placement) {
            command_placement.insert(name.clone(), p);
        }
        let limits = merge_limits(&default_limits, cmd.and_then(|c| c.limits.as_ref()));
        let raw_filters = merge_filters(&default_filters, cmd.and_then(|c| c.filters.as_ref()));
        let filters = resolve_filters(raw_filters, &users, &mut warnings, &mut warned);
        if let (Some(min), Some(max)) = (filters.min_runtime, filters.max_runtime) {
            if min > max {
                let key = if cmd.and_then(|c| c.filters.as_ref()).is_some() {
                    format!("commands.{name}.filters.min_runtime")
                } else {
                    "filters.min_runtime".to_string()
                };
                return Err(file_err(
                    &key,
                    format!(
                        "min_runtime {} is longer than max_runtime {}: no {name} process could ever be adopted",
                        units::format_go_duration(min),
                        units::format_go_duration(max)
                    ),
                ));
            }
        }
        if let Some(min) = filters.min_runtime.filter(|m| !m.is_zero()) {
            let key = if cmd
                .and_then(|c| c.filters.as_ref())
                .and_then(|f| f.min_runtime)
                .is_some()
            {
                format!("commands.{name}.filters.min_runtime")
            } else {
                "filters.min_runtime".to_string()
            };
            warnings.push(format!(
                "{key} {}: every new {name} runs unconstrained, outside its cgroup, for its first {} before it is placed",
                units::format_go_duration(min),
                units::format_go_duration(min)
            ));
        }
        let govern_containers = cmd
            .and_then(|c| c.govern_containers)
            .or(raw.govern_containers)
            .unwrap_or(false);
        targets.push(Target {
            name: name.clone(),
            limits,
            filters,
            govern_containers,
        });
    }

    Ok(Settings {
        config_file: src.config_file.map(Path::to_path_buf),
        scan_interval: scan_interval.0,
        targets,
        cgroup_root: cgroup_root.0,
        state_path,
        state_flush_interval: state_flush_interval.0,
        max_retry_attempts: max_retry_attempts.get().unwrap_or(0) as u32,
        reconcile_interval,
        log_level,
        placement,
        command_placement,
        forward_all: raw.forward_all.unwrap_or(false),
        strict_timeout,
        job_metrics: raw.job_metrics.unwrap_or_default(),
        metrics_addr,
        origins,
        warnings,
    })
}

fn env_parse<T>(
    var: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    parse(value).map_err(|message| ConfigError::Env {
        var,
        value: value.to_string(),
        message,
    })
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

/// Per-command limits override the defaults field by field.
fn merge_limits(default: &RawLimits, cmd: Option<&RawLimits>) -> Limits {
    let cmd = cmd.cloned().unwrap_or_default();
    Limits {
        cpu_quota: cmd
            .cpu_quota
            .or(default.cpu_quota)
            .and_then(|v| v.get())
            .map(|v| v as u32),
        cpu_weight: cmd
            .cpu_weight
            .or(default.cpu_weight)
            .and_then(|v| v.get())
            .map(|v| v as u32),
        memory_limit: cmd
            .memory_limit
            .or(default.memory_limit)
            .and_then(|v| v.get()),
        pids_max: cmd.pids_max.or(default.pids_max).and_then(|v| v.get()),
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
