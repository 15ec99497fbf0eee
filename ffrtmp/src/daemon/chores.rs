//! The chore runner: blocking work the placement thread must never wait behind — spare
//! refills, removal of ended jobs' cgroups, state writes — owned by one task with a channel
//! in. It waits for a pause in placements (`quiet` since the engine's last outcome, read
//! from the `Activity` the record loop stamps), so that CPU does not land beside a target
//! that has just started; once the oldest chore has waited `MAX_WAIT` it goes ahead
//! anyway, so a steady stream of targets cannot starve it. The chores due run as one batch
//! on the blocking pool (one wakeup of a pool thread and of the loop for all of them), in
//! order; what they found goes back to the record loop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::error;

use crate::config::Limits;
use crate::placer::{Placer, Spare, UnitLimits, Usage};
use crate::process::monotonic_ns;

/// Blocking work, done one at a time off the loop.
#[derive(Debug)]
pub enum Chore {
    /// Make spare cgroups for the engine's pool: so many with these limits.
    Refill(Vec<(Limits, usize)>),
    /// Remove an ended job's cgroup (once empty), first reading its last numbers if
    /// `/metrics` shows them.
    Remove {
        pid: u32,
        cgroup: String,
        usage: bool,
    },
    /// Remove spares the engine will not use.
    RemoveSpares(Vec<String>),
    /// Write the state file.
    Write { path: PathBuf, bytes: Vec<u8> },
    /// Put a target's limits on the service it runs in (systemd, over D-Bus); `before`:
    /// its values from before its first job, when known.
    LimitUnit {
        unit: String,
        limits: Limits,
        before: Option<UnitLimits>,
    },
    /// Put back a service's values from before its job.
    RestoreUnit { unit: String, before: UnitLimits },
}

/// A finished chore.
#[derive(Debug)]
pub enum ChoreDone {
    /// Spares made, for the engine.
    Made(Vec<(Limits, Spare)>),
    Removed {
        pid: u32,
        cgroup: String,
        usage: Usage,
        result: std::io::Result<bool>,
    },
    Written(std::io::Result<()>),
    /// A service limited: its values before, and now.
    UnitLimited {
        unit: String,
        limits: Limits,
        result: crate::placer::unit::UnitLimited,
    },
    UnitRestored {
        unit: String,
        before: UnitLimits,
        result: Result<(), String>,
    },
}

impl Chore {
    /// What it is, for the one message that needs it (a panic): no allocation per chore.
    fn label(&self) -> &'static str {
        match self {
            Chore::Refill(_) => "spare refill",
            Chore::Remove { .. } => "job cgroup removal",
            Chore::RemoveSpares(_) => "spare removal",
            Chore::Write { .. } => "state write",
            Chore::LimitUnit { .. } => "service limit",
            Chore::RestoreUnit { .. } => "service restore",
        }
    }
}

/// Once the oldest chore (or held outcome) has waited this long it goes ahead without the
/// pause in placements.
pub const MAX_WAIT: Duration = Duration::from_millis(50);
/// At most this many chores go to the blocking pool in one task.
const BATCH: usize = 64;

/// When the engine last reported an outcome (CLOCK_MONOTONIC ns): stamped by the record
/// loop as outcomes arrive, read by the chore runner. An atomic, not a lock.
#[derive(Clone, Default)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    pub fn stamp(&self) {
        self.0.store(monotonic_ns(), Ordering::Relaxed);
    }

    /// When placements will have paused for `quiet` (now, if they have).
    fn quiet_at(&self, quiet: Duration) -> Instant {
        let since = monotonic_ns().saturating_sub(self.0.load(Ordering::Relaxed));
        Instant::now() + quiet.saturating_sub(Duration::from_nanos(since))
    }
}

/// The running chore runner: its inbox (each chore with the moment its wait counts from)
/// and its task.
pub struct ChoreRunner {
    inbox: mpsc::UnboundedSender<(Instant, Chore)>,
    task: tokio::task::JoinHandle<()>,
}

impl ChoreRunner {
    /// A chore whose wait counts from `since` (a held placement's refill counts from the
    /// placement, not from when it was written down).
    pub fn push(&self, since: std::time::Instant, c: Chore) {
        // Gone only at shutdown, after the last chore that matters.
        let _ = self.inbox.send((since.into(), c));
    }

