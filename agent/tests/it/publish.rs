//! `homelab-agent publish` with the real parts: the fake system built by the real nix,
//! copied into a `file://` binary cache signed with a key from `nix key generate-secret`,
//! the manifest signed by ssh-keygen or gpg and pushed with git to a bare repository.
//! The manifest's signature is then checked with the verifiers the agents use
//! (`ssh-keygen -Y verify`, `gpgv`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::servers::{bare_clone, ssh_keygen};
use crate::support::{git_out, nix_available, require, Harness, Run, BIN, NIX_CONFIG};

fn publish(h: &Harness, args: &[&str]) -> Run {
    let started = std::time::Instant::now();
    let output = Command::new(BIN)
        .arg("publish")
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("HOMELAB_AGENT_LOG", "warn")
        .current_dir(&h.repo)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run homelab-agent publish");
    Run {
        output,
        elapsed: started.elapsed(),
    }
}

/// The file `path` on the branch `homelab-prebuilt` of the bare repository.
fn on_branch(bare: &Path, path: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(bare)
        .args(["show", &format!("refs/heads/homelab-prebuilt:{path}")])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

fn ready() -> bool {
    nix_available() && crate::trust::ssh_tools() && require("git")
}

struct Setup {
    h: Harness,
    bare: PathBuf,
    cache: PathBuf,
    url: String,
    public: String,
    commit: String,
}

fn setup() -> Setup {
    let mut h = Harness::new();
    h.host("pi1").content = "one".into();
    h.host("pi2").content = "two".into();
    let commit = h.commit("two hosts");
    let srv = h.path("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = bare_clone(&h.repo, &srv, "homelab.git");
    let cache = h.path("cache");
    let (secret, public) = crate::cache_trust::nix_key(h.dir.path(), "cache.sec", "publish-test-1");
    let url = format!("file://{}?secret-key={}", cache.display(), secret.display());
    Setup {
        h,
        bare,
        cache,
        url,
        public,
        commit,
    }
}

#[test]
fn publish_builds_every_host_copies_them_signed_and_pushes_an_ssh_signed_manifest() {
    if !ready() {
        return;
    }
    let s = setup();
    let key = s.h.path("publisher");
    let pubkey = ssh_keygen(&key);
    let run = publish(
        &s.h,
        &[
            "--to",
            &s.url,
            "--ssh-key",
            key.to_str().unwrap(),
            "--remote",
            s.bare.to_str().unwrap(),
            "--json",
        ],
    );
    run.expect(0);
    let out: Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(out["commit"], s.commit.as_str());
    assert_eq!(
        out["cache"],
        format!("file://{}", s.cache.display()),
        "the secret key's path is not shown"
    );
    assert_eq!(out["pushed_to"], s.bare.to_str().unwrap());

    // The manifest names both hosts, at the commit, and is what the agents parse.
    let name = format!("prebuilt/{}.json", s.commit);
    let text = on_branch(&s.bare, &name).expect("the manifest is on the remote branch");
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["commit"], s.commit.as_str());
    assert_eq!(manifest["format"], 1);
    let hosts = manifest["hosts"].as_object().unwrap();
    assert_eq!(hosts.keys().collect::<Vec<_>>(), ["pi1", "pi2"]);
    assert_eq!(out["hosts"], manifest["hosts"]);
    homelab_agent::prebuilt::manifest::Manifest::parse(text.as_bytes())
        .expect("the agent's parser takes what publish writes");

    // Every path is in the cache, signed with the cache key.
    for path in hosts.values() {
        let hash = path.as_str().unwrap().trim_start_matches("/nix/store/");
        let hash = &hash[..32];
        let narinfo = std::fs::read_to_string(s.cache.join(format!("{hash}.narinfo")))
            .unwrap_or_else(|e| panic!("{path} not in the cache: {e}"));
        let key_name = s.public.split(':').next().unwrap();
        assert!(
            narinfo.contains(&format!("Sig: {key_name}:")),
            "unsigned: {narinfo}"
        );
    }

    // The signature verifies with OpenSSH's verifier in the manifests' namespace, and
    // not as a git commit signature.
    let sig = on_branch(&s.bare, &format!("{name}.sig")).expect("the .sig is beside it");
    let dir = s.h.path("verify");
    std::fs::create_dir_all(&dir).unwrap();
    let (allowed, sig_file, payload) = (dir.join("allowed"), dir.join("m.sig"), dir.join("m"));
    std::fs::write(&allowed, format!("publisher@example.org {pubkey}\n")).unwrap();
    std::fs::write(&sig_file, sig).unwrap();
    std::fs::write(&payload, &text).unwrap();
    let verify = |namespace: &str| {
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", "publisher@example.org", "-n", namespace, "-s"])
            .arg(&sig_file)
            .stdin(std::fs::File::open(&payload).unwrap())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify("homelab-prebuilt"));
    assert!(
        !verify("git"),
        "a manifest signature must not pass as a commit's"
    );

    // A second commit is published on top: the first manifest stays.
    let mut h = s.h;
    h.host("pi1").content = "one, again".into();
    let second = h.commit("second");
    publish(
        &h,
        &[
            "--to",
            &s.url,
            "--ssh-key",
            key.to_str().unwrap(),
            "--remote",
            s.bare.to_str().unwrap(),
            "--host",
            "pi1",
        ],
    )
    .expect(0);
    assert!(
        on_branch(&s.bare, &name).is_some(),
        "the first manifest was lost"
    );
    let text = on_branch(&s.bare, &format!("prebuilt/{second}.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        manifest["hosts"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["pi1"]
    );
    let log = git_out(
        &s.bare,
        &["log", "--format=%s", "refs/heads/homelab-prebuilt"],
    );
    assert_eq!(log.lines().count(), 2, "{log}");
}

#[test]
fn publish_signs_with_gpg_and_gpgv_verifies_it() {
    if !(ready() && require("gpg") && require("gpgv")) {
        return;
    }
    let s = setup();
    let home = s.h.path("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {out:?}");
        out.stdout
    };
    gpg(&[
        "--quick-gen-key",
        "CI <ci@example.org>",
        "ed25519",
        "sign",
        "never",
    ]);
    let run = Command::new(BIN)
        .args([
            "publish",
            "--to",
            &s.url,
            "--gpg-key",
            "ci@example.org",
            "--no-push",
        ])
        .arg("--repo")
        .arg(&s.h.repo)
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("GNUPGHOME", &home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "all"])
        .status();
    assert!(run.status.success(), "{run:?}");
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.contains("not pushed (--no-push)"), "{said}");
    assert!(
        on_branch(&s.bare, &format!("prebuilt/{}.json", s.commit)).is_none(),
        "--no-push pushed"
    );
    // On the local branch, with an armored signature that gpgv accepts.
    let show = |path: &str| {
        git_out(
            &s.h.repo,
            &["show", &format!("refs/heads/homelab-prebuilt:{path}")],
        )
    };
    let name = format!("prebuilt/{}.json", s.commit);
    let dir = s.h.path("verify");
    std::fs::create_dir_all(&dir).unwrap();
    let keyring = dir.join("keyring.gpg");
    std::fs::write(&keyring, gpg(&["--export"])).unwrap();
    // git_out trims; the signed bytes end with a newline.
    std::fs::write(dir.join("m"), format!("{}\n", show(&name))).unwrap();
    std::fs::write(
        dir.join("m.asc"),
        format!("{}\n", show(&format!("{name}.asc"))),
    )
    .unwrap();
    let ok = Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(dir.join("m.asc"))
        .arg(dir.join("m"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "gpgv: {ok:?}");
}

