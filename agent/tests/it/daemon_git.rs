//! The daemon (`run` without `--once`) makes its git calls in a child process
//! (`source-call`, source/child.rs): it must deploy exactly as `run --once` does, and a
//! failure must keep the kind and the words the child gave it.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::support::Harness;

pub(crate) fn start_daemon(h: &mut Harness) -> Child {
    h.extra = "[run]\ninterval = \"1h\"\njitter = \"0s\"\n".into();
    h.command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a finished cycle: last-poll.json rewritten after `since`, with next_poll.
pub(crate) fn cycle_after(last_poll: &Path, since: Option<SystemTime>) -> SystemTime {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = std::fs::metadata(last_poll).and_then(|m| m.modified()).ok();
        let done = std::fs::read_to_string(last_poll).is_ok_and(|t| t.contains("\"next_poll\":\""));
        if let (Some(m), true) = (m, done) {
            if Some(m) != since {
                return m;
            }
        }
        assert!(Instant::now() < deadline, "no cycle within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn stop(daemon: Child) -> String {
    let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_poll(h: &Harness) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(h.path("runtime/last-poll.json")).unwrap()).unwrap()
}

/// A new commit: the daemon's child polls and fetches it, the daemon builds and
/// deploys it, then polls again (SIGUSR1) and finds nothing new.
#[test]
fn a_daemon_deploys_a_new_commit_through_its_git_child() {
    if !crate::support::nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "second".into();
    let second = h.commit("second system");
    let daemon = start_daemon(&mut h);
    let file = h.path("runtime/last-poll.json");
    let first = cycle_after(&file, None);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    cycle_after(&file, Some(first));
    let err = stop(daemon);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], second.as_str(), "{err}");
    assert_eq!(s["deployed"]["generation"], 2, "{err}");
    assert_eq!(h.nix_builds(), 2, "{err}");
    assert!(err.contains("up to date at"), "the second poll: {err}");
}

/// The configuration file changes under a running daemon (a deployment wrote a new one;
/// the unit is not restarted for it): its git child keeps the daemon's own settings, so a
/// key this agent does not know (a newer agent's) does not fail every poll.
#[test]
fn the_git_child_keeps_the_daemons_configuration_when_the_file_changes() {
    if !crate::support::nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let daemon = start_daemon(&mut h);
    let file = h.path("runtime/last-poll.json");
    let first = cycle_after(&file, None);
    let config = h.config_path();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[future]\nkey = 1\n");
    std::fs::write(&config, text).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    cycle_after(&file, Some(first));
    let err = stop(daemon);
    let got = last_poll(&h);
    assert_eq!(got["outcome"], "up-to-date", "{got}\n{err}");
    assert!(!err.contains("future"), "{err}");
}

/// A failure in the child (a local repository that is not there: a configuration
/// error naming the path) is reported by the daemon exactly as by `run --once`.
#[test]
fn a_daemon_reports_a_git_failure_as_run_once_does() {
    let mut h = Harness::new();
    h.url = "file:///no/such/path".into();
    let once = h.run_once();
    once.expect(78);
    let expected = last_poll(&h);
    assert!(
        expected["error"]
            .as_str()
            .is_some_and(|e| e.contains("/no/such/path does not exist")),
        "{expected}"
    );
    std::fs::remove_file(h.path("runtime/last-poll.json")).unwrap();
    let daemon = start_daemon(&mut h);
    cycle_after(&h.path("runtime/last-poll.json"), None);
    let err = stop(daemon);
    let got = last_poll(&h);
    assert_eq!(got["outcome"], expected["outcome"], "{err}");
    assert_eq!(got["error"], expected["error"], "{err}");
    assert!(err.contains("/no/such/path does not exist"), "{err}");
    assert!(!err.contains("cannot reach"), "{err}");
}

/// Points `h` at a server that never answers (the kernel completes the handshake, nobody
/// ever accepts), with a 2 s `[source] timeout`; keep the listener for the test's length.
fn silent_server(h: &mut Harness) -> std::net::TcpListener {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    h.url = format!(
        "git://127.0.0.1:{}/homelab.git",
        hole.local_addr().unwrap().port()
    );
    h.source_extra = "timeout = \"2s\"\n".into();
    hole
}

