//! Redirects over https, with real nginx on two loopback addresses (127.0.0.1 and
//! 127.0.0.2) and one private CA (issue 23, item 1). As `git ls-remote` does, the agent
//! follows a redirect of its first request, but the token only ever goes to the server
//! of `[source] url`: another server that asks for credentials gets none and the run
//! fails as a configuration error naming both servers; a redirect from https to plain
//! http is refused and told as such, not as a network problem. No commit is blamed.

use std::path::PathBuf;

use crate::daemon_git::{cycle_after, start_daemon, stop};
use crate::support::servers::{closed_port, served};
use crate::support::Harness;
use crate::tls::{agent, tools_available, Nginx, Pki, Site};

const TOKEN: &str = "redirect-token-4711";

struct Setup {
    h: Harness,
    nginx: Nginx,
    ca: PathBuf,
    /// 127.0.0.1: answers 301 to `elsewhere` without asking anything.
    moved: u16,
    /// 127.0.0.1: asks for credentials, then answers 301 to `elsewhere` with a challenge
    /// on the redirect (libgit2 then re-sends what it holds).
    moved_after_auth: u16,
    /// 127.0.0.1: answers 301 to `plain`.
    downgraded: u16,
    /// 127.0.0.2: the git server, Basic auth required; logs the Authorization header.
    elsewhere: u16,
    /// 127.0.0.2, plain http, no auth.
    plain: u16,
    /// 127.0.0.1: answers 301 to `open`.
    moved_open: u16,
    /// 127.0.0.2, https, no auth.
    open: u16,
}

fn setup() -> Setup {
    let (h, _bare) = served();
    let pki = Pki::new(h.path("pki"));
    let cert = pki.server("both", "IP:127.0.0.1,IP:127.0.0.2");
    let port = || closed_port();
    let (moved, moved_after_auth, downgraded, elsewhere, plain) =
        (port(), port(), port(), port(), port());
    let (moved_open, open) = (port(), port());
    let to_elsewhere = format!("return 301 https://127.0.0.2:{elsewhere}$request_uri;");
    let challenge = "add_header WWW-Authenticate 'Basic realm=\"git\"' always;";
    let site = |ip, port, tls: bool, first: String, auth| Site {
        ip,
        port,
        tls: tls.then(|| cert.clone()),
        first,
        auth,
    };
    let sites = [
        site("127.0.0.1", moved, true, to_elsewhere.clone(), false),
        site(
            "127.0.0.1",
            moved_after_auth,
            true,
            format!("if ($http_authorization = \"\") {{ {challenge} return 401; }}\n  {challenge}\n  {to_elsewhere}"),
            false,
        ),
        site(
            "127.0.0.1",
            downgraded,
            true,
            format!("return 301 http://127.0.0.2:{plain}$request_uri;"),
            false,
        ),
        site("127.0.0.2", elsewhere, true, String::new(), true),
        site("127.0.0.2", plain, false, String::new(), false),
        site(
            "127.0.0.1",
            moved_open,
            true,
            format!("return 301 https://127.0.0.2:{open}$request_uri;"),
            false,
        ),
        site("127.0.0.2", open, true, String::new(), false),
    ];
    let nginx = Nginx::start_sites(
        &h.path("nginx"),
        &h.path("srv"),
        &sites,
        &[("homelab-agent", TOKEN)],
    );
    std::fs::write(h.path("token"), format!("{TOKEN}\n")).unwrap();
    Setup {
        h,
        nginx,
        ca: pki.ca(),
        moved,
        moved_after_auth,
        downgraded,
        elsewhere,
        plain,
        moved_open,
        open,
    }
}

impl Setup {
    fn use_token_file(&mut self, port: u16) {
        self.h.url = format!("https://127.0.0.1:{port}/homelab.git");
        self.h.source_extra = format!(
            "token_file = \"{}\"\nca_file = \"{}\"\n",
            self.h.path("token").display(),
            self.ca.display()
        );
    }

    fn use_url_token(&mut self, port: u16) {
        self.h.url = format!("https://homelab-agent:{TOKEN}@127.0.0.1:{port}/homelab.git");
        self.h.source_extra = format!("ca_file = \"{}\"\n", self.ca.display());
    }

    /// The requests the server at 127.0.0.2 saw.
    fn seen_elsewhere(&self) -> Vec<String> {
        let tag = format!("127.0.0.2:{} ", self.elsewhere);
        self.nginx
            .access_log()
            .lines()
            .filter(|l| l.starts_with(&tag))
            .map(str::to_string)
            .collect()
    }

