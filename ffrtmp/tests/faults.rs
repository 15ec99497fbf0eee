//! Root tests of the daemon on a node that breaks under it, each fault made the way the
//! kernel produces it: the cgroup root removed (rmdir), a low descriptor limit (setrlimit before exec, as prlimit does),
//! the state directory full (a tmpfs filled) or read-only (remounted), and the daemon
//! killed with SIGKILL at random moments while targets start. The real binary, eBPF and
//! real cgroups (v1 on the host, v2 in the VM tier).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

const SECS: Duration = Duration::from_secs(20);

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "ffrtmp-test"],
            dir,
        );
        Tmpfs(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        mount(&["-o", &format!("remount,{opts}")], &self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) {
    let st = Command::new("mount").args(args).arg(dir).status().unwrap();
    assert!(st.success(), "mount {args:?} {}", dir.display());
}

/// Fill the file system of `dir` with one file, until it has no space left.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

fn yaml(name: &str) -> String {
    format!("target_commands: [{name}]\ndefault_limits:\n  memory_limit: 64\n  pids_max: 32\n")
}

/// A cleanup tool (or systemd dropping an empty scope) removes the root and everything
/// under it: the next target is placed, in a root made again, and that is said once.
#[test]
fn a_removed_cgroup_root_is_made_again_and_said_once() {
    require!(Ebpf);
    let (_g, mut t) = Fixture::serial("", "/bin/sleep");
    let w = t.watching(&yaml(&t.name));
    // Its spare cgroups first (rmdir takes empty directories only), then the root.
    let removed = wait_until(SECS, || {
        for child in t.root.backend.children(&t.root.path).unwrap_or_default() {
            let _ = t.root.backend.remove(&format!("{}/{child}", t.root.path));
        }
        t.root.backend.remove(&t.root.path).is_ok()
    });
    assert!(
        removed,
        "could not remove {}:\n{}",
        t.root.path,
        w.log_text()
    );
    assert!(!t.root.exists(&t.root.path));

    for round in 0..2 {
        let pid = t.spawn(&["60"]);
        let cg = t.job(pid);
        w.expect(
            SECS,
            || t.root.is_in(pid, &cg),
            &format!("round {round}: PID {pid} not placed in {cg}"),
        );
    }
    let log = w.stop();
    assert_eq!(count(&log, "was gone"), 1, "said once:\n{log}");
    assert!(!log.contains("Failed to place"), "{log}");
    assert!(!log.contains("NOT applied"), "{log}");
}

/// At 64 open files, 100 targets are all placed and the exit of every one is seen
/// (its job cgroup removed), with one warning that names the limit and the fix.
#[test]
fn at_64_descriptors_100_targets_are_placed_and_their_exits_seen() {
    require!(Ebpf);
    let (_g, mut t) = Fixture::serial("", "/bin/sleep");
    let w = t.daemon(&yaml(&t.name)).open_files(64).start();
    w.ready();
    let pids: Vec<u32> = (0..100).map(|_| t.spawn(&["600"])).collect();
    let placed = wait_until(Duration::from_secs(60), || {
        pids.iter().all(|&p| t.is_placed(p))
    });
    let log = w.log_text();
    let missing: Vec<_> = pids.iter().filter(|&&p| !t.is_placed(p)).collect();
    assert!(placed, "not placed: {missing:?}\n{log}");
    // Written down by the record loop a moment after the moves it reports.
    w.expect(
        SECS,
        || w.log_text().contains("The open files limit (64)"),
        "no warning with the limit",
    );

    // Every exit is seen: the job cgroups go.
    for &p in &pids {
        // SAFETY: our own children.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    let gone = wait_until(Duration::from_secs(30), || {
        pids.iter().all(|&p| !t.root.exists(&t.job(p)))
    });
    let log = w.stop();
    assert!(gone, "some job cgroups outlived their process:\n{log}");
    assert_eq!(
        count(&log, "The open files limit (64)"),
        1,
        "one warning with the numbers:\n{log}"
    );
    assert!(log.contains("LimitNOFILE="), "{log}");
    // A process that could not be pinned at once is pinned again, never given up on.
    assert!(
        !log.contains("leaving it to the reconciliation scan"),
        "{log}"
    );
    assert!(!log.contains("Failed to place"), "{log}");
}

