//! `cargo xtask <task>`: project chores that need more than cargo. Each task is a module.

mod bench_exec;
mod deb;
mod ebpf;
mod fuzz;
mod run;
mod test;
mod util;
mod vm;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task> [options]

tasks:
  run [WATCH ARGS…]        build everything and run the governor with examples/watch-config.yaml
                           and state in .state/ (installs build prerequisites when root)
  test [--no-vm]           install what the tests need, build, run unit, host-root and VM tests
  fuzz [--seconds N] [--target NAME]…
                           run the fuzz targets (cargo fuzz; default: all, 30 s each; docs/testing.md)
  build-ebpf [--install]   build the kernel program (ffrtmp-ebpf) for the agent to embed
  deb [--out DIR] [--version V] [--lintian] [--chroot-test]
                           build target/debian/ffrtmp_<version>_amd64.deb (dpkg-deb; lintian)
  vm-test [--quick-only|--systemd-only|--capabilities] [--kernel SERIES] [--distro SUITE]
                           cgroup v2 + systemd tier in qemu (root; docs/testing.md)
  bench-exec [compare|latency|strict|storm|burst|rss|ready|steps|all] [--n N] [--rounds R] [--gap-ms N] [--daemon-nice N]
                           eBPF benchmarks against the release daemon (root; docs/benchmarks.md)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        "build-ebpf" => ebpf::build(rest),
        "bench-exec" => bench_exec::bench(rest),
        "deb" => deb::deb(rest),
        "fuzz" => fuzz::fuzz(rest),
        "run" => run::run_governor(rest),
        "test" => test::test(rest),
        "vm-test" => vm::vm_test(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("xtask: unknown task {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
