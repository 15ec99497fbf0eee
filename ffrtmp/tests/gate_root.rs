//! Root integration tests of the exec gate (fanotify exec permission, docs/inline.md) on
//! this host's real kernel and cgroups: a target's first view of itself is inside its job
//! cgroup, for a binary on the daemon's `PATH`, for one learned from its first exec, and
//! after an upgrade by rename; its parent sees no stop; each process is placed and logged
//! once; a stopped and killed daemon releases a held exec at once; a containerised target
//! is let go unmoved. The target is a dash copy whose first action writes its own
//! /proc/self/cgroup (builtins only). Same rules as `ebpf_root.rs`.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const T: Duration = Duration::from_secs(10);
/// Under the quick tier's emulated CPU a move can take tens of ms: these tests are about
/// holding, not the deadline.
const SLOW_VM: &str = "gate_timeout: 1s\n";

/// How a target run went, as its parent saw it.
struct Run {
    pid: u32,
    /// Exited 0 within the time allowed.
    ok: bool,
    /// `waitpid(WUNTRACED)` reported a stop.
    stopped: bool,
}

/// Run `cmd` and reap it with `waitpid(…, WUNTRACED)`, so a stop is seen (and undone).
fn run_watching_stops(cmd: &mut Command, within: Duration) -> Run {
    // Reaped below with waitpid, which sees stops (Child::wait does not).
    let pid = spawn_retrying(cmd).id();
    let (mut ok, mut stopped) = (false, false);
    let deadline = Instant::now() + within;
    loop {
        let mut st = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid as i32, &mut st, libc::WNOHANG | libc::WUNTRACED) };
        if r == pid as i32 && libc::WIFSTOPPED(st) {
            stopped = true;
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        } else if r == pid as i32 {
            ok = libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) and waitpid on our own child.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, &mut st, 0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Run { pid, ok, stopped }
}

/// Run the target `bin` once; return the run and the cgroups its first action saw.
fn first_view(bin: &Path, out: &Path) -> (Run, Vec<ffrtmp::process::CgroupLine>) {
    let _ = std::fs::remove_file(out);
    let run = run_watching_stops(Command::new(bin).args(["-c", &strict_script(out)]), T);
    let seen = std::fs::read_to_string(out).unwrap_or_default();
    (run, ffrtmp::process::parse_cgroup_file(&seen))
}

/// Every run of `bin` is held, placed before its first action, unstopped, placed and
/// logged once.
fn assert_held(w: &Daemon, root: &TestRoot, name: &str, bin: &Path, rounds: usize) {
    let out = w.log.with_extension(format!("{name}.cgroup"));
    for round in 0..rounds {
        let (run, seen) = first_view(bin, &out);
        let cg = job(root, name, run.pid);
        assert!(
            run.ok,
            "round {round}: the target did not finish\n{}",
            w.log_text()
        );
        assert!(!run.stopped, "round {round}: its parent saw it stopped");
        assert!(
            root.backend.is_member(&cg, &seen),
            "round {round}: the target's first view of itself was outside {cg}: {seen:?}\n{}",
            w.log_text()
        );
        let held = format!("Limits applied to PID {} ", run.pid);
        w.expect(
            T,
            || {
                w.log_text()
                    .lines()
                    .any(|l| l.contains(&held) && l.contains("held at exec"))
            },
            &format!("round {round}: PID {} not placed at the gate", run.pid),
        );
        let attach = format!("Attaching to PID {} ", run.pid);
        let log = w.log_text();
        assert_eq!(
            log.lines().filter(|l| l.contains(&attach)).count(),
            1,
            "round {round}: placed once\n{log}"
        );
    }
}

fn path_with(dir: &Path) -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display())
}

/// The daemon for the fixture's target (and `extra` config), the fixture's directory first
/// on its `PATH`, once its gate holds the target's binary.
fn gated(f: &Fixture, extra: &str) -> Daemon {
    let path = path_with(f.dir.path());
    let w = f
        .daemon(&format!("target_commands: [{}]\n{SLOW_VM}{extra}", f.name))
        .env(&[("PATH", &path)])
        .start();
    gate_ready(&w, &f.bin);
    w
}

fn gate_ready(w: &Daemon, bin: &Path) {
    w.ready();
    let marked = format!("Holding every exec of {}", bin.display());
    w.expect(
        T,
        || w.log_text().contains(&marked),
        "the binary was not marked",
    );
}

#[test]
fn gate_holds_a_target_on_path_until_it_is_placed() {
    require!(Ebpf);
    let _g = serial();
    let f = Fixture::new("g", "/bin/dash");
    let w = gated(&f, "");
    assert_held(&w, &f.root, &f.name, &f.bin, 5);
    let log = w.stop();
    assert!(log.contains("Inline placement is on"), "{log}");
}

