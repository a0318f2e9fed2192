//! Talking to the git remote with libgit2: the cheap poll (connect, list refs, compare)
//! and the fetch of one branch into the agent's own bare cache repository. No work tree
//! is ever checked out, so no hook or filter from the repository runs here.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, FetchOptions,
    RemoteCallbacks, Repository,
};

use super::known_hosts;
use super::url::Scheme;
use crate::config::SourceSettings;

/// The ref in the cache repository that holds the fetched head. Nix builds from
/// `?ref=<this>&rev=<sha>`: nothing from the user's branch name reaches the flake URL.
pub const CANDIDATE_REF: &str = "refs/heads/homelab-agent/candidate";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach {url}: {message}\nhint: check the network and that the git server is up; the next run retries")]
    Unreachable { url: String, message: String },
    #[error("{url}: timed out after {}\nhint: the server or network is slow or stuck; the next run retries", humantime::format_duration(*after))]
    TimedOut { url: String, after: Duration },
    #[error("authentication to {url} failed: {message}")]
    Auth { url: String, message: String },
    #[error("ssh host key of {url} rejected: {message}")]
    HostKey { url: String, message: String },
    #[error(
        "branch '{branch}' not found on {url}\nhint: check [source] branch, or push the branch"
    )]
    BranchNotFound { url: String, branch: String },
    #[error("{what} ({url}): {message}")]
    Other {
        what: &'static str,
        url: String,
        message: String,
    },
}

impl SourceError {
    /// Worth retrying soon without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Unreachable { .. } | SourceError::TimedOut { .. }
        )
    }
}

/// What a fetch brought: the commit that will be built.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: String,
    pub subject: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
}

/// Sets libgit2's socket timeouts once: a black-hole server must not hang a run.
pub fn init_timeouts() {
    // SAFETY: called before any git operation, from one thread; only sets global options.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
    }
}

/// A git session with the remote: the settings plus the secret loaded for this run.
pub struct Remote<'a> {
    settings: &'a SourceSettings,
    token: Option<String>,
    deadline: Duration,
    /// Why our host-key check refused the server: libgit2 may replace the callback's
    /// error with its own vaguer text, so the reason is kept here.
    host_key_refusal: RefCell<Option<String>>,
}

