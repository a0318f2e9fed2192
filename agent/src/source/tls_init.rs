//! TLS only for a run that needs it. libgit2 (linked with OpenSSL for `https://`)
//! builds its TLS context when it first initialises, and that loads and parses the whole
//! system CA bundle: about 30 ms of CPU on every poll, a Pi's ten times that, even when
//! the remote is `git://` or `ssh://` and no TLS is ever spoken (issue 13).
//!
//! For a remote that cannot lead to TLS, libgit2 is initialised once with
//! `SSL_CERT_FILE` pointing at an empty file, so its unused context trusts nothing and
//! costs nothing; the variables are then put back as they were, so what runs later
//! (`nix`, the http health checks, notifications) sees the environment unchanged.
//! `http://` counts as TLS: a server may redirect it to `https://`.

use std::ffi::OsString;
use std::sync::Once;

use super::url::Scheme;

const CERT_FILE: &str = "SSL_CERT_FILE";
const CERT_DIR: &str = "SSL_CERT_DIR";
/// An empty file OpenSSL can open: no certificate to parse.
const NOTHING: &str = "/dev/null";

/// Whether talking to a remote of this scheme may need TLS.
pub fn needs_tls(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Https | Scheme::Http)
}

/// Initialises libgit2 (and sets its socket timeouts) before the first git call of
/// the process, without CA setup unless `scheme` needs TLS. Later calls do nothing.
///
/// Must run before the process starts threads that read the environment: it is called
/// at the start of a command, before any git, health check or child process. Does
/// nothing in the daemon (source/child.rs).
pub fn init_git(scheme: Scheme) {
    if super::child::enabled() {
        // The daemon: its git calls run in child processes, which initialise libgit2.
        return;
    }
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if needs_tls(scheme) {
            super::git::init_timeouts();
            return;
        }
        let saved = [CERT_FILE, CERT_DIR].map(|k| (k, std::env::var_os(k)));
        std::env::set_var(CERT_FILE, NOTHING);
        std::env::set_var(CERT_DIR, NOTHING);
        // The first git2 call: libgit2 (and OpenSSL's context in it) initialises here.
        super::git::init_timeouts();
        restore(&saved);
    });
}

fn restore(saved: &[(&str, Option<OsString>)]) {
    for (key, value) in saved {
        match value {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_remotes_need_tls() {
        assert!(needs_tls(Scheme::Https));
        assert!(needs_tls(Scheme::Http));
        assert!(!needs_tls(Scheme::Git));
        assert!(!needs_tls(Scheme::Ssh));
        assert!(!needs_tls(Scheme::File));
    }

    #[test]
    fn the_environment_is_put_back_as_it_was() {
        // Keys of our own: the real ones are read by other tests' threads.
        std::env::set_var("HOMELAB_TLS_TEST_A", "kept");
        std::env::remove_var("HOMELAB_TLS_TEST_B");
        let saved = [
            ("HOMELAB_TLS_TEST_A", std::env::var_os("HOMELAB_TLS_TEST_A")),
            ("HOMELAB_TLS_TEST_B", None),
        ];
        std::env::set_var("HOMELAB_TLS_TEST_A", NOTHING);
        std::env::set_var("HOMELAB_TLS_TEST_B", NOTHING);
        restore(&saved);
        assert_eq!(std::env::var("HOMELAB_TLS_TEST_A").unwrap(), "kept");
        assert!(std::env::var_os("HOMELAB_TLS_TEST_B").is_none());
    }
}
