//! Prebuilt systems (issue 24) with real parts: the "workstation" builds the fake system
//! here, `nix copy`s it into a `file://` binary cache signed with a key made by `nix key
//! generate-secret`, deletes it from the store, and publishes a manifest signed with
//! `ssh-keygen -Y sign -n homelab-prebuilt` (or gpg) on the `homelab-prebuilt` branch of
//! the repository, served by `git daemon` on loopback. The agent must deploy it with only
//! `nix-store --realise` (shims for `nix` and `nix-store` log every call), and build
//! natively, saying why, for every manifest it must not use.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::servers::{bare_clone, push, GitDaemon};
use crate::support::{git, git_out, nix_available, Harness, NIX_CONFIG};
use crate::trust::{ssh_key, ssh_tools};
use homelab_agent::prebuilt::manifest::{Manifest, StorePath, NAMESPACE};

const MANIFEST_BRANCH: &str = "homelab-prebuilt";

struct Setup {
    h: Harness,
    bare: PathBuf,
    _daemon: GitDaemon,
    /// The binary cache and its signing key.
    cache: PathBuf,
    cache_secret: PathBuf,
    /// The publisher's ssh key, allowed by `allowed`.
    ci: PathBuf,
    allowed: PathBuf,
    /// A clone where manifests are committed, pushed to `bare`.
    publisher: PathBuf,
}

fn tools() -> bool {
    nix_available() && ssh_tools()
}

impl Setup {
    /// pi1 at `content`, committed; the remote served by git daemon; prebuilt on with
    /// `prebuilt_extra` in the table (the key is added).
    fn new(content: &str, prebuilt_extra: &str) -> Setup {
        Setup::prepared(content, prebuilt_extra, |_| {})
    }

