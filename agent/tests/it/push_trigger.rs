//! Deploy on push: `git push` to a bare repository whose post-receive hook
//! (contrib/post-receive) calls the machine over the real sshd on loopback, with a key
//! restricted in authorized_keys to `homelab-agent trigger`, which starts the unit (a
//! systemctl stand-in records how it was called). The restricted key can do nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::servers::{bare_clone, ssh_keygen, sshd_available, Sshd};
use crate::support::{require, require_that, Harness, BIN};

/// The hook shipped in contrib/.
fn hook_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/post-receive")
}

struct Setup {
    h: Harness,
    bare: PathBuf,
    ssh_config: PathBuf,
    systemctl_log: PathBuf,
    _sshd: Sshd,
}

fn setup() -> Option<Setup> {
    if !(require("git") && require_that("sshd and ssh-keygen (openssh-server)", sshd_available())) {
        return None;
    }
    let mut h = Harness::new();
    // systemctl: a stand-in that records its arguments.
    let systemctl_log = h.path("systemctl.log");
    let systemctl = h.path("systemctl");
    std::fs::write(
        &systemctl,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", systemctl_log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.systemctl = Some(systemctl);
    let config = h.config_path();

    let key = h.path("hook_key");
    let public = ssh_keygen(&key);
    let forced = format!(
        "command=\"{} --config {} trigger\",restrict {public}",
        BIN,
        config.display()
    );
    let sshd = Sshd::start(&h.path("sshd"), &forced);
    std::fs::write(
        h.path("known_hosts"),
        format!("{}\n", sshd.known_hosts_line()),
    )
    .unwrap();
    let ssh_config = h.path("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host pi1\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  BatchMode yes\n",
            sshd.port(),
            whoami(),
            key.display(),
            h.path("known_hosts").display()
        ),
    )
    .unwrap();

    h.host("pi1").content = "v1".into();
    h.commit("first");
    let bare = bare_clone(&h.repo, h.dir.path(), "homelab.git");
    let hook = bare.join("hooks/post-receive");
    std::fs::copy(hook_source(), &hook).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (k, v) in [
        ("homelab.triggerHost", "pi1"),
        ("homelab.sshConfig", ssh_config.to_str().unwrap()),
    ] {
        git(&bare, &["config", "--add", k, v]);
    }
    Some(Setup {
        h,
        bare,
        ssh_config,
        systemctl_log,
        _sshd: sshd,
    })
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map_or("root".into(), |u| u.name)
}

fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ssh(s: &Setup, args: &[&str]) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(&s.ssh_config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn started(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(&s.systemctl_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_push_to_the_branch_starts_the_unit_over_ssh() {
    let Some(mut s) = setup() else { return };
    s.h.host("pi1").content = "v2".into();
    s.h.commit("second");
    let push = Command::new("git")
        .arg("-C")
        .arg(&s.h.repo)
        .args(["push", "-q"])
        .arg(&s.bare)
        .arg("main:main")
        .output()
        .unwrap();
    assert!(push.status.success());
    let said = String::from_utf8_lossy(&push.stderr);
    assert!(
        said.contains("homelab-agent: started homelab-agent.service"),
        "{said}"
    );
    assert_eq!(started(&s), ["start --no-block homelab-agent.service"]);

    // Another branch deploys nothing.
    let push = Command::new("git")
        .arg("-C")
        .arg(&s.h.repo)
        .args(["push", "-q"])
        .arg(&s.bare)
        .arg("main:refs/heads/other")
        .output()
        .unwrap();
    assert!(push.status.success());
    assert_eq!(started(&s).len(), 1);
}

#[test]
fn the_restricted_key_can_do_nothing_but_trigger() {
    let Some(s) = setup() else { return };
    let marker = s.h.path("should-not-exist");
    // Whatever is asked, the forced command runs instead.
    let out = ssh(&s, &["pi1", "touch", marker.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(!marker.exists(), "the key ran another command");
    assert!(String::from_utf8_lossy(&out.stdout).contains("started homelab-agent.service"));
    assert_eq!(started(&s), ["start --no-block homelab-agent.service"]);
    // No forwarding: a remote forward is refused.
    let out = ssh(
        &s,
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "0:127.0.0.1:9",
            "pi1",
            "true",
        ],
    );
    assert!(
        !out.status.success(),
        "remote forwarding was allowed: {out:?}"
    );
    // No pty either.
    let out = ssh(&s, &["-tt", "pi1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PTY allocation request failed"),
        "{out:?}"
    );
}

#[test]
fn trigger_says_what_went_wrong_when_systemctl_fails() {
    let mut h = Harness::new();
    let systemctl = h.path("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\necho 'Unit homelab-agent.service not found.' >&2\nexit 5\n",
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.systemctl = Some(systemctl);
    let run = h.agent(&["trigger"]);
    run.expect(1);
    assert!(
        run.stderr()
            .contains("error: cannot start homelab-agent.service")
            && run
                .stderr()
                .contains("Unit homelab-agent.service not found."),
        "{}",
        run.stderr()
    );
    h.systemctl = Some(h.path("no-such-systemctl"));
    h.agent(&["trigger"]).expect(71);
    // A unit that would be an option for systemctl is a bad command line.
    let run = h.agent(&["trigger", "--unit=--user"]);
    run.expect(2);
    assert!(
        run.stderr()
            .contains("\"--user\" is not a systemd unit name"),
        "{}",
        run.stderr()
    );
}

/// A daemon (`run` without `--once`) polls at once on SIGUSR1, and still stops on SIGTERM.
#[test]
fn sigusr1_makes_a_daemon_poll_now() {
    if !crate::support::nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.extra = "[run]\ninterval = \"1h\"\njitter = \"0s\"\n".into();
    let daemon = h
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let last_poll = h.path("runtime/last-poll.json");
    let cycle_after = |since: Option<std::time::SystemTime>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let m = std::fs::metadata(&last_poll)
                .and_then(|m| m.modified())
                .ok();
            let done =
                std::fs::read_to_string(&last_poll).is_ok_and(|t| t.contains("\"next_poll\":\""));
            if m.is_some() && m != since && done {
                return m;
            }
            assert!(std::time::Instant::now() < deadline, "no cycle within 30 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let first = cycle_after(None);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    cycle_after(first);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = daemon.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("up to date at").count(), 2, "{err}");
    assert!(err.contains("SIGUSR1: polling now"), "{err}");
}
