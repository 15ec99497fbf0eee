//! Start: prepare the cgroup root, publish it, load the state file (its records go to the
//! engine, which governs again those still alive in their cgroups), start the sources, the
//! engine and the other owners, in the order their threads need (the placement thread is
//! made before the main thread steps down from real-time; everything after inherits the
//! step down).

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::chores::{self, Activity, ChoreDone, ChoreRunner};
use super::journal::Journal;
use super::owners::{KernelFeeds, Owners, Watchdog};
use super::scanner::{self, ScanReport, ScannerHandle};
use super::sweeper::{self, Ledgers, SweeperHandle};
use super::ticks::scan_period;
use super::{Daemon, Options, ScanRole};
use crate::config::Settings;
use crate::engine::{self, EngineConfig, Outcome};
use crate::exec::Work;
use crate::matcher::Guard;
use crate::placer::Placer;
use crate::process::exits;
use crate::process::ExitSet;
use crate::record::logging::LogControl;
use crate::record::observe::Query;
use crate::record::state::ProcessRecord;
use crate::record::systemd::Notifier;
use crate::sources::{EventSource, SourceEvent, SourceSinks};

/// The receiving ends the record loop selects over.
pub(super) struct Inbox {
    pub outcomes: mpsc::Receiver<Outcome>,
    pub events: mpsc::Receiver<SourceEvent>,
    pub scans: mpsc::UnboundedReceiver<ScanReport>,
    pub chores: mpsc::UnboundedReceiver<Vec<ChoreDone>>,
    pub swept: mpsc::UnboundedReceiver<u64>,
    pub queries: mpsc::Receiver<Query>,
    /// Keeps the source events' channel open for the loop's life.
    pub events_tx: mpsc::Sender<SourceEvent>,
}

/// Everything the record loop is made of.
pub(super) struct Started {
    pub settings: Arc<Settings>,
    pub opts: Options,
    pub log: LogControl,
    pub notifier: Notifier,
    pub journal: Journal,
    pub owners: Owners,
    pub inbox: Inbox,
}

pub(super) fn start(
    d: Daemon,
    sources: Vec<Box<dyn EventSource>>,
    activity: Activity,
) -> Option<Started> {
    let Daemon {
        settings,
        mut opts,
        placer,
        log,
        notifier,
        ours,
        orphans,
        counts,
        queries,
        ..
    } = d;
    let settings = Arc::new(settings);
    let proc = placer.proc().clone();
    let (exits, mut journal, records) = open_journal(&settings, &opts, &placer)?;

    let (outcome_tx, outcomes) = mpsc::channel::<Outcome>(4096);
    let (events_tx, events) = mpsc::channel::<SourceEvent>(256);
    let (hot_tx, work_tx, engine_inbox) = crate::exec::inbox()
        .map_err(|e| error!("cannot make the placement thread's queues: {e}"))
        .ok()?;
    let feeds = start_sources(
        sources,
        SourceSinks {
            exec: hot_tx,
            events: events_tx.clone(),
        },
    );
    let engine = engine::spawn(
        engine_config(&settings, &opts, &placer, records, &counts),
        engine_inbox,
        work_tx,
        feeds.rings,
        outcome_tx,
    )
    .map_err(|e| error!("cannot start the placement thread: {e}"))
    .ok()?;
    let mut ledgers = Ledgers::new(ours, orphans, &proc);
    for stop in ledgers.take_orphan_stops() {
        let _ = engine.work.send(Work::Orphan(stop));
    }
    step_down();
    name_the_source(&feeds.names, &settings, &mut opts, &mut journal);
    let helpers = spawn_helpers(&placer, &opts, &settings, activity, ledgers)?;
    Some(Started {
        owners: Owners {
            engine,
            sources: feeds.threads,
            scanner: helpers.scanner,
            chores: helpers.chores,
            sweeper: helpers.sweeper,
            exits,
            kernel: feeds.kernel,
            counts,
            watchdog: Watchdog::new(notifier.watchdog_interval()),
            placer,
        },
        inbox: Inbox {
            outcomes,
            events,
            scans: helpers.scans,
            chores: helpers.chores_done,
            swept: helpers.swept,
            queries,
            events_tx,
        },
        settings,
        opts,
        log,
        notifier,
        journal,
    })
}

/// The journal, with what the state file holds (its records go to the engine), and the
/// exit set, sized by the open-files limit.
fn open_journal(
    settings: &Settings,
    opts: &Options,
    placer: &Placer,
) -> Option<(ExitSet, Journal, Vec<ProcessRecord>)> {
    let exits = ExitSet::new(placer.proc().clone(), exits::keep_below())
        .map_err(|e| error!("cannot make the epoll set that watches governed processes exit: {e}"))
        .ok()?;
    let mut journal = Journal::new(settings.state_path.clone(), settings.job_metrics);
    if opts.dry_run {
        journal.dry_run();
    }
    let records = super::node::prepare(settings, opts, placer, &mut journal);
    Some((exits, journal, records))
}

