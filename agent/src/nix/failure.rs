//! Why a `nix build` failed, and whose problem that is.
//!
//! Decided by type wherever nix gives one, in this order:
//! 1. how the process ended: not found (nix missing), could not start (an OS error
//!    code), our deadline, killed by a signal (the OOM killer): [`CmdError`] variants
//!    and the exit status;
//! 2. the store's and the GC-root directory's filesystem, by `statvfs`: read-only, or
//!    less than [`MIN_FREE_BYTES`] free, is this machine's problem;
//! 3. nix's build-failure exit codes (100 to 104, Nix 2.18+);
//! 4. whether the host exists: `nix eval --json <flake>#nixosConfigurations --apply
//!    builtins.attrNames` lists the hosts (JSON, not text) — see [`super::host_names`].
//!
//! What remains is text, because Nix 2.8 exits 1 for every other error and has no
//! structured error output: an OS error that nix reports (`error: writing to file: No
//! space left on device`) is recognised by the C library's own message for that error
//! code (taken from the OS, not written here), a failed builder by nix's `builder for`
//! line, and anything else with `error:` is an evaluation error. A build that filled
//! the disk frees its partial output before nix exits, so `statvfs` alone cannot see it.

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;

use crate::failure::{io_kind, Kind};

/// Less free space than this on the store's filesystem is "disk full".
pub const MIN_FREE_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("evaluation failed:\n{0}")]
    Eval(String),
    #[error("the flake has no {attribute}:\n{message}")]
    HostMissing {
        attribute: String,
        host: String,
        message: String,
    },
    #[error("build failed:\n{0}")]
    Failed(String),
    #[error("build timed out after {} (limit: [build] timeout); nix and its builders were stopped", crate::duration::format_duration(*after))]
    TimedOut { after: Duration },
    #[error("out of disk space while building:\n{0}")]
    DiskFull(String),
    /// The kernel's OOM killer stopped nix or one of its builders (counted in the agent's
    /// memory cgroup: [`crate::oom_kills`]), whatever nix then reported.
    #[error("out of memory while building: the kernel killed {kills} process{es} of this service (nix or a builder) for memory\n{excerpt}", es = if *kills == 1 { "" } else { "es" })]
    OutOfMemory { kills: u64, excerpt: String },
    #[error("{0}")]
    NixMissing(String),
    /// This machine: nix could not start, was killed, or hit an OS error (read-only or
    /// unwritable store, permissions).
    #[error("nix could not build on this machine: {0}")]
    Machine(String, #[source] Option<std::io::Error>),
    /// A configured path that cannot go into a flake URL.
    #[error("{0}")]
    BadPath(String),
}

impl BuildError {
    /// Whose problem it is; exit code, retry and blame follow from it.
    pub fn kind(&self) -> Kind {
        match self {
            BuildError::Eval(_) | BuildError::Failed(_) => Kind::Commit,
            BuildError::HostMissing { .. } | BuildError::BadPath(_) => Kind::Configuration,
            BuildError::TimedOut { .. } => Kind::Transient,
            BuildError::DiskFull(_)
            | BuildError::NixMissing(_)
            | BuildError::OutOfMemory { .. } => Kind::Environment,
            BuildError::Machine(_, Some(io)) => match io_kind(io) {
                Kind::Transient => Kind::Environment,
                k => k,
            },
            BuildError::Machine(_, None) => Kind::Environment,
        }
    }

    /// What to do about it: a field of the failure ([`crate::failure::Failure::hint`]),
    /// never part of the message.
    pub fn hint(&self) -> String {
        match self {
            BuildError::Eval(_) => "fix the Nix error in your flake and push".into(),
            BuildError::HostMissing { host, .. } if host.is_empty() => {
                "check [host] attribute".into()
            }
            BuildError::HostMissing { host, .. } => {
                format!("check [host] name (\"{host}\"), or add this host to nixosConfigurations")
            }
            BuildError::Failed(_) => "fix the failing derivation in the flake and push; this commit is marked bad and not built again (`nix log <drv>` shows a builder's whole log; if it failed for a passing reason, such as a download, `sudo homelab-agent retry` builds it again)".into(),
            BuildError::TimedOut { .. } => "the commit is not blamed and the build is retried after a backoff; if it is just long, raise [build] timeout, or build it elsewhere and push the outputs to a binary cache this machine uses".into(),
            BuildError::DiskFull(_) => "free space, e.g. `nix-collect-garbage --delete-older-than 30d`; the commit is not blamed".into(),
            BuildError::OutOfMemory { .. } => "this machine needs more memory for this build: add swap or zram (NixOS: zramSwap.enable = true), build on a bigger machine (a remote builder, or a binary cache this machine substitutes from), or raise services.homelab-agent.resources.memoryMax; the commit is not blamed".into(),
            BuildError::NixMissing(_) => "install Nix (Debian/Ubuntu: apt-get install nix-bin) or put it on PATH; the commit is not blamed".into(),
            BuildError::Machine(..) => "fix this machine (the error says what); the commit is not blamed".into(),
            BuildError::BadPath(_) => "choose another [paths] state_dir".into(),
        }
    }

    /// Failures that say nothing about the commit: retried rather than remembered as bad.
    pub fn is_transient(&self) -> bool {
        self.kind() == Kind::Transient
    }
}

/// What the filesystems under the store and the GC root say, by `statvfs`.
pub fn filesystem_problem(dirs: &[&Path]) -> Option<std::io::Error> {
    // A directory that cannot be looked at says nothing about the build.
    dirs.iter()
        .find_map(|dir| crate::free_space::check(dir, MIN_FREE_BYTES).ok().flatten())
        .map(std::io::Error::from)
}

