//! The governed jobs as the record loop knows them, held once: one record per governed
//! process (what the state file persists, what `/metrics`, `/healthz` and systemd's STATUS
//! show), the jobs whose process exited until their cgroup's last numbers are read, and
//! the ended ones, kept a while for the scrape after an exit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::ProcessRecord;
use crate::placer::Usage;
use crate::process::ProcessId;

/// How long an ended job's series stay in `per_job` mode.
pub const ENDED_KEPT: Duration = Duration::from_secs(120);

/// A governed process: its identity and its record.
#[derive(Debug)]
pub struct Job {
    pub id: ProcessId,
    pub record: ProcessRecord,
}

impl Job {
    /// Its job cgroup (empty for a predecessor's record that named none).
    pub fn cgroup(&self) -> &str {
        self.record.cgroup.as_deref().unwrap_or("")
    }
}

/// A job that ended, with its cgroup's last numbers.
#[derive(Debug, Clone)]
pub struct EndedJob {
    pub record: ProcessRecord,
    pub usage: Usage,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub struct Jobs {
    live: BTreeMap<u32, Box<Job>>,
    /// Exited, last numbers not read yet: still shown, no longer counted as governed.
    ending: BTreeMap<u32, Box<ProcessRecord>>,
    ended: Vec<EndedJob>,
    /// Per command, the summed last numbers of every job that ended (`per_command`
    /// counters carry them, so they never go down when a job ends).
    ended_totals: BTreeMap<Arc<str>, Usage>,
}

/// What `/metrics` shows of the jobs, copied out for a scrape.
#[derive(Debug, Clone, Default)]
pub struct JobsView {
    pub live: Vec<ProcessRecord>,
    pub ending: Vec<ProcessRecord>,
    pub ended: Vec<EndedJob>,
    pub ended_totals: BTreeMap<Arc<str>, Usage>,
}

impl Jobs {
    pub fn add(&mut self, id: ProcessId, record: ProcessRecord) {
        self.live.insert(id.pid, Box::new(Job { id, record }));
    }

    /// The governed process with this identity.
    pub fn get(&self, id: ProcessId) -> Option<&Job> {
        self.live.get(&id.pid).map(|j| &**j).filter(|j| j.id == id)
    }

    /// The governed process with this identity.
    pub fn get_mut(&mut self, id: ProcessId) -> Option<&mut Job> {
        self.live
            .get_mut(&id.pid)
            .map(|j| &mut **j)
            .filter(|j| j.id == id)
    }

    /// Its process exited: no longer governed, shown until its last numbers are read
    /// (`ended`). The record, if it was governed.
    pub fn exited(&mut self, id: ProcessId) -> Option<&ProcessRecord> {
        if self.live.get(&id.pid).is_none_or(|j| j.id != id) {
            return None;
        }
        let job = self.live.remove(&id.pid)?;
        self.ending.insert(id.pid, Box::new(job.record));
        self.ending.get(&id.pid).map(|r| &**r)
    }

    /// An ended job's cgroup's last numbers were read (`None`: the cgroup was gone).
    pub fn ended(&mut self, pid: u32, usage: Option<Usage>) {
        let Some(record) = self.ending.remove(&pid) else {
            return;
        };
        let now = Instant::now();
        self.ended.retain(|e| now.duration_since(e.at) < ENDED_KEPT);
        let usage = usage.unwrap_or_default();
        let t = self.ended_totals.entry(record.command.clone()).or_default();
        add(&mut t.cpu_usec, usage.cpu_usec);
        add(&mut t.oom_kills, usage.oom_kills);
        self.ended.push(EndedJob {
            record: *record,
            usage,
            at: now,
        });
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.live.values().map(|j| &**j)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        self.live.values_mut().map(|j| &mut **j)
    }

    pub fn view(&self) -> JobsView {
        JobsView {
            live: self.live.values().map(|j| j.record.clone()).collect(),
            ending: self.ending.values().map(|r| (**r).clone()).collect(),
            ended: self.ended.clone(),
            ended_totals: self.ended_totals.clone(),
        }
    }
}

pub fn add(into: &mut Option<u64>, v: Option<u64>) {
    if let Some(v) = v {
        *into.get_or_insert(0) += v;
    }
}
