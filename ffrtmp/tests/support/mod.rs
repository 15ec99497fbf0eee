//! Shared helpers for the root integration tests: a cgroup root beneath the test's own
//! cgroup (removed afterwards), uniquely named target processes, and the real `ffrtmp`
//! binary run as a daemon with a config of the test's own.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ffrtmp::placer::{detect, CgroupBackend, CgroupMode};
use ffrtmp::process::{parse_cgroup_file, ProcFs};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix for names in this test process.
pub fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Why a root test cannot run here, or `None` when it can.
pub fn root_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (creates cgroups and moves processes)".into());
    }
    if let Err(e) = detect() {
        return Some(format!("no usable cgroup hierarchy: {e}"));
    }
    None
}

/// Skip the calling test (with the reason printed) unless it can run as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = support::root_skip_reason() {
            // Straight to stderr: libtest captures eprintln! of passing tests.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: {why}\n", module_path!()).as_bytes(),
            );
            if std::env::var_os("FFRTMP_REQUIRE_ROOT_TESTS").is_some() {
                panic!("FFRTMP_REQUIRE_ROOT_TESTS is set but this test cannot run: {why}");
            }
            return;
        }
    };
}

/// The deepest cgroup path this process is in, across the hierarchies ffrtmp uses, so a
/// root beneath it is beneath our own cgroup in every hierarchy.
pub fn own_cgroup_path() -> String {
    let lines = parse_cgroup_file(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    let relevant = |l: &&ffrtmp::process::CgroupLine| {
        l.hierarchy == 0 && l.controllers.is_empty()
            || l.controllers
                .iter()
                .any(|c| matches!(c.as_str(), "cpu" | "cpuacct" | "memory" | "pids"))
    };
    let mode = detect().unwrap().mode();
    let paths: Vec<&str> = lines
        .iter()
        .filter(relevant)
        .filter(|l| match mode {
            CgroupMode::V2 => l.hierarchy == 0,
            CgroupMode::V1 => l.hierarchy != 0,
        })
        .map(|l| l.path.as_str())
        .collect();
    let deepest = paths.iter().max_by_key(|p| p.len()).copied().unwrap_or("/");
    for p in &paths {
        assert!(
            deepest.starts_with(p),
            "own cgroups {paths:?} are not nested; cannot pick a root beneath all of them"
        );
    }
    deepest.trim_end_matches('/').to_string()
}

/// A cgroup root for one test, beneath our own cgroup. Everything under it, and the
/// directories created to reach it, are removed on drop (after killing our processes).
pub struct TestRoot {
    pub path: String,
    pub backend: Box<dyn CgroupBackend>,
    children: Vec<Child>,
}

impl TestRoot {
    pub fn new() -> TestRoot {
        let backend = detect().unwrap();
        let path = format!("{}/ffrtmp-test-{}", own_cgroup_path(), unique());
        let report = backend.prepare_root(&path);
        assert!(
            report.missing.is_empty(),
            "controllers missing for tests: {:?}",
            report.missing
        );
        // Directories leading to the root (e.g. `process_api/<id>` in the cpu hierarchy)
        // may be shared by tests running side by side: remember every one this test process
        // made, and let whichever root is dropped last remove them.
        let created: Vec<PathBuf> = report
            .created
            .into_iter()
            .filter(|d| !d.ends_with(&path[1..]))
            .collect();
        SHARED_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(created.iter().cloned());
        TestRoot {
            path,
            backend,
            children: Vec::new(),
        }
    }

    pub fn mode(&self) -> CgroupMode {
        self.backend.mode()
    }

    pub fn job(&self, job_id: &str) -> String {
        format!("{}/{job_id}", self.path)
    }

    /// Keep a child to kill when the root is dropped.
    pub fn own(&mut self, c: Child) -> u32 {
        let pid = c.id();
        self.children.push(c);
        pid
    }

    /// Whether `pid` is in `cgroup` in every hierarchy ffrtmp uses.
    pub fn is_in(&self, pid: u32, cgroup: &str) -> bool {
        ProcFs::system()
            .cgroups(pid)
            .is_ok_and(|l| self.backend.is_member(cgroup, &l))
    }

    /// Read a cgroup file; v1 files live in the hierarchy of `controller`.
    pub fn read(&self, cgroup: &str, controller: &str, file: &str) -> String {
        let dir = match self.mode() {
            CgroupMode::V2 => Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')),
            CgroupMode::V1 => Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(cgroup.trim_start_matches('/')),
        };
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
            .trim()
            .to_string()
    }

    pub fn exists(&self, cgroup: &str) -> bool {
        let probe = match self.mode() {
            CgroupMode::V2 => Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')),
            CgroupMode::V1 => {
                Path::new("/sys/fs/cgroup/memory").join(cgroup.trim_start_matches('/'))
            }
        };
        probe.exists()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes we started may have forked; give the kernel a moment, then remove
        // every job cgroup (killing what is still inside: only our own processes are).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut left = false;
            for name in self.backend.children(&self.path).unwrap_or_default() {
                let cg = format!("{}/{name}", self.path);
                for pid in self.backend.procs(&cg).unwrap_or_default() {
                    // SAFETY: signalling a process in a cgroup only this test created.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                if self.backend.remove(&cg).is_err() {
                    left = true;
                }
            }
            if !left || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.backend.remove(&self.path);
        // Shared directories this test process created: deepest first; a directory another
        // test still uses is busy and stays until that test's root is dropped.
        let mut shared = SHARED_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        shared.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        shared.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
    }
}

/// Directories on the way to test roots that this test process created.
static SHARED_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

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

/// A running `ffrtmp watch --fallback-scan`, its log in a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

impl Daemon {
    /// Start with `yaml` (cgroup_root and state_path are added) and extra flags.
    pub fn start(dir: &Path, root: &TestRoot, yaml: &str, extra: &[&str]) -> Daemon {
        let n = unique();
        let config = dir.join(format!("config-{n}.yaml"));
        let state = dir.join("state.json");
        let log = dir.join(format!("daemon-{n}.log"));
        let mut text = yaml.to_string();
        if !yaml.contains("cgroup_root:") {
            text.push_str(&format!("\ncgroup_root: {}\n", root.path));
        }
        if !yaml.contains("state_path:") {
            text.push_str(&format!("state_path: {}\n", state.display()));
        }
        if !yaml.contains("metrics_addr:") {
            // Tests run daemons side by side: each gets a free port (see `metrics_url`).
            text.push_str("metrics_addr: 127.0.0.1:0\n");
        }
        std::fs::write(&config, text).unwrap();
        Self::start_with(config, state, log, extra)
    }

    pub fn start_with(config: PathBuf, state: PathBuf, log: PathBuf, extra: &[&str]) -> Daemon {
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(ffrtmp_bin())
            .args(["watch", "--fallback-scan", "--config"])
            .arg(&config)
            .args(extra)
            // Its own runtime directory: never the host's /run/ffrtmp.
            .env(
                ffrtmp::placer::registry::RUNTIME_DIR_ENV,
                config.parent().unwrap().join("run"),
            )
            .env_remove("RUST_BACKTRACE")
            .env_remove("SCAN_INTERVAL")
            .env_remove("TARGET_COMMANDS")
            .env_remove("STATE_PATH")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        Daemon {
            child,
            log,
            config,
            state,
        }
    }

    /// `http://host:port` the daemon serves /metrics and /healthz on (from its log).
    pub fn metrics_url(&self) -> Option<String> {
        let log = self.log_text();
        let rest = log.split("Serving /metrics and /healthz on ").nth(1)?;
        Some(rest.lines().next()?.trim().to_string())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log_text();
        std::mem::forget(self);
        (code, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
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

/// Append a line to a file (creating it).
pub fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// CPU time of a process (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = ProcFs::system().stat(pid).unwrap();
    (s.utime + s.stime) as f64 / 100.0
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
