//! The fleet files against a live daemon: `/metrics` of a real `ffrtmp watch` (eBPF source,
//! a governed target) with `job_metrics: per_job` and with `per_command`, saved and handed
//! to `xtask/checks/fleet.sh`, which lints them with `promtool check metrics` and checks
//! that every metric the Prometheus rules and the Grafana dashboard use is exported, next
//! to `promtool check rules`/`test rules`, the dashboard and `kubernetes-validate` on the
//! manifests (docs/fleet.md, "Checks").
//!
//! Root (BPF, cgroups); fleet.sh fetches promtool and kubernetes-validate the first time
//! (apt, PyPI) into $FFRTMP_CI_CACHE (default /var/cache/ffrtmp-ci).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// `/metrics` of a daemon with `job_metrics: mode` once it governs a target and has
/// published the kernel's counters.
fn live_metrics(dir: &Path, mode: &str) -> String {
    let mut root = TestRoot::new();
    let name = format!("{}f", tag());
    // In a pool, so the ffrtmp_pool_* families are there too.
    let pool = "pools:\n  live:\n    limits:\n      cpu_quota: 100\ndefault_pool: live\n";
    let w = Daemon::new(dir, &root, &format!("target_commands: [{name}]\njob_metrics: {mode}\ndefault_limits:\n  cpu_quota: 50\n  memory_limit: 512\n{pool}")).start();
    w.ready();
    let bin = named_copy(dir, "/bin/sleep", &name);
    let pid = spawn(&mut root, &bin, &["30"]);
    assert!(
        wait_until(Duration::from_secs(5), || root
            .is_in(pid, &root.job(&format!("live/auto-{name}-{pid}")))),
        "{}",
        w.log_text()
    );
    let url = format!("{}/metrics", w.metrics_url().unwrap());
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(3), || {
            m = support::http_get(&url).1;
            m.contains("ffrtmp_kernel_forwarded_total 1")
                && m.contains("ffrtmp_pool_jobs{pool=\"live\"} 1")
        }),
        "{m}"
    );
    w.stop();
    m
}

#[test]
fn fleet_rules_dashboard_and_manifests_match_a_live_daemon() {
    require!(Ebpf);
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for mode in ["per_job", "per_command"] {
        let path = dir.path().join(format!("metrics-{mode}.txt"));
        std::fs::write(&path, live_metrics(dir.path(), mode)).unwrap();
        files.push(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/checks/fleet.sh");
    let out = Command::new(&script)
        .args(&files)
        .env("FFRTMP_BIN", support::ffrtmp_bin())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "fleet.sh failed:\n{text}");
    // The live files were linted, not only listed.
    assert_eq!(
        text.matches("promtool check metrics").count(),
        2,
        "both scrapes linted:\n{text}"
    );
}
