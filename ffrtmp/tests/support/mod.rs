//! The root and integration tests' support, one module for all: one rule for skipping
//! (`require!(Root)`, `require!(Ebpf)`), a cgroup root beneath the test's own cgroup
//! (`TestRoot`), the daemon under test (`Daemon::new(…)…start()`), uniquely named target
//! processes and the waits that make a test's assertions positive.
#![allow(dead_code)]

mod cgroups;
mod daemon;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ffrtmp::placer::detect;

pub use cgroups::TestRoot;
#[allow(unused_imports)]
pub use daemon::{Builder, Daemon};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix for names in this test process.
pub fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// What a test needs of the machine.
pub enum Needs {
    /// Root and a usable cgroup hierarchy: it creates cgroups and moves processes.
    Root,
    /// That, and the daemon built with its eBPF object.
    Ebpf,
}

/// Why a test cannot run here, or `None` when it can.
pub fn skip_reason(needs: Needs) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (creates cgroups and moves processes)".into());
    }
    if let Err(e) = detect() {
        return Some(format!("no usable cgroup hierarchy: {e}"));
    }
    if matches!(needs, Needs::Ebpf) && !ffrtmp::sources::ebpf::is_embedded() {
        return Some(
            "ffrtmp was built without the eBPF object (run `cargo xtask build-ebpf`, then rebuild)"
                .into(),
        );
    }
    None
}

/// The one skip rule: a test that cannot run says why (on stderr, which libtest does not
/// capture) and returns; where it must run (`FFRTMP_REQUIRE_ROOT_TESTS` or `CI` set: the
/// CI machine, as root on a real kernel) it fails instead.
pub fn skipped(test: &str, why: Option<String>) -> bool {
    let Some(why) = why else {
        return false;
    };
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
    if std::env::var_os("FFRTMP_REQUIRE_ROOT_TESTS").is_some() || std::env::var_os("CI").is_some() {
        panic!("root tests must run here (FFRTMP_REQUIRE_ROOT_TESTS or CI is set): {why}");
    }
    true
}

/// The running test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a root test")
        .to_string()
}

/// Skip the calling test (with the reason printed) unless the machine has what it needs
/// (`require!(Root)`, `require!(Ebpf)`: see `Needs`).
#[macro_export]
macro_rules! require {
    ($needs:ident) => {
        if support::skipped(
            &support::test_name(),
            support::skip_reason(support::Needs::$needs),
        ) {
            return;
        }
    };
}

/// What most root tests start from: a directory and a cgroup root of their own, a target
/// name made for the test and a copy of `binary` by that name.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: TestRoot,
    pub name: String,
    pub bin: PathBuf,
}

impl Fixture {
    pub fn new(suffix: &str, binary: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = TestRoot::new();
        let name = format!("{}{suffix}", tag());
        let bin = named_copy(dir.path(), binary, &name);
        Fixture {
            dir,
            root,
            name,
            bin,
        }
    }

    /// A fixture for a test that runs one at a time: the `serial` guard (taken first, so
    /// held until everything else the test made is gone) and the fixture.
    pub fn serial(suffix: &str, binary: &str) -> (std::sync::MutexGuard<'static, ()>, Fixture) {
        let g = serial();
        (g, Fixture::new(suffix, binary))
    }

    /// Its parts, for a test that uses them apart: directory, root, name, binary.
    pub fn parts(self) -> (tempfile::TempDir, TestRoot, String, PathBuf) {
        (self.dir, self.root, self.name, self.bin)
    }

    /// The daemon under test for this root and directory.
    pub fn daemon(&self, yaml: &str) -> Builder {
        Daemon::new(self.dir.path(), &self.root, yaml)
    }

    /// The daemon under test (its eBPF source) with `yaml`, started and ready.
    pub fn watching(&self, yaml: &str) -> Daemon {
        watching(&self.dir, &self.root, yaml)
    }

    /// Start the target binary with `args`; the root kills it at the end.
    pub fn spawn(&mut self, args: &[&str]) -> u32 {
        spawn(&mut self.root, &self.bin, args)
    }

    /// The job cgroup of the target `pid`.
    pub fn job(&self, pid: u32) -> String {
        job(&self.root, &self.name, pid)
    }

    /// Whether `pid` is in its job cgroup now.
    pub fn is_placed(&self, pid: u32) -> bool {
        self.root.is_in(pid, &self.job(pid))
    }
}

