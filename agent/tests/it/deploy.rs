//! Every outcome of the deploy cycle, with the real binary, git and nix.

use std::time::Duration;

use crate::support::{assert_no_process, base, nix_available, Harness};

#[test]
fn first_deploy_then_up_to_date() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let c1 = h.deploy("v1", "first");

    let system = h.current_system().expect("no current system after deploy");
    assert_eq!(
        h.profile_system().as_ref(),
        Some(&system),
        "profile must point at the deployed system"
    );
    assert_eq!(h.profile_generation(), Some(1));
    assert_eq!(
        h.boot_default().as_deref(),
        Some(&*system.display().to_string())
    );
    assert_eq!(
        h.stc_log(),
        [
            (base(&system), "test".into()),
            (base(&system), "boot".into())
        ]
    );
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c1.as_str());
    assert_eq!(s["deployed"]["generation"], 1);
    assert_eq!(s["deployed"]["system"], system.display().to_string());
    assert_eq!(s["last_run"]["outcome"], "deployed");
    assert_eq!(s["host"], "pi1");

    let run = h.run_once();
    run.expect(0);
    assert!(run.stderr().contains("up to date"), "{}", run.stderr());
    assert_eq!(h.status()["last_run"]["outcome"], "up-to-date");
    assert_eq!(
        h.nix_builds(),
        1,
        "an unchanged head must not be built again"
    );
}

#[test]
fn no_change_poll_spawns_no_nix_and_writes_nothing_to_state() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let before = h.state_snapshot();
    let calls = h.nix_calls();
    std::thread::sleep(Duration::from_millis(1100)); // mtime granularity
    for _ in 0..3 {
        h.run_once().expect(0);
    }
    assert_eq!(h.nix_calls(), calls, "a poll with nothing new ran nix");
    assert_eq!(
        h.state_snapshot(),
        before,
        "a poll with nothing new wrote under the state dir"
    );
    assert!(
        h.path("runtime/last-poll.json").exists(),
        "the poll should be recorded in the runtime dir"
    );
}

#[test]
fn commit_for_another_host_is_unchanged_and_switches_nothing() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, system) = h.bootstrap();
    h.host("pi2").content = "only pi2".into();
    let c2 = h.commit("pi2 only");
    h.run_once().expect(0);
    assert!(
        h.stc_log().is_empty(),
        "unchanged must not activate: {:?}",
        h.stc_log()
    );
    assert_eq!(h.profile_generation(), Some(1));
    assert_eq!(h.current_system(), Some(system));
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "unchanged");
    assert_eq!(
        s["deployed"]["commit"],
        c2.as_str(),
        "the running system is also c2's"
    );
}

#[test]
fn second_deploy_makes_a_new_generation() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    let c2 = h.deploy("v2", "second");
    let new = h.current_system().unwrap();
    assert_ne!(new, old);
    assert_eq!(h.profile_generation(), Some(2));
    assert_eq!(
        h.stc_log(),
        [(base(&new), "test".into()), (base(&new), "boot".into())]
    );
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c2.as_str());
    assert_eq!(s["deployed"]["generation"], 2);
    let history = h.history();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["outcome"], "deployed");
    assert_eq!(history[0]["generation"], 2);
}

/// A deterministic build-phase failure: recorded with a message naming the cause, the
/// system untouched, and the commit not built again.
fn assert_build_failure(h: &Harness, needles: &[&str]) {
    let builds = h.nix_builds();
    let run = h.run_once();
    run.expect(1);
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "failed");
    assert_eq!(s["last_run"]["phase"], "build");
    let error = s["last_run"]["error"].as_str().unwrap();
    for n in needles {
        assert!(error.contains(n), "error lacks {n:?}: {error}");
        assert!(
            run.stderr().contains(n),
            "stderr lacks {n:?}: {}",
            run.stderr()
        );
    }
    assert!(h.stc_log().is_empty(), "a failed build must not activate");
    assert_eq!(h.profile_generation(), Some(1));
    for _ in 0..3 {
        h.run_once().expect(0);
    }
    assert_eq!(
        h.nix_builds(),
        builds + 1,
        "a bad commit must be built once"
    );
    assert_eq!(h.status()["last_run"]["outcome"], "skipped");
}

#[test]
fn eval_error_is_reported_and_not_retried() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").build = "eval-throw".into();
    h.commit("broken eval");
    assert_build_failure(&h, &["evaluation failed", "deliberate eval error in pi1"]);
}

