use super::*;
use std::io::Write;

fn passwd() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "root:x:0:0:root:/root:/bin/sh\nffrtmp:x:999:999::/var/lib/ffrtmp:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash").unwrap();
    f
}

fn load_text(
    text: &str,
    env: &[(&str, &str)],
    flags: FlagOverrides,
) -> Result<Settings, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let pw = passwd();
    let env = EnvVars(
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    load(&Sources {
        config_file: Some(file.path()),
        env: &env,
        flags: &flags,
        passwd: pw.path(),
    })
}

fn ok(text: &str) -> Settings {
    load_text(text, &[], FlagOverrides::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match load_text(text, &[], FlagOverrides::default()) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn seed(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/seed/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn every_snippet_of_the_predecessor_guide_parses() {
    for name in [
        "guide-main.yaml",
        "guide-light.yaml",
        "guide-medium.yaml",
        "guide-heavy.yaml",
        "guide-sensitive.yaml",
    ] {
        let s = load_text(&seed(name), &[], FlagOverrides::default());
        assert!(s.is_ok(), "{name}: {}", s.unwrap_err());
    }
}

#[test]
fn the_bundled_example_is_the_guide_example() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/watch-config.yaml"
    ))
    .unwrap();
    let a = ok(&example);
    let b = ok(&seed("guide-main.yaml"));
    assert_eq!(a.targets, b.targets);
    assert_eq!(a.scan_interval, b.scan_interval);
}

#[test]
fn guide_example_means_what_the_guide_says() {
    let s = ok(&seed("guide-main.yaml"));
    assert_eq!(s.scan_interval, Duration::from_secs(10));
    let ff = s.target("ffmpeg").unwrap();
    // Per-command limits override the defaults field by field.
    assert_eq!(
        ff.limits,
        Limits {
            cpu_quota: Some(300),
            cpu_weight: Some(100),
            memory_limit: Some(8192),
            pids_max: None
        }
    );
    // Per-command filters override field by field: min_runtime replaced, blocked_dirs kept.
    assert_eq!(ff.filters.min_runtime, Some(Duration::from_secs(10)));
    assert_eq!(ff.filters.blocked_dirs, vec![PathBuf::from("/tmp")]);
    let gst = s.target("gst-launch-1.0").unwrap();
    assert_eq!(
        gst.limits,
        Limits {
            cpu_quota: Some(200),
            cpu_weight: Some(100),
            memory_limit: Some(4096),
            pids_max: None
        }
    );
    assert_eq!(gst.filters.min_runtime, Some(Duration::from_secs(5)));
}

