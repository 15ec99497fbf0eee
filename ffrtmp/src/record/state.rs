//! The state file: a superset of the predecessor's JSON schema, written atomically.
//! A file that cannot be read or parsed never stops the daemon: it is set aside as
//! `<path>.corrupt-<unix time>` and the daemon starts fresh.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Limits;
pub use crate::sources::gate::marks::HeldBinary;

pub const STATE_VERSION: u32 = 2;

/// The whole file. Unknown fields are ignored, missing ones default, so the predecessor's
/// files load and newer writers' files do not break older readers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    #[serde(default)]
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_at: Option<DateTime<Utc>>,
    /// Keyed by PID as a string, as the predecessor did.
    #[serde(default)]
    pub processes: BTreeMap<String, ProcessRecord>,
    #[serde(default)]
    pub statistics: Statistics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRecord>,
    /// The binaries whose execs the exec gate held when the file was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_at_exec: Vec<HeldBinary>,
    /// The pools and their limits in force, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolRecord>,
    /// Services limited for their targets (`services: limit_unit`), with their values from
    /// before, put back when their last target ends.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub units: BTreeMap<String, crate::placer::UnitLimits>,
}

/// A pool as the state file records it: its cgroup and the limits in force there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub cgroup: String,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Shared with the metrics' copy of the job (`JobInfo`): one allocation per string.
    pub job_id: Arc<str>,
    pub command: Arc<str>,
    pub discovered_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Start time in clock ticks after boot: with `pid`, the identity. Absent in the
    /// predecessor's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Hierarchy path of the job cgroup (`/ffrtmp/auto-ffmpeg-42`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistics {
    #[serde(default)]
    pub total_scans: u64,
    #[serde(default)]
    pub total_discovered: u64,
    #[serde(default)]
    pub total_attachments: u64,
    #[serde(default)]
    pub total_placement_failures: u64,
    #[serde(default)]
    pub total_limit_failures: u64,
    #[serde(default)]
    pub total_drift_corrections: u64,
    #[serde(default)]
    pub total_events_lost: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub status: String,
    pub scan_failures: u32,
    pub attach_failures: u32,
    pub since: DateTime<Utc>,
}

/// The result of reading the state file at start.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet.
    Missing,
    Ok(StateFile),
    /// The file was unreadable or not valid state; it was moved aside (if possible).
    SetAside {
        error: String,
        moved_to: Option<PathBuf>,
        rename_error: Option<String>,
    },
}

/// Read the state file, setting a bad one aside.
pub fn load(path: &Path) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return set_aside(path, format!("cannot read it: {e}")),
    };
    match parse(&bytes) {
        Ok(s) => Loaded::Ok(s),
        Err(e) => set_aside(path, format!("not valid state JSON: {e}")),
    }
}

/// The state file's bytes as state.
pub fn parse(bytes: &[u8]) -> Result<StateFile, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn set_aside(path: &Path, error: String) -> Loaded {
    let unix = chrono::Utc::now().timestamp();
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".corrupt-{unix}"));
    let target = PathBuf::from(target);
    match std::fs::rename(path, &target) {
        Ok(()) => Loaded::SetAside {
            error,
            moved_to: Some(target),
            rename_error: None,
        },
        Err(e) => Loaded::SetAside {
            error,
            moved_to: None,
            rename_error: Some(e.to_string()),
        },
    }
}

/// The file as the daemon writes it: `StateFile`'s fields, in its order and with its
/// attributes, borrowing the governed processes' records instead of copying them, so a
/// flush of N processes allocates the JSON and N small keys, not N records.
#[derive(Serialize)]
pub struct StateView<'a> {
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scan_at: Option<DateTime<Utc>>,
    pub processes: BTreeMap<String, &'a ProcessRecord>,
    pub statistics: &'a Statistics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<&'a HealthRecord>,
    #[serde(skip_serializing_if = "<[HeldBinary]>::is_empty")]
    pub held_at_exec: &'a [HeldBinary],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: &'a BTreeMap<String, PoolRecord>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub units: &'a BTreeMap<String, crate::placer::UnitLimits>,
}

impl StateView<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        json(self)
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(v).expect("state serializes");
    v.push(b'\n');
    v
}

impl StateFile {
    pub fn to_json(&self) -> Vec<u8> {
        json(self)
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        crate::durable::write_atomic(path, &self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seeds (fuzz/seeds/state) are state files the daemon loads whole.
    #[test]
    fn the_fuzz_seeds_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/state");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let file = parse(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(file.processes.len(), 1, "{}", path.display());
            n += 1;
        }
        assert_eq!(n, 2);
    }
    use std::os::unix::fs::OpenOptionsExt;

