//! Trusting the source: a head is deployed only if its tip commit is signed by an allowed
//! key (`[source] verify`, [`signature`]) and it descends from every commit this machine
//! is known to run ([`ancestry`]; the floor comes from the state file and from the
//! running system's own stamp, [`stamp`], so losing the state file does not lower it).
//! Both checks run on the agent's git cache after the fetch and before nix sees anything.
//!
//! | file           | owns                                                           |
//! |----------------|----------------------------------------------------------------|
//! | `mod.rs`       | the verdict types and [`check`], the one entry point          |
//! | `signature.rs` | the signature and payload out of the commit (git2)             |
//! | `ssh.rs`       | `ssh-keygen -Y find-principals` / `-Y verify`, by exit code    |
//! | `gpg.rs`       | `gpgv --status-fd`, by exit code and status lines              |
//! | `ancestry.rs`  | the floor commits and `graph_descendant_of`                    |
//! | `inputs.rs`    | with signatures on, every flake input locked by the commit     |
//! | `stamp.rs`     | the commit the running system says it was built from           |

pub mod ancestry;
pub mod gpg;
pub mod inputs;
pub mod signature;
pub mod ssh;
pub mod stamp;

use std::path::Path;
use std::time::Duration;

use crate::config::trust::{TrustSettings, Verify};
use crate::failure::{Failure, Kind};
pub use ancestry::Floor;

/// How long one verification tool may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// The most one [`check`] may take: up to three tool runs (ssh: find-principals, its
/// window re-run, verify) and resolving the flake's inputs ([`inputs`]).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(
    TOOL_TIMEOUT.as_secs() * 3 + crate::nix::metadata::METADATA_TIMEOUT.as_secs(),
);

pub use crate::model::trust::Reason;

/// A head refused for what it is: never built, never retried under the same policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// What is wrong, naming the commit (no key material: fingerprints and principals).
    pub message: String,
    /// What would have been accepted: the signers file or keyring and who is in it, or
    /// the floor commit.
    pub expected: String,
}

/// A check that did not pass.
#[derive(Debug)]
pub enum Verdict {
    /// The head is refused.
    Refused(Refusal),
    /// The check itself could not run (a tool missing, a key file unreadable): says
    /// nothing about the commit; the next run checks again.
    Failed(Failure),
}

/// What a head that passed was checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Who signed it (principal or key fingerprint), when signatures are verified.
    pub signer: Option<String>,
}

/// Both checks on `commit` in the bare repository `cache`: ancestry first (no process),
/// then the signature.
pub async fn check(
    trust: &TrustSettings,
    cache: &Path,
    commit: &str,
    floors: &[Floor],
) -> Result<Checked, Verdict> {
    let repo = git2::Repository::open_bare(cache).map_err(|e| {
        Verdict::Failed(Failure::new(
            Kind::Environment,
            format!(
                "opening the git cache {} to verify {commit}: {}\nhint: the next run fetches again",
                cache.display(),
                e.message()
            ),
        ))
    })?;
    let oid = git2::Oid::from_str(commit).map_err(|e| {
        Verdict::Failed(Failure::new(
            Kind::Environment,
            format!("verifying {commit}: not a commit id: {}", e.message()),
        ))
    })?;
    if !trust.allow_downgrade {
        ancestry::check(&repo, oid, floors)?;
    }
    let verify = &trust.verify;
    let signer = match verify {
        Verify::None => None,
        Verify::Ssh {
            allowed_signers_file,
        } => {
            let extracted = signature::extract(&repo, oid, verify)?;
            Some(ssh::verify(allowed_signers_file, &extracted).await?)
        }
        Verify::Gpg { keyring } => {
            let extracted = signature::extract(&repo, oid, verify)?;
            Some(gpg::verify(keyring, &extracted).await?)
        }
    };
    // What the signature vouches for must be all that is built: no unlocked input.
    if *verify != Verify::None {
        let committed = inputs::check(&repo, oid)?;
        let resolved = inputs::resolved(cache, commit).await?;
        inputs::matches_resolved(commit, &committed, &resolved)?;
    }
    Ok(Checked { signer })
}

/// A key file named by the config that cannot be read: missing is the configuration's
/// fault, anything else this machine's.
pub(crate) fn key_file_failure(
    section: &str,
    key: &str,
    path: &Path,
    e: &std::io::Error,
) -> Verdict {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => Kind::Configuration,
        _ => match crate::failure::io_kind(e) {
            Kind::Transient => Kind::Environment,
            k => k,
        },
    };
    Verdict::Failed(Failure::new(
        kind,
        format!(
            "cannot read [{section}] {key} {}: {e}\nhint: check [{section}] {key}; {}",
            path.display(),
            match section {
                "source" => "no head is deployed until it can be read",
                _ => "until it can be read, every head is built here",
            }
        ),
    ))
}

/// A verification tool that could not run.
pub(crate) fn tool_failure(tool: &str, package: &str, e: crate::process::CmdError) -> Verdict {
    use crate::process::CmdError;
    let message = match e {
        CmdError::NotFound { .. } => format!(
            "{tool} not found: signatures cannot be verified\nhint: install {package} (the NixOS module puts it on the agent's PATH)"
        ),
        other => format!("running {tool} to verify a signature: {other}"),
    };
    Verdict::Failed(Failure::new(Kind::Environment, message))
}

/// A verifier ended by a signal (the OOM killer on a small Pi) says nothing about the
/// commit: a machine failure, checked again by the next run, never a refusal.
pub(crate) fn killed(tool: &str, status: &std::process::ExitStatus) -> Result<(), Verdict> {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => Err(Verdict::Failed(Failure::new(
            Kind::Environment,
            format!("{tool} was killed by signal {sig} while verifying a signature (out of memory?)\nhint: free memory on this machine; the next run checks again"),
        ))),
        None => Ok(()),
    }
}

/// Runs a verifier (`tool`, packaged as `package`) within [`TOOL_TIMEOUT`], its stdout
/// captured. Not run, or killed by a signal, is a machine failure ([`tool_failure`],
/// [`killed`]); its exit code is the caller's to read.
pub(crate) async fn run_verifier(
    cmd: crate::process::Cmd,
    tool: &str,
    package: &str,
) -> Result<crate::process::Finished, Verdict> {
    let done = cmd
        .timeout(TOOL_TIMEOUT)
        .capture_stdout()
        .run()
        .await
        .map_err(|e| tool_failure(tool, package, e))?;
    killed(tool, &done.status)?;
    Ok(done)
}

/// A short commit id for messages.
pub(crate) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}

/// At most `max` bytes of a small file (key files, stamps), following symlinks (NixOS
/// puts them in /etc as links into the store).
pub(crate) fn read_small(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?.take(max).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod killed_tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    #[test]
    fn a_verifier_killed_by_a_signal_is_the_machines_failure_not_a_refusal() {
        match killed("gpgv", &ExitStatus::from_raw(9)) {
            Err(Verdict::Failed(f)) => {
                assert_eq!(f.kind, Kind::Environment);
                assert!(
                    f.message.contains("gpgv was killed by signal 9"),
                    "{}",
                    f.message
                );
                assert!(f.message.contains("\nhint: "), "{}", f.message);
            }
            other => panic!("{other:?}"),
        }
        // An exit status (even a failing one) is the tool's verdict: not this check's.
        assert!(killed("ssh-keygen", &ExitStatus::from_raw(1 << 8)).is_ok());
    }
}
