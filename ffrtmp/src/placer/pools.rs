//! Pools: a cgroup under the root (`<root>/<pool>`) that holds its jobs' cgroups and
//! bounds them together with its own limits.

use super::{spares, LimitWrites, PlaceError, Placer};
use crate::config::{Limits, Pool};
use crate::job::JobId;

impl Placer {
    /// The limits a job gets in its pool. On cgroup v1 the kernel refuses a CPU quota
    /// above the parent's (EINVAL), so there a job's `cpu_quota` is at most its pool's; on
    /// v2 a job's limit above its pool's is legal and the pool's binds first.
    pub fn limits_in(&self, limits: &Limits, pool: Option<&Pool>) -> Limits {
        let pool_quota = pool.and_then(|p| p.limits.cpu_quota);
        match (self.mode(), limits.cpu_quota, pool_quota) {
            (super::CgroupMode::V1, Some(job), Some(pool)) if job > pool => Limits {
                cpu_quota: Some(pool),
                ..limits.clone()
            },
            _ => limits.clone(),
        }
    }

    /// The cgroup path of a pool.
    pub fn pool_cgroup(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    /// The pool a job cgroup is in (`<root>/<pool>/<job>`), if any.
    pub fn pool_of<'a>(&self, cgroup: &'a str) -> Option<&'a str> {
        let rest = cgroup.strip_prefix(&self.root)?.strip_prefix('/')?;
        rest.split_once('/').map(|(pool, _)| pool)
    }

    /// Make a pool's cgroup (and the root, if it is gone), with the controllers its jobs
    /// need enabled below it, and bring its limits to the configured ones. What was
    /// written, or could not be; an error when the cgroup cannot be made.
    pub fn prepare_pool(&self, pool: &Pool) -> Result<LimitWrites, PlaceError> {
        let cgroup = self.pool_cgroup(&pool.name);
        // Controllers it cannot have show as limits not applied, each said.
        self.backend.prepare_root(&cgroup);
        self.backend.create(&cgroup)?;
        Ok(self.backend.enforce_limits(&cgroup, &pool.limits))
    }

    /// The cgroup of a job named on the command line (`ffrtmp run`/`attach --job-id`),
    /// unless that name's cgroup holds other cgroups: a pool of the daemon's (or another
    /// tool's subtree), whose limits would become the job's, and which on cgroup v2 could
    /// not hold the process anyway.
    pub fn named_job_cgroup(&self, job_id: &JobId) -> Result<String, String> {
        let cgroup = self.cgroup_of(job_id.as_str());
        match self.backend.children(&cgroup) {
            Ok(c) if !c.is_empty() => Err(format!(
                "--job-id {job_id}: {cgroup} holds other cgroups ({}), so it is a pool of the daemon's or another tool's, not a job; choose another --job-id",
                c.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                    + if c.len() > 3 { ", …" } else { "" }
            )),
            _ => Ok(cgroup),
        }
    }

    /// The root's children that are neither jobs nor spares: pools, and whatever else
    /// another tool made there.
    pub fn pool_dirs(&self) -> std::io::Result<Vec<String>> {
        Ok(self
            .backend
            .children(&self.root)?
            .into_iter()
            .filter(|n| !JobId::names_a_job(n) && !n.starts_with(spares::SPARE_PREFIX))
            .collect())
    }
}
