//! The record loop: one `select!` that takes a message from wherever it comes and hands it
//! to the owner it is for; the journal's answers (`Effect`s) are routed the same way. It
//! holds no state of its own but when a scan was asked for and whether one runs.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tracing::{error, info, warn};

use super::chores::{Activity, Chore};
use super::intake::Intake;
use super::journal::{Effect, Effects, Journal};
use super::owners::Owners;
use super::scanner::{ScanCmd, ScanReport};
use super::startup::{self, Inbox, Started};
use super::ticks::{Tick, Ticks};
use super::{Daemon, Options};
use crate::config::Settings;
use crate::exec::Work;
use crate::record::logging::LogControl;
use crate::record::observe::Query;
use crate::record::systemd::Notifier;
use crate::sources::gate::GateCmd;
use crate::sources::EventSource;

/// A scan asked for while one runs waits for it (the last ask's reason; full if any was).
#[derive(Default)]
struct ScanAsks {
    running: bool,
    next: Option<(&'static str, bool)>,
}

pub(super) struct RecordLoop {
    settings: Arc<Settings>,
    opts: Options,
    log: LogControl,
    journal: Journal,
    intake: Intake,
    owners: Owners,
    inbox: Inbox,
    notifier: Notifier,
    ticks: Ticks,
    scans: ScanAsks,
}

impl RecordLoop {
    /// Start every owner, take the state file in, run the first scan, say READY.
    pub async fn start(d: Daemon, sources: Vec<Box<dyn EventSource>>) -> Option<RecordLoop> {
        let activity = Activity::default();
        let quiet = d.opts.quiet;
        let Started {
            settings,
            opts,
            log,
            notifier,
            journal,
            owners,
            inbox,
        } = startup::start(d, sources, activity.clone())?;
        let ticks = Ticks::new(
            &settings,
            opts.scan_role,
            notifier.watchdog_interval(),
            owners.kernel.counters.is_some(),
        );
        let mut l = RecordLoop {
            settings,
            opts,
            log,
            journal,
            intake: Intake::new(quiet, activity),
            owners,
            inbox,
            notifier,
            ticks,
            scans: ScanAsks::default(),
        };
        l.first_scan().await;
        let status = l.journal.status_line();
        l.journal.take_status();
        l.notifier.ready(&status);
        Some(l)
    }

    /// The source is attached and the first scan is done: now systemd may call us ready.
    async fn first_scan(&mut self) {
        let pools = self.journal.pool_names();
        self.owners.scanner.send(ScanCmd::KnownPools(pools));
        self.ask_scan("startup", false);
        match self.inbox.scans.recv().await {
            Some(r) => self.scanned(r),
            None => error!("the startup scan did not report (the scanner is gone)"),
        }
    }

    /// Route messages until `shutdown` resolves.
    pub async fn serve(
        &mut self,
        reloads: &mut mpsc::Receiver<Box<Settings>>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let due = self.intake.due();
            let flush_at = self
                .journal
                .dirty_since()
                .map(|t| t + self.opts.flush_coalesce);
            tokio::select! {
                Some(o) = self.inbox.outcomes.recv() => {
                    if self.intake.hold(o) {
                        self.take_held();
                    }
                }
                _ = sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => self.take_held(),
                ids = self.owners.exits.exited() => self.with_journal(|j, fx| ids.into_iter().for_each(|id| j.exited(id, fx))),
                Some(r) = self.inbox.scans.recv() => self.scanned(r),
                Some(done) = self.inbox.chores.recv() => self.with_journal(|j, fx| done.into_iter().for_each(|d| j.chore_done(d, fx))),
                Some(n) = self.inbox.swept.recv() => self.journal.strict_timeouts(n),
                Some(ev) = self.inbox.events.recv() => self.with_journal(|j, fx| j.source_event(ev, fx)),
                Some(q) = self.inbox.queries.recv() => self.answer(q),
                tick = self.ticks.next(flush_at) => self.tick(tick),
                Some(s) = reloads.recv() => self.reload(*s),
                _ = &mut shutdown => return,
            }
            if let Some(status) = self.journal.take_status() {
                self.notifier.status(&status);
            }
        }
    }

    /// Write down what is held, so the journal is not behind the engine's table.
    fn take_held(&mut self) {
        let Some((since, held)) = self.intake.take() else {
            return;
        };
        let mut fx = Effects::new();
        for o in held {
            self.journal.apply(o, &mut fx);
        }
        self.route(fx, since);
    }