#[test]
fn a_commit_that_fails_to_evaluate_publishes_nothing() {
    if !ready() {
        return;
    }
    let mut s = setup();
    s.h.host("pi2").build = "eval-throw".into();
    let commit = s.h.commit("broken pi2");
    let key = s.h.path("publisher");
    ssh_keygen(&key);
    let run = publish(
        &s.h,
        &[
            "--to",
            &s.url,
            "--ssh-key",
            key.to_str().unwrap(),
            "--remote",
            s.bare.to_str().unwrap(),
        ],
    );
    run.expect(1);
    let err = run.stderr();
    assert!(
        err.contains(&format!("the build failed for commit {commit}")),
        "{err}"
    );
    assert!(err.contains("deliberate eval error in pi2"), "{err}");
    assert!(err.contains("hint: fix the commit"), "{err}");
    assert!(
        !s.cache.join("nix-cache-info").exists(),
        "something was copied to the cache"
    );
    let branches = git_out(&s.bare, &["branch", "--list", "homelab-prebuilt"]);
    assert!(branches.is_empty(), "a manifest was pushed: {branches}");
}

#[test]
fn bad_publish_arguments_say_what_to_give() {
    if !require("git") {
        return;
    }
    let h = Harness::new();
    let plain = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("NIX_CONFIG", NIX_CONFIG)
            .current_dir(&h.repo)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // No signer: clap says which options.
    let out = plain(&["publish", "--to", "file:///tmp/x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ssh-key") && err.contains("--gpg-key"),
        "{err}"
    );
    // A config file is for agents.
    let out = plain(&[
        "--config",
        "/etc/x.toml",
        "publish",
        "--to",
        "file:///tmp/x",
        "--ssh-key",
        "k",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uses no config file"));
    // Not a repository: the configuration's fault, with the path.
    let out = plain(&[
        "publish",
        "--to",
        "file:///tmp/x",
        "--ssh-key",
        "k",
        "--repo",
        "/nonexistent/repo",
    ]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/repo") && err.contains("hint: give --repo"),
        "{err}"
    );
    // A revision that is not there (the empty repository has none).
    let out = plain(&[
        "publish",
        "--to",
        "file:///tmp/x",
        "--ssh-key",
        "k",
        "--commit",
        "v9",
    ]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"v9\""));
    // A signing key that is not there is found before anything is built.
    h.commit("one");
    let started = std::time::Instant::now();
    let out = plain(&[
        "publish",
        "--to",
        "file:///tmp/x",
        "--ssh-key",
        "/nonexistent/key",
    ]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the ssh key /nonexistent/key") && err.contains("cannot open"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "it built first"
    );
    // A token in a URL would reach git's or nix's command line and messages: refused
    // before anything runs, saying what to give instead.
    let out = plain(&[
        "publish",
        "--to",
        "file:///tmp/x",
        "--ssh-key",
        "/nonexistent/key",
        "--remote",
        "https://ci:ghp_secret123@github.com/me/homelab.git",
    ]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("ghp_secret123"), "the token was shown: {err}");
    assert!(
        err.contains("--remote has a password or token") && err.contains("credential helper"),
        "{err}"
    );
    let out = plain(&[
        "publish",
        "--to",
        "https://u:pw123@cache.example.org/",
        "--ssh-key",
        "/nonexistent/key",
    ]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("pw123") && err.contains("--to has a password"),
        "{err}"
    );
    // A timeout out of range.
    let out = plain(&["publish", "--to", "x", "--ssh-key", "k", "--timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_rejected_push_is_tried_again_on_the_new_tip() {
    if !ready() {
        return;
    }
    let s = setup();
    let key = s.h.path("publisher");
    ssh_keygen(&key);
    // Another publisher wins the race: the remote's first push attempt is refused after
    // the branch moved on (what a non-fast-forward looks like from here: flag `!`).
    let hook = s.bare.join("hooks/pre-receive");
    let count = s.h.path("pushes");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho x >> {c}\n[ $(wc -l < {c}) -gt 1 ] || {{ echo 'someone else pushed' >&2; exit 1; }}\n",
            c = count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    publish(
        &s.h,
        &[
            "--to",
            &s.url,
            "--ssh-key",
            key.to_str().unwrap(),
            "--remote",
            s.bare.to_str().unwrap(),
        ],
    )
    .expect(0);
    let attempts = std::fs::read_to_string(&count).unwrap().lines().count();
    assert_eq!(attempts, 2, "one refusal, then the push");
    assert!(on_branch(&s.bare, &format!("prebuilt/{}.json", s.commit)).is_some());

    // Refused every time: exit 75 (run it again), naming the branch and the remote.
    std::fs::write(&hook, "#!/bin/sh\nexit 1\n").unwrap();
    let run = publish(
        &s.h,
        &[
            "--to",
            &s.url,
            "--ssh-key",
            key.to_str().unwrap(),
            "--remote",
            s.bare.to_str().unwrap(),
        ],
    );
    run.expect(75);
    let err = run.stderr();
    assert!(
        err.contains("the push of homelab-prebuilt to") && err.contains("was rejected"),
        "{err}"
    );
}
