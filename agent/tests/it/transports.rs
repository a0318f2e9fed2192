//! Each transport for real, on loopback: file://, git:// (git daemon), smart HTTP with a
//! token (git http-backend), ssh with a key and a pinned host key (sshd). Then the ways
//! they fail, and a canary secret that must never leave the agent.

use std::path::{Path, PathBuf};

use crate::support::servers::{
    bare_clone, push, ssh_keygen, sshd_available, GitDaemon, GitHttp, Sshd,
};
use crate::support::{nix_available, require_that, Harness};

/// A harness whose repository is also served as a bare `srv/homelab.git`.
fn served() -> (Harness, PathBuf) {
    let mut h = Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit("first");
    let srv = h.path("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = bare_clone(&h.repo, &srv, "homelab.git");
    (h, bare)
}

/// Deploys once, then pushes a change and deploys it as generation 2.
fn deploy_twice(h: &mut Harness, bare: &Path) {
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(1));
    h.host("pi1").content = "v2".into();
    h.commit("second");
    push(&h.repo, bare);
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(2));
    assert_eq!(h.status()["last_run"]["outcome"], "deployed");
}

#[test]
fn file_url() {
    if !nix_available() {
        return;
    }
    let (mut h, bare) = served();
    h.url = format!("file://{}", bare.display());
    deploy_twice(&mut h, &bare);
}

#[test]
fn git_daemon() {
    if !nix_available() {
        return;
    }
    let (mut h, bare) = served();
    let daemon = GitDaemon::start(&h.path("srv"));
    h.url = daemon.url("homelab.git");
    deploy_twice(&mut h, &bare);
    assert_eq!(h.status()["source"]["url"], daemon.url("homelab.git"));
}

#[test]
fn https_style_token_from_file_and_from_url() {
    if !nix_available() {
        return;
    }
    let (mut h, bare) = served();
    let server = GitHttp::start(&h.path("srv"), Some("tok-123"));
    std::fs::write(h.path("token"), "tok-123\n").unwrap();
    h.url = server.url("homelab.git");
    h.source_extra = format!("token_file = \"{}\"\n", h.path("token").display());
    deploy_twice(&mut h, &bare);

    // The token written into the URL works too, and is never shown.
    h.source_extra.clear();
    h.url = format!("http://me:tok-123@127.0.0.1:{}/homelab.git", server.port());
    h.host("pi1").content = "v3".into();
    h.commit("third");
    push(&h.repo, &bare);
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(3));
    assert_eq!(
        h.status()["source"]["url"],
        format!("http://***@127.0.0.1:{}/homelab.git", server.port())
    );
}

#[test]
fn wrong_or_missing_token_is_an_authentication_error() {
    if !nix_available() {
        return;
    }
    let (mut h, _) = served();
    let server = GitHttp::start(&h.path("srv"), Some("right"));
    h.url = server.url("homelab.git");
    let run = h.run_once();
    run.expect(78); // credentials and host keys are configuration
    assert!(
        run.stderr().contains("authentication to")
            && run.stderr().contains("set [source] token_file"),
        "{}",
        run.stderr()
    );

    std::fs::write(h.path("token"), "wrong").unwrap();
    h.source_extra = format!("token_file = \"{}\"\n", h.path("token").display());
    let run = h.run_once();
    run.expect(78); // credentials and host keys are configuration
    assert!(
        run.stderr().contains("authentication to")
            && run.stderr().contains("hint: check [source] token_file"),
        "{}",
        run.stderr()
    );
    assert_eq!(h.nix_calls(), 0);
}

/// An sshd serving `bare`, a client key, and a known_hosts file pinning the server.
fn ssh_setup(h: &mut Harness, bare: &Path) -> Sshd {
    let key = h.path("client_key");
    let public = ssh_keygen(&key);
    let sshd = Sshd::start(&h.path("sshd"), &public);
    std::fs::write(
        h.path("known_hosts"),
        format!("{}\n", sshd.known_hosts_line()),
    )
    .unwrap();
    h.url = sshd.url(bare);
    h.source_extra = format!(
        "ssh_key_file = \"{}\"\nknown_hosts_file = \"{}\"\n",
        key.display(),
        h.path("known_hosts").display()
    );
    sshd
}

fn ssh_ready() -> bool {
    nix_available() && require_that("sshd and ssh-keygen (openssh-server)", sshd_available())
}

