//! Each transport for real, on loopback: file://, git:// (git daemon), smart HTTP with a
//! token (git http-backend), ssh with a key and a pinned host key (sshd). Then the ways
//! they fail, and a canary secret that must never leave the agent.

use std::path::{Path, PathBuf};

use crate::support::servers::{
    bare_clone, push, served, ssh_keygen, sshd_available, GitDaemon, GitHttp, Sshd,
};
use crate::support::{nix_available, require_that, Harness};

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

    // The server's own key, revoked: refused even though it is also listed, with what
    // to do about it.
    let line = sshd.known_hosts_line();
    std::fs::write(h.path("known_hosts"), format!("{line}\n@revoked {line}\n")).unwrap();
    let run = h.run_once();
    run.expect(78); // credentials and host keys are configuration
    assert!(
        run.stderr().contains("is marked @revoked in")
            && run
                .stderr()
                .contains("hint: if the server's key was replaced"),
        "{}",
        run.stderr()
    );
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

// ---- failures of the source, each with its kind's exit code and message -----------------

/// A server that accepts connections and never answers (a remote gone silent). Holds
/// every connection until dropped.
struct BlackHole {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHole {
    fn start() -> BlackHole {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    held.push(c);
                }
            }
        });
        BlackHole { port, stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The poll against a silent git:// server ends at `[source] timeout` (plus a little),
/// and the process exits then (before the fix it waited for the stuck libgit2 thread,
/// holding the run lock for libgit2's 60 s socket timeout).
#[test]
fn a_silent_git_server_ends_the_run_at_its_deadline_and_frees_the_lock() {
    let hole = BlackHole::start();
    let mut h = Harness::new();
    h.url = format!("git://127.0.0.1:{}/homelab.git", hole.port);
    h.source_extra = "timeout = \"2s\"\n".into();
    let run = h.run_once();
    run.expect(75);
    assert!(
        run.stderr().contains("timed out after 2s") && run.stderr().contains("[source] timeout"),
        "{}",
        run.stderr()
    );
    assert!(
        run.elapsed < std::time::Duration::from_secs(6),
        "a 2 s deadline took {:?}",
        run.elapsed
    );
    // The lock is free at once: the next run is not refused (4), it times out too.
    let again = h.run_once();
    again.expect(75);
}

/// The `remote` health check against a silent remote ends at its own timeout, and so
/// does the process (`homelab-agent check` runs the checks now).
#[test]
fn a_remote_check_against_a_silent_remote_ends_at_its_timeout() {
    let hole = BlackHole::start();
    let mut h = Harness::new();
    h.url = format!("git://127.0.0.1:{}/homelab.git", hole.port);
    h.checks = Some("[[health.checks]]\ntype = \"remote\"\ntimeout = \"2s\"\n".into());
    let run = h.agent(&["check"]);
    run.expect(1);
    assert!(
        run.elapsed < std::time::Duration::from_secs(6),
        "a 2 s check took {:?}",
        run.elapsed
    );
    assert!(
        run.stdout().contains("timed out after 2s") || run.stderr().contains("timed out after 2s"),
        "{}{}",
        run.stdout(),
        run.stderr()
    );
}

/// A local repository that is not there is the configuration's problem (78), and the
/// message names the path instead of blaming the network.
#[test]
fn a_missing_local_repository_is_a_configuration_error_naming_the_path() {
    let mut h = Harness::new();
    let not_a_repo = h.path("not-a-repo");
    std::fs::create_dir_all(&not_a_repo).unwrap();
    for (url, path, problem) in [
        (
            "file:///no/such/path".to_string(),
            "/no/such/path".to_string(),
            "does not exist",
        ),
        (
            "/no/such/path2".to_string(),
            "/no/such/path2".to_string(),
            "does not exist",
        ),
        (
            not_a_repo.display().to_string(),
            not_a_repo.display().to_string(),
            "is not a git repository",
        ),
    ] {
        h.url = url.clone();
        let run = h.run_once();
        run.expect(78);
        let err = run.stderr();
        assert!(
            err.contains(&format!("{path} {problem}")) && err.contains("check [source] url"),
            "{url}: {err}"
        );
        assert!(
            !err.contains("check the network") && !err.contains("cannot reach"),
            "{url}: {err}"
        );
    }
}

/// `unshare -m` works here (root, mount namespaces): needed to give the cache a tiny or
/// read-only filesystem of its own.
fn can_unshare_mounts() -> bool {
    std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `run --once` in a private mount namespace after `setup` (a shell snippet ending
/// in `&&`; `$C` is `<state>/cache.git`, created first).
fn run_in_mount_namespace(h: &Harness, setup: &str) -> crate::support::Run {
    let cache = h.path("state/cache.git");
    std::fs::create_dir_all(&cache).unwrap();
    let agent = h.command(&["run", "--once"]);
    let script = format!("C=\"$1\"; shift; {setup} exec \"$@\"");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(&cache)
        .arg(agent.get_program())
        .args(agent.get_args());
    for (k, v) in agent.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let started = std::time::Instant::now();
    let output = cmd.output().unwrap();
    crate::support::Run {
        output,
        elapsed: started.elapsed(),
    }
}

/// `run --once` with `<state>/cache.git` on its own tmpfs of `size`, then `more`.
fn run_with_cache_on_tmpfs(h: &Harness, size: &str, more: &str) -> crate::support::Run {
    run_in_mount_namespace(
        h,
        &format!("mount -t tmpfs -o size={size} tmpfs \"$C\" && {more}"),
    )
}

/// `len` bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    out
}

/// A repository bigger than the cache's disk: the fetch fails with ENOSPC, which is this
/// machine's problem (71), not "cannot reach" (75) and not the commit's.
#[test]
fn a_full_disk_during_fetch_is_an_environment_error() {
    if !require_that("unshare -m (root, mount namespaces)", can_unshare_mounts()) {
        return;
    }
    let mut h = Harness::new();
    // 4 MiB that do not compress, for a 2 MiB cache: more than the 1 MiB the agent
    // wants free before it starts, so the pack itself fills the disk mid-fetch.
    std::fs::write(h.repo.join("noise.bin"), noise(4 << 20)).unwrap();
    h.host("pi1").content = "v1".into();
    h.commit("big");
    // Over the local transport (no socket) and over git:// (the pack arrives on a socket).
    let srv = h.path("srv");
    std::fs::create_dir_all(&srv).unwrap();
    bare_clone(&h.repo, &srv, "homelab.git");
    let daemon = GitDaemon::start(&srv);
    for url in [h.repo.display().to_string(), daemon.url("homelab.git")] {
        h.url = url.clone();
        let run = run_with_cache_on_tmpfs(&h, "2m", "");
        let err = run.stderr();
        eprintln!("{err}");
        assert_eq!(run.code(), 71, "{url}: {err}");
        assert!(
            err.contains("fetching into the git cache")
                && err.contains("cache.git")
                && err.contains("free space"),
            "{url}: {err}"
        );
        assert!(!err.contains("cannot reach"), "{url}: {err}");
    }
    assert_eq!(h.nix_calls(), 0);
}

/// A read-only cache filesystem is found before the network is touched: 71.
#[test]
fn a_read_only_cache_is_an_environment_error() {
    if !require_that("unshare -m (root, mount namespaces)", can_unshare_mounts()) {
        return;
    }
    let mut h = Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit("first");
    let run = run_with_cache_on_tmpfs(&h, "4m", "mount -o remount,ro \"$C\" &&");
    let err = run.stderr();
    eprintln!("{err}");
    assert_eq!(run.code(), 71, "{err}");
    assert!(
        err.contains("cache.git") && err.contains("Read-only"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");
}

/// `nix` missing from PATH is this machine's problem: exit 71 every run, the commit is
/// never blamed, and once nix is back the same commit deploys.
#[test]
fn nix_missing_is_an_environment_error_and_never_blames_the_commit() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit("first");
    h.env.push(("PATH".into(), "/nonexistent".into()));
    for round in 0..4 {
        let run = h.run_once();
        run.expect(71);
        let err = run.stderr();
        if round == 0 {
            assert!(
                err.contains("nix not found")
                    && err.contains("install Nix")
                    && err.contains("not blamed"),
                "{err}"
            );
        } else {
            // Backing off: not built again, still 71, saying when it tries next.
            assert!(err.contains("(environment); next try in"), "{err}");
        }
        assert!(!err.contains("push a fix"), "{err}");
    }
    let s = h.status();
    assert!(s["bad_commit"].is_null(), "the commit was blamed: {s}");
    h.env.clear();
    // The operator fixed the machine: `retry` tries now.
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
    assert_eq!(h.status()["last_run"]["outcome"], "deployed");
}

/// Runs `run --once` with a fresh, empty nix store on a tmpfs of `size_mib` over `/nix`,
/// in a private mount namespace: the real store is never touched (nor copied, which
/// would race the other tests' builds). The fake system needs nothing from a store;
/// nix itself takes about 8.3 MiB of it (its database and 8 MiB reserved for GC).
fn run_with_small_store(h: &Harness, size_mib: u64) -> crate::support::Run {
    run_in_mount_namespace(
        h,
        &format!("mount -t tmpfs -o size={size_mib}m tmpfs /nix &&"),
    )
}

/// A build that fails on a machine whose store is (nearly) full is this machine's problem
/// (71, found by `statvfs` of the store), not the commit's; with room again, the same
/// failure is the commit's (1).
#[test]
fn a_failed_build_on_a_full_store_is_an_environment_error() {
    if !nix_available()
        || !require_that("unshare -m (root, mount namespaces)", can_unshare_mounts())
    {
        return;
    }
    let mut h = Harness::new();
    h.host("pi1").build = "build-exit:3".into();
    h.commit("does not build");
    // About 7.7 MiB free: less than the 16 MiB the agent calls full.
    let run = run_with_small_store(&h, 16);
    let err = run.stderr();
    assert_eq!(run.code(), 71, "{err}");
    assert!(
        err.contains("out of disk space") && err.contains("not blamed"),
        "{err}"
    );
    assert!(h.status()["bad_commit"].is_null());
    // The real store has room (and `retry` ends the backoff): the same failure is the
    // commit's.
    h.agent(&["retry"]).expect(0);
    let run = h.run_once();
    run.expect(1);
    assert!(run.stderr().contains("build failed"), "{}", run.stderr());
}

/// A commit bigger than the store's free space: nix fails with ENOSPC while copying the
/// source into the store, then frees it, so `statvfs` sees room again; the agent still
/// calls it disk full (71, nix's report of the OS error), and the commit deploys once
/// there is room.
#[test]
fn running_out_of_store_space_mid_build_is_an_environment_error() {
    if !nix_available()
        || !require_that("unshare -m (root, mount namespaces)", can_unshare_mounts())
    {
        return;
    }
    let mut h = Harness::new();
    std::fs::write(h.repo.join("noise.bin"), noise(40 << 20)).unwrap();
    h.host("pi1").content = "v1".into();
    h.commit("big");
    // About 23.7 MiB free: above the agent's 16 MiB threshold, below the 40 MiB source.
    let run = run_with_small_store(&h, 32);
    let err = run.stderr();
    assert_eq!(run.code(), 71, "{err}");
    // nix's own report of the OS error, i.e. the disk really filled up mid-way.
    assert!(
        err.contains("out of disk space") && err.contains("No space left on device"),
        "{err}"
    );
    assert!(h.status()["bad_commit"].is_null());
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
}
