use super::*;
use crate::config::{Filters, UserRef};
use crate::process::{CgroupLine, ParentFacts, Stat};
use std::path::PathBuf;

fn target(name: &str) -> Target {
    Target {
        name: name.into(),
        ..Target::default()
    }
}

fn facts(pid: u32, comm: &[u8], argv0: Option<&str>, exe: Option<&str>) -> ProcessFacts {
    ProcessFacts {
        id: ProcessId {
            pid,
            start_time: 1000,
        },
        stat: Stat {
            pid,
            comm: comm.to_vec(),
            state: b'S',
            ppid: 50,
            flags: 0,
            utime: 0,
            stime: 0,
            start_time: 1000,
        },
        argv0: argv0.map(|s| s.as_bytes().to_vec()),
        exe: exe.map(PathBuf::from),
        cwd: Some(PathBuf::from("/srv/streams")),
        uid: Some(1000),
        parent: Some(ParentFacts {
            pid: 50,
            comm: b"bash".to_vec(),
            argv0: Some(b"-bash".to_vec()),
            exe: Some(PathBuf::from("/usr/bin/bash")),
        }),
        age: Duration::from_secs(60),
        cgroups: vec![CgroupLine {
            hierarchy: 1,
            controllers: vec!["cpu".into()],
            path: "/".into(),
        }],
        pidns_level: Some(0),
    }
}

#[test]
fn name_matching_table() {
    let targets = vec![
        target("ffmpeg"),
        target("gst-launch-1.0"),
        target("very-long-transcoder-name"),
    ];
    type Case<'a> = (&'a [u8], Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            b"ffmpeg",
            Some("ffmpeg"),
            Some("/usr/bin/ffmpeg"),
            Some("ffmpeg"),
        ),
        // argv[0] basename alone
        (
            b"enc",
            Some("/opt/bin/ffmpeg"),
            Some("/opt/bin/enc"),
            Some("ffmpeg"),
        ),
        // comm alone (argv[0] rewritten by the program)
        (b"ffmpeg", Some("transcode-worker"), None, Some("ffmpeg")),
        // exe alone (started through a symlink with another name)
        (b"enc", Some("enc"), Some("/usr/bin/ffmpeg"), Some("ffmpeg")),
        (b"gst-launch-1.0", None, None, Some("gst-launch-1.0")),
        // a 25-byte name: comm is cut to 15 bytes, argv[0] confirms
        (
            b"very-long-trans",
            Some("./very-long-transcoder-name"),
            None,
            Some("very-long-transcoder-name"),
        ),
        // the truncated comm alone does not prove the long name
        (
            b"very-long-trans",
            Some("very-long-transfer"),
            Some("/bin/very-long-transfer"),
            None,
        ),
        // exe confirms the long name
        (
            b"very-long-trans",
            None,
            Some("/usr/local/bin/very-long-transcoder-name"),
            Some("very-long-transcoder-name"),
        ),
        (
            b"ffmpeg-wrapper",
            Some("ffmpeg-wrapper"),
            Some("/usr/bin/ffmpeg-wrapper"),
            None,
        ),
        (b"ffprobe", Some("ffprobe"), Some("/usr/bin/ffprobe"), None),
        (b"bash", Some("bash"), Some("/usr/bin/bash"), None),
        // a deleted binary path keeps its basename
        (b"x", None, Some("/usr/bin/ffmpeg"), Some("ffmpeg")),
    ];
    for (comm, argv0, exe, want) in cases {
        let got = match_name(&targets, comm, argv0.map(str::as_bytes), exe.map(Path::new));
        assert_eq!(
            got.map(|t| t.name.as_str()),
            want,
            "comm={:?} argv0={argv0:?} exe={exe:?}",
            String::from_utf8_lossy(comm)
        );
    }
}

#[test]
fn comm_prefilter() {
    let targets = vec![target("ffmpeg"), target("very-long-transcoder-name")];
    assert!(comm_could_match(&targets, b"ffmpeg"));
    assert!(comm_could_match(&targets, b"very-long-trans"));
    assert!(!comm_could_match(&targets, b"ffmpe"));
    assert!(
        !comm_could_match(&targets, b"very-long-transcoder-name"),
        "a comm is never longer than 15"
    );
}

