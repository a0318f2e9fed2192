//! Whether the fetched manifest files give this deployment its system: in order, the
//! manifest is there, its signature is by a `[prebuilt]` key (before its content is
//! parsed), it parses, it is for this commit, it names this host. Any "no" is a
//! [`Fallback`] with the reason in words; none blames the commit.

use crate::config::prebuilt::PrebuiltSettings;
use crate::source::prebuilt::PrebuiltFiles;
use crate::state::obtained::Fallback;
use crate::trust::{Reason, Verdict};

use super::manifest::{self, Manifest, Mismatch, SignatureFile, StorePath};

/// What the manifest says for this deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Realise this system; the manifest was signed by `signer`.
    Use { system: StorePath, signer: String },
    /// Build here, and why.
    Fallback { reason: Fallback, why: String },
}

fn fallback(reason: Fallback, why: String) -> Decision {
    Decision::Fallback { reason, why }
}

/// Whether the manifest for `commit` is on the branch (even a bad one): when it is not,
/// the agent may wait for it (`[prebuilt] wait`).
pub fn present(files: Option<&PrebuiltFiles>, commit: &str) -> bool {
    files.is_some_and(|f| f.commit == commit && (f.manifest.is_some() || f.problem.is_some()))
}

/// The decision for `commit` on `host`. `late`: the wait for a missing manifest ran out
/// (else a missing one is [`Fallback::Missing`]).
pub async fn decide(
    settings: &PrebuiltSettings,
    files: Option<&PrebuiltFiles>,
    commit: &str,
    host: &str,
    late: bool,
) -> Decision {
    let short = crate::trust::short(commit);
    let absent = |why: String| match late {
        true => fallback(
            Fallback::Late,
            format!(
                "{why}, and [prebuilt] wait ({}) has run out",
                crate::duration::format_duration(settings.wait)
            ),
        ),
        false => fallback(Fallback::Missing, why),
    };
    let Some(files) = files.filter(|f| f.commit == commit) else {
        return absent(format!("no prebuilt manifest was fetched for {short}"));
    };
    let Some(text) = &files.manifest else {
        if let Some(problem) = &files.problem {
            return fallback(
                Fallback::Invalid,
                format!(
                    "the prebuilt manifest of {short} cannot be read: {}",
                    crate::text::escape_controls(problem, false)
                ),
            );
        }
        return absent(match &files.branch_tip {
            None => format!(
                "the remote has no branch {:?} with prebuilt manifests",
                settings.branch
            ),
            Some(_) => format!(
                "branch {:?} has no {}",
                settings.branch,
                manifest::path(commit)
            ),
        });
    };
    let signature = match (&settings.key, &files.ssh_signature, &files.gpg_signature) {
        (crate::config::trust::Verify::Gpg { .. }, _, Some(asc)) => {
            Some(SignatureFile::Gpg(asc.clone().into_bytes()))
        }
        (_, Some(sig), _) => Some(SignatureFile::Ssh(sig.clone().into_bytes())),
        (_, None, Some(asc)) => Some(SignatureFile::Gpg(asc.clone().into_bytes())),
        (_, None, None) => None,
    };
    let signer =
        match manifest::verify(&settings.key, commit, text.as_bytes(), signature.as_ref()).await {
            Ok(signer) => signer,
            Err(Verdict::Refused(r)) => {
                let reason = match r.reason {
                    Reason::Unsigned => Fallback::Unsigned,
                    Reason::UntrustedKey => Fallback::UntrustedKey,
                    Reason::ExpiredKey => Fallback::ExpiredKey,
                    Reason::RevokedKey => Fallback::RevokedKey,
                    Reason::BadSignature | Reason::Downgrade => Fallback::BadSignature,
                };
                return fallback(reason, r.message);
            }
            Err(Verdict::Failed(f)) => return fallback(Fallback::CheckFailed, f.message),
        };
    let parsed = match Manifest::parse(text.as_bytes()) {
        Ok(m) => m,
        Err(e) => {
            return fallback(
                Fallback::Invalid,
                format!("the prebuilt manifest of {short} (signed by {signer}) is not valid: {e}"),
            )
        }
    };
    match parsed.system_for(commit, host) {
        Ok(system) => Decision::Use {
            system: system.clone(),
            signer,
        },
        Err(m) => {
            let reason = match m {
                Mismatch::OtherCommit { .. } => Fallback::OtherCommit,
                Mismatch::NoHost { .. } => Fallback::NoHost,
            };
            fallback(
                reason,
                format!("the prebuilt manifest of {short} (signed by {signer}) is refused: {m}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::trust::Verify;

    const COMMIT: &str = "3f2a9c1e0b8d7a6f5e4d3c2b1a0f9e8d7c6b5a49";

    fn settings() -> PrebuiltSettings {
        PrebuiltSettings {
            enable: true,
            key: Verify::Ssh {
                allowed_signers_file: "/no/such/allowed".into(),
            },
            ..PrebuiltSettings::default()
        }
    }

    async fn reason(files: Option<&PrebuiltFiles>, late: bool) -> (Fallback, String) {
        match decide(&settings(), files, COMMIT, "pi1", late).await {
            Decision::Fallback { reason, why } => (reason, why),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_fetched_or_no_file_is_missing_then_late() {
        let (r, why) = reason(None, false).await;
        assert_eq!(r, Fallback::Missing);
        assert_eq!(why, "no prebuilt manifest was fetched for 3f2a9c1e");
        let no_branch = PrebuiltFiles {
            commit: COMMIT.into(),
            ..Default::default()
        };
        let (r, why) = reason(Some(&no_branch), false).await;
        assert_eq!(r, Fallback::Missing);
        assert_eq!(
            why,
            "the remote has no branch \"homelab-prebuilt\" with prebuilt manifests"
        );
        let no_file = PrebuiltFiles {
            branch_tip: Some("d".repeat(40)),
            ..no_branch.clone()
        };
        let (r, why) = reason(Some(&no_file), true).await;
        assert_eq!(r, Fallback::Late);
        assert_eq!(
            why,
            format!("branch \"homelab-prebuilt\" has no prebuilt/{COMMIT}.json, and [prebuilt] wait (30m) has run out")
        );
        // Files fetched for another commit say nothing about this one.
        let other = PrebuiltFiles {
            commit: "0".repeat(40),
            manifest: Some("{}".into()),
            ..no_file.clone()
        };
        assert_eq!(reason(Some(&other), false).await.0, Fallback::Missing);
        assert!(!present(Some(&other), COMMIT));
        assert!(!present(Some(&no_file), COMMIT));
    }

    #[tokio::test]
    async fn an_unreadable_file_is_invalid_and_present() {
        let files = PrebuiltFiles {
            commit: COMMIT.into(),
            branch_tip: Some("d".repeat(40)),
            problem: Some(format!(
                "prebuilt/{COMMIT}.json: 300000 bytes, more than the 262144 allowed"
            )),
            ..Default::default()
        };
        let (r, why) = reason(Some(&files), false).await;
        assert_eq!(r, Fallback::Invalid);
        assert!(why.contains("cannot be read: prebuilt/"), "{why}");
        assert!(present(Some(&files), COMMIT));
    }

    #[tokio::test]
    async fn no_signature_file_is_unsigned_and_the_key_file_is_checked_first() {
        let files = PrebuiltFiles {
            commit: COMMIT.into(),
            branch_tip: Some("d".repeat(40)),
            manifest: Some("{}".into()),
            ..Default::default()
        };
        assert!(present(Some(&files), COMMIT));
        let (r, why) = reason(Some(&files), false).await;
        assert_eq!(r, Fallback::Unsigned);
        assert!(why.contains("is not signed"), "{why}");
        let signed = PrebuiltFiles {
            ssh_signature: Some("-----BEGIN SSH SIGNATURE-----\n".into()),
            ..files
        };
        // The allowed signers file is missing: the check could not run.
        let (r, why) = reason(Some(&signed), false).await;
        assert_eq!(r, Fallback::CheckFailed);
        assert!(
            why.contains("cannot read [prebuilt] allowed_signers_file"),
            "{why}"
        );
    }
}
