//! Test helpers: real ssh keys and manifests signed with them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether ssh-keygen can be run (HOMELAB_TEST_REQUIRE_ALL makes its absence a failure).
pub fn have_ssh_keygen() -> bool {
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

pub fn ssh_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    key
}

pub fn ssh_sign(key: &Path, namespace: &str, bytes: &[u8]) -> Vec<u8> {
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

/// An allowed-signers file in `dir` with `key`'s public half as `principal`.
pub fn allowed_signers(dir: &Path, key: &Path, principal: &str) -> PathBuf {
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = dir.join(format!("allowed_signers_{principal}"));
    std::fs::write(&allowed, format!("{principal} {public}")).unwrap();
    allowed
}
