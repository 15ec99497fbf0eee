//! Event sources: where ffrtmp learns that a process exists. The eBPF source's ring buffer
//! is read by the placement engine's own thread (`Attached::ring`): one wakeup between the
//! exec and its placement. A source of another kind runs on a thread of its own and hands
//! each exec to the engine's hot queue (`SourceSinks::exec`, bounded: when the engine is
//! behind, the source waits). What is not an exec (losses, failures) goes to the daemon's
//! record loop (`SourceSinks::events`), which also reads the kernel's counters
//! (`Attached::counters`). The /proc scan (`scan`) is driven by the daemon itself: it is
//! the fallback source and the reconciliation.

pub mod ebpf;
pub mod scan;

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::engine::Sender;
use crate::process::{Known, Stopped};
use crate::record::metrics::SourceCounters;

/// A process exec'd, as a source saw it.
#[derive(Debug)]
pub struct ExecNotice {
    pub pid: u32,
    /// When the process started (CLOCK_BOOTTIME ns, the kernel's `start_boottime`): with
    /// `pid`, its identity. `None` when the source does not know it.
    pub start_ns: Option<u64>,
    pub ppid: Option<u32>,
    /// comm at exec, if the source knows it.
    pub comm: Option<Vec<u8>>,
    /// Other facts the source knows (names, uid, namespace), so they are not read again.
    pub known: Known,
    /// The exec'd path, if the source knows it.
    pub filename: Option<Vec<u8>>,
    /// CLOCK_MONOTONIC ns of the exec (for exec → placed latency), if known.
    pub exec_mono_ns: Option<u64>,
    /// CLOCK_MONOTONIC ns when the source read it (the kernel's ring buffer → the reader).
    pub read_mono_ns: Option<u64>,
    /// The kernel stopped the process for strict placement: this value resumes it when
    /// dropped, so whoever ends up holding the notice cannot forget to.
    pub stop: Option<Stopped>,
    pub source: &'static str,
}

impl ExecNotice {
    /// A notice that only names a PID (tests, replays).
    pub fn pid(pid: u32, source: &'static str) -> ExecNotice {
        ExecNotice {
            pid,
            start_ns: None,
            ppid: None,
            comm: None,
            known: Known::default(),
            filename: None,
            exec_mono_ns: None,
            read_mono_ns: None,
            stop: None,
            source,
        }
    }
}

/// What a source reports besides execs.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The source lost `count` events: reconcile now so nothing stays ungoverned.
    Lost { source: &'static str, count: u64 },
    /// `count` strict targets ran without being stopped (the kernel could not stop them).
    StopsFailed { source: &'static str, count: u64 },
    /// A record that could not be decoded (its process is found by the reconciliation).
    Undecodable { source: &'static str, error: String },
    /// The source stopped working; the daemon logs it and relies on scanning.
    Failed { source: &'static str, error: String },
}

/// Where a source delivers.
#[derive(Clone)]
pub struct SourceSinks {
    /// The placement engine's hot queue (bounded; `send` blocks when it is full).
    pub exec: Sender<ExecNotice>,
    /// The record loop.
    pub events: tokio::sync::mpsc::Sender<SourceEvent>,
    /// Counters a kernel source keeps up to date for `/metrics`.
    pub counters: Arc<SourceCounters>,
}

/// A source of exec events.
pub trait EventSource: Send {
    fn name(&self) -> &'static str;
    /// Start delivering.
    fn start(self: Box<Self>, sinks: SourceSinks) -> std::io::Result<Attached>;
}

/// What a started source hands the daemon.
#[derive(Default)]
pub struct Attached {
    /// A source on a thread of its own, feeding the hot queue.
    pub thread: Option<SourceThread>,
    /// A ring buffer the engine thread reads itself.
    pub ring: Option<ebpf::RingReader>,
    /// Kernel counters the record loop reads.
    pub counters: Option<ebpf::KernelCounters>,
}

/// A started source: `stop` ends it and waits for its thread.
pub struct SourceThread {
    pub name: &'static str,
    stop: Option<Box<dyn FnOnce() + Send>>,
    handle: Option<JoinHandle<()>>,
}

impl SourceThread {
    pub fn new(
        name: &'static str,
        stop: Box<dyn FnOnce() + Send>,
        handle: JoinHandle<()>,
    ) -> SourceThread {
        SourceThread {
            name,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            s();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SourceThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One item a `ChannelSource` forwards.
#[derive(Debug)]
pub enum Feed {
    Exec(ExecNotice),
    Event(SourceEvent),
}

/// Events pushed by a test (or another part of the program) through a channel.
pub struct ChannelSource {
    rx: Receiver<Feed>,
}

impl ChannelSource {
    /// The source and the sender that feeds it.
    pub fn new() -> (ChannelSource, crossbeam_channel::Sender<Feed>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (ChannelSource { rx }, tx)
    }
}

impl EventSource for ChannelSource {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn start(self: Box<Self>, sinks: SourceSinks) -> std::io::Result<Attached> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let rx = self.rx;
        let handle = std::thread::Builder::new()
            .name("ffrtmp-feed".into())
            .spawn(move || loop {
                crossbeam_channel::select_biased! {
                    recv(stop_rx) -> _ => return,
                    recv(rx) -> item => match item {
                        Ok(Feed::Exec(n)) => {
                            if sinks.exec.send(n).is_err() {
                                return;
                            }
                        }
                        Ok(Feed::Event(e)) => {
                            if sinks.events.blocking_send(e).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                }
            })?;
        Ok(Attached {
            thread: Some(SourceThread::new(
                "channel",
                Box::new(move || {
                    let _ = stop_tx.try_send(());
                }),
                handle,
            )),
            ..Default::default()
        })
    }
}
