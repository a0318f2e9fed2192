//! Trusting the source, with the real tools: heads signed with real `ssh-keygen -Y sign`
//! and real `gpg` (through git's own signing), verified by the agent with `ssh-keygen -Y
//! verify` and `gpgv`; and no silent downgrade (reset, force-push, opt-out, and the floor
//! recovered from the running system's stamp after the state is lost).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{git, git_out, nix_available, require_that, Harness, Run};

fn tool(name: &str, probe: &[&str]) -> bool {
    let ok = Command::new(name)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    require_that(name, ok)
}

pub(crate) fn ssh_tools() -> bool {
    tool("ssh-keygen", &["-?"])
}

pub(crate) fn gpg_tools() -> bool {
    tool("gpg", &["--version"]) && tool("gpgv", &["--version"])
}

/// How a commit is signed.
pub(crate) enum Sign<'a> {
    None,
    /// `gpg.format = ssh` with this private key file.
    Ssh(&'a Path),
    /// The same, through this `gpg.ssh.program`.
    SshVia(&'a Path, &'a Path),
    /// OpenPGP: the key (fingerprint or e-mail), GNUPGHOME, and a `gpg.program`.
    Gpg {
        key: &'a str,
        home: &'a Path,
        program: &'a Path,
    },
}

/// Writes the flake for the harness's hosts and commits it, signed as asked.
pub(crate) fn commit(h: &Harness, message: &str, sign: Sign) -> String {
    homelab_agent::fake_system::write(&h.repo, &h.fake, &h.hosts).unwrap();
    git(&h.repo, &["add", "-A"]);
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(&h.repo)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"]);
    match &sign {
        Sign::None => {
            cmd.args(["-c", "commit.gpgsign=false"]);
        }
        Sign::Ssh(key) => {
            cmd.args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", key.display()));
        }
        Sign::SshVia(key, program) => {
            cmd.args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", key.display()))
                .arg("-c")
                .arg(format!("gpg.ssh.program={}", program.display()));
        }
        Sign::Gpg { key, home, program } => {
            cmd.args(["-c", "gpg.format=openpgp", "-c"])
                .arg(format!("gpg.program={}", program.display()))
                .arg("-c")
                .arg(format!("user.signingkey={key}"))
                .env("GNUPGHOME", home);
        }
    }
    cmd.args(["commit", "-q", "--allow-empty", "-m", message]);
    if !matches!(sign, Sign::None) {
        cmd.arg("-S");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "git commit: {out:?}");
    git_out(&h.repo, &["rev-parse", "HEAD"])
}

pub(crate) fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    (key, public.join(" "))
}

fn refused(h: &Harness) -> serde_json::Value {
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "failed", "{s:#}");
    assert_eq!(s["last_run"]["phase"], "verify", "{s:#}");
    assert_eq!(s["head"]["status"], "refused", "{s:#}");
    s
}

/// `run --once` refuses `commit` for `reason` (exit 1, the error says `says`); returns
/// the run and the status (checked by [`refused`]).
fn run_is_refused(h: &Harness, commit: &str, reason: &str, says: &str) -> (Run, serde_json::Value) {
    let run = h.run_once();
    run.expect(1);
    assert!(run.stderr().contains(says), "{}", run.stderr());
    let s = refused(h);
    assert_eq!(s["refused"]["commit"], commit, "{s:#}");
    assert_eq!(s["refused"]["reason"], reason, "{s:#}");
    (run, s)
}

/// A refused head is never evaluated (no nix), never activated, and a second poll of
/// it spawns nothing and writes nothing to the state.
fn assert_refused_quietly(h: &Harness, builds_before: usize) {
    assert_eq!(h.nix_builds(), builds_before, "a refused head reached nix");
    assert!(h.stc_log().is_empty(), "a refused head was activated");
    let calls = h.nix_calls();
    let before = h.state_snapshot();
    let history = h.history().len();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // mtime granularity
    let again = h.run_once();
    again.expect(1);
    assert!(
        again.stderr().contains("was refused at"),
        "{}",
        again.stderr()
    );
    assert_eq!(h.nix_calls(), calls);
    assert_eq!(
        h.state_snapshot(),
        before,
        "a second poll of a refused head wrote state"
    );
    assert_eq!(h.history().len(), history, "a refusal is recorded once");
}

