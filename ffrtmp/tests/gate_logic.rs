//! The exec gate's decision paths, as a normal user (see `daemon_logic.rs`): a held exec
//! reaches the real daemon through the channel source as the gate hands it on, with an
//! answerer that records each answer and how many moves the fake backend had made by then.

mod logic_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ffrtmp::process::gated::{Answer, Responder};
use logic_support::{wait_until, FakeBackend, Harness, Start};

const T: Duration = Duration::from_secs(5);

/// What a process's exec does once it is answered (its fixture /proc changes).
type Exec = Box<dyn FnOnce() + Send>;

/// Answers by event fd (the test uses the PID), with the moves made when each came; an
/// answered exec then goes on as the test said (`then`), as the kernel's would.
struct Answers {
    backend: FakeBackend,
    got: Mutex<Vec<(i32, Answer, usize)>>,
    then: Mutex<Vec<(i32, Exec)>>,
}

impl Responder for Answers {
    fn allow(&self, fd: i32, answer: Answer, _held_ns: u64) {
        let moves = self.backend.moves().len();
        self.got.lock().unwrap().push((fd, answer, moves));
        let mut then = self.then.lock().unwrap();
        if let Some(i) = then.iter().position(|(f, _)| *f == fd) {
            (then.remove(i).1)();
        }
    }
}

impl Answers {
    /// When `pid`'s held exec is answered, `exec` runs.
    fn then(&self, pid: u32, exec: impl FnOnce() + Send + 'static) {
        self.then.lock().unwrap().push((pid as i32, Box::new(exec)));
    }

    fn of(&self, pid: u32) -> Vec<(Answer, usize)> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(fd, _, _)| *fd == pid as i32)
            .map(|(_, a, m)| (*a, *m))
            .collect()
    }
}

/// The daemon with ffmpeg its target, and a process in a session (its comm `bash`) whose
/// exec of ffmpeg the test holds.
fn ffmpeg_from_bash() -> (
    Harness,
    Arc<Answers>,
    Arc<dyn Responder>,
    logic_support::Proc,
) {
    let h = Harness::started("target_commands: [ffmpeg]\n");
    let (a, r) = answers(&h);
    let p = h.spawn("bash", "/user.slice/session-1.scope", 0);
    (h, a, r, p)
}

fn answers(h: &Harness) -> (Arc<Answers>, Arc<dyn Responder>) {
    let a = Arc::new(Answers {
        backend: h.backend.clone(),
        got: Mutex::default(),
        then: Mutex::default(),
    });
    let r: Arc<dyn Responder> = a.clone();
    (a, r)
}

/// A held exec still shows its parent's image (here `bash`): the gate's marked binary
/// names the target, the process is placed in that target's job, and only then is its
/// exec let go — once, and never again for the exec event that follows.
#[test]
fn a_held_exec_is_placed_as_its_binary_and_answered_after_the_move() {
    let (h, a, r, p) = ffmpeg_from_bash();
    a.then(p.pid, p.exec_of("ffmpeg"));
    h.send(h.gated_notice(&p, "ffmpeg", &r));
    h.assert_placed(&p, &Harness::job(&p).replace("bash", "ffmpeg"));
    assert!(wait_until(T, || !a.of(p.pid).is_empty()), "never answered");
    assert_eq!(
        a.of(p.pid),
        vec![(Answer::Placed, 1)],
        "answered after its one move"
    );
    // Looked at again after its exec: it went through, nothing moves.
    assert!(wait_until(T, || checked(&h) == 1), "not looked at again");
    // The exec event that follows the gated exec finds it governed: no second move.
    h.send(h.notice(&p));
    let marker = h.marker();
    h.assert_placed(&marker, &Harness::job(&marker));
    assert_eq!(h.moves_besides(&marker).len(), 1, "{:?}", h.backend.moves());
    assert!(wait_until(T, || h.with_snapshot(|s| s.jobs.live.len()) == 2));
    let exe = || h.state()["processes"][p.pid.to_string()]["exe"].clone();
    assert!(
        wait_until(T, || exe() == serde_json::json!("/usr/bin/ffmpeg")),
        "the record names the binary the exec was held at, not the old image: {}",
        h.state()
    );
}

