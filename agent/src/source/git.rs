//! Talking to the git remote with libgit2: the cheap poll (connect, list refs, compare)
//! and the fetch of one branch into the agent's own bare cache repository. No work tree
//! is ever checked out, so no hook or filter from the repository runs here.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode,
    FetchOptions, RemoteCallbacks,
};
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::error::SourceError;
use super::origin::{self, Origin, Refusal};
use super::prebuilt::PREBUILT_REF;
use super::url::Scheme;
use super::{cache, known_hosts, tls};
use crate::config::SourceSettings;

/// The ref in the cache repository that holds the fetched head. Nix builds from
/// `?ref=<this>&rev=<sha>`: nothing from the user's branch name reaches the flake URL.
pub use crate::model::commit::CANDIDATE_REF;

/// What a fetch brought: the commit that will be built.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: String,
    pub subject: String,
    /// Commit time, seconds since the epoch.
    pub time: i64,
    /// With `[prebuilt]` on: the commit's manifest files from the manifest branch,
    /// fetched in the same fetch ([`super::prebuilt`]).
    pub prebuilt: Option<super::prebuilt::PrebuiltFiles>,
}

/// The remote's branch heads from one listing of its refs (the cheap poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heads {
    /// The watched branch's head.
    pub main: String,
    /// The testing branch looked for in the same listing; `None` when none was.
    pub testing: Option<TestingHead>,
    /// With `[prebuilt]` on: the manifest branch's tip in the same listing (`None`: not
    /// looked for, or not on the remote). A poll waiting for a manifest fetches only when
    /// it moved (doors/prebuilt.rs).
    pub prebuilt: Option<String>,
}

/// The testing branch (`[source] testing_branch`) as one listing found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestingHead {
    pub branch: String,
    /// Its head; `None` when the remote has no such branch (nothing is on test).
    pub commit: Option<String>,
}

/// Sets libgit2's socket timeouts once: a black-hole server must not hang a run.
// Unsafe: git2's global option setters are `unsafe fn` (libgit2 global state).
#[allow(unsafe_code)]
pub fn init_timeouts() {
    // SAFETY: called before any git operation, from one thread; only sets global options.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(
            CONNECT_TIMEOUT.as_millis() as i32
        );
        let _ = git2::opts::set_server_timeout_in_milliseconds(IO_TIMEOUT.as_millis() as i32);
    }
}

/// The socket timeouts of every git connection: connecting, and each read or write.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A git session with the remote: the settings plus the secret loaded for this run.
pub struct Remote<'a> {
    settings: &'a SourceSettings,
    token: Option<String>,
    deadline: Duration,
    /// Why our host-key check refused the server: libgit2 may replace the callback's
    /// error with its own vaguer text, so the reason is kept here.
    host_key_refusal: RefCell<Option<String>>,
    /// Why our credential callback gave up (no credential configured, or the one we gave
    /// was rejected): an authentication failure, whatever libgit2 then reports.
    credential_refusal: RefCell<Option<String>>,
    /// The host and certificate (DER) the https server presented, to say why libgit2
    /// refused it ([`tls::diagnose`]).
    server_cert: RefCell<Option<(String, Vec<u8>)>>,
    /// Set once pack data arrives: from then on an OS-class error is a local file's
    /// (libgit2 reports socket failures after connecting as `Net`, and a failed connect
    /// as `Os`, so the class alone does not tell).
    receiving: Cell<bool>,
}

