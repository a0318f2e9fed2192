//! The failure taxonomy: who is to blame when something goes wrong.
//!
//! Every error a run can end with has a [`Kind`]; the exit code, whether the run is
//! retried, whether the commit is remembered as bad, and the hint all follow from it.
//! Errors are classified by their type and OS error code, never by words in a message.

use std::sync::Arc;

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
            Kind::Commit => "push a fix, or run `sudo homelab-agent retry` to try this commit again",
        }
    }
}

/// A classified failure of one step: what went wrong (a message that names the operation
/// and its subject), whose fault it is, what to do about it, and the typed error it came
/// from.
///
/// The message never carries the hint: [`Failure::hint`] is a field, shown on its own line
/// by the CLI, as a `hint` key in status and history JSON, a `HINT=` journal field, a
/// `hint` webhook key and the hooks' `HOMELAB_AGENT_HINT`. Without a specific hint the
/// kind's general one applies ([`Failure::hint_or_kind`]).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    /// What the operator can do about this failure in particular; `None`: the kind's.
    pub hint: Option<String>,
    /// The typed error this failure was classified from, kept for callers and logs
    /// (`std::error::Error::source`). Not compared, not stored.
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Two failures are the same when they say the same thing: kind, message and hint (the
/// source is the same cause or an equal one; error types are rarely `PartialEq`).
impl PartialEq for Failure {
    fn eq(&self, other: &Failure) -> bool {
        self.kind == other.kind && self.message == other.message && self.hint == other.hint
    }
}

impl Eq for Failure {}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    /// The specific hint: what to do about this failure.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// Keeps the typed error this failure came from.
    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Failure {
        self.source = Some(Arc::new(source));
        self
    }

    /// The same failure with another message (the hint and the cause kept): e.g. the
    /// message prefixed with what was being done.
    pub fn map_message(mut self, f: impl FnOnce(String) -> String) -> Failure {
        self.message = f(self.message);
        self
    }

    /// The hint to show: this failure's own, else its kind's.
    pub fn hint_or_kind(&self) -> &str {
        self.hint.as_deref().unwrap_or(self.kind.hint())
    }

    /// A failure to read or write the agent's own files (state, cache, gcroots): the
    /// kind follows the OS error found in the chain (disk full, read-only, permissions).
    pub fn storage(e: &anyhow::Error) -> Failure {
        let kind = e
            .chain()
            .find_map(|c| c.downcast_ref::<std::io::Error>())
            .map_or(Kind::Environment, io_kind);
        Failure::new(kind, format!("{e:#}"))
    }
}

/// The message, then the specific hint on its own line (`hint: ...`), as the CLI prints
/// it; a failure without a specific hint is its message alone.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "{}", hint_line(hint))?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// `text` followed by `hint` on its own line, the way every hint is printed for a person.
pub fn with_hint_line(text: impl std::fmt::Display, hint: impl std::fmt::Display) -> String {
    format!("{text}{}", hint_line(hint))
}

/// The hint's own line: a line break, `hint: `, the hint.
fn hint_line(hint: impl std::fmt::Display) -> String {
    ["\n", "hint: ", &hint.to_string()].concat()
}

/// A text stored by an older version, with its hint in it (`message\nhint: ...`): the
/// message and the hint apart. Only for reading old records; new ones keep them apart.
pub fn split_stored_hint(text: &str) -> (String, Option<String>) {
    let mut message = Vec::new();
    let mut hints = Vec::new();
    for line in text.lines() {
        match line.trim_start().strip_prefix("hint:") {
            Some(h) => hints.push(h.trim()),
            None => message.push(line),
        }
    }
    if hints.is_empty() {
        return (text.to_string(), None);
    }
    (message.join("\n"), Some(hints.join("; ")))
}