/// Every decision not to place lets the held exec go at once: in a container, filtered,
/// deferred by min_runtime, and a dry run.
#[test]
fn every_decision_not_to_place_answers_a_held_exec() {
    let h = Harness::started("target_commands: [ffmpeg, x264, x265]\ncommands:\n  x264:\n    filters:\n      min_runtime: 1h\n  x265:\n    filters:\n      allowed_uids: [4242]\n");
    let (a, r) = answers(&h);
    let contained = h.spawn("bash", "/system.slice/docker-0123.scope", 1);
    let young = h.spawn("bash", "/", 0);
    let filtered = h.spawn("bash", "/", 0);
    h.send(h.gated_notice(&contained, "ffmpeg", &r));
    h.send(h.gated_notice(&young, "x264", &r));
    h.send(h.gated_notice(&filtered, "x265", &r));
    for p in [&contained, &young, &filtered] {
        assert!(
            wait_until(T, || a.of(p.pid) == vec![(Answer::Unplaced, 0)]),
            "PID {}: {:?}",
            p.pid,
            a.of(p.pid)
        );
    }
    assert!(h.backend.moves().is_empty(), "{:?}", h.backend.moves());

    let h = Harness::new().start(Start {
        dry_run: true,
        ..Default::default()
    });
    let (a, r) = answers(&h);
    let p = h.spawn("bash", "/", 0);
    h.send(h.gated_notice(&p, "ffmpeg", &r));
    assert!(wait_until(T, || a.of(p.pid) == vec![(Answer::Unplaced, 0)]));
    assert!(h.backend.moves().is_empty());
}

/// A held exec that fails after its answer (its exe is still the old image a moment
/// later) is moved back where it came from, its job ends, and its next exec is decided
/// afresh.
#[test]
fn a_held_exec_that_fails_is_moved_back() {
    let (h, a, r, p) = ffmpeg_from_bash();
    h.send(h.gated_notice(&p, "ffmpeg", &r));
    let job = Harness::job(&p).replace("bash", "ffmpeg");
    h.assert_placed(&p, &job);
    assert!(wait_until(T, || a.of(p.pid) == vec![(Answer::Placed, 1)]));
    assert!(wait_until(T, || checked(&h) == 1), "not looked at again");
    let home = |m: &&logic_support::Move| m.cgroup == "/user.slice/session-1.scope";
    assert!(
        wait_until(T, || h.backend.moves().iter().filter(home).count() == 1),
        "not moved back: {:?}",
        h.backend.moves()
    );
    assert!(
        wait_until(T, || h.with_snapshot(|s| s.jobs.live.is_empty())),
        "its job did not end"
    );
    // Its next exec of the binary is held and placed again.
    a.then(p.pid, p.exec_of("ffmpeg"));
    h.send(h.gated_notice(&p, "ffmpeg", &r));
    assert!(
        wait_until(T, || h
            .backend
            .moves()
            .iter()
            .filter(|m| m.cgroup == job)
            .count()
            == 2),
        "not placed again at its next exec: {:?}",
        h.backend.moves()
    );
}

/// A script target's exec goes through with its interpreter as the exe: the kernel names
/// the process after the script, so it stays in its job; so does a process that exec'd
/// another binary right after (its comm changed too).
#[test]
fn a_held_exec_that_went_through_to_another_binary_stays() {
    let (h, a, r, p) = ffmpeg_from_bash();
    let interpreter = h.proc_root.join("interpreter");
    std::fs::write(&interpreter, "").unwrap();
    a.then(p.pid, p.exec_to("ffmpeg", interpreter));
    h.send(h.gated_notice(&p, "ffmpeg", &r));
    h.assert_placed(&p, &Harness::job(&p).replace("bash", "ffmpeg"));
    assert!(wait_until(T, || a.of(p.pid) == vec![(Answer::Placed, 1)]));
    assert!(wait_until(T, || checked(&h) == 1), "not looked at again");
    assert_eq!(h.backend.moves().len(), 1, "{:?}", h.backend.moves());
    assert!(h.governs(p.pid), "its job ended");
}

/// Processes placed at the gate the daemon has looked at again.
fn checked(h: &Harness) -> u64 {
    h.with_snapshot(|s| s.tally.get(ffrtmp::record::tally::Count::GateExecsChecked))
}
