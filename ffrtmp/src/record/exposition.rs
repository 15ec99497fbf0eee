//! The Prometheus text format (version 0.0.4): label values escaped, one family's
//! `# HELP` and `# TYPE` lines and its samples.

use std::fmt::Write as _;

/// Escape a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn series<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    s: &[(String, V)],
) {
    family(out, name, kind, help);
    for (labels, v) in s {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}
