//! Where the remote's credentials may go: only to the scheme, host and port of
//! `[source] url` (issue 23).
//!
//! libgit2 follows a redirect of the first request of a connection to another host
//! (`follow_redirects` INITIAL, transports/http.c `handle_response`), as `git ls-remote`
//! does. Unlike git, it then hands the new host's URL to the credential callback when that
//! host asks for credentials, and re-sends credentials it already holds when the
//! redirecting response carried a challenge (httpclient.c `apply_credentials`). Two
//! checks keep the token at home, each at the last point before it would leave:
//!
//! - the credential callback (source/git.rs) answers only for the configured origin
//!   ([`Origin::matches_git_url`]);
//! - the TLS stream (source/tls_stream.rs) refuses to write a request carrying an
//!   `Authorization` header to any other host or port ([`allows_request`]).
//!
//! A refusal is kept for this thread's session ([`take_refusal`]) so the error says what
//! happened, whatever libgit2 reports. The stream also reads the head of every response
//! it carries: a redirect from `https://` to `http://` (which libgit2 refuses, as a
//! "network" error) is told as what it is.
//!
//! libgit2 calls the stream and the callbacks on the thread that called it, so the
//! session is thread-local: [`enter`] around each git call.

use std::cell::RefCell;
use std::fmt;

use super::url::{RemoteUrl, Scheme};

/// The scheme, host and port of an http(s) server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// Lower case, no brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

impl Origin {
    /// The origin of an http(s) `[source] url`; `None` for other transports.
    pub fn of(url: &RemoteUrl) -> Option<Origin> {
        let https = match url.scheme() {
            Scheme::Https => true,
            Scheme::Http => false,
            _ => return None,
        };
        Some(Origin {
            https,
            host: url.host().to_ascii_lowercase(),
            port: url.port().unwrap_or(default_port(https)),
        })
    }

    /// Parses an absolute `http(s)://` URL (a `Location` header, or the URL libgit2 gives
    /// the credential callback); `None` for anything else.
    pub fn parse(text: &str) -> Option<Origin> {
        Self::candidates(text).into_iter().next()
    }

    /// Whether the URL libgit2 hands the credential callback is this origin. libgit2
    /// writes an IPv6 host without brackets (`git_net_url_fmt`), so `::1:8443` may be a
    /// host alone or a host and a port: either reading that is this origin matches.
    pub fn matches_git_url(&self, text: &str) -> bool {
        Self::candidates(text).iter().any(|o| o == self)
    }

    fn candidates(text: &str) -> Vec<Origin> {
        let (https, rest) = match text.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (true, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (false, rest),
            _ => return Vec::new(),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let origin = |host: &str, port: Option<&str>| {
            let port = match port {
                None | Some("") => default_port(https),
                Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0)?,
            };
            (!host.is_empty()).then(|| Origin {
                https,
                host: host.to_ascii_lowercase(),
                port,
            })
        };
        if let Some(inner) = hostport.strip_prefix('[') {
            let Some((host, after)) = inner.split_once(']') else {
                return Vec::new();
            };
            return origin(host, after.strip_prefix(':')).into_iter().collect();
        }
        if hostport.matches(':').count() > 1 {
            // An IPv6 address without brackets (libgit2's own formatting).
            let mut found: Vec<Origin> = origin(hostport, None).into_iter().collect();
            if let Some((host, port)) = hostport.rsplit_once(':') {
                found.extend(origin(host, Some(port)));
            }
            return found;
        }
        match hostport.split_once(':') {
            Some((host, port)) => origin(host, Some(port)),
            None => origin(hostport, None),
        }
        .into_iter()
        .collect()
    }

    fn is(&self, host: &str, port: &str) -> bool {
        self.https && self.host.eq_ignore_ascii_case(host) && port.parse() == Ok(self.port)
    }
}

/// Why a git call was stopped here, whatever libgit2 then reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server redirected to `to`, which asked for credentials (`asked`), or to which
    /// libgit2 was about to re-send those `home` had asked for.
    CredentialsElsewhere {
        home: Origin,
        to: Origin,
        asked: bool,
    },
    /// An `https://` server redirected to a plain `http://` location.
    InsecureRedirect { from: Origin, to: Option<Origin> },
}