#[test]
fn never_governed() {
    let targets = vec![target("ffmpeg")];
    let guard = Guard {
        protected: vec![ProcessId {
            pid: 77,
            start_time: 1000,
        }],
        cgroup_root: "/ffrtmp".into(),
        tool_roots: vec!["/jobs".into()],
    };
    let f = facts(1, b"ffmpeg", None, None);
    assert_eq!(decide(&targets, &guard, &f), Decision::Skip(Skip::Init));

    let mut k = facts(5, b"ffmpeg", None, None);
    k.stat.flags = crate::process::stat::PF_KTHREAD;
    assert_eq!(
        decide(&targets, &guard, &k),
        Decision::Skip(Skip::KernelThread)
    );

    let me = facts(77, b"ffmpeg", None, None);
    assert_eq!(
        decide(&targets, &guard, &me),
        Decision::Skip(Skip::SelfOrAncestor)
    );
    // Same PID, different start time: a different process, governed.
    let mut reused = facts(77, b"ffmpeg", None, None);
    reused.id.start_time = 2000;
    assert!(matches!(
        decide(&targets, &guard, &reused),
        Decision::Govern(_)
    ));

    let mut placed = facts(9, b"ffmpeg", None, None);
    placed.cgroups.push(CgroupLine {
        hierarchy: 4,
        controllers: vec!["memory".into()],
        path: "/ffrtmp/run-9".into(),
    });
    assert_eq!(
        decide(&targets, &guard, &placed),
        Decision::Skip(Skip::UnderCgroupRoot("/ffrtmp/run-9".into()))
    );
    let mut sibling = facts(9, b"ffmpeg", None, None);
    sibling.cgroups[0].path = "/ffrtmp-other/x".into();
    assert!(
        matches!(decide(&targets, &guard, &sibling), Decision::Govern(_)),
        "/ffrtmp-other is not under /ffrtmp"
    );

    let mut z = facts(9, b"ffmpeg", None, None);
    z.stat.state = b'Z';
    assert_eq!(decide(&targets, &guard, &z), Decision::Skip(Skip::Zombie));

    // A job `ffrtmp run --cgroup-root /jobs` placed: never moved by the daemon.
    let mut run = facts(9, b"ffmpeg", None, None);
    run.cgroups[0].path = "/jobs/run-9".into();
    assert_eq!(
        decide(&targets, &guard, &run),
        Decision::Skip(Skip::PlacedByTool("/jobs/run-9".into()))
    );
}

#[test]
fn containers_are_left_to_their_manager_unless_asked() {
    let guard = Guard {
        cgroup_root: "/ffrtmp".into(),
        ..Default::default()
    };
    let mut targets = vec![target("ffmpeg")];
    let mut in_ns = facts(9, b"ffmpeg", None, None);
    in_ns.pidns_level = Some(1);
    let mut in_docker = facts(9, b"ffmpeg", None, None);
    in_docker.cgroups[0].path = "/system.slice/docker-0123.scope".into();
    for f in [&in_ns, &in_docker] {
        match decide(&targets, &guard, f) {
            Decision::Skip(s @ Skip::Container { .. }) => {
                assert!(s.is_target());
                assert_eq!(s.label(), "container");
                assert!(s.to_string().contains("govern_containers"), "{s}");
            }
            other => panic!("{other:?}"),
        }
    }
    targets[0].govern_containers = true;
    assert!(matches!(
        decide(&targets, &guard, &in_ns),
        Decision::Govern(_)
    ));
    assert!(matches!(
        decide(&targets, &guard, &in_docker),
        Decision::Govern(_)
    ));
    // Unknown namespace (no BTF, no /proc status): only the cgroup can tell.
    targets[0].govern_containers = false;
    let mut unknown = facts(9, b"ffmpeg", None, None);
    unknown.pidns_level = None;
    assert!(matches!(
        decide(&targets, &guard, &unknown),
        Decision::Govern(_)
    ));
}

fn with_filters(f: Filters) -> Vec<Target> {
    vec![Target {
        filters: f,
        ..target("ffmpeg")
    }]
}

fn verdict(targets: &[Target], f: &ProcessFacts) -> &'static str {
    match decide(
        targets,
        &Guard {
            cgroup_root: "/ffrtmp".into(),
            ..Default::default()
        },
        f,
    ) {
        Decision::Govern(_) => "govern",
        Decision::Defer { .. } => "defer",
        Decision::Skip(Skip::Filtered { .. }) => "filtered",
        Decision::Skip(Skip::TooOld { .. }) => "too-old",
        Decision::Skip(_) => "skip",
    }
}

