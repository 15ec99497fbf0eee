//! The placement engine: one OS thread, `ffrtmp-place`, that owns the table of governed
//! processes and is the only one that moves a new process into a job cgroup.
//!
//! Nothing stands in front of a placement. The engine sleeps in poll(2) on the eBPF ring
//! buffer's fd itself, so an exec event reaches its placement with one wakeup; sources of
//! other kinds hand notices to its hot queue. Everything else (scan candidates, exits,
//! reloads) waits on a second queue, served only when the ring and the hot queue are
//! empty. It does no housekeeping: state file, cgroup removal, spare refills, scans,
//! metrics, HTTP and log output happen on the daemon's record loop, which learns of every
//! decision from an `Outcome` message. The queues are bounded: a full one makes its writer
//! wait, and the kernel's ring buffer, when it fills, counts a loss that is answered with
//! a reconciliation scan.
//!
//! The table (`table::Table`) answers "is this process already governed, pending or given
//! up on" for every placement, so a process is never placed twice however many reports of
//! it arrive (an exec event and a scan, a retry and a scan).
//!
//! A process the kernel stopped arrives with its `Stopped`: it is resumed right after the
//! verified move (so its first instruction runs in its cgroup), or as soon as the engine
//! decides not to place it now — by dropping the value.

mod adopt;
pub mod messages;
pub mod priority;
mod queue;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

pub use messages::{Outcome, Placed, Work};
pub use queue::Sender;
use queue::{Receiver, Waker};
use table::{Retry, Table, Timed};

use crate::config::Settings;
use crate::matcher::{decide, Decision, Guard};
use crate::placer::registry::ToolRoots;
use crate::placer::{auto_job_id, backoff, monotonic_ns, Class, JobSpec, Placer};
use crate::process::{is_gone, Known, Pinned, ProcFs, ProcessId, Stopped};
use crate::record::metrics::SourceCounters;
use crate::record::state::ProcessRecord;
use crate::sources::ebpf::RingReader;
use crate::sources::ExecNotice;

/// Capacity of the hot queue (sources other than the ring).
pub const HOT_QUEUE: usize = 1024;
/// Capacity of the work queue (a scan sends every candidate at once).
pub const WORK_QUEUE: usize = 16_384;

/// The engine's queues, made before the sources start (they need the hot queue).
pub struct Inbox {
    hot: Receiver<ExecNotice>,
    work: Receiver<Work>,
    waker: Waker,
}

/// The writers of a new inbox: the hot queue (for sources) and the work queue.
pub fn inbox() -> std::io::Result<(Sender<ExecNotice>, Sender<Work>, Inbox)> {
    let waker = Waker::new()?;
    let (hot_tx, hot) = queue::bounded(HOT_QUEUE, &waker);
    let (work_tx, work) = queue::bounded(WORK_QUEUE, &waker);
    Ok((hot_tx, work_tx, Inbox { hot, work, waker }))
}

/// What the engine needs to start.
pub struct EngineConfig {
    pub settings: Arc<Settings>,
    pub placer: Arc<Placer>,
    pub guard: Guard,
    pub dry_run: bool,
    /// Where `ffrtmp run`/`attach` register their roots.
    pub runtime_dir: std::path::PathBuf,
    /// How long a permanently failed placement waits before the scan may try it again.
    pub failure_backoff: Duration,
    /// Records of the state file, to govern again without moving them.
    pub readopt: Vec<ProcessRecord>,
    /// Exec notices are counted here, by source, as they are taken.
    pub counters: Arc<SourceCounters>,
    /// Run the placement thread real-time (`priority`).
    pub realtime: bool,
}

/// The running engine: its work queue and its thread.
pub struct EngineHandle {
    pub work: Sender<Work>,
    /// CLOCK_MONOTONIC ns of the engine's last turn of its loop (the watchdog looks).
    pub heartbeat: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EngineHandle {
    /// Ask the engine to stop and wait for it. It drops its rings (detaching the hooks and
    /// resuming the stops still in them) and whatever it holds.
    pub fn shutdown(mut self) {
        let _ = self.work.send(Work::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the placement thread panicked");
            }
        }
    }

