//! Benchmark: the /proc scan with N extra idle processes (default 5,000).
//!
//!     cargo bench -p ffrtmp --bench scan -- [N] [ROUNDS]
//!
//! Prints µs per process for the first scan (every process new: stat, argv[0] and exe read)
//! and for steady-state scans (stat only for processes already decided on). The idle
//! processes are children of this benchmark, killed at the end.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ffrtmp::config::Target;
use ffrtmp::process::ProcFs;
use ffrtmp::sources::scan::Scanner;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let extra: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);

    let mut kids: Vec<Child> = Vec::with_capacity(extra);
    let t = Instant::now();
    for i in 0..extra {
        match Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(c) => kids.push(c),
            Err(e) => {
                eprintln!("could only start {i} idle processes: {e}");
                break;
            }
        }
    }
    eprintln!(
        "started {} idle processes in {:.1}s",
        kids.len(),
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(500));

    let targets = vec![Target {
        name: "ffmpeg".into(),
        ..Target::default()
    }];
    let mut scanner = Scanner::new(ProcFs::system());
    let first = scanner.scan(&targets, &|_| false).expect("scan");
    let mut steady = Vec::with_capacity(rounds);
    let mut procs = 0;
    for _ in 0..rounds {
        let o = scanner.scan(&targets, &|_| false).expect("scan");
        procs = o.processes;
        steady.push(o.duration);
    }
    steady.sort();
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    let median = steady[steady.len() / 2];
    println!("processes listed: {}", first.processes);
    println!(
        "first scan:  {:>8.1} ms  {:>6.2} µs/process (stat + argv[0] + exe for every process)",
        first.duration.as_secs_f64() * 1e3,
        per(first.duration, first.processes)
    );
    println!(
        "steady scan: {:>8.1} ms  {:>6.2} µs/process (median of {rounds}; min {:.2}, max {:.2})",
        median.as_secs_f64() * 1e3,
        per(median, procs),
        per(steady[0], procs),
        per(*steady.last().unwrap(), procs)
    );
    for k in &mut kids {
        let _ = k.kill();
    }
    for k in &mut kids {
        let _ = k.wait();
    }
}
