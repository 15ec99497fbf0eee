//! `ffrtmp run`: start a command already inside its own cgroup. The child writes itself into
//! `cgroup.procs` between fork and exec, so the command runs no instruction outside it.
//! INT, TERM and HUP are forwarded; the command's exit code is returned; if `ffrtmp run` is
//! killed, the command keeps running in its cgroup.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};

use super::{fail, RunArgs, EXIT_CONFIG, EXIT_FAILURE};
use crate::placer::limits::needed_controllers;
use crate::placer::{detect, Placer};
use crate::process::ProcFs;

pub fn main(a: RunArgs) -> ExitCode {
    let default_job = format!("run-{}", std::process::id());
    let (root, job_id) =
        match super::root_and_job(&a.cgroup_root, a.job_id.as_deref(), &default_job) {
            Ok(r) => r,
            Err(code) => return code,
        };
    let limits = a.limits.limits();
    let backend = match detect() {
        Ok(b) => b,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let placer = Placer::new(backend, root, ProcFs::system());
    let report = placer.prepare_root();
    super::register_root(placer.root());
    for c in needed_controllers(&limits) {
        if let Some((_, why)) = report.missing.iter().find(|(m, _)| *m == c) {
            return fail(
                EXIT_FAILURE,
                format!("cannot apply the {} limit: {why}", c.name()),
            );
        }
    }
    let cgroup = match placer.named_job_cgroup(&job_id) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let procs: Vec<CString> = match placer.prepare_job(&cgroup, &limits) {
        Ok(files) => files
            .into_iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).expect("cgroup paths have no NUL"))
            .collect(),
        Err(e) => return fail(EXIT_FAILURE, e),
    };

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")),
    };
    let code = rt.block_on(run_child(&a, procs));
    // The job is over; its cgroup goes once empty (descendants may still run in it).
    match placer.remove_if_empty(&cgroup) {
        Ok(true) => {}
        Ok(false) => eprintln!("ffrtmp: {cgroup} still has processes; it is left in place"),
        Err(e) => eprintln!("ffrtmp: cannot remove {cgroup}: {e}"),
    }
    code
}

async fn run_child(a: &RunArgs, procs: Vec<CString>) -> ExitCode {
    let mut cmd = tokio::process::Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls (open, write, close: rustix's raw syscalls, no allocation)
    // on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::fs::{open, Mode, OFlags};
            for p in &procs {
                let fd = open(
                    p.as_c_str(),
                    OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                if rustix::io::write(&fd, b"0")? != 1 {
                    return Err(std::io::Error::other("short write to cgroup.procs"));
                }
            }
            Ok(())
        });
    }
    // Handlers first: a signal that arrives right after the spawn is forwarded, not fatal.
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return fail(EXIT_FAILURE, "cannot install signal handlers");
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return fail(
                code,
                format!("cannot start {}: {e}", a.command[0].to_string_lossy()),
            );
        }
    };
    let pid = rustix::process::Pid::from_raw(child.id().expect("running child has a pid") as i32)
        .expect("a child's PID is positive");
    let forward = |sig: rustix::process::Signal| {
        let _ = rustix::process::kill_process(pid, sig);
    };
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            _ = int.recv() => forward(rustix::process::Signal::INT),
            _ = term.recv() => forward(rustix::process::Signal::TERM),
            _ = hup.recv() => forward(rustix::process::Signal::HUP),
        }
    };
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match (s.code(), s.signal()) {
                (Some(c), _) => ExitCode::from(c as u8),
                (None, Some(sig)) => ExitCode::from((128 + sig) as u8),
                _ => ExitCode::from(EXIT_FAILURE),
            }
        }
        Err(e) => fail(EXIT_FAILURE, format!("waiting for the command failed: {e}")),
    }
}
