//! `cargo xtask vm-test`: the VM tier. Real cgroup v2 and real systemd 252 under qemu TCG,
//! through the scripts in `xtask/vm/` (their README documents each one).
//!
//! 1. host tools (`setup-host.sh`), the Debian cloud kernel (`fetch-kernel.sh`), the eBPF
//!    object and the release binary with it embedded;
//! 2. **quick tier**: every integration test binary of the `ffrtmp` package, run one after
//!    the other in one initramfs VM with cgroup v2 (`quick-run.sh` +
//!    `scenarios/quick-tests.sh`), `FFRTMP_REQUIRE_ROOT_TESTS=1` so a skip is a failure;
//! 3. **systemd tier**: the cached Debian rootfs boots with a payload disk holding the
//!    binary, `deployment/` and the scenario script (`scenarios/systemd/run.sh`), which
//!    installs ffrtmp with `install-edge.sh` and runs the scenarios; one line per scenario.
//!
//! The test binaries are built with the release profile: under TCG a debug `ffrtmp watch`
//! needs 8.5 s to load its eBPF program (BTF parsing in unoptimized aya), a release one
//! 1.5 s, and the tests give the daemon 10 s.
//!
//! Results stay in `target/vm/` (console logs, `systemd/out/` with the journal).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, is_root, repo_root, run, show};

const USAGE: &str = "usage: cargo xtask vm-test [--quick-only | --systemd-only] [--capabilities]

Runs the VM tier (root; qemu TCG, one VM at a time):
  quick tier     the ffrtmp integration tests on real cgroup v2 (initramfs VM, no systemd)
  systemd tier   install-edge.sh and the service scenarios in a Debian 12 VM with systemd 252

  --quick-only     only the quick tier
  --systemd-only   only the systemd tier
  --capabilities   instead of the tiers: the capability probe of ffrtmp-watch.service
                   (which capabilities the unit needs; xtask/vm/scenarios/capabilities)

Caches in $FFRTMP_VM_CACHE (default /var/cache/ffrtmp-vm); results in target/vm/.
";

/// Programs the root tests execute besides the binaries cargo built, copied from this
/// host: busybox applets cannot be renamed (`named_copy` needs a real file), and the tests'
/// shell snippets (`sleep`, `cat`, `tail`) should meet Debian's tools, as on the host.
const QUICK_HOST_FILES: &[&str] = &[
    "/bin/sleep",
    "/bin/sh",
    "/bin/dash",
    "/usr/bin/setpriv",
    "/usr/bin/cat",
    "/usr/bin/tail",
];
/// Seconds before a VM is killed.
const QUICK_TIMEOUT: u32 = 900;
const SYSTEMD_TIMEOUT: u32 = 900;

