//! The prebuilt door against fakes (a source that brings given manifest files, a builder
//! and a realiser that record their calls), with real ssh signatures.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::failure::Kind;
use crate::prebuilt::manifest::{Manifest, NAMESPACE};
use crate::prebuilt::testing::{allowed_signers, have_ssh_keygen, ssh_key, ssh_sign};

const COMMIT: &str = "3f2a9c1e0b8d7a6f5e4d3c2b1a0f9e8d7c6b5a49";
const SYSTEM: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi1";
const ATTRIBUTE: &str = "nixosConfigurations.\"pi1\".config.system.build.toplevel";

type Calls = Rc<RefCell<Vec<String>>>;

struct FakeSource {
    files: Option<PrebuiltFiles>,
}

impl Source for FakeSource {
    fn head(&self) -> Fut<'_, Result<String, Failure>> {
        Box::pin(async { Ok(COMMIT.to_string()) })
    }
    fn read_file<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        Box::pin(async { Ok(None) })
    }
    fn fetch(&self) -> Fut<'_, Result<Fetched, Failure>> {
        let files = self.files.clone();
        Box::pin(async move {
            Ok(Fetched {
                commit: COMMIT.into(),
                subject: "s".into(),
                time: 0,
                prebuilt: files,
            })
        })
    }
    fn fetch_testing(&self) -> Fut<'_, Result<Fetched, Failure>> {
        self.fetch()
    }
}

struct FakeBuilder {
    calls: Calls,
}

impl Builder for FakeBuilder {
    fn build<'a>(&'a self, commit: &'a str, _: &'a str) -> Fut<'a, Result<PathBuf, Failure>> {
        self.calls
            .borrow_mut()
            .push(format!("build {}", &commit[..8]));
        Box::pin(async { Ok(PathBuf::from("/nix/store/built-here")) })
    }
    fn release(&self) {}
}

