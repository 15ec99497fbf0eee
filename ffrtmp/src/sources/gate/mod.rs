//! The exec gate: a source that holds a known target's exec in the kernel until it is
//! placed (docs/inline.md). A fanotify `FAN_OPEN_EXEC_PERM` mark on each target binary
//! makes its exec wait inside `open_exec` for an answer; the gate hands the held exec to
//! the engine's hot queue as a notice carrying a `Gated` value, the engine places the
//! process and then answers, so the process's first instruction runs in its job cgroup.
//!
//! The gate thread (`ffrtmp-gate`) does no blocking I/O and writes no log line before it
//! hands an exec on or answers it; it never waits on the engine (a full hot queue answers
//! at once and leaves the process to the eBPF path), and it answers every held exec the
//! engine has not answered within `gate_timeout` (a late answer, counted and logged after).
//! The gate never denies an exec.

mod fanotify;
pub mod marks;
pub mod stats;
pub mod watchdog;

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

pub use stats::{GateStats, GateTotals};

use self::fanotify::{Buffer, Event, Group};
use self::marks::Marks;
use self::watchdog::Lifeline;
use super::{Attached, EventSource, SourceEvent, SourceSinks, SourceThread};
use crate::exec::{self, ExecNotice, Waker};
use crate::process::gated::{Answer, Held, Responder};
use crate::process::{monotonic_ns, Gated, Known};

pub const SOURCE: &str = "gate";

/// Asked of the gate thread by the record loop.
#[derive(Debug)]
pub enum GateCmd {
    /// A target's binary (a placed process's exe): hold its later execs too.
    Learn {
        exe: PathBuf,
        target: String,
    },
    /// The targets after a reload: their binaries on `PATH` are marked.
    Targets(Vec<String>),
    Stop,
}

/// The group, as the answerer of held execs.
struct GroupResponder {
    group: Group,
    stats: Arc<GateStats>,
}

impl Responder for GroupResponder {
    fn allow(&self, fd: RawFd, answer: Answer, held_ns: u64) {
        self.pass(fd);
        self.stats.answered(answer, held_ns);
    }
}

impl GroupResponder {
    /// Let the exec go on and close the event's descriptor (counted by the caller).
    fn pass(&self, fd: RawFd) {
        // An event whose process was killed meanwhile is still ours to answer and close.
        let _ = self.group.allow(fd);
        // SAFETY: the event's descriptor was ours, and this is its one answer.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// The gate, opened and marked, ready to start.
pub struct GateSource {
    group: Arc<GroupResponder>,
    marks: Marks,
    timeout: Duration,
    me: u32,
    path_var: String,
    cmds: exec::Receiver<GateCmd>,
    stop_tx: exec::Sender<GateCmd>,
    waker: Waker,
    /// Shared with the watchdog, which lets go of the group when this thread is stuck.
    line: Arc<Lifeline>,
    /// The targets whose binaries on `PATH` the thread marks when it starts.
    targets: Vec<String>,
}

/// The record loop's side of a running gate.
pub struct GateHandle {
    pub stats: Arc<GateStats>,
    cmds: exec::Sender<GateCmd>,
}

impl GateHandle {
    pub fn send(&self, c: GateCmd) {
        if self.cmds.try_send(c).is_err() {
            warn!("the gate's command queue is full; a target binary is held only from its next placement");
        }
    }
}

/// Open the gate for `targets`, marking their binaries on `path_var` (the daemon's `PATH`).
/// An error says why the kernel or the daemon's capabilities do not allow it.
pub fn open(targets: &[String], path_var: &str, timeout: Duration) -> Result<GateSource, String> {
    let group = Group::open().map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => "fanotify permission events need CAP_SYS_ADMIN".to_string(),
        Some(libc::ENOSYS) => "the kernel has no fanotify (CONFIG_FANOTIFY)".to_string(),
        Some(libc::EINVAL) => format!(
            "the kernel refuses a permission group ({e}): CONFIG_FANOTIFY_ACCESS_PERMISSIONS is off"
        ),
        _ => format!("fanotify_init: {e}"),
    })?;
    // Exec permission events came with 5.0: an older kernel refuses the mask.
    group
        .mark(std::path::Path::new("/"))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => {
                "the kernel has no exec permission events (FAN_OPEN_EXEC_PERM, Linux 5.0)"
                    .to_string()
            }
            _ => format!("fanotify_mark: {e}"),
        })?;
    group.unmark(std::path::Path::new("/"));
    let marks = Marks::new().map_err(|e| format!("inotify: {e}"))?;
    let waker = Waker::new().map_err(|e| format!("eventfd: {e}"))?;
    let (tx, rx) = exec::queue::bounded(1024, &waker);
    let stats = Arc::new(GateStats::default());
    let line = Lifeline::new(group.fd()).map_err(|e| format!("/dev/null: {e}"))?;
    let g = GateSource {
        line,
        targets: targets.to_vec(),
        group: Arc::new(GroupResponder {
            group,
            stats: stats.clone(),
        }),
        marks,
        timeout,
        me: std::process::id(),
        path_var: path_var.to_string(),
        cmds: rx,
        stop_tx: tx.clone(),
        waker,
    };
    drop((stats, tx));
    Ok(g)
}

