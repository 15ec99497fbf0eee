//! `ffrtmp attach`: place one running process, with the same placer as the daemon.

use std::process::ExitCode;

use super::{fail, AttachArgs, EXIT_CONFIG, EXIT_FAILURE};
use crate::placer::{detect, Class, JobSpec, Placer};
use crate::process::ProcFs;

pub fn main(a: AttachArgs) -> ExitCode {
    let default_job = format!("attach-{}", a.pid);
    let (root, job_id) =
        match super::root_and_job(&a.cgroup_root, a.job_id.as_deref(), &default_job) {
            Ok(r) => r,
            Err(code) => return code,
        };
    let proc = ProcFs::system();
    let pinned = match proc.pin(a.pid) {
        Ok(p) => p,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                format!("no running process with PID {}: {e}", a.pid),
            )
        }
    };
    if a.wait && pinned.pidfd.is_none() {
        return fail(
            EXIT_FAILURE,
            format!("--wait: no pidfd could be opened for PID {} (the open-files limit is reached; raise it with ulimit -n); nothing was moved", a.pid),
        );
    }
    let backend = match detect() {
        Ok(b) => b,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let placer = Placer::new(backend, root, proc);
    if let Err(e) = placer.named_job_cgroup(&job_id) {
        return fail(EXIT_CONFIG, e);
    }
    placer.prepare_root();
    super::register_root(placer.root());
    let spec = JobSpec {
        command: String::from_utf8_lossy(&pinned.stat.comm).into_owned(),
        job_id,
        limits: a.limits.limits(),
        pool: None,
    };
    let placement = match place(&placer, &pinned, &spec) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let moved = placer.move_descendants(a.pid, &placement.cgroup);
    say!(
        "Attached PID {} as job {} in {}: {}{}",
        a.pid,
        placement.job_id,
        placement.cgroup,
        if placement.applied.is_empty() {
            "no limits".to_string()
        } else {
            placement.applied.join(" ")
        },
        if moved > 0 {
            format!(" (and {moved} child process(es))")
        } else {
            String::new()
        }
    );
    let mut code = ExitCode::SUCCESS;
    for (label, e) in &placement.failed {
        code = fail(EXIT_FAILURE, format!("limit {label} NOT applied: {e}"));
    }
    // With --wait the pidfd was checked for before anything moved.
    if let (true, Some(pidfd)) = (a.wait, pinned.pidfd) {
        if let Err(e) = wait_and_remove(&placer, a.pid, pidfd, &placement.cgroup) {
            return fail(EXIT_FAILURE, e);
        }
    }
    code
}

/// `--wait`: until the process exits, then its cgroup goes if it is empty.
fn wait_and_remove(
    placer: &Placer,
    pid: u32,
    pidfd: crate::process::PidFd,
    cgroup: &str,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(pidfd.exited());
    match placer.remove_if_empty(cgroup) {
        Ok(true) => say!("PID {pid} exited; removed {cgroup}"),
        Ok(false) => say!("PID {pid} exited; {cgroup} still has processes and stays"),
        Err(e) => eprintln!("ffrtmp: PID {pid} exited; cannot remove {cgroup}: {e}"),
    }
    Ok(())
}

/// Place it, retrying what may pass (EAGAIN, EBUSY) a few times.
fn place(
    placer: &Placer,
    pinned: &crate::process::Pinned,
    spec: &JobSpec,
) -> Result<crate::placer::Placement, String> {
    let pid = pinned.id.pid;
    let mut attempt = 0;
    loop {
        match placer.place(pinned, spec, None) {
            Ok(p) => return Ok(p),
            Err(e) if e.class == Class::Retryable && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(crate::placer::backoff(attempt, u64::from(pid)));
            }
            Err(e) if e.class == Class::Vanished => {
                return Err(format!("PID {pid} exited before it could be placed"))
            }
            Err(e) => return Err(format!("cannot place PID {pid}: {e}")),
        }
    }
}
