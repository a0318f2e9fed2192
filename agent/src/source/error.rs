//! What can go wrong talking to the remote or writing the cache, and whose problem it is
//! ([`Kind`]). The variant is chosen from types and codes (libgit2's error code and class,
//! the OS error code, our own callbacks' refusals, the local repository's metadata), never
//! from the words of a message; the message and hint then follow from the variant, so a
//! missing repository never says "check the network".

use std::path::PathBuf;
use std::time::Duration;

use crate::failure::{io_kind, Kind};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The remote refused, reset or could not be reached (network, DNS, TLS).
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The deadline (`[source] timeout`, or a check's timeout) passed.
    #[error("{url}: timed out after {}", crate::duration::format_duration(*after))]
    TimedOut { url: String, after: Duration },
    /// The remote answered, but not with what git expects (a protocol error, an HTTP
    /// status other than 401, a truncated pack): not this machine's fault.
    #[error("{url}: {what} failed: {message}")]
    Remote {
        url: String,
        what: &'static str,
        message: String,
    },
    /// The server refused our credentials, or we have none it accepts.
    #[error("authentication to {url} failed: {message}")]
    Auth {
        url: String,
        message: String,
        hint: &'static str,
    },
    /// Our known_hosts check refused the server's ssh host key.
    #[error("ssh host key of {url} rejected: {message}")]
    HostKey { url: String, message: String },
    /// The server's TLS certificate was refused; `kind` follows from why (source/tls.rs).
    #[error("{url}: the TLS certificate of {host} {what}")]
    Certificate {
        url: String,
        host: String,
        what: String,
        hint: &'static str,
        kind: Kind,
    },
    /// A redirect the agent refused: to another server that wants credentials, or from
    /// https to plain http (source/origin.rs).
    #[error("{url}: {what}")]
    Redirect {
        url: String,
        what: String,
        hint: &'static str,
    },
    /// `[source] ca_file` cannot be read or holds no certificate.
    #[error("cannot use [source] ca_file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("branch '{branch}' not found on {url}")]
    BranchNotFound { url: String, branch: String },
    /// The branch points at something that is no commit and peels to none (a tag of a
    /// tree, a tree, a blob).
    #[error("branch '{branch}' on {url} points at {object}, a {found}, not a commit")]
    NotACommit {
        url: String,
        branch: String,
        object: String,
        found: String,
    },
    /// `[source] token_file` or `ssh_key_file` cannot be read (or the token file is empty).
    #[error("cannot read [source] {key} {}: {source}", path.display())]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A local repository (`file://` or a path) that is not there or is no repository.
    #[error("the repository {} {problem}", path.display())]
    RepoMissing {
        path: PathBuf,
        problem: &'static str,
    },
    /// A local repository we may not read (permissions, I/O error).
    #[error("cannot read the repository {}: {source}", path.display())]
    RepoUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The agent's own cache (`<state_dir>/cache.git`) cannot be written: disk full,
    /// read-only, permissions. Nothing to do with the remote.
    #[error("{doing} the git cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        doing: &'static str,
        source: std::io::Error,
    },
    /// A previous fetch that missed its deadline still holds the cache (its libgit2 call
    /// is stuck in a socket read); it ends at libgit2's own socket timeout.
    #[error("the git cache {} is still held by an earlier fetch that timed out", path.display())]
    CacheBusy { path: PathBuf },
    /// The git worker thread (or the daemon's git child process) could not be started,
    /// died, or answered nonsense: this machine or a bug, never the commit.
    #[error("git ({url}): {message}")]
    Internal { url: String, message: String },
    /// What the daemon's git child process reported (source/child.rs): the child
    /// classified it, its kind, words and hint are passed on unchanged.
    #[error("{message}")]
    Relayed {
        kind: Kind,
        message: String,
        hint: Option<String>,
    },
}

impl SourceError {
    /// Whose problem it is; exit code, retry and blame follow from it.
    pub fn kind(&self) -> Kind {
        match self {
            SourceError::Unreachable { .. }
            | SourceError::TimedOut { .. }
            | SourceError::Remote { .. }
            | SourceError::CacheBusy { .. } => Kind::Transient,
            SourceError::Certificate { kind, .. } => *kind,
            SourceError::Auth { .. }
            | SourceError::CaFile { .. }
            | SourceError::HostKey { .. }
            | SourceError::Redirect { .. }
            | SourceError::BranchNotFound { .. }
            | SourceError::NotACommit { .. }
            | SourceError::RepoMissing { .. } => Kind::Configuration,
            SourceError::SecretFile { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData
                ) =>
            {
                Kind::Configuration
            }
            SourceError::SecretFile { source, .. }
            | SourceError::RepoUnreadable { source, .. }
            | SourceError::Cache { source, .. } => {
                match io_kind(source) {
                    // A local file is never "the network": whatever the code, it is this machine.
                    Kind::Transient => Kind::Environment,
                    k => k,
                }
            }
            SourceError::Internal { .. } => Kind::Environment,
            SourceError::Relayed { kind, .. } => *kind,
        }
    }

