//! A branch that points at an annotated, ssh-signed tag object instead of a commit
//! (issue 23, item 4), served by real git over nginx (`git http-backend`) and over
//! file://: the agent deploys the commit the tag peels to, and the next poll finds it
//! up to date. A branch whose tag leads to a tree is refused with an error saying so
//! (configuration: no commit is blamed).

use std::path::Path;

use crate::support::servers::{closed_port, served};
use crate::support::{git, git_out, nix_available, require_that};
use crate::tls::{agent, tools_available, Nginx, Pki, Site};

fn ssh_keygen() -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v ssh-keygen"])
        .output()
        .is_ok_and(|o| o.status.success());
    require_that("ssh-keygen (openssh-client)", found)
}

/// Points `branch` of `bare` at a new tag object `name` of `target`, signed with an ssh
/// key (`git tag -s`, gpg.format=ssh); returns the tag object's id.
fn point_at_signed_tag(bare: &Path, keys: &Path, name: &str, target: &str) -> String {
    let key = keys.join("id_ed25519");
    if !key.exists() {
        std::fs::create_dir_all(keys).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let signing = format!("user.signingKey={}", key.display());
    git(
        bare,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "tag",
            "-s",
            "-m",
            "release",
            name,
            target,
        ],
    );
    let tag = git_out(bare, &["rev-parse", &format!("refs/tags/{name}")]);
    assert_eq!(git_out(bare, &["cat-file", "-t", &tag]), "tag");
    // git's own commands refuse to point a branch at a non-commit (a server's hook or
    // another implementation may not): write the loose ref, which wins over packed-refs.
    std::fs::write(bare.join("refs/heads/main"), format!("{tag}\n")).unwrap();
    assert_eq!(git_out(bare, &["rev-parse", "refs/heads/main"]), tag);
    tag
}

#[test]
fn a_branch_at_a_signed_tag_deploys_the_commit_it_peels_to() {
    if !tools_available() || !ssh_keygen() {
        return;
    }
    let (mut h, bare) = served();
    let commit = git_out(&bare, &["rev-parse", "main"]);
    let tag = point_at_signed_tag(&bare, &h.path("keys"), "v1", "main");
    let pki = Pki::new(h.path("pki"));
    let port = closed_port();
    let site = Site {
        ip: "127.0.0.1",
        port,
        tls: Some(pki.server("git", "IP:127.0.0.1")),
        first: String::new(),
        auth: false,
    };
    let _nginx = Nginx::start_sites(&h.path("nginx"), &h.path("srv"), &[site], &[]);
    h.url = format!("https://127.0.0.1:{port}/homelab.git");
    h.source_extra = format!("ca_file = \"{}\"\n", pki.ca().display());
    let run = agent(&h, &["run", "--once"]);
    run.expect(0);
    let status = h.status();
    assert_eq!(status["deployed"]["commit"], commit.as_str(), "{status}");
    assert_ne!(tag, commit);
    assert_eq!(h.profile_generation(), Some(1));
    // The next poll compares the peeled head: up to date, nothing fetched again.
    agent(&h, &["run", "--once"]).expect(0);
    assert_eq!(h.status()["last_run"]["outcome"], "up-to-date");

    // The same over file://.
    let (mut local, local_bare) = served();
    let local_commit = git_out(&local_bare, &["rev-parse", "main"]);
    point_at_signed_tag(&local_bare, &local.path("keys"), "v1", "main");
    local.url = format!("file://{}", local_bare.display());
    agent(&local, &["run", "--once"]).expect(0);
    assert_eq!(local.status()["deployed"]["commit"], local_commit.as_str());
}

#[test]
fn a_branch_at_a_tag_of_a_tree_says_so_and_blames_nothing() {
    if !nix_available() || !ssh_keygen() {
        return;
    }
    let (mut h, bare) = served();
    let tag = point_at_signed_tag(&bare, &h.path("keys"), "tree", "main^{tree}");
    h.url = format!("file://{}", bare.display());
    let run = agent(&h, &["run", "--once"]);
    run.expect(78);
    let status = h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "branch 'main' on file://{}/ points at {tag}, a tag of a tree, not a commit",
            bare.display()
        )) || error.contains(&format!("points at {tag}, a tag of a tree, not a commit")),
        "{error}"
    );
    assert!(
        run.stderr().contains("hint: point the branch at a commit"),
        "{}",
        run.stderr()
    );
    assert!(!error.contains("requested type does not match"), "{error}");
    assert!(status["bad_commit"].is_null(), "{status}");
}
