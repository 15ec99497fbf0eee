//! `cargo xtask vm-test`: the VM tier. Real cgroup v2 and real systemd under qemu TCG, on
//! the kernel and distribution matrix of `xtask/vm/kernels.txt`, through the scripts in
//! `xtask/vm/` (their README documents each one).
//!
//! 1. host tools (`setup-host.sh`), every kernel of the matrix (`fetch-kernel.sh --all`), the
//!    eBPF object and the release binary with it embedded;
//! 2. **quick tier**, once per kernel, one VM at a time: every integration test binary of the
//!    `ffrtmp` package, run one after the other in an initramfs VM with cgroup v2
//!    (`quick-run.sh` + `scenarios/quick-tests.sh`), `FFRTMP_REQUIRE_ROOT_TESTS=1` so a skip
//!    is a failure; then the daemon's own exec → placed figures on that kernel, with and
//!    without the `favordynmods` cgroup2 mount option;
//! 3. **systemd tier**, once per distribution (a `rootfs` column of kernels.txt: Debian 12
//!    with its 6.1 kernel, Debian 13 with its 6.12): the cached rootfs boots with a payload
//!    disk holding the binary, `deployment/` and the scenario script
//!    (`scenarios/systemd/run.sh`), which installs ffrtmp with `install-edge.sh` and runs the
//!    scenarios; one line per scenario.
//!
//! The test binaries are built with the release profile: under TCG a debug `ffrtmp watch`
//! needs 8.5 s to load its eBPF program (BTF parsing in unoptimized aya), a release one
//! 1.5 s, and the tests give the daemon 10 s.
//!
//! Results stay in `target/vm/` (console logs per kernel, `systemd-<suite>/out/` with the
//! journal).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, is_root, repo_root, run, show, Options};

const USAGE: &str = "usage: cargo xtask vm-test [--quick-only | --systemd-only] [--kernel SERIES]... [--distro SUITE]... [--capabilities]

Runs the VM tier (root; qemu TCG, one VM at a time) on the matrix of xtask/vm/kernels.txt:
  quick tier     the ffrtmp integration tests on real cgroup v2 (initramfs VM, no systemd)
                 and the daemon's exec -> placed figure, once per kernel (5.10, 6.1, 6.12, 7.x)
  systemd tier   install-edge.sh and the service scenarios, once per distribution
                 (Debian 12 bookworm: systemd 252, kernel 6.1; Debian 13 trixie: systemd 257,
                 kernel 6.12)

  --quick-only       only the quick tier
  --systemd-only     only the systemd tier
  --kernel SERIES    quick tier on this kernel series only (repeatable; e.g. --kernel 6.1)
  --distro SUITE     systemd tier on this distribution only (repeatable; e.g. --distro trixie)
  --capabilities     instead of the tiers: the capability probe of ffrtmp-watch.service
                     (which capabilities the unit needs; xtask/vm/scenarios/capabilities;
                     on the first --distro, default bookworm)

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
    "/usr/bin/unshare",
];
/// Host programs the quick tier's own measurement uses, and where they go in the VM:
/// util-linux `mount` can turn `favordynmods` off again (`--options-mode=ignore`); busybox's
/// remount keeps the options in effect.
const QUICK_TOOLS: &[(&str, &str)] = &[("/usr/bin/mount", "/usr/lib/ffrtmp-vm/mount")];
/// Seconds before a VM is killed: 3-5x what a healthy run takes (quick VM 25-110 s, systemd
/// VM 200-255 s), so a broken build cannot push `.ci/run` far past its budget (6 VMs).
const QUICK_TIMEOUT: u32 = 600;
const SYSTEMD_TIMEOUT: u32 = 900;

struct Opts {
    quick: bool,
    systemd: bool,
    capabilities: bool,
    kernels: Vec<String>,
    distros: Vec<String>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts {
        quick: true,
        systemd: true,
        capabilities: false,
        kernels: Vec::new(),
        distros: Vec::new(),
    };
    let mut args = Options::new(args, USAGE);
    while let Some((name, inline)) = args.next_option() {
        match (name, inline) {
            ("--quick-only", None) => o.systemd = false,
            ("--systemd-only", None) => o.quick = false,
            ("--capabilities", None) => o.capabilities = true,
            ("--kernel", _) => o.kernels.push(args.value(name, inline)?),
            ("--distro", _) => o.distros.push(args.value(name, inline)?),
            ("-h" | "--help", None) => {
                print!("{USAGE}");
                return Ok(None);
            }
            _ => return Err(args.unknown(name, inline)),
        }
    }
    if !o.quick && !o.systemd {
        bail!("--quick-only and --systemd-only exclude each other");
    }
    Ok(Some(o))
}

