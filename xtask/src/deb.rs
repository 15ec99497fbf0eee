//! `cargo xtask deb [--out DIR] [--version V] [--lintian] [--chroot-test]`: the Debian package
//! `target/debian/ffrtmp_<version>_amd64.deb` (docs/deployment.md, "Debian package").
//!
//! Built with Debian's own `dpkg-deb --build --root-owner-group` from a tree this task
//! stages, not with cargo-deb:
//! - nothing to compile first: dpkg-deb comes with dpkg on every Debian machine, while
//!   cargo-deb is a crate CI would have to build (about 90 s on the project's 2 cores) on
//!   every fresh machine;
//! - what makes this package correct is in files either tool would take as they are: the
//!   POSIX sh maintainer scripts of `deployment/debian/` (install-edge.sh's semantics: not
//!   enabled or started on install, restarted on upgrade, stopped on removal, state removed
//!   on purge; the check for an install-edge.sh install that would shadow the package's
//!   unit). cargo-deb's own systemd support writes debhelper snippets that enable and start
//!   the unit on install, which would have to be turned off and replaced by hand anyway;
//! - `--root-owner-group` makes every entry root:root without fakeroot, as root or not.
//!
//! What debhelper would do is done here, explicitly: the release binary (with the kernel
//! program embedded: `ffrtmp --version` must not say `kernel object none`) stripped
//! (`strip --strip-unneeded` without `.comment` and `.note`, as dh_strip strips; 4.7 MB
//! instead of 43; panics still name their source location), the unit rewritten from `deployment/systemd/ffrtmp-watch.service`
//! (`ExecStart=/usr/bin/ffrtmp`, `Documentation=` under /usr/share/doc/ffrtmp), docs larger
//! than 4 KiB compressed with `gzip -9n` (Debian policy 12.3), the changelog, the md5sums,
//! `Installed-Size`, and `Depends` from `dpkg-shlibdeps` (else from the binary's GLIBC_
//! symbol versions). The man page (`deployment/debian/ffrtmp.1`) is checked against
//! `ffrtmp --help`: every command and option must be in it. With `--lintian` the package is
//! then checked by lintian (no error or warning may remain that is not overridden, with a
//! reason, in `deployment/debian/lintian-overrides`) and its maintainer scripts by
//! shellcheck. With `--chroot-test`, a second build `<version>+test2` and the first are
//! installed, upgraded, removed and purged in a throw-away Debian chroot
//! (`deployment/debian/chroot-test.sh`, in a copy of the systemd VM tier's Debian 12 root);
//! the systemd VM tier does the same with the service running
//! (`xtask/vm/scenarios/systemd/deb.sh`). `cargo xtask test` builds the two packages once
//! (`test_packages`) for both.
//!
//! `SOURCE_DATE_EPOCH` (default: the time of the last commit) sets the changelog date and
//! clamps the mtimes in the archive, so the same tree gives the same package.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::util::{cargo, ensure_tool, find_on_path, is_root, repo_root, run, show, Options};

const USAGE: &str = "usage: cargo xtask deb [--out DIR] [--version V] [--lintian] [--chroot-test]

