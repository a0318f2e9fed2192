//! With signatures verified, flake inputs must be locked by the signed commit (issue 23,
//! item 2), with real git, nix and ssh-keygen: a flake whose input is a local git
//! repository. Without a committed flake.lock the signed head is refused (configuration,
//! nothing built, no commit blamed) instead of deploying whatever the input repository
//! holds; with the lock it deploys the locked input, and an unsigned push to the input
//! repository changes nothing; a lock that lacks an input the flake declares is refused
//! too (nix would complete it unlocked).

use std::path::Path;
use std::process::Command;

use crate::support::{git, git_out, nix_available, Harness, NIX_CONFIG};
use crate::trust::{ssh_key, ssh_tools};

/// The fake flake, with an input `extra` (a git repository, not a flake) whose `payload`
/// file becomes part of the system.
fn flake_with_input(input: &Path) -> String {
    homelab_agent::fake_system::FLAKE
        .replace(
            "outputs = { self }:",
            &format!(
                "inputs.extra = {{ url = \"git+file://{}\"; flake = false; }};\n  outputs = {{ self, extra }}:",
                input.display()
            ),
        )
        .replace(
            "inherit (h) mode build content kernel;",
            "inherit (h) mode build kernel;\n          content = h.content + builtins.readFile \"${extra}/payload\";",
        )
}

fn input_repo(h: &Harness, payload: &str) -> std::path::PathBuf {
    let dir = h.path("input");
    if !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
    }
    std::fs::write(dir.join("payload"), payload).unwrap();
    git(&dir, &["add", "-A"]);
    git(
        &dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            payload,
        ],
    );
    dir
}

/// Writes the flake (with the input), sets flake.lock to `lock` (`None`: no file), and
/// commits it signed with `key`.
fn signed_commit(
    h: &Harness,
    input: &Path,
    key: &Path,
    lock: Option<&str>,
    message: &str,
) -> String {
    homelab_agent::fake_system::write(&h.repo, &h.fake, &h.hosts).unwrap();
    std::fs::write(h.repo.join("flake.nix"), flake_with_input(input)).unwrap();
    match lock {
        Some(text) => std::fs::write(h.repo.join("flake.lock"), text).unwrap(),
        None => std::fs::remove_file(h.repo.join("flake.lock")).unwrap(),
    }
    git(&h.repo, &["add", "-A"]);
    let signing = format!("user.signingkey={}", key.display());
    git(
        &h.repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            message,
        ],
    );
    git_out(&h.repo, &["rev-parse", "HEAD"])
}

/// `nix flake lock` in the work tree: the real lock of the current input.
fn real_lock(h: &Harness) -> String {
    let out = Command::new("nix")
        .args(["flake", "lock"])
        .current_dir(&h.repo)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(out.status.success(), "nix flake lock: {out:?}");
    std::fs::read_to_string(h.repo.join("flake.lock")).unwrap()
}

fn deployed_content(h: &Harness) -> String {
    let system = h.status()["deployed"]["system"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    std::fs::read_to_string(Path::new(&system).join("content"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

#[test]
fn unlocked_inputs_are_refused_while_signatures_are_verified() {
    if !nix_available() || !ssh_tools() {
        return;
    }
    let mut h = Harness::new();
    let keys = h.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_pub) = ssh_key(&keys, "alice");
    let allowed = keys.join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.org {alice_pub}\n")).unwrap();
    h.source_extra = format!(
        "verify = \"ssh\"\nallowed_signers_file = \"{}\"\n",
        allowed.display()
    );
    let input = input_repo(&h, "good");

    // Signed, but no flake.lock: refused before nix, not blamed on the commit.
    let c1 = signed_commit(&h, &input, &alice, None, "no lock");
    let run = h.run_once();
    run.expect(78);
    let said = format!(
        "commit {} has no flake.lock: with [source] verify on, every flake input must be locked by the signed commit",
        &c1[..8]
    );
    assert!(run.stderr().contains(&said), "{}", run.stderr());
    assert!(
        run.stderr().contains("hint: run `nix flake lock`"),
        "{}",
        run.stderr()
    );
    let s = h.status();
    assert!(s["bad_commit"].is_null(), "{s}");
    assert_eq!(h.nix_builds(), 0, "an unlocked head reached nix");
    assert_eq!(h.profile_generation(), None);

    // A lock entry without its content hash: the same.
    let lock = real_lock(&h);
    let hashless = {
        let mut v: serde_json::Value = serde_json::from_str(&lock).unwrap();
        v["nodes"]["extra"]["locked"]
            .as_object_mut()
            .unwrap()
            .remove("narHash");
        v.to_string()
    };
    signed_commit(&h, &input, &alice, Some(&hashless), "hashless lock");
    let run = h.run_once();
    run.expect(78);
    assert!(
        run.stderr()
            .contains("does not lock the input \"extra\" (no \"narHash\" in its \"locked\" entry)"),
        "{}",
        run.stderr()
    );

    // Locked: deployed with the locked input.
    signed_commit(&h, &input, &alice, Some(&lock), "locked");
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(1));
    assert!(
        deployed_content(&h).ends_with("good"),
        "{}",
        deployed_content(&h)
    );

    // An unsigned push to the input repository, then a signed commit on main that does
    // not touch the lock: the locked input is built, not the unsigned one.
    input_repo(&h, "evil");
    h.host("pi1").content = "v2".into();
    signed_commit(&h, &input, &alice, Some(&lock), "unrelated change");
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(2));
    let content = deployed_content(&h);
    assert!(
        content.ends_with("good") && !content.contains("evil"),
        "{content}"
    );

    // A lock that lacks the input the flake declares (committed before it was added):
    // nix may not complete it unlocked.
    h.host("pi1").content = "v3".into();
    signed_commit(
        &h,
        &input,
        &alice,
        Some(homelab_agent::fake_system::FLAKE_LOCK),
        "stale lock",
    );
    let builds = h.nix_builds();
    let run = h.run_once();
    run.expect(78);
    assert!(
        run.stderr()
            .contains("has a flake.lock that does not pin the input \"extra\" that flake.nix uses"),
        "{}",
        run.stderr()
    );
    assert_eq!(h.nix_builds(), builds, "a stale lock reached the build");
    assert_eq!(h.profile_generation(), Some(2));
    assert!(h.status()["bad_commit"].is_null());
}