/// A value that is not what it must be (a name, a duration, a number, a URL): what is
/// wrong, in words. The caller says where the value came from (a config key, a flag, a
/// line of a file); a run it stops ends with a [`Failure`] of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Its words, for a caller that adds where the value came from.
impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
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

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn the_hint_is_a_field_and_its_own_line_when_shown() {
        let f = Failure::new(Kind::Configuration, "no such key file /k").with_hint("create it");
        assert_eq!(f.message, "no such key file /k");
        assert_eq!(f.hint.as_deref(), Some("create it"));
        assert_eq!(f.to_string(), "no such key file /k\nhint: create it");
        assert_eq!(f.hint_or_kind(), "create it");
        let plain = Failure::new(Kind::Transient, "timed out");
        assert_eq!(plain.to_string(), "timed out");
        assert_eq!(plain.hint_or_kind(), Kind::Transient.hint());
    }

    #[test]
    fn the_cause_is_kept_and_not_compared() {
        let io = std::io::Error::from_raw_os_error(nix::errno::Errno::ENOSPC as i32);
        let f = Failure::new(Kind::Environment, "writing x").with_source(io);
        let cause = std::error::Error::source(&f).expect("the cause is kept");
        let io = cause.downcast_ref::<std::io::Error>().expect("typed");
        assert_eq!(io_kind(io), Kind::Environment);
        assert_eq!(f, Failure::new(Kind::Environment, "writing x"));
        assert_ne!(
            f,
            Failure::new(Kind::Environment, "writing x").with_hint("h")
        );
    }

    #[test]
    fn an_old_stored_text_is_split_into_message_and_hint() {
        assert_eq!(
            split_stored_hint("building x: failed\nhint: push a fix"),
            (
                "building x: failed".to_string(),
                Some("push a fix".to_string())
            )
        );
        assert_eq!(
            split_stored_hint("a\nhint: one\nb\n  hint: two"),
            ("a\nb".to_string(), Some("one; two".to_string()))
        );
        assert_eq!(
            split_stored_hint("no hint here"),
            ("no hint here".to_string(), None)
        );
        // A word "hint:" inside a line is not a hint line.
        assert_eq!(split_stored_hint("the hint: none").1, None);
    }

    /// The hint is a field (issue 22): no message of the agent's source carries one as
    /// text. Only this file lays a hint out as a line ([`with_hint_line`]) and reads the
    /// old joined records ([`split_stored_hint`]).
    #[test]
    fn no_message_in_the_source_carries_its_hint_as_text() {
        let needle = ["\\", "nhint:"].concat();
        let found: Vec<String> = super::source_lines()
            .into_iter()
            .filter(|(path, _, line)| !path.ends_with("src/failure.rs") && line.contains(&needle))
            .map(|(path, n, _)| format!("{}:{n}", path.display()))
            .collect();
        assert!(
            found.is_empty(),
            "hints written into messages:\n{}",
            found.join("\n")
        );
    }
}

/// Every line of the agent's source (agent/src), with its file and line number: for the
/// tests that hold the source to a rule.
#[cfg(test)]
pub(crate) fn source_lines() -> Vec<(std::path::PathBuf, usize, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut lines = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    lines.push((path.clone(), n + 1, line.to_string()));
                }
            }
        }
    }
    lines
}

#[cfg(test)]
mod boundary_tests {
    /// No error crosses a module boundary as a bare String (issue 22): a public function
    /// fails with a typed error, a [`super::Failure`] or an [`super::Invalid`]. Helpers
    /// private to their module (or shared with its siblings only) may keep words.
    #[test]
    fn no_public_function_fails_with_a_string() {
        let public = |line: &str| {
            [
                "pub fn ",
                "pub async fn ",
                "pub(crate) fn ",
                "pub(crate) async fn ",
            ]
            .iter()
            .any(|p| line.trim_start().starts_with(p))
        };
        let found: Vec<String> = super::source_lines()
            .into_iter()
            .filter(|(_, _, line)| {
                public(line) && line.contains("Result<") && line.contains(", String>")
            })
            .map(|(path, n, line)| format!("{}:{n}: {}", path.display(), line.trim()))
            .collect();
        assert!(
            found.is_empty(),
            "public functions failing with a String:\n{}",
            found.join("\n")
        );
    }
}

#[cfg(test)]
mod hint_tests {
    /// Hints say the same thing the same way (issue 21): a command that needs root is
    /// always given as `sudo homelab-agent …`, in every message of the agent's source.
    #[test]
    fn every_hint_that_names_a_root_command_says_sudo() {
        let mut bare = Vec::new();
        for (path, n, line) in super::source_lines() {
            if line.trim_start().starts_with("//") || line.contains("1 when ") {
                continue;
            }
            for cmd in ["retry", "resume", "rollback", "pause", "run --once"] {
                let named = format!("`homelab-agent {cmd}");
                let mut rest = line.as_str();
                while let Some(at) = rest.find(&named) {
                    if !rest[..at].ends_with("sudo ") {
                        bare.push(format!("{}:{n}: {}", path.display(), line.trim()));
                    }
                    rest = &rest[at + named.len()..];
                }
            }
        }
        // This test's own needles are not messages.
        bare.retain(|l| !l.contains("let named = format!"));
        assert!(bare.is_empty(), "hints without sudo:\n{}", bare.join("\n"));
    }
}
