//! Services left whole (`services: limit_unit`), as a normal user: the real `Daemon` with a
//! fake cgroup backend, a fixture /proc and a fake systemd bus (`logic_support`). A target
//! in a service is not moved; its limits go onto the unit, its unit's values from before
//! come back when its last target ends, and a reload limits the unit again.

mod logic_support;

use std::time::Duration;

use ffrtmp::placer::UnitLimits;
use logic_support::{wait_until, Harness, Proc, NONE};

const T: Duration = Duration::from_secs(5);
const UNIT: &str = "stream@a.service";
const IN_UNIT: &str = "/system.slice/stream@a.service";

fn limited(yaml: &str) -> String {
    format!(
        "target_commands: [ffmpeg]\ndefault_limits:\n  cpu_quota: 50\n  memory_limit: 64\n{yaml}"
    )
}

/// `p`, the last target in `UNIT`, exits: the unit's values go back to `before` (the test
/// fails, showing every write, if they are not back within 5 s).
fn exits_and_unit_is_put_back(h: &Harness, p: &mut Proc, before: UnitLimits) {
    h.exit(p);
    assert!(
        wait_until(T, || h.bus.unit(UNIT) == before),
        "{UNIT} not put back to {before:?} after PID {} exited: {:?}",
        p.pid,
        h.bus.writes()
    );
}

#[test]
fn a_target_in_a_service_stays_and_its_unit_is_limited_then_put_back() {
    let h = Harness::started(&limited(""));
    // An operator's own value: put back after the job.
    h.bus.set(
        UNIT,
        UnitLimits {
            tasks_max: 4915,
            ..NONE
        },
    );
    let mut p = h.exec("ffmpeg", IN_UNIT);
    assert!(
        wait_until(T, || h.bus.unit(UNIT).cpu_quota_per_sec_usec == 500_000),
        "the unit was not limited: {:?}",
        h.bus.writes()
    );
    let u = h.bus.unit(UNIT);
    assert_eq!(
        (u.memory_max, u.tasks_max),
        (64 << 20, 4915),
        "a limit the target does not set keeps the unit's own value"
    );
    assert!(
        h.bus.writes().iter().all(|(_, w)| w.tasks_max == 4915),
        "TasksMax was never touched"
    );
    assert_eq!(p.cgroup(), IN_UNIT, "moved out of its service");
    assert!(h.backend.moves().is_empty());
    let pid = p.pid.to_string();
    assert!(
        wait_until(T, || {
            let s = h.state();
            s["processes"][&pid]["job_id"] == UNIT
                && s["processes"][&pid]["cgroup"] == IN_UNIT
                && s["processes"][&pid]["limits"]
                    == serde_json::json!({"cpu_quota": 50, "memory_limit": 64})
                && s["units"][UNIT]["tasks_max"] == 4915
        }),
        "{}",
        h.state()
    );
    h.with_snapshot(|t| assert_eq!(t.tally.placements()["placed"], 1));
    // Its last target ends: the unit's values from before come back.
    let before = UnitLimits {
        tasks_max: 4915,
        ..NONE
    };
    exits_and_unit_is_put_back(&h, &mut p, before);
    assert!(
        wait_until(T, || h.state()["units"].is_null()),
        "{}",
        h.state()
    );
}

#[test]
fn a_unit_is_limited_once_for_all_its_targets_and_put_back_after_the_last() {
    let h = Harness::started(&limited(""));
    let mut a = h.exec("ffmpeg", IN_UNIT);
    let mut b = h.exec("ffmpeg", IN_UNIT);
    assert!(wait_until(T, || h.governed() == 2));
    assert!(wait_until(T, || h.bus.writes().len() == 1));
    h.exit(&mut a);
    assert!(wait_until(T, || h.governed() == 1));
    // A positive marker behind a restore chore, had the exit pushed one: the state file
    // written without the exited target (chores run in order, the write after it).
    let gone = a.pid.to_string();
    assert!(wait_until(T, || h.state()["processes"]
        .get(&gone)
        .is_none()));
    assert_eq!(
        h.bus.writes().len(),
        1,
        "put back while a target still runs in it"
    );
    h.exit(&mut b);
    assert!(wait_until(T, || h.bus.writes().len() == 2));
    assert_eq!(h.bus.unit(UNIT), NONE);
}

