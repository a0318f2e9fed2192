//! Building a machine's system with `nix build`: argument vectors built by a pure
//! function, `--json` parsed for the result, errors told apart (evaluation, missing host,
//! build failure, timeout, disk full) so the operator knows what to fix.
//!
//! Only flags that both Nix 2.8 and 2.18+ accept. The output is rooted with `--out-link`
//! from the moment it exists, so a garbage collection cannot delete it before activation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::BuildSettings;
use crate::process::{Cmd, CmdError};
use crate::source::git::CANDIDATE_REF;

#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The agent's bare cache repository.
    pub cache: &'a Path,
    pub commit: &'a str,
    pub attribute: &'a str,
    /// GC root for the result.
    pub out_link: &'a Path,
    pub settings: &'a BuildSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("evaluation failed:\n{0}\nhint: fix the Nix error in your flake and push")]
    Eval(String),
    #[error("the flake has no {attribute}:\n{message}\nhint: check [host] name, or add this host to nixosConfigurations")]
    HostMissing { attribute: String, message: String },
    #[error("build failed:\n{0}")]
    Failed(String),
    #[error("build timed out after {} (limit: [build] timeout); nix and its builders were stopped", humantime::format_duration(*after))]
    TimedOut { after: Duration },
    #[error("out of disk space while building:\n{0}\nhint: free space, e.g. `nix-collect-garbage --delete-older-than 30d`")]
    DiskFull(String),
    #[error("{0}")]
    Nix(String),
}

impl BuildError {
    /// Failures that say nothing about the commit: retried rather than remembered as bad.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BuildError::TimedOut { .. } | BuildError::DiskFull(_) | BuildError::Nix(_)
        )
    }
}

/// `git+file://<cache>?ref=<agent ref>&rev=<sha>#<attribute>`: always a pinned revision of
/// the agent's own mirror, never a work tree and never a user-supplied ref.
pub fn flake_ref(cache: &Path, commit: &str, attribute: &str) -> String {
    format!(
        "git+file://{}?ref={CANDIDATE_REF}&rev={commit}#{attribute}",
        cache.display()
    )
}

/// The full `nix build` argument vector (without the program).
pub fn build_args(req: &BuildRequest) -> Vec<String> {
    let mut args: Vec<String> = vec![
        // Flakes on the command line, so a stock nix.conf works.
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
        "build".into(),
        "--json".into(),
        // The mirror is read-only input; never write or update a lock file.
        "--no-write-lock-file".into(),
        "--print-build-logs".into(),
        "--out-link".into(),
        req.out_link.display().to_string(),
    ];
    if let Some(jobs) = req.settings.max_jobs {
        args.extend(["--max-jobs".into(), jobs.to_string()]);
    }
    if let Some(cores) = req.settings.cores {
        args.extend(["--cores".into(), cores.to_string()]);
    }
    args.extend(req.settings.extra_args.iter().cloned());
    args.push(flake_ref(req.cache, req.commit, req.attribute));
    args
}

/// Builds and returns the system's store path.
pub async fn build(req: &BuildRequest<'_>) -> Result<PathBuf, BuildError> {
    let path = req.cache.display().to_string();
    if path.contains(['?', '#', '%', ' ']) {
        return Err(BuildError::Nix(format!(
            "the state directory {path:?} contains a character that cannot go into a flake URL"
        )));
    }
    let cmd = Cmd::new("nix")
        .args(build_args(req))
        .timeout(req.settings.timeout)
        .capture_stdout();
    match cmd.run().await {
        Ok(done) if done.status.success() => {
            parse_build_json(&done.stdout).map_err(BuildError::Nix)
        }
        Ok(done) => Err(classify(req.attribute, &done.stderr_tail)),
        Err(CmdError::TimedOut { after, .. }) => Err(BuildError::TimedOut { after }),
        Err(e @ CmdError::NotFound { .. }) => Err(BuildError::Nix(format!(
            "{e}\nhint: install Nix (Debian/Ubuntu: apt-get install nix-bin)"
        ))),
        Err(e) => Err(BuildError::Nix(e.to_string())),
    }
}

/// The `out` path from `nix build --json`: `[{"drvPath": …, "outputs": {"out": …}}]`.
pub fn parse_build_json(stdout: &str) -> Result<PathBuf, String> {
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("cannot parse `nix build --json` output: {e}"))?;
    value
        .get(0)
        .and_then(|v| v.get("outputs"))
        .and_then(|o| o.get("out"))
        .and_then(|p| p.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "`nix build --json` output has no outputs.out: {}",
                truncate(stdout, 300)
            )
        })
}

