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
mod decide;
pub mod messages;
mod place;
pub mod priority;
mod service;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

pub use messages::{Outcome, Placed};
use table::Table;

use crate::config::Settings;
use crate::exec::{ExecCounts, Inbox, Ring, Sender, Work};
use crate::matcher::Guard;
use crate::placer::registry::ToolRoots;
use crate::placer::Placer;
use crate::process::{monotonic_ns, Gated, ProcFs, Stopped};
use crate::record::state::ProcessRecord;

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
    /// Exec notices are counted here, by source, as they are taken (atomics: no lock).
    pub counts: Arc<ExecCounts>,
    /// Run the placement thread real-time (`priority`).
    pub realtime: bool,
    /// Spare cgroups made at start (v1), the engine's pool from then on.
    pub spares: Vec<(crate::config::Limits, crate::placer::Spare)>,
}

/// The running engine: its work queue and its thread.
pub struct EngineHandle {
    pub work: Sender<Work>,
    /// CLOCK_MONOTONIC ns of the engine's last turn of its loop (the watchdog looks).
    pub heartbeat: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl EngineHandle {
    /// Ask the engine to stop and wait for it. It drops its rings (detaching the hooks and
    /// resuming the stops still in them) and whatever it holds; the spare cgroups of its
    /// pool come back, to be removed.
    pub fn shutdown(mut self) -> Vec<String> {
        let _ = self.work.send(Work::Shutdown);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(spares)) => spares,
            Some(Err(_)) => {
                tracing::error!("the placement thread panicked");
                Vec::new()
            }
            None => Vec::new(),
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
    rings: Vec<Box<dyn Ring>>,
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
            let spares = std::mem::take(&mut cfg.spares);
            let mut e = Engine::new(cfg, outcomes, beat);
            e.keep_spares(spares);
            e.readopt_all(readopt);
            e.rings = rings;
            e.run(inbox);
            e.spares.drain().into_iter().map(|s| s.cgroup).collect()
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
    rules: Rules,
    table: Table,
    /// Spare cgroups ready for a placement (v1), taken without a lock.
    spares: crate::placer::Spares,
    out: Out,
    /// The kernel rings it reads itself (and tells of placements at the exec gate).
    rings: Vec<Box<dyn Ring>>,
    /// When the engine last had something to do, if it has not given the heap back since.
    trim_after: Option<Instant>,
}

/// What decides besides the settings.
struct Rules {
    guard: Guard,
    tool_roots: ToolRoots,
    dry_run: bool,
    /// How long a permanently failed placement waits before the scan may try it again.
    failure_backoff: Duration,
    /// The kernel's exec hook feeds the ring: a scan's fresh candidate waits for its event.
    exec_hook: bool,
}

/// Where the engine reports: outcomes to the record loop, counts and its heartbeat as
/// atomics.
struct Out {
    outcomes: tokio::sync::mpsc::Sender<Outcome>,
    counts: Arc<ExecCounts>,
    heartbeat: Arc<AtomicU64>,
    keep_pidfds_below: u64,
}

impl Out {
    /// The pin's pidfd to hand on with an outcome, if its number leaves room for placing.
    fn handed_on(&self, pidfd: Option<crate::process::PidFd>) -> Option<crate::process::PidFd> {
        use std::os::fd::{AsFd, AsRawFd};
        pidfd.filter(|fd| (fd.as_fd().as_raw_fd() as u64) < self.keep_pidfds_below)
    }
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

/// How long a skip is remembered without a scan reporting the process again: every scan
/// reports the targets it finds, and each report renews the memory, so only the skips of
/// processes gone since are forgotten (three scan periods, at least 5 s).
fn skip_memory(s: &Settings) -> Duration {
    (s.scan_interval.max(s.reconcile_interval) * 3).max(Duration::from_secs(5))
}

/// Where a process came to the engine's attention.
struct Origin {
    exec_mono_ns: Option<u64>,
    /// When the source read the notice and when the engine took it (CLOCK_MONOTONIC ns).
    read_mono_ns: Option<u64>,
    taken_mono_ns: Option<u64>,
    source: &'static str,
    stop: Option<Stopped>,
    /// An exec held at the gate: answered right after the verified move, or when dropped.
    gated: Option<Gated>,
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
            gated: None,
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
        let memory = skip_memory(&cfg.settings);
        let mut guard = cfg.guard;
        guard.tool_roots = tool_roots.roots().to_vec();
        Engine {
            settings: cfg.settings,
            proc,
            rules: Rules {
                guard,
                tool_roots,
                dry_run: cfg.dry_run,
                failure_backoff: cfg.failure_backoff,
                exec_hook: false,
            },
            placer: cfg.placer,
            table: Table::new(memory),
            spares: crate::placer::Spares::default(),
            out: Out {
                outcomes,
                counts: cfg.counts,
                heartbeat,
                // A pin's pidfd numbered at or past this goes no further than its
                // placement: the record loop may hold outcomes for a while, and a burst
                // must not hold the descriptors placing needs.
                keep_pidfds_below: crate::process::exits::keep_below(),
            },
            rings: Vec::new(),
            trim_after: None,
        }
    }

    fn emit(&self, o: Outcome) {
        // The record loop is gone only when the daemon is shutting down.
        let _ = self.out.outcomes.blocking_send(o);
    }

    fn run(&mut self, inbox: Inbox) {
        self.rules.exec_hook = !self.rings.is_empty();
        let mut from_ring = Vec::new();
        loop {
            self.out.heartbeat.store(monotonic_ns(), Ordering::Relaxed);
            let mut busy = false;
            // The ring first, then the hot queue: every exec waiting is placed before any
            // other work is looked at.
            for r in self.rings.iter_mut() {
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
            // A timeout rounded up to the millisecond, so a timer is not missed.
            let ms = wait.as_micros().div_ceil(1000) as i64;
            let timeout = rustix::time::Timespec {
                tv_sec: ms / 1000,
                tv_nsec: (ms % 1000) * 1_000_000,
            };
            let mut fds: Vec<rustix::event::PollFd> = self
                .rings
                .iter()
                .map(|r| r.fd())
                .chain(std::iter::once(inbox.waker.fd()))
                .map(|fd| rustix::event::PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::IN))
                .collect();
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
            inbox.waker.clear();
        }
    }
}
