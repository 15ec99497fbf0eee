//! Reading and writing cgroupfs files, for both backends: paths under a mount point, a
//! value read back, `key value` lines, `cgroup.procs`, mkdir and rmdir that accept what
//! is already there.

use std::io;
use std::path::{Path, PathBuf};

use super::error::{from_cgroups_rs, PlaceError, Step};

/// Join a hierarchy path (`/a/b`) onto a mount point.
pub fn dir_of(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

pub fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

pub fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path).ok()?.parse().ok()
}

/// `key value` lines (cpu.stat, memory.events, memory.oom_control).
pub fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn read_procs(dir: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

pub fn list_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// mkdir that accepts an existing directory.
pub fn mkdir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// rmdir that accepts a missing directory.
pub fn rmdir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The end of one limit write through cgroups-rs: its error said with the file's path,
/// then the value read back.
pub fn written(
    dir: &Path,
    file: &str,
    want: &str,
    r: cgroups_rs::error::Result<()>,
) -> Result<(), PlaceError> {
    let path = dir.join(file);
    let shown = path.display().to_string();
    r.map_err(|e| from_cgroups_rs(Step::WriteLimit, &shown, &e))?;
    verify(&path, want)
}

/// Move a whole process (`pid` is its tgid) into the cgroup at `dir`.
pub fn move_tgid(dir: PathBuf, v2: bool, pid: u32) -> Result<(), PlaceError> {
    use cgroups_rs::Controller as _;
    // Any controller type writes cgroup.procs the same way; cpu is just a handle.
    cgroups_rs::cpu::CpuController::new(dir.clone(), v2)
        .add_task_by_tgid(&cgroups_rs::CgroupPid::from(u64::from(pid)))
        .map_err(|e| {
            let shown = dir.join("cgroup.procs").display().to_string();
            from_cgroups_rs(Step::Move, &shown, &e)
        })
}

/// Read back what was written to a limit file; a different value is a permanent error.
pub fn verify(path: &Path, want: &str) -> Result<(), PlaceError> {
    let shown = path.display().to_string();
    let got = read_trimmed(path).map_err(|e| PlaceError::io(Step::Verify, &shown, &e))?;
    if !super::limits::reads_as(&got, want) {
        return Err(PlaceError::permanent(
            Step::Verify,
            format!("{shown}: wrote {want:?} but it reads back {got:?}"),
        ));
    }
    Ok(())
}