#[test]
fn defaults_without_a_file() {
    let env = EnvVars::default();
    let pw = passwd();
    let s = load(&Sources {
        config_file: None,
        env: &env,
        flags: &FlagOverrides::default(),
        passwd: pw.path(),
    })
    .unwrap();
    assert_eq!(s.scan_interval, Duration::from_secs(10));
    assert_eq!(
        s.targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["ffmpeg", "gst-launch-1.0"]
    );
    assert_eq!(s.cgroup_root, "auto");
    assert_eq!(s.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(
        s.state_path,
        PathBuf::from("/var/lib/ffrtmp/watch-state.json")
    );
    assert_eq!(s.state_flush_interval, Duration::from_secs(30));
    assert_eq!(s.max_retry_attempts, 5);
    assert_eq!(s.reconcile_interval, Duration::from_secs(60));
    assert_eq!(s.origins["scan_interval"], Origin::Default);
}

#[test]
fn empty_file_is_all_defaults() {
    let s = ok("# nothing here\n");
    assert_eq!(s.targets.len(), 2);
}

#[test]
fn metrics_addr_can_be_disabled_or_moved() {
    assert_eq!(ok("metrics_addr: \"\"\n").metrics_addr, None);
    assert_eq!(
        ok("metrics_addr: \"[::1]:9100\"\n").metrics_addr,
        Some("[::1]:9100".parse().unwrap())
    );
    assert_eq!(ok("cgroup_root: auto\n").cgroup_root, "auto");
}

#[test]
fn new_keys_parse() {
    let s = ok("cgroup_root: /edge/ffrtmp/\nstate_path: /srv/state.json\nstate_flush_interval: 10s\nmax_retry_attempts: 3\nreconcile_interval: 2m\ndefault_limits:\n  pids_max: 64\ncommands:\n  ffmpeg:\n    limits:\n      pids_max: max\n");
    assert_eq!(s.cgroup_root, "/edge/ffrtmp");
    assert_eq!(s.state_path, PathBuf::from("/srv/state.json"));
    assert_eq!(s.max_retry_attempts, 3);
    assert_eq!(s.reconcile_interval, Duration::from_secs(120));
    assert_eq!(
        s.target("ffmpeg").unwrap().limits.pids_max,
        None,
        "max overrides the default"
    );
    assert_eq!(
        s.target("gst-launch-1.0").unwrap().limits.pids_max,
        Some(64)
    );
}

#[test]
fn unknown_key_names_file_line_and_suggests() {
    let e = err("scan_interval: 10s\nfilters:\n  blocked_dir:\n    - /tmp\n");
    assert!(e.contains(":3:"), "{e}");
    assert!(e.contains("filters"), "{e}");
    assert!(e.contains("unknown field `blocked_dir`"), "{e}");
    assert!(e.contains("did you mean `blocked_dirs`?"), "{e}");
    let e = err("scan_intervall: 10s\n");
    assert!(
        e.contains(":1:") && e.contains("did you mean `scan_interval`?"),
        "{e}"
    );
    let e = err("default_limits:\n  memory: 10\n");
    assert!(e.contains("unknown field `memory`"), "{e}");
}

#[test]
fn wrong_types_are_rejected_with_the_line() {
    let e = err("scan_interval: 10s\ndefault_limits:\n  cpu_quota: lots\n");
    assert!(
        e.contains(":3:") && e.contains("default_limits.cpu_quota") && e.contains("lots"),
        "{e}"
    );
    let e = err("target_commands: {a: b}\n");
    assert!(e.contains("target_commands"), "{e}");
    let e = err("filters:\n  blocked_uids: [root]\n");
    assert!(e.contains("filters.blocked_uids"), "{e}");
}

#[test]
fn out_of_range_values_say_the_accepted_range() {
    let cases = [
        (
            "default_limits:\n  cpu_weight: 0\n",
            "default_limits.cpu_weight",
            "accepted 1–10000",
        ),
        (
            "default_limits:\n  cpu_weight: 10001\n",
            "default_limits.cpu_weight",
            "accepted 1–10000",
        ),
        (
            "default_limits:\n  cpu_quota: 0\n",
            "default_limits.cpu_quota",
            "accepted 1–100000",
        ),
        (
            "default_limits:\n  cpu_quota: -50\n",
            "default_limits.cpu_quota",
            "out of range",
        ),
        (
            "default_limits:\n  memory_limit: 0\n",
            "default_limits.memory_limit",
            "MiB",
        ),
        (
            "commands:\n  ffmpeg:\n    limits:\n      pids_max: 0\n",
            "commands.ffmpeg.limits.pids_max",
            "accepted 1–",
        ),
        (
            "max_retry_attempts: 1000\n",
            "max_retry_attempts",
            "accepted 0–100",
        ),
        (
            "scan_interval: 0s\n",
            "scan_interval",
            "accepted 100ms to 1h",
        ),
        (
            "scan_interval: soon\n",
            "scan_interval",
            "write it like 10s",
        ),
        ("scan_interval: 10\n", "scan_interval", "has no unit"),
        (
            "filters:\n  min_runtime: 5x\n",
            "filters.min_runtime",
            "unknown unit",
        ),
        ("target_commands: []\n", "target_commands", "empty"),
        ("target_commands:\n", "target_commands", "empty"),
        (
            "target_commands: [ffmpeg, ffmpeg]\n",
            "target_commands",
            "twice",
        ),
        (
            "target_commands: [/usr/bin/ffmpeg]\n",
            "target_commands",
            "basename",
        ),
        (
            "filters:\n  blocked_dirs: [tmp]\n",
            "filters.blocked_dirs",
            "absolute",
        ),
        ("cgroup_root: ffrtmp\n", "cgroup_root", "absolute"),
        ("cgroup_root: /\n", "cgroup_root", "root"),
        (
            "cgroup_root: automatic\n",
            "cgroup_root",
            "must be auto or an absolute path",
        ),
        ("metrics_addr: localhost\n", "metrics_addr", "host:port"),
        (
            "metrics_addr: 127.0.0.1:99999\n",
            "metrics_addr",
            "host:port",
        ),
    ];
    for (text, key, want) in cases {
        let e = err(text);
        assert!(e.contains(key), "{text}: {e}");
        assert!(e.contains(want), "{text}: {e}");
        assert!(
            e.contains(".yaml") || e.contains("/tmp"),
            "names the file: {e}"
        );
    }
}

#[test]
fn min_longer_than_max_runtime_is_rejected_with_its_line() {
    let e = err("scan_interval: 10s\nfilters:\n  min_runtime: 1m\n  max_runtime: 10s\n");
    assert!(
        e.contains(":3:") && e.contains("filters.min_runtime"),
        "{e}"
    );
}

#[test]
fn malformed_yaml_is_rejected_with_a_position() {
    let e = err("scan_interval: [10s\n");
    assert!(e.contains(":2:") || e.contains(":1:"), "{e}");
}

#[test]
fn precedence_flag_over_env_over_file_over_default() {
    let text = "scan_interval: 30s\ntarget_commands: [ffmpeg]\nstate_path: /file/state.json\n";
    let s = load_text(text, &[], FlagOverrides::default()).unwrap();
    assert_eq!(s.scan_interval, Duration::from_secs(30));
    assert_eq!(s.origins["scan_interval"], Origin::File);

    let env = [
        ("SCAN_INTERVAL", "5s"),
        ("TARGET_COMMANDS", "ffmpeg, x264"),
        ("STATE_PATH", "/env/state.json"),
        ("STATE_FLUSH_INTERVAL", "10s"),
        ("MAX_RETRY_ATTEMPTS", "2"),
        ("LOG_LEVEL", "debug"),
    ];
    let s = load_text(text, &env, FlagOverrides::default()).unwrap();
    assert_eq!(s.scan_interval, Duration::from_secs(5));
    assert_eq!(
        s.targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["ffmpeg", "x264"]
    );
    assert_eq!(s.state_path, PathBuf::from("/env/state.json"));
    assert_eq!(s.state_flush_interval, Duration::from_secs(10));
    assert_eq!(s.max_retry_attempts, 2);
    assert_eq!(s.log_level, tracing::Level::DEBUG);
    assert_eq!(s.origins["scan_interval"], Origin::Env("SCAN_INTERVAL"));

    let flags = FlagOverrides {
        scan_interval: Some("1s".into()),
        targets: vec!["gst-launch-1.0".into()],
        state_path: Some("/flag/s.json".into()),
        cgroup_root: Some("/flagroot".into()),
        placement: None,
    };
    let s = load_text(text, &env, flags).unwrap();
    assert_eq!(s.scan_interval, Duration::from_secs(1));
    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.targets[0].name, "gst-launch-1.0");
    assert_eq!(s.state_path, PathBuf::from("/flag/s.json"));
    assert_eq!(s.cgroup_root, "/flagroot");
    assert_eq!(s.origins["target_commands"], Origin::Flag("--target"));
}