struct Opts {
    quick: bool,
    systemd: bool,
    capabilities: bool,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts {
        quick: true,
        systemd: true,
        capabilities: false,
    };
    for a in args {
        match a.as_str() {
            "--quick-only" => o.systemd = false,
            "--systemd-only" => o.quick = false,
            "--capabilities" => o.capabilities = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if !o.quick && !o.systemd {
        bail!("--quick-only and --systemd-only exclude each other");
    }
    Ok(Some(o))
}

/// One result line of a tier: a test binary or a scenario.
struct Outcome {
    line: String,
    passed: bool,
}

pub fn vm_test(args: &[String]) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if !is_root() {
        let why = "the VM tier needs root: it installs qemu, builds a rootfs image and boots VMs (sudo -E cargo xtask vm-test)";
        // As everywhere in the project: skipped with the reason, unless a skip must fail.
        if std::env::var_os("FFRTMP_REQUIRE_ROOT_TESTS").is_some() {
            bail!("FFRTMP_REQUIRE_ROOT_TESTS is set but {why}");
        }
        eprintln!("SKIPPED vm-test: {why}");
        return Ok(());
    }
    let root = repo_root();
    let vm = root.join("xtask/vm");
    let out = root.join("target/vm");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let t0 = Instant::now();

    run(&mut Command::new(vm.join("setup-host.sh")))?;
    run(Command::new(vm.join("fetch-kernel.sh")).stdout(Stdio::null()))?;
    crate::ebpf::build(&["--install".to_string()])?;

    if opts.capabilities {
        let bin = build_release(&root)?;
        let payload = stage_payload(&root, &out, "capabilities", &bin)?;
        run(Command::new(vm.join("run-systemd.sh"))
            .arg(&payload)
            .arg(SYSTEMD_TIMEOUT.to_string()))?;
        let caps = std::fs::read_to_string(payload.join("out/caps.txt")).unwrap_or_default();
        println!("\n=== capability probe ({} s)", t0.elapsed().as_secs());
        for l in caps.lines().filter(|l| {
            l.starts_with("CAPS ") || l.starts_with("SCOPE ") || l.contains("exposure level")
        }) {
            println!("{l}");
        }
        println!("(full report: {})", payload.join("out").display());
        return Ok(());
    }

    let mut outcomes = Vec::new();
    let mut times = Vec::new();
    if opts.quick {
        let t = Instant::now();
        outcomes.extend(quick_tier(&root, &vm, &out)?);
        times.push(format!("quick tier {} s", t.elapsed().as_secs()));
    }
    if opts.systemd {
        let t = Instant::now();
        outcomes.extend(systemd_tier(&root, &vm, &out)?);
        times.push(format!("systemd tier {} s", t.elapsed().as_secs()));
    }

    println!(
        "\n=== vm-test summary ({}; total {} s)",
        times.join(", "),
        t0.elapsed().as_secs()
    );
    for o in &outcomes {
        println!("{}", o.line);
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if failed > 0 {
        bail!(
            "{failed} VM test result(s) failed (logs in {})",
            out.display()
        );
    }
    Ok(())
}

/// The quick tier: all integration test binaries of `ffrtmp` in one cgroup v2 VM.
fn quick_tier(root: &Path, vm: &Path, out: &Path) -> Result<Vec<Outcome>> {
    let built = build_tests(root)?;
    if built.tests.is_empty() {
        bail!("cargo built no integration test binaries for ffrtmp");
    }
    let mut extra: Vec<String> = vec![built.ffrtmp.display().to_string()];
    extra.extend(built.tests.iter().map(|t| t.display().to_string()));
    for f in QUICK_HOST_FILES {
        if !Path::new(f).exists() {
            bail!("{f} is missing on this host; the root tests execute it (install coreutils, dash, util-linux)");
        }
        extra.push(format!("{f}:{f}"));
    }
    let log = out.join("quick-console.log");
    let mut cmd = Command::new(vm.join("quick-run.sh"));
    cmd.arg(vm.join("scenarios/quick-tests.sh"))
        .args(&built.tests)
        .env("QUICK_EXTRA_FILES", extra.join(" "))
        .env("FFRTMP_VM_TIMEOUT", QUICK_TIMEOUT.to_string())
        .env("FFRTMP_VM_LOG", &log);
    eprintln!("+ {}", show(&cmd));
    let status = cmd.status().context("cannot start quick-run.sh")?;
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let mut outcomes: Vec<Outcome> = console
        .lines()
        .filter(|l| l.starts_with("QUICK "))
        .map(|l| Outcome {
            line: l.to_string(),
            passed: l.starts_with("QUICK PASS"),
        })
        // The summary repeats each line: keep the last occurrence of each binary.
        .fold(Vec::new(), |mut acc: Vec<Outcome>, o| {
            acc.retain(|p| p.line != o.line);
            acc.push(o);
            acc
        });
    let reported = outcomes.len();
    if !status.success() && outcomes.iter().all(|o| o.passed) {
        outcomes.push(Outcome {
            line: format!(
                "QUICK FAIL the VM ({status}; {reported} of {} binaries reported; console log {})",
                built.tests.len(),
                log.display()
            ),
            passed: false,
        });
    }
    Ok(outcomes)
}

/// The systemd tier: the scenarios of `scenarios/systemd/run.sh` in the Debian VM.
fn systemd_tier(root: &Path, vm: &Path, out: &Path) -> Result<Vec<Outcome>> {
    let bin = build_release(root)?;
    let payload = stage_payload(root, out, "systemd", &bin)?;
    let mut cmd = Command::new(vm.join("run-systemd.sh"));
    cmd.arg(&payload).arg(SYSTEMD_TIMEOUT.to_string());
    eprintln!("+ {}", show(&cmd));
    let status = cmd.status().context("cannot start run-systemd.sh")?;
    let results = payload.join("out/results.txt");
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let mut outcomes: Vec<Outcome> = text
        .lines()
        .filter(|l| l.starts_with("SCENARIO "))
        .map(|l| Outcome {
            line: l.to_string(),
            passed: l.split_whitespace().nth(2) == Some("PASS"),
        })
        .collect();
    // Scenarios run in the order their state needs (8a right after 2); report by number.
    outcomes.sort_by_key(|o| scenario_key(&o.line));
    if outcomes.is_empty() || (!status.success() && outcomes.iter().all(|o| o.passed)) {
        outcomes.push(Outcome {
            line: format!(
                "SCENARIO - FAIL the systemd VM ({status}; {} scenario line(s); see {} and {})",
                outcomes.len(),
                payload.join("out/_vm/console.log").display(),
                payload.join("out/_vm/journal.txt").display()
            ),
            passed: false,
        });
    }
    Ok(outcomes)
}

/// `SCENARIO 8a …` → (8, "a"), for sorting.
fn scenario_key(line: &str) -> (u32, String) {
    let id = line.split_whitespace().nth(1).unwrap_or("");
    let digits: String = id.chars().take_while(|c| c.is_ascii_digit()).collect();
    (
        digits.parse().unwrap_or(u32::MAX),
        id[digits.len()..].to_string(),
    )
}

struct Built {
    /// The `ffrtmp` binary at the path the tests were compiled with (CARGO_BIN_EXE_ffrtmp).
    ffrtmp: PathBuf,
    tests: Vec<PathBuf>,
}

/// Build the integration tests of `ffrtmp` (release profile) and find their binaries in
/// cargo's JSON messages.
fn build_tests(root: &Path) -> Result<Built> {
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "test",
        "--release",
        "-p",
        "ffrtmp",
        "--no-run",
        "--test",
        "*",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("+ {}", show(&cmd));
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !output.status.success() {
        bail!("`{}` failed with {}", show(&cmd), output.status);
    }
    let mut built = Built {
        ffrtmp: PathBuf::new(),
        tests: Vec::new(),
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let kinds = &msg["target"]["kind"];
        let is = |k: &str| kinds.as_array().is_some_and(|a| a.iter().any(|v| v == k));
        if is("test") && msg["profile"]["test"] == true {
            built.tests.push(PathBuf::from(exe));
        } else if is("bin") && msg["target"]["name"] == "ffrtmp" && msg["profile"]["test"] == false
        {
            built.ffrtmp = PathBuf::from(exe);
        }
    }
    if built.ffrtmp.as_os_str().is_empty() {
        bail!("cargo did not report the ffrtmp binary the tests execute");
    }
    built.tests.sort();
    Ok(built)
}

/// `cargo build --release -p ffrtmp` (the eBPF object is embedded); its path.
fn build_release(root: &Path) -> Result<PathBuf> {
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "ffrtmp"]))?;
    Ok(root.join("target/release/ffrtmp"))
}