    /// As [`Setup::new`], with `prepare` applied to the harness before the first commit.
    fn prepared(content: &str, prebuilt_extra: &str, prepare: impl FnOnce(&mut Harness)) -> Setup {
        let mut h = Harness::new();
        h.host("pi1").content = content.into();
        prepare(&mut h);
        h.commit("first");
        let srv = h.path("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let bare = bare_clone(&h.repo, &srv, "homelab.git");
        // Logged: one "Request upload-pack" line per listing or fetch.
        let daemon = GitDaemon::start_logged(&srv, &h.path("git-daemon.log"));
        h.url = daemon.url("homelab.git");
        let keys = h.path("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (cache_secret, cache_public) =
            crate::cache_trust::nix_key(&keys, "cache.sk", "ci-cache-1");
        let cache = h.path("cache");
        h.env = vec![(
            "NIX_CONFIG".into(),
            format!(
                "{NIX_CONFIG}substituters = file://{}\ntrusted-public-keys = {cache_public}\n",
                cache.display()
            ),
        )];
        let (ci, public) = ssh_key(&keys, "ci");
        let allowed = keys.join("allowed_signers");
        std::fs::write(&allowed, format!("ci@example {public}\n")).unwrap();
        h.extra = format!(
            "[prebuilt]\nenable = true\nallowed_signers_file = \"{}\"\n{prebuilt_extra}\n",
            allowed.display()
        );
        // `nix-store` logged like `nix` (the harness's shim), to the same file.
        let shim = h.path("shim/nix-store");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho \"nix-store $*\" >> {}\nexec {} \"$@\"\n",
                h.path("nix-calls.log").display(),
                which("nix-store")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let publisher = h.path("publisher");
        let out = Command::new("git")
            .args(["clone", "-q"])
            .arg(&bare)
            .arg(&publisher)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        git(&publisher, &["checkout", "-q", "--orphan", MANIFEST_BRANCH]);
        git(&publisher, &["rm", "-rqf", "."]);
        Setup {
            h,
            bare,
            _daemon: daemon,
            cache,
            cache_secret,
            ci,
            allowed,
            publisher,
        }
    }

    /// Commits pi1 at `content` and pushes main; returns the commit.
    fn commit(&mut self, content: &str, message: &str) -> String {
        self.h.host("pi1").content = content.into();
        let c = self.h.commit(message);
        push(&self.h.repo, &self.bare);
        c
    }

    /// The workstation: builds the head's pi1 here, copies it into the signed cache,
    /// deletes it from the store. Returns its store path.
    fn build_and_cache(&self) -> String {
        push(&self.h.repo, &self.bare);
        crate::substitute::publish_to(
            &self.h,
            &format!(
                "file://{}?secret-key={}",
                self.cache.display(),
                self.cache_secret.display()
            ),
        )
    }

    /// As [`Setup::build_and_cache`], for `host`.
    fn build_and_cache_host(&self, host: &str) -> String {
        let flake = format!(
            "git+file://{}#nixosConfigurations.\"{host}\".config.system.build.toplevel",
            self.h.repo.display()
        );
        let link = self.h.path("published-host");
        let json = crate::substitute::nix(&[
            "build",
            "--json",
            "--no-write-lock-file",
            "--out-link",
            link.to_str().unwrap(),
            &flake,
        ]);
        let built: Value = serde_json::from_str(&json).unwrap();
        let out = built[0]["outputs"]["out"].as_str().unwrap().to_string();
        let url = format!(
            "file://{}?secret-key={}",
            self.cache.display(),
            self.cache_secret.display()
        );
        crate::substitute::nix(&["copy", "--to", &url, &out]);
        std::fs::remove_file(&link).unwrap();
        let del = Command::new("nix-store")
            .args(["--delete", &out])
            .env("NIX_CONFIG", NIX_CONFIG)
            .output()
            .unwrap();
        assert!(del.status.success(), "deleting {out}: {del:?}");
        out
    }

    /// Puts files on the manifest branch and pushes it.
    fn publish_files(&self, files: &[(String, Vec<u8>)]) {
        for (name, bytes) in files {
            let path = self.publisher.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        git(&self.publisher, &["add", "-A"]);
        git(
            &self.publisher,
            &[
                "-c",
                "user.name=ci",
                "-c",
                "user.email=ci@example.org",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "manifests",
            ],
        );
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.publisher)
            .args(["push", "-q", "-f", "origin"])
            .arg(format!("{MANIFEST_BRANCH}:{MANIFEST_BRANCH}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// A signed manifest (`key`'s ssh signature) for `commit`, stored under `as_commit`'s
    /// name, naming `hosts`.
    fn publish(&self, key: &Path, commit: &str, as_commit: &str, hosts: &[(&str, &str)]) {
        let bytes = manifest(commit, hosts);
        let sig = ssh_sign(key, &self.h.path("keys"), &bytes);
        self.publish_files(&[
            (format!("prebuilt/{as_commit}.json"), bytes),
            (format!("prebuilt/{as_commit}.json.sig"), sig),
        ]);
    }

    fn nix_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.h.path("nix-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many listings and fetches the git daemon served so far.
    fn git_requests(&self) -> usize {
        std::fs::read_to_string(self.h.path("git-daemon.log"))
            .unwrap_or_default()
            .matches("Request upload-pack")
            .count()
    }

    fn clear_nix_log(&self) {
        let _ = std::fs::remove_file(self.h.path("nix-calls.log"));
    }

    fn realisations(&self) -> usize {
        self.nix_log()
            .iter()
            .filter(|l| l.starts_with("nix-store --realise"))
            .count()
    }
}

fn which(tool: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn manifest(commit: &str, hosts: &[(&str, &str)]) -> Vec<u8> {
    let hosts = hosts
        .iter()
        .map(|(h, p)| (h.to_string(), StorePath::parse(p).unwrap()))
        .collect();
    Manifest::new(commit, "2026-12-07T15:00:00Z".parse().unwrap(), hosts)
        .unwrap()
        .to_canonical()
}

fn ssh_sign(key: &Path, dir: &Path, bytes: &[u8]) -> Vec<u8> {
    let file = dir.join("to-sign.json");
    std::fs::write(&file, bytes).unwrap();
    let _ = std::fs::remove_file(dir.join("to-sign.json.sig"));
    let out = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", NAMESPACE, "-f"])
        .arg(key)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read(dir.join("to-sign.json.sig")).unwrap()
}

/// Metrics on, into `<tmp>/textfile`; returns the file.
fn metrics_on(h: &mut Harness) -> PathBuf {
    let dir = h.path("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    h.extra.push_str(&format!(
        "[metrics]\ntextfile_dir = \"{}\"\n",
        dir.display()
    ));
    dir.join("homelab_agent.prom")
}

fn obtained(h: &Harness) -> Value {
    h.history()[0]["obtained"].clone()
}

#[test]
fn a_signed_manifest_deploys_the_prebuilt_system_without_evaluating_here() {
    if !tools() {
        return;
    }
    let mut s = Setup::new("v1", "wait = \"0s\"");
    let prom = metrics_on(&mut s.h);
    let head = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    let system = s.build_and_cache();
    s.publish(&s.ci, &head, &head, &[("pi1", &system), ("pi2", &system)]);
    s.clear_nix_log();

    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.current_system().unwrap(), PathBuf::from(&system));
    assert_eq!(s.h.profile_generation(), Some(1));
    // No evaluation, no build: the one nix call is the fetch of the named path.
    let log = s.nix_log();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert!(
        log[0].starts_with(&format!("nix-store --realise {system} --add-root ")),
        "{log:#?}"
    );
    // It came from the cache, not from a build.
    let info = crate::substitute::nix(&["path-info", "--json", &system]);
    assert!(!info.contains("\"ultimate\":true"), "{info}");
    let o = obtained(&s.h);
    assert_eq!(o["how"], "prebuilt", "{o}");
    assert_eq!(o["signer"], "ci@example", "{o}");
    assert!(o["fetch_ms"].is_u64(), "{o}");
    assert!(o.get("fallback").is_none(), "{o}");
    let status = s.h.status();
    assert_eq!(
        status["last_run"]["obtained"]["how"], "prebuilt",
        "{status}"
    );
    let human = s.h.agent(&["status"]).stdout();
    assert!(human.contains("prebuilt (fetched in"), "{human}");
    assert!(human.contains("manifest signed by ci@example"), "{human}");
    if crate::support::require("promtool") {
        let text = crate::metrics::promtool_check(&prom, "prebuilt");
        assert!(
            text.contains("homelab_agent_last_run_obtained{how=\"prebuilt\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("homelab_agent_last_run_fetch_duration_seconds "),
            "{text}"
        );
    }
}

/// One commit per refusal: each is built here, and the status says why.
#[test]
fn every_manifest_the_agent_must_not_use_falls_back_to_a_native_build_saying_why() {
    if !tools() {
        return;
    }
    let mut s = Setup::new("v0", "wait = \"0s\"");
    let prom = metrics_on(&mut s.h);
    let (stranger, _) = ssh_key(&s.h.path("keys"), "stranger");
    type Make = fn(&Setup, &Path, &str, &str);
    let cases: Vec<(&str, Make, &str, &str)> = vec![
        (
            "missing, no branch yet",
            |_, _, _, _| {},
            "missing",
            "the remote has no branch \"homelab-prebuilt\" with prebuilt manifests",
        ),
        (
            "unsigned",
            |s, _, c, p| s.publish_files(&[(format!("prebuilt/{c}.json"), manifest(c, &[("pi1", p)]))]),
            "unsigned",
            "is not signed",
        ),
        (
            "missing from the branch",
            |_, _, _, _| {},
            "missing",
            "branch \"homelab-prebuilt\" has no prebuilt/",
        ),
        (
            "signed by an unknown key",
            |s, stranger, c, p| s.publish(stranger, c, c, &[("pi1", p)]),
            "untrusted-key",
            "is signed by a key that no entry of",
        ),
        (
            "replayed from another commit",
            |s, _, c, p| s.publish(&s.ci, &"0".repeat(40), c, &[("pi1", p)]),
            "other-commit",
            "it is for commit \"0000000000000000000000000000000000000000\", not this one",
        ),
        (
            "for another host",
            |s, _, c, p| s.publish(&s.ci, c, c, &[("pi2", p)]),
            "no-host",
            "it has no system for host \"pi1\" (it lists: pi2)",
        ),
        (
            "naming a path the cache lost",
            |s, _, c, _| {
                s.publish(&s.ci, c, c, &[("pi1", "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi1-lost")])
            },
            "not-fetched",
            "nix-store --realise /nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi1-lost failed",
        ),
    ];
    for (i, (what, make, reason, says)) in cases.into_iter().enumerate() {
        let commit = s.commit(&format!("v{}", i + 1), what);
        let system = s.build_and_cache();
        make(&s, &stranger, &commit, &system);
        s.clear_nix_log();
        let run = s.h.run_once();
        assert_eq!(run.code(), 0, "{what}: {}", run.stderr());
        assert_eq!(s.h.history()[0]["outcome"], "deployed", "{what}");
        assert_eq!(
            s.h.current_system().unwrap(),
            PathBuf::from(&system),
            "{what}"
        );
        let log = s.nix_log();
        assert!(
            log.iter()
                .any(|l| l.contains(" build ") && l.contains("git+file://")),
            "{what}: built here: {log:#?}"
        );
        let o = obtained(&s.h);
        assert_eq!(o["how"], "built-here", "{what}: {o}");
        assert_eq!(o["fallback"], reason, "{what}: {o}");
        assert!(o["why"].as_str().unwrap().contains(says), "{what}: {o}");
        assert!(
            run.stderr().contains(&format!("(prebuilt: {reason})")),
            "{what}: {}",
            run.stderr()
        );
        // Not the commit's failure: nothing is marked bad.
        assert!(s.h.status()["bad_commit"].is_null(), "{what}");
        if crate::support::require("promtool") {
            let text = crate::metrics::promtool_check(&prom, what);
            let series =
                format!("homelab_agent_last_run_prebuilt_fallback{{reason=\"{reason}\"}} 1\n");
            assert!(text.contains(&series), "{what}: {text}");
        }
    }
    let human = s.h.agent(&["status"]).stdout();
    assert!(
        human.contains("built here (prebuilt: not-fetched"),
        "{human}"
    );
}

#[test]
fn a_late_manifest_is_waited_for_then_the_commit_is_built_here() {
    if !tools() {
        return;
    }
    let s = Setup::new("v1", "wait = \"2s\"");
    s.clear_nix_log();
    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let status = s.h.status();
    assert_eq!(status["last_run"]["outcome"], "waiting", "{status}");
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("waiting for the prebuilt manifest of"),
        "{status}"
    );
    assert!(
        s.nix_log().is_empty(),
        "nothing evaluated while waiting: {:?}",
        s.nix_log()
    );
    assert!(s.h.history().is_empty(), "news, not history");
    std::thread::sleep(Duration::from_millis(2100));
    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let o = obtained(&s.h);
    assert_eq!(o["fallback"], "late", "{o}");
    assert!(
        o["why"]
            .as_str()
            .unwrap()
            .ends_with("and [prebuilt] wait (2s) has run out"),
        "{o}"
    );
}

/// A poll that waits for a manifest is one round trip (the listing) while neither the
/// head nor the manifest branch moved; it fetches when the branch moves.
#[test]
fn a_poll_waiting_for_a_manifest_fetches_only_when_the_manifest_branch_moves() {
    if !tools() {
        return;
    }
    let s = Setup::new("v1", "wait = \"10m\"");
    let head = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    // Something else on the manifest branch: it is there, without this head's manifest.
    s.publish_files(&[("prebuilt/README".into(), b"manifests\n".to_vec())]);
    let poll = |what: &str| {
        let before = s.git_requests();
        let run = s.h.run_once();
        assert_eq!(run.code(), 0, "{what}: {}", run.stderr());
        (s.h.status(), s.git_requests() - before)
    };
    let (status, requests) = poll("first");
    assert_eq!(status["last_run"]["outcome"], "waiting", "{status}");
    assert_eq!(requests, 2, "the listing and the fetch");
    let wait_file = s.h.path("runtime").join("prebuilt-wait.json");
    let noted = std::fs::read(&wait_file).expect("the wait is noted");

    let (status, requests) = poll("nothing moved");
    assert_eq!(status["last_run"]["outcome"], "waiting", "{status}");
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("waiting for the prebuilt manifest of"),
        "{status}"
    );
    assert_eq!(requests, 1, "only the listing: nothing new to fetch");
    assert_eq!(std::fs::read(&wait_file).unwrap(), noted, "nothing written");
    assert!(s.nix_log().is_empty(), "{:?}", s.nix_log());

    // The manifest comes: the branch moved, so the poll fetches it and deploys.
    let system = s.build_and_cache();
    s.publish(&s.ci, &head, &head, &[("pi1", &system)]);
    let (_, requests) = poll("manifest published");
    assert_eq!(requests, 2, "the listing and the fetch");
    assert_eq!(obtained(&s.h)["how"], "prebuilt");
    assert_eq!(s.h.current_system().unwrap(), PathBuf::from(&system));
}

/// "A manifest may never make the agent deploy a commit it would refuse": a good
/// manifest for a downgrade, an unsigned head, or a commit known bad is never fetched.
#[test]
fn a_manifest_never_deploys_a_commit_the_agent_would_refuse() {
    if !tools() {
        return;
    }
    // Downgrade: v1, then v2, then main reset to v1 whose manifest is there.
    let mut s = Setup::new("v1", "wait = \"0s\"");
    let v1 = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    let sys1 = s.build_and_cache();
    s.publish(&s.ci, &v1, &v1, &[("pi1", &sys1)]);
    s.h.run_once().expect(0);
    assert_eq!(obtained(&s.h)["how"], "prebuilt");
    s.commit("v2", "second");
    s.h.run_once().expect(0);
    git(&s.h.repo, &["reset", "-q", "--hard", &v1]);
    push(&s.h.repo, &s.bare);
    s.clear_nix_log();
    let run = s.h.run_once();
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.status()["refused"]["reason"], "downgrade");
    assert_eq!(s.realisations(), 0, "{:?}", s.nix_log());

    // A commit whose health fails is rolled back and marked bad, and is never fetched
    // again however good its manifest.
    let mut s = Setup::new("v1", "wait = \"0s\"");
    s.h.run_once().expect(0);
    s.h.host("pi1").healthy = false;
    let bad = s.commit("broken", "broken");
    let sys = s.build_and_cache();
    s.publish(&s.ci, &bad, &bad, &[("pi1", &sys)]);
    s.clear_nix_log();
    let run = s.h.run_once();
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert_eq!(obtained(&s.h)["how"], "prebuilt");
    assert_eq!(s.h.history()[0]["outcome"], "failed");
    assert_eq!(s.realisations(), 1);
    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.status()["last_run"]["outcome"], "skipped");
    assert_eq!(
        s.realisations(),
        1,
        "a bad commit is not fetched again: {:?}",
        s.nix_log()
    );
}

#[test]
fn an_unsigned_head_is_refused_before_its_manifest_is_looked_at() {
    if !tools() {
        return;
    }
    let mut s = Setup::new("v1", "wait = \"0s\"");
    let (_, public) = ssh_key(&s.h.path("keys"), "dev");
    let dev_allowed = s.h.path("keys/dev_allowed");
    std::fs::write(&dev_allowed, format!("dev@example {public}\n")).unwrap();
    s.h.source_extra = format!(
        "verify = \"ssh\"\nallowed_signers_file = \"{}\"",
        dev_allowed.display()
    );
    let head = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    let system = s.build_and_cache();
    s.publish(&s.ci, &head, &head, &[("pi1", &system)]);
    s.clear_nix_log();
    let run = s.h.run_once();
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.status()["refused"]["reason"], "unsigned");
    assert_eq!(s.realisations(), 0, "{:?}", s.nix_log());
    assert!(s.h.current_system().is_none());
    let _ = &s.allowed;
    let _ = s.commit("v2", "still unsigned");
}

/// A GnuPG home with one signing key (no passphrase) for `uid`, and its public keyring.
fn gpg_key(dir: &Path, uid: &str) -> (PathBuf, PathBuf) {
    let home = dir.join(format!("gnupg-{}", uid.split('@').next().unwrap()));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .arg("--batch")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {out:?}");
        out.stdout
    };
    gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        "never",
    ]);
    let keyring = dir.join(format!("{}.gpg", uid.split('@').next().unwrap()));
    std::fs::write(&keyring, gpg(&["--export"])).unwrap();
    (home, keyring)
}