#[test]
fn the_guide_env_file_is_accepted() {
    let env: Vec<(String, String)> = seed("guide-watch.env")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = load_text(&seed("guide-main.yaml"), &env, FlagOverrides::default()).unwrap();
    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.targets[0].name, "ffmpeg");
    // ffmpeg keeps its per-command section from the file.
    assert_eq!(s.targets[0].limits.cpu_quota, Some(300));
}

#[test]
fn bad_env_and_flags_are_errors_naming_the_variable() {
    let e = load_text("", &[("SCAN_INTERVAL", "often")], FlagOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("SCAN_INTERVAL") && e.contains("often"), "{e}");
    let e = load_text(
        "",
        &[("MAX_RETRY_ATTEMPTS", "-1")],
        FlagOverrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("MAX_RETRY_ATTEMPTS"), "{e}");
    let e = load_text("", &[("LOG_LEVEL", "loud")], FlagOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("LOG_LEVEL") && e.contains("accepted"), "{e}");
    let e = load_text("", &[("TARGET_COMMANDS", " , ")], FlagOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("TARGET_COMMANDS"), "{e}");
    let flags = FlagOverrides {
        scan_interval: Some("0".into()),
        ..Default::default()
    };
    let e = load_text("", &[], flags).unwrap_err().to_string();
    assert!(e.contains("--scan-interval"), "{e}");
}

