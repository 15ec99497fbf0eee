//! The daemon: it wires sources → engine → record, and runs the record loop.
//!
//! Threads and owners (docs/architecture.md):
//! - sources (the eBPF ring reader, `ffrtmp-ring`) hand exec notices to the engine;
//! - the engine (`ffrtmp-place`, `crate::engine`) owns the table of governed processes and
//!   is the only one that places;
//! - the record loop (this module, on the main thread's tokio runtime) owns everything
//!   that is written down or shown: the journal of governed processes (state file,
//!   `/metrics`, `ffrtmp status`), health, statistics, logs, exit watches, and the
//!   housekeeping (scans, drift, cgroup removal, spare refills, state writes, the strict
//!   deadline), whose blocking parts run on tokio's blocking pool, one at a time.
//!
//! `Daemon::run(sources, control)` needs no BPF and no root: tests drive it with a
//! channel source, a fake cgroup backend and a fixture `/proc`.

mod housekeeping;
mod outcomes;
mod startup;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep_until, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use crate::config::{Limits, Settings};
use crate::engine::{self, EngineConfig, EngineHandle, Outcome, Work};
use crate::matcher::Guard;
use crate::placer::{monotonic_ns, Placer};
use crate::process::{ExitSet, ProcFs, ProcessId, Resumed, StopLedger, Stopped};
use crate::record::health::Health;
use crate::record::logging::LogControl;
use crate::record::metrics::{SourceCounters, Telemetry};
use crate::record::state::{ProcessRecord, StateFile};
use crate::record::systemd::Notifier;
use crate::sources::scan::{Note, Scanner};
use crate::sources::{EventSource, SourceEvent, SourceSinks, SourceThread};

pub use housekeeping::ScanReport;

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
    /// Where the daemon publishes its cgroup root and reads `ffrtmp run`'s roots.
    pub runtime_dir: PathBuf,
    /// The placement thread asks for SCHED_FIFO 1 (tests turn it off).
    pub realtime: bool,
    /// How long placements must pause before the record loop writes their outcomes down
    /// and starts a chore (cgroup removal, spare refill, state write): on a small node that
    /// CPU would otherwise land beside a target that has just started, or delay the next
    /// placement (bench-exec compare: outside exec → placed p90 0.68 → 0.31 ms with it for
    /// chores, on 2 CPUs). Neither waits longer than `CHORE_MAX_WAIT`.
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

/// Messages from the outside (signal handlers).
#[derive(Debug)]
pub enum Control {
    /// A new, already validated config (SIGHUP).
    Reload(Box<Settings>),
    /// Flush state and stop (SIGTERM/SIGINT). Governed processes keep running.
    Shutdown,
}

/// A governed process as the record loop knows it: what is persisted and shown.
struct Journaled {
    id: ProcessId,
    record: ProcessRecord,
}

impl Journaled {
    /// Its job cgroup (empty for a predecessor's record that named none).
    fn cgroup(&self) -> &str {
        self.record.cgroup.as_deref().unwrap_or("")
    }
}

/// Blocking work, done one at a time off the loop.
enum Chore {
    /// Create spare cgroups for these limits again.
    Refill(Vec<Limits>),
    /// Read an ended job's last numbers and remove its cgroup (once empty).
    Remove { pid: u32, cgroup: String },
    /// Remove every spare (the limits changed).
    DrainSpares,
    /// Write the state file.
    Write { path: PathBuf, bytes: Vec<u8> },
}

impl Chore {
    /// What it is, for the one message that needs it (a panic): no allocation per chore.
    fn label(&self) -> &'static str {
        match self {
            Chore::Refill(_) => "spare refill",
            Chore::Remove { .. } => "job cgroup removal",
            Chore::DrainSpares => "spare drain",
            Chore::Write { .. } => "state write",
        }
    }
}

/// Chores and outcomes wait for a pause in placements (`Options::quiet`), but once the
/// oldest has waited this long they go ahead without it, so that a steady stream of
/// targets more often than the pause still gets its cgroups removed, its spares refilled
/// and its placements written down.
const CHORE_MAX_WAIT: Duration = Duration::from_millis(50);

/// A ledger of strict stops the deadline applies to.
struct Ledger {
    ledger: Arc<dyn StopLedger>,
    /// A dead daemon's: retired once empty. Its deadline counts from when we took it over.
    orphan: bool,
    since_ns: u64,
}