impl<'a> Remote<'a> {
    pub fn new(
        settings: &'a SourceSettings,
        deadline: Duration,
    ) -> Result<Remote<'a>, SourceError> {
        super::tls_stream::register();
        let token = match &settings.token_file {
            Some(path) => Some(read_secret(path).map_err(|source| SourceError::SecretFile {
                key: "token_file",
                path: path.clone(),
                source,
            })?),
            None => settings.url.embedded_secret().map(str::to_string),
        };
        if let Some(path) = &settings.ssh_key_file {
            std::fs::metadata(path).map_err(|source| SourceError::SecretFile {
                key: "ssh_key_file",
                path: path.clone(),
                source,
            })?;
        }
        if let Some(path) = &settings.ca_file {
            tls::trust_ca_file(path).map_err(|message| SourceError::CaFile {
                path: path.clone(),
                message,
            })?;
        }
        Ok(Remote {
            settings,
            token,
            deadline,
            server_cert: RefCell::new(None),
            host_key_refusal: RefCell::new(None),
            credential_refusal: RefCell::new(None),
            receiving: Cell::new(false),
        })
    }

    fn url(&self) -> String {
        self.settings.url.redacted().to_string()
    }

    /// A local repository (`file://`, a path) is looked at before libgit2 is: a missing
    /// one is a configuration error naming the path, never "cannot reach".
    fn check_local_repository(&self) -> Result<(), SourceError> {
        let Some(path) = self.settings.url.local_path() else {
            return Ok(());
        };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(SourceError::RepoMissing {
                path: path.to_path_buf(),
                problem: "is not a directory",
            }),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(Errno::ENOTDIR as i32) =>
            {
                Err(SourceError::RepoMissing {
                    path: path.to_path_buf(),
                    problem: "does not exist",
                })
            }
            Err(source) => Err(SourceError::RepoUnreadable {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The commit the watched branch points at: one round trip, nothing fetched or written.
    pub fn head(&self) -> Result<String, SourceError> {
        self.heads(None).map(|h| h.main)
    }

    /// The watched branch's head and, when `testing` names a branch, that branch's, from
    /// the same listing of the remote's refs: one round trip, nothing fetched or written.
    /// A remote without the watched branch is [`SourceError::BranchNotFound`]; one
    /// without the testing branch only says so ([`TestingHead::commit`] is `None`).
    pub fn heads(&self, testing: Option<&str>) -> Result<Heads, SourceError> {
        let started = Instant::now();
        self.check_local_repository()?;
        let _session = origin::enter(&self.settings.url);
        let mut remote = git2::Remote::create_detached(self.settings.url.for_git())
            .map_err(|e| self.classify(e, "reading remote", started))?;
        let tries = Cell::new(0);
        let callbacks = self.callbacks(&tries, started);
        let connection = remote
            .connect_auth(Direction::Fetch, Some(callbacks), None)
            .map_err(|e| self.classify(e, "connecting", started))?;
        let listed = connection
            .list()
            .map_err(|e| self.classify(e, "listing refs", started))?;
        // A branch may point at an annotated (or signed) tag object: the server also
        // lists what it peels to (`<ref>^{}`), and that is the head.
        let find = |branch: &str| {
            let wanted = format!("refs/heads/{branch}");
            let peeled = format!("{wanted}^{{}}");
            let oid = |name: &str| {
                listed
                    .iter()
                    .find(|h| h.name() == name)
                    .map(|h| h.oid().to_string())
            };
            oid(&peeled).or_else(|| oid(&wanted))
        };
        let main = find(&self.settings.branch).ok_or_else(|| SourceError::BranchNotFound {
            url: self.url(),
            branch: self.settings.branch.clone(),
        })?;
        let testing = testing.map(|branch| TestingHead {
            branch: branch.to_string(),
            commit: find(branch),
        });
        // The manifest branch as the fetch stores it: the ref's own oid, unpeeled.
        let prebuilt = self.settings.prebuilt_branch.as_ref().and_then(|branch| {
            let wanted = format!("refs/heads/{branch}");
            listed
                .iter()
                .find(|h| h.name() == wanted)
                .map(|h| h.oid().to_string())
        });
        Ok(Heads {
            main,
            testing,
            prebuilt,
        })
    }

    /// Fetches the watched branch into the bare cache repository at `cache`, returns the
    /// commit now at [`CANDIDATE_REF`], and keeps the cache bounded ([`cache::prune`]).
    pub fn fetch(&self, cache_path: &Path) -> Result<Fetched, SourceError> {
        let started = Instant::now();
        self.check_local_repository()?;
        let cache_error = |doing, source| SourceError::Cache {
            path: cache_path.to_path_buf(),
            doing,
            source,
        };
        let repo = cache::open(cache_path).map_err(|e| match e {
            cache::CacheError::Io(doing, source) => cache_error(doing, source),
            cache::CacheError::Git(e) => match cache::probe(cache_path) {
                Err(source) => cache_error("creating", source),
                Ok(()) => SourceError::Internal {
                    url: self.url(),
                    message: format!(
                        "cannot create the git cache {}: {}",
                        cache_path.display(),
                        e.message()
                    ),
                },
            },
        })?;
        // A disk that is full or read-only is found before the network is touched.
        cache::probe(cache_path).map_err(|source| cache_error("preparing", source))?;
        let stale = cache::clear_stale_locks(cache_path);
        if stale > 0 {
            log::warn!(
                "removed {stale} lock file(s) a killed run left in the git cache {}",
                cache_path.display()
            );
        }
        let _session = origin::enter(&self.settings.url);
        let mut remote = repo
            .remote_anonymous(self.settings.url.for_git())
            .map_err(|e| self.classify(e, "reading remote", started))?;
        let tries = Cell::new(0);
        let mut options = FetchOptions::new();
        options.remote_callbacks(self.callbacks(&tries, started));
        options.download_tags(AutotagOption::None);
        let mut refspecs = vec![format!(
            "+refs/heads/{}:{CANDIDATE_REF}",
            self.settings.branch
        )];
        if let Some(branch) = &self.settings.prebuilt_branch {
            // The manifest branch in the same fetch; a remote without it is no error.
            refspecs.push(format!("+refs/heads/{branch}:{PREBUILT_REF}"));
        }
        if let Err(e) = remote.fetch(&refspecs, Some(&mut options), None) {
            // The OS error code of the failing call, read before anything else can
            // overwrite it: ENOSPC or EROFS from writing the pack means this machine.
            let errno = std::io::Error::last_os_error();
            return Err(self.classify_fetch(e, errno, cache_path, started));
        }
        // A manifest branch deleted on the remote is gone here too: what is found is what
        // the remote has now.
        let prebuilt_listed = self.settings.prebuilt_branch.as_ref().map(|branch| {
            let wanted = format!("refs/heads/{branch}");
            remote
                .list()
                .map(|heads| heads.iter().any(|h| h.name() == wanted))
                .unwrap_or(true)
        });
        drop(remote);
        if prebuilt_listed == Some(false) {
            if let Ok(mut r) = repo.find_reference(PREBUILT_REF) {
                let _ = r.delete();
            }
        }
        let oid = repo
            .refname_to_id(CANDIDATE_REF)
            .map_err(|_| SourceError::BranchNotFound {
                url: self.url(),
                branch: self.settings.branch.clone(),
            })?;
        let commit = self.peel_candidate(&repo, oid, started)?;
        let oid = commit.id();
        let fetched = Fetched {
            commit: oid.to_string(),
            subject: commit.summary().unwrap_or("").chars().take(200).collect(),
            time: commit.time().seconds(),
            prebuilt: self
                .settings
                .prebuilt_branch
                .as_ref()
                .map(|_| super::prebuilt::read(&repo, &oid.to_string())),
        };
        drop(commit);
        // Pruning never fails a fetch: the commit is there; the next fetch tries again.
        match cache::prune(&repo) {
            Ok(p) if p.repacked => log::info!("git cache {} repacked", cache_path.display()),
            Ok(_) => {}
            Err(e) => log::warn!(
                "pruning the git cache {}: {}",
                cache_path.display(),
                e.message()
            ),
        }
        Ok(fetched)
    }

    /// The commit the fetched branch head is, or peels to: a branch pointing at an
    /// annotated or signed tag object is peeled (and [`CANDIDATE_REF`] moved to the
    /// commit, which nix then builds); one whose tag leads to no commit (a tree, a blob)
    /// is [`SourceError::NotACommit`].
    fn peel_candidate<'r>(
        &self,
        repo: &'r git2::Repository,
        oid: git2::Oid,
        started: Instant,
    ) -> Result<git2::Commit<'r>, SourceError> {
        let object = repo
            .find_object(oid, None)
            .map_err(|e| self.classify(e, "reading the fetched commit", started))?;
        let is_tag = object.kind() == Some(git2::ObjectType::Tag);
        let target = if is_tag {
            object
                .peel(git2::ObjectType::Any)
                .map_err(|e| self.classify(e, "peeling the fetched tag", started))?
        } else {
            object
        };
        let commit = match target.into_commit() {
            Ok(commit) => commit,
            Err(other) => {
                let kind = other.kind().map_or("unknown object", |k| k.str());
                return Err(SourceError::NotACommit {
                    url: self.url(),
                    branch: self.settings.branch.clone(),
                    object: oid.to_string(),
                    found: if is_tag {
                        format!("tag of a {kind}")
                    } else {
                        kind.to_string()
                    },
                });
            }
        };
        if !is_tag {
            return Ok(commit);
        }
        repo.reference(
            CANDIDATE_REF,
            commit.id(),
            true,
            "homelab-agent: peeled tag",
        )
        .map_err(|e| self.classify(e, "peeling the fetched tag", started))?;
        log::info!(
            "branch {} points at the tag object {oid}: using the commit it peels to, {}",
            self.settings.branch,
            commit.id()
        );
        Ok(commit)
    }

    fn callbacks<'c>(&'c self, tries: &'c Cell<u32>, started: Instant) -> RemoteCallbacks<'c> {
        let mut cb = RemoteCallbacks::new();
        let settings = self.settings;
        cb.credentials(move |url, user_from_url, allowed| {
            // After a redirect libgit2 asks for the new server's credentials: only the
            // configured server gets them (source/origin.rs).
            if let Some(home) = origin::home().filter(|h| !h.matches_git_url(url)) {
                let to = Origin::parse(url).unwrap_or(Origin {
                    https: false,
                    host: "an unrecognised server".into(),
                    port: 0,
                });
                origin::refuse(Refusal::CredentialsElsewhere {
                    home,
                    to,
                    asked: true,
                });
                return Err(git2::Error::from_str(
                    "credentials refused for a server other than [source] url's",
                ));
            }
            // libgit2 asks again after a rejected credential: answer once, then give up.
            tries.set(tries.get() + 1);
            let answer = if tries.get() > 1 {
                Err(git2::Error::from_str("credentials rejected by the server"))
            } else {
                self.credential(user_from_url, allowed)
            };
            if let Err(e) = &answer {
                *self.credential_refusal.borrow_mut() = Some(e.message().to_string());
            }
            answer
        });
        cb.certificate_check(move |cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2/OpenSSL verify against the system trust store (and
                // [source] ca_file); the certificate is kept to say why, if refused.
                if let Some(x509) = cert.as_x509() {
                    *self.server_cert.borrow_mut() = Some((host.to_string(), x509.data().to_vec()));
                }
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
        cb.transfer_progress(move |_| {
            self.receiving.set(true);
            started.elapsed() < deadline
        });
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
            return Cred::userpass_plaintext(token_user(s), token);
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(s.url.user().unwrap_or("git"));
        }
        Err(git2::Error::from_str(
            "the server asked for an unsupported kind of credential",
        ))
    }

    /// A failed fetch: this machine (the cache's disk, by OS error code or a probe of
    /// the cache's filesystem) before the remote.
    fn classify_fetch(
        &self,
        e: git2::Error,
        errno: std::io::Error,
        cache_path: &Path,
        started: Instant,
    ) -> SourceError {
        if let Some(known) = self.classify_known(&e, started) {
            return known;
        }
        // The OS error code, when libgit2 left it: ENOSPC or EROFS from writing the pack.
        let mut local = match errno.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOSPC | Errno::EDQUOT | Errno::EROFS | Errno::EIO) => Some(errno),
            _ => cache::probe(cache_path).err(),
        };
        // An OS-class error once data flows (or from the local transport, which has no
        // socket) is a file's: the cache's. A pack that filled the disk is deleted before
        // libgit2 returns, so the probe finds room again; libgit2's message keeps the
        // OS's reason.
        let file_side = self.receiving.get() || self.settings.url.local_path().is_some();
        if local.is_none()
            && file_side
            && matches!(e.class(), ErrorClass::Os | ErrorClass::Filesystem)
        {
            local = Some(std::io::Error::other(self.redact(e.message())));
        }
        if let Some(source) = local {
            return SourceError::Cache {
                path: cache_path.to_path_buf(),
                doing: "fetching into",
                source,
            };
        }
        self.classify(e, "fetching", started)
    }

    /// What our own callbacks and the clock already decided: the deadline passed, the
    /// host key or the credentials were refused.
    fn classify_known(&self, e: &git2::Error, started: Instant) -> Option<SourceError> {
        let url = self.url();
        // A redirect we refused to follow with credentials, or to plain http: the cause,
        // whatever libgit2 then reported.
        if let Some(refusal) = origin::take_refusal() {
            let (what, hint) = refusal.explain();
            return Some(SourceError::Redirect { url, what, hint });
        }
        if started.elapsed() >= self.deadline {
            return Some(SourceError::TimedOut {
                url,
                after: self.deadline,
            });
        }
        if let Some(refusal) = self.host_key_refusal.borrow_mut().take() {
            return Some(SourceError::HostKey {
                url,
                message: refusal,
            });
        }
        if e.class() == ErrorClass::Ssl || e.code() == ErrorCode::Certificate {
            if let Some(refused) = self.refused_certificate() {
                return Some(refused);
            }
        }
        let refused = self.credential_refusal.borrow_mut().take();
        if refused.is_some() || e.code() == ErrorCode::Auth {
            let hint = match self.settings.url.scheme() {
                Scheme::Ssh => {
                    "check [source] ssh_key_file and that its public key is allowed on the server"
                }
                _ => "check [source] token_file (a token with read access to the repository)",
            };
            return Some(SourceError::Auth {
                url,
                message: refused.unwrap_or_else(|| self.redact(e.message())),
                hint,
            });
        }
        None
    }

    /// A TLS error after the server showed its certificate: why the certificate was
    /// refused, from its own fields; `None` when the certificate is fine.
    fn refused_certificate(&self) -> Option<SourceError> {
        let (host, der) = self.server_cert.borrow_mut().take()?;
        let now = openssl::asn1::Asn1Time::days_from_now(0).ok()?;
        let refusal = tls::diagnose(&der, &host, self.settings.ca_file.as_deref(), &now)?;
        let (what, hint) = refusal.explain(&host);
        Some(SourceError::Certificate {
            url: self.url(),
            host,
            what,
            hint,
            kind: refusal.kind(),
        })
    }

    /// Turns a libgit2 error into one an operator can act on, by its code and class,
    /// without leaking the token.
    fn classify(&self, e: git2::Error, what: &'static str, started: Instant) -> SourceError {
        if let Some(known) = self.classify_known(&e, started) {
            return known;
        }
        let url = self.url();
        let message = self.redact(e.message());
        if let Some(path) = self.settings.url.local_path() {
            // The path exists (checked first): libgit2 found no repository in it.
            if e.code() == ErrorCode::NotFound || e.class() == ErrorClass::Repository {
                return SourceError::RepoMissing {
                    path: path.to_path_buf(),
                    problem: "is not a git repository",
                };
            }
        }
        match e.class() {
            // Sockets, name resolution, TLS (a certificate not yet valid: a Pi without a
            // real-time clock before NTP), ssh session set-up.
            ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssl | ErrorClass::Ssh => {
                SourceError::Unreachable { url, message }
            }
            _ if e.code() == ErrorCode::Certificate => SourceError::Unreachable { url, message },
            _ => SourceError::Remote { url, what, message },
        }
    }

    fn redact(&self, message: &str) -> String {
        match self.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => message.replace(token, "***"),
            None => message.to_string(),
        }
    }
}

