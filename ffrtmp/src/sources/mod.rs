//! Event sources: where ffrtmp learns that a process exists. Each pushes `SourceEvent`s into
//! one channel; the daemon does not care which source an event came from. The /proc scan
//! (`scan`) is driven by the daemon itself: it is the fallback source and the reconciliation.

pub mod ebpf;
pub mod scan;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A process exec'd (or was found), as a source saw it.
#[derive(Debug, Clone)]
pub struct ExecNotice {
    pub pid: u32,
    /// comm at exec, if the source knows it.
    pub comm: Option<Vec<u8>>,
    /// The exec'd path, if the source knows it.
    pub filename: Option<Vec<u8>>,
    /// CLOCK_MONOTONIC ns of the exec (for exec → placed latency), if known.
    pub exec_mono_ns: Option<u64>,
    /// The kernel stopped the process for strict placement: it must be continued.
    pub stopped: bool,
    pub source: &'static str,
}

#[derive(Debug, Clone)]
pub enum SourceEvent {
    Exec(ExecNotice),
    /// The source lost `count` events: reconcile now so nothing stays ungoverned.
    Lost {
        source: &'static str,
        count: u64,
    },
    /// The source stopped working; the daemon logs it and relies on scanning.
    Failed {
        source: &'static str,
        error: String,
    },
}

/// A source of exec events.
pub trait EventSource: Send {
    fn name(&self) -> &'static str;
    /// Start pushing events; the task ends when the receiver is dropped.
    fn spawn(self: Box<Self>, tx: mpsc::Sender<SourceEvent>) -> JoinHandle<()>;
}

/// A source that replays a fixed list of events (tests, and `ffrtmp` without BPF).
pub struct ReplaySource {
    pub events: Vec<SourceEvent>,
}

impl EventSource for ReplaySource {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn spawn(self: Box<Self>, tx: mpsc::Sender<SourceEvent>) -> JoinHandle<()> {
        tokio::spawn(async move {
            for e in self.events {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        })
    }
}

/// Events pushed by a test or another part of the program through a channel.
pub struct ChannelSource {
    pub rx: mpsc::Receiver<SourceEvent>,
}

impl EventSource for ChannelSource {
    fn name(&self) -> &'static str {
        "channel"
    }
    fn spawn(mut self: Box<Self>, tx: mpsc::Sender<SourceEvent>) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(e) = self.rx.recv().await {
                if tx.send(e).await.is_err() {
                    break;
                }
            }
        })
    }
}