    /// `run --once` fails as a configuration error (78), nothing deployed or blamed,
    /// and 127.0.0.2 was asked but never saw the token; returns the recorded error.
    /// `asked`: 127.0.0.2 was asked (and answered 401); else the request that would
    /// have carried the token was never written.
    fn refused(&mut self, asked: bool) -> (String, String) {
        let before = self.seen_elsewhere().len();
        let run = agent(&self.h, &["run", "--once"]);
        run.expect(78);
        let seen = self.seen_elsewhere();
        assert_eq!(seen.len() > before, asked, "{seen:?}");
        for line in &seen {
            assert!(
                line.contains(" auth=- ") && !line.contains("Basic"),
                "credentials reached the other server: {line}"
            );
        }
        assert!(!self.nginx.access_log().contains(TOKEN));
        let status = self.h.status();
        assert!(status["bad_commit"].is_null(), "{status}");
        assert_eq!(self.h.profile_generation(), None);
        let error = status["last_run"]["error"].as_str().unwrap_or_default();
        assert!(!error.contains("check the network"), "{error}");
        assert!(
            run.stderr().contains(error.lines().next().unwrap()),
            "{}",
            run.stderr()
        );
        (error.to_string(), run.stderr())
    }

    fn assert_names_both(&self, error: &str, from: u16, asked: bool) {
        let expected = format!(
            "https://127.0.0.1:{from} redirected to https://127.0.0.2:{}, {}: refused, the \
             token is only ever sent to the server of [source] url (https://127.0.0.1:{from})",
            self.elsewhere,
            if asked {
                "which asks for credentials"
            } else {
                "and the credentials given to it were about to follow"
            }
        );
        assert!(error.contains(&expected), "{error}");
    }
}

#[test]
fn a_redirect_to_another_host_never_gets_the_token() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    // `moved_after_auth`: the configured server asked for (and got) the token, then
    // redirected with a challenge: libgit2 would re-send it unasked.
    for (form, port, asked) in [
        ("token_file", s.moved, true),
        ("url", s.moved, true),
        ("token_file, after auth", s.moved_after_auth, false),
        ("url, after auth", s.moved_after_auth, false),
    ] {
        if form.starts_with("url") {
            s.use_url_token(port);
        } else {
            s.use_token_file(port);
        }
        let (error, stderr) = s.refused(asked);
        s.assert_names_both(&error, port, asked);
        assert!(
            stderr.contains("hint: if the repository moved, set [source] url to the new location"),
            "{stderr}"
        );
        eprintln!("{form}: {error}");
    }
    // The target really serves the repository to whoever has the token: the refusals
    // were the agent's, not the server's.
    s.use_token_file(s.elsewhere);
    s.h.url = format!("https://127.0.0.2:{}/homelab.git", s.elsewhere);
    agent(&s.h, &["run", "--once"]).expect(0);
    assert_eq!(s.h.profile_generation(), Some(1));
    assert!(s.seen_elsewhere().iter().any(|l| l.contains("auth=Basic ")));
}

#[test]
fn the_daemons_git_child_refuses_the_same_way() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    s.use_token_file(s.moved);
    let daemon = start_daemon(&mut s.h);
    cycle_after(&s.h.path("runtime/last-poll.json"), None);
    let err = stop(daemon);
    let poll: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.h.path("runtime/last-poll.json")).unwrap())
            .unwrap();
    let error = poll["error"].as_str().unwrap_or_default();
    s.assert_names_both(error, s.moved, true);
    assert!(err.contains("which asks for credentials: refused"), "{err}");
    for line in s.seen_elsewhere() {
        assert!(!line.contains("Basic"), "{line}");
    }
    assert!(s.h.status()["bad_commit"].is_null());
}

#[test]
fn a_redirect_from_https_to_http_is_refused_as_insecure() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    s.use_token_file(s.downgraded);
    let run = agent(&s.h, &["run", "--once"]);
    run.expect(78);
    let status = s.h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "https://127.0.0.1:{} redirected to an insecure location (http://127.0.0.2:{}): \
             refused, https is never downgraded to plain http",
            s.downgraded, s.plain
        )),
        "{error}"
    );
    assert!(
        run.stderr().contains(
            "hint: if the repository moved, set [source] url to its new https:// location"
        ),
        "{}",
        run.stderr()
    );
    assert!(!error.contains("check the network"), "{error}");
    assert!(status["bad_commit"].is_null(), "{status}");
    let plain = format!("127.0.0.2:{} ", s.plain);
    assert!(!s.nginx.access_log().lines().any(|l| l.starts_with(&plain)));
}

/// A repository that moved to a server asking nothing: followed, as `git ls-remote`
/// does, and deployed; the token was never sent to the new server.
#[test]
fn a_redirect_to_a_server_that_asks_nothing_is_followed() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    s.use_token_file(s.moved_open);
    agent(&s.h, &["run", "--once"]).expect(0);
    assert_eq!(s.h.profile_generation(), Some(1));
    let open = format!("127.0.0.2:{} ", s.open);
    let log = s.nginx.access_log();
    let seen: Vec<&str> = log.lines().filter(|l| l.starts_with(&open)).collect();
    assert!(!seen.is_empty(), "{log}");
    for line in seen {
        assert!(!line.contains("Basic"), "{line}");
    }
}