    /// Let the journal act on something (after what is held), then route its effects.
    fn with_journal(&mut self, f: impl FnOnce(&mut Journal, &mut Effects)) {
        self.take_held();
        let mut fx = Effects::new();
        f(&mut self.journal, &mut fx);
        self.route(fx, Instant::now());
    }

    fn route(&mut self, fx: Effects, since: Instant) {
        for e in fx {
            match e {
                Effect::Engine(w) => self.owners.work(w),
                Effect::Chore(c) => self.owners.chores.push(since, c),
                Effect::Watch(id, pidfd) => {
                    if let Err(e) = self.owners.exits.watch(id, pidfd) {
                        // The exit set polls it instead (once a second).
                        warn!(
                            pid = id.pid,
                            "cannot watch PID {} for its exit through its pidfd: {e}; its exit is polled instead", id.pid
                        );
                    }
                }
                Effect::Unwatch(pid) => self.owners.exits.unwatch(pid),
                Effect::Scan { reason, full } => self.ask_scan(reason, full),
                Effect::Leftover(cg) => self.owners.scanner.send(ScanCmd::Leftover(cg)),
                Effect::Learn { exe, target } => {
                    if let Some(g) = &self.owners.kernel.gate {
                        g.send(GateCmd::Learn {
                            exe: exe.into(),
                            target,
                        });
                    }
                }
            }
        }
    }

    /// Ask for a scan: it runs now if none is running, else right after.
    fn ask_scan(&mut self, reason: &'static str, full: bool) {
        let full = full || self.scans.next.is_some_and(|(_, f)| f);
        self.scans.next = Some((reason, full));
        if self.scans.running {
            return;
        }
        let Some((reason, full)) = self.scans.next.take() else {
            return;
        };
        self.take_held();
        self.owners.scanner.send(ScanCmd::Scan {
            reason,
            full,
            settings: self.settings.clone(),
            governed: self.journal.governed_list(),
        });
        self.scans.running = true;
    }

    fn scanned(&mut self, r: ScanReport) {
        self.scans.running = false;
        let settings = self.settings.clone();
        self.with_journal(|j, fx| {
            j.scanned(r, fx);
            // Services whose limits differ from the config (a reload, a restart after a
            // config change, an earlier attempt that failed) are limited again.
            j.relimit_units(&settings, fx);
        });
        if let Some((reason, full)) = self.scans.next.take() {
            self.ask_scan(reason, full);
        }
    }

    fn answer(&mut self, q: Query) {
        self.take_held();
        let gate = self.owners.kernel.gate.as_ref().map(|g| g.stats.read());
        q.answer(Arc::new(
            self.journal.snapshot(self.owners.counts.read(), gate),
        ));
    }

    fn tick(&mut self, t: Tick) {
        match t {
            Tick::Scan => self.ask_scan("interval", false),
            Tick::Flush => self.flush(),
            Tick::Watchdog => self.owners.watchdog(&self.notifier),
            Tick::Counters => {
                if let Some(r) = self.owners.kernel.counters.as_mut().map(|k| k.read()) {
                    self.with_journal(|j, fx| j.kernel(r, fx));
                }
            }
        }
    }

    /// Queue a write of the state file (nothing in dry-run mode).
    fn flush(&mut self) {
        self.take_held();
        let bytes = self.journal.state_bytes();
        if !self.opts.dry_run {
            let path = self.settings.state_path.clone();
            self.owners
                .chores
                .push(Instant::now(), Chore::Write { path, bytes });
        }
    }

