//! `ConfigError`: every way a config can be wrong, each naming where and what to fix.

use std::fmt;
use std::path::PathBuf;

/// A config that cannot be used. Maps to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (pass --config PATH with a readable file)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", at(.path, *.line, *.column, .message))]
    File {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("environment variable {var}={value:?}: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("flag {flag} {value:?}: {message}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

fn at(path: &std::path::Path, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}: {message}", path.display()),
        (Some(l), None) => format!("{}:{l}: {message}", path.display()),
        _ => format!("{}: {message}", path.display()),
    }
}

impl ConfigError {
    /// Exit code for a config error.
    pub const EXIT_CODE: i32 = 2;

    /// Turn a yaml_serde error into a `File` error: location split out, and a did-you-mean
    /// added to unknown keys.
    pub fn from_yaml(path: PathBuf, err: &yaml_serde::Error) -> Self {
        let (line, column) = match err.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        let mut message = err.to_string();
        if let (Some(l), Some(c)) = (line, column) {
            let suffix = format!(" at line {l} column {c}");
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&hint);
        }
        ConfigError::File {
            path,
            line,
            column,
            message,
        }
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" message, suggest the closest
/// accepted key.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some(format!("; did you mean `{}`?", best.1))
}

/// Find the line of a dotted key path (`filters.min_runtime`) in block-style YAML, for
/// errors found after parsing. Best effort: `None` when the key is not written plainly.
/// Makes the error for a key of the file: `file:line: key: message`.
pub(super) type FileErr<'a> = &'a dyn Fn(&str, String) -> ConfigError;

pub fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let wanted: Vec<&str> = dotted.split('.').collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if stack.len() == wanted.len() && stack.iter().zip(&wanted).all(|((_, k), w)| k == w) {
            return Some(i + 1);
        }
    }
    None
}

impl fmt::Display for super::Origin {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            super::Origin::Default => f.write_str("default"),
            super::Origin::File => f.write_str("config file"),
            super::Origin::Env(v) => write!(f, "environment {v}"),
            super::Origin::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys() {
        let m = "filters: unknown field `blocked_dir`, expected one of `min_runtime`, `blocked_dirs`, `allowed_dirs`";
        assert_eq!(
            did_you_mean(m).as_deref(),
            Some("; did you mean `blocked_dirs`?")
        );
        let far = "unknown field `zzz`, expected one of `min_runtime`, `blocked_dirs`";
        assert_eq!(did_you_mean(far), None);
    }

    #[test]
    fn finds_nested_key_lines() {
        let text = "scan_interval: 10s\nfilters:\n  # c\n  min_runtime: 5s\ncommands:\n  ffmpeg:\n    filters:\n      min_runtime: 10s\n";
        assert_eq!(find_key_line(text, "scan_interval"), Some(1));
        assert_eq!(find_key_line(text, "filters.min_runtime"), Some(4));
        assert_eq!(
            find_key_line(text, "commands.ffmpeg.filters.min_runtime"),
            Some(8)
        );
        assert_eq!(find_key_line(text, "filters.max_runtime"), None);
    }
}