impl Opts {
    /// Every --kernel and --distro names a row of the matrix.
    fn check(&self, rows: &[Row]) -> Result<()> {
        let series: Vec<&str> = rows.iter().map(|r| r.series.as_str()).collect();
        let suites: Vec<&str> = rows.iter().filter_map(|r| r.rootfs.as_deref()).collect();
        if let Some(k) = self.kernels.iter().find(|k| !series.contains(&k.as_str())) {
            bail!(
                "--kernel {k}: not a series of xtask/vm/kernels.txt (known: {})",
                series.join(" ")
            );
        }
        if let Some(d) = self.distros.iter().find(|d| !suites.contains(&d.as_str())) {
            bail!(
                "--distro {d}: no row of xtask/vm/kernels.txt has rootfs {d} (known: {})",
                suites.join(" ")
            );
        }
        Ok(())
    }
}

/// One row of `xtask/vm/kernels.txt`.
struct Row {
    series: String,
    /// The suite of the systemd-tier rootfs that boots this kernel, if any.
    rootfs: Option<String>,
}

fn matrix(vm: &Path) -> Result<Vec<Row>> {
    let path = vm.join("kernels.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 4 {
            bail!(
                "{}: a row needs 4 columns (series suites package rootfs): {line:?}",
                path.display()
            );
        }
        rows.push(Row {
            series: f[0].to_string(),
            rootfs: (f[3] != "-").then(|| f[3].to_string()),
        });
    }
    if rows.is_empty() {
        bail!("{} lists no kernel", path.display());
    }
    Ok(rows)
}

/// What each distribution of the systemd tier is called in the summary.
fn distro_name(suite: &str) -> String {
    match suite {
        "bookworm" => "Debian 12 bookworm".into(),
        "trixie" => "Debian 13 trixie".into(),
        other => format!("Debian {other}"),
    }
}

/// One result line of a tier: a test binary, a scenario, or a measured figure.
struct Outcome {
    line: String,
    passed: bool,
}

impl Outcome {
    /// The lines of `text` that start with `prefix`, each passed or not by `passed`.
    fn lines(text: &str, prefix: &str, passed: impl Fn(&str) -> bool) -> Vec<Outcome> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| Outcome {
                line: l.to_string(),
                passed: passed(l),
            })
            .collect()
    }
}

/// The results of one VM: a kernel of the quick tier or a distribution of the systemd tier.
struct Group {
    title: String,
    secs: u64,
    outcomes: Vec<Outcome>,
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
    let t0 = Instant::now();
    let rows = matrix(&repo_root().join("xtask/vm"))?;
    opts.check(&rows)?;
    let suites: Vec<String> = if opts.capabilities {
        vec![opts.distros.first().cloned().unwrap_or("bookworm".into())]
    } else if opts.systemd {
        rows.iter()
            .filter_map(|r| r.rootfs.clone())
            .filter(|s| opts.distros.is_empty() || opts.distros.contains(s))
            .collect()
    } else {
        Vec::new()
    };
    let prepared = prepare(&suites)?;
    if opts.capabilities {
        return capabilities(&suites[0], t0);
    }
    tiers(&opts, &prepared, None)
}

/// What `cargo xtask test` runs: both tiers on the whole matrix, with the packages it built.
pub fn test_tiers(prepared: &Prepared, packages: &[PathBuf; 2]) -> Result<()> {
    let opts = parse(&[])?.expect("no --help");
    tiers(&opts, prepared, Some(packages))
}

/// What the tiers boot, made once: the host tools (qemu, debootstrap…), every kernel of the
/// matrix, and the root filesystem of each distribution asked for (also the package
/// tests' chroot), each from its cache in `$FFRTMP_VM_CACHE` when there.
pub struct Prepared {
    /// (series, vmlinuz) of every kernel of the matrix.
    kernels: Vec<(String, String)>,
    secs: u64,
}