    /// Stop taking chores; the batch running finishes first (its state write must not land
    /// after the last one, nor its refill after the spares are drained). What is still
    /// queued is dropped: the shutdown writes the state and drains the spares itself.
    pub async fn stop(self) {
        drop(self.inbox);
        let _ = self.task.await;
    }
}

/// Start the runner. What each batch did goes to `done`.
pub fn spawn(
    placer: Arc<Placer>,
    dry_run: bool,
    quiet: Duration,
    activity: Activity,
    done: mpsc::UnboundedSender<Vec<ChoreDone>>,
) -> ChoreRunner {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Chore)>();
    let task = tokio::spawn(async move {
        let mut queue: Vec<(Instant, Chore)> = Vec::new();
        loop {
            if queue.is_empty() {
                match rx.recv().await {
                    Some(c) => queue.push(c),
                    None => return,
                }
            }
            let oldest = queue
                .iter()
                .map(|(t, _)| *t)
                .min()
                .unwrap_or_else(Instant::now);
            // Wait for the pause, taking in what arrives meanwhile.
            loop {
                let at = activity.quiet_at(quiet).min(oldest + MAX_WAIT);
                if Instant::now() >= at {
                    break;
                }
                tokio::select! {
                    _ = sleep_until(at) => {}
                    c = rx.recv() => match c {
                        Some(c) => queue.push(c),
                        None => return,
                    },
                }
            }
            while let Ok(c) = rx.try_recv() {
                queue.push(c);
            }
            let n = queue.len().min(BATCH);
            let batch: Vec<Chore> = queue.drain(..n).map(|(_, c)| c).collect();
            let placer = placer.clone();
            match tokio::task::spawn_blocking(move || run_batch(&placer, dry_run, batch)).await {
                Ok(results) => {
                    if done.send(results).is_err() {
                        return;
                    }
                }
                Err(e) => error!("a batch of chores did not finish: {e}"),
            }
        }
    });
    ChoreRunner { inbox: tx, task }
}

/// One batch, in order. A chore that panics loses its own result, not the batch's.
fn run_batch(placer: &Placer, dry_run: bool, batch: Vec<Chore>) -> Vec<ChoreDone> {
    batch
        .into_iter()
        .filter_map(|chore| {
            let what = chore.label();
            // A service's limit that panicked is answered as failed: its unit is not left
            // marked as being limited.
            let unit = match &chore {
                Chore::LimitUnit { unit, limits, .. } => Some((unit.clone(), limits.clone())),
                _ => None,
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(placer, dry_run, chore)))
                .map_err(|_| error!("a chore ({what}) panicked; the others of its batch go on"))
                .ok()
                .or_else(|| {
                    unit.map(|(unit, limits)| ChoreDone::UnitLimited {
                        unit,
                        limits,
                        result: Err((None, "the chore panicked".into())),
                    })
                })
        })
        .collect()
}

fn run(placer: &Placer, dry_run: bool, chore: Chore) -> ChoreDone {
    match chore {
        Chore::Refill(wanted) => ChoreDone::Made(placer.make_spares_for(wanted)),
        Chore::Remove { pid, cgroup, usage } => {
            let usage = if usage {
                placer.final_usage(&cgroup)
            } else {
                Usage::default()
            };
            let result = if dry_run {
                Ok(true)
            } else {
                placer.remove_if_empty(&cgroup)
            };
            ChoreDone::Removed {
                pid,
                cgroup,
                usage,
                result,
            }
        }
        Chore::RemoveSpares(v) => {
            placer.remove_spares(v);
            ChoreDone::Made(Vec::new())
        }
        Chore::Write { path, bytes } => {
            ChoreDone::Written(crate::durable::write_atomic(&path, &bytes))
        }
        Chore::LimitUnit {
            unit,
            limits,
            before,
        } => ChoreDone::UnitLimited {
            result: placer.limit_unit(&unit, &limits, before),
            unit,
            limits,
        },
        Chore::RestoreUnit { unit, before } => ChoreDone::UnitRestored {
            result: placer.restore_unit(&unit, &before),
            unit,
            before,
        },
    }
}