/// Against a silent server the daemon's poll ends at `[source] timeout` (plus a little)
/// with the same timed-out failure as `run --once`, and leaves no git child behind.
#[test]
fn a_daemon_poll_of_a_silent_server_ends_at_its_deadline() {
    let mut h = Harness::new();
    let _hole = silent_server(&mut h);
    let started = Instant::now();
    let daemon = start_daemon(&mut h);
    cycle_after(&h.path("runtime/last-poll.json"), None);
    let took = started.elapsed();
    let err = stop(daemon);
    let got = last_poll(&h);
    // The hint is its own key (issue 22).
    assert!(
        got["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out after 2s"))
            && got["hint"]
                .as_str()
                .is_some_and(|h| h.contains("[source] timeout")),
        "{got}\n{err}"
    );
    assert!(
        took < Duration::from_secs(8),
        "a 2 s deadline took {took:?}"
    );
    let config = h.path("runtime/daemon-config.toml").display().to_string();
    crate::support::assert_no_process(&format!("{config} source-call"), "the git child");
}

/// A stop of the whole process group (systemd's SIGTERM to every process of the unit)
/// while the git child waits on the server: the child finishes its call (at its
/// deadline), the daemon records that, then stops; no "child died" failure.
#[test]
fn sigterm_to_the_group_lets_the_git_child_finish_its_call() {
    use std::os::unix::process::CommandExt;
    let mut h = Harness::new();
    let _hole = silent_server(&mut h);
    h.extra = "[run]\ninterval = \"1h\"\njitter = \"0s\"\n".into();
    let daemon = h
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let needle = format!(
        "{} source-call",
        h.path("runtime/daemon-config.toml").display()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::support::processes_matching(&needle).is_empty() {
        assert!(Instant::now() < deadline, "no git child within 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let group = nix::unistd::Pid::from_raw(daemon.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM).unwrap();
    // The child has a process group of its own (so its deadline can end all it started);
    // systemd's stop signals every process of the unit's cgroup, so it gets one too.
    for pid in pids_matching(&needle) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let out = daemon.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    let got = last_poll(&h);
    assert!(
        got["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out after 2s")),
        "{got}\n{err}"
    );
    crate::support::assert_no_process(&needle, "the git child");
}

fn pids_matching(needle: &str) -> Vec<nix::unistd::Pid> {
    crate::support::processes_matching(needle)
        .iter()
        .filter_map(|p| p.split(':').next()?.parse().ok())
        .map(nix::unistd::Pid::from_raw)
        .collect()
}

/// A git child stuck past its deadline (frozen here with SIGSTOP: neither its own
/// deadline nor SIGTERM can end it) is killed by the daemon at the child's deadline
/// plus the start-up allowance; the poll is recorded as timed out, the daemon goes on,
/// and no process is left behind. (That the kill takes what the child started along,
/// gpgv or ssh-keygen under the trust check, is source/child.rs's unit test with a
/// stand-in child: the real one starts nothing before the trust check.)
#[test]
fn a_stuck_git_child_is_killed_at_its_deadline() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::new();
    h.url = format!(
        "git://127.0.0.1:{}/homelab.git",
        hole.local_addr().unwrap().port()
    );
    h.source_extra = "timeout = \"1s\"\n".into();
    let started = Instant::now();
    let daemon = start_daemon(&mut h);
    let needle = format!(
        "{} source-call",
        h.path("runtime/daemon-config.toml").display()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let child = loop {
        if let Some(&pid) = pids_matching(&needle).first() {
            break pid;
        }
        assert!(Instant::now() < deadline, "no git child within 20 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGSTOP).unwrap();
    cycle_after(&h.path("runtime/last-poll.json"), None);
    let took = started.elapsed();
    // Killed, not merely left: its /proc entry is gone once the daemon reaped it.
    assert!(
        !Path::new(&format!("/proc/{child}")).exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| s
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))),
        "the stuck child {child} is still there"
    );
    let err = stop(daemon);
    let got = last_poll(&h);
    assert!(
        got["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out after 1s"))
            && got["hint"]
                .as_str()
                .is_some_and(|h| h.contains("[source] timeout")),
        "{got}\n{err}"
    );
    // 1 s, the child's grace (1 s) and start allowance (5 s), the kill's grace (3 s).
    assert!(
        took >= Duration::from_secs(7),
        "killed before its deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "a 1 s deadline took {took:?}"
    );
    crate::support::assert_no_process(&needle, "the git child");
}