struct Setup {
    dir: tempfile::TempDir,
    calls: Calls,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            calls: Calls::default(),
        }
    }

    fn settings(&self, prebuilt: &str) -> Settings {
        let d = self.dir.path().display();
        let text = format!(
            "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\n[prebuilt]\nenable = true\n{prebuilt}\n"
        );
        crate::config::parse(Path::new("/etc/t.toml"), &text).unwrap()
    }

    /// The door, its fetch done.
    async fn door(
        &self,
        settings: Settings,
        files: Option<PrebuiltFiles>,
        realised: Result<(), String>,
    ) -> Rc<Prebuilt> {
        let calls = self.calls.clone();
        let realise: Realise = Box::new(move |system, root, _, _| {
            calls.borrow_mut().push(format!(
                "realise {system} at {}",
                root.file_name().unwrap().to_string_lossy()
            ));
            let r = realised.clone().map(|()| PathBuf::from(system.as_str()));
            Box::pin(async move { r })
        });
        let door = Rc::new(Prebuilt::with(
            settings,
            Box::new(FakeSource { files }),
            Box::new(FakeBuilder {
                calls: self.calls.clone(),
            }),
            realise,
        ));
        door.fetch().await.unwrap();
        door
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

/// A manifest for `commit` naming `host`, signed by `key` (ssh).
fn signed(key: &Path, commit: &str, host: &str) -> PrebuiltFiles {
    let hosts = BTreeMap::from([(
        host.to_string(),
        crate::prebuilt::manifest::StorePath::parse(SYSTEM).unwrap(),
    )]);
    let m = Manifest::new(commit, "2026-12-07T15:00:00Z".parse().unwrap(), hosts).unwrap();
    let bytes = m.to_canonical();
    PrebuiltFiles {
        commit: COMMIT.into(),
        branch_tip: Some("d".repeat(40)),
        ssh_signature: Some(String::from_utf8(ssh_sign(key, NAMESPACE, &bytes)).unwrap()),
        manifest: Some(String::from_utf8(bytes).unwrap()),
        ..PrebuiltFiles::default()
    }
}

fn obtained(door: &impl Builder) -> Obtained {
    door.obtained()
        .expect("the door says how the system was obtained")
}

#[tokio::test]
async fn a_signed_manifest_for_this_commit_and_host_is_fetched_not_built() {
    if !have_ssh_keygen() {
        return;
    }
    let s = Setup::new();
    let ci = ssh_key(s.dir.path(), "ci");
    let allowed = allowed_signers(s.dir.path(), &ci, "ci@example");
    let settings = s.settings(&format!("allowed_signers_file = \"{}\"", allowed.display()));
    let door = s
        .door(settings, Some(signed(&ci, COMMIT, "pi1")), Ok(()))
        .await;
    assert_eq!(door.hold(COMMIT), None, "the manifest is there: no wait");
    let system = door.build(COMMIT, ATTRIBUTE).await.unwrap();
    assert_eq!(system, PathBuf::from(SYSTEM));
    assert_eq!(s.calls(), [format!("realise {SYSTEM} at candidate")]);
    let o = obtained(&door);
    assert_eq!(o.how, How::Prebuilt);
    assert_eq!(o.signer.as_deref(), Some("ci@example"));
    assert_eq!(o.fallback, None);
    assert!(o.fetch_ms.is_some());
}

#[tokio::test]
async fn every_bad_manifest_falls_back_to_a_native_build_saying_why() {
    if !have_ssh_keygen() {
        return;
    }
    let s = Setup::new();
    let ci = ssh_key(s.dir.path(), "ci");
    let stranger = ssh_key(s.dir.path(), "stranger");
    let allowed = allowed_signers(s.dir.path(), &ci, "ci@example");
    let key = format!(
        "allowed_signers_file = \"{}\"\nwait = \"0s\"",
        allowed.display()
    );
    let good = signed(&ci, COMMIT, "pi1");
    let mut unsigned = good.clone();
    unsigned.ssh_signature = None;
    let mut altered = good.clone();
    altered.manifest = Some(good.manifest.clone().unwrap().replace("pi1", "pi2"));
    let other_commit = signed(&ci, &"0".repeat(40), "pi1");
    let other_host = signed(&ci, COMMIT, "pi2");
    let cases: Vec<(&str, Option<PrebuiltFiles>, Fallback, &str)> = vec![
        ("nothing fetched", None, Fallback::Missing, "no prebuilt manifest was fetched for 3f2a9c1e"),
        ("unsigned", Some(unsigned), Fallback::Unsigned, "is not signed"),
        ("unknown key", Some(signed(&stranger, COMMIT, "pi1")), Fallback::UntrustedKey, "is signed by a key that no entry of"),
        ("altered", Some(altered), Fallback::BadSignature, "does not verify"),
        (
            "replayed onto another commit",
            Some(other_commit),
            Fallback::OtherCommit,
            "is refused: it is for commit \"0000000000000000000000000000000000000000\", not this one",
        ),
        ("another host's", Some(other_host), Fallback::NoHost, "it has no system for host \"pi1\" (it lists: pi2)"),
    ];
    for (what, files, reason, says) in cases {
        s.calls.borrow_mut().clear();
        let door = s.door(s.settings(&key), files, Ok(())).await;
        assert_eq!(door.hold(COMMIT), None, "{what}: wait = 0 never holds");
        let system = door.build(COMMIT, ATTRIBUTE).await.unwrap();
        assert_eq!(system, PathBuf::from("/nix/store/built-here"), "{what}");
        assert_eq!(s.calls(), ["build 3f2a9c1e"], "{what}: nothing realised");
        let o = obtained(&door);
        assert_eq!(o.how, How::BuiltHere, "{what}");
        assert_eq!(o.fallback, Some(reason), "{what}");
        let why = o.why.unwrap();
        assert!(why.contains(says), "{what}: {why}");
    }

    // The cache lost the system: built here too.
    s.calls.borrow_mut().clear();
    let door = s
        .door(
            s.settings(&key),
            Some(good),
            Err("nix-store --realise failed".into()),
        )
        .await;
    door.build(COMMIT, ATTRIBUTE).await.unwrap();
    assert_eq!(
        s.calls(),
        [
            format!("realise {SYSTEM} at candidate"),
            "build 3f2a9c1e".to_string()
        ]
    );
    let o = obtained(&door);
    assert_eq!(o.fallback, Some(Fallback::NotFetched));
    assert_eq!(o.why.as_deref(), Some("nix-store --realise failed"));
}

#[tokio::test]
async fn a_missing_manifest_is_waited_for_then_late() {
    let s = Setup::new();
    let settings = s.settings("allowed_signers_file = \"/etc/ci\"\nwait = \"10m\"");
    let runtime = settings.paths.runtime_dir.clone();
    let door = s.door(settings.clone(), None, Ok(())).await;
    let why = door.hold(COMMIT).expect("waits");
    assert!(
        why.starts_with("waiting for the prebuilt manifest of 3f2a9c1e on branch \"homelab-prebuilt\": built here in 10m if it does not come"),
        "{why}"
    );
    // Seen 11 minutes ago: the wait has run out.
    let since =
        crate::model::time::Timestamp::text_of(SystemTime::now() - Duration::from_secs(660));
    std::fs::write(
        runtime.join(crate::prebuilt::wait::FILE),
        format!("{{\"commit\": \"{COMMIT}\", \"since\": \"{since}\"}}"),
    )
    .unwrap();
    assert_eq!(door.hold(COMMIT), None);
    door.build(COMMIT, ATTRIBUTE).await.unwrap();
    let o = obtained(&door);
    assert_eq!(o.fallback, Some(Fallback::Late));
    assert!(o
        .why
        .unwrap()
        .ends_with("and [prebuilt] wait (10m) has run out"));

    // A manifest that is there (even a bad one) is not waited for.
    let files = PrebuiltFiles {
        commit: COMMIT.into(),
        manifest: Some("{}".into()),
        ..PrebuiltFiles::default()
    };
    let door = s.door(settings, Some(files), Ok(())).await;
    assert_eq!(door.hold(COMMIT), None);
    // Files fetched for this commit say nothing of another one, which waits.
    assert!(door.hold(&"b".repeat(40)).is_some());
}

/// A head that waits: the next poll fetches only if the listing shows the manifest branch
/// moved (or another head); else it keeps waiting without a fetch.
#[tokio::test]
async fn a_waiting_head_is_not_fetched_again_until_the_manifest_branch_moves() {
    let s = Setup::new();
    let settings = s.settings("allowed_signers_file = \"/etc/ci\"\nwait = \"10m\"");
    let (t1, t2) = ("1".repeat(40), "2".repeat(40));
    let files = PrebuiltFiles {
        commit: COMMIT.into(),
        branch_tip: Some(t1.clone()),
        ..PrebuiltFiles::default()
    };
    let door = s.door(settings.clone(), Some(files), Ok(())).await;
    // Not fetched-and-waiting yet: fetch.
    assert_eq!(door.hold_unfetched(COMMIT, Some(&t1)), None);
    door.hold(COMMIT).expect("waits");
    let again = door.hold_unfetched(COMMIT, Some(&t1)).expect("no fetch");
    assert!(
        again.starts_with("waiting for the prebuilt manifest of 3f2a9c1e"),
        "{again}"
    );
    // The branch moved, went away, or the head moved: fetch.
    assert_eq!(door.hold_unfetched(COMMIT, Some(&t2)), None);
    assert_eq!(door.hold_unfetched(COMMIT, None), None);
    assert_eq!(door.hold_unfetched(&"b".repeat(40), Some(&t1)), None);
    // A new door (the next run) reads the same from the runtime directory.
    let next = s.door(settings.clone(), None, Ok(())).await;
    assert!(next.hold_unfetched(COMMIT, Some(&t1)).is_some());
    // The wait ran out: fetch (then build).
    let since =
        crate::model::time::Timestamp::text_of(SystemTime::now() - Duration::from_secs(660));
    std::fs::write(
        settings.paths.runtime_dir.join(crate::prebuilt::wait::FILE),
        format!("{{\"commit\": \"{COMMIT}\", \"since\": \"{since}\", \"fetched_tip\": {{\"oid\": \"{t1}\"}}}}"),
    )
    .unwrap();
    assert_eq!(next.hold_unfetched(COMMIT, Some(&t1)), None);
    // Nothing to wait for with `wait = 0s`.
    let zero = s.settings("allowed_signers_file = \"/etc/ci\"\nwait = \"0s\"");
    let door = s.door(zero, None, Ok(())).await;
    assert_eq!(door.hold_unfetched(COMMIT, Some(&t1)), None);
}

/// The testing branch never waits for a manifest: with `wait` set, a missing one there
/// is missing, not late; the next fetch of main is main's again.
#[tokio::test]
async fn a_testing_builds_missing_manifest_is_missing_not_late() {
    let s = Setup::new();
    let settings = s.settings("allowed_signers_file = \"/etc/ci\"\nwait = \"10m\"");
    let door = s.door(settings, None, Ok(())).await;
    door.fetch_testing().await.unwrap();
    door.build(COMMIT, ATTRIBUTE).await.unwrap();
    let o = obtained(&door);
    assert_eq!(o.fallback, Some(Fallback::Missing));
    assert_eq!(
        o.why.as_deref(),
        Some("no prebuilt manifest was fetched for 3f2a9c1e")
    );
    // Main's build after its wait: late (the wait file says it ran out long ago).
    door.fetch().await.unwrap();
    let runtime = s.dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let since =
        crate::model::time::Timestamp::text_of(SystemTime::now() - Duration::from_secs(660));
    std::fs::write(
        runtime.join(crate::prebuilt::wait::FILE),
        format!("{{\"commit\": \"{COMMIT}\", \"since\": \"{since}\"}}"),
    )
    .unwrap();
    assert_eq!(door.hold(COMMIT), None);
    door.build(COMMIT, ATTRIBUTE).await.unwrap();
    assert_eq!(obtained(&door).fallback, Some(Fallback::Late));
}

#[tokio::test]
async fn a_native_build_failure_after_a_fallback_is_still_the_builds() {
    let s = Setup::new();
    struct Failing;
    impl Builder for Failing {
        fn build<'a>(&'a self, _: &'a str, _: &'a str) -> Fut<'a, Result<PathBuf, Failure>> {
            Box::pin(async { Err(Failure::new(Kind::Commit, "evaluation failed")) })
        }
        fn release(&self) {}
    }
    let settings = s.settings("allowed_signers_file = \"/etc/ci\"\nwait = \"0s\"");
    let realise: Realise = Box::new(|_, _, _, _| Box::pin(async { Ok(PathBuf::new()) }));
    let door = Rc::new(Prebuilt::with(
        settings,
        Box::new(FakeSource { files: None }),
        Box::new(Failing),
        realise,
    ));
    door.fetch().await.unwrap();
    let e = door.build(COMMIT, ATTRIBUTE).await.unwrap_err();
    assert_eq!(e.kind, Kind::Commit);
    assert_eq!(obtained(&door).fallback, Some(Fallback::Missing));
}

