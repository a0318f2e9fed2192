//! Issue 21, "Progress": nix's progress while a run builds, in `status`, from the real nix
//! reading `--log-format internal-json`.

use std::time::{Duration, Instant};

use crate::support::{nix_available, Harness};

/// While a slow build runs, `status --json` shows `running.progress` (the one derivation
/// of the fake system, being built now) and the human status a `progress:` line; the
/// run's own stderr has no JSON of nix's in it, and its log lines carry a time.
#[test]
fn status_shows_nix_progress_during_a_slow_build() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "slow progress".into();
    h.host("pi1").build = "build-sleep:6".into();
    h.commit("slow");
    let child = h
        .command(&["run", "--once"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while Instant::now() < deadline {
        let s = h.status();
        let p = &s["running"]["progress"];
        if p["current"] == "nixos-system-pi1" {
            seen = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = seen.unwrap_or_else(|| panic!("status never showed the build's progress"));
    let p = &s["running"]["progress"];
    assert_eq!(p["derivations_total"], 1, "{s}");
    assert_eq!(p["derivations_built"], 0, "{s}");
    assert!(
        homelab_agent::model::time::Timestamp::parse(p["at"].as_str().unwrap()).is_ok(),
        "{s}"
    );
    let human = h.agent(&["status"]);
    assert!(
        human
            .stdout()
            .contains("progress:   building 0/1 derivations, now: nixos-system-pi1"),
        "{}",
        human.stdout()
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("@nix"), "{stderr}");
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.len() > 20 && first.as_bytes()[4] == b'-' && first.as_bytes()[13] == b':',
        "no time on the log line: {first:?}"
    );
    // Done: no run, no progress.
    let s = h.status();
    assert_eq!(s["state"], "idle", "{s}");
    assert!(s["running"].is_null(), "{s}");
}

/// A manual run on a terminal (a real pty, python's `pty.spawn`) shows one progress line,
/// updated in place (`\r`, erase line) and erased at the end of the build.
#[test]
fn a_run_on_a_terminal_shows_a_progress_line() {
    if !nix_available() || !crate::support::require("python3") {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "slow on a tty".into();
    h.host("pi1").build = "build-sleep:3".into();
    h.commit("slow");
    let agent = h.command(&["run", "--once"]);
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-c",
        "import pty, sys; status = pty.spawn(sys.argv[1:]); sys.exit(status >> 8)",
    ]);
    cmd.arg(agent.get_program()).args(agent.get_args());
    for (k, v) in agent.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\r\x1b[Kbuilding 0/1 derivations, now: nixos-system-pi1"),
        "no progress line: {text:?}"
    );
    // Erased when the build ended, before the next log line.
    let after = text
        .rfind("now: nixos-system-pi1")
        .map(|i| &text[i..])
        .unwrap();
    assert!(after.contains("\r\x1b[K"), "never erased: {after:?}");
}