Builds the Debian package ffrtmp_<version>_amd64.deb with dpkg-deb (docs/deployment.md,
\"Debian package\"): the release binary with the kernel program embedded, the unit, the
conffiles /etc/ffrtmp/watch-config.yaml and watch.env, docs, and the maintainer scripts of
deployment/debian/.

  --out DIR      where the .deb goes (default target/debian)
  --version V    the package version (default: the version of ffrtmp/Cargo.toml); e.g.
                 0.1.0+test2 sorts after 0.1.0 (dpkg --compare-versions)
  --lintian      then run lintian on the package (fails on errors and on warnings that
                 deployment/debian/lintian-overrides does not override) and shellcheck on
                 its maintainer scripts; installs both when missing and running as root
  --chroot-test  also build V+test2 and run deployment/debian/chroot-test.sh on the two:
                 install, upgrade, remove, purge in a throw-away Debian chroot (root)
";

/// The package version suffix of the second build the VM tier upgrades to.
pub const VM_UPGRADE_SUFFIX: &str = "+test2";
const UNIT: &str = "ffrtmp-watch.service";
/// Docs of the package: (file of the checkout, required).
const DOCS: &[(&str, bool)] = &[
    ("README.md", true),
    ("docs/deployment.md", true),
    ("docs/configuration.md", true),
    ("docs/ebpf.md", false),
    ("docs/fleet.md", false),
    ("docs/migrating.md", false),
];
const CONFFILES: &[(&str, &str)] = &[
    ("examples/watch-config.yaml", "etc/ffrtmp/watch-config.yaml"),
    ("examples/watch.env", "etc/ffrtmp/watch.env"),
];
const SCRIPTS: &[&str] = &["preinst", "postinst", "prerm", "postrm"];
/// Where the maintainer scripts get `deployment/debian/common.sh`.
const SNIPPET_TOKEN: &str = "#FFRTMP_COMMON#";
/// Used when neither dpkg-shlibdeps nor objdump can tell: the GLIBC_ symbol version Rust's
/// std needs on this toolchain (`__libc_start_main@GLIBC_2.34`); Debian 12 has 2.36.
const LIBC_FLOOR: &str = "libc6 (>= 2.34)";
/// Dependencies of the unit rather than of the binary: `ExecReload=/bin/kill -HUP $MAINPID`
/// (procps, not in a minbase system; without it `systemctl reload` fails).
const UNIT_DEPENDS: &[(&str, &str)] = &[("/bin/kill ", "procps")];

pub struct Opts {
    pub out: Option<PathBuf>,
    pub version: Option<String>,
    pub lintian: bool,
}

pub fn deb(args: &[String]) -> Result<()> {
    let mut o = Opts {
        out: None,
        version: None,
        lintian: false,
    };
    let mut with_chroot = false;
    let mut args = Options::new(args, USAGE);
    while let Some((name, inline)) = args.next_option() {
        match (name, inline) {
            ("--out", _) => o.out = Some(args.value(name, inline)?.into()),
            ("--version", _) => o.version = Some(args.value(name, inline)?),
            ("--lintian", None) => o.lintian = true,
            ("--chroot-test", None) => with_chroot = true,
            ("-h" | "--help", None) => {
                print!("{USAGE}");
                return Ok(());
            }
            _ => return Err(args.unknown(name, inline)),
        }
    }
    let deb = build(&o)?;
    if o.lintian {
        check(&deb)?;
    }
    if with_chroot {
        // A second, newer build to upgrade to, then deployment/debian/chroot-test.sh.
        let v = o.version.clone().unwrap_or(cargo_version(&repo_root())?);
        let lintian = o.lintian;
        let newer = build(&Opts {
            version: Some(format!("{v}{VM_UPGRADE_SUFFIX}")),
            ..o
        })?;
        if lintian {
            check(&newer)?;
        }
        chroot_test(&deb, &newer)?;
    }
    Ok(())
}

/// What `cargo xtask test` does with the package, once: the default build and
/// `<version>+test2` (a newer one to upgrade to), both checked by lintian and tried in the
/// chroot. The systemd VM tier installs the same two files (`scenarios/systemd/deb.sh`).
pub fn test_packages() -> Result<[PathBuf; 2]> {
    let opts = |version: Option<String>| Opts {
        out: None,
        version,
        lintian: true,
    };
    let first = build(&opts(None))?;
    check(&first)?;
    let v2 = format!("{}{VM_UPGRADE_SUFFIX}", cargo_version(&repo_root())?);
    let second = build(&opts(Some(v2)))?;
    check(&second)?;
    chroot_test(&first, &second)?;
    Ok([first, second])
}

/// `deployment/debian/chroot-test.sh OLD NEW` in a copy of the systemd VM tier's Debian 12
/// root (one bookworm root for both: `xtask/vm/build-rootfs.sh`, cached).
fn chroot_test(old: &Path, new: &Path) -> Result<()> {
    if !is_root() {
        bail!("--chroot-test needs root (chroot, dpkg inside it): sudo -E cargo xtask deb --chroot-test");
    }
    let tree = crate::vm::rootfs_tree("bookworm")?;
    run(
        Command::new(repo_root().join("deployment/debian/chroot-test.sh"))
            .arg(old)
            .arg(new)
            .env("FFRTMP_DEB_CHROOT", tree),
    )
}

/// The two packages the systemd VM tier installs when it runs on its own (`cargo xtask
/// vm-test`): the default build and `<version>+test2`. Both in target/debian.
pub fn vm_packages() -> Result<[PathBuf; 2]> {
    let first = build(&Opts {
        out: None,
        version: None,
        lintian: false,
    })?;
    let v2 = format!("{}{VM_UPGRADE_SUFFIX}", cargo_version(&repo_root())?);
    let second = build(&Opts {
        out: None,
        version: Some(v2),
        lintian: false,
    })?;
    Ok([first, second])
}

/// Build the package; its path.
pub fn build(o: &Opts) -> Result<PathBuf> {
    let root = repo_root();
    let src = root.join("deployment/debian");
    for (tool, pkg) in [
        ("dpkg-deb", "dpkg"),
        ("strip", "binutils"),
        ("gzip", "gzip"),
        ("md5sum", "coreutils"),
    ] {
        if find_on_path(tool).is_none() {
            bail!("{tool} is missing: install it with `apt-get install {pkg}`");
        }
    }
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    if arch.trim() != "amd64" {
        bail!(
            "this machine is {} (dpkg --print-architecture): the package is amd64 and is built from this machine's release binary",
            arch.trim()
        );
    }

    // --- version ---------------------------------------------------------------------------
    let upstream = cargo_version(&root)?;
    let version = o.version.clone().unwrap_or_else(|| upstream.clone());
    let valid = Command::new("dpkg")
        .args(["--validate-version", &version])
        .output()
        .context("cannot run dpkg --validate-version")?;
    if !valid.status.success() {
        bail!(
            "--version {version:?} is not a Debian version: {}",
            String::from_utf8_lossy(&valid.stderr).trim()
        );
    }
    if version != upstream {
        let lower = Command::new("dpkg")
            .args(["--compare-versions", &version, "lt", &upstream])
            .status()?
            .success();
        let relation = if lower { "older than" } else { "newer than" };
        println!("xtask deb: package version {version} ({relation} ffrtmp/Cargo.toml's {upstream}; the binary says {upstream})");
        if lower {
            eprintln!("xtask deb: warning: {version} sorts before {upstream}: dpkg will not take it as an upgrade of {upstream}");
        }
    }
    // A native package (no Debian revision) has changelog.gz, a non-native one changelog.Debian.gz.
    let native = !version.contains('-');
    let file_version = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
    let epoch = source_date_epoch(&root)?;

    // --- the binary ------------------------------------------------------------------------
    let install = if is_root() {
        vec!["--install".to_string()]
    } else {
        Vec::new()
    };
    crate::ebpf::build(&install)?;
    let bin = build_release(&root)?;

    let out_dir = match &o.out {
        Some(d) => std::env::current_dir()?.join(d),
        None => root.join("target/debian"),
    };
    // debhelper's layout: dpkg-shlibdeps wants the binary in debian/<package>/ next to a
    // debian/control.
    let work = out_dir.join(format!("build-{file_version}"));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    let stage = work.join("debian/ffrtmp");
    let doc = stage.join("usr/share/doc/ffrtmp");
    mkdir(&stage)?;

    let staged_bin = stage.join("usr/bin/ffrtmp");
    copy_file(&bin, &staged_bin, 0o755)?;
    // dh_strip's command for executables: symbols, debug info, .comment and .note go.
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
        ])
        .arg(&staged_bin))?;
    let bin_version = output(Command::new(&staged_bin).arg("--version"))
        .context("the stripped binary does not run")?;
    let bin_version = bin_version.trim().to_string();
    if kernel_object(&bin_version).is_none() {
        bail!(
            "`ffrtmp --version` of {} says {bin_version:?}: the binary was built without the kernel program. \
             `cargo xtask build-ebpf` must produce {} before `cargo build --release -p ffrtmp` (is FFRTMP_EBPF_OBJECT set to another path?)",
            bin.display(),
            crate::ebpf::object_path(&root).display()
        );
    }
    if !bin_version.starts_with(&format!("ffrtmp {upstream} ")) {
        bail!(
            "`ffrtmp --version` says {bin_version:?}, not version {upstream} of ffrtmp/Cargo.toml"
        );
    }
    check_man_page(&src.join("ffrtmp.1"), &staged_bin)?;

    // --- the unit, conffiles, docs, man page, lintian overrides ------------------------------
    let deployment_doc = doc_name(&root, "docs/deployment.md")?;
    let unit_src = root.join("deployment/systemd").join(UNIT);
    let unit = unit_text(&read(&unit_src)?, &deployment_doc)
        .with_context(|| format!("cannot make the package's unit from {}", unit_src.display()))?;
    write_file(
        &stage.join("usr/lib/systemd/system").join(UNIT),
        &unit,
        0o644,
    )?;
    for (from, to) in CONFFILES {
        copy_file(&root.join(from), &stage.join(to), 0o644)?;
    }
    for (file, required) in DOCS {
        let path = root.join(file);
        if !path.exists() {
            if *required {
                bail!(
                    "{} is missing; the package documents the service with it",
                    path.display()
                );
            }
            continue;
        }
        let name = doc_name(&root, file)?;
        if name.ends_with(".gz") {
            gzip_to(&path, &doc.join(&name))?;
        } else {
            copy_file(&path, &doc.join(&name), 0o644)?;
        }
    }
    let maintainer = maintainer(&src)?;
    let changelog = changelog(&src, &version, &upstream, &maintainer, epoch)?;
    let changelog_tmp = work.join("changelog");
    write_file(&changelog_tmp, &changelog, 0o644)?;
    let changelog_name = if native {
        "changelog.gz"
    } else {
        "changelog.Debian.gz"
    };
    gzip_to(&changelog_tmp, &doc.join(changelog_name))?;
    write_file(&doc.join("copyright"), &copyright(&root, &src)?, 0o644)?;
    let man_tmp = work.join("ffrtmp.1");
    let man = read(&src.join("ffrtmp.1"))?
        .replace("@VERSION@", &version)
        .replace(
            ".TH FFRTMP 1 \"\"",
            &format!(".TH FFRTMP 1 \"{}\"", date(epoch, "+%Y-%m-%d")?),
        );
    write_file(&man_tmp, &man, 0o644)?;
    gzip_to(&man_tmp, &stage.join("usr/share/man/man1/ffrtmp.1.gz"))?;
    let overrides = src.join("lintian-overrides");
    if overrides.exists() {
        copy_file(
            &overrides,
            &stage.join("usr/share/lintian/overrides/ffrtmp"),
            0o644,
        )?;
    }

    // --- DEBIAN/ ------------------------------------------------------------------------------
    let control_dir = stage.join("DEBIAN");
    let snippet: String = read(&src.join("common.sh"))?
        .lines()
        .filter(|l| !l.starts_with("# shellcheck shell="))
        .map(|l| format!("{l}\n"))
        .collect();
    for s in SCRIPTS {
        let text = read(&src.join(s))?;
        if text.lines().filter(|l| l.trim() == SNIPPET_TOKEN).count() > 1 {
            bail!("deployment/debian/{s}: {SNIPPET_TOKEN} more than once");
        }
        let text = text
            .lines()
            .map(|l| {
                if l.trim() == SNIPPET_TOKEN {
                    snippet.clone()
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>()
            .replace("@VERSION@", &version);
        let dst = control_dir.join(s);
        write_file(&dst, &text, 0o755)?;
        let syntax = Command::new("sh").arg("-n").arg(&dst).output()?;
        if !syntax.status.success() {
            bail!(
                "deployment/debian/{s} (with common.sh inserted) is not valid sh: {}",
                String::from_utf8_lossy(&syntax.stderr).trim()
            );
        }
    }
    let conffiles: String = CONFFILES.iter().map(|(_, to)| format!("/{to}\n")).collect();
    write_file(&control_dir.join("conffiles"), &conffiles, 0o644)?;
    write_md5sums(&stage)?;
    fix_dir_modes(&stage)?;
    let mut depends = depends(&work, &staged_bin)?;
    for (needle, package) in UNIT_DEPENDS {
        if unit.contains(needle) {
            depends = format!("{depends}, {package}");
        }
    }
    let control = read(&src.join("control.in"))?
        .replace("@VERSION@", &version)
        .replace("@INSTALLED_SIZE@", &installed_size(&stage)?.to_string())
        .replace("@DEPENDS@", &depends);
    let control = set_maintainer(&control, &maintainer);
    if let Some(l) = control.lines().find(|l| has_placeholder(l)) {
        bail!("deployment/debian/control.in: a placeholder was not filled: {l:?}");
    }
    write_file(&control_dir.join("control"), &control, 0o644)?;

    // --- dpkg-deb ---------------------------------------------------------------------------
    std::fs::create_dir_all(&out_dir)?;
    let deb = out_dir.join(format!("ffrtmp_{file_version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&stage)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", epoch.to_string()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    let size = std::fs::metadata(&deb)?.len();
    println!(
        "xtask deb: built {} ({} KiB): {bin_version}; Depends: {depends}",
        deb.display(),
        size.div_ceil(1024)
    );
    Ok(deb)
}

/// `lintian` and `shellcheck` on a built package; an error if either finds something.
pub fn check(deb: &Path) -> Result<()> {
    ensure_tool("lintian", "lintian")?;
    ensure_tool("shellcheck", "shellcheck")?;
    let version = output(Command::new("lintian").arg("--version"))?;
    println!("xtask deb: {}", version.trim());
    let mut cmd = Command::new("lintian");
    cmd.args([
        "--display-info",
        "--pedantic",
        // Overridden tags are shown (O:) with their reasons; with --show-overrides,
        // lintian 2.116's --fail-on would count them too, so the E: and W: lines are
        // counted here instead.
        "--show-overrides",
        "--fail-on",
        "none",
    ])
    .arg(deb);
    eprintln!("+ {}", show(&cmd));
    let o = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run lintian")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut count = std::collections::BTreeMap::<&str, usize>::new();
    for l in text.lines() {
        println!("  {l}");
        if let Some((level, _)) = l.split_once(": ") {
            *count.entry(level).or_default() += 1;
        }
    }
    let n = |l: &str| count.get(l).copied().unwrap_or(0);
    println!(
        "xtask deb: lintian: {} error(s), {} warning(s), {} info, {} pedantic, {} overridden",
        n("E"),
        n("W"),
        n("I"),
        n("P"),
        n("O")
    );
    let stale: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("unused-override") || l.contains("mismatched-override"))
        .collect();
    if !o.status.success() {
        bail!("lintian failed ({}) on {}", o.status, deb.display());
    }
    if n("E") + n("W") > 0 {
        bail!(
            "lintian found errors or warnings in {} (above): fix them, or override one in deployment/debian/lintian-overrides with a comment that says why",
            deb.display()
        );
    }
    if !stale.is_empty() {
        bail!(
            "deployment/debian/lintian-overrides has overrides lintian no longer needs: {}",
            stale.join("; ")
        );
    }
    // The maintainer scripts as installed (common.sh inserted).
    let tmp = deb.with_extension("control");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    run(Command::new("dpkg-deb").arg("--control").arg(deb).arg(&tmp))?;
    let scripts: Vec<PathBuf> = SCRIPTS.iter().map(|s| tmp.join(s)).collect();
    let sc = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .args(&scripts)
        .status()
        .context("cannot run shellcheck")?;
    std::fs::remove_dir_all(&tmp)?;
    if !sc.success() {
        bail!("shellcheck found problems in the maintainer scripts (above; deployment/debian/)");
    }
    println!("xtask deb: shellcheck: {} clean", SCRIPTS.join(", "));
    Ok(())
}

// --- pieces of the package -----------------------------------------------------------------

/// The id of the embedded kernel program in `ffrtmp --version` (`ffrtmp 0.1.0 (kernel object
/// f768defd9a88d69f, event layout 2)`); None for a binary built without it (`none`).
fn kernel_object(version: &str) -> Option<&str> {
    let id = version
        .split("(kernel object ")
        .nth(1)?
        .split([',', ')'])
        .next()?;
    (!id.is_empty() && id != "none").then_some(id)
}

/// An unfilled `@NAME@` of a template.
fn has_placeholder(line: &str) -> bool {
    line.split('@')
        .skip(1)
        .step_by(2)
        .any(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        && line.matches('@').count() >= 2
}

/// `version = "…"` of the `[package]` table of ffrtmp/Cargo.toml.
fn cargo_version(root: &Path) -> Result<String> {
    let path = root.join("ffrtmp/Cargo.toml");
    let text = read(&path)?;
    let mut in_package = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_package = t == "[package]";
        } else if in_package {
            if let Some(v) = t.strip_prefix("version") {
                if let Some(v) = v.trim_start().strip_prefix('=') {
                    return Ok(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    bail!("{}: no version in [package]", path.display())
}

fn source_date_epoch(root: &Path) -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let git = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output();
    if let Ok(o) = git {
        if let Ok(t) = String::from_utf8_lossy(&o.stdout).trim().parse() {
            return Ok(t);
        }
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs())
}

/// `date -u -d @EPOCH FORMAT`.
fn date(epoch: u64, format: &str) -> Result<String> {
    Ok(
        output(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), format]))?
            .trim()
            .to_string(),
    )
}

/// `cargo build --release -p ffrtmp`; the binary's path from cargo's messages.
fn build_release(root: &Path) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "ffrtmp", "--bin", "ffrtmp"]);
    crate::util::cargo_artifacts(&mut cmd)?
        .into_iter()
        .filter(|m| m["target"]["name"] == "ffrtmp")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the ffrtmp binary")
}