impl Refusal {
    /// What happened (one sentence) and what to do.
    pub fn explain(&self) -> (String, &'static str) {
        match self {
            Refusal::CredentialsElsewhere { home, to, asked } => (
                format!(
                    "{home} redirected to {to}, {}: refused, the token is only ever sent to \
                     the server of [source] url ({home})",
                    if *asked {
                        "which asks for credentials"
                    } else {
                        "and the credentials given to it were about to follow"
                    }
                ),
                "if the repository moved, set [source] url to the new location; \
                 the commit is not blamed",
            ),
            Refusal::InsecureRedirect { from, to } => (
                format!(
                    "{from} redirected to an insecure location ({}): refused, https is \
                     never downgraded to plain http",
                    to.as_ref()
                        .map_or_else(|| "http://…".to_string(), |o| o.to_string())
                ),
                "if the repository moved, set [source] url to its new https:// location; \
                 otherwise fix the redirect on the server; the commit is not blamed",
            ),
        }
    }
}

struct Session {
    home: Origin,
    refusal: Option<Refusal>,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Holds this thread's session; dropping it ends the session.
pub struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        SESSION.with(|s| *s.borrow_mut() = None);
    }
}

/// Starts a session for one git call to `url` on this thread. `None` for a remote that
/// is not http(s) (nothing to guard).
pub fn enter(url: &RemoteUrl) -> Option<Entered> {
    let home = Origin::of(url)?;
    SESSION.with(|s| {
        *s.borrow_mut() = Some(Session {
            home,
            refusal: None,
        })
    });
    Some(Entered(()))
}

/// The refusal this thread's session recorded, if any (taken: asked once).
pub fn take_refusal() -> Option<Refusal> {
    SESSION.with(|s| s.borrow_mut().as_mut().and_then(|s| s.refusal.take()))
}

/// Records a refusal (the first one stands: it is the cause).
pub fn refuse(refusal: Refusal) {
    SESSION.with(|s| {
        if let Some(session) = s.borrow_mut().as_mut() {
            session.refusal.get_or_insert(refusal);
        }
    });
}

/// The configured origin of this thread's session.
pub fn home() -> Option<Origin> {
    SESSION.with(|s| s.borrow().as_ref().map(|s| s.home.clone()))
}

/// The TLS stream's check before writing `data` to `host:port`: a request head that
/// carries an `Authorization` header may only go to the configured origin. `false` when
/// refused (recorded for the session). Without a session nothing is known: allowed.
pub fn allows_request(host: &str, port: &str, data: &[u8]) -> bool {
    let Some(home) = home() else {
        return true;
    };
    if home.is(host, port) || !carries_authorization(data) {
        return true;
    }
    let to = Origin {
        https: true,
        host: host.to_ascii_lowercase(),
        port: port.parse().unwrap_or(0),
    };
    refuse(Refusal::CredentialsElsewhere {
        home,
        to,
        asked: false,
    });
    false
}

/// Whether `data` is the head of an HTTP request with an `Authorization` header. libgit2
/// writes a request's head in one call (httpclient.c `send_request`), the body after it.
fn carries_authorization(data: &[u8]) -> bool {
    if !is_request_head(data) {
        return false;
    }
    let head_end = find(data, b"\r\n\r\n").unwrap_or(data.len());
    let head = &data[..head_end];
    head.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() > 14 && line[..14].eq_ignore_ascii_case(b"authorization:"))
}

/// Whether `data` starts with an HTTP/1 request line (libgit2 writes a request's head in
/// one call).
pub fn is_request_head(data: &[u8]) -> bool {
    let line_end = find(data, b"\r\n").unwrap_or(0);
    let line = &data[..line_end];
    line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
}

/// The TLS stream's note of a response head from `host:port`: a redirect from https to
/// plain http is recorded as such.
pub fn saw_response_head(host: &str, port: &str, head: &[u8]) {
    let Some((status, location)) = redirect_of(head) else {
        return;
    };
    if !(300..400).contains(&status) {
        return;
    }
    let is_http = location
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if !is_http {
        return;
    }
    let from = Origin {
        https: true,
        host: host.to_ascii_lowercase(),
        port: port.parse().unwrap_or(0),
    };
    refuse(Refusal::InsecureRedirect {
        from,
        to: Origin::parse(&location),
    });
}

