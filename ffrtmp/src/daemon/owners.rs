//! The running owners the record loop routes to: the engine and the sources feeding it,
//! the scanner, the chore runner, the sweeper, the exit set, the kernel's counters, and
//! the watchdog's view of the engine.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::chores::ChoreRunner;
use super::scanner::ScannerHandle;
use super::sweeper::SweeperHandle;
use crate::engine::EngineHandle;
use crate::exec::{ExecCounts, Work};
use crate::placer::Placer;
use crate::process::monotonic_ns;
use crate::process::ExitSet;
use crate::record::systemd::Notifier;
use crate::sources::gate::GateHandle;
use crate::sources::{CounterSource, SourceThread};

pub(super) struct Owners {
    pub engine: EngineHandle,
    pub sources: Vec<SourceThread>,
    pub scanner: ScannerHandle,
    pub chores: ChoreRunner,
    pub sweeper: Option<SweeperHandle>,
    pub exits: ExitSet,
    pub kernel: KernelFeeds,
    pub counts: Arc<ExecCounts>,
    pub watchdog: Watchdog,
    pub placer: Arc<Placer>,
}

/// What the kernel sources hand the record loop besides execs: the eBPF program's
/// counters (read every 250 ms) and the exec gate's counters and commands.
#[derive(Default)]
pub(super) struct KernelFeeds {
    pub counters: Option<Box<dyn CounterSource>>,
    pub gate: Option<GateHandle>,
}

impl Owners {
    /// To the engine's work queue. The record loop never waits on it: a full queue (only
    /// when the engine is far behind) leaves a candidate to the next scan.
    pub fn work(&self, w: Work) {
        // An exit changes none of the engine's decisions but for that process, which
        // cannot exec again, and spares are for placements to come: neither need wake the
        // placement thread (a wakeup preempts whatever runs on its CPU); it takes them at
        // its next turn.
        let sent = match w {
            Work::Exited(_) | Work::Spares(_) => self.engine.work.try_send_lazy(w),
            _ => self.engine.work.try_send(w),
        };
        match sent {
            Ok(()) => {}
            // Spares the engine will not get are not left behind: removed off this loop.
            Err(Work::Spares(v)) => {
                warn!("placement queue full; {} spare cgroup(s) removed", v.len());
                let cgroups = v.into_iter().map(|(_, s)| s.cgroup).collect();
                self.chores.push(
                    std::time::Instant::now(),
                    super::chores::Chore::RemoveSpares(cgroups),
                );
            }
            Err(w) => warn!(
                "placement queue full; {} is left to the next scan",
                w.kind()
            ),
        }
    }

    /// Ping systemd's watchdog, but only while the placement thread turns: a stuck loop or
    /// a stuck engine stops the pings, and systemd restarts the daemon.
    pub fn watchdog(&mut self, notifier: &Notifier) {
        let age = Duration::from_nanos(
            monotonic_ns().saturating_sub(self.engine.heartbeat.load(Ordering::Relaxed)),
        );
        self.watchdog.check(&self.engine, age, notifier);
    }
}

/// Whether the watchdog found the engine stuck (logged once per episode).
pub(super) struct Watchdog {
    pub interval: Option<Duration>,
    stuck: bool,
}

impl Watchdog {
    pub fn new(interval: Option<Duration>) -> Self {
        Watchdog {
            interval,
            stuck: false,
        }
    }

    fn check(&mut self, engine: &EngineHandle, age: Duration, notifier: &Notifier) {
        let Some(interval) = self.interval else {
            return;
        };
        // The engine turns at least once a second; a placement longer than the watchdog's
        // period (WatchdogSec) is a stuck kernel write.
        if !engine.is_finished() && age < interval * 2 {
            if std::mem::take(&mut self.stuck) {
                info!("The placement thread is turning again");
            }
            notifier.watchdog();
        } else if !std::mem::replace(&mut self.stuck, true) {
            error!(
                "The placement thread has not turned for {:.1}s; not pinging the watchdog",
                age.as_secs_f64()
            );
        }
    }
}
