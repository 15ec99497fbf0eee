//! The config as the daemon reads it: the YAML file, then the environment's overrides,
//! then validation into settings (and `config check`'s rendering of them).
//!
//! Input: the file's text, then NUL, then the values of `ENV_VARS` in order, NUL-separated.
#![no_main]

use std::path::Path;

use ffrtmp::config::{self, EnvVars, FlagOverrides, Sources, ENV_VARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let mut env = EnvVars::default();
    for (key, value) in ENV_VARS.iter().zip(parts) {
        if let Ok(v) = std::str::from_utf8(value) {
            env.0.insert(key.to_string(), v.to_string());
        }
    }
    let src = Sources {
        config_file: Some(Path::new("/etc/ffrtmp/watch-config.yaml")),
        env: &env,
        flags: &FlagOverrides::default(),
        passwd: Path::new("/etc/passwd"),
    };
    if let Ok(settings) = config::parse(text, &src) {
        let _ = ffrtmp::cli::check::render(&settings);
    }
});
