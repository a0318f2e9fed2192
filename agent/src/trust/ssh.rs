//! ssh signatures with OpenSSH's own verifier: `ssh-keygen -Y find-principals` finds who
//! in the allowed-signers file owns the signing key, `ssh-keygen -Y verify -n git` checks
//! the signature over the payload (and the key's `valid-after`/`valid-before` options).
//! ssh-keygen exits 0 on success and 255 on every failure, so the verdict is by exit
//! code, and the key file is looked at first so a missing file is not "untrusted".

use std::path::Path;

use super::signature::{expected, Extracted};
use super::{key_file_failure, run_verifier, short, Reason, Refusal, Verdict};
use crate::config::trust::Verify;
use crate::process::Cmd;

/// The namespace git signs commits in.
const NAMESPACE: &str = "git";

/// Verifies; returns the principal that signed.
pub async fn verify(allowed: &Path, x: &Extracted) -> Result<String, Verdict> {
    std::fs::File::open(allowed)
        .map_err(|e| key_file_failure("allowed_signers_file", allowed, &e))?;
    let verify = Verify::Ssh {
        allowed_signers_file: allowed.to_path_buf(),
    };
    let found = run_verifier(
        Cmd::new("ssh-keygen")
            .args(["-Y", "find-principals", "-f"])
            .arg(allowed)
            .arg("-s")
            .arg(&x.signature),
        "ssh-keygen",
        "openssh-client",
    )
    .await?;
    let principal = found
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string);
    let principal = match (found.status.success(), principal) {
        (true, Some(p)) => p,
        _ => {
            return Err(Verdict::Refused(Refusal {
                reason: Reason::UntrustedKey,
                message: format!(
                    "commit {} is signed by a key that no entry of {} allows (not listed, or outside its valid-after/valid-before window): refused",
                    short(&x.commit),
                    allowed.display()
                ),
                expected: expected(&verify),
            }))
        }
    };
    let checked = run_verifier(
        Cmd::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(allowed)
            .arg("-I")
            .arg(&principal)
            .args(["-n", NAMESPACE, "-s"])
            .arg(&x.signature)
            .stdin_file(&x.payload),
        "ssh-keygen",
        "openssh-client",
    )
    .await?;
    if !checked.status.success() {
        return Err(Verdict::Refused(Refusal {
            reason: Reason::BadSignature,
            message: format!(
                "the signature of commit {} by {principal} does not verify: refused (the commit was altered, the signature is not a git signature, or the key is outside its valid-after/valid-before window)",
                short(&x.commit)
            ),
            expected: expected(&verify),
        }));
    }
    Ok(principal)
}

/// The principals an allowed-signers file names (first field of each entry), for
/// messages; empty when it cannot be read.
pub fn principals(allowed: &Path) -> Vec<String> {
    let Ok(text) = super::read_small(allowed, 1 << 20) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let mut out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|p| p.trim_matches('"').split(','))
        .map(str::to_string)
        .collect();
    out.dedup();
    out.truncate(10);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn principals_are_the_first_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("allowed");
        std::fs::write(
            &f,
            "# comment\n\nalice@x ssh-ed25519 AAAA\n\"bob@y,carol@z\" namespaces=\"git\" ssh-ed25519 BBBB\n",
        )
        .unwrap();
        assert_eq!(super::principals(&f), ["alice@x", "bob@y", "carol@z"]);
        assert!(super::principals(&dir.path().join("none")).is_empty());
    }
}