/// What the engine starts with: the settings, the placer, the state file's records to take
/// back, and spares made before it runs.
fn engine_config(
    settings: &Arc<Settings>,
    opts: &Options,
    placer: &Arc<Placer>,
    records: Vec<ProcessRecord>,
    counts: &Arc<crate::exec::ExecCounts>,
) -> EngineConfig {
    let guard = Guard {
        protected: placer.proc().ancestors(std::process::id()),
        cgroup_root: placer.root().to_string(),
        tool_roots: Vec::new(),
    };
    EngineConfig {
        settings: settings.clone(),
        placer: placer.clone(),
        guard,
        dry_run: opts.dry_run,
        runtime_dir: opts.runtime_dir.clone(),
        failure_backoff: scan_period(settings, opts.scan_role)
            .max(std::time::Duration::from_secs(60)),
        readopt: records,
        counts: counts.clone(),
        realtime: opts.realtime,
        spares: super::node::first_spares(settings, opts, placer),
    }
}

/// The owners that run beside the record loop, and where they report.
struct Helpers {
    scanner: ScannerHandle,
    chores: ChoreRunner,
    sweeper: Option<SweeperHandle>,
    scans: mpsc::UnboundedReceiver<ScanReport>,
    chores_done: mpsc::UnboundedReceiver<Vec<ChoreDone>>,
    swept: mpsc::UnboundedReceiver<u64>,
}

/// The scanner, the chore runner and the sweeper; after the step down, so their threads
/// inherit it.
fn spawn_helpers(
    placer: &Arc<Placer>,
    opts: &Options,
    settings: &Settings,
    activity: Activity,
    ledgers: Ledgers,
) -> Option<Helpers> {
    let proc = placer.proc().clone();
    let (scan_tx, scans) = mpsc::unbounded_channel();
    let scanner = scanner::spawn(placer.clone(), proc.clone(), opts.dry_run, scan_tx)
        .map_err(|e| error!("cannot start the scanner thread: {e}"))
        .ok()?;
    let (chore_tx, chores_done) = mpsc::unbounded_channel();
    let chores = chores::spawn(placer.clone(), opts.dry_run, opts.quiet, activity, chore_tx);
    let (swept_tx, swept) = mpsc::unbounded_channel();
    let sweeper = sweeper::spawn(ledgers, proc, settings.strict_timeout, swept_tx);
    Some(Helpers {
        scanner,
        chores,
        sweeper,
        scans,
        chores_done,
        swept,
    })
}

/// What the started sources hand over.
struct Feeds {
    threads: Vec<crate::sources::SourceThread>,
    rings: Vec<Box<dyn crate::exec::Ring>>,
    kernel: KernelFeeds,
    names: Vec<&'static str>,
}

fn start_sources(sources: Vec<Box<dyn EventSource>>, sinks: SourceSinks) -> Feeds {
    let mut f = Feeds {
        threads: Vec::new(),
        rings: Vec::new(),
        kernel: KernelFeeds::default(),
        names: Vec::new(),
    };
    for s in sources {
        let name = s.name();
        match s.start(sinks.clone()) {
            Ok(a) => {
                info!("Event source {name} started");
                f.names.push(name);
                f.threads.extend(a.thread);
                f.rings.extend(a.ring);
                let k = &mut f.kernel;
                k.counters = k.counters.take().or(a.counters);
                k.gate = k.gate.take().or(a.gate);
            }
            Err(e) => error!("Event source {name} could not start: {e}"),
        }
    }
    f
}

/// The placement thread runs real-time (engine::priority); everything on this thread, and
/// every thread it makes from now on (scanner, blocking pool), steps down.
fn step_down() {
    if let Err(e) = crate::engine::priority::housekeeping() {
        warn!("The record loop and housekeeping cannot step down from the process's priority ({e}): they compete with the placement thread and with every transcoder; allow sched_setscheduler and setpriority (the unit's SystemCallFilter=)");
    }
}

/// Which source the journal shows; without an exec source after all, the scan is it.
fn name_the_source(
    names: &[&'static str],
    settings: &Settings,
    opts: &mut Options,
    journal: &mut Journal,
) {
    if names.is_empty() && opts.scan_role == ScanRole::Reconcile {
        opts.scan_role = ScanRole::Primary;
        journal.source_lost();
        warn!(
            "Scanning /proc every {} instead",
            crate::config::units::format_go_duration(settings.scan_interval)
        );
    } else if names.is_empty() {
        journal.set_source("scan".into());
    } else {
        journal.set_source(names.join(","));
    }
}