#[test]
fn missing_file_is_a_read_error() {
    let env = EnvVars::default();
    let pw = passwd();
    let e = load(&Sources {
        config_file: Some(Path::new("/nonexistent/ffrtmp.yaml")),
        env: &env,
        flags: &FlagOverrides::default(),
        passwd: pw.path(),
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/nonexistent/ffrtmp.yaml"));
}

#[test]
fn users_resolve_through_passwd_and_unknown_ones_warn() {
    let s = ok("filters:\n  allowed_users: [alice, bob]\n  blocked_users: [root]\n");
    let f = &s.targets[0].filters;
    assert_eq!(
        f.allowed_users[0],
        UserRef {
            name: "alice".into(),
            uid: Some(1000)
        }
    );
    assert_eq!(f.allowed_users[1].uid, None);
    assert_eq!(f.blocked_users[0].uid, Some(0));
    assert!(
        s.warnings.iter().any(|w| w.contains("bob")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn commands_that_are_not_targets_warn() {
    let s = ok("target_commands: [ffmpeg]\ncommands:\n  gst-launch-1.0:\n    limits:\n      cpu_quota: 100\n");
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("commands.gst-launch-1.0")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn placement_is_normal_by_default_and_set_globally_or_per_command() {
    let s = ok("target_commands: [ffmpeg, x264]\n");
    assert_eq!(s.placement, Placement::Normal);
    assert_eq!(s.placement_of("ffmpeg"), Placement::Normal);
    assert!(!s.forward_all);
    assert_eq!(s.origins["placement"], Origin::Default);

    let s = ok("target_commands: [ffmpeg, x264]\nplacement: strict\ncommands:\n  x264:\n    placement: normal\n");
    assert_eq!(s.placement_of("ffmpeg"), Placement::Strict);
    assert_eq!(s.placement_of("x264"), Placement::Normal);

    let s = ok("target_commands: [ffmpeg, x264]\ncommands:\n  ffmpeg:\n    placement: Strict\n");
    assert_eq!(s.placement_of("ffmpeg"), Placement::Strict);
    assert_eq!(s.placement_of("x264"), Placement::Normal);

    // The flag outranks the file; per-command values still outrank the global one.
    let flags = FlagOverrides {
        placement: Some("strict".into()),
        ..Default::default()
    };
    let s = load_text(
        "target_commands: [ffmpeg, x264]\nplacement: normal\ncommands:\n  x264:\n    placement: normal\n",
        &[],
        flags,
    )
    .unwrap();
    assert_eq!(s.placement, Placement::Strict);
    assert_eq!(s.origins["placement"], Origin::Flag("--placement"));
    assert_eq!(s.placement_of("ffmpeg"), Placement::Strict);
    assert_eq!(s.placement_of("x264"), Placement::Normal);
}

#[test]
fn bad_placement_values_name_the_key_and_the_choices() {
    let e = err("placement: paused\n");
    assert!(
        e.contains("placement") && e.contains("normal, strict"),
        "{e}"
    );
    let e = err("commands:\n  ffmpeg:\n    placement: 1\n");
    assert!(e.contains("placement"), "{e}");
    let flags = FlagOverrides {
        placement: Some("hard".into()),
        ..Default::default()
    };
    let e = load_text("", &[], flags).unwrap_err().to_string();
    assert!(e.contains("--placement") && e.contains("hard"), "{e}");
}

#[test]
fn forward_all_is_read_from_the_file() {
    let s = ok("forward_all: true\n");
    assert!(s.forward_all);
    assert_eq!(s.origins["forward_all"], Origin::File);
    assert!(!ok("forward_all: false\n").forward_all);
    let e = err("forward_all: sometimes\n");
    assert!(e.contains("forward_all"), "{e}");
}

#[test]
fn the_environment_overriding_the_file_is_a_warning_naming_what_is_lost() {
    let text = "target_commands: [ffmpeg, gst-launch-1.0]\nscan_interval: 5s\n";
    let s = load_text(
        text,
        &[("TARGET_COMMANDS", "ffmpeg"), ("SCAN_INTERVAL", "10s")],
        FlagOverrides::default(),
    )
    .unwrap();
    let w = s.warnings.join("\n");
    assert!(w.contains("TARGET_COMMANDS=\"ffmpeg\""), "{w}");
    assert!(w.contains("gst-launch-1.0 NOT governed"), "{w}");
    assert!(
        w.contains("SCAN_INTERVAL=\"10s\" overrides scan_interval 5s"),
        "{w}"
    );
    assert!(w.contains("watch.env"), "{w}");
    // An environment variable for a key the file does not set is no surprise.
    let s = load_text(
        "scan_interval: 5s\n",
        &[("TARGET_COMMANDS", "ffmpeg")],
        FlagOverrides::default(),
    )
    .unwrap();
    assert!(
        !s.warnings.iter().any(|w| w.contains("TARGET_COMMANDS")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn min_runtime_says_how_long_targets_run_unconstrained() {
    let s = ok(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/watch-config.yaml"
    ))
    .unwrap());
    let w = s.warnings.join("\n");
    assert!(
        w.contains("commands.ffmpeg.filters.min_runtime 10s: every new ffmpeg runs unconstrained"),
        "{w}"
    );
    assert!(
        w.contains("filters.min_runtime 5s: every new gst-launch-1.0 runs unconstrained"),
        "{w}"
    );
}

#[test]
fn target_names_must_fit_a_cgroup_name_and_one_line() {
    for (bad, why) in [
        ("target_commands: [\"ff\\nmpeg\"]\n", "control character"),
        ("target_commands: [\"ff\\tmpeg\"]\n", "control character"),
        ("target_commands: [\"a/b\"]\n", "contains '/'"),
        ("target_commands: [\"..\"]\n", "not a valid command name"),
    ] {
        let e = err(bad);
        assert!(e.contains(why), "{bad:?}: {e}");
        assert!(e.contains(":1:"), "the error names the line: {e}");
    }
    let long = "x".repeat(raw::MAX_COMMAND_NAME + 1);
    let e = err(&format!("target_commands: [{long}]\n"));
    assert!(e.contains("at most 218"), "{e}");
    ok(&format!(
        "target_commands: [{}]\n",
        "x".repeat(raw::MAX_COMMAND_NAME)
    ));
    // A commands section key is checked too.
    let e = err(
        "target_commands: [ffmpeg]\ncommands:\n  \"bad\\nname\":\n    limits: {cpu_quota: 100}\n",
    );
    assert!(e.contains("control character"), "{e}");
    // The environment and flags get the same check.
    let e = load_text(
        "",
        &[("TARGET_COMMANDS", "a\u{7}b")],
        FlagOverrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("TARGET_COMMANDS") && e.contains("control character"),
        "{e}"
    );
}

#[test]
fn only_configured_limits_are_set_and_new_keys_parse() {
    let s = ok("target_commands: [ffmpeg]\ndefault_limits:\n  memory_limit: 64\n");
    assert_eq!(
        s.targets[0].limits.cpu_weight, None,
        "cpu_weight is written only when set"
    );
    assert_eq!(s.strict_timeout, DEFAULT_STRICT_TIMEOUT);
    assert_eq!(s.job_metrics, JobMetrics::PerJob);
    assert!(!s.targets[0].govern_containers);
    let s = ok("target_commands: [ffmpeg, x264]\nstrict_timeout: 800ms\njob_metrics: per_command\ngovern_containers: true\ncommands:\n  x264:\n    govern_containers: false\n");
    assert_eq!(s.strict_timeout, Duration::from_millis(800));
    assert_eq!(s.job_metrics, JobMetrics::PerCommand);
    assert!(s.targets[0].govern_containers);
    assert!(
        !s.targets[1].govern_containers,
        "the command's own value wins"
    );
    let e = err("strict_timeout: 2m\n");
    assert!(e.contains("strict_timeout") && e.contains("1m"), "{e}");
    let e = err("job_metrics: all\n");
    assert!(e.contains("per_job, per_command, off"), "{e}");
}

const POOLS: &str = "target_commands: [ffmpeg, gst-launch-1.0, x264]
default_limits:
  cpu_quota: 200
pools:
  live:
    limits:
      cpu_quota: 100
      memory_limit: 512
  vod:
    limits:
      pids_max: 64
default_pool: vod
commands:
  ffmpeg:
    pool: live
";

#[test]
fn pools_are_assigned_per_command_over_the_default() {
    let s = ok(POOLS);
    let live = &s.pools["live"];
    assert_eq!(
        live.limits,
        Limits {
            cpu_quota: Some(100),
            memory_limit: Some(512),
            ..Limits::default()
        },
        "a pool has its own limits only, not default_limits"
    );
    assert_eq!(s.pools["vod"].limits.pids_max, Some(64));
    let pool = |n: &str| s.target(n).unwrap().pool.as_ref().map(|p| p.name.clone());
    assert_eq!(pool("ffmpeg").as_deref(), Some("live"));
    assert_eq!(pool("x264").as_deref(), Some("vod"));
    // The job keeps its own limits inside the pool; above the pool's is legal, with a warning.
    assert_eq!(s.target("ffmpeg").unwrap().limits.cpu_quota, Some(200));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("ffmpeg: cpu_quota 200 is above that of its pool live (100)")),
        "{:?}",
        s.warnings
    );
    // No pools: every target stays where it is today.
    assert!(ok("target_commands: [ffmpeg]\n")
        .target("ffmpeg")
        .unwrap()
        .pool
        .is_none());
}

#[test]
fn a_pool_error_names_file_line_and_key() {
    let e = err(&POOLS.replace("pool: live", "pool: liv"));
    assert!(
        e.contains(":15")
            && e.contains("commands.ffmpeg.pool: no pool \"liv\" (configured pools: live, vod)"),
        "{e}"
    );
    let e = err(&POOLS.replace("default_pool: vod", "default_pool: nope"));
    assert!(
        e.contains(":12") && e.contains("default_pool: no pool \"nope\""),
        "{e}"
    );
    let e = err(&POOLS.replace("  vod:", "  auto-vod:"));
    assert!(
        e.contains(":9") && e.contains("pools.auto-vod: \"auto-vod\" starts with \"auto-\""),
        "{e}"
    );
    let e = err("target_commands: [ffmpeg]\ncommands:\n  ffmpeg:\n    pool: live\n");
    assert!(
        e.contains("no pools are configured: add pools.live.limits"),
        "{e}"
    );
    let e = err(&POOLS.replace("pids_max: 64", "pids_max: 64\n      cpu_share: 3"));
    assert!(e.contains("unknown field `cpu_share`"), "{e}");
}
