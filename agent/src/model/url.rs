//! The git remote URL: which transports are allowed, and how it is shown.
//!
//! Credentials in the URL (`https://user:TOKEN@host/...`) are split off at parse time:
//! the URL handed to git carries none, and [`RemoteUrl::redacted`] is the only form that
//! is ever logged, stored or printed.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    scheme: Scheme,
    /// The URL given to git: no password, no https userinfo.
    clean: String,
    /// The form shown to people: userinfo of http(s) replaced by `***`.
    redacted: String,
    /// Lower-cased host, without brackets; empty for local repositories.
    host: String,
    port: Option<u16>,
    /// User name from the URL (ssh user, or http user when a password was given too).
    user: Option<String>,
    /// Password or token found in the URL itself.
    password: Option<String>,
    /// The name part of an http(s) userinfo, percent-decoded, even when alone (then it is
    /// also taken as the token, unless `[source] token_file` gives one).
    http_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    Ssh,
    Git,
    File,
}

// Never print the secret by accident, not even with {:?}.
impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteUrl({})", self.redacted)
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl RemoteUrl {
    /// Parses `https://`, `http://`, `ssh://`, `git://`, `file://`, scp-style
    /// `user@host:path`, or an absolute path. Anything else (`ext::`, `fd::`, a host
    /// starting with `-`, control characters) is refused.
    pub fn parse(text: &str) -> Result<RemoteUrl, String> {
        if text.is_empty() {
            return Err("empty URL".into());
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the URL contains spaces or control characters".into());
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Self::local(path, text);
        }
        if text.starts_with('/') {
            return Self::local(text, &format!("file://{text}"));
        }
        if let Some((scheme, rest)) = text.split_once("://") {
            let scheme = match scheme {
                "https" => Scheme::Https,
                "http" => Scheme::Http,
                "ssh" | "git+ssh" | "ssh+git" => Scheme::Ssh,
                "git" => Scheme::Git,
                other => {
                    return Err(format!(
                        "unsupported transport {}: use https://, ssh://, git://, file:// or an absolute path",
                        crate::text::quote(other),
                    ))
                }
            };
            return Self::network(scheme, rest);
        }
        if text.contains("::") {
            return Err("remote helpers (`transport::address`) are not allowed".into());
        }
        Self::scp_style(text)
    }

    fn local(path: &str, url: &str) -> Result<RemoteUrl, String> {
        if !path.starts_with('/') {
            return Err(format!(
                "a local repository needs an absolute path, got {}",
                crate::text::quote(path)
            ));
        }
        Ok(RemoteUrl {
            scheme: Scheme::File,
            clean: url.to_string(),
            redacted: url.to_string(),
            host: String::new(),
            port: None,
            user: None,
            password: None,
            http_name: None,
        })
    }

    fn network(scheme: Scheme, rest: &str) -> Result<RemoteUrl, String> {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.len() <= 1 {
            return Err("the URL has no repository path".into());
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, pass)) => (Some(name.to_string()), Some(pass.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let is_http = matches!(scheme, Scheme::Https | Scheme::Http);
        let scheme_text = match scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
            Scheme::Ssh => "ssh",
            Scheme::Git => "git",
            Scheme::File => unreachable!("file URLs are parsed by `local`"),
        };
        let hostport_text = match port {
            Some(p) => format!("{}:{p}", bracket(&host)),
            None => bracket(&host),
        };
        // For http(s) a lone userinfo is usually a token (`https://TOKEN@host`): hide it all.
        // An ssh user name (`git@`) is not a secret and stays visible.
        let (clean_user, shown_user) = match (&user, is_http) {
            (Some(_), true) => (None, Some("***".to_string())),
            (Some(u), false) => (Some(u.clone()), Some(u.clone())),
            (None, _) => (None, None),
        };
        let with_user = |u: &Option<String>| match u {
            Some(u) => format!("{scheme_text}://{u}@{hostport_text}{path}"),
            None => format!("{scheme_text}://{hostport_text}{path}"),
        };
        Ok(RemoteUrl {
            scheme,
            clean: with_user(&clean_user),
            redacted: with_user(&shown_user),
            host,
            port,
            user: if is_http && password.is_none() {
                None
            } else {
                user.clone()
            },
            http_name: user.as_deref().filter(|_| is_http).map(percent_decode),
            // A lone http userinfo is treated as the token itself.
            password: if is_http { password.or(user) } else { password },
        })
    }

    fn scp_style(text: &str) -> Result<RemoteUrl, String> {
        let (authority, path) = text.split_once(':').ok_or_else(|| {
            format!(
                "{} is not a URL: use https://, ssh://, git://, file:// or an absolute path",
                crate::text::quote(text)
            )
        })?;
        if authority.contains('/') || path.is_empty() {
            return Err(format!(
                "{} is not a URL: use https://, ssh://, git://, file:// or an absolute path",
                crate::text::quote(text)
            ));
        }
        let (user, host) = match authority.split_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, _) = split_host_port(host)?;
        // An absolute path becomes ssh://; a relative one (`git@github.com:me/h.git`) is
        // given to libgit2 as written, which understands scp-style.
        let clean = match (&user, path.starts_with('/')) {
            (Some(u), true) => format!("ssh://{u}@{host}{path}"),
            (None, true) => format!("ssh://{host}{path}"),
            (_, false) => text.to_string(),
        };
        Ok(RemoteUrl {
            scheme: Scheme::Ssh,
            redacted: text.to_string(),
            clean,
            host,
            port: None,
            user,
            password: None,
            http_name: None,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// The URL to give to git (carries no secret).
    pub fn for_git(&self) -> &str {
        &self.clean
    }
    /// The URL to show to people, log and store.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// The user name for a token from `[source] token_file`: the name in the URL's
    /// userinfo (`https://gitlab+deploy-token-7@host/…`, `https://x-token-auth@host/…`),
    /// percent-decoded; `None` when the URL has none.
    pub fn user_for_token_file(&self) -> Option<&str> {
        self.http_name.as_deref()
    }
    /// A password or token that was written into the URL itself.
    pub fn embedded_secret(&self) -> Option<&str> {
        self.password.as_deref()
    }
    /// The path of a local repository (`file://` or a plain path), `None` for a remote.
    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self.scheme {
            Scheme::File => self.clean.strip_prefix("file://").map(std::path::Path::new),
            _ => None,
        }
    }
    pub fn is_http(&self) -> bool {
        matches!(self.scheme, Scheme::Https | Scheme::Http)
    }
    /// https, or http to this machine itself (tests, a local mirror).
    pub fn is_encrypted_or_loopback(&self) -> bool {
        self.scheme != Scheme::Http
            || matches!(self.host.as_str(), "127.0.0.1" | "localhost" | "::1")
    }
}

/// `%XX` escapes decoded (RFC 3986 userinfo); anything else, a bad escape included, as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '[' in the URL host")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    if host.starts_with('-') {
        return Err(format!(
            "refusing host {}: it starts with '-'",
            crate::text::quote(host)
        ));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!("invalid host {}", crate::text::quote(host)));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| format!("invalid port {} (1 to 65535)", crate::text::quote(p)))?,
        ),
        None => None,
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_token_is_split_off_and_redacted() {
        let u = RemoteUrl::parse("https://me:SEKRET@git.example.org/me/homelab.git").unwrap();
        assert_eq!(u.for_git(), "https://git.example.org/me/homelab.git");
        assert_eq!(u.redacted(), "https://***@git.example.org/me/homelab.git");
        assert_eq!(u.embedded_secret(), Some("SEKRET"));
        assert_eq!(u.user(), Some("me"));
        assert!(!format!("{u:?} {u}").contains("SEKRET"));

        let lone = RemoteUrl::parse("https://SEKRET@github.com/me/h.git").unwrap();
        assert_eq!(lone.embedded_secret(), Some("SEKRET"));
        assert_eq!(lone.user(), None);
        assert!(!lone.redacted().contains("SEKRET"));
    }

    #[test]
    fn the_url_user_name_is_kept_for_a_token_file() {
        let cases = [
            (
                "https://gitlab+deploy-token-7@gitlab.example.org/me/h.git",
                Some("gitlab+deploy-token-7"),
            ),
            (
                "https://x-token-auth@bitbucket.org/me/h.git",
                Some("x-token-auth"),
            ),
            ("https://me:SEKRET@git.example.org/h.git", Some("me")),
            (
                "https://first%40example.org@git.example.org/h.git",
                Some("first@example.org"),
            ),
            ("https://git.example.org/h.git", None),
            ("ssh://git@host/h.git", None),
        ];
        for (text, user) in cases {
            let u = RemoteUrl::parse(text).unwrap();
            assert_eq!(u.user_for_token_file(), user, "{text}");
            assert!(
                !u.for_git().contains('@') || text.starts_with("ssh"),
                "{text}"
            );
        }
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn transports() {
        let cases = [
            (
                "ssh://git@host:2222/srv/h.git",
                Scheme::Ssh,
                "ssh://git@host:2222/srv/h.git",
                Some(2222),
            ),
            (
                "git://127.0.0.1:9418/h.git",
                Scheme::Git,
                "git://127.0.0.1:9418/h.git",
                Some(9418),
            ),
            ("file:///srv/h.git", Scheme::File, "file:///srv/h.git", None),
            ("/srv/h.git", Scheme::File, "file:///srv/h.git", None),
            (
                "git@github.com:me/h.git",
                Scheme::Ssh,
                "git@github.com:me/h.git",
                None,
            ),
            (
                "git@host:/srv/h.git",
                Scheme::Ssh,
                "ssh://git@host/srv/h.git",
                None,
            ),
            (
                "http://127.0.0.1:8080/h.git",
                Scheme::Http,
                "http://127.0.0.1:8080/h.git",
                Some(8080),
            ),
        ];
        for (text, scheme, clean, port) in cases {
            let u = RemoteUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(u.scheme(), scheme, "{text}");
            assert_eq!(u.for_git(), clean, "{text}");
            assert_eq!(u.port(), port, "{text}");
        }
    }

    #[test]
    fn hostile_urls_are_refused() {
        let cases = [
            ("ext::sh -c touch% /tmp/pwned", "spaces"),
            ("ext::sh", "remote helpers"),
            ("fd::3", "remote helpers"),
            ("ssh://-oProxyCommand=touch/x", "starts with '-'"),
            ("ftp://host/x", "unsupported transport"),
            ("relative/path", "not a URL"),
            ("https://host", "no repository path"),
            ("https://host:99999/x", "invalid port"),
            ("git://host:0/x", "invalid port"),
            ("file://relative", "absolute path"),
        ];
        for (text, needle) in cases {
            let err = RemoteUrl::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