#[test]
fn ssh_signed_heads_deploy_and_unsigned_or_foreign_ones_are_refused() {
    if !nix_available() || !ssh_tools() {
        return;
    }
    let mut h = Harness::new();
    let keys = h.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_pub) = ssh_key(&keys, "alice");
    let (mallory, mallory_pub) = ssh_key(&keys, "mallory");
    let allowed = keys.join("allowed_signers");
    std::fs::write(&allowed, format!("alice@example.org {alice_pub}\n")).unwrap();
    h.source_extra = format!(
        "verify = \"ssh\"\nallowed_signers_file = \"{}\"\n",
        allowed.display()
    );

    h.host("pi1").content = "v1".into();
    let c1 = commit(&h, "signed by alice", Sign::Ssh(&alice));
    let run = h.run_once();
    run.expect(0);
    assert!(
        run.stderr().contains("signed by alice@example.org"),
        "{}",
        run.stderr()
    );
    assert_eq!(h.status()["deployed"]["commit"], c1.as_str());
    h.clear_stc_log();

    // Unsigned.
    let builds = h.nix_builds();
    h.host("pi1").content = "v2".into();
    let c2 = commit(&h, "unsigned", Sign::None);
    let (_, s) = run_is_refused(&h, &c2, "unsigned", "is not signed");
    let expected = s["refused"]["expected"].as_str().unwrap();
    assert!(
        expected.contains(&allowed.display().to_string()),
        "{expected}"
    );
    assert!(expected.contains("alice@example.org"), "{expected}");
    assert_eq!(s["deployed"]["commit"], c1.as_str());
    assert_refused_quietly(&h, builds);

    // Signed, by a key that is not allowed.
    h.host("pi1").content = "v3".into();
    let c3 = commit(&h, "signed by mallory", Sign::Ssh(&mallory));
    let (run, _) = run_is_refused(
        &h,
        &c3,
        "untrusted-key",
        "is signed by a key that no entry of",
    );
    assert_refused_quietly(&h, builds);

    // No key material anywhere the agent writes or says.
    let status = h.agent(&["status", "--json"]).stdout();
    let state = std::fs::read_to_string(h.path("state/state.json")).unwrap();
    for secret in [&alice_pub, &mallory_pub] {
        let blob = secret.split_whitespace().nth(1).unwrap();
        assert!(!status.contains(blob) && !state.contains(blob) && !run.stderr().contains(blob));
    }
    let private = std::fs::read_to_string(&mallory).unwrap();
    let line = private.lines().nth(1).unwrap();
    assert!(!status.contains(line) && !run.stderr().contains(line));

    // The operator allows mallory: the same head is checked again and deployed.
    std::fs::write(
        &allowed,
        format!("alice@example.org {alice_pub}\nmallory@example.org {mallory_pub}\n"),
    )
    .unwrap();
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c3.as_str());
    assert!(s.get("refused").is_none(), "{s:#}");

    // An allowed key's signature that is not a git signature (another namespace): found
    // by `ssh-keygen -Y verify` itself.
    let other_namespace = h.path("ssh-keygen-file-namespace");
    std::fs::write(
        &other_namespace,
        "#!/bin/bash\na=(\"$@\"); for i in \"${!a[@]}\"; do [ \"${a[$i]}\" = git ] && a[$i]=file; done\nexec ssh-keygen \"${a[@]}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &other_namespace,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    h.host("pi1").content = "v4".into();
    commit(&h, "file namespace", Sign::SshVia(&alice, &other_namespace));
    let run = h.run_once();
    run.expect(1);
    assert!(run.stderr().contains("does not verify"), "{}", run.stderr());
    assert_eq!(refused(&h)["refused"]["reason"], "bad-signature");

    // Alice's entry expired (valid-before in the past): her new signature is refused.
    std::fs::write(
        &allowed,
        format!("alice@example.org valid-before=\"20200101\" {alice_pub}\n"),
    )
    .unwrap();
    h.host("pi1").content = "v5".into();
    commit(&h, "alice, expired", Sign::Ssh(&alice));
    let run = h.run_once();
    run.expect(1);
    let said = format!(
        "is signed by the key of alice@example.org, which {} allows only valid-before=\"20200101\": the key has expired or is not valid yet",
        allowed.display()
    );
    assert!(run.stderr().contains(&said), "{}", run.stderr());
    assert_eq!(refused(&h)["refused"]["reason"], "expired-key");

    // Not valid yet (valid-after in the future), with other options beside it: the same.
    std::fs::write(
        &allowed,
        format!("alice@example.org namespaces=\"git\",valid-after=\"20990101\" {alice_pub}\n"),
    )
    .unwrap();
    h.host("pi1").content = "v6".into();
    let c6 = commit(&h, "alice, not yet", Sign::Ssh(&alice));
    let (_, s) = run_is_refused(
        &h,
        &c6,
        "expired-key",
        "allows only valid-after=\"20990101\": the key has expired or is not valid yet",
    );
    assert_eq!(s["refused"]["reason"], "expired-key");
    // mallory, not in the file at all, stays untrusted-key.
    h.host("pi1").content = "v7".into();
    let c7 = commit(&h, "mallory again", Sign::Ssh(&mallory));
    run_is_refused(
        &h,
        &c7,
        "untrusted-key",
        "is signed by a key that no entry of",
    );
}