/// A strict target the gate holds is placed before it runs: its exec event does not stop
/// it as well (the kernel program skips the stop of a process placed at the gate).
#[test]
fn gate_holds_a_strict_target_without_a_stop() {
    require!(Ebpf);
    let _g = serial();
    let f = Fixture::new("s", "/bin/dash");
    let w = gated(&f, "placement: strict\n");
    assert_held(&w, &f.root, &f.name, &f.bin, 5);
    w.stop();
}

#[test]
fn gate_learns_a_target_from_its_first_exec() {
    require!(Ebpf);
    let _g = serial();
    let f = Fixture::new("l", "/bin/dash");
    let w = f
        .daemon(&format!("target_commands: [{}]\n{SLOW_VM}", f.name))
        .start();
    w.ready();
    // Not on the daemon's PATH: the first exec is placed after it starts, by its event
    // (it waits on its stdin meanwhile, a builtin: its exe stays the target's).
    let first = Command::new(&f.bin)
        .args(["-c", "read x"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut root = f.root;
    let pid = root.own(first);
    w.expect(
        T,
        || placed_by_event(&w.log_text(), pid),
        "first exec not placed",
    );
    gate_ready(&w, &f.bin);
    assert_held(&w, &root, &f.name, &f.bin, 3);
    w.stop();
}

#[test]
fn gate_holds_a_binary_replaced_by_rename_again() {
    require!(Ebpf);
    let _g = serial();
    let f = Fixture::new("u", "/bin/dash");
    let w = gated(&f, "");
    // What dpkg does: write the new file beside, rename it over the old one.
    let new = f.dir.path().join(format!("{}.dpkg-new", f.name));
    std::fs::copy("/bin/dash", &new).unwrap();
    std::fs::rename(&new, &f.bin).unwrap();
    let again = format!(
        "{} was replaced; holding the execs of the new file",
        f.bin.display()
    );
    w.expect(
        Duration::from_secs(2),
        || w.log_text().contains(&again),
        "not marked again",
    );
    assert_held(&w, &f.root, &f.name, &f.bin, 2);
    w.stop();
}

/// A daemon that stops answering holds a target's exec (it waits in execve); killing the
/// daemon releases it at once.
#[test]
fn gate_a_killed_daemon_releases_a_held_exec() {
    require!(Ebpf);
    let _g = serial();
    let f = Fixture::new("k", "/bin/dash");
    let mut w = gated(&f, "");
    w.signal(libc::SIGSTOP);
    let out = f.dir.path().join("held.cgroup");
    // spawn() returns once the exec is done: the shell it starts execs the target.
    let mut c = Command::new("/bin/sh")
        .args([
            "-c",
            "exec \"$0\" -c \"$1\"",
            f.bin.to_str().unwrap(),
            &strict_script(&out),
        ])
        .spawn()
        .unwrap();
    let syscall = format!("/proc/{}/syscall", c.id());
    let in_execve = || {
        std::fs::read_to_string(&syscall)
            .is_ok_and(|s| s.split(' ').next() == Some(&libc::SYS_execve.to_string()))
    };
    // Held: asleep in execve (killable: D), in fanotify's wait for an answer where the
    // kernel names the wait (the quick VM's 5.10 reports "0").
    let wchan = format!("/proc/{}/wchan", c.id());
    let asleep = format!("/proc/{}/stat", c.id());
    let in_gate = || {
        let w = std::fs::read_to_string(&wchan).unwrap_or_default();
        let s = std::fs::read_to_string(&asleep).unwrap_or_default();
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('D') || r.starts_with('S'))
            && (w == "0" || w.contains("notify"))
    };
    assert!(
        wait_until(T, || in_execve() && in_gate()),
        "the target never waited in execve for the gate: {:?}",
        std::fs::read_to_string(&wchan)
    );
    w.signal(libc::SIGKILL);
    let _ = w.exit_code(T);
    let status = wait_exit(&mut c, Duration::from_secs(2));
    if status.is_none() {
        let _ = c.kill();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "still held after the daemon died"
    );
    assert!(out.exists());
}

/// A target in its own PID namespace keeps its container's limits: let go unmoved.
#[test]
fn gate_lets_a_containerised_target_go_unmoved() {
    require!(Ebpf);
    let _g = serial();
    let f = Fixture::new("c", "/bin/dash");
    let w = gated(&f, "");
    let out = f.dir.path().join("contained.cgroup");
    let mut cmd = Command::new("/bin/dash");
    // The wrapper's children start in a new PID namespace: the target runs there.
    cmd.args([
        "-c",
        "\"$0\" -c \"$1\"",
        f.bin.to_str().unwrap(),
        &strict_script(&out),
    ]);
    // SAFETY: unshare(2) in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = run_watching_stops(&mut cmd, T);
    assert!(
        run.ok && !run.stopped,
        "the contained target did not finish"
    );
    w.expect(
        T,
        || w.log_text().contains("container"),
        "no container skip logged",
    );
    let seen = ffrtmp::process::parse_cgroup_file(&std::fs::read_to_string(&out).unwrap());
    assert!(
        !seen.iter().any(|l| l.path.contains(&f.root.path)),
        "moved: {seen:?}"
    );
    w.stop();
}
