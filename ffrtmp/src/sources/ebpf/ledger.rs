//! The kernel's ledger of strict stops (`STOPPED`), kept where the next daemon finds it.
//!
//! Each daemon pins its program's ledger in bpffs as `stopped-<pid>-<start time>` under
//! `PIN_DIR`. A daemon that dies (SIGKILL, OOM kill, abort) leaves its pin behind; the next
//! one finds it (`orphans`), places and resumes every process still stopped in it, and
//! removes the pin once the ledger is empty. A daemon that stops cleanly has resumed every
//! stop and removes its own pin. Without bpffs there is nowhere to keep the ledger, and
//! strict placement is turned off (`start` says so).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{HashMap, MapData};
use ffrtmp_common::{StopKey, StopValue};

use crate::process::{ProcFs, ProcessId, StopLedger};

/// Where ledgers are pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/ffrtmp";
const PREFIX: &str = "stopped-";

pod!(pub PodStopKey(StopKey), "repr(C), u32 + u32 + u64, no padding.");
pod!(pub PodStopValue(StopValue), "repr(C), one u64.");

/// One `STOPPED` map: this daemon's, or one a dead daemon left pinned.
pub struct KernelLedger {
    map: Mutex<HashMap<MapData, PodStopKey, PodStopValue>>,
    /// Where it is pinned, if it is.
    pin: Mutex<Option<PathBuf>>,
}

impl KernelLedger {
    pub fn new(map: HashMap<MapData, PodStopKey, PodStopValue>) -> Self {
        KernelLedger {
            map: Mutex::new(map),
            pin: Mutex::new(None),
        }
    }

    /// Pin it as this daemon's ledger (`me`) under `dir`, creating `dir`.
    pub fn pin(&self, dir: &Path, me: ProcessId) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{PREFIX}{}-{}", me.pid, me.start_time));
        // A pin of ours from before (a PID and start time cannot repeat within a boot, so
        // only a crashed earlier attempt of this very process) is replaced.
        let _ = std::fs::remove_file(&path);
        let map = self.map.lock().expect("ledger lock");
        aya::maps::IterableMap::map(&*map).pin(&path).map_err(|e| {
            format!(
                "cannot pin it at {}: {}",
                path.display(),
                super::error::chain_text(&e)
            )
        })?;
        *self.pin.lock().expect("ledger lock") = Some(path.clone());
        Ok(path)
    }

    /// Remove the pin (the map goes when its last user closes it).
    pub fn unpin(&self) {
        if let Some(p) = self.pin.lock().expect("ledger lock").take() {
            let _ = std::fs::remove_file(p);
        }
    }

    pub fn pinned_at(&self) -> Option<PathBuf> {
        self.pin.lock().expect("ledger lock").clone()
    }
}

impl StopLedger for KernelLedger {
    fn take(&self, key: &StopKey) -> bool {
        self.map
            .lock()
            .expect("ledger lock")
            .remove(&PodStopKey(*key))
            .is_ok()
    }

    fn entries(&self) -> Vec<(StopKey, u64)> {
        self.map
            .lock()
            .expect("ledger lock")
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.0, v.0.ktime_ns))
            .collect()
    }

    fn describe(&self) -> String {
        match self.pinned_at() {
            Some(p) => p.display().to_string(),
            None => "the kernel program's STOPPED map".into(),
        }
    }

    fn retire(&self) {
        self.unpin();
    }
}

/// Ledgers left pinned under `dir` by daemons that are gone (a running daemon's ledger is
/// skipped: two daemons on one node are an operator's mistake, logged by the caller).
/// Returns the ledgers and, for each pin that could not be used, why.
pub fn orphans(dir: &Path, me: ProcessId, proc: &ProcFs) -> (Vec<KernelLedger>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (found, problems);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = parse_pin_name(&name) else {
            continue;
        };
        if owner == me {
            continue;
        }
        if proc
            .stat(owner.pid)
            .is_ok_and(|s| s.start_time == owner.start_time)
        {
            problems.push(format!(
                "{} belongs to ffrtmp PID {} which is still running: two daemons on one node",
                e.path().display(),
                owner.pid
            ));
            continue;
        }
        let path = e.path();
        let opened = MapData::from_pin(&path)
            .map_err(|e| super::error::chain_text(&e))
            .and_then(|d| {
                aya::maps::Map::from_map_data(d).map_err(|e| super::error::chain_text(&e))
            })
            .and_then(|m| HashMap::try_from(m).map_err(|e| super::error::chain_text(&e)));
        match opened {
            Ok(map) => {
                let l = KernelLedger::new(map);
                *l.pin.lock().expect("ledger lock") = Some(path);
                found.push(l);
            }
            Err(err) => problems.push(format!("cannot open {}: {err}", path.display())),
        }
    }
    (found, problems)
}

/// `stopped-<pid>-<start time>` → the daemon that pinned it.
pub fn parse_pin_name(name: &str) -> Option<ProcessId> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, start) = rest.split_once('-')?;
    Some(ProcessId {
        pid: pid.parse().ok()?,
        start_time: start.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_names() {
        assert_eq!(
            parse_pin_name("stopped-42-12345"),
            Some(ProcessId {
                pid: 42,
                start_time: 12345
            })
        );
        for bad in [
            "stopped-",
            "stopped-42",
            "stopped-x-1",
            "other-1-2",
            "stopped-1-2-3",
        ] {
            assert_eq!(parse_pin_name(bad), None, "{bad}");
        }
    }
}
