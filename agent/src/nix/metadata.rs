//! `nix flake metadata --json`: the lock file nix itself resolves for a commit of the
//! agent's cache (its `locks`), without writing anything. trust/inputs.rs compares it
//! with the lock the commit carries: an input nix had to add or change is not pinned by
//! the signed commit.

use std::path::Path;
use std::time::Duration;

use crate::process::{Cmd, CmdError};

/// How long resolving the inputs may take (it may fetch them, as the build would).
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(600);

/// The argument vector (without the program).
pub fn metadata_args(cache: &Path, commit: &str) -> Vec<String> {
    let flake = super::flake_ref(cache, commit, "");
    vec![
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
        "flake".into(),
        "metadata".into(),
        "--json".into(),
        "--no-write-lock-file".into(),
        flake.trim_end_matches('#').to_string(),
    ]
}

/// Why nix could not say which lock a commit resolves to.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// nix did not run, or did not finish in time.
    #[error(transparent)]
    Run(#[from] CmdError),
    #[error("nix flake metadata failed ({status}):\n{stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("nix flake metadata printed more than the agent reads")]
    TooLong,
    #[error("unexpected output from nix flake metadata: {0}")]
    Output(String),
    #[error("nix flake metadata printed no \"locks\"")]
    NoLocks,
}

/// The lock nix resolves for `commit` (`locks` of its JSON), or why it could not say.
pub async fn resolved_lock(cache: &Path, commit: &str) -> Result<serde_json::Value, MetadataError> {
    let done = Cmd::new("nix")
        .args(metadata_args(cache, commit))
        .timeout(METADATA_TIMEOUT)
        .capture_stdout()
        .run()
        .await?;
    if !done.status.success() {
        return Err(MetadataError::Failed {
            status: done.status,
            stderr: done.stderr_tail,
        });
    }
    if done.stdout_truncated {
        return Err(MetadataError::TooLong);
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&done.stdout).map_err(|e| MetadataError::Output(e.to_string()))?;
    v.get_mut("locks")
        .map(serde_json::Value::take)
        .ok_or(MetadataError::NoLocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_of_a_pinned_commit_writes_nothing() {
        let args = metadata_args(Path::new("/var/lib/homelab-agent/cache.git"), "abc");
        assert_eq!(
            args,
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "flake",
                "metadata",
                "--json",
                "--no-write-lock-file",
                "git+file:///var/lib/homelab-agent/cache.git?ref=refs/heads/homelab-agent/candidate&rev=abc",
            ]
        );
    }
}