    fn reload(&mut self, new: Settings) {
        self.take_held();
        self.notifier.reloading();
        let new = Arc::new(keep_what_needs_a_restart(&self.settings, new));
        self.journal.set_job_metrics(new.job_metrics);
        self.log.set_level(new.log_level);
        self.owners.work(Work::Reload(new.clone()));
        if !self.opts.dry_run {
            // Limits may have changed: the engine gives back the old spares; new ones.
            self.owners.chores.push(
                Instant::now(),
                Chore::Refill(super::node::spares_wanted(&new)),
            );
        }
        if let Some(s) = &self.owners.sweeper {
            s.set_timeout(new.strict_timeout);
        }
        if let Some(g) = &self.owners.kernel.gate {
            g.send(GateCmd::Targets(
                new.targets.iter().map(|t| t.name.clone()).collect(),
            ));
        }
        // Targets or filters may have changed: look at every process again.
        self.owners.scanner.send(ScanCmd::Forget);
        self.ticks.reload(&new, self.opts.scan_role);
        info!(
            "Configuration reloaded from {}: targets {}; the scan that follows brings running jobs and pools to the new limits",
            new.config_file
                .as_ref()
                .map_or("defaults".into(), |p| p.display().to_string()),
            super::node::target_names(&new)
        );
        self.journal.no_longer_targets(&self.settings, &new);
        self.settings = new;
        self.ask_scan("reload", false);
        self.notifier.reloaded();
    }

    /// Sources first (the eBPF reader detaches its hook and resumes the stops still in its
    /// ring), then the engine (it resumes what it holds), reading the outcomes they send on
    /// the way so neither waits on a full queue; then the chores, the scanner and the
    /// sweeper; the state is written last.
    pub async fn stop(self) {
        let RecordLoop {
            settings,
            opts,
            mut journal,
            mut intake,
            owners,
            mut inbox,
            notifier,
            ..
        } = self;
        notifier.stopping();
        let Owners {
            engine,
            sources,
            scanner,
            chores,
            sweeper,
            counts,
            placer,
            ..
        } = owners;
        let stopping = tokio::task::spawn_blocking(move || {
            for s in sources {
                s.stop();
            }
            engine.shutdown()
        });
        // What the last outcomes would set off (chores, scans, exit watches) is moot now;
        // the journal still writes them down, so the state file has them.
        let mut moot = Effects::new();
        for o in intake.take().map(|(_, held)| held).unwrap_or_default() {
            journal.apply(o, &mut moot);
        }
        while let Some(o) = inbox.outcomes.recv().await {
            journal.apply(o, &mut moot);
        }
        let spares = stopping.await.unwrap_or_default();
        chores.stop().await;
        // What the last chores did is written down (a service's values read before its
        // limit must reach the state file, to be put back).
        while let Ok(done) = inbox.chores.try_recv() {
            done.into_iter()
                .for_each(|d| journal.chore_done(d, &mut moot));
        }
        let _ = tokio::task::spawn_blocking(move || scanner.stop()).await;
        if let Some(s) = sweeper {
            s.stop().await;
        }
        drop(inbox.events_tx);
        while let Ok(ev) = inbox.events.try_recv() {
            journal.source_event(ev, &mut moot);
        }
        let bytes = journal.state_bytes();
        if !opts.dry_run {
            journal.written_at_exit(crate::durable::write_atomic(&settings.state_path, &bytes));
            placer.remove_spares(spares);
        }
        journal.farewell(counts.of("ebpf"));
    }
}

/// New settings with what a reload cannot change kept as it is (said in the log).
fn keep_what_needs_a_restart(old: &Settings, mut new: Settings) -> Settings {
    if new.cgroup_root != old.cgroup_root {
        warn!(
            "cgroup_root changed from {} to {}: a new root takes a restart; keeping {}",
            old.cgroup_root, new.cgroup_root, old.cgroup_root
        );
        new.cgroup_root = old.cgroup_root.clone();
    }
    if new.metrics_addr != old.metrics_addr {
        warn!(
            "metrics_addr changed from {:?} to {:?}: takes a restart; /metrics stays where it is",
            old.metrics_addr, new.metrics_addr
        );
        new.metrics_addr = old.metrics_addr;
    }
    if new.state_path != old.state_path {
        warn!(
            "state_path changed from {} to {}: takes a restart; keeping the old path",
            old.state_path.display(),
            new.state_path.display()
        );
        new.state_path = old.state_path.clone();
    }
    if (new.inline_placement, new.gate_timeout) != (old.inline_placement, old.gate_timeout) {
        warn!("inline_placement or gate_timeout changed: the exec gate is set up at start; a restart applies them");
        (new.inline_placement, new.gate_timeout) = (old.inline_placement, old.gate_timeout);
    }
    if new.forward_all && !old.forward_all {
        warn!("forward_all turned on: the ring buffer keeps the size it got at start (sized for filtered events); a restart sizes it for every exec");
    }
    for w in &new.warnings {
        warn!("config: {w}");
    }
    new
}