/// The state file's directory fails under the running daemon (`break_it`), targets keep
/// being placed, the failure is said once, and once it heals (`heal`) the file is written
/// again with every governed target in it.
fn state_write_survives(break_it: impl FnOnce(&Tmpfs, &Path), heal: impl FnOnce(&Tmpfs, &Path)) {
    let (_g, mut t) = Fixture::serial("", "/bin/sleep");
    let fs = Tmpfs::mount(&t.dir.path().join("state"), "256k");
    let state = fs.0.join("watch-state.json");
    let text = format!(
        "{}state_path: {}\nstate_flush_interval: 1s\n",
        yaml(&t.name),
        state.display()
    );
    let w = t.daemon(&text).env(&[("LOG_LEVEL", "debug")]).start();
    w.ready();
    assert!(wait_until(SECS, || state.exists()));
    break_it(&fs, &fs.0);

    let pids: Vec<u32> = (0..3).map(|_| t.spawn(&["60"])).collect();
    for &p in &pids {
        let cg = t.job(p);
        w.expect(
            SECS,
            || t.root.is_in(p, &cg),
            &format!("PID {p} not placed while the state file cannot be written"),
        );
    }
    // Several flushes fail (the third says so at debug level); one error says so.
    w.logs_within("Cannot write state file", SECS);
    w.logs_within("write 3 failed the same way", SECS);
    assert_eq!(
        count(&w.log_text(), "Cannot write state file"),
        1,
        "{}",
        w.log_text()
    );

    heal(&fs, &fs.0);
    w.logs_within("written again (after ", SECS);
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    for p in &pids {
        assert_eq!(
            file["processes"][p.to_string()]["command"],
            *t.name,
            "PID {p} missing from the state file"
        );
    }
    w.stop();
}

#[test]
fn a_full_state_disk_keeps_placing_and_loses_nothing() {
    require!(Ebpf);
    let filler = std::cell::RefCell::new(PathBuf::new());
    state_write_survives(
        |_, dir| *filler.borrow_mut() = fill(dir),
        |_, _| std::fs::remove_file(&*filler.borrow()).unwrap(),
    );
}

#[test]
fn a_read_only_state_directory_keeps_placing_and_loses_nothing() {
    require!(Ebpf);
    state_write_survives(|fs, _| fs.remount("ro"), |fs, _| fs.remount("rw"));
}

/// Ten SIGKILLs at random moments while targets start: every target ends up placed once
/// (in its one job cgroup, no other job cgroup left for it) and the state file is valid.
#[test]
fn ten_kill_9_while_targets_start_place_each_target_once() {
    require!(Ebpf);
    let (_g, mut t) = Fixture::serial("", "/bin/sleep");
    let state = t.dir.path().join("watch-state.json");
    let text = format!(
        "{}state_path: {}\nreconcile_interval: 2s\n",
        yaml(&t.name),
        state.display()
    );
    let mut pids = Vec::new();
    for round in 0..10 {
        let mut w = t.daemon(&text).start();
        // Targets start from before the daemon is up until after it is killed.
        let kill_after = Duration::from_millis(random_below(1500));
        let started = std::time::Instant::now();
        while started.elapsed() < kill_after {
            pids.push(t.spawn(&["600"]));
            std::thread::sleep(Duration::from_millis(25));
        }
        w.signal(libc::SIGKILL);
        let _ = w.child.wait();
        let n = pids.len();
        eprintln!("round {round}: killed after {kill_after:?}, {n} target(s) so far");
        if let Ok(bytes) = std::fs::read(&state) {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("round {round}: state file not valid: {e}"));
        }
    }
    let w = t.daemon(&text).start();
    w.ready();
    let placed = wait_until(Duration::from_secs(60), || {
        pids.iter().all(|&p| t.is_placed(p))
    });
    assert!(placed, "not every target placed:\n{}", w.log_text());
    // Once: one job cgroup per target, none left over from a placement a kill cut short.
    let want: std::collections::BTreeSet<String> = pids
        .iter()
        .map(|p| format!("auto-{}-{p}", t.name))
        .collect();
    let settled = wait_until(SECS, || {
        let have: std::collections::BTreeSet<String> = t
            .root
            .backend
            .children(&t.root.path)
            .unwrap()
            .into_iter()
            .filter(|c| c.starts_with("auto-"))
            .collect();
        have == want
    });
    let have = t.root.backend.children(&t.root.path).unwrap();
    assert!(
        settled,
        "job cgroups {have:?}, want one per target {want:?}"
    );
    // Every one governed (the record loop's count, then the state file it writes): those a
    // killed daemon placed but never wrote down are taken back from their job cgroups.
    let url = w.metrics_url().unwrap();
    let all = format!("ffrtmp_governed_processes {}\n", pids.len());
    let governed = wait_until(Duration::from_secs(30), || {
        http_get(&format!("{url}/metrics")).1.contains(&all)
    });
    let log = w.stop();
    assert!(governed, "not all {} governed:\n{log}", pids.len());
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let missing: Vec<_> = pids
        .iter()
        .filter(|p| file["processes"][p.to_string()]["job_id"] != format!("auto-{}-{p}", t.name))
        .collect();
    assert!(missing.is_empty(), "not in the state file: {missing:?}");
}

/// A number below `n` from the kernel's random source.
fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u64::from_ne_bytes(b) % n
}