/// The name a doc gets in /usr/share/doc/ffrtmp: gzip'd when larger than 4 KiB (policy 12.3).
fn doc_name(root: &Path, file: &str) -> Result<String> {
    let path = root.join(file);
    let len = std::fs::metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let base = Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    Ok(if len > 4096 {
        format!("{base}.gz")
    } else {
        base
    })
}

/// The package's unit from deployment/systemd/ffrtmp-watch.service: the binary in /usr/bin,
/// the documentation in /usr/share/doc/ffrtmp. Any other /usr/local left is an error (a new
/// reference in the source unit needs a rule here).
pub fn unit_text(src: &str, deployment_doc: &str) -> Result<String> {
    let mut out = String::new();
    let (mut exec, mut docs) = (0, 0);
    for line in src.lines() {
        let line = if let Some(rest) = line.strip_prefix("ExecStart=/usr/local/bin/ffrtmp ") {
            exec += 1;
            format!("ExecStart=/usr/bin/ffrtmp {rest}")
        } else if line.starts_with("Documentation=") {
            docs += 1;
            format!("Documentation=man:ffrtmp(1) file:/usr/share/doc/ffrtmp/{deployment_doc}")
        } else if line.starts_with("# Installed by deployment/install-edge.sh") {
            format!("# Installed by the Debian package ffrtmp (cargo xtask deb, from deployment/systemd/);\n# explained line by line in /usr/share/doc/ffrtmp/{deployment_doc}.")
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    if exec != 1 || docs != 1 {
        bail!("expected one ExecStart=/usr/local/bin/ffrtmp … and one Documentation= line, found {exec} and {docs}: update unit_text in xtask/src/deb.rs");
    }
    if let Some(l) = out.lines().find(|l| l.contains("/usr/local")) {
        bail!("the unit still names /usr/local after the rewrite: {l:?}; add a rule to unit_text in xtask/src/deb.rs");
    }
    Ok(out)
}

/// Every command of `ffrtmp --help` must be a `.B` line of the man page, every option of
/// every command's `--help` must appear in it.
fn check_man_page(man: &Path, bin: &Path) -> Result<()> {
    let text = read(man)?;
    let help = |args: &[&str]| output(Command::new(bin).args(args).arg("--help"));
    let mut commands = Vec::new();
    for c in help_commands(&help(&[])?) {
        if c == "config" {
            for sub in help_commands(&help(&["config"])?) {
                commands.push(vec!["config".to_string(), sub]);
            }
        } else {
            commands.push(vec![c]);
        }
    }
    let mut missing = Vec::new();
    for c in &commands {
        let name = c.join(" ");
        if !text
            .lines()
            .any(|l| l == format!(".B {name}") || l.starts_with(&format!(".B {name} ")))
        {
            missing.push(format!("command `{name}`"));
        }
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        for opt in help_options(&help(&args)?) {
            if !text.contains(&opt.replace('-', "\\-")) {
                missing.push(format!("`ffrtmp {name} {opt}`"));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} is out of date with `ffrtmp --help`: it lacks {}",
            man.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// The command names of a clap help text's `Commands:` section, without `help`.
fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every `--long` option named in a help text (aliases included), without --help/--version.
fn help_options(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if let Some(name) = word.strip_prefix("--") {
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() && name != "help" && name != "version" {
                out.insert(format!("--{name}"));
            }
        }
    }
    out
}

/// The Maintainer: of control.in, or `DEBFULLNAME <DEBEMAIL>` when both are set.
fn maintainer(src: &Path) -> Result<String> {
    if let (Ok(n), Ok(e)) = (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        if !n.is_empty() && !e.is_empty() {
            return Ok(format!("{n} <{e}>"));
        }
    }
    read(&src.join("control.in"))?
        .lines()
        .find_map(|l| l.strip_prefix("Maintainer: "))
        .map(str::to_string)
        .context("deployment/debian/control.in has no Maintainer: line")
}

fn set_maintainer(control: &str, maintainer: &str) -> String {
    control
        .lines()
        .map(|l| {
            if l.starts_with("Maintainer: ") {
                format!("Maintainer: {maintainer}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// deployment/debian/changelog; a version that has no entry of its own (a test build such
/// as 0.1.0+test2) gets one on top. The newest entry must be ffrtmp/Cargo.toml's version.
fn changelog(
    src: &Path,
    version: &str,
    upstream: &str,
    maintainer: &str,
    epoch: u64,
) -> Result<String> {
    let text = read(&src.join("changelog"))?;
    let top = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("ffrtmp ("))
        .and_then(|l| l.split(')').next())
        .context("deployment/debian/changelog does not start with an entry `ffrtmp (VERSION) …`")?
        .to_string();
    if top == version {
        return Ok(text);
    }
    let upstream_entry = text.lines().any(|l| {
        l.starts_with(&format!("ffrtmp ({upstream})"))
            || l.starts_with(&format!("ffrtmp ({upstream}-"))
    });
    if !upstream_entry {
        bail!("deployment/debian/changelog has no entry for {upstream}, the version of ffrtmp/Cargo.toml (its newest is {top}): add one (dch -v {upstream})");
    }
    let mut entry = String::new();
    writeln!(entry, "ffrtmp ({version}) unstable; urgency=medium\n")?;
    // Lines of at most 80 characters (lintian: debian-changelog-line-too-long).
    writeln!(entry, "  * ffrtmp {upstream}, packaged as {version}:")?;
    writeln!(entry, "    cargo xtask deb --version {version}\n")?;
    writeln!(entry, " -- {maintainer}  {}\n", date(epoch, "-R")?)?;
    Ok(entry + &text)
}

/// copyright.in with the crates statically linked into the binary.
fn copyright(root: &Path, src: &Path) -> Result<String> {
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "tree",
        "-p",
        "ffrtmp",
        "-e",
        "normal,no-proc-macro",
        "--prefix",
        "none",
        "--format",
        "{p}|{l}",
        "--target",
        "x86_64-unknown-linux-gnu",
    ]);
    let tree = output(&mut cmd)?;
    let crates: BTreeSet<String> = tree
        .lines()
        // A crate listed again is marked " (*)" at the end of its line.
        .filter_map(|l| l.trim_end_matches(" (*)").split_once('|'))
        // Path crates (ffrtmp, ffrtmp-common) are this source: `Files: *`.
        .filter(|(p, _)| !p.contains(" (/"))
        .map(|(p, l)| {
            let (name, v) = p.split_once(' ').unwrap_or((p, ""));
            format!(" {name} {}: {}", v.trim_start_matches('v'), l.trim())
        })
        .collect();
    if crates.is_empty() {
        bail!("`{}` listed no crates", show(&cmd));
    }
    let list: String = crates.into_iter().map(|c| c + "\n").collect();
    Ok(read(&src.join("copyright.in"))?.replace("@STATIC_CRATES@\n", &list))
}

/// Depends: from dpkg-shlibdeps (run in `work`, which holds debian/control), else from the
/// GLIBC_ symbol versions the binary needs.
fn depends(work: &Path, bin: &Path) -> Result<String> {
    if find_on_path("dpkg-shlibdeps").is_some() {
        write_file(
            &work.join("debian/control"),
            "Source: ffrtmp\n\nPackage: ffrtmp\nArchitecture: amd64\n",
            0o644,
        )?;
        let rel = bin.strip_prefix(work).unwrap_or(bin);
        let o = output(
            Command::new("dpkg-shlibdeps")
                .arg("-O")
                .arg(format!("-e{}", rel.display()))
                .current_dir(work),
        )?;
        std::fs::remove_file(work.join("debian/control"))?;
        if let Some(d) = o.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")) {
            return Ok(d.trim().to_string());
        }
        bail!("dpkg-shlibdeps printed no shlibs:Depends: {o:?}");
    }
    eprintln!("xtask deb: dpkg-shlibdeps not found (package dpkg-dev): Depends from the binary's symbol versions");
    let Ok(dynsym) = output(Command::new("objdump").arg("-T").arg(bin)) else {
        return Ok(LIBC_FLOOR.to_string());
    };
    let newest = dynsym
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Option<Vec<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            parts
        })
        .max();
    let mut deps = match newest {
        Some(v) => format!(
            "libc6 (>= {})",
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
        ),
        None => LIBC_FLOOR.to_string(),
    };
    let dynamic = output(Command::new("readelf").arg("-d").arg(bin)).unwrap_or_default();
    if dynamic.contains("[libgcc_s.so.1]") {
        deps.push_str(", libgcc-s1");
    }
    Ok(deps)
}

/// DEBIAN/md5sums: every file but the conffiles (dpkg records theirs).
fn write_md5sums(stage: &Path) -> Result<()> {
    let mut files = Vec::new();
    walk(stage, &mut |p, meta| {
        let rel = p.strip_prefix(stage).unwrap();
        if meta.is_file() && !rel.starts_with("DEBIAN") && !rel.starts_with("etc") {
            files.push(rel.to_path_buf());
        }
    })?;
    files.sort();
    let sums = output(Command::new("md5sum").args(&files).current_dir(stage))?;
    write_file(&stage.join("DEBIAN/md5sums"), &sums, 0o644)
}

/// Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up; 1 per directory.
fn installed_size(stage: &Path) -> Result<u64> {
    let mut kib = 0;
    walk(stage, &mut |p, meta| {
        if p.strip_prefix(stage).unwrap().starts_with("DEBIAN") {
            return;
        }
        kib += if meta.is_file() {
            meta.len().div_ceil(1024)
        } else {
            1
        };
    })?;
    Ok(kib)
}

fn fix_dir_modes(stage: &Path) -> Result<()> {
    let mut dirs = vec![stage.to_path_buf()];
    walk(stage, &mut |p, meta| {
        if meta.is_dir() {
            dirs.push(p.to_path_buf());
        }
    })?;
    for d in dirs {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Every entry below `dir` (not `dir` itself), depth first.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata)) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let p = e?.path();
        let meta = std::fs::symlink_metadata(&p)?;
        f(&p, &meta);
        if meta.is_dir() {
            walk(&p, f)?;
        }
    }
    Ok(())
}

// --- tools and files -----------------------------------------------------------------------

/// Run a command for its stdout; an unsuccessful exit is an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {}", show(cmd)))?;
    if !o.status.success() {
        bail!(
            "`{}` failed with {}: {}",
            show(cmd),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))
}