    /// Whether the thread ended (it only does on shutdown, or by a panic).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Start the engine thread: it reads `rings` itself and the inbox's queues. Outcomes go
/// to `outcomes` (bounded: a slow record loop makes the engine wait; nothing is dropped).
pub fn spawn(
    cfg: EngineConfig,
    inbox: Inbox,
    work: Sender<Work>,
    rings: Vec<RingReader>,
    outcomes: tokio::sync::mpsc::Sender<Outcome>,
) -> std::io::Result<EngineHandle> {
    let heartbeat = Arc::new(AtomicU64::new(monotonic_ns()));
    let beat = heartbeat.clone();
    let thread = std::thread::Builder::new()
        .name("ffrtmp-place".into())
        .spawn(move || {
            let mut cfg = cfg;
            if cfg.realtime {
                match priority::placement_realtime() {
                    Ok(_) => tracing::info!("Placement thread runs SCHED_FIFO 1"),
                    Err(e) => tracing::warn!(
                        "Placement thread runs as an ordinary thread (SCHED_FIFO refused: {e}): exec → placed can wait for the scheduler's slice, about 0.75 ms at p90 (docs/benchmarks.md); give ffrtmp CAP_SYS_NICE or run it from its unit (CPUSchedulingPolicy=fifo)"
                    ),
                }
            }
            let readopt = std::mem::take(&mut cfg.readopt);
            let mut e = Engine::new(cfg, outcomes, beat);
            e.readopt_all(readopt);
            e.run(inbox, rings);
        })?;
    Ok(EngineHandle {
        work,
        heartbeat,
        thread: Some(thread),
    })
}

struct Engine {
    settings: Arc<Settings>,
    placer: Arc<Placer>,
    proc: ProcFs,
    guard: Guard,
    tool_roots: ToolRoots,
    dry_run: bool,
    failure_backoff: Duration,
    table: Table,
    outcomes: tokio::sync::mpsc::Sender<Outcome>,
    heartbeat: Arc<AtomicU64>,
    counters: Arc<SourceCounters>,
    /// When the engine last had something to do, if it has not given the heap back since.
    trim_after: Option<Instant>,
    /// The kernel's exec hook feeds the ring: a scan's fresh candidate waits for its event.
    exec_hook: bool,
}

/// How long the engine waits idle before it gives back the heap pages that placements and
/// exits left free between live records (their /proc reads, paths, log lines): without it
/// the resident heap grows by about twice the records' own size (bench-exec rss,
/// docs/benchmarks.md). The engine does it itself: the daemon's threads share one malloc
/// arena (`M_ARENA_MAX=1`), and `malloc_trim` holds its lock for 70-90 µs; held by a
/// nicer thread that a busy node preempts, that lock would make the real-time placement
/// thread wait; held by the placement thread, a placement waits at most the trim.
const TRIM_AFTER_IDLE: Duration = Duration::from_millis(500);

/// A scan's candidate younger than this (since its fork) may have been read before its
/// exec event was sent: it waits `FRESH_WAIT` for that event (seen once in the systemd VM
/// tier: a reconciliation placed a just-started ffmpeg ahead of, or without, its event).
/// Only with the kernel's exec hook attached: a scan-only daemon places at once.
const FRESH_AGE: Duration = Duration::from_millis(250);
const FRESH_WAIT: Duration = Duration::from_millis(100);

/// Where a process came to the engine's attention.
struct Origin {
    exec_mono_ns: Option<u64>,
    /// When the source read the notice and when the engine took it (CLOCK_MONOTONIC ns).
    read_mono_ns: Option<u64>,
    taken_mono_ns: Option<u64>,
    source: &'static str,
    stop: Option<Stopped>,
}

impl Origin {
    /// A process looked at on its /proc facts alone: no exec timestamps, no stop.
    fn from_proc(source: &'static str) -> Origin {
        Origin {
            exec_mono_ns: None,
            read_mono_ns: None,
            taken_mono_ns: None,
            source,
            stop: None,
        }
    }
}

impl Engine {
    fn new(
        cfg: EngineConfig,
        outcomes: tokio::sync::mpsc::Sender<Outcome>,
        heartbeat: Arc<AtomicU64>,
    ) -> Self {
        let proc = cfg.placer.proc().clone();
        let tool_roots = ToolRoots::new(&cfg.runtime_dir);
        let mut guard = cfg.guard;
        guard.tool_roots = tool_roots.roots().to_vec();
        Engine {
            settings: cfg.settings,
            proc,
            tool_roots,
            placer: cfg.placer,
            guard,
            dry_run: cfg.dry_run,
            failure_backoff: cfg.failure_backoff,
            table: Table::default(),
            outcomes,
            heartbeat,
            counters: cfg.counters,
            trim_after: None,
            exec_hook: false,
        }
    }

