//! `status`, `history` and the command line as an operator meets them (issue 10): pinned
//! after a rollback, a running agent told from a dead one, a damaged state file, a normal
//! user, and the help and exit codes.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{base, nix_available, require, Harness, BIN};

/// Item 1: a rollback pins; a newer commit is polled, not deployed; `resume` unpins.
/// Issue 24: with `[prebuilt]` off, a deployment says it was built here all the same
/// (status, status --json, history), with no fallback reason.
#[test]
fn a_native_build_says_built_here_without_prebuilt() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.deploy("v2", "v2");
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "deployed", "{s}");
    let o = &s["last_run"]["obtained"];
    assert_eq!(o["how"], "built-here", "{s}");
    assert!(o.get("fallback").is_none() && o.get("why").is_none(), "{s}");
    assert_eq!(h.history()[0]["obtained"]["how"], "built-here");
    let human = h.agent(&["status"]).stdout();
    assert!(human.contains("\n  obtained: built here\n"), "{human}");
}

#[test]
fn rollback_pins_until_resume() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    let c2 = h.deploy("v2", "v2");
    h.agent(&["rollback"]).expect(0);
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));

    let s = h.status();
    assert_eq!(s["state"], "pinned", "{s}");
    assert_eq!(s["pinned"]["from_commit"], c2.as_str());
    assert!(
        s["hint"].as_str().unwrap().contains("homelab-agent resume"),
        "{s}"
    );
    let human = h.agent(&["status"]).stdout();
    assert!(human.starts_with("PINNED:"), "{human}");

    h.host("pi1").content = "v3".into();
    let c3 = h.commit("v3");
    let builds = h.nix_builds();
    let run = h.run_once();
    run.expect(0);
    assert!(run.stderr().contains("pinned"), "{}", run.stderr());
    assert!(!run.stderr().contains("up to date"), "{}", run.stderr());
    assert_eq!(h.nix_builds(), builds, "a pinned machine built the head");
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    assert_eq!(
        h.history()[0]["outcome"],
        "rolled-back",
        "a pinned poll became history"
    );
    let s = h.status();
    assert_eq!(s["head"]["commit"], c3.as_str());
    assert_eq!(s["head"]["status"], "pinned-past");
    assert_eq!(s["last_run"]["outcome"], "pinned");

    let resumed = h.agent(&["resume"]);
    resumed.expect(0);
    assert!(
        resumed.stdout().contains("unpinned"),
        "{}",
        resumed.stdout()
    );
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["state"], "idle", "{s}");
    assert_eq!(s["deployed"]["commit"], c3.as_str());
    assert_eq!(s["head"]["status"], "deployed");
    assert!(s["pinned"].is_null());
}