/// The OS's own message for an error code (`No space left on device`), as nix prints it.
fn strerror(e: Errno) -> String {
    let text = std::io::Error::from_raw_os_error(e as i32).to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The text-based part (see the module doc): an OS error code nix reported as text.
/// Disk full anywhere in the output (a builder's own write fails the same way); other
/// machine errors only on nix's own `error:` lines, never in a builder's log.
pub fn reported_errno(stderr: &str) -> Option<Errno> {
    for e in [Errno::ENOSPC, Errno::EDQUOT] {
        if stderr.contains(&strerror(e)) {
            return Some(e);
        }
    }
    let nix_errors = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("error:"));
    for line in nix_errors {
        for e in [Errno::EROFS, Errno::EACCES, Errno::EPERM, Errno::EIO] {
            if line.ends_with(&strerror(e)) {
                return Some(e);
            }
        }
    }
    None
}

/// Nix ≥ 2.18 exits 100 + flags for a failed build (101 timed out, 102 hash mismatch,
/// 104 not deterministic); Nix 2.8 exits 1.
pub fn is_build_failure_code(code: Option<i32>) -> bool {
    matches!(code, Some(100..=111))
}

/// The text-based last resort: nix's own wording for a failed builder, else an
/// evaluation error, else nothing known.
pub fn from_text(stderr: &str, excerpt: String) -> BuildError {
    if stderr.contains("builder for")
        || stderr.contains("build of")
        || stderr.contains("dependencies couldn't be built")
    {
        BuildError::Failed(excerpt)
    } else if stderr.lines().any(|l| l.trim_start().starts_with("error:")) {
        BuildError::Eval(excerpt)
    } else {
        BuildError::Machine(
            format!("nix build failed without an error message:\n{excerpt}"),
            None,
        )
    }
}

/// A build error as the cycle sees it: kind, words, hint, and the error kept.
impl From<BuildError> for crate::failure::Failure {
    fn from(e: BuildError) -> crate::failure::Failure {
        crate::failure::Failure::new(e.kind(), e.to_string())
            .with_hint(e.hint())
            .with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_hints_agree() {
        let cases = [
            (BuildError::Eval("x".into()), Kind::Commit, "push"),
            (
                BuildError::Failed("x".into()),
                Kind::Commit,
                "hint: fix the failing derivation",
            ),
            (
                BuildError::HostMissing {
                    attribute: "a".into(),
                    host: "pi9".into(),
                    message: "m".into(),
                },
                Kind::Configuration,
                "check [host] name (\"pi9\")",
            ),
            (
                BuildError::TimedOut {
                    after: Duration::from_secs(2),
                },
                Kind::Transient,
                "timed out after 2s",
            ),
            (
                BuildError::TimedOut {
                    after: Duration::from_secs(2),
                },
                Kind::Transient,
                "hint: the commit is not blamed and the build is retried after a backoff; if it is just long, raise [build] timeout",
            ),
            (
                BuildError::DiskFull("x".into()),
                Kind::Environment,
                "free space",
            ),
            (
                BuildError::NixMissing("nix not found".into()),
                Kind::Environment,
                "install Nix",
            ),
            (
                BuildError::Machine("x".into(), Some(Errno::EACCES.into())),
                Kind::Environment,
                "not blamed",
            ),
            (
                BuildError::BadPath("x".into()),
                Kind::Configuration,
                "state_dir",
            ),
            (
                BuildError::OutOfMemory {
                    kills: 2,
                    excerpt: "x".into(),
                },
                Kind::Environment,
                "hint: this machine needs more memory for this build: add swap or zram",
            ),
        ];
        for (e, kind, needle) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            // The hint is apart from the message, and shown on its own line.
            assert!(!e.to_string().contains("hint:"), "{e}");
            let shown = crate::failure::Failure::from(e).to_string();
            assert!(shown.contains(needle), "{shown}");
            assert!(!shown.contains("check the network"));
        }
    }

    #[test]
    fn os_errors_nix_reports_are_found_by_their_code_message() {
        assert_eq!(
            reported_errno("error: writing to file: No space left on device"),
            Some(Errno::ENOSPC)
        );
        assert_eq!(
            reported_errno(
                "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied"
            ),
            Some(Errno::EACCES)
        );
        // A builder's own "Permission denied" is the commit's business.
        assert_eq!(
            reported_errno("pi1> cp: cannot create /etc/x: Permission denied\nerror: builder for '/nix/store/a.drv' failed with exit code 1;"),
            None
        );
        assert_eq!(reported_errno("error: deliberate eval error"), None);
    }

    #[test]
    fn build_failure_exit_codes() {
        assert!(is_build_failure_code(Some(100)));
        assert!(is_build_failure_code(Some(104)));
        assert!(!is_build_failure_code(Some(1)));
        assert!(!is_build_failure_code(None));
    }

    #[test]
    fn a_full_or_read_only_filesystem_is_seen_by_statvfs() {
        // The root of this machine has more than 16 MiB free and is writable.
        assert!(filesystem_problem(&[Path::new("/tmp")]).is_none());
        assert!(filesystem_problem(&[Path::new("/no/such/dir")]).is_none());
        if Path::new("/proc").exists() {
            // procfs reports no free blocks: indistinguishable from a full disk, which is
            // what a store on it would be.
            assert!(filesystem_problem(&[Path::new("/proc")]).is_some());
        }
    }
}
