//! The daemon: `run(sources, placer, control)`. One loop owns all state; sources push exec
//! events, the scan ticks, exits of governed processes arrive from their pidfds, timers
//! fire for min_runtime deferrals and retries, and the control channel carries reload and
//! shutdown. Nothing here needs BPF or root: tests drive it with a channel source.

mod handle;
pub use handle::backoff;
mod reconcile;
mod startup;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep_until, MissedTickBehavior};
use tracing::info;

use crate::config::Settings;
use crate::matcher::Guard;
use crate::placer::{JobSpec, Placer};
use crate::process::{PidFd, Pinned, ProcessId};
use std::sync::{Arc, Mutex};

use crate::record::health::Health;
use crate::record::logging::LogControl;
use crate::record::metrics::{JobInfo, Telemetry};
use crate::record::state::{ProcessRecord, StateFile};
use crate::record::systemd::Notifier;
use crate::sources::scan::Scanner;
use crate::sources::{EventSource, ExecNotice, SourceEvent};

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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            scan_role: ScanRole::Primary,
            flush_coalesce: Duration::from_millis(200),
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

/// A governed process.
struct Governed {
    id: ProcessId,
    cgroup: String,
    record: ProcessRecord,
    exit_watch: tokio::task::JoinHandle<()>,
}

/// Work done when the loop is idle (no event waiting).
enum Chore {
    /// Create spare cgroups for these limits again.
    Refill(crate::config::Limits),
    /// Remove an ended job's cgroup (once empty).
    Remove(String),
}

/// Work scheduled for later.
enum Timed {
    /// Waiting for min_runtime. Only the identity is kept (no pidfd): a long min_runtime
    /// must not hold a file descriptor per young process; it is pinned again when due.
    Defer(ProcessId, Option<ExecNotice>),
    /// A placement that failed with a transient error.
    Retry(Pinned, JobSpec, u32, Option<ExecNotice>),
}

pub struct Daemon {
    settings: Settings,
    opts: Options,
    placer: Placer,
    guard: Guard,
    scanner: Scanner,
    governed: HashMap<u32, Governed>,
    timers: BTreeMap<(Instant, ProcessId), Timed>,
    /// Job cgroups left behind by exited processes (children still inside): removed once empty.
    leftovers: Vec<String>,
    state: StateFile,
    dirty_since: Option<Instant>,
    health: Health,
    exit_tx: mpsc::UnboundedSender<ProcessId>,
    exit_rx: Option<mpsc::UnboundedReceiver<ProcessId>>,
    log: LogControl,
    /// What `/metrics` and `/healthz` show; shared with the HTTP server.
    telemetry: Arc<Mutex<Telemetry>>,
    notifier: Notifier,
    /// The governed set or health changed: publish before the next wait.
    republish: bool,
    chores: std::collections::VecDeque<Chore>,
    /// Processes with a timer (min_runtime or retry): the scan leaves them alone.
    pending: std::collections::HashSet<ProcessId>,
    /// Placements that failed for good, and when the scan may try them again.
    failed: HashMap<ProcessId, Instant>,
    /// The event source stopped: switch to scanning.
    source_down: bool,
}

impl Daemon {
    pub fn new(settings: Settings, opts: Options, placer: Placer, log: LogControl) -> Self {
        let proc = placer.proc().clone();
        let me = std::process::id();
        let guard = Guard {
            protected: proc.ancestors(me),
            cgroup_root: placer.root().to_string(),
        };
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        Daemon {
            scanner: Scanner::new(proc),
            settings,
            opts,
            placer,
            guard,
            governed: HashMap::new(),
            timers: BTreeMap::new(),
            leftovers: Vec::new(),
            state: StateFile::default(),
            dirty_since: None,
            health: Health::default(),
            exit_tx,
            exit_rx: Some(exit_rx),
            log,
            telemetry: Arc::new(Mutex::new(Telemetry::default())),
            notifier: Notifier::default(),
            republish: true,
            chores: std::collections::VecDeque::new(),
            pending: std::collections::HashSet::new(),
            failed: HashMap::new(),
            source_down: false,
        }
    }

    /// Share telemetry with a `/metrics` server.
    pub fn with_telemetry(mut self, t: Arc<Mutex<Telemetry>>) -> Self {
        self.telemetry = t;
        self
    }