/// The status and `Location` of a response head.
fn redirect_of(head: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let location = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("location")
            .then(|| value.trim().to_string())
    })?;
    Some((status, location))
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(url: &str) -> Origin {
        Origin::of(&RemoteUrl::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn the_credential_callback_answers_only_for_the_configured_origin() {
        let h = home("https://git.example.org/me/h.git");
        let cases = [
            ("https://git.example.org/me/h.git", true),
            ("https://GIT.example.org/other/path", true),
            ("https://git.example.org:443/x", true),
            ("https://user@git.example.org/x", true),
            ("https://git.example.org:8443/x", false),
            ("http://git.example.org/x", false),
            ("https://evil.example.org/x", false),
            ("https://git.example.org@evil.example.org/x", false),
            ("https://git.example.org.evil.example/x", false),
            ("nonsense", false),
        ];
        for (url, allowed) in cases {
            assert_eq!(h.matches_git_url(url), allowed, "{url}");
        }
        let v6 = home("https://[::1]:8443/h.git");
        assert!(v6.matches_git_url("https://::1:8443/h.git"));
        assert!(v6.matches_git_url("https://[::1]:8443/h.git"));
        assert!(!v6.matches_git_url("https://::1/h.git"));
        assert!(Origin::of(&RemoteUrl::parse("ssh://git@h/x").unwrap()).is_none());
    }

    #[test]
    fn a_request_with_credentials_is_refused_for_another_host_only() {
        let url = RemoteUrl::parse("https://127.0.0.1:8443/h.git").unwrap();
        let _session = enter(&url).unwrap();
        let authed = b"GET /h.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\n\r\n";
        let plain = b"GET /h.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(allows_request("127.0.0.1", "8443", authed));
        assert!(allows_request("127.0.0.2", "8443", plain));
        // A body that happens to contain the words is no request head.
        assert!(allows_request(
            "127.0.0.2",
            "8443",
            b"0032want x\nAuthorization: y\r\n"
        ));
        assert_eq!(take_refusal(), None);
        assert!(!allows_request("127.0.0.1", "9443", authed));
        let refusal = take_refusal().unwrap();
        let (what, hint) = refusal.explain();
        assert!(
            what.contains(
                "https://127.0.0.1:8443 redirected to https://127.0.0.1:9443, and the \
                 credentials given to it were about to follow: refused"
            ),
            "{what}"
        );
        assert!(
            hint.contains("set [source] url to the new location"),
            "{hint}"
        );
        assert!(!allows_request("127.0.0.2", "8443", authed));
    }

    #[test]
    fn a_redirect_to_plain_http_is_recorded_as_insecure() {
        let url = RemoteUrl::parse("https://127.0.0.1:8443/h.git").unwrap();
        let _session = enter(&url).unwrap();
        saw_response_head(
            "127.0.0.1",
            "8443",
            b"HTTP/1.1 301 Moved Permanently\r\nServer: x\r\nLocation: https://127.0.0.2/h.git\r\n\r\n",
        );
        assert_eq!(take_refusal(), None);
        saw_response_head(
            "127.0.0.1",
            "8443",
            b"HTTP/1.1 200 OK\r\nLocation: http://a/\r\n\r\n",
        );
        assert_eq!(take_refusal(), None);
        saw_response_head(
            "127.0.0.1",
            "8443",
            b"HTTP/1.1 302 Found\r\nlocation: HTTP://127.0.0.2:8080/h.git\r\n\r\n",
        );
        let (what, _) = take_refusal().unwrap().explain();
        assert_eq!(
            what,
            "https://127.0.0.1:8443 redirected to an insecure location (http://127.0.0.2:8080): \
             refused, https is never downgraded to plain http"
        );
    }

    #[test]
    fn without_a_session_nothing_is_refused_or_kept() {
        let authed = b"GET / HTTP/1.1\r\nAuthorization: Basic eDp5\r\n\r\n";
        assert!(allows_request("127.0.0.2", "1", authed));
        assert_eq!(take_refusal(), None);
    }
}
