//! Benchmark: one placement through the real placer, step by step, on this host's cgroups.
//!
//!     cargo bench -p ffrtmp --bench place -- [N]
//!
//! Starts N idle children (default 300) and places each into its own job cgroup under a root
//! beneath this process's own cgroup (removed afterwards), timing create, limits (write and
//! read back), move and verify; then `Placer::place` as the daemon calls it, with a spare
//! cgroup ready (v1; on v2 it creates the cgroup on the path). Needs root.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ffrtmp::config::Limits;
use ffrtmp::placer::{detect, JobSpec, Placer};
use ffrtmp::process::{parse_cgroup_file, ProcFs};

fn own_root() -> String {
    let lines = parse_cgroup_file(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    let deepest = lines
        .iter()
        .map(|l| l.path.as_str())
        .max_by_key(|p| p.len())
        .unwrap_or("/");
    format!(
        "{}/ffrtmp-bench-{}",
        deepest.trim_end_matches('/'),
        std::process::id()
    )
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the placement benchmark needs root");
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let root = own_root();
    let placer = Placer::new(detect().unwrap(), root.clone(), ProcFs::system());
    // The backend alone, for the steps of one placement timed one by one.
    let steps = detect().unwrap();
    let report = placer.prepare_root();
    let limits = Limits {
        cpu_quota: Some(200),
        cpu_weight: Some(100),
        memory_limit: Some(4096),
        pids_max: Some(512),
    };
    let mut kids: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut total, mut create, mut apply, mut mv, mut verify) =
        (vec![], vec![], vec![], vec![], vec![]);
    for k in &kids {
        let pid = k.id();
        let pinned = placer.proc().pin(pid).unwrap();
        let cg = placer.cgroup_of(&format!("bench-{pid}"));
        let t0 = Instant::now();
        steps.create(&cg).unwrap();
        let t1 = Instant::now();
        for (label, r) in steps.apply_limits(&cg, &limits) {
            r.unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        let t2 = Instant::now();
        steps.move_process(&cg, pid).unwrap();
        let t3 = Instant::now();
        placer.verify(&pinned, &cg).unwrap();
        let t4 = Instant::now();
        create.push(t1 - t0);
        apply.push(t2 - t1);
        mv.push(t3 - t2);
        verify.push(t4 - t3);
        total.push(t4 - t0);
    }
    // The daemon's path: Placer::place with a spare cgroup ready (v1), refilled after each.
    let mut fast = vec![];
    for k in &kids {
        let pid = k.id();
        let spare = placer.make_spares(&limits, 1).pop();
        let pinned = placer.proc().pin(pid).unwrap();
        let spec = JobSpec {
            job_id: ffrtmp::job::JobId::named(&format!("bench2-{pid}")).unwrap(),
            command: "sleep".into(),
            limits: limits.clone(),
            pool: None,
        };
        let t = Instant::now();
        let pl = placer.place(&pinned, &spec, spare).unwrap();
        fast.push(t.elapsed());
        assert_eq!(pl.cgroup, placer.cgroup_of(spec.job_id.as_str()));
    }
    println!("{} ({n} placements, limits {limits})", placer.describe());
    for (name, v) in [
        ("create", &mut create),
        ("limits", &mut apply),
        ("move", &mut mv),
        ("verify", &mut verify),
        ("total", &mut total),
        ("place()", &mut fast),
    ] {
        println!(
            "{name:>7}: p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs",
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    std::thread::sleep(Duration::from_millis(200));
    for name in steps.children(&root).unwrap_or_default() {
        let _ = steps.remove(&format!("{root}/{name}"));
    }
    let _ = steps.remove(&root);
    for d in report.created.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}
