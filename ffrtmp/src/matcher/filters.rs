//! Filters: allow lists (empty = everyone) first, then block lists, which win.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::Filters;
use crate::process::{basename, ProcessFacts};

/// `Ok` when the filters let the process through, else the reason it is skipped.
pub fn check_filters(f: &Filters, facts: &ProcessFacts) -> Result<(), String> {
    let uid = facts.uid;
    let uid_text = uid.map_or("unknown".to_string(), |u| u.to_string());

    if !f.allowed_uids.is_empty() && !uid.is_some_and(|u| f.allowed_uids.contains(&u)) {
        return Err(format!("uid {uid_text} is not in allowed_uids"));
    }
    if !f.allowed_users.is_empty()
        && !uid.is_some_and(|u| f.allowed_users.iter().any(|r| r.uid == Some(u)))
    {
        return Err(format!("uid {uid_text} is not one of allowed_users"));
    }
    if !f.allowed_parents.is_empty() && !f.allowed_parents.iter().any(|p| parent_is(facts, p)) {
        return Err(format!(
            "parent {} is not in allowed_parents",
            parent_text(facts)
        ));
    }
    if !f.allowed_dirs.is_empty()
        && !facts
            .cwd
            .as_deref()
            .is_some_and(|c| f.allowed_dirs.iter().any(|d| under(c, d)))
    {
        return Err(format!(
            "working directory {} is not under allowed_dirs",
            cwd_text(facts)
        ));
    }

    if let Some(u) = uid {
        if f.blocked_uids.contains(&u) {
            return Err(format!("uid {u} is in blocked_uids"));
        }
        if let Some(r) = f.blocked_users.iter().find(|r| r.uid == Some(u)) {
            return Err(format!("uid {u} is blocked user {}", r.name));
        }
    }
    if let Some(p) = f.blocked_parents.iter().find(|p| parent_is(facts, p)) {
        return Err(format!(
            "parent {} is in blocked_parents ({p})",
            parent_text(facts)
        ));
    }
    if let Some(cwd) = facts.cwd.as_deref() {
        if let Some(d) = f.blocked_dirs.iter().find(|d| under(cwd, d)) {
            return Err(format!(
                "working directory {} is under blocked_dirs {}",
                cwd.display(),
                d.display()
            ));
        }
    }
    Ok(())
}

/// Path-component prefix: `/tmp` covers `/tmp` and `/tmp/x`, not `/tmpx`.
fn under(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// The parent matches a name the way a target does: argv[0] basename, comm or exe basename.
fn parent_is(facts: &ProcessFacts, name: &str) -> bool {
    let Some(p) = &facts.parent else { return false };
    let n = name.as_bytes();
    p.argv0.as_deref().map(basename) == Some(n)
        || p.exe.as_deref().map(|e| basename(e.as_os_str().as_bytes())) == Some(n)
        || (n.len() <= super::COMM_MAX && p.comm == n)
        || (n.len() > super::COMM_MAX && p.comm == n[..super::COMM_MAX])
            && p.argv0.is_none()
            && p.exe.is_none()
}

fn parent_text(facts: &ProcessFacts) -> String {
    match &facts.parent {
        Some(p) => format!("{} (PID {})", String::from_utf8_lossy(&p.comm), p.pid),
        None => "unknown".into(),
    }
}

fn cwd_text(facts: &ProcessFacts) -> String {
    facts
        .cwd
        .as_ref()
        .map_or("unknown".into(), |c| c.display().to_string())
}
