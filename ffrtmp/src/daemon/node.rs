//! What the daemon finds and leaves on the node as it starts: the cgroup root (made, its
//! controllers enabled), the runtime directory's files (`ffrtmp run`, `attach` and `status`
//! read them), the state file (its records go to the engine), and the first spare cgroups.

use tracing::{debug, error, info, warn};

use super::journal::Journal;
use super::Options;
use crate::config::Settings;
use crate::placer::limits::needed_controllers;
use crate::placer::Placer;
use crate::record::state::{self, Loaded, ProcessRecord};

/// Everything before the engine starts; returns the state file's records.
pub(super) fn prepare(
    settings: &Settings,
    opts: &Options,
    placer: &Placer,
    journal: &mut Journal,
) -> Vec<ProcessRecord> {
    info!(
        "Auto-attach service started: {}, cgroup root {}, targets {}",
        placer.describe(),
        placer.root(),
        target_names(settings)
    );
    if let Some(note) = placer.move_cost() {
        info!("{note}");
    }
    for w in &settings.warnings {
        warn!("config: {w}");
    }
    if opts.dry_run {
        info!("dry-run: nothing will be created, moved, stopped or written");
    } else {
        prepare_root(settings, placer);
        placer.remove_stray_spares(true);
        publish(settings, opts, placer);
    }
    let records = load_state(settings, opts.dry_run, journal);
    info!(
        "Retry worker started (max_retry_attempts {})",
        settings.max_retry_attempts
    );
    records
}

/// The cgroup root and the daemon itself, published in the runtime directory for `ffrtmp
/// run`, `attach` and `status`.
fn publish(settings: &Settings, opts: &Options, placer: &Placer) {
    let dir = &opts.runtime_dir;
    if let Err(e) = crate::placer::registry::publish_root(dir, placer.root()) {
        warn!(
            "Cannot publish the cgroup root in {} ({e}): `ffrtmp run` and `ffrtmp attach` will not find it and use /ffrtmp",
            dir.display()
        );
    }
    let me = std::process::id();
    let start = placer.proc().stat(me).map_or(0, |s| s.start_time);
    let path =
        std::path::absolute(&settings.state_path).unwrap_or_else(|_| settings.state_path.clone());
    if let Err(e) = crate::placer::registry::publish_daemon(dir, me, start, &path) {
        warn!(
            "Cannot publish the state file's path in {} ({e}): `ffrtmp status` needs --state-path {}",
            dir.display(),
            settings.state_path.display()
        );
    }
}

fn prepare_root(settings: &Settings, placer: &Placer) {
    let report = placer.prepare_root();
    info!(
        "Cgroup root {} ready with controllers: {}",
        placer.root(),
        report
            .available
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (c, why) in &report.missing {
        let needed_by: Vec<&str> = settings
            .targets
            .iter()
            .filter(|t| needed_controllers(&t.limits).contains(c))
            .map(|t| t.name.as_str())
            .collect();
        if needed_by.is_empty() {
            info!(
                "Controller {} unavailable (no configured limit needs it): {why}",
                c.name()
            );
        } else {
            error!(
                "Controller {} unavailable, so the limits of {} that need it will NOT be applied: {why}",
                c.name(),
                needed_by.join(", ")
            );
        }
    }
}

fn load_state(settings: &Settings, dry_run: bool, journal: &mut Journal) -> Vec<ProcessRecord> {
    let path = &settings.state_path;
    let loaded = if dry_run {
        match std::fs::read(path) {
            Ok(b) => {
                match state::parse(&b) {
                    Ok(s) => Loaded::Ok(s),
                    Err(e) => {
                        warn!("dry-run: state file {} is not valid ({e}); a real run would set it aside", path.display());
                        Loaded::Missing
                    }
                }
            }
            Err(_) => Loaded::Missing,
        }
    } else {
        state::load(path)
    };
    match loaded {
        Loaded::Missing => {
            info!("No state file at {}; starting fresh", path.display());
            Vec::new()
        }
        Loaded::SetAside {
            error,
            moved_to,
            rename_error,
        } => {
            match (moved_to, rename_error) {
                (Some(m), _) => warn!("State file {} is unusable ({error}); moved it to {} and starting fresh", path.display(), m.display()),
                (None, Some(r)) => error!("State file {} is unusable ({error}) and could not be moved aside ({r}); starting fresh", path.display()),
                _ => {}
            }
            journal.mark_dirty();
            Vec::new()
        }
        Loaded::Ok(file) => {
            let records: Vec<ProcessRecord> = file.processes.values().cloned().collect();
            info!(
                "State loaded from {} ({} record(s) to check)",
                path.display(),
                records.len()
            );
            journal.restore(file);
            records
        }
    }
}

/// The spares to keep ready: `SPARES_PER_LIMITS` for each distinct set of the limits of
/// targets outside pools.
pub(super) fn spares_wanted(s: &Settings) -> Vec<(crate::config::Limits, usize)> {
    let mut limits: Vec<crate::config::Limits> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // A pooled job's cgroup is made in its pool, never from a spare.
    for t in s.targets.iter().filter(|t| t.pool.is_none()) {
        if seen.insert(&t.limits) {
            limits.push(t.limits.clone());
        }
    }
    limits
        .into_iter()
        .map(|l| (l, crate::placer::SPARES_PER_LIMITS))
        .collect()
}

/// The engine's first spares, made before it starts (none in a dry run).
pub(super) fn first_spares(
    s: &Settings,
    opts: &Options,
    placer: &Placer,
) -> Vec<(crate::config::Limits, crate::placer::Spare)> {
    if opts.dry_run {
        return Vec::new();
    }
    let made = placer.make_spares_for(spares_wanted(s));
    if !made.is_empty() {
        debug!(
            "{} spare cgroup(s) ready under {}",
            made.len(),
            placer.root()
        );
    }
    made
}

/// The target names, for the log.
pub(super) fn target_names(s: &Settings) -> String {
    s.targets
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
