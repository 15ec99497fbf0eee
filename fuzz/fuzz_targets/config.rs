//! The config as the daemon reads it: the YAML file, then the environment's overrides,
//! then validation into settings (and `config check`'s rendering of them).
//!
//! Input: the file's text, then NUL, then an env file's text (`KEY=VALUE` lines, as
//! watch.env has them; the keys ffrtmp reads are taken).
#![no_main]

use std::path::Path;

use ffrtmp::config::{self, EnvVars, FlagOverrides, Sources, ENV_VARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (file, env_file) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let mut env = EnvVars::default();
    for line in String::from_utf8_lossy(env_file).lines() {
        if let Some((k, v)) = line.trim().split_once('=') {
            if ENV_VARS.contains(&k) {
                env.0.insert(k.to_string(), v.trim_matches('"').to_string());
            }
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
