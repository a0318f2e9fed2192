//! Signing the manifest: a detached signature by the publisher's own key, checked on
//! every agent by the trust code it already has (ssh-keygen -Y verify, or gpgv).

use std::time::Duration;

use super::{PublishError, Signer};
use crate::process::{Cmd, CmdError};

use crate::prebuilt::manifest::NAMESPACE;
/// A signer waiting on a hardware key or a pinentry gets this long.
const SIGN_TIMEOUT: Duration = Duration::from_secs(300);
/// A signature is a few hundred bytes; this is far above any.
const MAX_SIGNATURE: u64 = 64 << 10;

/// A detached signature and the extension its file takes next to the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub text: String,
    /// `sig` (ssh) or `asc` (gpg, armored).
    pub extension: &'static str,
}

/// Checks that the signer can sign before anything is built (a build can take hours):
/// the ssh key file opens, or gpg has the secret key.
pub async fn check(signer: &Signer) -> Result<(), PublishError> {
    match signer {
        Signer::Ssh { key } => std::fs::File::open(key)
            .map(drop)
            .map_err(|e| sign_failed(signer, format!("cannot open {}: {e}", key.display()))),
        Signer::Gpg { key_id } => Cmd::new("gpg")
            .args(["--batch", "--list-secret-keys", "--"])
            .arg(key_id)
            .timeout(SIGN_TIMEOUT)
            .keep_stderr_lines(5)
            .run_ok()
            .await
            .map(drop)
            .map_err(|e| match e {
                CmdError::NotFound { program } => PublishError::Tool {
                    program,
                    problem: "it is not on PATH".into(),
                },
                other => sign_failed(signer, format!("gpg has no secret key for it: {other}")),
            }),
    }
}

/// Signs `manifest` (the exact bytes that are committed).
pub async fn sign(signer: &Signer, manifest: &str) -> Result<Signature, PublishError> {
    let dir = tempfile::Builder::new()
        .prefix("homelab-publish-")
        .tempdir()
        .map_err(|e| sign_failed(signer, format!("cannot make a temporary directory: {e}")))?;
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, manifest)
        .map_err(|e| sign_failed(signer, format!("cannot write {}: {e}", file.display())))?;
    let (cmd, out, extension) = match signer {
        Signer::Ssh { key } => (
            Cmd::new("ssh-keygen")
                .args(["-q", "-Y", "sign", "-n", NAMESPACE, "-f"])
                .arg(key)
                .arg(&file),
            dir.path().join("manifest.json.sig"),
            "sig",
        ),
        Signer::Gpg { key_id } => {
            let out = dir.path().join("manifest.json.asc");
            (
                Cmd::new("gpg")
                    .args([
                        "--batch",
                        "--yes",
                        "--armor",
                        "--detach-sign",
                        "--local-user",
                    ])
                    .arg(key_id)
                    .arg("--output")
                    .arg(&out)
                    .arg(&file),
                out,
                "asc",
            )
        }
    };
    cmd.timeout(SIGN_TIMEOUT)
        .keep_stderr_lines(20)
        .run_ok()
        .await
        .map_err(|e| match e {
            CmdError::NotFound { program } => PublishError::Tool {
                program,
                problem: "it is not on PATH".into(),
            },
            other => sign_failed(signer, other.to_string()),
        })?;
    let text = match crate::state::read_bounded(&out, MAX_SIGNATURE) {
        Ok(crate::state::Found::File(bytes)) => String::from_utf8(bytes)
            .map_err(|_| sign_failed(signer, "the signature is not text".into()))?,
        Ok(crate::state::Found::Missing) => {
            return Err(sign_failed(signer, "it wrote no signature".into()))
        }
        Ok(crate::state::Found::Wrong(why)) => {
            return Err(sign_failed(signer, format!("its signature file {why}")))
        }
        Err(e) => {
            return Err(sign_failed(
                signer,
                format!("cannot read its signature: {e}"),
            ))
        }
    };
    Ok(Signature { text, extension })
}

fn sign_failed(signer: &Signer, detail: String) -> PublishError {
    PublishError::Sign {
        signer: match signer {
            Signer::Ssh { key } => format!("the ssh key {}", key.display()),
            Signer::Gpg { key_id } => format!("the gpg key {key_id}"),
        },
        detail,
    }
}
