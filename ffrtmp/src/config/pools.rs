//! `pools`, `default_pool` and `commands.<name>.pool`: which shared budget each target's
//! jobs go into. A pool is a cgroup directly under the root, so its name must be a plain
//! directory name that no job or spare cgroup can take.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::FileErr;
use super::raw::{RawConfig, RawLimits};
use super::{ConfigError, Limits, Pool, Target};

/// The longest pool name.
pub const MAX_POOL_NAME: usize = 64;

/// Name prefixes the root's other children use (`crate::job::JobId`, spare cgroups).
const RESERVED: [&str; 2] = ["auto-", "spare-"];

/// Check a pool's name: it becomes a directory beside the job cgroups under the root.
pub fn check_pool_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an empty pool name".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "{:?} contains {c:?}: a pool name is a cgroup directory name of letters, digits, '_' and '-'",
            name.escape_debug().to_string()
        ));
    }
    if name.len() > MAX_POOL_NAME {
        return Err(format!(
            "{name:?} is {} bytes long; at most {MAX_POOL_NAME}",
            name.len()
        ));
    }
    if let Some(p) = RESERVED.iter().find(|p| name.starts_with(**p)) {
        return Err(format!(
            "{name:?} starts with {p:?}, which names job and spare cgroups under the root; choose another name"
        ));
    }
    Ok(name.to_string())
}

/// `pools.<name>.limits`: the pool's own limits (no `default_limits` underneath: a pool
/// without a limit is not bounded by it).
pub(super) fn resolve(
    raw: &RawConfig,
    file_err: FileErr,
) -> Result<BTreeMap<String, Arc<Pool>>, ConfigError> {
    let mut pools = BTreeMap::new();
    for (name, p) in raw.pools.iter().flatten() {
        let key = format!("pools.{}", name.escape_debug());
        let name = check_pool_name(name).map_err(|m| file_err(&key, m))?;
        let limits = RawLimits::default().under(p.limits.as_ref());
        pools.insert(name.clone(), Arc::new(Pool { name, limits }));
    }
    Ok(pools)
}

/// Give each target its pool (`commands.<name>.pool` over `default_pool`), an unknown pool
/// being an error at the key that names it. A job limit above its pool's is legal (the
/// pool binds first) and warned about; so is a pool no target uses.
pub(super) fn assign(
    targets: &mut [Target],
    raw: &RawConfig,
    pools: &BTreeMap<String, Arc<Pool>>,
    warnings: &mut Vec<String>,
    file_err: FileErr,
) -> Result<(), ConfigError> {
    let find = |key: &str, name: &str| {
        pools.get(name).cloned().ok_or_else(|| {
            let known = if pools.is_empty() {
                format!("no pools are configured: add pools.{name}.limits")
            } else {
                let names: Vec<&str> = pools.keys().map(String::as_str).collect();
                format!("configured pools: {}", names.join(", "))
            };
            file_err(key, format!("no pool {name:?} ({known})"))
        })
    };
    let default = match &raw.default_pool {
        Some(name) => Some(find("default_pool", name)?),
        None => None,
    };
    for t in targets.iter_mut() {
        let own = raw
            .commands
            .as_ref()
            .and_then(|c| c.get(&t.name)?.pool.as_ref());
        t.pool = match own {
            Some(name) => Some(find(&format!("commands.{}.pool", t.name), name)?),
            None => default.clone(),
        };
        if let Some(pool) = &t.pool {
            warnings.extend(above_pool(&t.name, &t.limits, pool));
        }
    }
    for name in pools.keys() {
        if !targets
            .iter()
            .any(|t| t.pool.as_ref().is_some_and(|p| &p.name == name))
        {
            warnings.push(format!(
                "pools.{name} is configured but no target uses it (set commands.<name>.pool or default_pool); it is kept with its limits"
            ));
        }
    }
    Ok(())
}

/// A job limit above its pool's: the pool's binds first.
fn above_pool(command: &str, job: &Limits, pool: &Pool) -> Vec<String> {
    let p = &pool.limits;
    let pairs = [
        (
            "cpu_quota",
            job.cpu_quota.map(u64::from),
            p.cpu_quota.map(u64::from),
        ),
        ("memory_limit", job.memory_limit, p.memory_limit),
        ("pids_max", job.pids_max, p.pids_max),
    ];
    pairs
        .into_iter()
        .filter_map(|(key, j, p)| match (j, p) {
            (Some(j), Some(p)) if j > p => Some(format!(
                "{command}: {key} {j} is above that of its pool {} ({p}); the pool's limit binds first (on cgroup v1, whose kernel refuses a CPU quota above the parent's, the job gets the pool's)",
                pool.name
            )),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names() {
        for ok in ["live", "vod_1", "Tier-2", &"p".repeat(MAX_POOL_NAME)] {
            assert_eq!(check_pool_name(ok).as_deref(), Ok(ok), "{ok}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("a/b", "'/'"),
            ("..", "'.'"),
            ("cpu.max", "'.'"),
            ("a b", "' '"),
            ("auto-live", "job and spare"),
            ("spare-1", "job and spare"),
            (&"p".repeat(MAX_POOL_NAME + 1), "at most 64"),
        ] {
            let e = check_pool_name(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
