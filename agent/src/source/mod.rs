//! The user's flake repository: where it is ([`url`]), how we talk to it ([`git`]), and
//! whom we trust over ssh ([`known_hosts`]). libgit2 blocks, so the async wrappers here
//! run it on a blocking thread under a deadline.

pub mod git;
pub mod known_hosts;
pub mod url;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::SourceSettings;
pub use git::{Fetched, SourceError};

/// The commit the watched branch points at on the remote (the cheap poll).
pub async fn remote_head(
    settings: &SourceSettings,
    deadline: Duration,
) -> Result<String, SourceError> {
    let settings = settings.clone();
    blocking(settings.url.redacted().to_string(), deadline, move || {
        git::Remote::new(&settings, deadline)?.head()
    })
    .await
}

/// Fetches the watched branch into the cache repository.
pub async fn fetch(
    settings: &SourceSettings,
    cache: PathBuf,
    deadline: Duration,
) -> Result<Fetched, SourceError> {
    let settings = settings.clone();
    blocking(settings.url.redacted().to_string(), deadline, move || {
        git::Remote::new(&settings, deadline)?.fetch(&cache)
    })
    .await
}

/// Runs a libgit2 call with an outer deadline (libgit2's own timeouts cover sockets, not
/// every stall; a stuck thread is abandoned and dies with the process).
async fn blocking<T: Send + 'static>(
    url: String,
    deadline: Duration,
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    let grace = Duration::from_secs(5);
    match tokio::time::timeout(deadline + grace, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(SourceError::Other {
            what: "git",
            url,
            message: format!("git task failed: {join}"),
        }),
        Err(_) => Err(SourceError::TimedOut {
            url,
            after: deadline,
        }),
    }
}
