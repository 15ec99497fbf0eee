//! `ffrtmp config check`: validate and print the effective configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, EXIT_CONFIG};
use crate::config::{self, units::format_go_duration, EnvVars, FlagOverrides, Settings, Sources};

pub fn main(config: Option<PathBuf>) -> ExitCode {
    let path = config.or_else(default_config);
    let env = EnvVars::from_process();
    let flags = FlagOverrides::default();
    match config::load(&Sources {
        config_file: path.as_deref(),
        env: &env,
        flags: &flags,
        passwd: std::path::Path::new("/etc/passwd"),
    }) {
        Ok(s) => {
            say!("{}", render(&s).trim_end_matches('\n'));
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_CONFIG, e),
    }
}

/// `/etc/ffrtmp/watch-config.yaml` when it exists.
pub fn default_config() -> Option<PathBuf> {
    let p = PathBuf::from(config::DEFAULT_CONFIG_PATH);
    p.exists().then_some(p)
}

/// The effective configuration as YAML, each top-level value with its origin.
pub fn render(s: &Settings) -> String {
    let mut out = String::new();
    match &s.config_file {
        Some(p) => out.push_str(&format!("# {}: valid\n", p.display())),
        None => out.push_str("# no config file: built-in defaults\n"),
    }
    out.push_str("# effective configuration (precedence: flag > environment > file > default)\n");
    let origin = |k: &str| s.origins.get(k).map(|o| o.to_string()).unwrap_or_default();
    let line = |k: &str, v: String| format!("{:<42} # {}\n", format!("{k}: {v}"), origin(k));
    for (key, value) in top_level(s) {
        out.push_str(&line(key, value));
    }
    out.push_str("# per command, defaults merged field by field:\ncommands:\n");
    render_commands(&mut out, s);
    for w in &s.warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    out
}

/// Each top-level key and its effective value, in the file's order.
fn top_level(s: &Settings) -> Vec<(&'static str, String)> {
    let targets: Vec<&str> = s.targets.iter().map(|t| t.name.as_str()).collect();
    vec![
        ("scan_interval", format_go_duration(s.scan_interval)),
        ("target_commands", format!("[{}]", targets.join(", "))),
        ("cgroup_root", s.cgroup_root.clone()),
        ("state_path", s.state_path.display().to_string()),
        (
            "state_flush_interval",
            format_go_duration(s.state_flush_interval),
        ),
        ("max_retry_attempts", s.max_retry_attempts.to_string()),
        (
            "reconcile_interval",
            format_go_duration(s.reconcile_interval),
        ),
        ("log_level", s.log_level.to_string().to_lowercase()),
        (
            "metrics_addr",
            s.metrics_addr
                .map_or("\"\" (off)".to_string(), |a| a.to_string()),
        ),
        ("placement", format!("{:?}", s.placement).to_lowercase()),
        ("forward_all", s.forward_all.to_string()),
        ("strict_timeout", format_go_duration(s.strict_timeout)),
        ("job_metrics", s.job_metrics.to_string()),
        ("inline_placement", s.inline_placement.to_string()),
        ("gate_timeout", format_go_duration(s.gate_timeout)),
    ]
}

/// Every target with its merged limits and filters.
fn render_commands(out: &mut String, s: &Settings) {
    // Targets without a command section share the defaults: each distinct body is
    // rendered once in a row (100 000 names took 0.85 s, most of it emitting YAML).
    let mut last: Option<(&crate::config::Limits, &crate::config::Filters, String)> = None;
    for t in &s.targets {
        let body = match &last {
            Some((l, f, body)) if **l == t.limits && **f == t.filters => body.clone(),
            _ => {
                let body = yaml_serde::to_string(&yaml_serde::Mapping::from_iter([
                    (
                        yaml_serde::Value::from("limits"),
                        yaml_serde::to_value(&t.limits).unwrap_or_default(),
                    ),
                    (
                        yaml_serde::Value::from("filters"),
                        yaml_serde::to_value(&t.filters).unwrap_or_default(),
                    ),
                ]))
                .unwrap_or_default();
                last = Some((&t.limits, &t.filters, body.clone()));
                body
            }
        };
        out.push_str(&format!("  {}:\n", t.name));
        if t.govern_containers {
            out.push_str("    govern_containers: true\n");
        }
        if let Some(p) = s.command_placement.get(&t.name) {
            out.push_str(&format!(
                "    placement: {}\n",
                format!("{p:?}").to_lowercase()
            ));
        }
        for l in body.lines() {
            out.push_str(&format!("    {l}\n"));
        }
    }
}
