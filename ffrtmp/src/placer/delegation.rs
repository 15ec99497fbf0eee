//! `cgroup_root: auto`: where job cgroups go, decided from where the daemon runs.
//!
//! - cgroup v1, or not in a delegated cgroup: the fixed `/ffrtmp`.
//! - A systemd service on cgroup v2: a delegated scope next to the service,
//!   `<slice>/ffrtmp-governed.scope`, with the daemon in its `supervisor` leaf and jobs in
//!   `governed/<job-id>`. Not the service's own cgroup: systemd 252 cannot start a new main
//!   process in a delegated service cgroup that has controllers enabled for children that
//!   still hold processes (EBUSY, `status=219/CGROUP`, measured in the VM tier), so a
//!   restart would fail while jobs run. The scope is created around the daemon itself by
//!   re-executing through `systemd-run --scope` (same PID: systemd keeps tracking it).
//! - Another delegated cgroup (a container's, marked with the `delegate` xattr): the
//!   daemon's own cgroup, with `supervisor` and `governed` beneath it.
//!
//! `decide` is pure; `inspect` and `join` touch the system.

use std::path::{Path, PathBuf};

/// Name of the scope unit holding the governed jobs under systemd.
pub const SCOPE_UNIT: &str = "ffrtmp-governed.scope";
/// Set in the environment of the re-executed daemon, so it never loops; its value is the
/// systemd service the daemon belongs to (its log entries keep naming it).
pub const REEXEC_ENV: &str = "FFRTMP_SCOPE_REEXEC";
pub const FIXED_ROOT: &str = crate::config::DEFAULT_CGROUP_ROOT;

/// What the daemon knows about where it runs.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub v2: bool,
    /// Our cgroup v2 path (`0::` line), e.g. `/system.slice/ffrtmp-watch.service`.
    pub own: Option<String>,
    /// Started by systemd (`INVOCATION_ID` is set).
    pub under_systemd: bool,
    /// The scope's cgroup already exists.
    pub scope_exists: bool,
    /// We are the re-executed process already.
    pub reexeced: bool,
    /// Our own cgroup carries systemd's `delegate` xattr.
    pub own_delegated: bool,
    /// Path of `systemd-run`, if installed.
    pub systemd_run: Option<PathBuf>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auto {
    Fixed {
        why: String,
    },
    /// Jobs in `<scope>/governed`, the daemon in `<scope>/supervisor`.
    Scope {
        scope: String,
        slice: String,
        create: bool,
    },
    /// Jobs in `<own>/governed`, the daemon in `<own>/supervisor`.
    Own {
        own: String,
    },
}

impl Auto {
    /// The cgroup root jobs go under.
    pub fn root(&self) -> String {
        match self {
            Auto::Fixed { .. } => FIXED_ROOT.to_string(),
            Auto::Scope { scope, .. } => format!("{scope}/governed"),
            Auto::Own { own } => format!("{}/governed", own.trim_end_matches('/')),
        }
    }

    /// The leaf the daemon moves into, if any.
    pub fn supervisor(&self) -> Option<String> {
        match self {
            Auto::Fixed { .. } => None,
            Auto::Scope { scope, .. } => Some(format!("{scope}/supervisor")),
            Auto::Own { own } => Some(format!("{}/supervisor", own.trim_end_matches('/'))),
        }
    }
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn last(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or("")
}

/// Decide where jobs go.
pub fn decide(i: &Inputs) -> Auto {
    if !i.v2 {
        return Auto::Fixed {
            why: "the host uses cgroup v1".into(),
        };
    }
    let Some(own) = i.own.as_deref().filter(|o| *o != "/") else {
        return Auto::Fixed {
            why: "ffrtmp runs in the root cgroup, not a delegated one".into(),
        };
    };
    // Already in (or re-executed into) the scope: its root or its supervisor leaf.
    let in_scope = if last(own) == SCOPE_UNIT {
        Some(own)
    } else if last(own) == "supervisor" && last(parent(own)) == SCOPE_UNIT {
        Some(parent(own))
    } else {
        None
    };
    if let Some(scope) = in_scope {
        return Auto::Scope {
            scope: scope.to_string(),
            slice: last(parent(scope)).to_string(),
            create: false,
        };
    }
    if i.under_systemd && last(own).ends_with(".service") {
        let slice_path = parent(own);
        let scope = format!("{}/{SCOPE_UNIT}", slice_path.trim_end_matches('/'));
        let slice = if slice_path == "/" {
            "-.slice".to_string()
        } else {
            last(slice_path).to_string()
        };
        if i.scope_exists {
            return Auto::Scope {
                scope,
                slice,
                create: false,
            };
        }
        if i.systemd_run.is_some() && !i.reexeced {
            return Auto::Scope {
                scope,
                slice,
                create: true,
            };
        }
        let why = if i.reexeced {
            "systemd-run did not place ffrtmp in its scope".to_string()
        } else {
            "systemd-run is not installed, so the delegated scope cannot be created".to_string()
        };
        return if i.own_delegated {
            Auto::Own {
                own: own.to_string(),
            }
        } else {
            Auto::Fixed { why }
        };
    }
    if i.own_delegated {
        return Auto::Own {
            own: own.to_string(),
        };
    }
    Auto::Fixed {
        why: format!("{own} is not a delegated cgroup"),
    }
}

/// Read the inputs from this process and the system.
pub fn inspect() -> Inputs {
    let v2 = cgroups_rs::hierarchies::is_cgroup2_unified_mode();
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            crate::process::parse_cgroup_file(&t)
                .into_iter()
                .find(|l| l.hierarchy == 0)
                .map(|l| l.path)
        });
    let dir = |p: &str| Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/'));
    let mut i = Inputs {
        v2,
        under_systemd: std::env::var_os("INVOCATION_ID").is_some(),
        reexeced: std::env::var_os(REEXEC_ENV).is_some(),
        systemd_run: ["/usr/bin/systemd-run", "/bin/systemd-run"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
        ..Default::default()
    };
    if let Some(o) = &own {
        i.own_delegated = has_delegate_xattr(&dir(o));
        let scope = format!("{}/{SCOPE_UNIT}", parent(o).trim_end_matches('/'));
        i.scope_exists = dir(&scope).is_dir();
    }
    i.own = own;
    i
}