impl<'a> Remote<'a> {
    pub fn new(
        settings: &'a SourceSettings,
        deadline: Duration,
    ) -> Result<Remote<'a>, SourceError> {
        let token = match &settings.token_file {
            Some(path) => Some(read_secret(path).map_err(|message| SourceError::Auth {
                url: settings.url.redacted().into(),
                message,
            })?),
            None => settings.url.embedded_secret().map(str::to_string),
        };
        Ok(Remote {
            settings,
            token,
            deadline,
            host_key_refusal: RefCell::new(None),
        })
    }

    fn url(&self) -> String {
        self.settings.url.redacted().to_string()
    }

    /// The commit the watched branch points at: one round trip, nothing fetched or written.
    pub fn head(&self) -> Result<String, SourceError> {
        let started = Instant::now();
        let mut remote = git2::Remote::create_detached(self.settings.url.for_git())
            .map_err(|e| self.classify(e, "reading remote", started))?;
        let tries = Cell::new(0);
        let callbacks = self.callbacks(&tries, started);
        let connection = remote
            .connect_auth(Direction::Fetch, Some(callbacks), None)
            .map_err(|e| self.classify(e, "connecting", started))?;
        let wanted = format!("refs/heads/{}", self.settings.branch);
        let heads = connection
            .list()
            .map_err(|e| self.classify(e, "listing refs", started))?;
        heads
            .iter()
            .find(|h| h.name() == wanted)
            .map(|h| h.oid().to_string())
            .ok_or_else(|| SourceError::BranchNotFound {
                url: self.url(),
                branch: self.settings.branch.clone(),
            })
    }

    /// Fetches the watched branch into the bare cache repository at `cache` and returns the
    /// commit now at [`CANDIDATE_REF`].
    pub fn fetch(&self, cache: &Path) -> Result<Fetched, SourceError> {
        let started = Instant::now();
        let repo = open_cache(cache)
            .map_err(|e| self.classify(e, "opening the cache repository", started))?;
        let mut remote = repo
            .remote_anonymous(self.settings.url.for_git())
            .map_err(|e| self.classify(e, "reading remote", started))?;
        let tries = Cell::new(0);
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks(&tries, started));
        options.download_tags(AutotagOption::None);
        let refspec = format!("+refs/heads/{}:{CANDIDATE_REF}", self.settings.branch);
        remote
            .fetch(&[&refspec], Some(&mut options), None)
            .map_err(|e| self.classify(e, "fetching", started))?;
        let oid = repo
            .refname_to_id(CANDIDATE_REF)
            .map_err(|_| SourceError::BranchNotFound {
                url: self.url(),
                branch: self.settings.branch.clone(),
            })?;
        let commit = repo
            .find_commit(oid)
            .map_err(|e| self.classify(e, "reading the fetched commit", started))?;
        Ok(Fetched {
            commit: oid.to_string(),
            subject: commit.summary().unwrap_or("").chars().take(200).collect(),
            time: commit.time().seconds(),
        })
    }

    fn callbacks<'c>(&'c self, tries: &'c Cell<u32>, started: Instant) -> RemoteCallbacks<'c> {
        let mut cb = RemoteCallbacks::new();
        let settings = self.settings;
        cb.credentials(move |_url, user_from_url, allowed| {
            // libgit2 asks again after a rejected credential: answer once, then give up.
            tries.set(tries.get() + 1);
            if tries.get() > 1 {
                return Err(git2::Error::from_str("credentials rejected by the server"));
            }
            self.credential(user_from_url, allowed)
        });
        cb.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: let libgit2/OpenSSL verify against the system trust store.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
                return Err(git2::Error::from_str("the server sent no usable host key"));
            };
            let name = known_hosts::host_name(settings.url.host(), settings.url.port());
            let file = &settings.known_hosts_file;
            let refusal = match known_hosts::check(file, &name, kind.name(), key) {
                Ok(known_hosts::Verdict::Trusted) => {
                    return Ok(CertificateCheckStatus::CertificateOk)
                }
                Ok(verdict) => host_key_message(verdict, &name, kind.name(), file),
                Err(e) => e,
            };
            *self.host_key_refusal.borrow_mut() = Some(refusal.clone());
            Err(git2::Error::from_str(&refusal))
        });
        let deadline = self.deadline;
        cb.transfer_progress(move |_| started.elapsed() < deadline);
        cb.sideband_progress(move |_| started.elapsed() < deadline);
        cb
    }

    fn credential(
        &self,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let s = self.settings;
        if allowed.contains(CredentialType::SSH_KEY) {
            let key = s.ssh_key_file.as_ref().ok_or_else(|| {
                git2::Error::from_str("the server wants an ssh key: set [source] ssh_key_file")
            })?;
            let user = user_from_url.or(s.url.user()).unwrap_or("git");
            return Cred::ssh_key(user, None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let token = self.token.as_deref().ok_or_else(|| {
                git2::Error::from_str("the server wants credentials: set [source] token_file")
            })?;
            // Forges accept any user name with a token as the password.
            let user = s.url.user().unwrap_or("homelab-agent");
            return Cred::userpass_plaintext(user, token);
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(s.url.user().unwrap_or("git"));
        }
        Err(git2::Error::from_str(
            "the server asked for an unsupported kind of credential",
        ))
    }

    /// Turns a libgit2 error into one an operator can act on, without leaking the token.
    fn classify(&self, e: git2::Error, what: &'static str, started: Instant) -> SourceError {
        let url = self.url();
        let mut message = e.message().to_string();
        if let Some(token) = self.token.as_deref().filter(|t| !t.is_empty()) {
            message = message.replace(token, "***");
        }
        if started.elapsed() >= self.deadline {
            return SourceError::TimedOut {
                url,
                after: self.deadline,
            };
        }
        if let Some(refusal) = self.host_key_refusal.borrow_mut().take() {
            return SourceError::HostKey {
                url,
                message: refusal,
            };
        }
        let lower = message.to_lowercase();
        if lower.contains("host key") || lower.contains("hostkey") || lower.contains("known_hosts")
        {
            return SourceError::HostKey { url, message };
        }
        if e.code() == git2::ErrorCode::Auth
            || e.class() == git2::ErrorClass::Callback && lower.contains("credential")
            || lower.contains("authentication")
            || lower.contains("credentials")
            || lower.contains("401")
            || lower.contains("403")
        {
            let hint = match self.settings.url.scheme() {
                Scheme::Ssh => "hint: check [source] ssh_key_file and that its public key is allowed on the server",
                _ => "hint: check [source] token_file (a token with read access to the repository)",
            };
            return SourceError::Auth {
                url,
                message: format!("{message}\n{hint}"),
            };
        }
        let network = matches!(
            e.class(),
            git2::ErrorClass::Net | git2::ErrorClass::Os | git2::ErrorClass::Ssh
        ) || lower.contains("connect")
            || lower.contains("resolve")
            || lower.contains("timed out")
            || lower.contains("early eof");
        if network {
            return SourceError::Unreachable { url, message };
        }
        if lower.contains("could not find repository")
            || lower.contains("not found")
            || lower.contains("not a git repository")
        {
            return SourceError::Other {
                what,
                url,
                message: format!("{message}\nhint: check [source] url"),
            };
        }
        SourceError::Other { what, url, message }
    }
}

fn host_key_message(verdict: known_hosts::Verdict, name: &str, kind: &str, file: &Path) -> String {
    match verdict {
        known_hosts::Verdict::Changed => format!(
            "the {kind} host key of {name} does NOT match {}: the key changed or someone is intercepting. \
             hint: verify the server's key out of band, then update the file",
            file.display()
        ),
        known_hosts::Verdict::Revoked => format!("the {kind} host key of {name} is marked @revoked in {}", file.display()),
        _ => format!(
            "{name} is not in {} (unknown host key, never accepted automatically). \
             hint: add its key, e.g. `ssh-keyscan -p PORT HOST >> {}` after checking the fingerprint",
            file.display(),
            file.display()
        ),
    }
}

/// Opens the bare cache repository, creating it on first use.
fn open_cache(path: &Path) -> Result<Repository, git2::Error> {
    match Repository::open_bare(path) {
        Ok(repo) => Ok(repo),
        Err(_) if !path.exists() => Repository::init_bare(path),
        Err(e) => Err(e),
    }
}

/// Reads a secret from a file, trimmed; errors never contain the content.
pub fn read_secret(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(token)
}
