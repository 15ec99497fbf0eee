//! Which cgroup hierarchy this host has: the unified one (`v2`) or v1 hierarchies
//! (legacy and hybrid hosts), from `/sys/fs/cgroup` and the mount table.

use std::path::PathBuf;

use super::backend::CgroupBackend;

/// Detect the host's hierarchy from `/sys/fs/cgroup`.
pub fn detect() -> Result<Box<dyn CgroupBackend>, String> {
    if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        Ok(Box::new(super::v2::V2Backend::new(PathBuf::from(
            "/sys/fs/cgroup",
        ))))
    } else {
        super::v1::V1Backend::from_mountinfo().map(|b| Box::new(b) as Box<dyn CgroupBackend>)
    }
}