#[test]
fn a_missing_allowed_signers_file_is_a_configuration_error_not_a_refusal() {
    if !nix_available() || !ssh_tools() {
        return;
    }
    let mut h = Harness::new();
    let (alice, _) = ssh_key(h.dir.path(), "alice");
    h.source_extra = format!(
        "verify = \"ssh\"\nallowed_signers_file = \"{}\"\n",
        h.path("no-such-file").display()
    );
    commit(&h, "signed", Sign::Ssh(&alice));
    let run = h.run_once();
    run.expect(78);
    assert!(
        run.stderr()
            .contains("cannot read [source] allowed_signers_file"),
        "{}",
        run.stderr()
    );
    assert_eq!(h.nix_builds(), 0);
    assert!(h.status().get("refused").is_none());
    // `config check` on the machine finds it too, naming the key.
    let check = h.agent(&["config", "check"]);
    check.expect(78);
    let said = format!("{}{}", check.stdout(), check.stderr());
    assert!(
        said.contains("source.allowed_signers_file") && said.contains("does not exist"),
        "{said}"
    );
}

/// A GnuPG home with three signing keys: good, expired (made in 2020, valid one day) and
/// one to be revoked. Returns (home, fingerprints by name).
fn gpg_home(dir: &Path) -> PathBuf {
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gen = |uid: &str, extra: &[&str], expire: &str| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--passphrase", ""])
            .args(extra)
            .args(["--quick-gen-key", uid, "ed25519", "sign", expire])
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg --quick-gen-key {uid}: {out:?}");
    };
    gen("Good <good@example.org>", &[], "never");
    gen(
        "Old <old@example.org>",
        &["--faked-system-time", "20200101T000000"],
        "1d",
    );
    gen("Gone <gone@example.org>", &[], "never");
    home
}

/// Stops the gpg-agent that signing started for a GnuPG home (none may outlive the test).
struct AgentStopper(Vec<PathBuf>);

impl Drop for AgentStopper {
    fn drop(&mut self) {
        for home in &self.0 {
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", home)
                .args(["--kill", "all"])
                .status();
        }
    }
}

fn gpg(home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .arg("--batch")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "gpg {args:?}: {out:?}");
    out
}

fn export_keyring(home: &Path, keyring: &Path) {
    let out = gpg(home, &["--export"]);
    std::fs::write(keyring, out.stdout).unwrap();
}