    fn emit(&self, o: Outcome) {
        // The record loop is gone only when the daemon is shutting down.
        let _ = self.outcomes.blocking_send(o);
    }

    fn run(&mut self, inbox: Inbox, mut rings: Vec<RingReader>) {
        self.exec_hook = !rings.is_empty();
        let mut from_ring = Vec::new();
        loop {
            self.heartbeat.store(monotonic_ns(), Ordering::Relaxed);
            let mut busy = false;
            // The ring first, then the hot queue: every exec waiting is placed before any
            // other work is looked at.
            for r in rings.iter_mut() {
                r.drain(&mut from_ring);
            }
            for n in from_ring.drain(..) {
                busy = true;
                match n {
                    Ok(n) => self.on_exec(n),
                    Err(error) => self.emit(Outcome::Undecodable { error }),
                }
            }
            while let Ok(n) = inbox.hot.try_recv() {
                busy = true;
                self.on_exec(n);
            }
            if !busy {
                match inbox.work.try_recv() {
                    Ok(Work::Shutdown) | Err(TryRecvError::Disconnected) => return,
                    Ok(w) => {
                        busy = true;
                        self.on_work(w);
                    }
                    Err(TryRecvError::Empty) => {}
                }
            }
            self.fire_timers();
            if busy {
                self.trim_after = Some(Instant::now() + TRIM_AFTER_IDLE);
                continue;
            }
            let now = Instant::now();
            if self.trim_after.is_some_and(|t| t <= now) {
                self.trim_after = None;
                // SAFETY: malloc_trim only releases free heap memory.
                unsafe { libc::malloc_trim(0) };
            }
            let wait = self
                .table
                .next_deadline()
                .into_iter()
                .chain(self.trim_after)
                .min()
                .map_or(Duration::from_secs(1), |d| d.saturating_duration_since(now))
                .min(Duration::from_secs(1));
            let mut fds: Vec<libc::pollfd> = rings
                .iter()
                .map(|r| r.fd())
                .chain(std::iter::once(inbox.waker.fd()))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: valid pollfds; a timeout in ms rounded up so a timer is not missed.
            unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    wait.as_micros().div_ceil(1000) as i32,
                )
            };
            inbox.waker.clear();
        }
    }

    fn on_work(&mut self, w: Work) {
        match w {
            Work::Candidate(stat) => {
                let id = ProcessId {
                    pid: stat.pid,
                    start_time: stat.start_time,
                };
                // Started moments ago: the scan may have read it between its exec and the
                // kernel's exec hook (the comm changes first). Its exec event, if one is on
                // its way, places it; otherwise the scan's finding does, a little later.
                if self.exec_hook && self.proc.age(id.start_time) < FRESH_AGE {
                    if !self.table.knows(id) {
                        self.table.fresh(id, Instant::now() + FRESH_WAIT);
                    }
                    return;
                }
                self.scanned(id);
            }
            Work::Exited(id) => self.table.exited(id),
            Work::Adopt {
                pid,
                cgroup,
                job_id,
                command,
            } => self.adopt_untracked(pid, &cgroup, &job_id, &command),
            Work::Orphan(stop) => self.on_orphan(stop),
            Work::Reload(s) => {
                self.settings = s;
                self.table.forget_skips();
            }
            Work::Shutdown => {}
        }
    }

    /// A process a scan found: looked at on its /proc facts unless it exited, its PID is
    /// another process's now, or the table knows it.
    fn scanned(&mut self, id: ProcessId) {
        let Ok(pinned) = self.proc.pin(id.pid) else {
            return; // exited since the scan listed it
        };
        if pinned.id != id
            || self.table.knows(id)
            || self.table.skipped_as(id, &pinned.stat.comm, Instant::now())
        {
            return;
        }
        self.look_at(pinned, &Known::default(), Origin::from_proc("scan"));
    }

    fn on_exec(&mut self, n: ExecNotice) {
        self.counters.count_exec(n.source);
        let ExecNotice {
            pid,
            start_ns,
            known,
            exec_mono_ns,
            read_mono_ns,
            stop,
            source,
            ..
        } = n;
        let origin = Origin {
            exec_mono_ns,
            read_mono_ns,
            taken_mono_ns: Some(monotonic_ns()),
            source,
            stop,
        };
        // A strict target's claim has already pinned it and read its stat.
        let claimed = origin.stop.as_ref().filter(|s| s.pid() == pid);
        let pinned = match claimed.and_then(Stopped::pin) {
            Some(p) => Ok(p),
            None => self.proc.pin(pid),
        };
        let pinned = match pinned {
            Ok(p) => p,
            Err(e) if is_gone(&e) => {
                return self.emit(Outcome::Vanished {
                    pid,
                    why: format!("it exited before it could be pinned ({e})"),
                })
            }
            // Not gone, but it cannot be pinned (out of file descriptors, memory…): the
            // reconciliation scan will find it; a stopped one runs meanwhile (dropped here).
            Err(e) => {
                return self.emit(Outcome::NotPinned {
                    pid,
                    error: e.to_string(),
                })
            }
        };
        // The exec'd process is gone and its PID is another's, or the two clocks disagree:
        // either way the process that has the PID now is judged on its own /proc facts
        // (the event's are not its), never silently dropped.
        let (known, origin) = match start_ns.map(|ns| self.proc.ticks_from_ns(ns)) {
            Some(ticks) if ticks != pinned.id.start_time => {
                tracing::debug!(
                    pid,
                    "PID {pid}: the exec event's start ({ticks} ticks) is not the process's ({}); deciding on /proc",
                    pinned.id.start_time
                );
                drop(origin.stop);
                (Known::default(), Origin::from_proc(source))
            }
            _ => (known, origin),
        };
        // Governed already (a governed process exec'd again: it stays in its cgroup), or
        // waiting for a timer that will look at it again.
        if self.table.knows(pinned.id) {
            return;
        }
        self.look_at(pinned, &known, origin);
    }

    fn on_orphan(&mut self, stop: Stopped) {
        if !stop.is_present() {
            return; // gone; dropping the value clears its ledger entry
        }
        let id = stop.id(&self.proc);
        let pinned = match self.proc.pin(id.pid) {
            Ok(p) if p.id == id => p,
            _ => return,
        };
        if self.table.knows(id) {
            return;
        }
        self.look_at(
            pinned,
            &Known::default(),
            Origin {
                stop: Some(stop),
                ..Origin::from_proc("ledger")
            },
        );
    }

    /// Decide on a pinned process and act on the decision.
    fn look_at(&mut self, pinned: Pinned, known: &Known, origin: Origin) {
        let needs = crate::matcher::needs(&self.settings.targets, &pinned.stat.comm);
        let facts = match self.proc.facts(pinned.stat.clone(), needs, known) {
            Ok(f) => f,
            Err(e) => {
                return self.emit(Outcome::Vanished {
                    pid: pinned.id.pid,
                    why: format!("it vanished while being read ({e})"),
                })
            }
        };
        if self.tool_roots.refresh() {
            self.guard.tool_roots = self.tool_roots.roots().to_vec();
        }
        let settings = self.settings.clone();
        match decide(&settings.targets, &self.guard, &facts) {
            Decision::Skip(reason) => {
                // Only what is counted: bystanders (forward_all sends every exec) would
                // crowd the targets out of the memory.
                if reason.is_counted() {
                    self.table
                        .skipped(pinned.id, &pinned.stat.comm, Instant::now());
                }
                self.emit(Outcome::Skipped {
                    stat: pinned.stat,
                    reason,
                })
            }
            Decision::Defer { target, remaining } => {
                // min_runtime outranks strict placement: a deferred process runs meanwhile
                // (its stop is dropped, i.e. resumed, when `origin` goes out of scope).
                let comm = String::from_utf8_lossy(&pinned.stat.comm).into_owned();
                if self.table.defer(pinned.id, Instant::now() + remaining) {
                    self.emit(Outcome::Deferred {
                        pid: pinned.id.pid,
                        comm,
                        target: target.name.clone(),
                        remaining,
                    });
                }
            }
            Decision::Govern(target) => {
                let spec = JobSpec {
                    job_id: auto_job_id(&target.name, pinned.id.pid),
                    command: target.name.clone(),
                    limits: target.limits.clone(),
                };
                let discovered = Outcome::Discovered {
                    pid: pinned.id.pid,
                    job_id: spec.job_id.clone(),
                    command: spec.command.clone(),
                };
                self.place(pinned, spec, 0, origin, Some(discovered));
            }
        }
    }

    /// `discovered`, the first report of a new target, is sent once the placement has been
    /// tried and the target resumed: a message wakes the record loop, which must not run
    /// beside the target (or take a CPU from it) before the move.
    fn place(
        &mut self,
        pinned: Pinned,
        spec: JobSpec,
        attempt: u32,
        origin: Origin,
        discovered: Option<Outcome>,
    ) {
        let Origin {
            exec_mono_ns,
            read_mono_ns,
            taken_mono_ns,
            source,
            stop,
        } = origin;
        let pid = pinned.id.pid;
        if self.dry_run {
            drop(stop);
            if let Some(d) = discovered {
                self.emit(d);
            }
            return self.emit(Outcome::DryRun {
                pid,
                cgroup: self.placer.cgroup_of(&spec.job_id),
                job_id: spec.job_id,
                command: spec.command,
                limits: spec.limits,
            });
        }
        let placed = self.placer.place(&pinned, &spec);
        // Resumed right after the verified move (its next instruction runs inside), or
        // right after a failed one: never held through a backoff or a message.
        drop(stop);
        let placed = placed.map(|placement| {
            let children = self.placer.move_descendants(pid, &placement.cgroup);
            let exe = self.proc.exe(pid).ok().map(|p| p.display().to_string());
            (placement, children, exe)
        });
        // Sent with the result, back to back: usually one wakeup of the record loop, not two.
        if let Some(d) = discovered {
            self.emit(d);
        }
        match placed {
            Ok((placement, children, exe)) => {
                let latency_ns = exec_mono_ns.map(|t| placement.verified_mono_ns.saturating_sub(t));
                let receipt_ns = exec_mono_ns
                    .zip(taken_mono_ns)
                    .map(|(e, t)| t.saturating_sub(e));
                let read_ns = exec_mono_ns
                    .zip(read_mono_ns)
                    .map(|(e, r)| r.saturating_sub(e));
                self.table.governed(pinned.id);
                match pinned.pidfd.try_clone() {
                    Ok(pidfd) => self.emit(Outcome::Placed(Box::new(Placed {
                        id: pinned.id,
                        pidfd,
                        spec,
                        placement,
                        latency_ns,
                        read_ns,
                        receipt_ns,
                        children,
                        exe,
                        source,
                    }))),
                    Err(e) => self.emit(Outcome::NotPinned {
                        pid,
                        error: format!("placed in {}, but its pidfd cannot be duplicated for the exit watch: {e}", placement.cgroup),
                    }),
                }
            }
            Err(e) if e.class == Class::Vanished => {
                self.emit(Outcome::Vanished {
                    pid,
                    why: format!("it exited before placement finished ({e})"),
                });
            }
            Err(e) if e.class == Class::Retryable && attempt < self.settings.max_retry_attempts => {
                let delay = backoff(
                    attempt + 1,
                    pinned.id.start_time ^ u64::from(pid) ^ u64::from(attempt),
                );
                let id = pinned.id;
                self.emit(Outcome::Retrying {
                    pid,
                    job_id: spec.job_id.clone(),
                    error: e,
                    attempt: attempt + 1,
                    max: self.settings.max_retry_attempts,
                    delay,
                });
                self.table.retry(
                    id,
                    Instant::now() + delay,
                    Timed::Retry(Box::new(Retry {
                        pinned,
                        spec,
                        attempt: attempt + 1,
                        exec_mono_ns,
                        source,
                    })),
                );
            }
            Err(e) => {
                // Not for ever: the cause may be fixed (a controller enabled, a limit
                // raised); the scan may try it again after a while.
                self.table
                    .failed(pinned.id, Instant::now() + self.failure_backoff);
                self.emit(Outcome::Failed {
                    pid,
                    job_id: spec.job_id,
                    command: spec.command,
                    error: e,
                    attempts: attempt + 1,
                });
            }
        }
    }

    fn fire_timers(&mut self) {
        for (id, t) in self.table.due(Instant::now()) {
            match t {
                // Unless its exec event placed it meanwhile.
                Timed::Fresh => self.scanned(id),
                // Facts may have changed while it ran (cwd, parent): decide again.
                Timed::Defer => match self.proc.pin(id.pid) {
                    Ok(pinned) if pinned.id == id => {
                        self.look_at(pinned, &Known::default(), Origin::from_proc("min_runtime"))
                    }
                    _ => {} // exited, or the PID now belongs to another process
                },
                Timed::Retry(r) => {
                    let Retry {
                        pinned,
                        spec,
                        attempt,
                        exec_mono_ns,
                        source,
                    } = *r;
                    self.place(
                        pinned,
                        spec,
                        attempt,
                        Origin {
                            exec_mono_ns,
                            read_mono_ns: None,
                            taken_mono_ns: None,
                            source,
                            stop: None,
                        },
                        None,
                    )
                }
            }
        }
    }
}
