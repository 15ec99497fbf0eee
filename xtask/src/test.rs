//! `cargo xtask test`: everything the tests need, then every tier, each step once.
//!
//! 1. set-up: the eBPF toolchain (installed when missing and running as root) and the
//!    kernel object; as root, the VM tier's host tools, every kernel of its matrix and one
//!    root filesystem per distribution (the package's chroot test uses the Debian 12 one);
//! 2. unit tests and the root integration tests on this host (real v1 cgroups, real BPF;
//!    `fleet_checks` runs promtool and kubernetes-validate on the fleet files and on a live
//!    daemon's /metrics);
//! 3. every fuzz target for 30 s (cargo fuzz; a crash, timeout or OOM fails);
//! 4. the Debian package, built once, checked by lintian and installed, upgraded, removed
//!    and purged in a chroot (root); the systemd VM tier installs the same two files;
//! 5. the VM tier (real cgroup v2 and systemd), unless `--no-vm`.
//!
//! Every step's wall time is printed at the end, passed or not: on a fresh machine (empty
//! `$FFRTMP_CI_CACHE` and `$FFRTMP_VM_CACHE`, as `.ci/run` makes them) the whole run must
//! stay under 45 minutes.

use std::time::Instant;

use anyhow::Result;

use crate::util::{cargo, is_root, repo_root, run};

/// Steps done and how long each took.
#[derive(Default)]
struct Timeline {
    steps: Vec<(&'static str, u64, bool)>,
}

impl Timeline {
    fn step<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        self.steps.push((name, t.elapsed().as_secs(), r.is_ok()));
        r
    }

    fn print(&self, started: Instant) {
        println!("\n=== xtask test: time per step");
        for (name, secs, ok) in &self.steps {
            let mark = if *ok { "" } else { "  (FAILED)" };
            println!("  {name:<58} {:>4}:{:02}{mark}", secs / 60, secs % 60);
        }
        let total = started.elapsed().as_secs();
        println!("  {:<58} {:>4}:{:02}", "total", total / 60, total % 60);
    }
}

pub fn test(args: &[String]) -> Result<()> {
    let no_vm = args.iter().any(|a| a == "--no-vm");
    let started = Instant::now();
    let mut t = Timeline::default();
    let r = steps(no_vm, &mut t);
    t.print(started);
    r
}

fn steps(no_vm: bool, t: &mut Timeline) -> Result<()> {
    let root = repo_root();
    let install = if is_root() {
        vec!["--install".to_string()]
    } else {
        Vec::new()
    };
    t.step("set-up: eBPF toolchain and kernel object", || {
        crate::ebpf::build(&install)
    })?;
    let prepared = if is_root() && !no_vm {
        Some(
            t.step("set-up: VM host tools, kernels, root filesystems", || {
                crate::vm::prepare(&crate::vm::rootfs_suites()?)
            })?,
        )
    } else {
        None
    };
    t.step("host: unit and root integration tests", || {
        let mut c = cargo();
        // Default targets: lib, bins and tests. Not --all-targets: the benchmarks are
        // harness-less binaries that would run for real (5 000 processes).
        c.current_dir(&root).args(["test", "--workspace"]);
        if is_root() {
            // As root every root test must run: a skip would hide a broken environment.
            c.env("FFRTMP_REQUIRE_ROOT_TESTS", "1");
        } else {
            eprintln!("xtask test: not root — the root integration tests will print SKIPPED");
        }
        run(c.arg("--").arg("--test-threads=2"))
    })?;
    t.step("fuzz: every target for 30 s", || crate::fuzz::fuzz(&[]))?;
    let packages = if is_root() {
        Some(t.step(
            "Debian package: build, lintian, chroot",
            crate::deb::test_packages,
        )?)
    } else if std::env::var_os("FFRTMP_REQUIRE_ROOT_TESTS").is_some() {
        anyhow::bail!("FFRTMP_REQUIRE_ROOT_TESTS is set but the package's chroot test needs root");
    } else {
        eprintln!("SKIPPED deb --chroot-test: it needs root (chroot, dpkg inside it)");
        None
    };
    if no_vm {
        eprintln!("xtask test: --no-vm: VM tier skipped");
        return Ok(());
    }
    match (prepared, packages) {
        (Some(p), Some(debs)) => t.step(
            "VM tiers: quick (per kernel), systemd (per distribution)",
            || crate::vm::test_tiers(&p, &debs),
        ),
        // Not root: vm-test says why it skips (or fails under FFRTMP_REQUIRE_ROOT_TESTS).
        _ => crate::vm::vm_test(&[]),
    }
}
