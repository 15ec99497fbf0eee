//! Containers are not ours. A process in a PID namespace of its own, or in a cgroup that a
//! container manager made, lives under that manager's limits; moving it into a job cgroup
//! would take them away (a container with a 64 MiB memory limit would get the job's). Pure:
//! the cgroup paths and the namespace depth come from the facts.

use crate::process::ProcessFacts;

/// The container manager that owns a cgroup path, from the names each manager gives its
/// cgroups (systemd driver: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `kubepods*.slice`, `machine.slice` for
/// systemd-nspawn and libvirt; cgroupfs driver: `/docker/<id>`, `/kubepods/…`, `/lxc/<name>`,
/// `/lxc.payload.<name>`, `/machine/…`).
pub fn manager_of(path: &str) -> Option<&'static str> {
    // A pod's containers are Kubernetes' whatever runtime made them; otherwise the deepest
    // component that names a manager says whose it is (Podman under machine.slice).
    if path.split('/').any(|p| p.starts_with("kubepods")) {
        return Some("Kubernetes");
    }
    for part in path.split('/').filter(|p| !p.is_empty()).rev() {
        let scope = |prefix: &str| {
            part.strip_prefix(prefix).is_some_and(|rest| {
                rest.ends_with(".scope") || rest.ends_with(".service") || !rest.contains('.')
            })
        };
        let m = if part == "docker" || scope("docker-") {
            "Docker"
        } else if scope("cri-containerd-") || part == "containerd" && path.contains("/containerd/")
        {
            "containerd"
        } else if scope("crio-") || part.starts_with("crio-conmon-") {
            "CRI-O"
        } else if scope("libpod-") || part == "libpod_parent" || part.starts_with("libpod-conmon-")
        {
            "Podman"
        } else if part == "machine.slice"
            || part == "machine"
            || part.starts_with("systemd-nspawn@")
        {
            "systemd-machined (systemd-nspawn, libvirt)"
        } else if part == "lxc"
            || part.starts_with("lxc.payload.")
            || part.starts_with("lxc.monitor.")
        {
            "LXC"
        } else {
            continue;
        };
        return Some(m);
    }
    None
}

/// Why this process is in a container, if it is.
pub fn container_reason(facts: &ProcessFacts) -> Option<String> {
    if let Some(level) = facts.pidns_level.filter(|l| *l > 0) {
        return Some(format!(
            "it runs in a container (a PID namespace of its own, depth {level})"
        ));
    }
    facts.cgroups.iter().find_map(|c| {
        manager_of(&c.path).map(|m| format!("it runs in a container: {} belongs to {m}", c.path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_cgroups_by_manager() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/system.slice/docker-0123abcd.scope", Some("Docker")),
            ("/docker/0123abcd", Some("Docker")),
            ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab.scope", Some("Kubernetes")),
            ("/kubepods/besteffort/pod1/abc", Some("Kubernetes")),
            ("/system.slice/cri-containerd-ab12.scope", Some("containerd")),
            ("/machine.slice/libpod-ab12.scope/container", Some("Podman")),
            ("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-ab.scope", Some("Podman")),
            ("/system.slice/crio-ab12.scope", Some("CRI-O")),
            ("/machine.slice/systemd-nspawn@edge1.service/payload", Some("systemd-machined (systemd-nspawn, libvirt)")),
            ("/machine.slice/machine-edge1.scope", Some("systemd-machined (systemd-nspawn, libvirt)")),
            ("/lxc.payload.edge1", Some("LXC")),
            ("/lxc/edge1", Some("LXC")),
            // Not containers: services, sessions, our own trees, the test host's session.
            ("/system.slice/ffmpeg-worker.service", None),
            ("/system.slice/docker.service", None),
            ("/system.slice/containerd.service", None),
            ("/user.slice/user-0.slice/session-3.scope", None),
            ("/system.slice/ffrtmp-governed.scope/governed/auto-ffmpeg-7", None),
            ("/ffrtmp/auto-ffmpeg-7", None),
            ("/process_api/bdfc54425be4e361710e2cf1e4e2cd8f", None),
            ("/", None),
            ("/dockerfile-builds/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(manager_of(path), *want, "{path}");
        }
    }
}