#[test]
fn missing_host_is_named() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.hosts.retain(|x| x.name != "pi1");
    h.host("other");
    h.commit("pi1 removed");
    let builds = h.nix_builds();
    // The agent's configuration names a host the flake lacks: not the commit's fault.
    let run = h.run_once();
    run.expect(78);
    for n in [
        "the flake has no nixosConfigurations.\"pi1\"",
        "check [host] name",
    ] {
        assert!(
            run.stderr().contains(n),
            "stderr lacks {n:?}: {}",
            run.stderr()
        );
    }
    let s = h.status();
    assert_eq!(s["last_run"]["phase"], "build");
    assert!(s["bad_commit"].is_null(), "the commit was blamed: {s}");
    assert!(h.stc_log().is_empty(), "a failed build must not activate");
    // Not rebuilt at every poll: a backoff, said as such, with the same exit.
    let run = h.run_once();
    run.expect(78);
    assert!(run.stderr().contains("next try in"), "{}", run.stderr());
    assert_eq!(h.nix_builds(), builds + 1, "rebuilt during the backoff");
    // `retry` ends the wait.
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(78);
    assert_eq!(
        h.nix_builds(),
        builds + 2,
        "not retried after a configuration error and `retry`"
    );
}

#[test]
fn build_failure_keeps_the_log_tail() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").build = "build-exit:3".into();
    h.commit("build fails");
    assert_build_failure(&h, &["build failed", "boom", "exit code 3"]);
}

#[test]
fn build_timeout_kills_the_builders() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").build = "build-sleep:617".into();
    h.build_timeout = "2s".into();
    h.commit("slow build");
    let run = h.run_once();
    // A timeout says nothing about the commit: transient, retried next run.
    run.expect(75);
    assert!(
        run.stderr().contains("build timed out after 2s"),
        "{}",
        run.stderr()
    );
    assert!(
        run.elapsed < Duration::from_secs(20),
        "took {:?}",
        run.elapsed
    );
    assert_no_process("sleep 617", "the build's builders");
    assert!(h.stc_log().is_empty());
    let s = h.status();
    assert_eq!(s["last_run"]["phase"], "build");
    assert!(
        s["bad_commit"].is_null(),
        "a timeout says nothing about the commit: {s}"
    );
}

/// The orphan guard with the real nix: a commit whose system drops the agent (or sshd) is
/// refused before activation as the commit's failure; with the guard off it deploys.
#[test]
fn a_commit_that_would_remove_the_agent_or_sshd_is_refused_before_activation() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let c1 = h.deploy("v1", "first");
    let system = h.current_system().unwrap();

    h.host("pi1").agent = false;
    h.host("pi1").sshd = false;
    let c2 = h.commit("drop the agent and sshd");
    let run = h.run_once();
    run.expect(1);
    assert!(
        run.stderr().contains(&format!(
            "commit {} would remove homelab-agent from pi1: it would never update again, and would disable sshd on pi1: nobody could log in to fix it; not activated",
            &c2[..8]
        )),
        "{}",
        run.stderr()
    );
    assert_eq!(
        h.current_system(),
        Some(system.clone()),
        "something was activated"
    );
    assert_eq!(h.stc_log().len(), 2, "a switch ran: {:?}", h.stc_log());
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c1.as_str());
    assert_eq!(s["last_run"]["outcome"], "failed");
    assert_eq!(s["last_run"]["phase"], "activate");
    assert_eq!(s["head"]["status"], "bad", "{}", s["head"]);

    // A machine being retired: the guard off, the same commit deploys.
    h.activation_extra = "require_agent_and_ssh = false".into();
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
    assert_ne!(h.current_system(), Some(system));
    assert_eq!(h.status()["deployed"]["commit"], c2.as_str());
}

/// `[retention] keep = 2` with the real nix-env profile: after four deployments two
/// generations are left, the newest; the boot default is the last one.
#[test]
fn retention_keeps_the_newest_generations_of_the_profile() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.extra = "[retention]\nkeep = 2\n".into();
    for v in ["v1", "v2", "v3", "v4"] {
        h.deploy(v, v);
    }
    let mut links: Vec<String> = std::fs::read_dir(h.path("profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("system-") && n.ends_with("-link"))
        .collect();
    links.sort();
    assert_eq!(links, ["system-3-link", "system-4-link"], "{links:?}");
    assert_eq!(h.profile_generation(), Some(4));
    assert_eq!(h.profile_system(), h.current_system());

    // keep = 0 is refused, saying why.
    let (out, _) = crate::support::config_check_output(
        "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[retention]\nkeep = 0\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.keep"));
}
