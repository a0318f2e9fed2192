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

/// A signature and its payload on disk; the directory goes when this is dropped.
pub struct Extracted {
    _dir: tempfile::TempDir,
    pub commit: String,
    /// What was signed: a commit, or a prebuilt manifest of the commit.
    pub subject: Subject,
    pub signature: PathBuf,
    pub payload: PathBuf,
}

/// What a signature is over: the namespace it must be made in, the config section whose
/// keys verify it, and the words for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A commit, signed by git (`[source] verify`).
    Commit,
    /// A prebuilt manifest of the commit (`[prebuilt]`, crate::prebuilt::manifest).
    Manifest,
}

impl Subject {
    /// The ssh signature namespace (`ssh-keygen -Y sign -n`).
    pub fn namespace(self) -> &'static str {
        match self {
            Subject::Commit => "git",
            Subject::Manifest => "homelab-prebuilt",
        }
    }

    /// The config section naming the key files.
    pub fn section(self) -> &'static str {
        match self {
            Subject::Commit => "source",
            Subject::Manifest => "prebuilt",
        }
    }

    /// The thing, in a word: what "was altered" when a signature does not verify.
    pub fn thing(self) -> &'static str {
        match self {
            Subject::Commit => "commit",
            Subject::Manifest => "manifest",
        }
    }

    /// "commit 3f2a9c1e" or "the prebuilt manifest of 3f2a9c1e".
    pub fn describe(self, commit: &str) -> String {
        match self {
            Subject::Commit => format!("commit {}", short(commit)),
            Subject::Manifest => format!("the prebuilt manifest of {}", short(commit)),
        }
    }
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
    to_files(&commit, Subject::Commit, &signature, &payload)
}

/// Writes a signature and its payload to a private temporary directory for the
/// verification tool.
pub fn to_files(
    commit: &str,
    subject: Subject,
    signature: &[u8],
    payload: &[u8],
) -> Result<Extracted, Verdict> {
    let write = || -> std::io::Result<Extracted> {
        let dir = tempfile::Builder::new()
            .prefix("homelab-agent-verify-")
            .tempdir()?;
        let sig_path = dir.path().join("signed.sig");
        let payload_path = dir.path().join("signed.payload");
        std::fs::write(&sig_path, signature)?;
        std::fs::write(&payload_path, payload)?;
        Ok(Extracted {
            _dir: dir,
            commit: commit.to_string(),
            subject,
            signature: sig_path,
            payload: payload_path,
        })
    };
    write().map_err(|e| {
        Verdict::Failed(Failure::new(
            crate::failure::io_kind(&e),
            format!(
                "writing the signature of {} to a temporary directory: {e}",
                subject.describe(commit)
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
