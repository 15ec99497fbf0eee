//! The strict deadline's sweeper: owns the ledgers of strict stops (this daemon's, and
//! those dead daemons left) and resumes every process stopped longer than
//! `strict_timeout`, placed or not; it retires a dead daemon's ledger once it is empty.
//! A task with a channel in (a new timeout at reload); what it resumed goes back to the
//! record loop as a count. When the daemon stops it resumes what is still stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::config::units::format_go_duration;
use crate::process::monotonic_ns;
use crate::process::{ProcFs, Resumed, StopLedger, Stopped};

/// A ledger of strict stops the deadline applies to.
struct Ledger {
    ledger: Arc<dyn StopLedger>,
    /// A dead daemon's: retired once empty. Its deadline counts from when we took it over.
    orphan: bool,
    since_ns: u64,
}

/// The ledgers, before the sweeper runs: the stops dead daemons left are handed to the
/// engine (`orphan_stops`) first.
pub struct Ledgers {
    ledgers: Vec<Ledger>,
    orphan_stops: Vec<Stopped>,
}

impl Ledgers {
    /// This daemon's ledger, and the ledgers dead daemons left, whose stopped processes
    /// are placed and resumed.
    pub fn new(
        ours: Option<Arc<dyn StopLedger>>,
        orphans: Vec<Arc<dyn StopLedger>>,
        proc: &ProcFs,
    ) -> Ledgers {
        let now = monotonic_ns();
        let mut l = Ledgers {
            ledgers: ours
                .into_iter()
                .map(|ledger| Ledger {
                    ledger,
                    orphan: false,
                    since_ns: 0,
                })
                .collect(),
            orphan_stops: Vec::new(),
        };
        for ledger in orphans {
            let entries = ledger.entries();
            if !entries.is_empty() {
                warn!(
                    "{} process(es) were stopped for strict placement by a daemon that is gone ({}); placing and resuming them",
                    entries.len(),
                    ledger.describe()
                );
            }
            for (key, _) in entries {
                l.orphan_stops
                    .push(Stopped::claim(ledger.clone(), key, proc));
            }
            l.ledgers.push(Ledger {
                ledger,
                orphan: true,
                since_ns: now,
            });
        }
        l
    }

    /// The stops left by dead daemons, for the engine to place and resume.
    pub fn take_orphan_stops(&mut self) -> Vec<Stopped> {
        std::mem::take(&mut self.orphan_stops)
    }
}

/// The running sweeper: its inbox (new timeouts) and its task.
pub struct SweeperHandle {
    tx: mpsc::UnboundedSender<Duration>,
    task: tokio::task::JoinHandle<()>,
}

impl SweeperHandle {
    pub fn set_timeout(&self, t: Duration) {
        let _ = self.tx.send(t);
    }

    /// Stop: the sweeper resumes what is still stopped, retires empty ledgers, returns.
    pub async fn stop(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Start sweeping, `None` when there is no ledger. Counts of processes resumed unplaced go
/// to `resumed`.
pub fn spawn(
    ledgers: Ledgers,
    proc: ProcFs,
    timeout: Duration,
    resumed: mpsc::UnboundedSender<u64>,
) -> Option<SweeperHandle> {
    if ledgers.ledgers.is_empty() {
        return None;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Duration>();
    let mut s = Sweeper {
        ledgers: ledgers.ledgers,
        proc,
        timeout,
    };
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.period());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let n = s.sweep();
                    if n > 0 {
                        let _ = resumed.send(n);
                    }
                }
                t = rx.recv() => match t {
                    Some(t) => {
                        s.timeout = t;
                        tick = tokio::time::interval(s.period());
                        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    }
                    None => return s.finish(),
                },
            }
        }
    });
    Some(SweeperHandle { tx, task })
}

struct Sweeper {
    ledgers: Vec<Ledger>,
    proc: ProcFs,
    timeout: Duration,
}

impl Sweeper {
    /// A quarter of the timeout, between 50 ms and 1 s.
    fn period(&self) -> Duration {
        (self.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Resume every stop older than the timeout (counted from the stop, or from when this
    /// daemon took over a dead daemon's ledger); retire empty dead ledgers. How many were
    /// resumed by this sweep.
    fn sweep(&mut self) -> u64 {
        let timeout = self.timeout.as_nanos() as u64;
        let now = monotonic_ns();
        let mut resumed = 0;
        let proc = &self.proc;
        self.ledgers.retain(|l| {
            let entries = l.ledger.entries();
            if entries.is_empty() && l.orphan {
                debug!(
                    "Retiring {}: every stop in it was resumed",
                    l.ledger.describe()
                );
                l.ledger.retire();
                return false;
            }
            for (key, stopped_at) in entries {
                if now.saturating_sub(stopped_at.max(l.since_ns)) < timeout {
                    continue;
                }
                let age = now.saturating_sub(stopped_at);
                if Stopped::claim(l.ledger.clone(), key, proc).resume() == Resumed::Now {
                    resumed += 1;
                    warn!(
                        pid = key.tgid,
                        "PID {} was stopped for strict placement {:.1}s ago and is not placed yet; resumed it unplaced (strict_timeout {}); it is placed as soon as the placement goes through",
                        key.tgid,
                        age as f64 / 1e9,
                        format_go_duration(self.timeout)
                    );
                }
            }
            true
        });
        resumed
    }

    /// The daemon stops: sources and engine are gone, so their stops were resumed when
    /// they dropped. A stop the kernel made after the reader's last read is still in a
    /// ledger: this daemon will not place it, and a removed package starts no successor,
    /// so it is resumed unplaced rather than left for a next daemon that may never come.
    fn finish(self) {
        for l in &self.ledgers {
            for (key, _) in l.ledger.entries() {
                let s = Stopped::claim(l.ledger.clone(), key, &self.proc);
                if s.resume() == Resumed::Now {
                    warn!(
                        pid = key.tgid,
                        "PID {} was stopped for strict placement when the daemon stopped; resumed it unplaced",
                        key.tgid
                    );
                }
            }
            if l.ledger.entries().is_empty() {
                l.ledger.retire();
            }
        }
    }
}
