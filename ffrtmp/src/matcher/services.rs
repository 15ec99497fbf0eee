//! Services are left whole. A process whose cgroup is a systemd service's (a `.service`
//! unit under `system.slice`, or under a slice `service_slices` lists) belongs to that
//! unit: `systemctl stop` ends what is in the unit's cgroup, so a transcoder moved out of
//! it would outlive its service. Pure: the paths come from `/proc/PID/cgroup`.

use crate::process::CgroupLine;

/// The systemd service a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    /// `stream@a.service`.
    pub name: String,
    /// The unit's cgroup (`/system.slice/stream@a.service`), the process's own or an
    /// ancestor of it (a unit with `Delegate=yes` may make cgroups of its own inside).
    pub cgroup: String,
}

/// The service of a process, from the cgroup systemd tracks it in (the unified line on
/// cgroup v2 and hybrid hosts, `name=systemd` on legacy ones). `None` outside a service
/// of one of `slices`: a session scope, a container's scope, `init.scope`, a cgroup
/// under the root of ffrtmp or another tool.
pub fn service_of(lines: &[CgroupLine], slices: &[String]) -> Option<ServiceUnit> {
    let systemd = lines
        .iter()
        .find(|l| l.controllers.iter().any(|c| c == "name=systemd"))
        .or_else(|| lines.iter().find(|l| l.hierarchy == 0))?;
    let mut cgroup = String::new();
    let mut in_slice = false;
    for part in systemd.path.split('/').filter(|p| !p.is_empty()) {
        cgroup.push('/');
        cgroup.push_str(part);
        if part.ends_with(".slice") {
            in_slice |= slices.iter().any(|s| s == part);
            continue;
        }
        // The first component that is not a slice is the unit: a service of a listed
        // slice, or something else (a scope, a cgroup of ffrtmp's own).
        return (in_slice && part.ends_with(".service")).then(|| ServiceUnit {
            name: part.to_string(),
            cgroup,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(path: &str) -> Vec<CgroupLine> {
        vec![CgroupLine {
            hierarchy: 0,
            controllers: Vec::new(),
            path: path.into(),
        }]
    }

    #[test]
    fn a_service_is_found_in_its_slice_and_nothing_else_is() {
        let slices = ["system.slice".to_string(), "streams.slice".to_string()];
        let unit = |p: &str| service_of(&v2(p), &slices).map(|u| (u.name, u.cgroup));
        assert_eq!(
            unit("/system.slice/stream@a.service"),
            Some((
                "stream@a.service".into(),
                "/system.slice/stream@a.service".into()
            ))
        );
        // Its own sub-cgroup (Delegate=yes): still the unit's.
        assert_eq!(
            unit("/system.slice/enc.service/worker"),
            Some(("enc.service".into(), "/system.slice/enc.service".into()))
        );
        // A slice listed below another slice.
        assert_eq!(
            unit("/edge.slice/streams.slice/x.service").map(|u| u.0),
            Some("x.service".into())
        );
        for not in [
            "/user.slice/user-1000.slice/session-1.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/a.service",
            "/system.slice/docker-0123.scope",
            "/init.scope",
            "/ffrtmp/auto-ffmpeg-42",
            "/",
            "/other.slice/x.service",
        ] {
            assert_eq!(unit(not), None, "{not}");
        }
    }

    #[test]
    fn legacy_hosts_are_read_from_the_systemd_hierarchy() {
        let lines = vec![
            CgroupLine {
                hierarchy: 4,
                controllers: vec!["cpu".into(), "cpuacct".into()],
                path: "/".into(),
            },
            CgroupLine {
                hierarchy: 1,
                controllers: vec!["name=systemd".into()],
                path: "/system.slice/stream@b.service".into(),
            },
        ];
        let u = service_of(&lines, &["system.slice".into()]).unwrap();
        assert_eq!(u.name, "stream@b.service");
    }
}
