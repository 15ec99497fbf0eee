//! Running commands from xtask: echo them, fail with the command line on error.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The repository root (xtask lives in `<root>/xtask`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repo")
        .to_path_buf()
}

/// Run a command to completion, printing it first; an unsuccessful exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `cargo` as invoked by `cargo xtask` (the same toolchain).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Run cargo with `--message-format=json-render-diagnostics` (added here), its diagnostics
/// to the terminal; the artifacts it built (`compiler-artifact` messages).
pub fn cargo_artifacts(cmd: &mut Command) -> Result<Vec<serde_json::Value>> {
    cmd.arg("--message-format=json-render-diagnostics");
    eprintln!("+ {}", show(cmd));
    let o = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", show(cmd)))?;
    if !o.status.success() {
        bail!("`{}` failed with {}", show(cmd), o.status);
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .collect())
}

/// apt-get that waits for another apt to finish instead of failing.
pub const APT: &[&str] = &["apt-get", "-o", "DPkg::Lock::Timeout=600"];

/// Make sure `tool` is on the PATH: installed from `package` when missing (as root;
/// otherwise the error says the command that installs it).
pub fn ensure_tool(tool: &str, package: &str) -> Result<()> {
    if find_on_path(tool).is_some() {
        return Ok(());
    }
    if !is_root() {
        bail!("{tool} is missing: install it with `sudo apt-get install {package}` (or run this as root, which installs it)");
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new(APT[0]);
        c.args(&APT[1..])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    if run(&mut apt(&["install", "-y", package])).is_err() {
        run(&mut apt(&["update"]))?;
        run(&mut apt(&["install", "-y", package]))?;
    }
    if find_on_path(tool).is_none() {
        bail!("{tool} is still missing after `apt-get install {package}`");
    }
    Ok(())
}

/// `name` in a directory of the PATH (or /usr/sbin, /sbin).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A command line of `--name`, `--name value` and `--name=value` options.
pub struct Options<'a> {
    it: std::slice::Iter<'a, String>,
    usage: &'static str,
}

impl<'a> Options<'a> {
    pub fn new(args: &'a [String], usage: &'static str) -> Self {
        Options {
            it: args.iter(),
            usage,
        }
    }

    /// The next option's name and the value written after its `=`, if any.
    pub fn next_option(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let a = self.it.next()?.as_str();
        Some(match a.split_once('=') {
            Some((name, v)) if name.starts_with("--") => (name, Some(v)),
            _ => (a, None),
        })
    }

    /// The value of option `name`: after its `=`, else the next argument.
    pub fn value(&mut self, name: &str, inline: Option<&str>) -> Result<String> {
        match inline {
            Some(v) => Ok(v.to_string()),
            None => self
                .it
                .next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n\n{}", self.usage)),
        }
    }

    /// The error for an option this command does not take.
    pub fn unknown(&self, name: &str, inline: Option<&str>) -> anyhow::Error {
        let shown = match inline {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        };
        anyhow::anyhow!("unknown option {shown:?}\n\n{}", self.usage)
    }
}
