//! The safety net: activation and health failures roll back to the previous system, the
//! profile (boot default) never moves to an unverified system, bad commits are not
//! retried, hangs end within their deadlines, and a failed rollback is loud and retried.

use std::path::Path;
use std::time::Duration;

use crate::support::{assert_no_process, base, nix_available, Harness, Run};

/// `run --once` exits `code` within `limit`: a hung child was stopped at its deadline.
fn run_within(h: &Harness, code: i32, limit: Duration) -> Run {
    let run = h.run_once();
    run.expect(code);
    assert!(run.elapsed < limit, "took {:?}", run.elapsed);
    run
}

/// The status's `last_run.<field>` says `needle`.
fn assert_last_run_says(s: &serde_json::Value, field: &str, needle: &str) {
    let text = s["last_run"][field].as_str().unwrap_or_default();
    assert!(
        text.contains(needle),
        "last_run.{field} lacks {needle:?}: {s}"
    );
}

/// After a failed deployment: the previous system is live and is the boot default, the
/// activation log is exactly `new test, old test`, and the failure is recorded.
fn assert_rolled_back(h: &Harness, old: &Path, phase: &str) -> serde_json::Value {
    let new = h
        .stc_log()
        .first()
        .map(|(out, _)| out.clone())
        .expect("the new system was never activated");
    assert_eq!(
        h.stc_log(),
        [(new.clone(), "test".into()), (base(old), "test".into())],
        "activation sequence"
    );
    assert_eq!(
        h.current_system().as_deref(),
        Some(old),
        "current system must be the previous one"
    );
    assert_eq!(
        h.profile_system().as_deref(),
        Some(old),
        "the profile must never move"
    );
    assert_eq!(h.profile_generation(), Some(1));
    assert_eq!(
        h.boot_default().as_deref(),
        Some(&*old.display().to_string()),
        "boot default must stay"
    );
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "failed");
    assert_eq!(s["last_run"]["phase"], phase);
    assert_eq!(s["last_run"]["rolled_back"], true);
    assert!(s["bad_commit"]["commit"].is_string());
    s
}

fn bad_commit(h: &mut Harness, edit: impl FnOnce(&mut crate::support::Host)) -> String {
    let host = h.host("pi1");
    host.content = "next".into();
    edit(host);
    h.commit("next")
}

#[test]
fn activation_failure_rolls_back() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    bad_commit(&mut h, |x| x.mode = "exit:4".into());
    let run = h.run_once();
    run.expect(1);
    let s = assert_rolled_back(&h, &old, "activate");
    let error = s["last_run"]["error"].as_str().unwrap();
    assert!(
        error.contains("exit code 4 (some units failed to start)"),
        "{error}"
    );
}

#[test]
fn failed_command_check_rolls_back_and_the_bad_commit_is_built_once() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    let bad = bad_commit(&mut h, |x| x.healthy = false);
    h.run_once().expect(1);
    let s = assert_rolled_back(&h, &old, "health");
    assert_eq!(s["bad_commit"]["commit"], bad.as_str());
    assert!(
        s["last_run"]["failed_check"]
            .as_str()
            .unwrap()
            .starts_with("marker: exit status: 1"),
        "{s}"
    );

    let builds = h.nix_builds();
    for _ in 0..5 {
        h.run_once().expect(0);
    }
    assert_eq!(h.nix_builds(), builds, "a bad commit was built again");
    assert_eq!(h.stc_log().len(), 2, "a bad commit was activated again");
    let human = h.agent(&["status"]).stdout();
    assert!(
        human.contains("bad commit:") && human.contains("homelab-agent retry"),
        "{human}"
    );

    // The next good commit deploys.
    h.host("pi1").healthy = true;
    h.host("pi1").content = "fixed".into();
    h.commit("fix");
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(2));
    assert_eq!(h.status()["last_run"]["outcome"], "deployed");
}

#[test]
fn failed_tcp_check_rolls_back_and_a_listening_port_passes() {
    if !nix_available() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = Harness::new();
    h.checks = Some(format!(
        "[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:{open}\"\ntimeout = \"1s\"\n"
    ));
    let (_, old) = h.bootstrap();
    h.checks = Some(format!(
        "[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:{closed}\"\ntimeout = \"1s\"\n"
    ));
    bad_commit(&mut h, |_| {});
    h.run_once().expect(1);
    let s = assert_rolled_back(&h, &old, "health");
    assert_last_run_says(
        &s,
        "failed_check",
        &format!("cannot connect to 127.0.0.1:{closed}"),
    );
}