impl GateSource {
    /// Mark the targets' binaries on `PATH`.
    fn mark_path(&mut self, targets: &[String]) {
        for (p, t) in marks::on_path(&self.path_var, targets) {
            self.learn(p, &t);
        }
    }

    fn learn(&mut self, p: PathBuf, target: &str) {
        self.line.turn_within(Duration::ZERO);
        match self.marks.add(&self.group.group, &p, target) {
            Ok(true) => info!(
                "Holding every exec of {} ({target}) until it is placed",
                p.display()
            ),
            Ok(false) => {}
            // Not a file of this mount namespace (a container's), or not named after its
            // target (an interpreter, a multi-call binary a link names): placed by events.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
                ) =>
            {
                tracing::debug!("not holding the execs of {} ({target}): {e}", p.display())
            }
            Err(e) => warn!(
                "cannot hold the execs of {} ({target}): {e}; they are placed after they start",
                p.display()
            ),
        }
        self.count_marks();
    }

    fn count_marks(&self) {
        let n = self.marks.len() as u64;
        self.group.stats.marks.store(n, Relaxed);
    }
}

impl EventSource for GateSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn start(mut self: Box<Self>, sinks: SourceSinks) -> std::io::Result<Attached> {
        let stop = self.stop_tx.clone();
        let (self_stats, self_cmds) = (self.group.stats.clone(), self.stop_tx.clone());
        let line = self.line.clone();
        watchdog::spawn(line.clone(), self_stats.clone())?;
        // Marked under the watchdog, right before the thread that answers starts: an exec
        // held meanwhile waits for that thread's first read.
        let targets = std::mem::take(&mut self.targets);
        self.mark_path(&targets);
        let handle = std::thread::Builder::new()
            .name("ffrtmp-gate".into())
            .spawn(move || self.run(&sinks))
            .inspect_err(|_| line.stop())?;
        Ok(Attached {
            thread: Some(SourceThread::new(
                SOURCE,
                Box::new(move || {
                    line.stop();
                    let _ = stop.send(GateCmd::Stop);
                }),
                handle,
            )),
            counters: None,
            ring: None,
            gate: Some(GateHandle {
                stats: self_stats,
                cmds: self_cmds,
            }),
        })
    }
}

/// What the thread keeps between turns.
struct Turn {
    buf: Box<Buffer>,
    events: Vec<Event>,
    /// Held execs in the engine's hands, oldest first (one timeout: deadline order).
    pending: VecDeque<(Instant, Arc<Held>)>,
}

