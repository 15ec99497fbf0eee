//! `cargo xtask build-ebpf [--install]`: build the kernel program (`ffrtmp-ebpf`) that the
//! agent embeds, with whichever toolchain this machine has:
//!
//! - **Debian** (the route that works on the project's machines): Debian's `/usr/bin/rustc`
//!   (package `rustc-web`) with its prebuilt `core` for `bpfel-unknown-none`
//!   (`libstd-rust-web-dev-bpf`), and `bpf-linker` built against the same LLVM major.
//!   `ffrtmp-ebpf/.cargo/config.toml` already points cargo at that rustc.
//! - **rustup nightly + rust-src** (the upstream aya route, e.g. a laptop): `cargo +nightly
//!   build -Z build-std=core`, with `bpf-linker`.
//!
//! Without `--install` it lists what is missing with the commands that install it; with
//! `--install` it runs them (apt-get waits for the dpkg lock instead of failing).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{find_on_path, APT};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where `cargo build --release` in ffrtmp-ebpf/ puts the object (ffrtmp/build.rs looks there).
pub fn object_path(root: &Path) -> PathBuf {
    root.join("ffrtmp-ebpf/target/bpfel-unknown-none/release/ffrtmp-ebpf")
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Debian,
    Nightly,
}

pub fn build(args: &[String]) -> Result<()> {
    let mut install = false;
    for a in args {
        match a.as_str() {
            "--install" => install = true,
            "-h" | "--help" => {
                println!("usage: cargo xtask build-ebpf [--install]\n\nBuilds ffrtmp-ebpf for the agent to embed. --install installs what is missing\n(apt packages rustc-web, libstd-rust-web-dev-bpf, llvm-<major>-dev; bpf-linker).");
                return Ok(());
            }
            other => bail!("unknown option {other:?} (accepted: --install)"),
        }
    }
    // Built once per xtask run: `test` reaches it from several steps (set-up, the VM
    // tier, the package), and each would print and run the same no-op build again.
    static BUILT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if BUILT.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let root = workspace_root();
    let route = prepare(install)?;
    let ebpf_dir = root.join("ffrtmp-ebpf");
    let mut cmd = Command::new("cargo");
    if route == Route::Nightly {
        // Overrides the crate's config, which names Debian's rustc.
        cmd.args(["+nightly", "build", "--release", "-Z", "build-std=core"])
            .args([
                "--config",
                "build.rustc=\"rustc\"",
                "--config",
                "build.rustdoc=\"rustdoc\"",
            ]);
    } else {
        cmd.args(["build", "--release"]);
    }
    // Cargo reads ffrtmp-ebpf/.cargo/config.toml from the current directory. Outside
    // settings that would move the object or replace its rustflags are dropped.
    cmd.current_dir(&ebpf_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    println!(
        "xtask: building the eBPF program ({route:?} toolchain): cd ffrtmp-ebpf && {}",
        show(&cmd)
    );
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("building ffrtmp-ebpf failed ({status}); see the compiler output above");
    }
    let obj = object_path(&root);
    let size = std::fs::metadata(&obj)
        .with_context(|| format!("the build succeeded but {} is missing", obj.display()))?
        .len();
    println!("xtask: eBPF object: {} ({size} bytes)", obj.display());
    BUILT.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("xtask: now rebuild the agent to embed it: cargo build --release -p ffrtmp");
    Ok(())
}

/// One missing prerequisite and the command that provides it.
struct Missing {
    what: String,
    fix: Vec<Vec<String>>,
}

/// Check (and with `install`, provide) what the build needs; returns the route to use.
fn prepare(install: bool) -> Result<Route> {
    let route = if nightly_with_rust_src() && !debian_compiler_present() {
        Route::Nightly
    } else {
        Route::Debian
    };
    let check = || match route {
        Route::Debian => debian_missing(),
        Route::Nightly => nightly_missing(),
    };
    let mut missing = check();
    if missing.is_empty() {
        return Ok(route);
    }
    if !install {
        let mut text = String::from("the eBPF toolchain is incomplete:\n");
        for m in &missing {
            text += &format!("  missing: {}\n", m.what);
            for c in &m.fix {
                text += &format!("    install with: {}\n", c.join(" "));
            }
        }
        if route == Route::Debian && !Path::new(DEBIAN_RUSTC).exists() {
            text += "  then: llvm-<major>-dev and bpf-linker built with LLVM_PREFIX=/usr/lib/llvm-<major> --features llvm-<major>, <major> being the LLVM major of `/usr/bin/rustc -vV`\n";
        }
        text += "or run `cargo xtask build-ebpf --install`, which runs these commands";
        bail!(text);
    }
    // Each round installs what is missing now; later steps need earlier ones (the LLVM
    // major comes from the installed rustc), so a few rounds may be needed.
    for _ in 0..3 {
        for m in &missing {
            println!("xtask: installing {}", m.what);
            for c in &m.fix {
                run_words(c)?;
            }
        }
        missing = check();
        if missing.is_empty() {
            return Ok(route);
        }
    }
    let m = &missing[0];
    bail!(
        "{} is still missing after installing; run `{}` by hand to see why",
        m.what,
        m.fix.last().map(|c| c.join(" ")).unwrap_or_default()
    )
}