#[test]
fn hanging_command_check_ends_within_its_deadline() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.checks = Some("[[health.checks]]\ntype = \"command\"\ncommand = [\"/bin/sleep\", \"641\"]\ntimeout = \"1s\"\n".into());
    bad_commit(&mut h, |_| {});
    run_within(&h, 1, Duration::from_secs(15));
    let s = assert_rolled_back(&h, &old, "health");
    assert_last_run_says(&s, "failed_check", "no answer within 1s");
    assert_no_process("sleep 641", "the hung check");
}

#[test]
fn missing_check_binary_is_reported_as_could_not_run() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.checks = Some(
        "[[health.checks]]\ntype = \"command\"\ncommand = [\"/nonexistent/healthcheck\"]\n".into(),
    );
    bad_commit(&mut h, |_| {});
    h.run_once().expect(1);
    let s = assert_rolled_back(&h, &old, "health");
    let error = s["last_run"]["error"].as_str().unwrap();
    assert!(
        error.contains("/nonexistent/healthcheck not found") && error.contains("could not run"),
        "{error}"
    );
}

#[test]
fn activation_hang_is_stopped_and_rolled_back() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.activation_timeout = "2s".into();
    bad_commit(&mut h, |x| x.mode = "sleep:653".into());
    run_within(&h, 1, Duration::from_secs(20));
    let s = assert_rolled_back(&h, &old, "activate");
    assert_last_run_says(&s, "error", "timed out after 2s");
    assert_no_process("sleep 653", "the hung activation");
}

#[test]
fn systemd_check_uses_the_configured_systemctl() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let units = h.path("units");
    std::fs::create_dir_all(&units).unwrap();
    let shim = h.path("systemctl");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n[ \"$1\" = is-active ] || exit 64\nshift; [ \"$1\" = -- ] && shift\nrc=0\nfor u; do s=$(cat {}/$u 2>/dev/null || echo inactive); echo $s; [ \"$s\" = active ] || rc=3; done\nexit $rc\n",
            units.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    h.checks = Some(
        "[[health.checks]]\ntype = \"systemd\"\nunits = [\"sshd.service\", \"web.service\"]\n"
            .into(),
    );
    std::fs::write(units.join("sshd.service"), "active").unwrap();
    std::fs::write(units.join("web.service"), "active").unwrap();
    h.systemctl = Some(shim.clone());
    h.host("pi1").content = "base".into();
    h.commit("base");
    h.run_once().expect(0);
    let old = h.current_system().unwrap();
    h.clear_stc_log();

    std::fs::write(units.join("web.service"), "failed").unwrap();
    bad_commit(&mut h, |_| {});
    h.run_once().expect(1);
    let s = assert_rolled_back(&h, &old, "health");
    assert_last_run_says(&s, "failed_check", "web.service is failed");

    let check = h.agent(&["check"]);
    check.expect(1);
    assert!(
        check.stdout().contains("UNHEALTHY") && check.stdout().contains("web.service is failed"),
        "{}",
        check.stdout()
    );
    std::fs::write(units.join("web.service"), "active").unwrap();
    let check = h.agent(&["check"]);
    check.expect(0);
    assert!(
        check.stdout().contains("healthy")
            && check.stdout().contains("sshd.service, web.service active"),
        "{}",
        check.stdout()
    );
}

#[test]
fn remote_check_rolls_back_a_config_that_cuts_the_remote_off() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.checks = Some("[[health.checks]]\ntype = \"remote\"\ntimeout = \"5s\"\n".into());
    let (_, old) = h.bootstrap();
    // The "new configuration" breaks the way to the remote: the hook moves the repo away.
    let away = h.path("homelab.away");
    let hook = h.path("cut-remote.sh");
    std::fs::write(
        &hook,
        format!("/bin/mv {} {}\n", h.repo.display(), away.display()),
    )
    .unwrap();
    let new = bad_commit(&mut h, |_| {});
    let new_system_fault = |h: &Harness| h.fake.join("faults/all");
    std::fs::write(new_system_fault(&h), format!("hook:{}", hook.display())).unwrap();
    // The hook runs on every activation; the rollback (old test) must work without it.
    let run = h.run_once();
    std::fs::remove_file(new_system_fault(&h)).unwrap();
    run.expect(1);
    let s = h.status();
    assert_eq!(s["last_run"]["phase"], "health");
    assert_eq!(s["last_run"]["rolled_back"], true);
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    // The network comes back: polling works again and the bad commit stays skipped.
    std::fs::rename(&away, &h.repo).unwrap();
    h.run_once().expect(0);
    assert_eq!(h.status()["last_run"]["outcome"], "skipped");
    assert_eq!(h.status()["bad_commit"]["commit"], new.as_str());
}

