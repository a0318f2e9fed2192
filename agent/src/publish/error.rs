//! What can go wrong in `publish`, whose fault it is (the exit code) and what to do.

use crate::failure::Kind;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The repository or the revision cannot be read.
    #[error("cannot read the commit {rev:?} in {repo}: {source}")]
    Revision {
        repo: String,
        rev: String,
        source: git2::Error,
    },
    /// A host name that cannot be a `nixosConfigurations` attribute here.
    #[error("{0:?} is not a host name (letters, digits, '-' and '_', at most 63)")]
    BadHost(String),
    /// A password or token written into `--to` or `--remote`: it would be on git's or
    /// nix's command line and in their messages.
    #[error(
        "{flag} has a password or token in its URL; it would reach command lines and logs: refused"
    )]
    SecretInUrl { flag: &'static str },
    /// A tool the publisher runs is missing or failed to start.
    #[error("{program} is needed to publish but {problem}")]
    Tool { program: String, problem: String },
    /// The flake did not evaluate or a system did not build: the commit's fault.
    #[error("{what} failed for commit {commit}:\n{detail}")]
    Build {
        what: &'static str,
        commit: String,
        detail: String,
    },
    /// A step ran out of time.
    #[error("{what} did not finish within {after}")]
    TimedOut { what: &'static str, after: String },
    /// nix answered with something that is not what `--json` promises.
    #[error("unexpected output from {what}: {detail}")]
    Output { what: &'static str, detail: String },
    /// The binary cache refused the copy.
    #[error("copying the systems to {cache} failed:\n{detail}")]
    Copy { cache: String, detail: String },
    /// Signing the manifest failed (the key, its passphrase, the agent).
    #[error("signing the manifest with {signer} failed:\n{detail}")]
    Sign { signer: String, detail: String },
    /// A git step on the manifest branch failed.
    #[error("{what} failed: {detail}")]
    Git { what: String, detail: String },
    /// The remote has a newer branch tip than the one the manifest was committed on
    /// (another publisher won the race), after every attempt.
    #[error("the push of {branch} to {remote} was rejected ({reason})")]
    PushRejected {
        branch: String,
        remote: String,
        reason: String,
    },
}

impl PublishError {
    /// Whose fault it is: the exit code follows from it.
    pub fn kind(&self) -> Kind {
        match self {
            PublishError::Revision { .. }
            | PublishError::BadHost(_)
            | PublishError::SecretInUrl { .. } => Kind::Configuration,
            PublishError::Tool { .. } | PublishError::Output { .. } => Kind::Environment,
            PublishError::Sign { .. } => Kind::Configuration,
            PublishError::Build { .. } => Kind::Commit,
            PublishError::TimedOut { .. }
            | PublishError::Copy { .. }
            | PublishError::Git { .. }
            | PublishError::PushRejected { .. } => Kind::Transient,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            PublishError::Revision { .. } => {
                "give --repo a git repository and --commit a revision in it (default HEAD)".into()
            }
            PublishError::SecretInUrl { flag: "--remote" } => {
                "give a remote name (`origin`) or a URL without the token: git's credential helper or ssh key supplies it".into()
            }
            PublishError::SecretInUrl { .. } => {
                "give the cache URL without the password: nix reads credentials from netrc-file or the store's own settings".into()
            }
            PublishError::BadHost(_) => {
                "give --host a name from the flake's nixosConfigurations (or none: all)".into()
            }
            PublishError::Tool { program, .. } => format!(
                "install {program} (docs/publish.md), or put it on PATH"
            ),
            PublishError::Build { .. } => {
                "fix the commit (the error above is nix's); nothing was copied or published".into()
            }
            PublishError::TimedOut { .. } => {
                "give --timeout more time (a first build of a whole system can take hours)".into()
            }
            PublishError::Output { .. } => "check that nix is 2.8 or later".into(),
            PublishError::Copy { .. } => {
                "check the --to URL, that you may write there, and its secret-key= path; nothing was published".into()
            }
            PublishError::Sign { .. } => {
                "check --ssh-key (a private key, or a public key whose private half ssh-agent holds) or --gpg-key".into()
            }
            PublishError::Git { .. } => {
                "check the remote (its URL, your credentials) and run publish again: the systems are in the cache already".into()
            }
            PublishError::PushRejected { .. } => {
                "another publisher keeps moving the branch: run publish again".into()
            }
        }
    }
}