fn nightly_missing() -> Vec<Missing> {
    match bpf_linker_llvm() {
        Some(_) => Vec::new(),
        None => vec![Missing {
            what: "bpf-linker (on PATH)".into(),
            fix: vec![words("cargo install bpf-linker --locked")],
        }],
    }
}

/// What the Debian route lacks, in install order.
fn debian_missing() -> Vec<Missing> {
    let mut out = Vec::new();
    let mut pkgs = Vec::new();
    if !Path::new(DEBIAN_RUSTC).exists() {
        pkgs.push("rustc-web");
    }
    if !dir_has_files(Path::new(DEBIAN_BPF_CORE)) {
        pkgs.push("libstd-rust-web-dev-bpf");
    }
    if !pkgs.is_empty() {
        out.push(Missing {
            what: format!("Debian's Rust compiler with the BPF core library ({DEBIAN_RUSTC}, {DEBIAN_BPF_CORE}): packages {}", pkgs.join(", ")),
            fix: vec![apt(&["update"]), apt(&[&["install", "-y"][..], &pkgs[..]].concat())],
        });
        // The LLVM major is only known once rustc-web is installed.
        return out;
    }
    let Some(major) = rustc_llvm_major() else {
        out.push(Missing {
            what: format!(
                "a working {DEBIAN_RUSTC} (`{DEBIAN_RUSTC} -vV` did not report an LLVM version)"
            ),
            fix: vec![apt(&["install", "-y", "--reinstall", "rustc-web"])],
        });
        return out;
    };
    let llvm = format!("/usr/lib/llvm-{major}");
    if !Path::new(&llvm).join("bin/llvm-config").exists() {
        out.push(Missing {
            what: format!(
                "LLVM {major} development files ({llvm}/bin/llvm-config), to build bpf-linker"
            ),
            fix: vec![
                apt(&["update"]),
                apt(&["install", "-y", &format!("llvm-{major}-dev")]),
            ],
        });
    }
    let linker_ok = match bpf_linker_llvm() {
        Some(Some(m)) => m == major,
        Some(None) => true, // statically linked: cannot tell, trust it
        None => false,
    };
    if !linker_ok {
        let what = match bpf_linker_llvm() {
            Some(Some(m)) => {
                format!("bpf-linker built against LLVM {major} (the one on PATH uses LLVM {m})")
            }
            _ => format!("bpf-linker {BPF_LINKER_VERSION} built against LLVM {major} (on PATH)"),
        };
        out.push(Missing {
            what,
            fix: vec![vec![
                "env".into(),
                format!("LLVM_PREFIX={llvm}"),
                "cargo".into(),
                "install".into(),
                format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked".into(),
                "--force".into(),
                "--no-default-features".into(),
                "--features".into(),
                format!("llvm-{major}"),
            ]],
        });
    }
    out
}

fn apt(args: &[&str]) -> Vec<String> {
    APT.iter().chain(args).map(|s| s.to_string()).collect()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn run_words(c: &[String]) -> Result<()> {
    println!("xtask: running {}", c.join(" "));
    let status = Command::new(&c[0])
        .args(&c[1..])
        .status()
        .with_context(|| format!("cannot run {}", c[0]))?;
    if !status.success() {
        bail!("`{}` failed ({status})", c.join(" "));
    }
    Ok(())
}

fn dir_has_files(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn debian_compiler_present() -> bool {
    Path::new(DEBIAN_RUSTC).exists() && dir_has_files(Path::new(DEBIAN_BPF_CORE))
}

/// `LLVM version: 22.1.8` → 22.
fn rustc_llvm_major() -> Option<u32> {
    let out = Command::new(DEBIAN_RUSTC).arg("-vV").output().ok()?;
    parse_llvm_major(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_llvm_major(vv: &str) -> Option<u32> {
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// `None`: no bpf-linker on PATH. `Some(None)`: present, LLVM unknown (static).
/// `Some(Some(major))`: present, dynamically linked against libLLVM of that major.
fn bpf_linker_llvm() -> Option<Option<u32>> {
    let path = find_on_path("bpf-linker")?;
    let ldd = Command::new("ldd").arg(&path).output().ok();
    let text = ldd
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    Some(parse_libllvm_major(&text))
}

/// From ldd output: `libLLVM.so.22.1 => …` or `libLLVM-22.so => …` → 22.
pub fn parse_libllvm_major(ldd: &str) -> Option<u32> {
    ldd.lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        let rest = name.strip_prefix("libLLVM")?;
        let digits: String = rest
            .trim_start_matches(['.', '-'])
            .trim_start_matches("so.")
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

fn nightly_with_rust_src() -> bool {
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output();
    matches!(installed, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")))
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_and_ldd() {
        assert_eq!(
            parse_llvm_major("rustc 1.96.0\nLLVM version: 22.1.8\n"),
            Some(22)
        );
        assert_eq!(parse_llvm_major("rustc 1.96.0\n"), None);
        assert_eq!(
            parse_libllvm_major("\tlibc.so.6 => /lib/x\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x1)\n"),
            Some(22)
        );
        assert_eq!(
            parse_libllvm_major("\tlibLLVM-19.so => /usr/lib/x (0x1)\n"),
            Some(19)
        );
        assert_eq!(parse_libllvm_major("\tstatically linked\n"), None);
    }
}