pub fn prepare(suites: &[String]) -> Result<Prepared> {
    let t = Instant::now();
    let vm = repo_root().join("xtask/vm");
    run(&mut Command::new(vm.join("setup-host.sh")))?;
    let kernels = fetch_kernels(&vm)?;
    for suite in suites {
        rootfs_image(suite)?;
    }
    crate::ebpf::build(&["--install".to_string()])?;
    Ok(Prepared {
        kernels,
        secs: t.elapsed().as_secs(),
    })
}

/// The distributions of the systemd tier (the `rootfs` column of kernels.txt).
pub fn rootfs_suites() -> Result<Vec<String>> {
    Ok(matrix(&repo_root().join("xtask/vm"))?
        .into_iter()
        .filter_map(|r| r.rootfs)
        .collect())
}

/// `build-rootfs.sh` for one distribution (cached: a second call finds the image): its path.
fn rootfs_image(suite: &str) -> Result<PathBuf> {
    let mut cmd = Command::new(repo_root().join("xtask/vm/build-rootfs.sh"));
    cmd.env("FFRTMP_VM_SUITE", suite).stderr(Stdio::inherit());
    eprintln!("+ FFRTMP_VM_SUITE={suite} {}", show(&cmd));
    let o = cmd.output().context("cannot run build-rootfs.sh")?;
    if !o.status.success() {
        bail!("`{}` failed with {}", show(&cmd), o.status);
    }
    let image = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if image.is_empty() {
        bail!("build-rootfs.sh printed no image path");
    }
    Ok(PathBuf::from(image))
}

/// The root of a distribution's systemd-tier image as a directory (`tree/` beside the
/// image), for the Debian package's chroot test: one root per distribution.
pub fn rootfs_tree(suite: &str) -> Result<PathBuf> {
    run(&mut Command::new(
        repo_root().join("xtask/vm/setup-host.sh"),
    ))?;
    let image = rootfs_image(suite)?;
    let tree = image.with_file_name("tree");
    if !tree.join("usr/bin/systemctl").exists() {
        bail!(
            "{} has no usr/bin/systemctl: an image built before the tree was kept; rebuild it with FFRTMP_VM_REBUILD=1",
            tree.display()
        );
    }
    Ok(tree)
}

/// `--capabilities`: the capability probe of ffrtmp-watch.service on one distribution.
fn capabilities(suite: &str, t0: Instant) -> Result<()> {
    let root = repo_root();
    let vm = root.join("xtask/vm");
    let out = out_dir(&root)?;
    let bin = build_release(&root)?;
    let payload = stage_payload(&root, &out, "capabilities", "capabilities", &bin)?;
    run(Command::new(vm.join("run-systemd.sh"))
        .arg(&payload)
        .arg(SYSTEMD_TIMEOUT.to_string())
        .env("FFRTMP_VM_SUITE", suite))?;
    let caps = std::fs::read_to_string(payload.join("out/caps.txt")).unwrap_or_default();
    println!(
        "\n=== capability probe, {} ({} s)",
        distro_name(suite),
        t0.elapsed().as_secs()
    );
    for l in caps.lines().filter(|l| {
        l.starts_with("CAPS ") || l.starts_with("SCOPE ") || l.contains("exposure level")
    }) {
        println!("{l}");
    }
    println!("(full report: {})", payload.join("out").display());
    Ok(())
}

fn out_dir(root: &Path) -> Result<PathBuf> {
    let out = root.join("target/vm");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    Ok(out)
}