#[test]
fn failed_rollback_is_loud_and_retried() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    // The old system's activation fails too (at run time), then recovers.
    std::fs::write(h.fake.join("faults").join(base(&old)), "exit:1").unwrap();
    bad_commit(&mut h, |x| x.healthy = false);
    let run = h.run_once();
    run.expect(3);
    assert!(run.stderr().contains("ROLLBACK FAILED"), "{}", run.stderr());
    let s = h.status();
    assert_eq!(s["last_run"]["rolled_back"], false);
    assert!(
        s["needs_attention"]
            .as_str()
            .unwrap()
            .contains("rollback to"),
        "{s}"
    );
    assert_eq!(
        h.profile_generation(),
        Some(1),
        "the boot default must still be the old generation"
    );
    let human = h.agent(&["status"]).stdout();
    assert!(
        human.contains("ATTENTION") && human.contains("NOT rolled back"),
        "{human}"
    );

    // Still broken: the next run retries the rollback first, and says so.
    h.run_once().expect(3);
    std::fs::remove_file(h.fake.join("faults").join(base(&old))).unwrap();
    h.run_once().expect(0);
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    assert!(h.status()["needs_attention"].is_null());
    let history = h.history();
    assert!(
        history.iter().any(|r| r["outcome"] == "rolled-back"),
        "{history:?}"
    );
}

#[test]
fn manual_rollback_returns_to_the_previous_generation() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.host("pi1").content = "v2".into();
    h.commit("v2");
    h.run_once().expect(0);
    let new = h.current_system().unwrap();
    h.clear_stc_log();
    let run = h.agent(&["rollback"]);
    run.expect(0);
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    assert_eq!(h.profile_system().as_deref(), Some(old.as_path()));
    assert_eq!(
        h.stc_log(),
        [(base(&old), "test".into()), (base(&old), "boot".into())]
    );
    assert_eq!(h.history()[0]["outcome"], "rolled-back");
    // The agent does not redeploy the head it was rolled back from.
    h.run_once().expect(0);
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    // Rolling back again goes forward to the generation just left.
    h.agent(&["rollback"]).expect(0);
    assert_eq!(h.current_system(), Some(new));
}

#[test]
fn manual_rollback_without_a_previous_generation_says_so() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let run = h.agent(&["rollback"]);
    run.expect(1);
    assert!(
        run.stderr().contains("has no generation before 1"),
        "{}",
        run.stderr()
    );
}

#[test]
fn retry_forgets_a_bad_commit() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    bad_commit(&mut h, |x| x.healthy = false);
    h.run_once().expect(1);
    let builds = h.nix_builds();
    let out = h.agent(&["retry"]);
    out.expect(0);
    assert!(
        out.stdout().contains("forgot failed commits"),
        "{}",
        out.stdout()
    );
    h.run_once().expect(1);
    assert_eq!(
        h.nix_builds(),
        builds + 1,
        "retry should build the head again"
    );
}

#[test]
fn hanging_rollback_ends_within_its_deadline_and_is_reported() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.activation_timeout = "2s".into();
    std::fs::write(h.fake.join("faults").join(base(&old)), "sleep:659").unwrap();
    bad_commit(&mut h, |x| x.healthy = false);
    let run = run_within(&h, 3, Duration::from_secs(25));
    assert!(
        run.stderr().contains("timed out after 2s"),
        "{}",
        run.stderr()
    );
    assert_no_process("sleep 659", "the hung rollback");
    assert_eq!(
        h.profile_generation(),
        Some(1),
        "the boot default stays the verified generation"
    );
    assert!(h.status()["needs_attention"].is_string());
}
