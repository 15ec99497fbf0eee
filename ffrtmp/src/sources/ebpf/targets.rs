//! The kernel's prefilter: which names the program forwards, and how (`TARGETS`), and
//! whether it forwards everything (`SETTINGS.forward_all`). `plan` derives both from the
//! settings (pure, tested here); `TargetTable` writes them and rewrites them on reload.
//! The strict flag is set only where stops are allowed (`stops`): never in a dry run, and
//! not where the ledger of stops cannot be kept (see `ledger`).
//!
//! The kernel compares the comm, which it cuts to 15 bytes: a longer target name is keyed
//! by its first 15 bytes and flagged PREFIX, and user space confirms the full name (argv[0]
//! or exe) like for every event. Names that share a key share one entry: its flags are the
//! union (strict if any of them is strict), and user space sorts them out.

use std::collections::BTreeMap;

use aya::maps::{Array, HashMap, MapData};
use ffrtmp_common::{
    KernelSettings, TargetKey, TargetValue, COMM_LEN, TARGET_FLAG_PREFIX, TARGET_FLAG_STRICT,
};

use super::error::EbpfError;
use crate::config::{Placement, Settings};

/// Capacity of the kernel's target table (the map's size in the object).
pub const TABLE_CAPACITY: usize = 1024;

pod!(pub PodTarget(TargetValue), "repr(C), two u32, no padding.");
pod!(pub PodSettings(KernelSettings), "repr(C), two u32, no padding.");

/// What the kernel tables should hold for a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// key → `TARGET_FLAG_*`.
    pub entries: BTreeMap<TargetKey, u32>,
    pub forward_all: bool,
}

/// The map key of a target name: its first 15 bytes, NUL-padded; `true` when it was cut.
pub fn key_of(name: &str) -> (TargetKey, bool) {
    let mut key = [0u8; COMM_LEN];
    let b = name.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    key[..n].copy_from_slice(&b[..n]);
    (key, b.len() > COMM_LEN - 1)
}

/// The kernel tables for these settings; `stops`: whether strict targets may be stopped.
pub fn plan(settings: &Settings, stops: bool) -> Plan {
    let mut entries = BTreeMap::new();
    for t in &settings.targets {
        let (key, cut) = key_of(&t.name);
        let mut flags = if cut { TARGET_FLAG_PREFIX } else { 0 };
        if stops && settings.placement_of(&t.name) == Placement::Strict {
            flags |= TARGET_FLAG_STRICT;
        }
        *entries.entry(key).or_insert(0) |= flags;
    }
    // A table that cannot hold every target would miss some: forward everything instead.
    let overflow = entries.len() > TABLE_CAPACITY;
    Plan {
        entries,
        forward_all: settings.forward_all || overflow,
    }
}

/// The loaded program's `TARGETS` and `SETTINGS` maps, owned by whoever applies reloads.
pub struct TargetTable {
    targets: HashMap<MapData, TargetKey, PodTarget>,
    settings: Array<MapData, PodSettings>,
    written: BTreeMap<TargetKey, u32>,
    stops: bool,
}

impl TargetTable {
    pub(super) fn new(
        targets: HashMap<MapData, TargetKey, PodTarget>,
        settings: Array<MapData, PodSettings>,
        stops: bool,
    ) -> Self {
        TargetTable {
            targets,
            settings,
            written: BTreeMap::new(),
            stops,
        }
    }

