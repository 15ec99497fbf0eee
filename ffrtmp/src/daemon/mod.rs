//! The daemon: it starts the owners of the daemon's state and runs the record loop, which
//! only routes messages between them (docs/architecture.md):
//!
//! - the engine (`ffrtmp-place`, `crate::engine`): the table of governed, pending and
//!   skipped processes; the only one that places;
//! - the journal (`journal`, on the record loop): what is written down and shown — the
//!   governed jobs, the counters, health, the state file's contents, log lines;
//! - the scanner (`scanner`, thread `ffrtmp-scan`): the /proc scan, drift, leftovers;
//! - the chore runner (`chores`, a task and the blocking pool): cgroup removal, spare
//!   refills, state writes, after a pause in placements;
//! - the sweeper (`sweeper`, a task): the strict deadline over the ledgers of stops;
//! - the exit set (`process::ExitSet`): the pidfds of the governed processes.
//!
//! `Daemon::run(sources, reloads, shutdown)` needs no BPF and no root: tests drive it with
//! a channel source, a fake cgroup backend and a fixture `/proc`, and read it through an
//! `Observer`, as `/metrics` does.

mod chores;
mod intake;
mod journal;
mod limits;
mod node;
mod owners;
mod router;
mod scanner;
mod startup;
mod sweeper;
mod ticks;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::exec::ExecCounts;
use crate::placer::Placer;
use crate::process::StopLedger;
use crate::record::logging::LogControl;
use crate::record::observe::{self, Observer, Query};
use crate::record::systemd::Notifier;
use crate::sources::EventSource;

/// How the scan is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanRole {
    /// The scan is the source (`--fallback-scan` without eBPF): every `scan_interval`.
    Primary,
    /// Events come from a source; the scan reconciles every `reconcile_interval`.
    Reconcile,
}

/// Options that are not part of the config file.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub scan_role: ScanRole,
    /// Delay between a state change and its write (changes within it are written once).
    pub flush_coalesce: Duration,
    /// Where the daemon publishes its cgroup root and itself (`daemon`: PID, start time and
    /// state path, which `ffrtmp status` reads) and reads `ffrtmp run`'s roots.
    pub runtime_dir: PathBuf,
    /// The placement thread asks for SCHED_FIFO 1 (tests turn it off).
    pub realtime: bool,
    /// How long placements must pause before the record loop writes their outcomes down
    /// and the chore runner starts a chore (cgroup removal, spare refill, state write): on a
    /// small node that CPU would otherwise land beside a target that has just started, or
    /// delay the next placement (bench-exec compare: outside exec → placed p90 0.68 → 0.31
    /// ms with it for chores, on 2 CPUs). Neither waits longer than `chores::MAX_WAIT`.
    pub quiet: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            scan_role: ScanRole::Primary,
            flush_coalesce: Duration::from_millis(200),
            runtime_dir: crate::placer::registry::runtime_dir(),
            realtime: true,
            quiet: Duration::from_millis(2),
        }
    }
}

/// The daemon before it runs: what its owners are made of.
pub struct Daemon {
    settings: Settings,
    opts: Options,
    placer: Arc<Placer>,
    log: LogControl,
    notifier: Notifier,
    ours: Option<Arc<dyn StopLedger>>,
    orphans: Vec<Arc<dyn StopLedger>>,
    counts: Arc<ExecCounts>,
    observer: Observer,
    queries: mpsc::Receiver<Query>,
}

impl Daemon {
    pub fn new(settings: Settings, opts: Options, placer: Placer, log: LogControl) -> Self {
        let (observer, queries) = observe::channel();
        Daemon {
            settings,
            opts,
            placer: Arc::new(placer),
            log,
            notifier: Notifier::default(),
            ours: None,
            orphans: Vec::new(),
            counts: Arc::default(),
            observer,
            queries,
        }
    }

    /// Notify systemd (READY, STATUS, WATCHDOG, STOPPING).
    pub fn with_notifier(mut self, n: Notifier) -> Self {
        self.notifier = n;
        self
    }

    /// The ledger of this daemon's strict stops (the deadline sweep watches it), and the
    /// ledgers dead daemons left, whose stopped processes are placed and resumed.
    pub fn with_ledgers(
        mut self,
        ours: Option<Arc<dyn StopLedger>>,
        orphans: Vec<Arc<dyn StopLedger>>,
    ) -> Self {
        self.ours = ours;
        self.orphans = orphans;
        self
    }

    /// A handle that asks the running daemon for what `/metrics` shows.
    pub fn observer(&self) -> Observer {
        self.observer.clone()
    }

    /// Run until `shutdown` resolves. `reloads` brings new, validated settings (SIGHUP).
    /// Governed processes keep running when it returns.
    pub async fn run(
        self,
        sources: Vec<Box<dyn EventSource>>,
        mut reloads: mpsc::Receiver<Box<Settings>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let Some(mut record_loop) = router::RecordLoop::start(self, sources).await else {
            return;
        };
        record_loop.serve(&mut reloads, shutdown).await;
        record_loop.stop().await;
    }
}