    const PREDECESSOR: &str = r#"{
  "processes": {
    "12345": {
      "pid": 12345,
      "job_id": "auto-ffmpeg-12345",
      "command": "ffmpeg",
      "discovered_at": "2026-01-07T10:30:00Z",
      "attached_at": "2026-01-07T10:30:01Z"
    }
  },
  "statistics": {
    "total_scans": 1440,
    "total_discovered": 45,
    "total_attachments": 43
  }
}"#;

    #[test]
    fn the_view_writes_what_the_file_reads() {
        let mut f: StateFile = serde_json::from_str(PREDECESSOR).unwrap();
        f.version = STATE_VERSION;
        f.last_scan_at = Some(Utc::now());
        let mut r = f.processes["12345"].clone();
        r.pid = 9;
        r.start_time = Some(77);
        r.cgroup = Some("/ffrtmp/auto-ffmpeg-9".into());
        f.processes.insert("9".into(), r);
        f.health = Some(HealthRecord {
            status: "healthy".into(),
            scan_failures: 1,
            attach_failures: 2,
            since: Utc::now(),
        });
        f.held_at_exec = vec![HeldBinary {
            path: "/usr/bin/ffmpeg".into(),
            target: "ffmpeg".into(),
        }];
        f.pools.insert(
            "live".into(),
            PoolRecord {
                cgroup: "/ffrtmp/live".into(),
                limits: Limits {
                    cpu_quota: Some(100),
                    ..Limits::default()
                },
            },
        );
        let view = StateView {
            version: f.version,
            last_scan_at: f.last_scan_at,
            processes: f.processes.iter().map(|(k, v)| (k.clone(), v)).collect(),
            statistics: &f.statistics,
            health: f.health.as_ref(),
            held_at_exec: &f.held_at_exec,
            pools: &f.pools,
            units: &f.units,
        };
        assert_eq!(
            String::from_utf8(view.to_json()).unwrap(),
            String::from_utf8(f.to_json()).unwrap()
        );
    }

    #[test]
    fn reads_the_predecessors_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watch-state.json");
        std::fs::write(&p, PREDECESSOR).unwrap();
        let Loaded::Ok(s) = load(&p) else {
            panic!("should load")
        };
        let r = &s.processes["12345"];
        assert_eq!(&*r.job_id, "auto-ffmpeg-12345");
        assert_eq!(r.start_time, None);
        assert_eq!(s.statistics.total_scans, 1440);
        assert_eq!(s.statistics.total_attachments, 43);
    }

    #[test]
    fn reads_go_timestamps_with_offsets_and_nanoseconds() {
        let text = r#"{"version":1,"last_scan_at":"2026-01-07T11:30:00.123456789+01:00","processes":{"7":{"pid":7,"job_id":"auto-ffmpeg-7","command":"ffmpeg","discovered_at":"0001-01-01T00:00:00Z","attached_at":"2026-01-07T10:30:01.5Z","last_seen_at":"2026-01-07T10:31:00Z","future_field":true}},"statistics":{}}"#;
        let s: StateFile = serde_json::from_str(text).unwrap();
        assert_eq!(
            s.last_scan_at.unwrap().to_rfc3339(),
            "2026-01-07T10:30:00.123456789+00:00"
        );
        assert_eq!(s.processes["7"].pid, 7);
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let mut s = StateFile {
            version: STATE_VERSION,
            ..Default::default()
        };
        s.processes.insert(
            "42".into(),
            ProcessRecord {
                pid: 42,
                job_id: "auto-ffmpeg-42".into(),
                command: "ffmpeg".into(),
                discovered_at: Utc::now(),
                attached_at: Some(Utc::now()),
                last_seen_at: Some(Utc::now()),
                start_time: Some(123456),
                cgroup: Some("/ffrtmp/auto-ffmpeg-42".into()),
                exe: Some("/usr/bin/ffmpeg".into()),
                limits: Some(Limits {
                    cpu_quota: Some(200),
                    cpu_weight: Some(100),
                    memory_limit: Some(4096),
                    pids_max: None,
                }),
            },
        );
        s.statistics.total_scans = 3;
        s.health = Some(HealthRecord {
            status: "healthy".into(),
            scan_failures: 0,
            attach_failures: 0,
            since: Utc::now(),
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/state.json");
        s.save(&p).unwrap();
        let Loaded::Ok(back) = load(&p) else { panic!() };
        assert_eq!(back, s);
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A symlink planted where the temp file of the previous release went (its name was
    /// `.<name>.tmp-<pid>`) or anywhere else in the directory does not redirect the write.
    #[test]
    fn a_planted_symlink_never_redirects_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let p = dir.path().join("state.json");
        let old_name = dir
            .path()
            .join(format!(".state.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_name).unwrap();
        StateFile::default().save(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(matches!(load(&p), Loaded::Ok(_)));
        // And the temp file is never opened through a link: O_EXCL refuses the name.
        let (tmp, _f) = crate::durable::create_temp(dir.path(), std::ffi::OsStr::new("x")).unwrap();
        assert!(!tmp.is_symlink());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let e = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&link)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn corrupt_and_truncated_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let full = String::from_utf8(StateFile::default().to_json()).unwrap();
        for (i, bad) in [
            "{\"processes\": {\"1\": ",
            "not json at all",
            "",
            "[1,2,3]",
            "{\"processes\": []}",
            &full[..full.len() / 2],
        ]
        .iter()
        .enumerate()
        {
            let p = dir.path().join(format!("state-{i}.json"));
            std::fs::write(&p, bad).unwrap();
            match load(&p) {
                Loaded::SetAside {
                    moved_to: Some(m),
                    error,
                    ..
                } => {
                    assert!(!p.exists(), "original moved away");
                    assert!(m.to_string_lossy().contains(".corrupt-"), "{m:?}");
                    assert_eq!(
                        std::fs::read_to_string(&m).unwrap(),
                        *bad,
                        "content kept for the operator"
                    );
                    assert!(!error.is_empty());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unreadable_path_is_set_aside_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::create_dir(&p).unwrap(); // EISDIR on read
        assert!(matches!(
            load(&p),
            Loaded::SetAside {
                moved_to: Some(_),
                ..
            }
        ));
        assert!(matches!(load(&p), Loaded::Missing));
    }
}