/// An armored detached signature of `bytes` by the key in `home`.
fn gpg_sign(home: &Path, bytes: &[u8]) -> Vec<u8> {
    let file = home.join("to-sign.json");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--yes",
            "--armor",
            "--detach-sign",
            "--output",
            "-",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// Stops the gpg-agent a GnuPG home started (none may outlive the test).
struct StopAgents(Vec<PathBuf>);

impl Drop for StopAgents {
    fn drop(&mut self) {
        for home in &self.0 {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", home)
                .args(["--kill", "all"])
                .status();
        }
    }
}

#[test]
fn a_gpg_signed_manifest_deploys_and_one_by_an_unknown_gpg_key_is_built_here() {
    if !tools() || !crate::trust::gpg_tools() {
        return;
    }
    let mut s = Setup::new("v1", "");
    let keys = s.h.path("keys");
    let (ci_home, keyring) = gpg_key(&keys, "ci@example.org");
    let (other_home, _) = gpg_key(&keys, "other@example.org");
    let _stop = StopAgents(vec![ci_home.clone(), other_home.clone()]);
    s.h.extra = format!(
        "[prebuilt]\nenable = true\nkeyring_file = \"{}\"\nwait = \"0s\"\n",
        keyring.display()
    );
    let head = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    let system = s.build_and_cache();
    let bytes = manifest(&head, &[("pi1", &system)]);
    let asc = gpg_sign(&ci_home, &bytes);
    s.publish_files(&[
        (format!("prebuilt/{head}.json"), bytes),
        (format!("prebuilt/{head}.json.asc"), asc),
    ]);
    s.clear_nix_log();
    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.current_system().unwrap(), PathBuf::from(&system));
    assert_eq!(s.realisations(), 1, "{:?}", s.nix_log());
    assert_eq!(s.nix_log().len(), 1, "{:?}", s.nix_log());
    let o = obtained(&s.h);
    assert_eq!(o["how"], "prebuilt", "{o}");
    assert!(
        o["signer"].as_str().unwrap().len() >= 40,
        "a fingerprint: {o}"
    );

    // The next commit's manifest is signed by a key not in the keyring; then one only
    // signed with ssh while [prebuilt] takes gpg.
    for (i, (what, reason, says)) in [
        ("unknown gpg key", "untrusted-key", "which is not in"),
        (
            "ssh signature",
            "untrusted-key",
            "carries a signature in the other format",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let commit = s.commit(&format!("v{}", i + 2), what);
        let system = s.build_and_cache();
        let bytes = manifest(&commit, &[("pi1", &system)]);
        let sig = match i {
            0 => (
                format!("prebuilt/{commit}.json.asc"),
                gpg_sign(&other_home, &bytes),
            ),
            _ => (
                format!("prebuilt/{commit}.json.sig"),
                ssh_sign(&s.ci, &keys, &bytes),
            ),
        };
        s.publish_files(&[(format!("prebuilt/{commit}.json"), bytes), sig]);
        let run = s.h.run_once();
        assert_eq!(run.code(), 0, "{what}: {}", run.stderr());
        assert_eq!(
            s.h.current_system().unwrap(),
            PathBuf::from(&system),
            "{what}"
        );
        let o = obtained(&s.h);
        assert_eq!(o["how"], "built-here", "{what}: {o}");
        assert_eq!(o["fallback"], reason, "{what}: {o}");
        assert!(o["why"].as_str().unwrap().contains(says), "{what}: {o}");
    }
}

/// The daemon makes its fetch in a child process (source/child.rs): the manifest files
/// come back in the child's answer, and the daemon deploys the prebuilt system as
/// `run --once` does.
#[test]
fn the_daemon_gets_the_manifest_through_its_git_child() {
    if !tools() {
        return;
    }
    let mut s = Setup::new("v1", "wait = \"0s\"");
    let head = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    let system = s.build_and_cache();
    s.publish(&s.ci, &head, &head, &[("pi1", &system)]);
    s.clear_nix_log();
    s.h.extra
        .push_str("[run]\ninterval = \"1h\"\njitter = \"0s\"\n");
    let daemon =
        s.h.command(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    crate::daemon_git::cycle_after(&s.h.path("runtime/last-poll.json"), None);
    let stderr = crate::daemon_git::stop(daemon);
    assert_eq!(
        s.h.current_system().unwrap(),
        PathBuf::from(&system),
        "{stderr}"
    );
    assert_eq!(obtained(&s.h)["how"], "prebuilt", "{stderr}");
    assert_eq!(s.nix_log().len(), 1, "{:?}", s.nix_log());
}

/// Map mode (the generic image): the host the map resolves is the one looked up in the
/// manifest, and its system (not pi1's) is fetched.
#[test]
fn map_mode_fetches_the_mapped_hosts_system() {
    if !tools() {
        return;
    }
    let mut s = Setup::prepared("v1", "wait = \"0s\"", |h| {
        let id = h.path("identity");
        std::fs::create_dir_all(&id).unwrap();
        std::fs::write(id.join("serial-number"), "10000000abcdef01\0").unwrap();
        h.host_table = "map = \"machines.toml\"".into();
        h.paths_extra = format!(
            "serial_number = \"{d}/serial-number\"\ncpuinfo = \"{d}/cpuinfo\"\nnet_class = \"{d}/net\"\nhost_file = \"{d}/homelab-host\"",
            d = id.display()
        );
        h.host("pi2").content = "v1".into();
        std::fs::write(
            h.repo.join("machines.toml"),
            "serial-10000000abcdef01 = \"pi2\"\n",
        )
        .unwrap();
    });
    // A manifest without pi2: built here, and the reason names the mapped host.
    let head = git_out(&s.h.repo, &["rev-parse", "HEAD"]);
    let pi1 = s.build_and_cache_host("pi1");
    s.publish(&s.ci, &head, &head, &[("pi1", &pi1)]);
    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let o = obtained(&s.h);
    assert_eq!(o["fallback"], "no-host", "{o}");
    assert!(
        o["why"]
            .as_str()
            .unwrap()
            .contains("no system for host \"pi2\" (it lists: pi1)"),
        "{o}"
    );
    assert!(crate::support::base(&s.h.current_system().unwrap()).contains("pi2"));

    s.h.host("pi2").content = "v2".into();
    let c2 = s.h.commit("pi2 v2");
    push(&s.h.repo, &s.bare);
    let pi1 = s.build_and_cache_host("pi1");
    let pi2 = s.build_and_cache_host("pi2");
    s.publish(&s.ci, &c2, &c2, &[("pi1", &pi1), ("pi2", &pi2)]);
    s.clear_nix_log();
    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.current_system().unwrap(), PathBuf::from(&pi2));
    assert_eq!(obtained(&s.h)["how"], "prebuilt");
    assert_eq!(s.nix_log().len(), 1, "{:?}", s.nix_log());
}

/// The whole path with the real workstation command: `homelab-agent publish` builds the
/// commit, copies it into the signed cache and pushes the signed manifest; the system is
/// then deleted from the store (the Pi never had it), and the agent deploys it with only
/// the fetch.
#[test]
fn what_publish_pushes_is_deployed_without_evaluating_here() {
    if !tools() {
        return;
    }
    let mut s = Setup::new("v1", "wait = \"0s\"");
    let head = s.commit("v2", "second");
    let out = Command::new(crate::support::BIN)
        .args(["publish", "--json", "--to"])
        .arg(format!(
            "file://{}?secret-key={}",
            s.cache.display(),
            s.cache_secret.display()
        ))
        .arg("--ssh-key")
        .arg(&s.ci)
        .arg("--repo")
        .arg(&s.h.repo)
        .arg("--remote")
        .arg(&s.bare)
        .env("NIX_CONFIG", NIX_CONFIG)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "publish: {out:?}");
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(published["commit"], head.as_str());
    let system = published["hosts"]["pi1"].as_str().unwrap().to_string();
    let del = Command::new("nix-store")
        .args(["--delete", &system])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(del.status.success(), "{del:?}");
    s.clear_nix_log();

    let run = s.h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(s.h.current_system().unwrap(), PathBuf::from(&system));
    let log = s.nix_log();
    assert_eq!(log.len(), 1, "only the fetch: {log:#?}");
    assert!(
        log[0].starts_with(&format!("nix-store --realise {system} ")),
        "{log:#?}"
    );
    let o = obtained(&s.h);
    assert_eq!(o["how"], "prebuilt", "{o}");
    assert_eq!(o["signer"], "ci@example", "{o}");
}