/// The trust check (it reads the cache with libgit2) also runs in the child: a reset
/// branch is refused by the daemon as by `run --once`, with the floor it was held to.
#[test]
fn a_daemon_refuses_a_downgrade_through_its_git_child() {
    if !crate::support::nix_available() {
        return;
    }
    let mut h = Harness::new();
    let c1 = h.deploy("v1", "first");
    let c2 = h.deploy("v2", "second");
    crate::support::git(&h.repo, &["reset", "-q", "--hard", &c1]);
    let daemon = start_daemon(&mut h);
    cycle_after(&h.path("runtime/last-poll.json"), None);
    let err = stop(daemon);
    assert!(err.contains("is older than"), "{err}");
    let s = h.status();
    assert_eq!(s["refused"]["reason"], "downgrade", "{s:#}");
    assert_eq!(s["refused"]["commit"], c1.as_str(), "{s:#}");
    assert!(
        s["refused"]["expected"].as_str().unwrap().contains(&c2),
        "{s:#}"
    );
    assert_eq!(s["deployed"]["commit"], c2.as_str());
}

/// The testing branch through the daemon's git child: the child is told which branch
/// (`source-call --branch`), so the daemon tests the testing branch's head, not main's.
#[test]
fn a_daemon_tests_the_testing_branch_head_not_mains() {
    if !crate::support::nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.source_extra = "testing_branch = \"testing/{host}\"\n".into();
    h.bootstrap();
    crate::support::git(&h.repo, &["checkout", "-q", "-b", "testing/pi1"]);
    h.host("pi1").content = "on test".into();
    let t1 = h.commit("try something");
    crate::support::git(&h.repo, &["checkout", "-q", "main"]);
    let daemon = start_daemon(&mut h);
    cycle_after(&h.path("runtime/last-poll.json"), None);
    let err = stop(daemon);
    let s = h.status();
    assert_eq!(s["testing"]["commit"], t1.as_str(), "{s}\n{err}");
    assert_eq!(s["testing"]["outcome"], "tested", "{s}\n{err}");
    assert_eq!(
        s["deployed"]["generation"], 1,
        "a test became a generation: {s}"
    );
}

/// Map mode reads `machines.toml` through the Source door: in the daemon, its git child
/// (`source-call read`). The answer is the file's text, none for a file the commit does
/// not have, and a file over the limit is the repository's configuration error, with the
/// words `run --once` gives; a call missing its arguments says which.
#[test]
fn the_git_child_reads_a_file_of_a_commit_in_the_cache() {
    let h = Harness::new();
    let cache = h.path("state/cache.git");
    let repo = git2::Repository::init_bare(&cache).unwrap();
    let mut tree = repo.treebuilder(None).unwrap();
    let map = "serial-10000000abcdef01 = \"pi2\"\n";
    tree.insert(
        "machines.toml",
        repo.blob(map.as_bytes()).unwrap(),
        0o100644,
    )
    .unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.org").unwrap();
    let commit = repo
        .commit(None, &sig, &sig, "map", &tree, &[])
        .unwrap()
        .to_string();
    let cache = cache.display().to_string();
    let call = |extra: &[&str]| {
        let mut args = vec![
            "source-call",
            "read",
            "--cache",
            &cache,
            "--commit",
            &commit,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--timeout-ms", "10000"]);
        let run = h.agent(&args);
        run.expect(0);
        serde_json::from_str::<serde_json::Value>(run.stdout().trim()).unwrap()
    };
    let read = |file: &str, max: &str| call(&["--file", file, "--max-bytes", max]);
    assert_eq!(
        read("machines.toml", "65536"),
        serde_json::json!({"answer": "file", "text": map})
    );
    assert_eq!(
        read("other.toml", "65536"),
        serde_json::json!({"answer": "file", "text": null})
    );
    let big = read("machines.toml", "4");
    assert_eq!(big["answer"], "failed", "{big}");
    assert_eq!(big["kind"], "configuration", "{big}");
    assert_eq!(
        big["message"],
        format!(
            "machines.toml at {} is {} bytes: at most 4 are read",
            &commit[..8],
            map.len()
        ),
        "{big}"
    );
    assert!(
        big["hint"].as_str().is_some_and(|h| h.contains("identity")),
        "the hint, as its own key: {big}"
    );
    let missing = call(&["--file", "machines.toml"]);
    assert_eq!(
        missing,
        serde_json::json!({
            "answer": "failed",
            "kind": "environment",
            "message": "source-call read: no --commit, --file or --max-bytes (a bug)"
        })
    );
}