fn write_file(p: &Path, text: &str, mode: u32) -> Result<()> {
    mkdir(p.parent().unwrap())?;
    std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    mkdir(to.parent().unwrap())?;
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n` (no name, no timestamp: reproducible) of `from` into `to`.
fn gzip_to(from: &Path, to: &Path) -> Result<()> {
    mkdir(to.parent().unwrap())?;
    let file =
        std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut cmd = Command::new("gzip");
    cmd.args(["-9nc"]).arg(from).stdout(file);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", show(&cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(&cmd));
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_is_rewritten_for_usr() {
        let src = read(&repo_root().join("deployment/systemd").join(UNIT)).unwrap();
        let unit = unit_text(&src, "deployment.md.gz").unwrap();
        assert!(unit.contains(
            "\nExecStart=/usr/bin/ffrtmp watch --config /etc/ffrtmp/watch-config.yaml\n"
        ));
        assert!(unit.contains(
            "\nDocumentation=man:ffrtmp(1) file:/usr/share/doc/ffrtmp/deployment.md.gz\n"
        ));
        assert!(!unit.contains("/usr/local"));
        // Everything else is the shipped unit, line for line.
        assert!(
            unit.contains("\nKillMode=process\n") && unit.contains("\nStateDirectory=ffrtmp\n")
        );
        assert!(unit_text("ExecStart=/opt/ffrtmp\nDocumentation=x\n", "d").is_err());
    }

    #[test]
    fn kernel_object_from_version() {
        assert_eq!(
            kernel_object("ffrtmp 0.1.0 (kernel object f768defd9a88d69f, event layout 2)"),
            Some("f768defd9a88d69f")
        );
        assert_eq!(
            kernel_object("ffrtmp 0.1.0 (kernel object none, event layout 2)"),
            None
        );
        assert_eq!(kernel_object("ffrtmp 0.1.0"), None);
        assert!(has_placeholder("Version: @VERSION@"));
        assert!(!has_placeholder("Maintainer: a <a@b.example>"));
    }

    #[test]
    fn help_parsing() {
        let help = "About\n\nUsage: ffrtmp <COMMAND>\n\nCommands:\n  watch   Govern\n  config  Tools\n  help    Print\n\nOptions:\n  -h, --help  Print help\n";
        assert_eq!(help_commands(help), ["watch", "config"]);
        let opts = help_options("      --config <PATH>  File [alias: --watch-config]\n      --dry-run  x\n  -h, --help\n");
        assert_eq!(
            opts.into_iter().collect::<Vec<_>>(),
            ["--config", "--dry-run", "--watch-config"]
        );
    }

    #[test]
    fn the_changelog_starts_with_the_cargo_version() {
        let root = repo_root();
        let v = cargo_version(&root).unwrap();
        let text = changelog(&root.join("deployment/debian"), &v, &v, "m <m@x>", 0).unwrap();
        assert!(text.starts_with(&format!("ffrtmp ({v}) ")));
        let t2 = format!("{v}{VM_UPGRADE_SUFFIX}");
        let text = changelog(&root.join("deployment/debian"), &t2, &v, "m <m@x>", 0).unwrap();
        assert!(text.starts_with(&format!(
            "ffrtmp ({t2}) unstable; urgency=medium\n\n  * ffrtmp {v}, packaged as {t2}:\n"
        )));
        assert!(text.contains(" -- m <m@x>  Thu, 01 Jan 1970 00:00:00 +0000\n\nffrtmp ("));
    }
}
