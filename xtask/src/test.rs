//! `cargo xtask test`: everything the tests need, then every tier.
//!
//! 1. prerequisites of the eBPF build (installed when missing and running as root),
//!    the kernel object, the agent with the object embedded;
//! 2. unit tests and the root integration tests on this host (real v1 cgroups, real BPF;
//!    `fleet_checks` runs promtool and kubernetes-validate on the fleet files and on a live
//!    daemon's /metrics);
//! 3. the Debian package, checked by lintian and installed, upgraded, removed and purged
//!    in a chroot (root);
//! 4. the VM tier (real cgroup v2 and systemd), unless `--no-vm`.

use anyhow::Result;

use crate::util::{cargo, is_root, repo_root, run};

pub fn test(args: &[String]) -> Result<()> {
    let no_vm = args.iter().any(|a| a == "--no-vm");
    let root = repo_root();
    let install = if is_root() {
        vec!["--install".to_string()]
    } else {
        Vec::new()
    };
    crate::ebpf::build(&install)?;
    let mut t = cargo();
    // Default targets: lib, bins and tests. Not --all-targets: the benchmarks are
    // harness-less binaries that would run for real (5 000 processes).
    t.current_dir(&root).args(["test", "--workspace"]);
    if is_root() {
        // As root every root test must run: a skip would hide a broken environment.
        t.env("FFRTMP_REQUIRE_ROOT_TESTS", "1");
    } else {
        eprintln!("xtask test: not root — the root integration tests will print SKIPPED");
    }
    run(t.arg("--").arg("--test-threads=2"))?;
    if is_root() {
        crate::deb::deb(&["--lintian".to_string(), "--chroot-test".to_string()])?;
    } else if std::env::var_os("FFRTMP_REQUIRE_ROOT_TESTS").is_some() {
        anyhow::bail!("FFRTMP_REQUIRE_ROOT_TESTS is set but the package's chroot test needs root");
    } else {
        eprintln!("SKIPPED deb --chroot-test: it needs root (chroot, dpkg inside it)");
    }
    if no_vm {
        eprintln!("xtask test: --no-vm: VM tier skipped");
    } else {
        crate::vm::vm_test(&[])?;
    }
    Ok(())
}
