//! The signature and the signed payload of a commit, as git stores them (the `gpgsig`
//! header, for OpenPGP and ssh signatures alike), written to a private temporary
//! directory for the verification tool.

use std::path::PathBuf;

use git2::{ErrorCode, Oid, Repository};

use super::{short, Reason, Refusal, Verdict};
use crate::config::trust::Verify;
use crate::failure::{Failure, Kind};

/// The armour line an ssh signature starts with (`man ssh-keygen`, `-Y sign`).
pub const SSH_ARMOR: &str = "-----BEGIN SSH SIGNATURE-----";
/// The armour line of an OpenPGP signature.
pub const PGP_ARMOR: &str = "-----BEGIN PGP SIGNATURE-----";

/// A commit's signature and payload on disk; the directory goes when this is dropped.
pub struct Extracted {
    _dir: tempfile::TempDir,
    pub commit: String,
    pub signature: PathBuf,
    pub payload: PathBuf,
}

/// Extracts the signature of `oid`; a commit without one is refused here, and one in
/// the other format (OpenPGP where ssh is expected, or the reverse) too.
pub fn extract(repo: &Repository, oid: Oid, verify: &Verify) -> Result<Extracted, Verdict> {
    let commit = oid.to_string();
    let (signature, payload) = match repo.extract_signature(&oid, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Err(Verdict::Refused(Refusal {
                reason: Reason::Unsigned,
                message: format!(
                    "commit {} is not signed: refused (verify = {:?})",
                    short(&commit),
                    verify.as_str()
                ),
                expected: expected(verify),
            }))
        }
        Err(e) => {
            return Err(Verdict::Failed(Failure::new(
                Kind::Environment,
                format!(
                    "reading the signature of {} from the git cache: {}",
                    short(&commit),
                    e.message()
                ),
            )))
        }
    };
    let text = String::from_utf8_lossy(&signature);
    let first = text.lines().next().unwrap_or("").trim();
    let wanted = match verify {
        Verify::Ssh { .. } => SSH_ARMOR,
        _ => PGP_ARMOR,
    };
    if first != wanted {
        let found = match first {
            SSH_ARMOR => "an ssh signature",
            PGP_ARMOR => "an OpenPGP signature",
            _ => "a signature of an unknown kind",
        };
        return Err(Verdict::Refused(Refusal {
            reason: Reason::UntrustedKey,
            message: format!(
                "commit {} carries {found}, but verify = {:?}: refused",
                short(&commit),
                verify.as_str()
            ),
            expected: expected(verify),
        }));
    }
    let write = || -> std::io::Result<Extracted> {
        let dir = tempfile::Builder::new()
            .prefix("homelab-agent-verify-")
            .tempdir()?;
        let sig_path = dir.path().join("commit.sig");
        let payload_path = dir.path().join("commit.payload");
        std::fs::write(&sig_path, &*signature)?;
        std::fs::write(&payload_path, &*payload)?;
        Ok(Extracted {
            _dir: dir,
            commit: commit.clone(),
            signature: sig_path,
            payload: payload_path,
        })
    };
    write().map_err(|e| {
        Verdict::Failed(Failure::new(
            crate::failure::io_kind(&e),
            format!(
                "writing the signature of {} to a temporary directory: {e}",
                short(&commit)
            ),
        ))
    })
}

/// What a head must carry, in words (the files, and who is in them).
pub fn expected(verify: &Verify) -> String {
    match verify {
        Verify::None => "nothing (verify = \"none\")".into(),
        Verify::Ssh {
            allowed_signers_file,
        } => {
            let principals = super::ssh::principals(allowed_signers_file);
            format!(
                "an ssh signature by a key in {}{}",
                allowed_signers_file.display(),
                if principals.is_empty() {
                    String::new()
                } else {
                    format!(" (principals: {})", principals.join(", "))
                }
            )
        }
        Verify::Gpg { keyring } => {
            format!(
                "an OpenPGP signature by a valid key in {}",
                keyring.display()
            )
        }
    }
}
