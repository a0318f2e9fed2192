//! The nix half of `publish`: which hosts, one `nix build` for all of them, `nix copy`
//! to the cache. Argument vectors only, `--json` parsed, flags both Nix 2.8 and 2.18+
//! accept. nix's own output goes to the terminal as it comes (a first build takes long).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::PublishError;
use crate::process::{Cmd, CmdError};

/// How much of `nix build --json` / `nix eval --json` is read.
const MAX_JSON: u64 = 4 << 20;
/// The evaluation of the host names alone is cheap.
const HOST_NAMES_TIMEOUT: Duration = Duration::from_secs(300);

/// The flake at exactly `commit` of the repository (the work tree's changes are not in
/// it; nor is what another branch holds).
pub fn flake(repo: &Path, commit: &str) -> String {
    format!("git+file://{}?rev={commit}", repo.display())
}

/// The installable of one host's system: the agent's default attribute.
pub fn installable(flake: &str, host: &str) -> String {
    format!("{flake}#{}", crate::config::default_attribute(host))
}

fn nix() -> Cmd {
    Cmd::new("nix").args(["--extra-experimental-features", "nix-command flakes"])
}

fn failed(e: CmdError, what: &'static str, commit: &str, after: Duration) -> PublishError {
    match e {
        CmdError::NotFound { program } => PublishError::Tool {
            program,
            problem: "it is not on PATH".into(),
        },
        CmdError::Spawn { program, source } => PublishError::Tool {
            program,
            problem: format!("it could not start: {source}"),
        },
        CmdError::TimedOut { .. } => PublishError::TimedOut {
            what,
            after: format!("{} s", after.as_secs()),
        },
        CmdError::Failed { stderr_tail, .. } => PublishError::Build {
            what,
            commit: commit.to_string(),
            detail: detail(&stderr_tail),
        },
        CmdError::Cancelled { .. } => PublishError::TimedOut {
            what,
            after: "(stopped)".into(),
        },
    }
}

fn detail(tail: &str) -> String {
    if tail.trim().is_empty() {
        "(nix's messages are above)".into()
    } else {
        tail.trim_end().to_string()
    }
}

fn commit_of(flake: &str) -> &str {
    flake.rsplit("rev=").next().unwrap_or(flake)
}

/// Every name in the flake's `nixosConfigurations`.
pub async fn host_names(flake: &str, timeout: Duration) -> Result<Vec<String>, PublishError> {
    let after = timeout.min(HOST_NAMES_TIMEOUT);
    let done = nix()
        .args(["eval", "--json", "--no-write-lock-file"])
        .arg(format!("{flake}#nixosConfigurations"))
        .args(["--apply", "builtins.attrNames"])
        .capture_stdout()
        .max_stdout(MAX_JSON)
        .keep_stderr_lines(40)
        .timeout(after)
        .run_ok()
        .await
        .map_err(|e| {
            failed(
                e,
                "the evaluation of nixosConfigurations",
                commit_of(flake),
                after,
            )
        })?;
    let names: Vec<String> =
        serde_json::from_str(done.stdout.trim()).map_err(|e| PublishError::Output {
            what: "nix eval --json",
            detail: e.to_string(),
        })?;
    if names.is_empty() {
        return Err(PublishError::Build {
            what: "finding the hosts",
            commit: commit_of(flake).to_string(),
            detail: "the flake's nixosConfigurations is empty".into(),
        });
    }
    Ok(names)
}