    /// Notify systemd (READY, STATUS, WATCHDOG, STOPPING).
    pub fn with_notifier(mut self, n: Notifier) -> Self {
        self.notifier = n;
        self
    }

    pub(super) fn telemetry(&self) -> std::sync::MutexGuard<'_, Telemetry> {
        self.telemetry.lock().expect("telemetry lock")
    }

    /// Publish the governed jobs and health for `/metrics`, `/healthz` and systemd's STATUS.
    pub(super) fn publish(&mut self) {
        let jobs: Vec<JobInfo> = self
            .governed
            .values()
            .map(|g| JobInfo {
                job_id: g.record.job_id.clone(),
                command: g.record.command.clone(),
                pid: g.id.pid,
                cgroup: g.cgroup.clone(),
            })
            .collect();
        let status = {
            let mut t = self.telemetry();
            t.jobs = jobs;
            t.health = self.health.status;
            t.scan_failures = self.health.scan_failures;
            t.attach_failures = self.health.attach_failures;
            t.limits_missing = self.health.limits_missing;
            format!(
                "source {}, governed {}, {}",
                t.source,
                t.jobs.len(),
                t.health
            )
        };
        self.notifier.status(&status);
    }

    fn scan_period(&self) -> Duration {
        match self.opts.scan_role {
            ScanRole::Primary => self.settings.scan_interval,
            ScanRole::Reconcile => self.settings.reconcile_interval,
        }
    }

    /// Run until shutdown. Sources are started here; their events share one channel.
    pub async fn run(
        mut self,
        sources: Vec<Box<dyn EventSource>>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let (tx, mut rx) = mpsc::channel::<SourceEvent>(65_536);
        let mut source_tasks = Vec::new();
        let source_names: Vec<&'static str> = sources.iter().map(|s| s.name()).collect();
        for s in sources {
            info!("Event source {} started", s.name());
            source_tasks.push(s.spawn(tx.clone()));
        }
        drop(tx);
        let mut sources_open = !source_tasks.is_empty();
        let mut exit_rx = self.exit_rx.take().expect("run is called once");

        self.telemetry().source = if source_names.is_empty() {
            "scan".into()
        } else {
            source_names.join(",")
        };
        self.startup();
        self.scan_now("startup");
        self.publish();
        self.republish = false;
        // The source is attached and the first scan is done: now systemd may call us ready.
        let status = format!(
            "source {}, governed {}, {}",
            self.telemetry().source,
            self.governed.len(),
            self.health.status
        );
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

        loop {
            let next_timer = self.timers.keys().next().map(|(t, _)| *t);
            let coalesced = self.dirty_since.map(|t| t + self.opts.flush_coalesce);
            tokio::select! {
                ev = rx.recv(), if sources_open => match ev {
                    Some(ev) => self.on_source_event(ev),
                    None => {
                        sources_open = false;
                        if self.opts.scan_role == ScanRole::Reconcile {
                            tracing::error!("All event sources stopped");
                            self.source_down = true;
                        }
                    }
                },
                Some(id) = exit_rx.recv() => self.on_exit(id),
                _ = std::future::ready(()), if !self.chores.is_empty() && rx.is_empty() => self.do_chore(),
                // Pinged from the loop itself: a stuck loop stops the pings and systemd restarts it.
                _ = wd_tick.tick(), if watchdog.is_some() => self.notifier.watchdog(),
                _ = scan_tick.tick() => self.scan_now("interval"),
                _ = flush_tick.tick() => self.flush(),
                _ = sleep_until(next_timer.unwrap_or_else(Instant::now).into()), if next_timer.is_some() => self.fire_timers(),
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
                tracing::warn!(
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
        for t in source_tasks {
            t.abort();
        }
        // Notices still queued are never handled: a process stopped for strict placement
        // among them must not stay stopped.
        rx.close();
        while let Ok(ev) = rx.try_recv() {
            if let SourceEvent::Exec(n) = ev {
                if n.stopped {
                    let _ = PidFd::open(n.pid).and_then(|p| p.signal(libc::SIGCONT));
                }
            }
        }
        self.shutdown()
    }

    fn on_source_event(&mut self, ev: SourceEvent) {
        match ev {
            SourceEvent::Exec(n) => {
                *self.telemetry().exec_events.entry(n.source).or_default() += 1;
                self.on_exec(n);
            }
            SourceEvent::Lost { source, count } => {
                self.state.statistics.total_events_lost += count;
                self.telemetry().events_lost += count;
                tracing::warn!(
                    source,
                    lost = count,
                    "Event source {source} lost {count} event(s); reconciling now"
                );
                self.scanner.force_full();
                self.scan_now("events lost");
            }
            SourceEvent::Failed { source, error } => {
                tracing::error!(source, "Event source {source} failed: {error}");
                self.source_down = true;
            }
        }
    }

    fn reload(&mut self, new: Settings) {
        let mut new = new;
        if new.cgroup_root != self.settings.cgroup_root {
            tracing::warn!(
                "cgroup_root changed from {} to {}: a new root takes a restart; keeping {}",
                self.settings.cgroup_root,
                new.cgroup_root,
                self.settings.cgroup_root
            );
            new.cgroup_root = self.settings.cgroup_root.clone();
        }
        if new.metrics_addr != self.settings.metrics_addr {
            tracing::warn!(
                "metrics_addr changed from {:?} to {:?}: takes a restart; /metrics stays where it is",
                self.settings.metrics_addr,
                new.metrics_addr
            );
            new.metrics_addr = self.settings.metrics_addr;
        }
        if new.state_path != self.settings.state_path {
            tracing::warn!(
                "state_path changed from {} to {}: takes a restart; keeping the old path",
                self.settings.state_path.display(),
                new.state_path.display()
            );
            new.state_path = self.settings.state_path.clone();
        }
        for w in &new.warnings {
            tracing::warn!("config: {w}");
        }
        self.log.set_level(new.log_level);
        self.settings = new;
        if !self.opts.dry_run {
            // Limits may have changed: spares carry the old ones.
            self.placer.drain_spares();
            self.refill_spares();
        }
        // Targets or filters may have changed: look at every process again.
        self.scanner.forget_all();
        info!(
            "Configuration reloaded from {}: targets {}; governed processes keep their limits",
            self.settings
                .config_file
                .as_ref()
                .map_or("defaults".into(), |p| p.display().to_string()),
            self.settings
                .targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.scan_now("reload");
    }

    fn mark_dirty(&mut self) {
        if self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
        }
    }

    /// Write the state file (nothing in dry-run mode).
    fn flush(&mut self) {
        self.dirty_since = None;
        if self.opts.dry_run {
            return;
        }
        self.state.version = crate::record::state::STATE_VERSION;
        self.state.processes = self
            .governed
            .values()
            .map(|g| (g.id.pid.to_string(), g.record.clone()))
            .collect();
        self.state.health = Some(crate::record::state::HealthRecord {
            status: self.health.status.to_string(),
            scan_failures: self.health.scan_failures,
            attach_failures: self.health.attach_failures,
            since: self
                .state
                .health
                .as_ref()
                .filter(|h| h.status == self.health.status.to_string())
                .map_or_else(chrono::Utc::now, |h| h.since),
        });
        if let Err(e) = self.state.save(&self.settings.state_path) {
            tracing::error!(
                "Cannot write state file {}: {e} (check the directory exists and is writable)",
                self.settings.state_path.display()
            );
        }
    }

    /// Watch a pidfd; its process's identity is sent when it exits. No polling.
    fn watch_exit(&self, pidfd: PidFd, id: ProcessId) -> tokio::task::JoinHandle<()> {
        let tx = self.exit_tx.clone();
        tokio::spawn(async move {
            pidfd.exited().await;
            let _ = tx.send(id);
        })
    }

    fn shutdown(mut self) {
        self.notifier.stopping();
        // A process stopped by strict placement must never stay stopped.
        let timers = std::mem::take(&mut self.timers);
        for (_, t) in timers {
            match t {
                Timed::Retry(p, _, _, Some(n)) if n.stopped => {
                    let _ = p.pidfd.signal(libc::SIGCONT);
                }
                _ => {}
            }
        }
        self.flush();
        self.placer.drain_spares();
        for g in self.governed.values() {
            g.exit_watch.abort();
        }
        info!(
            "Shutting down; {} governed process(es) keep running in their cgroups",
            self.governed.len()
        );
    }
}