pub struct Daemon {
    settings: Arc<Settings>,
    opts: Options,
    placer: Arc<Placer>,
    proc: ProcFs,
    guard: Guard,
    journal: BTreeMap<u32, Box<Journaled>>,
    state: StateFile,
    dirty_since: Option<Instant>,
    health: Health,
    telemetry: Arc<Mutex<Telemetry>>,
    counters: Arc<SourceCounters>,
    notifier: Notifier,
    log: LogControl,
    /// `None` while a scan runs on the blocking pool; what it is told meanwhile waits in
    /// `scanner_notes` (`tell_scanner`).
    scanner: Option<Scanner>,
    scanner_notes: Vec<Note>,
    /// A scan was asked for while one ran: run it next (the reason of the last ask).
    scan_again: Option<&'static str>,
    leftovers: Vec<String>,
    chores: VecDeque<Chore>,
    /// When the placement thread last reported a result: chores wait for a quiet moment.
    last_outcome: Instant,
    /// Outcomes received and not yet written down, oldest first: they wait for the same
    /// quiet moment as chores (`release_outcomes`), and anything that reads the journal
    /// takes them in first.
    held: Vec<Outcome>,
    held_since: Option<Instant>,
    /// Since when the oldest queued chore (or the held outcome that queued it) waits.
    chores_since: Option<Instant>,
    ledgers: Vec<Ledger>,
    /// Stops taken over from dead daemons, handed to the engine once it runs.
    orphan_stops: Vec<crate::process::Stopped>,
    /// The event source stopped: switch to scanning.
    source_down: bool,
    /// The governed set or health changed: publish before the next wait.
    republish: bool,
    engine: Option<EngineHandle>,
    /// The pidfds of the governed processes, in one epoll set (made when `run` starts:
    /// it registers with the runtime).
    exits: Option<ExitSet>,
    /// The watchdog found the engine stuck (logged once per episode).
    engine_stuck: bool,
}

impl Daemon {
    pub fn new(settings: Settings, opts: Options, placer: Placer, log: LogControl) -> Self {
        let proc = placer.proc().clone();
        let guard = Guard {
            protected: proc.ancestors(std::process::id()),
            cgroup_root: placer.root().to_string(),
            tool_roots: Vec::new(),
        };
        let telemetry = Telemetry {
            job_metrics: settings.job_metrics,
            ..Default::default()
        };
        Daemon {
            scanner: Some(Scanner::new(proc.clone())),
            scanner_notes: Vec::new(),
            settings: Arc::new(settings),
            opts,
            placer: Arc::new(placer),
            proc,
            guard,
            journal: BTreeMap::new(),
            state: StateFile::default(),
            dirty_since: None,
            health: Health::default(),
            telemetry: Arc::new(Mutex::new(telemetry)),
            counters: Arc::new(SourceCounters::default()),
            notifier: Notifier::default(),
            log,
            scan_again: None,
            leftovers: Vec::new(),
            chores: VecDeque::new(),
            last_outcome: Instant::now(),
            held: Vec::new(),
            held_since: None,
            chores_since: None,
            ledgers: Vec::new(),
            orphan_stops: Vec::new(),
            source_down: false,
            republish: true,
            engine: None,
            exits: None,
            engine_stuck: false,
        }
    }

    /// Share telemetry with a `/metrics` server.
    pub fn with_telemetry(mut self, t: Arc<Mutex<Telemetry>>) -> Self {
        t.lock().expect("telemetry lock").job_metrics = self.settings.job_metrics;
        self.telemetry = t;
        self
    }

    /// Where the sources and the engine keep their counters for `/metrics`.
    pub fn with_counters(mut self, c: Arc<SourceCounters>) -> Self {
        self.counters = c;
        self
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
        let now = monotonic_ns();
        if let Some(l) = ours {
            self.ledgers.push(Ledger {
                ledger: l,
                orphan: false,
                since_ns: 0,
            });
        }
        for l in orphans {
            let entries = l.entries();
            if !entries.is_empty() {
                warn!(
                    "{} process(es) were stopped for strict placement by a daemon that is gone ({}); placing and resuming them",
                    entries.len(),
                    l.describe()
                );
            }
            for (key, _) in entries {
                self.orphan_stops
                    .push(crate::process::Stopped::claim(l.clone(), key, &self.proc));
            }
            self.ledgers.push(Ledger {
                ledger: l,
                orphan: true,
                since_ns: now,
            });
        }
        self
    }

