//! The precedence of one value, written once: the flag's, else the environment's, else the
//! file's, else the default; where it came from is recorded (`config check` and the
//! start-up log show it), and an environment variable that overrides what the file says is
//! reported every time — it is the most common way a node ends up doing something else
//! than its config file reads.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ConfigError, Origin};

/// Turns a rung's text into its value, or says why it cannot.
pub(super) type Parse<'s, T> = Box<dyn FnOnce(&str) -> Result<T, String> + 's>;

/// A rung above the file: a flag or an environment variable, its text and its parser.
pub(super) struct Rung<'s, T> {
    pub name: &'static str,
    pub text: String,
    pub parse: Parse<'s, T>,
}

impl<'s, T> Rung<'s, T> {
    pub fn new(
        name: &'static str,
        text: impl Into<String>,
        parse: impl FnOnce(&str) -> Result<T, String> + 's,
    ) -> Self {
        Rung {
            name,
            text: text.into(),
            parse: Box::new(parse),
        }
    }
}

/// What the file said, as the override warning shows it, given the environment's value
/// (`None`: the file said nothing).
pub(super) type FileShown<'s, T> = Box<dyn FnOnce(&T) -> Option<String> + 's>;

pub(super) struct Ladder<'a> {
    pub origins: BTreeMap<&'static str, Origin>,
    pub warnings: Vec<String>,
    config_file: Option<&'a Path>,
}

impl<'a> Ladder<'a> {
    pub fn new(config_file: Option<&'a Path>) -> Self {
        Ladder {
            origins: BTreeMap::new(),
            warnings: Vec::new(),
            config_file,
        }
    }

    /// One value. `env` comes with what the file said, for the override warning.
    pub fn pick<T>(
        &mut self,
        key: &'static str,
        flag: Option<Rung<'_, T>>,
        env: Option<(Rung<'_, T>, FileShown<'_, T>)>,
        file: Option<T>,
        default: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        if let Some(f) = flag {
            self.origins.insert(key, Origin::Flag(f.name));
            return (f.parse)(&f.text).map_err(|message| ConfigError::Flag {
                flag: f.name,
                value: f.text,
                message,
            });
        }
        if let Some((e, shown)) = env {
            self.origins.insert(key, Origin::Env(e.name));
            let v = (e.parse)(&e.text).map_err(|message| ConfigError::Env {
                var: e.name,
                value: e.text.clone(),
                message,
            })?;
            if let (Some(file_value), Some(path)) = (shown(&v), self.config_file) {
                self.warnings.push(format!(
                    "environment variable {}={:?} overrides {key} {file_value} from {} (precedence: flag > environment > file); remove {} from the environment (watch.env) to use the file's value",
                    e.name,
                    e.text,
                    path.display(),
                    e.name
                ));
            }
            return Ok(v);
        }
        if let Some(v) = file {
            self.origins.insert(key, Origin::File);
            return Ok(v);
        }
        self.origins.insert(key, Origin::Default);
        Ok(default())
    }

    /// A value only the file sets: where it came from.
    pub fn file_only<T>(
        &mut self,
        key: &'static str,
        file: Option<T>,
        default: impl FnOnce() -> T,
    ) -> T {
        let origin = if file.is_some() {
            Origin::File
        } else {
            Origin::Default
        };
        self.origins.insert(key, origin);
        file.unwrap_or_else(default)
    }
}

/// An environment rung whose override warning shows the file's value as `{:?}`.
pub(super) fn env_over<'s, T: 's, F: std::fmt::Debug + 's>(
    var: &'static str,
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, String> + 's,
    file: Option<&'s F>,
) -> (Rung<'s, T>, FileShown<'s, T>) {
    (
        Rung::new(var, text, parse),
        Box::new(move |_| file.map(|f| format!("{f:?}"))),
    )
}