#[test]
fn filter_table() {
    let base = facts(10, b"ffmpeg", Some("ffmpeg"), None); // uid 1000, cwd /srv/streams, parent bash, age 60s
    let dirs = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
    let user = |n: &str, uid: Option<u32>| UserRef {
        name: n.into(),
        uid,
    };
    let cases: Vec<(&str, Filters, &str)> = vec![
        ("no filters", Filters::default(), "govern"),
        (
            "allowed uid",
            Filters {
                allowed_uids: vec![1000],
                ..Default::default()
            },
            "govern",
        ),
        (
            "not allowed uid",
            Filters {
                allowed_uids: vec![0],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "blocked uid",
            Filters {
                blocked_uids: vec![1000],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "block wins over allow",
            Filters {
                allowed_uids: vec![1000],
                blocked_uids: vec![1000],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "allowed user",
            Filters {
                allowed_users: vec![user("alice", Some(1000))],
                ..Default::default()
            },
            "govern",
        ),
        (
            "unknown allowed user",
            Filters {
                allowed_users: vec![user("bob", None)],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "blocked user",
            Filters {
                blocked_users: vec![user("alice", Some(1000))],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "allowed parent",
            Filters {
                allowed_parents: vec!["bash".into()],
                ..Default::default()
            },
            "govern",
        ),
        (
            "other parent",
            Filters {
                allowed_parents: vec!["nginx".into()],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "blocked parent",
            Filters {
                blocked_parents: vec!["bash".into()],
                ..Default::default()
            },
            "filtered",
        ),
        (
            "allowed dir prefix",
            Filters {
                allowed_dirs: dirs(&["/srv"]),
                ..Default::default()
            },
            "govern",
        ),
        (
            "allowed dir exact",
            Filters {
                allowed_dirs: dirs(&["/srv/streams"]),
                ..Default::default()
            },
            "govern",
        ),
        (
            "allowed dir is not a string prefix",
            Filters {
                allowed_dirs: dirs(&["/srv/stream"]),
                ..Default::default()
            },
            "filtered",
        ),
        (
            "blocked dir covers children",
            Filters {
                blocked_dirs: dirs(&["/srv"]),
                ..Default::default()
            },
            "filtered",
        ),
        (
            "blocked dir is not a string prefix",
            Filters {
                blocked_dirs: dirs(&["/sr"]),
                ..Default::default()
            },
            "govern",
        ),
        (
            "blocked dir wins",
            Filters {
                allowed_dirs: dirs(&["/srv"]),
                blocked_dirs: dirs(&["/srv/streams"]),
                ..Default::default()
            },
            "filtered",
        ),
        (
            "root dir blocks all",
            Filters {
                blocked_dirs: dirs(&["/"]),
                ..Default::default()
            },
            "filtered",
        ),
        (
            "old enough",
            Filters {
                min_runtime: Some(Duration::from_secs(5)),
                ..Default::default()
            },
            "govern",
        ),
        (
            "too young",
            Filters {
                min_runtime: Some(Duration::from_secs(120)),
                ..Default::default()
            },
            "defer",
        ),
        (
            "too old",
            Filters {
                max_runtime: Some(Duration::from_secs(30)),
                ..Default::default()
            },
            "too-old",
        ),
        (
            "within max",
            Filters {
                max_runtime: Some(Duration::from_secs(3600)),
                ..Default::default()
            },
            "govern",
        ),
    ];
    for (name, f, want) in cases {
        assert_eq!(verdict(&with_filters(f), &base), want, "{name}");
    }
}

#[test]
fn unknown_facts_fail_allow_lists_but_pass_block_lists() {
    let mut f = facts(10, b"ffmpeg", None, None);
    f.uid = None;
    f.cwd = None;
    f.parent = None;
    assert_eq!(
        verdict(
            &with_filters(Filters {
                allowed_uids: vec![1000],
                ..Default::default()
            }),
            &f
        ),
        "filtered"
    );
    assert_eq!(
        verdict(
            &with_filters(Filters {
                allowed_dirs: vec!["/".into()],
                ..Default::default()
            }),
            &f
        ),
        "filtered"
    );
    assert_eq!(
        verdict(
            &with_filters(Filters {
                blocked_uids: vec![0],
                blocked_dirs: vec!["/tmp".into()],
                blocked_parents: vec!["sh".into()],
                ..Default::default()
            }),
            &f
        ),
        "govern"
    );
}

#[test]
fn defer_reports_the_remaining_time() {
    let f = facts(10, b"ffmpeg", None, None); // age 60s
    let t = with_filters(Filters {
        min_runtime: Some(Duration::from_secs(90)),
        ..Default::default()
    });
    match decide(&t, &Guard::default(), &f) {
        Decision::Defer { remaining, .. } => assert_eq!(remaining, Duration::from_secs(30)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_needed_facts_are_read() {
    let mut t = vec![target("ffmpeg"), target("very-long-transcoder-name")];
    let n = needs(&t, b"ffmpeg");
    assert!(!n.names && !n.cwd && !n.uid && !n.parent, "{n:?}");
    assert!(
        needs(&t, b"very-long-trans").names,
        "a cut comm needs argv[0]/exe"
    );
    assert!(
        needs(&t, b"enc").names,
        "another comm may still be a target by argv[0]/exe"
    );
    t[1].filters.blocked_dirs = vec!["/tmp".into()];
    t[0].filters.allowed_users = vec![UserRef {
        name: "a".into(),
        uid: Some(1),
    }];
    let n = needs(&t, b"ffmpeg");
    assert!(n.cwd && n.uid && !n.parent, "{n:?}");
}