/// The user name sent with the https token. Most forges accept any name with a token as
/// the password, but some need theirs: a GitLab deploy token its own name
/// (`gitlab+deploy-token-7`), Bitbucket `x-token-auth`. With `token_file`, a user name
/// in the URL (`https://NAME@host/…`) is that name; a token in the URL
/// (`https://NAME:TOKEN@host/…`) goes with its name; otherwise `homelab-agent`.
fn token_user(s: &SourceSettings) -> &str {
    let from_url = if s.token_file.is_some() {
        s.url.user_for_token_file()
    } else {
        s.url.user()
    };
    from_url.unwrap_or("homelab-agent")
}

fn host_key_message(verdict: known_hosts::Verdict, name: &str, kind: &str, file: &Path) -> String {
    match verdict {
        known_hosts::Verdict::Changed => format!(
            "the {kind} host key of {name} does NOT match {}: the key changed or someone is intercepting. \
             hint: verify the server's key out of band, then update the file",
            file.display()
        ),
        known_hosts::Verdict::Revoked => format!(
            "the {kind} host key of {name} is marked @revoked in {}: the server still offers a key \
             you revoked. hint: if the server's key was replaced, check the new key's fingerprint \
             out of band and add it to the file; if not, the server or its key may be compromised: \
             do not trust it until that is settled",
            file.display()
        ),
        _ => format!(
            "{name} is not in {} (unknown host key, never accepted automatically). \
             hint: add its key, e.g. `ssh-keyscan -p PORT HOST >> {}` after checking the fingerprint",
            file.display(),
            file.display()
        ),
    }
}