/// The quick and systemd tiers, one VM at a time, then the summary (per VM, per tier).
fn tiers(opts: &Opts, prepared: &Prepared, packages: Option<&[PathBuf; 2]>) -> Result<()> {
    let root = repo_root();
    let vm = root.join("xtask/vm");
    let out = out_dir(&root)?;
    let t0 = Instant::now();
    let rows = matrix(&vm)?;
    let mut groups = Vec::new();
    let mut times = vec![format!("set-up {} s", prepared.secs)];
    if opts.quick {
        let t = Instant::now();
        let built = build_tests(&root)?;
        let build_secs = t.elapsed().as_secs();
        let mut per = Vec::new();
        for r in rows
            .iter()
            .filter(|r| opts.kernels.is_empty() || opts.kernels.contains(&r.series))
        {
            let vmlinuz = prepared
                .kernels
                .iter()
                .find(|(s, _)| s == &r.series)
                .map(|(_, v)| v.clone())
                .with_context(|| {
                    format!(
                        "fetch-kernel.sh --all reported no kernel for series {}",
                        r.series
                    )
                })?;
            let g = quick_tier(&vm, &out, &built, &r.series, &vmlinuz)?;
            per.push(format!("{} {} s", r.series, g.secs));
            groups.push(g);
        }
        times.push(format!(
            "quick tier {} s (test build {build_secs} s; {})",
            t.elapsed().as_secs(),
            per.join(", ")
        ));
    }
    if opts.systemd {
        let t = Instant::now();
        let bin = build_release(&root)?;
        let packages = match packages {
            Some(p) => p.clone(),
            None => crate::deb::vm_packages()?,
        };
        let mut per = Vec::new();
        for suite in rows.iter().filter_map(|r| r.rootfs.as_ref()) {
            if !opts.distros.is_empty() && !opts.distros.contains(suite) {
                continue;
            }
            let g = systemd_tier(&root, &vm, &out, &bin, &packages, suite)?;
            per.push(format!("{suite} {} s", g.secs));
            groups.push(g);
        }
        times.push(format!(
            "systemd tier {} s ({})",
            t.elapsed().as_secs(),
            per.join(", ")
        ));
    }

    println!(
        "\n=== vm-test summary ({}; total {} s)",
        times.join("; "),
        t0.elapsed().as_secs() + prepared.secs
    );
    for g in &groups {
        println!("--- {} ({} s)", g.title, g.secs);
        for o in &g.outcomes {
            println!("{}", o.line);
        }
    }
    // The failures again, last: a log read from its tail (CI's) shows what failed and where.
    let failed: Vec<String> = groups
        .iter()
        .flat_map(|g| {
            g.outcomes
                .iter()
                .filter(|o| !o.passed)
                .map(move |o| format!("  [{}] {}", g.title, o.line))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} VM test result(s) failed (logs in {}):\n{}",
            failed.len(),
            out.display(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// `fetch-kernel.sh --all`: (series, vmlinuz) of every kernel of the matrix.
fn fetch_kernels(vm: &Path) -> Result<Vec<(String, String)>> {
    let mut cmd = Command::new(vm.join("fetch-kernel.sh"));
    cmd.arg("--all").stderr(Stdio::inherit());
    eprintln!("+ {}", show(&cmd));
    let o = cmd.output().context("cannot run fetch-kernel.sh")?;
    if !o.status.success() {
        bail!("`{}` failed with {}", show(&cmd), o.status);
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, v)| (s.to_string(), v.trim().to_string()))
        .collect())
}

/// The quick tier on one kernel: all integration test binaries of `ffrtmp` in one cgroup v2
/// VM, then the daemon's exec → placed figure.
fn quick_tier(vm: &Path, out: &Path, built: &Built, series: &str, vmlinuz: &str) -> Result<Group> {
    let t = Instant::now();
    let mut extra: Vec<String> = vec![built.ffrtmp.display().to_string()];
    extra.extend(built.tests.iter().map(|t| t.display().to_string()));
    for f in QUICK_HOST_FILES {
        if !Path::new(f).exists() {
            bail!("{f} is missing on this host; the root tests execute it (install coreutils, dash, util-linux)");
        }
        extra.push(format!("{f}:{f}"));
    }
    for (src, dst) in QUICK_TOOLS {
        if !Path::new(src).exists() {
            bail!("{src} is missing on this host; the quick tier's favordynmods measurement runs it (install util-linux / mount)");
        }
        extra.push(format!("{src}:{dst}"));
    }
    let log = out.join(format!("quick-{series}-console.log"));
    let mut cmd = Command::new(vm.join("quick-run.sh"));
    cmd.arg(vm.join("scenarios/quick-tests.sh"))
        .args(&built.tests)
        .env("QUICK_EXTRA_FILES", extra.join(" "))
        .env("QUICK_FFRTMP", &built.ffrtmp)
        .env("FFRTMP_VM_ENV", "QUICK_FFRTMP")
        .env("FFRTMP_VM_KERNEL_IMAGE", vmlinuz)
        .env("FFRTMP_VM_TIMEOUT", QUICK_TIMEOUT.to_string())
        .env("FFRTMP_VM_LOG", &log);
    eprintln!("+ {}", show(&cmd));
    let status = cmd.status().context("cannot start quick-run.sh")?;
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let release = console
        .lines()
        .find_map(|l| l.strip_prefix("quick tier: kernel "))
        .and_then(|l| l.split(';').next())
        .unwrap_or("?")
        .to_string();
    let mut outcomes: Vec<Outcome> =
        Outcome::lines(&console, "QUICK ", |l| !l.starts_with("QUICK FAIL"))
            .into_iter()
            // The summary repeats each line: keep the last occurrence of each.
            .fold(Vec::new(), |mut acc: Vec<Outcome>, o| {
                acc.retain(|p| p.line != o.line);
                acc.push(o);
                acc
            });
    // The measured figures first, then the binaries.
    outcomes.sort_by_key(|o| !o.line.starts_with("QUICK KERNEL "));
    let reported = outcomes
        .iter()
        .filter(|o| !o.line.starts_with("QUICK KERNEL ") && !o.line.contains(" exec-placement"))
        .count();
    if !status.success() && outcomes.iter().all(|o| o.passed) || reported < built.tests.len() {
        outcomes.push(Outcome {
            line: format!(
                "QUICK FAIL the VM ({status}; {reported} of {} binaries reported; console log {})",
                built.tests.len(),
                log.display()
            ),
            passed: false,
        });
    }
    Ok(Group {
        title: format!("quick tier, kernel {series} ({release})"),
        secs: t.elapsed().as_secs(),
        outcomes,
    })
}

/// The systemd tier on one distribution: the scenarios of `scenarios/systemd/run.sh`.
fn systemd_tier(
    root: &Path,
    vm: &Path,
    out: &Path,
    bin: &Path,
    packages: &[PathBuf; 2],
    suite: &str,
) -> Result<Group> {
    let t = Instant::now();
    let payload = stage_payload(root, out, &format!("systemd-{suite}"), "systemd", bin)?;
    // The Debian package scenarios (scenarios/systemd/deb.sh): two builds, the second one
    // newer, for install, upgrade, remove and purge.
    copy(
        &root.join("xtask/vm/scenarios/systemd/deb.sh"),
        &payload.join("deb.sh"),
    )?;
    for deb in packages {
        let name = deb.file_name().context("package path")?.to_owned();
        copy(deb, &payload.join("repo/target/debian").join(name))?;
    }
    let mut cmd = Command::new(vm.join("run-systemd.sh"));
    cmd.arg(&payload)
        .arg(SYSTEMD_TIMEOUT.to_string())
        .env("FFRTMP_VM_SUITE", suite);
    eprintln!("+ FFRTMP_VM_SUITE={suite} {}", show(&cmd));
    let status = cmd.status().context("cannot start run-systemd.sh")?;
    let results = payload.join("out/results.txt");
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let system = text
        .lines()
        .find_map(|l| l.strip_prefix("SYSTEM "))
        .unwrap_or("systemd ?, kernel ?")
        .to_string();
    let mut outcomes = Outcome::lines(&text, "SCENARIO ", |l| {
        l.split_whitespace().nth(2) == Some("PASS")
    });
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
    Ok(Group {
        title: format!("systemd tier, {} ({system})", distro_name(suite)),
        secs: t.elapsed().as_secs(),
        outcomes,
    })
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

/// Integration tests that check files of the checkout (with host tools: promtool,
/// kubernetes-validate, fetched from the network; or the source itself: `layout`) rather
/// than the kernel: they run on the host only (`cargo xtask test`), not in the VMs, which
/// have neither the checkout nor a network.
const HOST_ONLY_TESTS: &[&str] = &["fleet_checks", "layout"];

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
    ]);
    let mut built = Built {
        ffrtmp: PathBuf::new(),
        tests: Vec::new(),
    };
    for msg in crate::util::cargo_artifacts(&mut cmd)? {
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let kinds = &msg["target"]["kind"];
        let is = |k: &str| kinds.as_array().is_some_and(|a| a.iter().any(|v| v == k));
        if is("test") && msg["profile"]["test"] == true {
            if HOST_ONLY_TESTS.contains(&msg["target"]["name"].as_str().unwrap_or("")) {
                continue;
            }
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

/// `target/vm/<name>/`: `run.sh` and `lib.sh` of `scenarios/<scenario>/`, and `repo/` laid
/// out like a checkout (deployment/, examples/, docs/deployment.md, target/release/ffrtmp),
/// so `repo/deployment/install-edge.sh` runs with its defaults. `out/` is left to the VM.
fn stage_payload(
    root: &Path,
    out: &Path,
    name: &str,
    scenario: &str,
    bin: &Path,
) -> Result<PathBuf> {
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
    copy(
        &scenarios.join(scenario).join("run.sh"),
        &dir.join("run.sh"),
    )?;
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