/// Tells a failed build's kind from nix's stderr (its exit code is 1 for all of them).
fn classify(attribute: &str, stderr: &str) -> BuildError {
    let excerpt = error_excerpt(stderr);
    if stderr.contains("does not provide attribute") {
        BuildError::HostMissing {
            attribute: attribute.to_string(),
            message: excerpt,
        }
    } else if stderr.contains("No space left on device") {
        BuildError::DiskFull(excerpt)
    } else if stderr.contains("builder for")
        || stderr.contains("build of")
        || stderr.contains("dependencies couldn't be built")
    {
        BuildError::Failed(excerpt)
    } else if stderr.contains("error:") {
        BuildError::Eval(excerpt)
    } else {
        BuildError::Nix(format!("nix build failed:\n{excerpt}"))
    }
}

/// The last 15 lines of nix's stderr without warnings: the builder's last log lines
/// (printed before the error with `--print-build-logs`) and the error itself.
fn error_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("warning:"))
        .collect();
    let kept = &lines[lines.len().saturating_sub(15)..];
    kept.iter()
        .map(|l| format!("  {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BuildSettings {
        BuildSettings {
            timeout: Duration::from_secs(60),
            max_jobs: Some(1),
            cores: None,
            extra_args: vec!["--option".into(), "substituters".into(), "".into()],
        }
    }

    #[test]
    fn argument_vector_is_pinned_and_quoted() {
        let s = settings();
        let req = BuildRequest {
            cache: Path::new("/var/lib/homelab-agent/cache.git"),
            commit: "0123456789abcdef0123456789abcdef01234567",
            attribute: "nixosConfigurations.\"pi1\".config.system.build.toplevel",
            out_link: Path::new("/var/lib/homelab-agent/gcroots/candidate"),
            settings: &s,
        };
        let args = build_args(&req);
        assert_eq!(
            &args[..4],
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--json"
            ]
        );
        assert!(!args
            .iter()
            .any(|a| a == "--print-out-paths" || a == "--accept-flake-config" || a == "--no-link"));
        let out_link = args.iter().position(|a| a == "--out-link").unwrap();
        assert_eq!(
            args[out_link + 1],
            "/var/lib/homelab-agent/gcroots/candidate"
        );
        assert_eq!(
            &args[args.len() - 4..args.len() - 1],
            ["--option", "substituters", ""]
        );
        assert_eq!(
            args.last().unwrap(),
            "git+file:///var/lib/homelab-agent/cache.git?ref=refs/heads/homelab-agent/candidate&rev=0123456789abcdef0123456789abcdef01234567#nixosConfigurations.\"pi1\".config.system.build.toplevel"
        );
        assert!(args.windows(2).any(|w| w == ["--max-jobs", "1"]));
    }

    #[test]
    fn parses_build_json() {
        let out = r#"[{"drvPath":"/nix/store/x.drv","outputs":{"out":"/nix/store/abc-nixos-system-pi1"}}]"#;
        assert_eq!(
            parse_build_json(out).unwrap(),
            PathBuf::from("/nix/store/abc-nixos-system-pi1")
        );
        assert!(parse_build_json("[]")
            .unwrap_err()
            .contains("no outputs.out"));
        assert!(parse_build_json("building…")
            .unwrap_err()
            .contains("cannot parse"));
    }

    #[test]
    fn classifies_nix_errors() {
        let attr = "nixosConfigurations.\"x\".config.system.build.toplevel";
        assert!(matches!(
            classify(
                attr,
                "error: flake 'git+file://c' does not provide attribute 'x'"
            ),
            BuildError::HostMissing { .. }
        ));
        assert!(matches!(
            classify(
                attr,
                "error: builder for '/nix/store/a.drv' failed with exit code 3;"
            ),
            BuildError::Failed(_)
        ));
        assert!(matches!(
            classify(attr, "error: writing to file: No space left on device"),
            BuildError::DiskFull(_)
        ));
        assert!(
            matches!(classify(attr, "warning: x\nerror: deliberate eval error"), BuildError::Eval(ref m) if m.contains("deliberate") && !m.contains("warning"))
        );
        assert!(matches!(
            classify(attr, "Segmentation fault"),
            BuildError::Nix(_)
        ));
    }
}
