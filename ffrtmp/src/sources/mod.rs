//! Event sources: where ffrtmp learns that a process exists. The eBPF source's ring buffer
//! is read by the placement engine's own thread (`Attached::ring`, an `exec::Ring`): one
//! wakeup between the exec and its placement. A source of another kind runs on a thread
//! of its own and hands each exec to the engine's hot queue (`SourceSinks::exec`, bounded:
//! when the engine is behind, the source waits). What is not an exec (losses, failed stops)
//! goes to the daemon's record loop (`SourceSinks::events`), which also reads the kernel's
//! counters (`Attached::counters`). The /proc scan (`scan`) is driven by the daemon
//! itself: it is the fallback source and the reconciliation.
//!
//! Sources depend on `crate::exec` (the engine's input types and queues), never on the
//! engine or the record loop.

pub mod ebpf;
pub mod gate;
pub mod scan;

use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::exec::{ExecNotice, Ring, Sender};

/// What a source reports besides execs.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// The source lost `count` events: reconcile now so nothing stays ungoverned.
    Lost { source: &'static str, count: u64 },
    /// `count` strict targets ran without being stopped (the kernel could not stop them).
    StopsFailed { source: &'static str, count: u64 },
    /// The binaries the exec gate holds now (after any change).
    HeldAtExec(Vec<gate::marks::HeldBinary>),
}

/// Where a source delivers.
#[derive(Clone)]
pub struct SourceSinks {
    /// The placement engine's hot queue (bounded; `send` blocks when it is full).
    pub exec: Sender<ExecNotice>,
    /// The record loop.
    pub events: tokio::sync::mpsc::Sender<SourceEvent>,
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
    pub ring: Option<Box<dyn Ring>>,
    /// Kernel counters the record loop reads.
    pub counters: Option<Box<dyn CounterSource>>,
    /// The exec gate's counters and commands.
    pub gate: Option<gate::GateHandle>,
}

/// The kernel program's totals, cumulative since it was loaded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelTotals {
    /// Execs the hook saw.
    pub execs: u64,
    pub forwarded: u64,
    pub ring_full: u64,
    pub read_failed: u64,
    pub stop_failed: u64,
    /// Execs the kernel did not run the hook for (`recursion_misses`); None where the
    /// kernel does not say (before 5.12) or has not answered yet.
    pub skipped: Option<u64>,
}

/// What one read of the counters says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterReading {
    pub totals: KernelTotals,
    /// Events lost since the last read (ring full, unreadable).
    pub lost: u64,
    /// Execs the kernel skipped the hook for since the last read: most are not targets,
    /// but one may be, so the daemon reconciles (without calling them lost).
    pub skipped: u64,
    /// Strict targets not stopped since the last read.
    pub unstopped: u64,
}

/// A kernel source's counters, read by the record loop (every 250 ms).
pub trait CounterSource: Send {
    fn read(&mut self) -> CounterReading;
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