/// The first child of `parent` that `ready` accepts, waited for (up to 10 s).
pub fn first_child(parent: u32, ready: impl Fn(u32) -> bool) -> u32 {
    let mut pid = 0;
    let found = wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pid != 0 && ready(pid)
    });
    assert!(found, "no child of PID {parent} came");
    pid
}

/// Runs its closure when dropped: what a test changed on the host is undone even when an
/// assertion fails first.
pub struct OnDrop(pub Box<dyn FnMut()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The tests start daemons and time placements on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short, unique name prefix (comm names must stay within 15 bytes).
pub fn tag() -> String {
    let u = unique();
    let (pid, n) = u.split_once('-').unwrap();
    format!("e{}{n}", pid.parse::<u32>().unwrap() % 100_000)
}

/// A copy of `binary` named `name` in `dir` (its comm becomes `name`).
pub fn named_copy(dir: &Path, binary: &str, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(binary, &path).unwrap_or_else(|e| panic!("copy {binary}: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Wait until `cond` holds, polling every 10 ms.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// How many scans a daemon's log reports as complete.
pub fn scans_in(log: &str) -> usize {
    log.matches("Scan complete").count()
}

/// The `ffrtmp` binary under test.
pub fn ffrtmp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ffrtmp")
}

/// `ffrtmp` with a runtime directory of the tests' own (never the host's /run/ffrtmp) and
/// no backtraces in user-facing errors.
pub fn ffrtmp_cmd() -> Command {
    let mut c = Command::new(ffrtmp_bin());
    c.env(
        ffrtmp::placer::registry::RUNTIME_DIR_ENV,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-{}", std::process::id())),
    )
    .env_remove("RUST_BACKTRACE");
    c
}

/// Run `cmd` to its end: it must exit with `code` and say each of `says` on stderr,
/// without a backtrace.
pub fn fails(cmd: &mut Command, code: i32, says: &[&str]) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{cmd:?}: {err}");
    for s in says {
        assert!(err.contains(s), "{cmd:?}: no {s:?} in {err}");
    }
    assert!(!err.contains("stack backtrace"), "{err}");
}

/// Run `cmd` to its end: it must exit 0 (else fail with its stderr); its output.
pub fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `yaml` written to `file`, and `ffrtmp ARGS --config FILE` (not started yet).
pub fn with_config(file: &Path, yaml: &str, args: &[&str]) -> Command {
    std::fs::write(file, yaml).unwrap();
    let mut c = ffrtmp_cmd();
    c.args(args).arg("--config").arg(file);
    c
}

/// Spawn `path args…` with cwd `cwd`.
pub fn spawn_in(path: &Path, args: &[&str], cwd: &Path) -> Child {
    let mut cmd = Command::new(path);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    spawn_retrying(&mut cmd)
}

/// Spawn, retrying ETXTBSY: a binary a test just copied can still be open for writing in a
/// child another test thread forked meanwhile (the fd lives until that child's exec).
pub fn spawn_retrying(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {:?}: {e}", cmd.get_program()),
        }
    }
}

/// `GET url` (plain http://host:port/path); returns (status code, body).
pub fn http_get(url: &str) -> (u16, String) {
    use std::io::Read;
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s =
        std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

/// This test process's identity (names its ledger of stops when a test starts a source).
pub fn me() -> ffrtmp::process::ProcessId {
    let pid = std::process::id();
    ffrtmp::process::ProcessId {
        pid,
        start_time: ffrtmp::process::ProcFs::system()
            .stat(pid)
            .unwrap()
            .start_time,
    }
}

/// Whether the daemon placed `pid` at its exec: from its exec event (kernel timestamp →
/// `exec→placed`), or held at the exec gate (`held at exec`), not found by a scan.
pub fn placed_by_event(log: &str, pid: u32) -> bool {
    let needle = format!("Limits applied to PID {pid} ");
    log.lines()
        .any(|l| l.contains(&needle) && (l.contains("exec→placed") || l.contains("held at exec")))
}

/// Whether the log mentions `pid` (and not merely a longer PID starting with its digits).
pub fn mentions(log: &str, pid: u32) -> bool {
    log.contains(&format!("PID {pid}:")) || log.contains(&format!("PID {pid} "))
}

/// A shell script that waits for the file `go` in `dir` (the test makes it once the target
/// is placed), then runs `then`: the file and the script.
pub fn after_go(dir: &tempfile::TempDir, then: &str) -> (PathBuf, String) {
    let go = dir.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.02; done; {then}",
        go.display()
    );
    (go, script)
}

