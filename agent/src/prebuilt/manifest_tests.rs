use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const COMMIT: &str = "3f2a9c1e0b8d7a6f5e4d3c2b1a0f9e8d7c6b5a49";
const OTHER: &str = "0000000000000000000000000000000000000001";
const PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi1-24.11";

fn good_json() -> String {
    format!(
        r#"{{"format": 1, "commit": "{COMMIT}", "built_at": "2026-12-07T15:00:00Z", "hosts": {{"pi1": "{PATH}", "pi2": "{PATH}"}}}}"#
    )
}

fn with(field: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&good_json()).unwrap();
    v[field] = serde_json::from_str(value).unwrap();
    v.to_string()
}

#[test]
fn a_good_manifest_parses_and_round_trips_canonically() {
    let m = Manifest::parse(good_json().as_bytes()).unwrap();
    assert_eq!(m.commit, COMMIT);
    assert_eq!(m.built_at.to_string(), "2026-12-07T15:00:00Z");
    assert_eq!(m.hosts["pi1"].as_str(), PATH);
    let canonical = m.to_canonical();
    let text = String::from_utf8(canonical.clone()).unwrap();
    assert_eq!(
        text,
        format!(
            "{{\n  \"format\": 1,\n  \"commit\": \"{COMMIT}\",\n  \"built_at\": \"2026-12-07T15:00:00Z\",\n  \"hosts\": {{\n    \"pi1\": \"{PATH}\",\n    \"pi2\": \"{PATH}\"\n  }}\n}}\n"
        )
    );
    assert_eq!(Manifest::parse(&canonical).unwrap(), m);
    // Built for publish, the same bytes.
    let built = Manifest::new(COMMIT, m.built_at, m.hosts.clone()).unwrap();
    assert_eq!(built.to_canonical(), canonical);
}