/// Item 2: while a run builds, `status` says so, from the lock and the progress file.
#[test]
fn status_shows_what_a_running_agent_is_doing() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "slow".into();
    h.host("pi1").build = "build-sleep:4".into();
    h.commit("slow");
    let mut child = h.command(&["run", "--once"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        let s = h.status();
        if s["state"] == "running" {
            seen = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = seen.expect("status never said running");
    assert_eq!(s["running"]["pid"], child.id());
    assert!(s["running"]["phase"].as_str().is_some(), "{s}");
    assert!(s["in_progress"].as_str().is_some(), "{s}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(h.status()["state"], "idle");
}

/// Item 2: an intent on disk with the lock free is an interrupted run, not a running one.
#[cfg(feature = "failpoints")]
#[test]
fn a_killed_run_is_interrupted_not_running() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "new".into();
    h.commit("new");
    let mut cmd = h.command(&["run", "--once"]);
    cmd.env("HOMELAB_AGENT_FAILPOINTS", "after_activate");
    assert_eq!(cmd.output().unwrap().status.code(), None, "not killed");
    let run = h.agent(&["status", "--json"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let s: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(s["state"], "needs-attention", "{s}");
    assert_eq!(s["attention"][0]["kind"], "interrupted", "{s}");
    assert!(s["running"].is_null());
    let since = s["attention"][0]["since"].as_str().unwrap();
    assert!(
        homelab_agent::model::time::Timestamp::parse(since).is_ok(),
        "not RFC 3339: {since}"
    );
    h.run_once();
    assert_eq!(h.status()["state"], "idle");
}

/// Item 3: a damaged state file is `unknown`, says what the system links still tell, and
/// neither `status` nor `history` exits 0 pretending nothing happened.
#[test]
fn a_damaged_state_file_is_unknown_not_empty() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, system) = h.bootstrap();
    std::fs::write(h.path("state/state.json"), "{\"version\": 1, \"histo").unwrap();
    let run = h.agent(&["status", "--json"]);
    assert_eq!(run.code(), 71, "{}", run.stderr());
    let s: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(s["state"], "unknown");
    assert_eq!(s["attention"][0]["kind"], "state-lost");
    assert_eq!(s["current_system"], system.display().to_string());
    let human = h.agent(&["status"]).stdout();
    assert!(human.starts_with("ATTENTION:  state unknown"), "{human}");
    assert!(!human.contains("nothing yet by homelab-agent"), "{human}");
    let history = h.agent(&["history"]);
    assert_eq!(history.code(), 71);
    assert!(!history.stdout().contains("no runs recorded yet"));
    assert!(
        history.stderr().contains("state.json"),
        "{}",
        history.stderr()
    );

    // The next run moves it aside; status then says the state was lost, and where it is.
    h.run_once().expect(0);
    let s = h.status();
    assert!(s["state_recovered_from"].as_str().is_some(), "{s}");
    assert!(
        s["attention"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "state-lost"),
        "{s}"
    );
}

/// Item 6: a normal user is told to use sudo; `retry` does not claim the lock is held.
#[test]
fn a_normal_user_is_told_to_use_sudo() {
    if !require("setpriv") || !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let h = Harness::new();
    // The harness directory is private to root; the config is put where anyone reads it.
    let pub_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(pub_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = pub_dir.path().join("config.toml");
    std::fs::write(&config, h.config_text()).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for (args, not) in [
        (&["run", "--once"][..], 4),
        (&["retry"][..], 4),
        (&["resume"][..], 4),
    ] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "--config",
            ])
            .arg(&config)
            .args(args)
            .env("HOMELAB_AGENT_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("run with sudo"), "{args:?}: {stderr}");
        assert!(!stderr.contains("os error 13"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(not), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(71), "{args:?}: {stderr}");
    }
}

fn bin(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HOMELAB_AGENT_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Item 8: help for every flag, exit codes in --help, no --config on demo, --limit 0.
#[test]
fn the_command_line_explains_itself() {
    for cmd in [
        &["--help"][..],
        &["run", "--help"],
        &["rollback", "--help"],
        &["status", "--help"],
        &["history", "--help"],
        &["check", "--help"],
        &["retry", "--help"],
        &["resume", "--help"],
        &["config", "check", "--help"],
    ] {
        let out = bin(cmd);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        let help = text(&out.stdout);
        assert!(help.contains("Exit codes:"), "{cmd:?}:\n{help}");
    }
    for (cmd, flag) in [
        (&["run", "--help"][..], "--once  "),
        (&["status", "--help"], "--json  "),
        (&["history", "--help"], "--limit <N>  "),
        (&["history", "--help"], "--json  "),
    ] {
        let help = text(&bin(cmd).stdout);
        let line = help.lines().find(|l| l.contains(flag.trim_end())).unwrap();
        assert!(
            line.trim_end().len() > flag.len() + 8,
            "{cmd:?}: {flag} has no help: {line:?}"
        );
    }
    let demo = text(&bin(&["demo", "--help"]).stdout);
    assert!(!demo.contains("--config"), "{demo}");

    let out = bin(&["history", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("1 or more"),
        "{}",
        text(&out.stderr)
    );

    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/agent.toml", "status"])
        .env("HOMELAB_AGENT_LOG", "verbose")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("HOMELAB_AGENT_LOG=\"verbose\" is not a log level"),
        "{stderr}"
    );
}

/// Shell completions and the man page come from the same clap definitions.
#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(
            script.contains("resume") && script.contains("limit"),
            "{shell}"
        );
    }
    let out = bin(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let man = text(&bin(&["man"]).stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH homelab-agent 1"),
        "{man}"
    );
    assert!(
        man.contains("Exit codes"),
        "the man page lacks the exit codes"
    );
}

/// `--json` on every command that prints.
#[test]
fn json_on_check_and_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "[source]\nurl = \"https://git.example.org/me/homelab.git\"\n[host]\nname = \"pi1\"\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = bin(&["--config", f, "config", "check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["file"], f);
    std::fs::write(&file, "[source]\nurl = 3\n").unwrap();
    let out = bin(&["--config", f, "config", "check", "--json"]);
    assert_eq!(out.status.code(), Some(78));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("source.url"), "{v}");

    std::fs::write(
        &file,
        "[source]\nurl = \"https://git.example.org/me/homelab.git\"\n[host]\nname = \"pi1\"\n",
    )
    .unwrap();
    // A closed port: one unhealthy check, in JSON, exit 1.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &file,
        format!("[source]\nurl = \"https://git.example.org/me/homelab.git\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let out = bin(&["--config", f, "check", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(v["healthy"], false, "{v}");
    assert_eq!(v["checks"][0]["verdict"], "unhealthy", "{v}");
    assert!(v["checks"][0]["detail"].is_string(), "{v}");
}