fn has_delegate_xattr(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"].iter().any(|name| {
        let mut buf = [0u8; 8];
        rustix::fs::getxattr(dir, *name, &mut buf).is_ok_and(|n| n > 0 && buf[0] == b'1')
    })
}

/// `auto` for `ffrtmp run` and `ffrtmp attach`: the root the running (or last) daemon
/// published in the runtime directory, so the daemon recognises their jobs as already
/// placed; without one, the fixed root.
pub fn tools_root() -> String {
    super::registry::published_root(&super::registry::runtime_dir())
        .unwrap_or_else(|| FIXED_ROOT.to_string())
}

/// Move this process into the supervisor leaf (creating it) so the delegated cgroup above
/// can enable controllers for its children (no-internal-process rule). Other processes
/// found in the scope's root (a previous instance's leftovers) move along.
pub fn join(auto: &Auto) -> std::io::Result<()> {
    let Some(sup) = auto.supervisor() else {
        return Ok(());
    };
    let dir = |p: &str| Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/'));
    let sup_dir = dir(&sup);
    match std::fs::create_dir(&sup_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let top = dir(parent(&sup));
    let mut pids: Vec<String> = std::fs::read_to_string(top.join("cgroup.procs"))?
        .lines()
        .map(str::to_string)
        .collect();
    pids.push(std::process::id().to_string());
    pids.sort();
    pids.dedup();
    for p in pids {
        match std::fs::write(sup_dir.join("cgroup.procs"), &p) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// In a private cgroup namespace (a Kubernetes pod with the host's PID namespace: kubelet
/// and containerd give every container one on cgroup v2, and a pod cannot ask for the
/// host's), `/proc/PID/cgroup` of the host's processes reads relative to the pod's cgroup
/// and cgroup paths do not mean what they say. Join PID 1's cgroup namespace then (needs
/// CAP_SYS_ADMIN). `Ok(false)`: already in it (or PID 1 is our own init, as in LXC).
pub fn join_init_cgroup_namespace() -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let (Ok(ours), Ok(init)) = (ino("/proc/self/ns/cgroup"), ino("/proc/1/ns/cgroup")) else {
        return Ok(false); // no cgroup namespaces, or PID 1's are hidden from us
    };
    if ours == init {
        return Ok(false);
    }
    let f = std::fs::File::open("/proc/1/ns/cgroup")
        .map_err(|e| format!("cannot open /proc/1/ns/cgroup: {e}"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::ControlGroup),
    )
    .map_err(|e| format!("setns(CLONE_NEWCGROUP): {e}"))?;
    Ok(true)
}

/// The command line that re-executes this daemon inside a new delegated scope.
pub fn reexec_command(
    systemd_run: &Path,
    slice: &str,
    exe: &Path,
    args: &[std::ffi::OsString],
) -> std::process::Command {
    let mut c = std::process::Command::new(systemd_run);
    c.args(["--scope", "--quiet", "--collect"])
        .arg(format!("--unit={SCOPE_UNIT}"))
        .arg(format!("--slice={slice}"))
        .args(["-p", "Delegate=yes", "--"])
        .arg(exe)
        .args(args)
        .env(REEXEC_ENV, service_unit().unwrap_or_default());
    c
}

/// The systemd service this daemon runs as: its own cgroup's name before it moves into the
/// scope, or what the re-executed process was told. Logs carry it as OBJECT_SYSTEMD_UNIT so
/// `journalctl -u <service>` still shows them after the move.
pub fn service_unit() -> Option<String> {
    if let Some(v) = std::env::var(REEXEC_ENV)
        .ok()
        .filter(|v| v.ends_with(".service"))
    {
        return Some(v);
    }
    std::env::var_os("INVOCATION_ID")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = crate::process::parse_cgroup_file(&own)
        .into_iter()
        .find(|l| l.hierarchy == 0)?
        .path;
    let name = last(&path);
    name.ends_with(".service").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Inputs {
        Inputs {
            v2: true,
            own: Some("/system.slice/ffrtmp-watch.service".into()),
            under_systemd: true,
            systemd_run: Some("/usr/bin/systemd-run".into()),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let scope = "/system.slice/ffrtmp-governed.scope".to_string();
        let slice = "system.slice".to_string();
        assert_eq!(
            decide(&base()),
            Auto::Scope {
                scope: scope.clone(),
                slice: slice.clone(),
                create: true
            }
        );
        assert_eq!(
            decide(&Inputs {
                scope_exists: true,
                ..base()
            }),
            Auto::Scope {
                scope: scope.clone(),
                slice: slice.clone(),
                create: false
            }
        );
        // After the re-exec we are in the scope itself; after joining, in its supervisor.
        for own in [
            "/system.slice/ffrtmp-governed.scope",
            "/system.slice/ffrtmp-governed.scope/supervisor",
        ] {
            let d = decide(&Inputs {
                own: Some(own.into()),
                reexeced: true,
                ..base()
            });
            assert_eq!(
                d,
                Auto::Scope {
                    scope: scope.clone(),
                    slice: slice.clone(),
                    create: false
                },
                "{own}"
            );
            assert_eq!(d.root(), "/system.slice/ffrtmp-governed.scope/governed");
            assert_eq!(
                d.supervisor().unwrap(),
                "/system.slice/ffrtmp-governed.scope/supervisor"
            );
        }
        // The re-exec did not land in the scope: never loop.
        assert!(matches!(
            decide(&Inputs {
                reexeced: true,
                ..base()
            }),
            Auto::Fixed { .. }
        ));
        assert!(matches!(
            decide(&Inputs {
                systemd_run: None,
                ..base()
            }),
            Auto::Fixed { .. }
        ));
        assert_eq!(
            decide(&Inputs {
                systemd_run: None,
                own_delegated: true,
                ..base()
            }),
            Auto::Own {
                own: "/system.slice/ffrtmp-watch.service".into()
            }
        );
        // Not started by systemd: a container's delegated cgroup, or nothing.
        let container = Inputs {
            under_systemd: false,
            own: Some("/lxc/edge1".into()),
            own_delegated: true,
            ..base()
        };
        let d = decide(&container);
        assert_eq!(d.root(), "/lxc/edge1/governed");
        assert_eq!(d.supervisor().unwrap(), "/lxc/edge1/supervisor");
        let shell = Inputs {
            under_systemd: false,
            own: Some("/user.slice/user-0.slice/session-1.scope".into()),
            ..base()
        };
        assert_eq!(decide(&shell).root(), "/ffrtmp");
        assert_eq!(
            decide(&Inputs {
                v2: false,
                ..base()
            })
            .root(),
            "/ffrtmp"
        );
        assert_eq!(
            decide(&Inputs {
                own: Some("/".into()),
                ..base()
            })
            .root(),
            "/ffrtmp"
        );
        // Nested slices keep the service's own slice.
        let nested = Inputs {
            own: Some("/edge.slice/edge-media.slice/ffrtmp-watch.service".into()),
            ..base()
        };
        assert_eq!(
            decide(&nested),
            Auto::Scope {
                scope: "/edge.slice/edge-media.slice/ffrtmp-governed.scope".into(),
                slice: "edge-media.slice".into(),
                create: true
            }
        );
    }

    #[test]
    fn reexec_keeps_the_arguments() {
        let c = reexec_command(
            Path::new("/usr/bin/systemd-run"),
            "system.slice",
            Path::new("/usr/local/bin/ffrtmp"),
            &["watch".into(), "--config".into(), "/etc/x.yaml".into()],
        );
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--scope",
                "--quiet",
                "--collect",
                "--unit=ffrtmp-governed.scope",
                "--slice=system.slice",
                "-p",
                "Delegate=yes",
                "--",
                "/usr/local/bin/ffrtmp",
                "watch",
                "--config",
                "/etc/x.yaml"
            ]
        );
        assert!(
            c.get_envs().any(|(k, v)| k == REEXEC_ENV && v.is_some()),
            "marks the re-executed process"
        );
    }
}