#[test]
fn bad_manifests_say_precisely_what_is_wrong() {
    let long_name = format!(
        "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-{}",
        "a".repeat(212)
    );
    let hosts = |path: &str| format!(r#"{{"pi1": "{path}"}}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            "not json".into(),
            "not a manifest: expected ident at line 1",
        ),
        (with("extra", "1"), "not a manifest: unknown field `extra`"),
        (
            good_json().replace(r#""format": 1, "#, ""),
            "missing field `format`",
        ),
        (
            with("format", "2"),
            "format 2 is not one this agent reads (it reads format 1)\nhint: update the agent",
        ),
        // A future format with new keys is named as a format, not as an unknown key.
        (
            with("format", "2").replace("\"hosts\"", "\"systems\""),
            "format 2 is not one this agent reads",
        ),
        (with("format", "\"1\""), "format \"\\\"1\\\"\" is not one"),
        (
            with("commit", "\"3f2a9c1e\""),
            "commit \"3f2a9c1e\" is not a full commit id",
        ),
        (
            with("commit", &format!("\"{}\"", COMMIT.to_uppercase())),
            "is not a full commit id (40 lowercase hex digits)",
        ),
        (
            with("built_at", "\"2026-12-07T16:00:00+01:00\""),
            "built_at \"2026-12-07T16:00:00+01:00\" is not an RFC 3339 time in UTC",
        ),
        (
            with("built_at", "\"yesterday Z\""),
            "is not an RFC 3339 time in UTC",
        ),
        (
            format!(
                r#"{{"format": 1, "commit": "{COMMIT}", "built_at": "2026-12-07T15:00:00Z", "hosts": {{"pi1": "{PATH}", "pi1": "{PATH}"}}}}"#
            ),
            "host \"pi1\" is given twice",
        ),
        (
            with("hosts", r#"{"pi 1": "/nix/store/x"}"#),
            "hosts: invalid host name \"pi 1\"",
        ),
        (with("hosts", r#"{"pi1": 3}"#), "invalid type: integer `3`"),
        (
            with(
                "hosts",
                &hosts("/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x"),
            ),
            "hosts.pi1: \"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x\" is not in /nix/store/",
        ),
        (
            with("hosts", &hosts("/nix/store/abc-x")),
            "the hash must be 32 characters of nix base32",
        ),
        (
            // 'e' is not in nix's base32.
            with(
                "hosts",
                &hosts("/nix/store/e123456789abcdfghijklmnpqrsvwxyz-x"),
            ),
            "the hash must be 32 characters of nix base32",
        ),
        (
            with(
                "hosts",
                &hosts("/nix/store/0123456789abcdfghijklmnpqrsvwxyz"),
            ),
            "the name after the hash must be 1 to 211 characters",
        ),
        (
            with("hosts", &hosts(&long_name)),
            "the name after the hash must be 1 to 211 characters",
        ),
        (
            with(
                "hosts",
                &hosts(&format!("{PATH}/bin/switch-to-configuration")),
            ),
            "nor contain '..' or '/'",
        ),
        (
            with(
                "hosts",
                &hosts("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-../../etc"),
            ),
            "nor contain '..' or '/'",
        ),
        (
            with(
                "hosts",
                &hosts("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-.hidden"),
            ),
            "must not start with '.'",
        ),
    ];
    for (text, needle) in cases {
        let e = Manifest::parse(text.as_bytes()).expect_err(&text);
        assert!(
            e.0.contains(needle),
            "{text}\n  gave: {e}\n  wanted: {needle}"
        );
    }
    let e = Manifest::parse(b"{\"format\": 1, \xff}").unwrap_err();
    assert_eq!(e.0, "not UTF-8 (at byte 14)");
    let big = format!("{}{}", good_json(), " ".repeat(MAX_BYTES));
    let e = Manifest::parse(big.as_bytes()).unwrap_err();
    assert!(
        e.0.contains("more than the 262144 a manifest may have"),
        "{e}"
    );
    let many: Vec<String> = (0..=MAX_HOSTS)
        .map(|i| format!("\"h{i}\": \"{PATH}\""))
        .collect();
    let text = with("hosts", &format!("{{{}}}", many.join(",")));
    let e = Manifest::parse(text.as_bytes()).unwrap_err();
    assert!(e.0.contains("more than 1000 hosts"), "{e}");
}

#[test]
fn publish_cannot_build_a_manifest_the_agent_would_refuse() {
    let t: jiff::Timestamp = "2026-12-07T15:00:00Z".parse().unwrap();
    let e = Manifest::new("abc", t, BTreeMap::new()).unwrap_err();
    assert!(e.0.contains("not a full commit id"), "{e}");
    let hosts = BTreeMap::from([("a.b".to_string(), StorePath::parse(PATH).unwrap())]);
    let e = Manifest::new(COMMIT, t, hosts).unwrap_err();
    assert!(e.0.contains("invalid host name \"a.b\""), "{e}");
}

#[test]
fn the_system_is_this_commits_and_this_hosts_only() {
    let m = Manifest::parse(good_json().as_bytes()).unwrap();
    assert_eq!(m.system_for(COMMIT, "pi2").unwrap().as_str(), PATH);
    let e = m.system_for(OTHER, "pi1").unwrap_err();
    assert_eq!(
        e,
        Mismatch::OtherCommit {
            found: COMMIT.into()
        }
    );
    assert_eq!(
        e.to_string(),
        format!("it is for commit \"{COMMIT}\", not this one")
    );
    let e = m.system_for(COMMIT, "pi9").unwrap_err();
    assert_eq!(
        e.to_string(),
        "it has no system for host \"pi9\" (it lists: pi1, pi2)"
    );
}

#[test]
fn paths_on_the_branch() {
    assert_eq!(path(COMMIT), format!("prebuilt/{COMMIT}.json"));
    assert_eq!(
        ssh_signature_path(COMMIT),
        format!("prebuilt/{COMMIT}.json.sig")
    );
    assert_eq!(
        gpg_signature_path(COMMIT),
        format!("prebuilt/{COMMIT}.json.asc")
    );
}

/// Whether ssh-keygen can be run (HOMELAB_TEST_REQUIRE_ALL makes its absence a failure).
fn have_ssh_keygen() -> bool {
    let have = Command::new("ssh-keygen").arg("-?").output().is_ok();
    if !have {
        assert!(
            std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
            "ssh-keygen is required (HOMELAB_TEST_REQUIRE_ALL; tests/setup installs openssh-client)"
        );
        eprintln!("SKIP: ssh-keygen not found");
    }
    have
}

fn ssh_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    key
}

fn ssh_sign(key: &Path, namespace: &str, bytes: &[u8]) -> Vec<u8> {
    let dir = key.parent().unwrap();
    let file = dir.join("manifest.json");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sig = dir.join("manifest.json.sig");
    let bytes = std::fs::read(&sig).unwrap();
    std::fs::remove_file(sig).unwrap();
    bytes
}

fn refusal(r: Result<String, Verdict>) -> Refusal {
    match r {
        Err(Verdict::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn ssh_signatures_in_the_prebuilt_namespace_by_an_allowed_key_only() {
    if !have_ssh_keygen() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ci = ssh_key(dir.path(), "ci");
    let stranger = ssh_key(dir.path(), "stranger");
    let public = std::fs::read_to_string(ci.with_extension("pub")).unwrap();
    let allowed = dir.path().join("allowed_signers");
    std::fs::write(&allowed, format!("ci@example {public}")).unwrap();
    let key = Verify::Ssh {
        allowed_signers_file: allowed.clone(),
    };
    let bytes = Manifest::parse(good_json().as_bytes())
        .unwrap()
        .to_canonical();

    let good = SignatureFile::Ssh(ssh_sign(&ci, NAMESPACE, &bytes));
    assert_eq!(
        verify(&key, COMMIT, &bytes, Some(&good)).await.unwrap(),
        "ci@example"
    );

    // The manifest altered after signing (another host's path, say).
    let mut altered = bytes.clone();
    let at = altered.len() - 5;
    altered[at] = b'X';
    let r = refusal(verify(&key, COMMIT, &altered, Some(&good)).await);
    assert_eq!(r.reason, Reason::BadSignature);
    assert!(
        r.message.starts_with(
            "the signature of the prebuilt manifest of 3f2a9c1e by ci@example does not verify: refused (the manifest was altered, the signature is not a homelab-prebuilt signature"
        ),
        "{}",
        r.message
    );

    // A commit signature (namespace git) by the same key never passes for a manifest's.
    let git = SignatureFile::Ssh(ssh_sign(&ci, "git", &bytes));
    let r = refusal(verify(&key, COMMIT, &bytes, Some(&git)).await);
    assert_eq!(r.reason, Reason::BadSignature);

    let foreign = SignatureFile::Ssh(ssh_sign(&stranger, NAMESPACE, &bytes));
    let r = refusal(verify(&key, COMMIT, &bytes, Some(&foreign)).await);
    assert_eq!(r.reason, Reason::UntrustedKey);
    assert!(
        r.message.starts_with(&format!(
            "the prebuilt manifest of 3f2a9c1e is signed by a key that no entry of {} allows",
            allowed.display()
        )),
        "{}",
        r.message
    );
    assert!(
        r.expected.contains("(principals: ci@example)"),
        "{}",
        r.expected
    );

    let r = refusal(verify(&key, COMMIT, &bytes, None).await);
    assert_eq!(r.reason, Reason::Unsigned);
    assert_eq!(
        r.message,
        format!("the prebuilt manifest of 3f2a9c1e is not signed (neither prebuilt/{COMMIT}.json.sig nor prebuilt/{COMMIT}.json.asc is on the branch)")
    );

    let asc = SignatureFile::Gpg(b"-----BEGIN PGP SIGNATURE-----\n".to_vec());
    let r = refusal(verify(&key, COMMIT, &bytes, Some(&asc)).await);
    assert_eq!(r.reason, Reason::UntrustedKey);
    assert!(
        r.message
            .contains("where an ssh signature is expected ([prebuilt] uses ssh)"),
        "{}",
        r.message
    );

    let huge = SignatureFile::Ssh(vec![b'A'; MAX_SIGNATURE_BYTES + 1]);
    let r = refusal(verify(&key, COMMIT, &bytes, Some(&huge)).await);
    assert_eq!(r.reason, Reason::BadSignature);
    assert!(
        r.message.contains("more than the 65536 allowed"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn a_missing_key_file_is_the_configuration_not_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let key = Verify::Ssh {
        allowed_signers_file: missing.clone(),
    };
    let sig = SignatureFile::Ssh(b"-----BEGIN SSH SIGNATURE-----\n".to_vec());
    match verify(&key, COMMIT, b"{}", Some(&sig)).await {
        Err(Verdict::Failed(f)) => {
            assert_eq!(f.kind, Kind::Configuration);
            assert!(
                f.message.starts_with(&format!(
                    "cannot read [prebuilt] allowed_signers_file {}",
                    missing.display()
                )),
                "{}",
                f.message
            );
            assert!(
                f.message
                    .contains("hint: check [prebuilt] allowed_signers_file; until it can be read, every head is built here"),
                "{}",
                f.message
            );
        }
        other => panic!("{other:?}"),
    }
    match verify(&Verify::None, COMMIT, b"{}", Some(&sig)).await {
        Err(Verdict::Failed(f)) => assert_eq!(f.kind, Kind::Configuration),
        other => panic!("{other:?}"),
    }
}