#[test]
fn a_reload_limits_the_unit_again_and_keeps_its_values_from_before() {
    let h = Harness::started(&limited(""));
    let mut p = h.exec("ffmpeg", IN_UNIT);
    assert!(wait_until(T, || h.bus.unit(UNIT).cpu_quota_per_sec_usec == 500_000));
    h.reload(&limited("").replace("cpu_quota: 50", "cpu_quota: 25"));
    assert!(
        wait_until(T, || h.bus.unit(UNIT).cpu_quota_per_sec_usec == 250_000),
        "{:?}",
        h.bus.writes()
    );
    let pid = p.pid.to_string();
    assert!(wait_until(T, || h.state()["processes"][&pid]["limits"]
        ["cpu_quota"]
        == 25));
    exits_and_unit_is_put_back(&h, &mut p, NONE);
}

#[test]
fn a_bus_that_fails_is_counted_at_each_attempt_and_the_unit_is_limited_when_it_is_back() {
    let h = Harness::started(&limited("reconcile_interval: 1s\n"));
    h.bus.down(true);
    let p = h.exec("ffmpeg", IN_UNIT);
    // Each scan tries again: three refusals are three passes.
    assert!(wait_until(Duration::from_secs(10), || h.bus.refused() >= 3));
    // Each attempt is a failed placement (an alert on them fires while the unit is unlimited).
    let failed = |h: &Harness| h.with_snapshot(|t| t.tally.placements()["failed"]);
    assert!(wait_until(T, || failed(&h) >= 3), "{}", failed(&h));
    assert!(h.bus.writes().is_empty());
    assert_eq!(
        p.cgroup(),
        IN_UNIT,
        "moved out of its service when the bus failed"
    );
    let refused = h.bus.down(false);
    assert!(
        wait_until(Duration::from_secs(10), || h
            .bus
            .unit(UNIT)
            .cpu_quota_per_sec_usec
            == 500_000),
        "not limited once the bus was back"
    );
    let pid = p.pid.to_string();
    assert!(wait_until(T, || h.state()["processes"][&pid]["limits"]
        ["cpu_quota"]
        == 50));
    h.with_snapshot(|t| {
        assert_eq!(t.tally.placements()["placed"], 1);
        assert_eq!(u64::from(refused), t.tally.placements()["failed"]);
    });
}

#[test]
fn a_limit_whose_reply_was_lost_is_put_back_to_the_values_from_before() {
    let h = Harness::started(&limited("reconcile_interval: 1s\n"));
    let own = UnitLimits {
        tasks_max: 4915,
        ..NONE
    };
    h.bus.set(UNIT, own);
    // The write goes through, its reply is lost (a timeout): the values read before it are
    // the unit's own, not what the next attempt reads.
    h.bus.down(true);
    h.bus.apply_refused(true);
    let mut p = h.exec("ffmpeg", IN_UNIT);
    assert!(wait_until(T, || h.bus.refused() >= 1));
    assert_eq!(h.bus.unit(UNIT).cpu_quota_per_sec_usec, 500_000);
    h.bus.down(false);
    let pid = p.pid.to_string();
    assert!(
        wait_until(Duration::from_secs(10), || h.state()["processes"][&pid]
            ["limits"]["cpu_quota"]
            == 50),
        "not limited again once the bus answered"
    );
    exits_and_unit_is_put_back(&h, &mut p, own);
}

#[test]
fn move_mode_sessions_and_unlisted_slices_are_placed_as_before() {
    let h = Harness::started(
        &limited(
            "service_slices: [streams.slice]\ncommands:\n  gst-launch-1.0:\n    services: move\n",
        )
        .replace("[ffmpeg]", "[ffmpeg, gst-launch-1.0]"),
    );
    // A listed slice: left whole.
    let _listed = h.exec("ffmpeg", "/streams.slice/edge.service");
    assert!(wait_until(T, || h
        .bus
        .unit("edge.service")
        .cpu_quota_per_sec_usec
        == 500_000));
    // A session's scope and a slice nobody listed: moved.
    for cg in [
        "/user.slice/user-1000.slice/session-1.scope",
        "/other.slice/x.service",
    ] {
        h.exec_placed("ffmpeg", cg);
    }
    // `services: move` for this command: moved out of its service.
    let _g = h.exec_placed("gst-launch-1.0", IN_UNIT);
    assert_eq!(h.bus.writes().len(), 1, "{:?}", h.bus.writes());
}