impl GateSource {
    fn run(mut self: Box<Self>, sinks: &SourceSinks) {
        let _exit = watchdog::OnExit(self.line.clone());
        let mut reopen_failed = false;
        let mut t = Turn {
            buf: Box::default(),
            events: Vec::with_capacity(64),
            pending: VecDeque::new(),
        };
        let (mut read_failed, mut dirs_changed) = (false, false);
        loop {
            self.line.turn_within(Duration::ZERO);
            match self.group.group.read(&mut t.buf, &mut t.events) {
                Ok(()) => read_failed = false,
                // Out of descriptors for the event's file: the kernel has refused that exec
                // (EPERM), the one exec the gate cannot let go. Said once per episode; not
                // a busy loop while descriptors are short.
                Err(e) => {
                    if !std::mem::replace(&mut read_failed, true) {
                        warn!("the exec gate cannot read a held exec ({e}); the kernel refused that exec; raise LimitNOFILE= if this is 'Too many open files'");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            for ev in t.events.drain(..) {
                self.on_event(ev, sinks, &mut t.pending);
            }
            self.expire(&mut t.pending);
            self.waker.clear();
            // The rest (path lookups, marks, log lines, messages) only once every held exec
            // read is handed on or answered.
            if std::mem::take(&mut dirs_changed) {
                self.remark();
            }
            if self.line.take_released() {
                self.reopen(&mut reopen_failed);
            }
            while let Ok(c) = self.cmds.try_recv() {
                self.line.turn_within(Duration::ZERO);
                match c {
                    GateCmd::Learn { exe, target } => self.learn(exe, &target),
                    GateCmd::Targets(targets) => {
                        self.marks.retain(&self.group.group, &targets);
                        self.mark_path(&targets);
                    }
                    GateCmd::Stop => return,
                }
            }
            if let Some(held) = self.marks.take_changed() {
                let sent = sinks.events.try_send(SourceEvent::HeldAtExec(held));
                if sent.is_err() {
                    self.marks.changed_again(); // said at the next turn
                }
            }
            dirs_changed = self.wait(&t.pending);
        }
    }

    /// Hand a held exec to the engine, or answer it at once.
    fn on_event(
        &self,
        ev: Event,
        sinks: &SourceSinks,
        pending: &mut VecDeque<(Instant, Arc<Held>)>,
    ) {
        if ev.overflow {
            // Never with an unbounded queue; if it comes, the kernel let execs go unasked.
            self.group.stats.overflows.fetch_add(1, Relaxed);
            let _ = sinks.events.try_send(SourceEvent::Lost {
                source: SOURCE,
                count: 1,
            });
            return;
        }
        if ev.fd < 0 {
            return; // no file to answer for (not a permission event)
        }
        let read_mono_ns = monotonic_ns();
        // SAFETY: the event's descriptor is open until it is answered, below or later.
        let inode = rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(ev.fd) })
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        // Exec'd by the target's name: a hard link by another name to the same inode (a
        // multi-call binary) is not the target.
        let by_name = |target: &str| {
            std::fs::read_link(format!("/proc/self/fd/{}", ev.fd)).is_ok_and(|p| {
                p.file_name()
                    .is_some_and(|n| n.as_encoded_bytes() == target.as_bytes())
            })
        };
        let mark = inode
            .and_then(|i| Some((self.marks.get(i)?, i)))
            .filter(|(m, _)| ev.pid != self.me && by_name(&m.target));
        let Some((mark, inode)) = mark else {
            self.group.stats.passed.fetch_add(1, Relaxed);
            self.group.pass(ev.fd);
            return;
        };
        let held = Held::new(
            ev.fd,
            ev.pid,
            mark.target.clone(),
            (mark.path.clone(), inode),
            read_mono_ns,
            self.group.clone(),
        );
        let name = mark.target.as_bytes().to_vec();
        let notice = ExecNotice {
            known: Known {
                argv0: Some(name.clone()),
                exe_name: Some(name),
                ..Known::default()
            },
            read_mono_ns: Some(read_mono_ns),
            gated: Some(Gated::new(held.clone())),
            ..ExecNotice::pid(ev.pid, SOURCE)
        };
        match sinks.exec.try_send(notice) {
            Ok(()) => {
                self.group.stats.held.fetch_add(1, Relaxed);
                pending.push_back((Instant::now() + self.timeout, held));
            }
            // Dropped: answered; its exec event places it after it starts.
            Err(n) => {
                self.group.stats.passed.fetch_add(1, Relaxed);
                drop(n);
            }
        }
    }

    /// Answer what the engine has not answered within `gate_timeout`; say so after.
    fn expire(&self, pending: &mut VecDeque<(Instant, Arc<Held>)>) {
        let now = Instant::now();
        let mut late = Vec::new();
        while let Some((deadline, held)) = pending.front() {
            if !held.is_answered() && *deadline > now {
                break;
            }
            if held.answer(Answer::Late) {
                late.push(held.clone());
            }
            pending.pop_front();
        }
        for held in late {
            warn!(
                pid = held.pid,
                "PID {} ({}) was held at exec for gate_timeout {} and is not placed yet; let it run unplaced; it is placed as soon as the placement goes through",
                held.pid,
                held.target,
                crate::config::units::format_go_duration(self.timeout)
            );
        }
    }

    /// Sleep until an event, a command, a changed directory or the next deadline; `true`
    /// when a watched directory changed (its binaries are marked again after the events).
    fn wait(&mut self, pending: &VecDeque<(Instant, Arc<Held>)>) -> bool {
        let wait = pending
            .iter()
            .find(|(_, h)| !h.is_answered())
            .map_or(Duration::from_secs(1), |(d, _)| {
                d.saturating_duration_since(Instant::now())
            });
        self.line.turn_within(wait);
        let ms = wait.as_micros().div_ceil(1000) as i64;
        let timeout = rustix::time::Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        // SAFETY: the group's descriptor lives as long as self.
        let group = unsafe { BorrowedFd::borrow_raw(self.group.group.fd()) };
        let mut fds = [
            rustix::event::PollFd::from_borrowed_fd(group, rustix::event::PollFlags::IN),
            rustix::event::PollFd::from_borrowed_fd(self.waker.fd(), rustix::event::PollFlags::IN),
            rustix::event::PollFd::from_borrowed_fd(
                self.marks.watch_fd(),
                rustix::event::PollFlags::IN,
            ),
        ];
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        !fds[2].revents().is_empty()
    }

    /// The watchdog let go of the group (this thread was stuck): a new group, every
    /// binary marked again. One that cannot be opened is tried again a second later.
    fn reopen(&mut self, failed: &mut bool) {
        // The released group's number stays open (it is /dev/null now): the watchdog may
        // still write over it.
        self.group.group.keep_number();
        match Group::open() {
            Ok(group) => {
                // Published before marking: a mark that hangs is the new group's, and the
                // watchdog lets go of that one.
                self.line.reopened(group.fd());
                let stats = self.group.stats.clone();
                // Execs held in the old group were let go with it; their answers go to
                // the descriptor the watchdog left in its place.
                self.group = Arc::new(GroupResponder { group, stats });
                let line = self.line.clone();
                let beat = || line.turn_within(Duration::ZERO);
                let (n, of) = self.marks.mark_all(&self.group.group, beat);
                *failed = false;
                info!("The exec gate holds execs again ({n} of {of} binaries marked)");
            }
            Err(e) => {
                if !std::mem::replace(failed, true) {
                    warn!("The exec gate cannot open a new fanotify group ({e}); target execs are placed after they start; trying again every second");
                }
                self.line.release_again();
                std::thread::sleep(Duration::from_secs(1));
                self.line.turn_within(Duration::ZERO);
            }
        }
    }

    /// A watched directory changed: mark again the binaries replaced there.
    fn remark(&mut self) {
        for (path, r) in self.marks.refresh(&self.group.group) {
            match r {
                Ok(()) => {
                    self.group.stats.remarks.fetch_add(1, Relaxed);
                    info!("{} was replaced; holding the execs of the new file", path.display());
                }
                Err(e) => warn!("{} was replaced and its execs cannot be held again ({e}); they are placed after they start", path.display()),
            }
        }
        self.count_marks();
    }
}