/// Where an eBPF root test starts: the serial guard, a directory, a cgroup root of its own
/// and a target name ending in `suffix`.
pub fn scene(
    suffix: &str,
) -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    TestRoot,
    String,
) {
    let g = serial();
    let dir = tempfile::tempdir().unwrap();
    (g, dir, TestRoot::new(), format!("{}{suffix}", tag()))
}

/// The daemon under test (its eBPF source) with `yaml`, started and ready.
pub fn watching(dir: &tempfile::TempDir, root: &TestRoot, yaml: &str) -> Daemon {
    let w = Daemon::new(dir.path(), root, yaml).start();
    w.ready();
    w
}

/// The scanning daemon (`--fallback-scan`) under test in `dir` and `root`, started.
pub fn scanning(dir: &tempfile::TempDir, root: &TestRoot, yaml: &str) -> Daemon {
    Daemon::new(dir.path(), root, yaml).fallback_scan().start()
}

/// Wait (10 s) until the target `name` `pid` is in its job cgroup, else fail with the
/// daemon's log; the job cgroup.
pub fn placed(d: &Daemon, root: &TestRoot, name: &str, pid: u32) -> String {
    let job = job(root, name, pid);
    d.expect(
        Duration::from_secs(10),
        || root.is_in(pid, &job),
        &format!("PID {pid} not placed in {job}"),
    );
    job
}

pub fn job(root: &TestRoot, name: &str, pid: u32) -> String {
    root.job(&format!("auto-{name}-{pid}"))
}

pub fn spawn(root: &mut TestRoot, path: &Path, args: &[&str]) -> u32 {
    let mut cmd = Command::new(path);
    cmd.args(args).stdin(Stdio::null());
    root.own(spawn_retrying(&mut cmd))
}

/// Whether `pid` is anywhere under the test's cgroup root (cpu hierarchy line).
pub fn under_root(root: &TestRoot, pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(&format!("{}/", root.path)))
}

/// A dash copy that writes its own /proc/self/cgroup (builtins only: no child process) as
/// its first action, then exits 0.
pub fn strict_script(out: &Path) -> String {
    format!(
        "while read -r l; do echo \"$l\"; done < /proc/self/cgroup > {}",
        out.display()
    )
}

/// What a `strict_script` target wrote of its first view of itself (`out`), and the job
/// cgroup of target `name` `pid`: whether the one was the other, what it saw, the job.
pub fn first_view(
    root: &TestRoot,
    out: &Path,
    name: &str,
    pid: u32,
) -> (bool, Vec<ffrtmp::process::CgroupLine>, String) {
    let seen = ffrtmp::process::parse_cgroup_file(&std::fs::read_to_string(out).unwrap());
    let cg = job(root, name, pid);
    (root.backend.is_member(&cg, &seen), seen, cg)
}

/// The child's exit status within `timeout`; else `None`, and the child is continued (it
/// may be stopped), killed and reaped, so no test leaves one behind.
pub fn wait_exit(c: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: our own child, not reaped yet (its PID is still ours).
    unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
    let _ = c.kill();
    let _ = c.wait();
    None
}

/// Every child must exit 0 within `timeout` (in all); else fail naming its PID, `what`
/// happened to it and its status. None is left behind (see `finish_all`).
pub fn all_succeed(kids: Vec<Child>, timeout: Duration, what: &str) {
    for (pid, status) in finish_all(kids, timeout) {
        assert!(
            status.is_some_and(|s| s.success()),
            "PID {pid} {what}: {status:?}"
        );
    }
}

/// Wait for every child; then continue and kill the ones still there (never leave one
/// stopped, even when the test is about to fail). Returns (PID, status if it exited).
pub fn finish_all(
    kids: Vec<Child>,
    timeout: Duration,
) -> Vec<(u32, Option<std::process::ExitStatus>)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    for mut k in kids {
        let left = deadline.saturating_duration_since(Instant::now());
        // One still there is continued, killed and reaped by wait_exit.
        let status = wait_exit(&mut k, left.max(Duration::from_millis(10)));
        out.push((k.id(), status));
    }
    out
}