    pub(super) fn telemetry(&self) -> std::sync::MutexGuard<'_, Telemetry> {
        self.telemetry.lock().expect("telemetry lock")
    }

    fn status_line(&self) -> String {
        let t = self.telemetry();
        format!(
            "source {}, governed {}, {}",
            t.source,
            t.jobs.len(),
            t.health
        )
    }

    /// Publish health for `/metrics`, `/healthz` and systemd's STATUS.
    fn publish(&mut self) {
        {
            let mut t = self.telemetry();
            t.health = self.health.status;
            t.scan_failures = self.health.scan_failures;
            t.attach_failures = self.health.attach_failures;
            t.limits_missing = self.health.limits_missing;
        }
        let status = self.status_line();
        self.notifier.status(&status);
    }

    fn scan_period(&self) -> Duration {
        match self.opts.scan_role {
            ScanRole::Primary => self.settings.scan_interval,
            ScanRole::Reconcile => self.settings.reconcile_interval,
        }
    }

    fn work(&self, w: Work) {
        if let Some(e) = &self.engine {
            // An exit changes none of the engine's decisions but for that process, which
            // cannot exec again: it need not wake the placement thread.
            let sent = match w {
                Work::Exited(_) => e.work.try_send_lazy(w),
                _ => e.work.try_send(w),
            };
            if let Err(err) = sent {
                // Full only when the engine is far behind; the next scan sends it again.
                warn!("placement queue full; {err:?} is left to the next scan");
            }
        }
    }

    /// Run until shutdown.
    pub async fn run(
        mut self,
        sources: Vec<Box<dyn EventSource>>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let (outcome_tx, mut outcome_rx) = mpsc::channel::<Outcome>(4096);
        let (event_tx, mut event_rx) = mpsc::channel::<SourceEvent>(256);
        match ExitSet::new() {
            Ok(set) => self.exits = Some(set),
            Err(e) => {
                error!("cannot make the epoll set that watches governed processes exit: {e}");
                return;
            }
        }

        let records = self.startup();
        let (hot_tx, work_tx, inbox) = match engine::inbox() {
            Ok(x) => x,
            Err(e) => {
                error!("cannot make the placement thread's queues: {e}");
                return;
            }
        };
        let sinks = SourceSinks {
            exec: hot_tx,
            events: event_tx.clone(),
            counters: self.counters.clone(),
        };
        let mut running: Vec<SourceThread> = Vec::new();
        let mut rings = Vec::new();
        let mut kernel_counters = None;
        let mut names = Vec::new();
        for s in sources {
            let name = s.name();
            match s.start(sinks.clone()) {
                Ok(a) => {
                    info!("Event source {name} started");
                    names.push(name);
                    running.extend(a.thread);
                    rings.extend(a.ring);
                    kernel_counters = kernel_counters.or(a.counters);
                }
                Err(e) => error!("Event source {name} could not start: {e}"),
            }
        }
        drop(sinks);
        let engine = match engine::spawn(
            EngineConfig {
                settings: self.settings.clone(),
                placer: self.placer.clone(),
                guard: self.guard.clone(),
                dry_run: self.opts.dry_run,
                runtime_dir: self.opts.runtime_dir.clone(),
                failure_backoff: self.scan_period().max(Duration::from_secs(60)),
                readopt: records,
                counters: self.counters.clone(),
                realtime: self.opts.realtime,
            },
            inbox,
            work_tx,
            rings,
            outcome_tx,
        ) {
            Ok(e) => e,
            Err(e) => {
                error!("cannot start the placement thread: {e}");
                return;
            }
        };
        for stop in std::mem::take(&mut self.orphan_stops) {
            let _ = engine.work.send(Work::Orphan(stop));
        }
        self.engine = Some(engine);
        // The placement thread runs real-time (engine::priority); everything on this
        // thread, and the blocking pool it spawns later, steps down.
        if let Err(e) = crate::engine::priority::housekeeping() {
            warn!("The record loop and housekeeping cannot step down from the process's priority ({e}): they compete with the placement thread and with every transcoder; allow sched_setscheduler and setpriority (the unit's SystemCallFilter=)");
        }
        if names.is_empty() && self.opts.scan_role == ScanRole::Reconcile {
            self.source_down = true;
        }
        self.telemetry().source = if names.is_empty() {
            "scan".into()
        } else {
            names.join(",")
        };

        // The source is attached and the first scan is done: now systemd may call us ready.
        let first = self.start_scan("startup");
        if let Some(job) = first {
            match job.await {
                Ok(report) => self.finish_scan(report),
                Err(e) => error!("the startup scan failed: {e}"),
            }
        }
        self.publish();
        self.republish = false;
        let status = self.status_line();
        self.notifier.ready(&status);

        let watchdog = self.notifier.watchdog_interval();
        let mut wd_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        wd_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let period = self.scan_period();
        let mut scan_tick = interval_at(tokio::time::Instant::now() + period, period);
        scan_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let flush = self.settings.state_flush_interval;
        let mut flush_tick = interval_at(tokio::time::Instant::now() + flush, flush);
        flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let sweep_every = (self.settings.strict_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut sweep_tick = tokio::time::interval(sweep_every);
        sweep_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut counter_tick = tokio::time::interval(Duration::from_millis(250));
        counter_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let mut scan_job: Option<tokio::task::JoinHandle<ScanReport>> = None;
        let mut chore_job: Option<tokio::task::JoinHandle<Vec<housekeeping::ChoreDone>>> = None;
        loop {
            if scan_job.is_none() {
                if let Some(reason) = self.scan_again.take() {
                    scan_job = self.start_scan(reason);
                }
            }
            // Chores (cgroup removal, spare refills, state writes) and the writing down of
            // outcomes wait for a pause in placements (`Options::quiet`).
            if self.chores.is_empty() {
                self.chores_since = None;
            } else if self.chores_since.is_none() {
                self.chores_since = Some(Instant::now());
            }
            let chore_at = self
                .chores_since
                .map_or(self.last_outcome + self.opts.quiet, |since| {
                    (self.last_outcome + self.opts.quiet).min(since + CHORE_MAX_WAIT)
                });
            if chore_job.is_none() && !self.chores.is_empty() && Instant::now() >= chore_at {
                chore_job = self.start_chores();
            }
            let chore_wait = chore_job.is_none() && !self.chores.is_empty();
            let release_at = self
                .held_since
                .map(|since| (self.last_outcome + self.opts.quiet).min(since + CHORE_MAX_WAIT));
            let coalesced = self.dirty_since.map(|t| t + self.opts.flush_coalesce);
            tokio::select! {
                Some(o) = outcome_rx.recv() => self.hold(o),
                _ = sleep_until(release_at.unwrap_or_else(Instant::now).into()), if release_at.is_some() => self.release_outcomes(),
                _ = sleep_until(chore_at.into()), if chore_wait => {}
                // `event_tx` lives as long as this loop: the channel never closes.
                Some(ev) = event_rx.recv() => self.on_source_event(ev),
                ids = self.exits.as_mut().expect("made at the start of run").exited() => {
                    for id in ids {
                        self.on_exit(id);
                    }
                }
                r = async { scan_job.as_mut().expect("guarded").await }, if scan_job.is_some() => {
                    scan_job = None;
                    match r {
                        Ok(report) => self.finish_scan(report),
                        Err(e) => {
                            error!("a scan failed: {e}");
                            self.give_back_scanner(Scanner::new(self.proc.clone()));
                        }
                    }
                }
                r = async { chore_job.as_mut().expect("guarded").await }, if chore_job.is_some() => {
                    chore_job = None;
                    self.finish_chores(r);
                }
                // Pinged from the loop, and only while the placement thread turns: a stuck
                // loop or a stuck engine stops the pings, and systemd restarts the daemon.
                _ = wd_tick.tick(), if watchdog.is_some() => self.watchdog(watchdog.unwrap_or_default()),
                _ = scan_tick.tick() => self.ask_scan("interval"),
                _ = flush_tick.tick() => self.flush(),
                _ = sweep_tick.tick(), if !self.ledgers.is_empty() => self.sweep_stops(),
                _ = counter_tick.tick(), if kernel_counters.is_some() => {
                    let r = kernel_counters.as_mut().expect("guarded").read();
                    self.on_kernel_counters(r);
                }
                _ = sleep_until(coalesced.unwrap_or_else(Instant::now).into()), if coalesced.is_some() => self.flush(),
                c = control.recv() => match c {
                    Some(Control::Reload(s)) => {
                        let old = self.scan_period();
                        self.notifier.reloading();
                        self.reload(*s);
                        self.notifier.reloaded();
                        let new = self.scan_period();
                        if old != new {
                            scan_tick = interval_at(tokio::time::Instant::now() + new, new);
                            scan_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        }
                        let f = self.settings.state_flush_interval;
                        if f != flush_tick.period() {
                            flush_tick = interval_at(tokio::time::Instant::now() + f, f);
                            flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        }
                    }
                    Some(Control::Shutdown) | None => break,
                },
            }
            if std::mem::take(&mut self.source_down) && self.opts.scan_role == ScanRole::Reconcile {
                // Without exec events, new processes are found only by scanning: scan at
                // scan_interval as in --fallback-scan mode, and say so in health.
                self.opts.scan_role = ScanRole::Primary;
                let period = self.scan_period();
                scan_tick = interval_at(tokio::time::Instant::now() + period, period);
                scan_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                self.telemetry().source = "scan".into();
                warn!(
                    "Scanning /proc every {} instead",
                    crate::config::units::format_go_duration(period)
                );
                if self.health.source(false).is_some() {
                    self.log_health();
                }
                self.republish = true;
            }
            if self.republish {
                self.republish = false;
                self.publish();
            }
        }

        self.notifier.stopping();
        // Sources first (the eBPF reader detaches its hook and resumes the stops still in
        // its ring), then the engine (it resumes what it holds), reading the outcomes they
        // send on the way so neither waits on a full queue.
        let engine = self.engine.take().expect("engine started above");
        let stopping = tokio::task::spawn_blocking(move || {
            for s in running {
                s.stop();
            }
            engine.shutdown();
        });
        self.release_outcomes();
        while let Some(o) = outcome_rx.recv().await {
            self.on_outcome(o);
        }
        let _ = stopping.await;
        // A batch still running finishes first: its state write must not land after the
        // last one, nor its refill after the spares are drained.
        if let Some(job) = chore_job.take() {
            self.finish_chores(job.await);
        }
        drop(event_tx);
        while let Ok(ev) = event_rx.try_recv() {
            self.on_source_event(ev);
        }
        self.shutdown();
    }

    /// The kernel's counters: into `/metrics`; losses and failed stops acted upon.
    fn on_kernel_counters(&mut self, r: crate::sources::ebpf::counters::CounterReading) {
        self.counters.store_kernel(r.totals);
        if r.skipped > 0 {
            // Most skipped execs are not targets: reconcile, count, but do not warn.
            debug!(
                "the kernel skipped the exec hook for {} exec(s) (it was running on that CPU); reconciling",
                r.skipped
            );
            self.ask_scan("the kernel skipped the exec hook");
        }
        if r.lost > 0 {
            self.on_source_event(SourceEvent::Lost {
                source: "ebpf",
                count: r.lost,
            });
        }
        if r.unstopped > 0 {
            self.on_source_event(SourceEvent::StopsFailed {
                source: "ebpf",
                count: r.unstopped,
            });
        }
    }

    fn on_source_event(&mut self, ev: SourceEvent) {
        self.release_outcomes();
        match ev {
            SourceEvent::Lost { source, count } => {
                self.state.statistics.total_events_lost += count;
                self.telemetry().events_lost += count;
                warn!(
                    source,
                    lost = count,
                    "Event source {source} lost {count} event(s); reconciling now"
                );
                self.tell_scanner(Note::Full);
                self.ask_scan("events lost");
            }
            SourceEvent::StopsFailed { source, count } => {
                warn!(
                    source,
                    count,
                    "Event source {source}: {count} strict target(s) could not be stopped at exec (bpf_send_signal failed or the ledger of stops is full); they ran before their placement"
                );
            }
            SourceEvent::Undecodable { source, error } => self.undecodable(source, &error),
            SourceEvent::Failed { source, error } => {
                error!(source, "Event source {source} failed: {error}");
                self.source_down = true;
            }
        }
    }

    pub(super) fn undecodable(&mut self, source: &str, error: &str) {
        self.telemetry().undecodable += 1;
        error!(
            source,
            "Event source {source}: an undecodable record ({error}); the kernel object and the agent disagree on ExecEvent — rebuild both (cargo xtask build-ebpf, then cargo build). The reconciliation scan finds its process"
        );
        self.ask_scan("undecodable event");
    }

    fn watchdog(&mut self, interval: Duration) {
        let Some(e) = &self.engine else { return };
        let age = Duration::from_nanos(
            monotonic_ns().saturating_sub(e.heartbeat.load(Ordering::Relaxed)),
        );
        // The engine turns at least once a second; a placement longer than the watchdog's
        // period (WatchdogSec) is a stuck kernel write.
        if !e.is_finished() && age < interval * 2 {
            if std::mem::take(&mut self.engine_stuck) {
                info!("The placement thread is turning again");
            }
            self.notifier.watchdog();
        } else if !std::mem::replace(&mut self.engine_stuck, true) {
            error!(
                "The placement thread has not turned for {:.1}s; not pinging the watchdog",
                age.as_secs_f64()
            );
        }
    }

    fn reload(&mut self, new: Settings) {
        self.release_outcomes();
        let mut new = new;
        if new.cgroup_root != self.settings.cgroup_root {
            warn!(
                "cgroup_root changed from {} to {}: a new root takes a restart; keeping {}",
                self.settings.cgroup_root, new.cgroup_root, self.settings.cgroup_root
            );
            new.cgroup_root = self.settings.cgroup_root.clone();
        }
        if new.metrics_addr != self.settings.metrics_addr {
            warn!(
                "metrics_addr changed from {:?} to {:?}: takes a restart; /metrics stays where it is",
                self.settings.metrics_addr, new.metrics_addr
            );
            new.metrics_addr = self.settings.metrics_addr;
        }
        if new.state_path != self.settings.state_path {
            warn!(
                "state_path changed from {} to {}: takes a restart; keeping the old path",
                self.settings.state_path.display(),
                new.state_path.display()
            );
            new.state_path = self.settings.state_path.clone();
        }
        if new.forward_all && !self.settings.forward_all {
            warn!("forward_all turned on: the ring buffer keeps the size it got at start (sized for filtered events); a restart sizes it for every exec");
        }
        for w in &new.warnings {
            warn!("config: {w}");
        }
        self.log.set_level(new.log_level);
        self.telemetry().job_metrics = new.job_metrics;
        self.settings = Arc::new(new);
        self.work(Work::Reload(self.settings.clone()));
        if !self.opts.dry_run {
            // Limits may have changed: spares carry the old ones.
            self.chores.push_back(Chore::DrainSpares);
            self.chores.push_back(Chore::Refill(self.target_limits()));
        }
        // Targets or filters may have changed: look at every process again.
        self.tell_scanner(Note::ForgetAll);
        info!(
            "Configuration reloaded from {}: targets {}; governed processes keep their limits",
            self.settings
                .config_file
                .as_ref()
                .map_or("defaults".into(), |p| p.display().to_string()),
            self.target_names()
        );
        self.ask_scan("reload");
    }

    fn target_names(&self) -> String {
        self.settings
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn target_limits(&self) -> Vec<Limits> {
        self.settings
            .targets
            .iter()
            .map(|t| t.limits.clone())
            .collect()
    }

    fn mark_dirty(&mut self) {
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    fn shutdown(mut self) {
        self.flush_now();
        if !self.opts.dry_run {
            self.placer.drain_spares();
        }
        // Sources and engine are gone, so their stops were resumed when they dropped. A
        // stop the kernel made after the reader's last read is still in a ledger: this
        // daemon will not place it, and a removed package starts no successor, so it is
        // resumed unplaced rather than left for a next daemon that may never come.
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
        if let Some(k) = self.counters.kernel() {
            info!(
                "Kernel program totals (as last read): {} exec(s) seen, {} forwarded, {} lost to a full ring, {} unreadable, {} skipped by the kernel, {} strict stop(s) failed; {} exec event(s) taken",
                k.execs,
                k.forwarded,
                k.ring_full,
                k.read_failed,
                k.skipped
                    .map_or_else(|| "unknown (the kernel does not count them)".to_string(), |n| n.to_string()),
                k.stop_failed,
                self.counters.execs().get("ebpf").copied().unwrap_or(0)
            );
        }
        info!(
            "Shutting down; {} governed process(es) keep running in their cgroups",
            self.journal.len()
        );
    }
}