/// Reads a secret from a file, trimmed; errors never contain the content. An empty
/// file is `InvalidData`.
pub fn read_secret(path: &PathBuf) -> Result<String, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Kind;
    use git2::{Error, ErrorClass as Class, ErrorCode as Code};

    fn settings(url: &str) -> SourceSettings {
        let text = format!("[source]\nurl = \"{url}\"\n[host]\nname = \"pi1\"\n");
        crate::config::parse(Path::new("/t.toml"), &text)
            .unwrap()
            .source
    }

    fn classify(url: &str, e: Error) -> SourceError {
        let s = settings(url);
        let r = Remote::new(&s, Duration::from_secs(60)).unwrap();
        r.classify(e, "fetching", Instant::now())
    }

    #[test]
    fn remote_errors_are_classified_by_code_and_class() {
        let net = "git://127.0.0.1:9/h.git";
        let cases = [
            (
                net,
                Error::new(Code::Auth, Class::Http, "x"),
                Kind::Configuration,
            ),
            (
                net,
                Error::new(Code::GenericError, Class::Net, "x"),
                Kind::Transient,
            ),
            (
                net,
                Error::new(Code::GenericError, Class::Os, "x"),
                Kind::Transient,
            ),
            (
                net,
                Error::new(Code::Certificate, Class::Ssl, "x"),
                Kind::Transient,
            ),
            (
                net,
                Error::new(Code::GenericError, Class::Http, "x"),
                Kind::Transient,
            ),
            (
                "/tmp",
                Error::new(Code::NotFound, Class::Repository, "x"),
                Kind::Configuration,
            ),
        ];
        for (url, e, kind) in cases {
            let shown = format!("{:?}/{:?}", e.code(), e.class());
            let got = classify(url, e);
            assert_eq!(got.kind(), kind, "{url} {shown}: {got}");
        }
    }

    #[test]
    fn an_os_error_after_data_arrived_is_the_cache_not_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings("git://127.0.0.1:9/h.git");
        let r = Remote::new(&s, Duration::from_secs(60)).unwrap();
        let os = || Error::new(Code::GenericError, Class::Os, "cannot extend packfile");
        let no_errno = || std::io::Error::from_raw_os_error(0);
        // Before any data: a failed connect.
        let e = r.classify_fetch(os(), no_errno(), dir.path(), Instant::now());
        assert_eq!(e.kind(), Kind::Transient, "{e}");
        r.receiving.set(true);
        let e = r.classify_fetch(os(), no_errno(), dir.path(), Instant::now());
        assert!(matches!(e, SourceError::Cache { .. }), "{e}");
        assert_eq!(e.kind(), Kind::Environment);
        // ENOSPC left by libgit2 decides at once, whatever the class.
        r.receiving.set(false);
        let e = r.classify_fetch(
            Error::new(Code::GenericError, Class::Odb, "x"),
            std::io::Error::from_raw_os_error(Errno::ENOSPC as i32),
            dir.path(),
            Instant::now(),
        );
        assert_eq!(e.kind(), Kind::Environment, "{e}");
    }

    #[test]
    fn a_refused_certificate_says_why_and_blames_the_configuration() {
        let s = settings("https://git.example.org/h.git");
        let r = Remote::new(&s, Duration::from_secs(60)).unwrap();
        // What libgit2 returns after our callback passed the decision through.
        let refused = || {
            Error::new(
                Code::GenericError,
                Class::Ssl,
                "the SSL certificate is invalid",
            )
        };
        // No certificate seen (the handshake failed before it): the network.
        let e = r.classify(refused(), "connecting", Instant::now());
        assert_eq!(e.kind(), Kind::Transient, "{e}");
        *r.server_cert.borrow_mut() = Some((
            "git.example.org".into(),
            tls::test_cert(&["git.example.org"], 0, 30),
        ));
        let e = r.classify(refused(), "connecting", Instant::now());
        assert!(matches!(e, SourceError::Certificate { .. }), "{e}");
        assert_eq!(e.kind(), Kind::Configuration);
        assert!(
            e.to_string()
                .contains("not signed by a certificate authority this machine trusts"),
            "{e}"
        );
        *r.server_cert.borrow_mut() = Some((
            "git.example.org".into(),
            tls::test_cert(&["other.example.org"], 0, 30),
        ));
        let e = r.classify(refused(), "connecting", Instant::now());
        assert!(
            e.to_string().contains(
                "does not match the host name git.example.org: it is issued for other.example.org"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_passed_deadline_is_a_timeout_whatever_libgit2_says() {
        let s = settings("git://127.0.0.1:9/h.git");
        let r = Remote::new(&s, Duration::from_millis(1)).unwrap();
        let started = Instant::now() - Duration::from_secs(1);
        let e = r.classify(Error::new(Code::Auth, Class::Http, "x"), "x", started);
        assert!(matches!(e, SourceError::TimedOut { .. }), "{e}");
    }

    #[test]
    fn the_token_goes_with_the_user_name_the_url_gives() {
        let cases = [
            (
                "https://gitlab+deploy-token-7@h.example/me/h.git",
                true,
                "gitlab+deploy-token-7",
            ),
            (
                "https://x-token-auth@bitbucket.org/me/h.git",
                true,
                "x-token-auth",
            ),
            ("https://h.example/me/h.git", true, "homelab-agent"),
            ("https://me:T@h.example/me/h.git", true, "me"),
            ("https://me:T@h.example/me/h.git", false, "me"),
            // Alone and without token_file, the userinfo is the token, not a name.
            ("https://T0KEN@h.example/me/h.git", false, "homelab-agent"),
        ];
        for (url, token_file, user) in cases {
            let mut s = settings(url);
            s.token_file = token_file.then(|| "/run/keys/t".into());
            assert_eq!(token_user(&s), user, "{url} token_file={token_file}");
        }
    }

    #[test]
    fn missing_secret_files_are_configuration_errors() {
        let mut s = settings("https://git.example.org/h.git");
        s.token_file = Some("/no/such/token".into());
        let e = Remote::new(&s, Duration::from_secs(1)).err().unwrap();
        assert_eq!(e.kind(), Kind::Configuration, "{e}");
        assert!(e.to_string().contains("/no/such/token"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("t");
        std::fs::write(&empty, "\n").unwrap();
        s.token_file = Some(empty);
        let e = Remote::new(&s, Duration::from_secs(1)).err().unwrap();
        assert_eq!(e.kind(), Kind::Configuration, "{e}");
    }

    #[test]
    fn a_missing_local_repository_names_its_path() {
        let s = settings("file:///no/such/path");
        let r = Remote::new(&s, Duration::from_secs(1)).unwrap();
        let e = r.head().unwrap_err();
        assert_eq!(e.kind(), Kind::Configuration);
        let text = e.to_string();
        assert!(text.contains("/no/such/path does not exist"), "{text}");
        assert!(!text.contains("network"), "{text}");
    }

    #[test]
    fn every_refused_host_key_says_what_to_do() {
        let file = Path::new("/etc/homelab-agent/known_hosts");
        for verdict in [
            known_hosts::Verdict::Changed,
            known_hosts::Verdict::Unknown,
            known_hosts::Verdict::Revoked,
        ] {
            let text = host_key_message(verdict, "[127.0.0.1]:2222", "ssh-ed25519", file);
            assert!(text.contains("[127.0.0.1]:2222"), "{text}");
            assert!(text.contains("/etc/homelab-agent/known_hosts"), "{text}");
            assert!(text.contains(" hint: "), "{text}");
        }
        let text = host_key_message(
            known_hosts::Verdict::Revoked,
            "git.example.org",
            "ssh-ed25519",
            file,
        );
        assert!(text.contains("is marked @revoked in"), "{text}");
        assert!(text.contains("check the new key's fingerprint"), "{text}");
    }
}
