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
fn gate_daemon(f: &Fixture, extra: &str) -> Daemon {
    let path = path_with(f.dir.path());
    let w = f
        .daemon(&format!("target_commands: [{}]\n{SLOW_VM}{extra}", f.name))
        .env(&[("PATH", &path)])
        .start();
    gate_ready(&w, &f.bin);
    w
}

/// Where a gate test starts, one at a time: the serial guard, a fixture of a dash copy
/// named for `suffix`, and its `gate_daemon` with `extra` config.
fn gated(suffix: &str, extra: &str) -> (std::sync::MutexGuard<'static, ()>, Fixture, Daemon) {
    let (g, f) = Fixture::serial(suffix, "/bin/dash");
    let w = gate_daemon(&f, extra);
    (g, f, w)
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
    let (_g, f, w) = gated("g", "");
    assert_held(&w, &f.root, &f.name, &f.bin, 5);
    let state = w.state.clone();
    let log = w.stop();
    assert!(log.contains("Inline placement is on"), "{log}");
    // `ffrtmp status` lists the binary the gate held.
    let out = Command::new(ffrtmp_bin())
        .args(["status", "--state-path"])
        .arg(&state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let listed = format!("  {} ({})", f.bin.display(), f.name);
    assert!(text.contains(&listed), "{text}");
}

/// A strict target the gate holds is placed before it runs: its exec event does not stop
/// it as well (the kernel program skips the stop of a process placed at the gate).
#[test]
fn gate_holds_a_strict_target_without_a_stop() {
    require!(Ebpf);
    let (_g, f, w) = gated("s", "placement: strict\n");
    assert_held(&w, &f.root, &f.name, &f.bin, 5);
    w.stop();
}

#[test]
fn gate_learns_a_target_from_its_first_exec() {
    require!(Ebpf);
    let (_g, f) = Fixture::serial("l", "/bin/dash");
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
    let (_g, f, w) = gated("u", "");
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
    let (_g, f, mut w) = gated("k", "");
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
    let (_g, f, w) = gated("c", "");
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

/// A held exec that fails after the gate let it go (here a script whose interpreter is
/// missing: the marked file opens, the exec then fails with ENOENT) leaves the old image
/// in the job cgroup; it is moved back to where it was within a second, and its job ends.
#[test]
fn gate_moves_a_failed_exec_back() {
    require!(Ebpf);
    let (_g, f) = Fixture::serial("f", "/bin/dash");
    std::fs::write(&f.bin, "#!/nonexistent/ffrtmp-test-interpreter\n").unwrap();
    let w = gate_daemon(&f, "");
    let home = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = std::ffi::CString::new(f.bin.to_str().unwrap()).unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: the child calls only execve and pause (async-signal-safe) before it is
    // killed below.
    let pid = unsafe {
        match libc::fork() {
            0 => {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                loop {
                    libc::pause();
                }
            }
            pid => pid as u32,
        }
    };
    let held = format!("Limits applied to PID {pid} ");
    let back = format!("PID {pid} did not become {}", f.name);
    let at_home =
        || std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok() == Some(home.clone());
    let placed = wait_until(T, || {
        let log = w.log_text();
        log.lines()
            .any(|l| l.contains(&held) && l.contains("held at exec"))
            && log.contains(&back)
    });
    let home_again = wait_until(Duration::from_secs(2), at_home);
    let log = w.stop();
    // SAFETY: kill(2) and waitpid on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
        libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
    }
    assert!(placed, "not placed at the gate, or not moved back\n{log}");
    assert!(home_again, "not in its old cgroup again\n{log}");
    assert!(log.contains("moved back to"), "{log}");
}

/// The daemon's thread named `name`.
fn thread_of(pid: u32, name: &str) -> i32 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| t.ok())
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no thread {name} in PID {pid}"))
}

/// The gate thread stuck (stopped alone by ptrace; the daemon's other threads run) holds
/// a target's exec until its watchdog lets go of the group, about two seconds at most;
/// the exec goes on (unplaced: this one exits before its exec event could place it); the
/// thread, back, holds execs again.
#[test]
fn gate_watchdog_lets_go_when_the_gate_thread_is_stuck() {
    require!(Ebpf);
    let (_g, f, w) = gated("w", "");
    let tid = thread_of(w.pid(), "ffrtmp-gate");
    // SAFETY: ptrace of a thread of our own child, detached below.
    let seized = unsafe {
        let ok = libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) == 0
            && libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) == 0;
        let mut st = 0;
        ok && libc::waitpid(tid, &mut st, libc::__WALL) == tid && libc::WIFSTOPPED(st)
    };
    assert!(
        seized,
        "cannot stop the gate thread: {}",
        std::io::Error::last_os_error()
    );
    let out = f.dir.path().join("stuck.cgroup");
    let started = Instant::now();
    let run = run_watching_stops(Command::new(&f.bin).args(["-c", &strict_script(&out)]), T);
    let took = started.elapsed();
    // SAFETY: detaching the thread seized above (it is in a ptrace stop).
    unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) };
    assert!(run.ok, "the held exec never went on\n{}", w.log_text());
    assert!(
        took > Duration::from_millis(500) && took < Duration::from_secs(4),
        "held for {took:?}: not by the stuck gate, or not let go within the watchdog's time"
    );
    w.expect(
        T,
        || w.log_text().contains("let go of every held exec"),
        "the watchdog said nothing",
    );
    w.expect(
        T,
        || {
            w.log_text()
                .contains("The exec gate holds execs again (1 of 1 binaries marked)")
        },
        "the gate did not come back",
    );
    assert_held(&w, &f.root, &f.name, &f.bin, 2);
    w.stop();
}