#[test]
fn ssh_with_key_and_pinned_host_key() {
    if !ssh_ready() {
        return;
    }
    let (mut h, bare) = served();
    let _sshd = ssh_setup(&mut h, &bare);
    deploy_twice(&mut h, &bare);
}

#[test]
fn ssh_wrong_key_unknown_and_changed_host_keys_are_refused() {
    if !ssh_ready() {
        return;
    }
    let (mut h, bare) = served();
    let sshd = ssh_setup(&mut h, &bare);

    // A key the server does not know.
    let other = h.path("other_key");
    ssh_keygen(&other);
    let good = h.source_extra.clone();
    h.source_extra = good.replace(
        &*h.path("client_key").display().to_string(),
        &other.display().to_string(),
    );
    let run = h.run_once();
    run.expect(78); // credentials and host keys are configuration
    assert!(
        run.stderr().contains("authentication to"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("ssh_key_file"), "{}", run.stderr());
    h.source_extra = good;

    // Unknown host: never accepted on first use.
    std::fs::write(h.path("known_hosts"), "").unwrap();
    let run = h.run_once();
    run.expect(78); // credentials and host keys are configuration
    assert!(
        run.stderr().contains("ssh host key of") && run.stderr().contains("unknown host key"),
        "{}",
        run.stderr()
    );

    // Changed host key: another key listed for the same host and port.
    let impostor = ssh_keygen(&h.path("impostor_host_key"));
    let key = impostor.split_whitespace().nth(1).unwrap();
    std::fs::write(
        h.path("known_hosts"),
        format!("[127.0.0.1]:{} ssh-ed25519 {key}\n", sshd.port()),
    )
    .unwrap();
    let run = h.run_once();
    run.expect(78); // credentials and host keys are configuration
    assert!(run.stderr().contains("does NOT match"), "{}", run.stderr());
    assert_eq!(
        h.nix_calls(),
        0,
        "nothing may be built from an unverified server"
    );
}

/// Every place a secret could leak to: output, status, history, state and runtime files.
fn assert_no_canary(h: &Harness, canary: &str, outputs: &[String]) {
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(canary), "output {i} leaks the secret: {o}");
    }
    let status = h.agent(&["status", "--json"]);
    assert!(!status.stdout().contains(canary) && !status.stderr().contains(canary));
    assert!(!h.agent(&["status"]).stdout().contains(canary));
    assert!(!h.agent(&["history", "--json"]).stdout().contains(canary));
    for dir in ["state", "runtime"] {
        for (path, _, _) in walk_files(&h.path(dir)) {
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(canary),
                    "{} leaks the secret",
                    path.display()
                );
            }
        }
    }
}

fn walk_files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() && !e.path().ends_with("cache.git") {
            out.extend(walk_files(&e.path()));
        } else if meta.is_file() {
            out.push((e.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out
}

#[test]
fn a_secret_token_never_reaches_output_status_or_state() {
    if !nix_available() {
        return;
    }
    let canary = format!(
        "SEKRET-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (mut h, _) = served();
    let server = GitHttp::start(&h.path("srv"), Some(&canary));
    let mut outputs = Vec::new();
    let mut run = |h: &Harness, code: i32| {
        let r = h.agent(&["run", "--once"]);
        r.expect(code);
        outputs.push(r.stdout());
        outputs.push(r.stderr());
        let check = h.agent(&["config", "check"]);
        outputs.push(check.stdout());
        outputs.push(check.stderr());
    };

    // (a) in the token file: a successful deployment.
    std::fs::write(h.path("token"), &canary).unwrap();
    h.url = server.url("homelab.git");
    h.source_extra = format!("token_file = \"{}\"\n", h.path("token").display());
    run(&h, 0);
    // (b) in the URL.
    h.source_extra.clear();
    h.url = format!(
        "http://user:{canary}@127.0.0.1:{}/homelab.git",
        server.port()
    );
    run(&h, 0);
    // (c) a wrong token that contains the canary: authentication fails.
    let wrong = format!("{canary}-wrong");
    h.url = format!(
        "http://user:{wrong}@127.0.0.1:{}/homelab.git",
        server.port()
    );
    run(&h, 78);
    // (d) unreachable, with the canary in the URL.
    h.url = format!(
        "http://user:{canary}@127.0.0.1:{}/homelab.git",
        crate::support::servers::closed_port()
    );
    run(&h, 75);
    assert_no_canary(&h, &canary, &outputs);
}