/// `target/vm/<name>/`: `run.sh` and `lib.sh` of the scenario, and `repo/` laid out like a
/// checkout (deployment/, examples/, docs/deployment.md, target/release/ffrtmp), so
/// `repo/deployment/install-edge.sh` runs with its defaults. `out/` is left to the VM.
fn stage_payload(root: &Path, out: &Path, name: &str, bin: &Path) -> Result<PathBuf> {
    let dir = out.join(name);
    if dir.exists() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.file_name() != Some("out".as_ref()) {
                remove(&p)?;
            }
        }
    }
    let scenarios = root.join("xtask/vm/scenarios");
    copy(&scenarios.join(name).join("run.sh"), &dir.join("run.sh"))?;
    copy(&scenarios.join("lib.sh"), &dir.join("lib.sh"))?;
    let repo = dir.join("repo");
    copy(&root.join("deployment"), &repo.join("deployment"))?;
    copy(&root.join("examples"), &repo.join("examples"))?;
    let doc = root.join("docs/deployment.md");
    if doc.exists() {
        copy(&doc, &repo.join("docs/deployment.md"))?;
    }
    copy(bin, &repo.join("target/release/ffrtmp"))?;
    Ok(dir)
}

fn remove(p: &Path) -> Result<()> {
    if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
    .with_context(|| format!("cannot remove {}", p.display()))
}

/// Copy a file (keeping its mode) or a directory tree.
fn copy(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
        for e in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
            let e = e?;
            copy(&e.path(), &dst.join(e.file_name()))?;
        }
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::copy(src, dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    Ok(())
}