/// Item 4: a failed rollback leads the human output, with the hint that helps (a reboot),
/// marks the live system, and `status` exits 3.
#[test]
fn a_failed_rollback_leads_with_the_reboot_hint() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    std::fs::write(h.fake.join("faults").join(base(&old)), "exit:1").unwrap();
    h.host("pi1").content = "next".into();
    h.host("pi1").healthy = false;
    h.commit("next");
    h.run_once().expect(3);
    let run = h.agent(&["status"]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let human = run.stdout();
    let mut lines = human.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("ATTENTION:  rollback to generation 1 failed"),
        "{human}"
    );
    assert!(
        lines.next().unwrap().contains("a reboot returns to it"),
        "{human}"
    );
    assert!(!human.contains("homelab-agent retry"), "{human}");
    assert!(human.contains("<- live, NOT the boot default"), "{human}");
    assert_eq!(h.status()["state"], "needs-attention");
}

/// Item 5: no bad-commit line after a newer commit deployed, nor right after `retry`.
#[test]
fn no_stale_bad_commit_line() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "broken".into();
    h.host("pi1").healthy = false;
    let bad = h.commit("broken");
    h.run_once().expect(1);
    let human = h.agent(&["status"]).stdout();
    assert!(human.contains("bad commit: "), "{human}");
    assert_eq!(h.status()["head"]["status"], "bad");

    h.agent(&["retry"]).expect(0);
    let human = h.agent(&["status"]).stdout();
    assert!(!human.contains("bad commit"), "after retry:\n{human}");
    assert!(
        !human.contains("homelab-agent retry"),
        "after retry:\n{human}"
    );
    assert_eq!(h.status()["head"]["status"], "pending");
    h.run_once().expect(1);
    assert_eq!(h.status()["bad_commit"]["commit"], bad.as_str());

    h.host("pi1").content = "fixed".into();
    h.host("pi1").healthy = true;
    h.commit("fixed");
    h.run_once().expect(0);
    let human = h.agent(&["status"]).stdout();
    assert!(!human.contains("bad commit"), "after a fix:\n{human}");
    let s = h.status();
    assert!(s["bad_commit"].is_null(), "{s}");
    assert_eq!(s["state"], "idle");
    assert_eq!(s["head"]["status"], "deployed");
}

/// Status for everyone (issue 21): a user who is not root reads the whole status (NixOS
/// gives the state directory 0755), while the git cache, a mirror of a repository that may
/// be private, stays root's (0700).
#[test]
fn a_user_who_is_not_root_reads_the_whole_status() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix_available() {
        return;
    }
    if !crate::support::require_that(
        "root (to run status as another user)",
        nix::unistd::Uid::effective().is_root(),
    ) {
        return;
    }
    let mut h = Harness::new();
    let c1 = h.deploy("v1", "first");
    // The machine's own directories are readable on a real machine; the test's temporary
    // one is made so too.
    std::fs::set_permissions(h.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = h
        .command(&["status", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["deployed"]["commit"], c1.as_str(), "{s}");
    assert_eq!(s["state"], "idle", "{s}");
    let cache = h.path("state/cache.git");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the git cache is {mode:o}");
}

/// A switch made by hand (issue 21): what `nixos-rebuild switch` does (a new profile
/// generation with `nix-env --set`, then that system live) is told in status and the
/// metrics, not "up to date"; the next commit is deployed over it as usual.
#[test]
fn a_switch_made_by_hand_is_told_not_up_to_date() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.extra = format!(
        "[metrics]\ntextfile_dir = \"{}\"\n",
        h.path("textfile").display()
    );
    h.deploy("v1", "first");
    // A system the agent did not deploy: another host of the same flake, built by hand.
    h.host("other").content = "by hand".into();
    h.commit("another host");
    let built = Command::new("nix")
        .env("NIX_CONFIG", crate::support::NIX_CONFIG)
        .args(["build", "--json", "--no-link", "--no-write-lock-file"])
        .arg(format!(
            "git+file://{}#nixosConfigurations.other.config.system.build.toplevel",
            h.path("homelab").display()
        ))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    let by_hand = v[0]["outputs"]["out"].as_str().unwrap().to_string();
    let set = Command::new("nix-env")
        .env("NIX_CONFIG", crate::support::NIX_CONFIG)
        .arg("-p")
        .arg(h.path("profiles/system"))
        .args(["--set", &by_hand])
        .status()
        .unwrap();
    assert!(set.success());
    let link = h.current_system_link();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&by_hand, &link).unwrap();

    let run = h.agent(&["status", "--json"]);
    run.expect(3);
    let s: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(s["state"], "needs-attention", "{s}");
    assert!(
        s["attention"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("changed by hand: generation 2 ("),
        "{s}"
    );
    // The metrics say so after the next run (the poll, which finds the head handled).
    h.run_once();
    let text = std::fs::read_to_string(h.path("textfile/homelab_agent.prom")).unwrap();
    assert!(text.contains("homelab_agent_drift 1"), "{text}");
}