fn gpg_program(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\nexec gpg {extra} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

#[test]
fn gpg_signed_heads_deploy_and_unsigned_expired_revoked_or_unknown_are_refused() {
    if !nix_available() || !gpg_tools() {
        return;
    }
    let mut h = Harness::new();
    let home = gpg_home(h.dir.path());
    let other = h.path("other-gnupg");
    let _stop = AgentStopper(vec![home.clone(), other.clone()]);
    let plain = gpg_program(h.dir.path(), "gpg-now", "");
    let in_2020 = gpg_program(
        h.dir.path(),
        "gpg-2020",
        "--faked-system-time 20200101T010000",
    );
    let keyring = h.path("deployers.gpg");
    export_keyring(&home, &keyring);
    h.source_extra = format!(
        "verify = \"gpg\"\nkeyring_file = \"{}\"\n",
        keyring.display()
    );
    let signed = |key| Sign::Gpg {
        key,
        home: &home,
        program: &plain,
    };

    h.host("pi1").content = "v1".into();
    let c1 = commit(&h, "good", signed("good@example.org"));
    let run = h.run_once();
    run.expect(0);
    assert_eq!(h.status()["deployed"]["commit"], c1.as_str());
    h.clear_stc_log();
    let builds = h.nix_builds();

    // Signed by a key that is then revoked (its revocation in the keyring).
    h.host("pi1").content = "v2".into();
    let c2 = commit(&h, "by a key revoked later", signed("gone@example.org"));
    let revs = home.join("openpgp-revocs.d");
    let cert = std::fs::read_dir(&revs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            text.contains("gone@example.org") || {
                // The certificate names the key by fingerprint only: match it.
                let fpr = p.file_stem().unwrap().to_string_lossy().to_string();
                let list = gpg(
                    &home,
                    &["--with-colons", "--fingerprint", "gone@example.org"],
                );
                String::from_utf8_lossy(&list.stdout).contains(&fpr)
            }
        })
        .expect("revocation certificate of gone@example.org");
    let text = std::fs::read_to_string(&cert).unwrap();
    let armoured = h.path("revoke.asc");
    std::fs::write(&armoured, text.replace(":-----BEGIN", "-----BEGIN")).unwrap();
    gpg(&home, &["--import", &armoured.display().to_string()]);
    export_keyring(&home, &keyring);
    let (_, s) = run_is_refused(&h, &c2, "revoked-key", "which has been revoked");
    assert!(
        s["refused"]["expected"]
            .as_str()
            .unwrap()
            .contains(&keyring.display().to_string()),
        "{s:#}"
    );
    assert_refused_quietly(&h, builds);

    // Signed by an expired key (the signature made while it was valid, in 2020).
    h.host("pi1").content = "v3".into();
    let c3 = commit(
        &h,
        "by an expired key",
        Sign::Gpg {
            key: "old@example.org",
            home: &home,
            program: &in_2020,
        },
    );
    run_is_refused(&h, &c3, "expired-key", "which has expired");

    // Unsigned.
    h.host("pi1").content = "v4".into();
    commit(&h, "unsigned", Sign::None);
    let run = h.run_once();
    run.expect(1);
    assert!(run.stderr().contains("is not signed"), "{}", run.stderr());
    assert_eq!(refused(&h)["refused"]["reason"], "unsigned");

    // Signed by a key the keyring does not hold.
    std::fs::create_dir_all(&other).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    gpg(
        &other,
        &[
            "--passphrase",
            "",
            "--quick-gen-key",
            "Eve <eve@example.org>",
            "ed25519",
            "sign",
            "never",
        ],
    );
    let by_eve = || Sign::Gpg {
        key: "eve@example.org",
        home: &other,
        program: &plain,
    };
    h.host("pi1").content = "v5".into();
    commit(&h, "by eve", by_eve());
    let run = h.run_once();
    run.expect(1);
    assert!(run.stderr().contains("which is not in"), "{}", run.stderr());
    assert_eq!(refused(&h)["refused"]["reason"], "untrusted-key");
    assert_eq!(h.nix_builds(), builds, "no refused head reached nix");

    // A good signature again: deployed.
    h.host("pi1").content = "v6".into();
    let c6 = commit(&h, "good again", signed("good@example.org"));
    h.run_once().expect(0);
    assert_eq!(h.status()["deployed"]["commit"], c6.as_str());

    // gpg_home instead of keyring_file: its pubring.kbx is the keyring.
    h.source_extra = format!("verify = \"gpg\"\ngpg_home = \"{}\"\n", home.display());
    h.host("pi1").content = "v7".into();
    let c7 = commit(
        &h,
        "good, checked against the home",
        signed("good@example.org"),
    );
    h.run_once().expect(0);
    assert_eq!(h.status()["deployed"]["commit"], c7.as_str());
    h.host("pi1").content = "v8".into();
    commit(&h, "eve again", by_eve());
    let run = h.run_once();
    run.expect(1);
    assert!(
        run.stderr().contains("which is not in") && run.stderr().contains("gnupg/pubring.kbx"),
        "{}",
        run.stderr()
    );
}