    /// What the operator can do about it: a field of the failure, never part of the
    /// message. `None`: a host key refusal (its message says what to do) or a relayed
    /// error that came without one (the kind's hint applies).
    pub fn hint(&self) -> Option<String> {
        let fixed = |h: &str| Some(h.to_string());
        match self {
            SourceError::Unreachable { .. } => {
                fixed("check the network and that the git server is up; the next run retries")
            }
            SourceError::TimedOut { .. } => fixed(
                "the server or network is slow or stuck ([source] timeout); the next run retries",
            ),
            SourceError::Remote { .. } => {
                fixed("the server answered but the transfer failed; the next run retries")
            }
            SourceError::Auth { hint, .. }
            | SourceError::Certificate { hint, .. }
            | SourceError::Redirect { hint, .. } => fixed(hint),
            // The refusal says what to do in its own words (source/git.rs).
            SourceError::HostKey { .. } => None,
            SourceError::CaFile { .. } => {
                fixed("ca_file must be a readable PEM file of CA certificates")
            }
            SourceError::BranchNotFound { .. } => {
                fixed("check [source] branch, or push the branch")
            }
            SourceError::NotACommit { branch, .. } => Some(format!(
                "point the branch at a commit (e.g. `git push -f origin COMMIT:refs/heads/{branch}`)"
            )),
            SourceError::SecretFile { key, .. } => Some(format!("check [source] {key}")),
            SourceError::RepoMissing { path, .. } => Some(format!(
                "check [source] url (it names a local path: {})",
                path.display()
            )),
            SourceError::RepoUnreadable { .. } => {
                fixed("fix this machine: the agent (root) must be able to read it")
            }
            SourceError::Cache { .. } => fixed(
                "fix this machine (free space, a writable state_dir); the commit is not blamed",
            ),
            SourceError::CacheBusy { .. } => fixed("the next run retries"),
            SourceError::Internal { .. } => fixed(
                "not the commit's fault (this machine's resources, or a bug in homelab-agent); the next run retries; if it repeats, report it with the agent's log (journalctl -u homelab-agent)",
            ),
            SourceError::Relayed { hint, .. } => hint.clone(),
        }
    }

    /// Worth retrying soon without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        self.kind() == Kind::Transient
    }
}

/// A source error as the cycle sees it: its kind, its words, its hint, and the error kept.
impl From<SourceError> for crate::failure::Failure {
    fn from(e: SourceError) -> crate::failure::Failure {
        let failure = crate::failure::Failure::new(e.kind(), e.to_string());
        let failure = match e.hint() {
            Some(h) => failure.with_hint(h),
            None => failure,
        };
        failure.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    fn io(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e as i32)
    }

    #[test]
    fn kinds_and_messages_agree() {
        let url = || "git://127.0.0.1:1/h.git".to_string();
        let cases: Vec<(SourceError, Kind, &str, &str)> = vec![
            (
                SourceError::Unreachable {
                    url: url(),
                    message: "failed to connect".into(),
                },
                Kind::Transient,
                "check the network",
                "",
            ),
            (
                SourceError::TimedOut {
                    url: url(),
                    after: Duration::from_secs(2),
                },
                Kind::Transient,
                "timed out after 2s",
                "",
            ),
            (
                SourceError::RepoMissing {
                    path: "/no/such/path".into(),
                    problem: "does not exist",
                },
                Kind::Configuration,
                "/no/such/path does not exist",
                "network",
            ),
            (
                SourceError::Cache {
                    path: "/var/lib/homelab-agent/cache.git".into(),
                    doing: "fetching into",
                    source: io(Errno::ENOSPC),
                },
                Kind::Environment,
                "cache.git",
                "cannot reach",
            ),
            (
                SourceError::Cache {
                    path: "/c".into(),
                    doing: "fetching into",
                    source: io(Errno::EROFS),
                },
                Kind::Environment,
                "free space",
                "network",
            ),
            (
                SourceError::Auth {
                    url: url(),
                    message: "401".into(),
                    hint: "check [source] token_file",
                },
                Kind::Configuration,
                "hint: check [source] token_file",
                "network",
            ),
            (
                SourceError::Redirect {
                    url: url(),
                    what: "https://a:443 redirected to http://b:80".into(),
                    hint: "if the repository moved, set [source] url to its new https:// location",
                },
                Kind::Configuration,
                "hint: if the repository moved",
                "network",
            ),
            (
                SourceError::HostKey {
                    url: url(),
                    message: "unknown".into(),
                },
                Kind::Configuration,
                "ssh host key",
                "network",
            ),
            (
                SourceError::Certificate {
                    url: url(),
                    host: "git.example.org".into(),
                    what: "is not signed by a certificate authority this machine trusts (issuer: CN=x)".into(),
                    hint: "if the server uses a private CA, set [source] ca_file to the CA's certificate (PEM)",
                    kind: Kind::Configuration,
                },
                Kind::Configuration,
                "hint: if the server uses a private CA, set [source] ca_file",
                "network",
            ),
            (
                SourceError::CaFile {
                    path: "/etc/ssl/ca.pem".into(),
                    message: "not a PEM certificate file".into(),
                },
                Kind::Configuration,
                "cannot use [source] ca_file /etc/ssl/ca.pem",
                "network",
            ),
            (
                SourceError::BranchNotFound {
                    url: url(),
                    branch: "main".into(),
                },
                Kind::Configuration,
                "[source] branch",
                "network",
            ),
            (
                SourceError::Internal {
                    url: url(),
                    message: "the git thread died (a bug: please report it)".into(),
                },
                Kind::Environment,
                "hint: not the commit's fault",
                "network",
            ),
        ];
        for (e, kind, has, lacks) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(!e.to_string().contains("hint:"), "{e}");
            let text = match e.hint() {
                Some(hint) => crate::failure::with_hint_line(&e, hint),
                None => e.to_string(),
            };
            assert!(text.contains(has), "{text:?} lacks {has:?}");
            assert!(
                lacks.is_empty() || !text.contains(lacks),
                "{text:?} has {lacks:?}"
            );
            assert_eq!(e.is_transient(), kind == Kind::Transient);
        }
    }

    #[test]
    fn a_local_file_error_is_never_transient() {
        let e = SourceError::Cache {
            path: "/c".into(),
            doing: "fetching into",
            source: io(Errno::EPIPE),
        };
        assert_eq!(e.kind(), Kind::Environment);
    }
}
