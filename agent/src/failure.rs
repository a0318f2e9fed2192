//! The failure taxonomy: who is to blame when something goes wrong.
//!
//! Every error a run can end with has a [`Kind`]; the exit code, whether the run is
//! retried, whether the commit is remembered as bad, and the hint all follow from it.
//! Errors are classified by their type and OS error code, never by words in a message.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The network or the remote (refused, unreachable, timed out, TLS not yet valid):
    /// nothing is learnt about the commit; the next run tries again.
    Transient,
    /// This machine: a tool missing, permissions, disk full or read-only, store errors.
    /// Not the commit's fault: it is never marked bad; the operator must act.
    Environment,
    /// The agent's own configuration (or what it names: a missing repository, key file,
    /// unknown host attribute): fix the config; the commit is not blamed.
    Configuration,
    /// The commit itself: evaluation, build, activation or health failed. The only kind
    /// that marks a commit bad (not retried until the branch moves).
    Commit,
}

impl Kind {
    /// Stable label, used in status JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Transient => "transient",
            Kind::Environment => "environment",
            Kind::Configuration => "configuration",
            Kind::Commit => "commit",
        }
    }

    /// Only a failure of the commit marks it bad.
    pub fn blames_commit(self) -> bool {
        self == Kind::Commit
    }

    /// The process exit code for a run that ended with this kind of failure
    /// (README "Exit codes").
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Transient => crate::exit::TRANSIENT,
            Kind::Environment => crate::exit::ENVIRONMENT,
            Kind::Configuration => crate::exit::CONFIG,
            Kind::Commit => crate::exit::FAILED,
        }
    }

    /// What the operator can do about it, in one line.
    pub fn hint(self) -> &'static str {
        match self {
            Kind::Transient => "nothing to do if it passes: the next run tries again",
            Kind::Environment => "fix this machine (the error says what); the commit is not blamed",
            Kind::Configuration => {
                "fix /etc/homelab-agent/config.toml (or the NixOS options); `homelab-agent config check` validates it"
            }
            Kind::Commit => "push a fix, or run `homelab-agent retry` to try this commit again",
        }
    }
}

/// The kind of a local I/O error (state, cache, gcroots): by its OS error code.
pub fn io_kind(e: &std::io::Error) -> Kind {
    use nix::errno::Errno;
    match e.raw_os_error().map(Errno::from_raw) {
        Some(
            Errno::ENOSPC
            | Errno::EDQUOT
            | Errno::EROFS
            | Errno::EACCES
            | Errno::EPERM
            | Errno::EIO
            | Errno::ENOMEM
            | Errno::EMFILE
            | Errno::ENFILE,
        ) => Kind::Environment,
        Some(
            Errno::ECONNREFUSED
            | Errno::ECONNRESET
            | Errno::ECONNABORTED
            | Errno::ENETUNREACH
            | Errno::EHOSTUNREACH
            | Errno::ENETDOWN
            | Errno::ETIMEDOUT
            | Errno::EPIPE,
        ) => Kind::Transient,
        _ => match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionRefused => Kind::Transient,
            _ => Kind::Environment,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commit_failures_blame_the_commit() {
        for k in [Kind::Transient, Kind::Environment, Kind::Configuration] {
            assert!(!k.blames_commit(), "{k:?}");
        }
        assert!(Kind::Commit.blames_commit());
    }

    #[test]
    fn io_errors_classify_by_os_code() {
        let e = |code| std::io::Error::from_raw_os_error(code);
        assert_eq!(io_kind(&e(libc_enospc())), Kind::Environment);
        assert_eq!(
            io_kind(&e(nix::errno::Errno::EROFS as i32)),
            Kind::Environment
        );
        assert_eq!(
            io_kind(&e(nix::errno::Errno::EACCES as i32)),
            Kind::Environment
        );
        assert_eq!(
            io_kind(&e(nix::errno::Errno::ECONNREFUSED as i32)),
            Kind::Transient
        );
    }

    fn libc_enospc() -> i32 {
        nix::errno::Errno::ENOSPC as i32
    }

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let codes: std::collections::HashSet<u8> = [
            Kind::Transient,
            Kind::Environment,
            Kind::Configuration,
            Kind::Commit,
        ]
        .iter()
        .map(|k| k.exit_code())
        .collect();
        assert_eq!(codes.len(), 4);
    }
}