/// A `pause` during the fetch stops it, and is not a reason to build here: the door
/// returns an error the cycle reads as the pause.
#[tokio::test]
async fn a_pause_during_the_fetch_builds_nothing() {
    if !have_ssh_keygen() {
        return;
    }
    let s = Setup::new();
    let ci = ssh_key(s.dir.path(), "ci");
    let allowed = allowed_signers(s.dir.path(), &ci, "ci@example");
    let settings = s.settings(&format!("allowed_signers_file = \"{}\"", allowed.display()));
    let runtime = settings.paths.runtime_dir.clone();
    let calls = s.calls.clone();
    let realise: Realise = Box::new(move |_, _, _, runtime: PathBuf| {
        calls.borrow_mut().push("realise".into());
        // The operator's `pause` arrives while nix fetches; nix is stopped.
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::write(runtime.join(crate::pause::REQUEST_FILE), "{}").unwrap();
        Box::pin(async { Err("nix-store was stopped on request".to_string()) })
    });
    let door = Rc::new(Prebuilt::with(
        settings,
        Box::new(FakeSource {
            files: Some(signed(&ci, COMMIT, "pi1")),
        }),
        Box::new(FakeBuilder {
            calls: s.calls.clone(),
        }),
        realise,
    ));
    door.fetch().await.unwrap();
    let e = door.build(COMMIT, ATTRIBUTE).await.unwrap_err();
    assert_eq!(e.kind, Kind::Transient);
    assert!(e.message.contains("stopped by a pause"), "{}", e.message);
    assert_eq!(s.calls(), ["realise"], "nothing built here");
    assert!(crate::pause::requested(&runtime));
}