/// Deploys two commits, then resets the server's branch to the first (a downgrade);
/// returns both commits and the build count before the next run.
fn deploy_two_then_reset_to_the_first(h: &mut Harness) -> (String, String, usize) {
    let c1 = h.deploy("v1", "first");
    let c2 = h.deploy("v2", "second");
    h.clear_stc_log();
    git(&h.repo, &["reset", "-q", "--hard", &c1]);
    (c1, c2, h.nix_builds())
}

#[test]
fn a_reset_branch_is_refused_unless_downgrades_are_allowed() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (c1, c2, builds) = deploy_two_then_reset_to_the_first(&mut h);
    let (_, s) = run_is_refused(&h, &c1, "downgrade", "is older than");
    assert!(
        s["refused"]["expected"].as_str().unwrap().contains(&c2),
        "{s:#}"
    );
    assert!(
        s["last_run"]["hint"]
            .as_str()
            .unwrap()
            .contains("allow_downgrade"),
        "{s:#}"
    );
    assert_eq!(s["deployed"]["commit"], c2.as_str());
    let human = h.agent(&["status"]).stdout();
    assert!(human.contains("refused, not built"), "{human}");
    assert!(human.contains("(downgrade): not fetched again"), "{human}");
    assert!(human.contains("expected: a descendant of"), "{human}");
    assert_refused_quietly(&h, builds);

    // The operator opts out: the older commit is deployed.
    h.source_extra = "allow_downgrade = true\n".into();
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c1.as_str());
    assert_eq!(s["last_run"]["outcome"], "deployed");
}

#[test]
fn a_force_pushed_branch_is_refused() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, c2, builds) = deploy_two_then_reset_to_the_first(&mut h);
    // Rewritten history on the server: a different second commit on top of the first.
    h.host("pi1").content = "evil".into();
    let rewritten = h.commit("rewritten second");
    let (_, s) = run_is_refused(&h, &rewritten, "downgrade", "force-pushed");
    assert!(s["refused"]["expected"].as_str().unwrap().contains(&c2));
    assert_refused_quietly(&h, builds);
}

#[test]
fn the_floor_survives_losing_the_state_file() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.host("pi1").stamp = true;
    let c1 = h.deploy("v1", "first");
    let c2 = h.deploy("v2", "second");
    // The running system carries its commit where modules/version.nix puts it.
    let stamp = h
        .current_system_link()
        .join("etc/homelab-agent/configuration-revision");
    assert_eq!(std::fs::read_to_string(&stamp).unwrap().trim(), c2);
    h.clear_stc_log();
    let builds = h.nix_builds();

    // The state (and the git cache) is lost, and the branch is reset to the older commit.
    std::fs::remove_dir_all(h.path("state")).unwrap();
    git(&h.repo, &["reset", "-q", "--hard", &c1]);
    let run = h.run_once();
    run.expect(1);
    assert!(
        run.stderr().contains("configurationRevision"),
        "{}",
        run.stderr()
    );
    let s = refused(&h);
    assert_eq!(s["refused"]["reason"], "downgrade");
    let expected = s["refused"]["expected"].as_str().unwrap();
    assert!(
        expected.contains(&c2) && expected.contains("configuration-revision"),
        "{expected}"
    );
    assert_eq!(h.nix_builds(), builds, "the older commit reached nix");
    assert!(h.stc_log().is_empty());

    // A new commit on top of the running one passes.
    git(&h.repo, &["reset", "-q", "--hard", &c2]);
    let c3 = h.deploy("v3", "third");
    assert_eq!(h.status()["deployed"]["commit"], c3.as_str());
}
