//! ssh signatures with OpenSSH's own verifier: `ssh-keygen -Y find-principals` finds who
//! in the allowed-signers file owns the signing key, `ssh-keygen -Y verify -n git` checks
//! the signature over the payload (`-n homelab-prebuilt` for a prebuilt manifest) (and the key's `valid-after`/`valid-before` options).
//! ssh-keygen exits 0 on success and 255 on every failure, so the verdict is by exit
//! code, and the key file is looked at first so a missing file is not "untrusted".

use std::path::Path;

use super::signature::{expected, Extracted};
use super::{key_file_failure, run_verifier, Reason, Refusal, Verdict};
use crate::config::trust::Verify;
use crate::process::Cmd;

/// Verifies; returns the principal that signed.
pub async fn verify(allowed: &Path, x: &Extracted) -> Result<String, Verdict> {
    std::fs::File::open(allowed)
        .map_err(|e| key_file_failure(x.subject.section(), "allowed_signers_file", allowed, &e))?;
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
            if let Some(refusal) = outside_window(allowed, x, &verify).await? {
                return Err(Verdict::Refused(refusal));
            }
            return Err(Verdict::Refused(Refusal {
                reason: Reason::UntrustedKey,
                message: format!(
                    "{} is signed by a key that no entry of {} allows (not listed, or outside its valid-after/valid-before window): refused",
                    x.subject.describe(&x.commit),
                    allowed.display()
                ),
                expected: expected(&verify),
            }));
        }
    };
    let checked = run_verifier(
        Cmd::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(allowed)
            .arg("-I")
            .arg(&principal)
            .args(["-n", x.subject.namespace(), "-s"])
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
                "the signature of {} by {principal} does not verify: refused (the {} was altered, the signature is not a {} signature, or the key is outside its valid-after/valid-before window)",
                x.subject.describe(&x.commit),
                x.subject.thing(),
                x.subject.namespace()
            ),
            expected: expected(&verify),
        }));
    }
    Ok(principal)
}

/// When `find-principals` found no one: whether the signing key is in the file with a
/// `valid-after`/`valid-before` window the signing time is outside of. ssh-keygen says
/// so only in words on stderr (exit 255 for every failure), so the agent asks it again,
/// structurally: the key is looked up in the file by its bytes (from the signature), and
/// `find-principals` is run again at a time inside that entry's window
/// (`-O verify-time=`). A principal found then means the window alone refused the key:
/// [`Reason::ExpiredKey`].
async fn outside_window(
    allowed: &Path,
    x: &Extracted,
    verify: &Verify,
) -> Result<Option<Refusal>, Verdict> {
    let (Ok(signature), Ok(text)) = (
        super::read_small(&x.signature, 64 * 1024),
        super::read_small(allowed, 1 << 20),
    ) else {
        return Ok(None);
    };
    let Some(key) = signing_key(&signature) else {
        return Ok(None);
    };
    let Some(window) = window_of(&String::from_utf8_lossy(&text), &key) else {
        return Ok(None);
    };
    let again = run_verifier(
        Cmd::new("ssh-keygen")
            .args(["-Y", "find-principals", "-f"])
            .arg(allowed)
            .arg("-O")
            .arg(format!("verify-time={}", window.inside))
            .arg("-s")
            .arg(&x.signature),
        "ssh-keygen",
        "openssh-client",
    )
    .await?;
    let principal = again.stdout.lines().map(str::trim).find(|l| !l.is_empty());
    let (true, Some(principal)) = (again.status.success(), principal) else {
        return Ok(None);
    };
    Ok(Some(Refusal {
        reason: Reason::ExpiredKey,
        message: format!(
            "{} is signed by the key of {principal}, which {} allows only {}: the key \
             has expired or is not valid yet: refused",
            x.subject.describe(&x.commit),
            allowed.display(),
            window.shown
        ),
        expected: expected(verify),
    }))
}

/// The signing key of an armored ssh signature (`SSHSIG`), as allowed-signers files
/// write keys: the base64 of its public key blob.
fn signing_key(armored: &[u8]) -> Option<String> {
    use base64::Engine;
    let text = std::str::from_utf8(armored).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    // "SSHSIG", uint32 version, string publickey (uint32 length, bytes).
    let rest = blob.strip_prefix(b"SSHSIG")?;
    let len = u32::from_be_bytes(rest.get(4..8)?.try_into().ok()?) as usize;
    let key = rest.get(8..8usize.checked_add(len)?)?;
    Some(base64::engine::general_purpose::STANDARD.encode(key))
}

/// An allowed-signers entry's validity window.
#[derive(Debug, PartialEq, Eq)]
struct Window {
    /// A time inside it, in ssh-keygen's form (`valid-after` itself, or a day long past
    /// when only `valid-before` is given).
    inside: String,
    /// The options as written, for the message.
    shown: String,
}

/// The window of the entry for `key` (base64), if that entry has one.
fn window_of(allowed: &str, key: &str) -> Option<Window> {
    allowed.lines().map(str::trim).find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let at = tokens.iter().position(|t| *t == key)?;
        // principals, options…, key type, key.
        let options = tokens.get(1..at.checked_sub(1)?)?.join(" ");
        let value = |name: &str| {
            let lower = options.to_ascii_lowercase();
            let start = lower.find(&format!("{name}="))? + name.len() + 1;
            let rest = options[start..].trim_start_matches('"');
            let end = rest.find(['"', ',', ' ']).unwrap_or(rest.len());
            Some(rest[..end].to_string())
        };
        let (after, before) = (value("valid-after"), value("valid-before"));
        let shown = [("valid-after", &after), ("valid-before", &before)]
            .iter()
            .filter_map(|(n, v)| v.as_ref().map(|v| format!("{n}=\"{v}\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let inside = match (&after, &before) {
            (Some(a), _) => a.clone(),
            (None, Some(_)) => "19700102".to_string(),
            (None, None) => return None,
        };
        Some(Window {
            inside,
            shown: crate::text::escape_controls(&shown, false).into_owned(),
        })
    })
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
    use super::*;

    #[test]
    fn the_window_of_the_signing_keys_entry() {
        let file = "# team\nalice@x ssh-ed25519 AAAA\nbob@y namespaces=\"git\",valid-before=\"20200101\" ssh-ed25519 BBBB c\n\"c@z\" valid-after=\"20990101Z\",valid-before=\"21000101\" ssh-ed25519 CCCC\n";
        assert_eq!(window_of(file, "AAAA"), None);
        assert_eq!(window_of(file, "DDDD"), None);
        assert_eq!(
            window_of(file, "BBBB"),
            Some(Window {
                inside: "19700102".into(),
                shown: "valid-before=\"20200101\"".into()
            })
        );
        assert_eq!(
            window_of(file, "CCCC"),
            Some(Window {
                inside: "20990101Z".into(),
                shown: "valid-after=\"20990101Z\" valid-before=\"21000101\"".into()
            })
        );
    }

    #[test]
    fn the_signing_key_comes_out_of_the_signature() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghijklmnopqrstuvwxyz012345";
        let mut blob = b"SSHSIG\0\0\0\x01".to_vec();
        blob.extend((key.len() as u32).to_be_bytes());
        blob.extend(key);
        blob.extend(b"\0\0\0\x03git");
        let armored = format!(
            "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
            b64.encode(&blob)
        );
        assert_eq!(signing_key(armored.as_bytes()), Some(b64.encode(key)));
        assert_eq!(signing_key(b"-----BEGIN SSH SIGNATURE-----\nAAAA\n"), None);
        assert_eq!(signing_key(b"\xff"), None);
    }

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