/// Builds every host's system in one `nix build` (one evaluation of the flake); returns
/// host → store path.
pub async fn build(
    flake: &str,
    hosts: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, PublishError> {
    for host in hosts {
        crate::config::validate_host(host).map_err(|_| PublishError::BadHost(host.clone()))?;
    }
    let done = nix()
        .args(["build", "--json", "--no-link", "--no-write-lock-file"])
        .args(hosts.iter().map(|h| installable(flake, h)))
        .capture_stdout()
        .max_stdout(MAX_JSON)
        .keep_stderr_lines(40)
        .timeout(timeout)
        .run_ok()
        .await
        .map_err(|e| failed(e, "the build", commit_of(flake), timeout))?;
    let outs = parse_outs(&done.stdout, hosts.len())?;
    Ok(hosts.iter().cloned().zip(outs).collect())
}

/// The `out` paths of `nix build --json`, in the order of the installables.
pub fn parse_outs(stdout: &str, expected: usize) -> Result<Vec<String>, PublishError> {
    let bad = |detail: String| PublishError::Output {
        what: "nix build --json",
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(stdout.trim()).map_err(|e| bad(e.to_string()))?;
    let items = value
        .as_array()
        .ok_or_else(|| bad("not a JSON array".into()))?;
    if items.len() != expected {
        return Err(bad(format!(
            "{} results for {expected} systems",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| {
            item.pointer("/outputs/out")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no outputs.out in {item}")))
        })
        .collect()
}

/// Copies the closures to the cache (`nix copy` signs them when the URL says
/// `?secret-key=`, or with nix.conf's `secret-key-files`).
pub async fn copy(to: &str, paths: &[&str], timeout: Duration) -> Result<(), PublishError> {
    nix()
        .args(["copy", "--to", to])
        .args(paths)
        .keep_stderr_lines(40)
        .timeout(timeout)
        .run_ok()
        .await
        .map(|_| ())
        .map_err(|e| match failed(e, "the copy", "", timeout) {
            PublishError::Build { detail, .. } => PublishError::Copy {
                cache: shown_url(to),
                detail,
            },
            other => other,
        })
}

/// Whether a store URL carries a password in its user information (`scheme://user:pw@…`).
pub fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A store URL as shown: no user information, no query (`secret-key=` names a file;
/// other stores take credentials there).
pub fn shown_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let shown = match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!("{scheme}://{host}/{path}")
            }
            None => format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or(rest)),
        },
        None => no_query.to_string(),
    };
    crate::text::escape_controls(&shown, false).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flake_is_pinned_to_the_commit() {
        let f = flake(Path::new("/src/homelab"), "abc123");
        assert_eq!(f, "git+file:///src/homelab?rev=abc123");
        assert_eq!(
            installable(&f, "pi1"),
            "git+file:///src/homelab?rev=abc123#nixosConfigurations.\"pi1\".config.system.build.toplevel"
        );
    }

    #[test]
    fn build_output_is_read_in_order() {
        let json = r#"[{"drvPath":"/nix/store/a.drv","outputs":{"out":"/nix/store/aaa-nixos-system-pi1"}},
                       {"drvPath":"/nix/store/b.drv","outputs":{"out":"/nix/store/bbb-nixos-system-pi2"}}]"#;
        assert_eq!(
            parse_outs(json, 2).unwrap(),
            [
                "/nix/store/aaa-nixos-system-pi1",
                "/nix/store/bbb-nixos-system-pi2"
            ]
        );
        let e = parse_outs(json, 3).unwrap_err().to_string();
        assert!(e.contains("2 results for 3 systems"), "{e}");
        let e = parse_outs("{}", 1).unwrap_err().to_string();
        assert!(e.contains("not a JSON array"), "{e}");
        let e = parse_outs(r#"[{"outputs":{}}]"#, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no outputs.out"), "{e}");
    }

    #[test]
    fn cache_urls_are_shown_without_credentials_or_options() {
        assert_eq!(
            shown_url("file:///srv/cache?secret-key=/etc/nix/key.sec"),
            "file:///srv/cache"
        );
        assert_eq!(
            shown_url("https://user:hunter2@cache.example.org/x?compression=zstd"),
            "https://cache.example.org/x"
        );
        assert_eq!(shown_url("ssh://builder@pi-cache"), "ssh://pi-cache");
        assert_eq!(shown_url("/srv/local-store"), "/srv/local-store");
        assert!(has_password("https://user:hunter2@cache.example.org/x"));
        assert!(!has_password("ssh://builder@pi-cache"));
        assert!(!has_password("file:///srv/cache?secret-key=/k"));
        assert!(!has_password("s3://bucket?profile=a:b@c"));
    }

    #[tokio::test]
    async fn a_bad_host_name_is_refused_before_nix_runs() {
        let e = build(
            "git+file:///x?rev=1",
            &["pi1".into(), "../etc".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, PublishError::BadHost(ref h) if h == "../etc"),
            "{e}"
        );
        assert!(e.to_string().contains("not a host name"), "{e}");
    }
}
