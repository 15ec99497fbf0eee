//! `ffrtmp attach`: place one running process, with the same placer as the daemon.

use std::process::ExitCode;

use super::{check_job_id, fail, AttachArgs, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::raw::CgroupRoot;
use crate::placer::{detect, Class, JobSpec, Placer};
use crate::process::ProcFs;

pub fn main(a: AttachArgs) -> ExitCode {
    let root = match CgroupRoot::parse(&a.cgroup_root) {
        Ok(r) if r.0 == crate::config::raw::AUTO => crate::placer::delegation::tools_root(),
        Ok(r) => r.0,
        Err(e) => return fail(EXIT_CONFIG, format!("--cgroup-root: {e}")),
    };
    let job_id = a
        .job_id
        .clone()
        .unwrap_or_else(|| format!("attach-{}", a.pid));
    if let Err(e) = check_job_id(&job_id) {
        return fail(EXIT_CONFIG, e);
    }
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
    let backend = match detect() {
        Ok(b) => b,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let placer = Placer::new(backend, root, proc);
    placer.prepare_root();
    super::register_root(placer.root());
    let spec = JobSpec {
        command: String::from_utf8_lossy(&pinned.stat.comm).into_owned(),
        job_id,
        limits: a.limits.limits(),
    };
    let mut attempt = 0;
    let placement = loop {
        match placer.place(&pinned, &spec) {
            Ok(p) => break p,
            Err(e) if e.class == Class::Retryable && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(crate::placer::backoff(attempt, u64::from(a.pid)));
            }
            Err(e) if e.class == Class::Vanished => {
                return fail(
                    EXIT_FAILURE,
                    format!("PID {} exited before it could be placed", a.pid),
                )
            }
            Err(e) => return fail(EXIT_FAILURE, format!("cannot place PID {}: {e}", a.pid)),
        }
    };
    let moved = placer.move_descendants(a.pid, &placement.cgroup);
    println!(
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
    if a.wait {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")),
        };
        rt.block_on(pinned.pidfd.exited());
        match placer.remove_if_empty(&placement.cgroup) {
            Ok(true) => println!("PID {} exited; removed {}", a.pid, placement.cgroup),
            Ok(false) => println!(
                "PID {} exited; {} still has processes and stays",
                a.pid, placement.cgroup
            ),
            Err(e) => eprintln!(
                "ffrtmp: PID {} exited; cannot remove {}: {e}",
                a.pid, placement.cgroup
            ),
        }
    }
    code
}