    /// Make the kernel tables match `settings`. New and changed entries are written before
    /// stale ones are removed, so a name kept across a reload is never missing in between.
    pub fn apply(&mut self, settings: &Settings) -> Result<Plan, EbpfError> {
        let plan = plan(settings, self.stops);
        let err = |what: String, e: aya::maps::MapError| EbpfError::Targets {
            detail: format!("{what}: {}", super::error::chain_text(&e)),
        };
        let mut forward_all = plan.forward_all;
        for (key, flags) in &plan.entries {
            if self.written.get(key) == Some(flags) {
                continue;
            }
            let value = PodTarget(TargetValue {
                flags: *flags,
                _reserved: 0,
            });
            match self.targets.insert(key, value, 0) {
                Ok(()) => {
                    self.written.insert(*key, *flags);
                }
                // A full table (more targets than TABLE_CAPACITY): every exec is forwarded
                // instead, so none is missed; only strict stops need the entry.
                Err(e) if forward_all || errno_of(&e) == Some(libc::E2BIG) => forward_all = true,
                Err(e) => return Err(err(format!("inserting {}", show_key(key)), e)),
            }
        }
        let stale: Vec<TargetKey> = self
            .written
            .keys()
            .filter(|k| !plan.entries.contains_key(*k))
            .copied()
            .collect();
        for key in stale {
            match self.targets.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(err(format!("removing {}", show_key(&key)), e)),
            }
            self.written.remove(&key);
        }
        let value = PodSettings(KernelSettings {
            forward_all: u32::from(forward_all),
            _reserved: 0,
        });
        self.settings
            .set(0, value, 0)
            .map_err(|e| err("writing SETTINGS".into(), e))?;
        Ok(Plan {
            forward_all,
            ..plan
        })
    }
}

fn errno_of(e: &aya::maps::MapError) -> Option<i32> {
    match e {
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

fn show_key(key: &TargetKey) -> String {
    let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    format!("{:?}", String::from_utf8_lossy(&key[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvVars, FlagOverrides, Sources};

    fn settings(yaml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        crate::config::load(&Sources {
            config_file: Some(&path),
            env: &EnvVars::default(),
            flags: &FlagOverrides::default(),
            passwd: std::path::Path::new("/nonexistent"),
        })
        .unwrap()
    }

    fn key(s: &str) -> TargetKey {
        key_of(s).0
    }

    #[test]
    fn names_up_to_15_bytes_are_exact_keys() {
        let (k, cut) = key_of("ffmpeg");
        assert!(!cut);
        assert_eq!(&k[..7], b"ffmpeg\0");
        let (k, cut) = key_of("abcdefghijklmno");
        assert!(!cut);
        assert_eq!(&k[..15], b"abcdefghijklmno");
        assert_eq!(k[15], 0);
    }

    #[test]
    fn longer_names_are_cut_to_15_and_flagged_prefix() {
        let (k, cut) = key_of("gst-launch-1.0-extra");
        assert!(cut);
        assert_eq!(&k[..15], b"gst-launch-1.0-");
        assert_eq!(k[15], 0, "the key keeps the comm's NUL");
        let p = plan(
            &settings("target_commands: [gst-launch-1.0-extra, ffmpeg]\n"),
            true,
        );
        assert_eq!(p.entries[&key("gst-launch-1.0-")], TARGET_FLAG_PREFIX);
        assert_eq!(p.entries[&key("ffmpeg")], 0);
        assert!(!p.forward_all);
    }

    #[test]
    fn strict_follows_the_global_and_per_command_placement() {
        let s = settings(
            "target_commands: [ffmpeg, x264, very-long-command-name]\nplacement: strict\ncommands:\n  x264:\n    placement: normal\n",
        );
        // A dry run (or a node without a ledger) never stops anything.
        assert!(plan(&s, false)
            .entries
            .values()
            .all(|f| f & TARGET_FLAG_STRICT == 0));
        let p = plan(&s, true);
        assert_eq!(p.entries[&key("ffmpeg")], TARGET_FLAG_STRICT);
        assert_eq!(p.entries[&key("x264")], 0);
        assert_eq!(
            p.entries[&key("very-long-comma")],
            TARGET_FLAG_STRICT | TARGET_FLAG_PREFIX
        );
    }

    #[test]
    fn names_sharing_a_key_share_one_entry_with_both_flags() {
        let p = plan(
            &settings(
                "target_commands: [transcoder-main-a, transcoder-main-b]\ncommands:\n  transcoder-main-b:\n    placement: strict\n",
            ),
            true,
        );
        assert_eq!(p.entries.len(), 1);
        assert_eq!(
            p.entries[&key("transcoder-main")],
            TARGET_FLAG_PREFIX | TARGET_FLAG_STRICT
        );
    }

    #[test]
    fn forward_all_comes_from_the_config() {
        assert!(plan(&settings("forward_all: true\n"), true).forward_all);
        assert!(!plan(&settings("target_commands: [ffmpeg]\n"), true).forward_all);
    }
}
