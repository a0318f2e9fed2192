//! Running `<system>/bin/switch-to-configuration <action>`.
//!
//! Under systemd it runs in a transient unit (`systemd-run --wait --collect`), as
//! nixos-rebuild does: a switch that restarts units, the agent's own included, cannot
//! kill it halfway. Outside systemd (tests, containers) it runs as a direct child.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{ActivationMode, ActivationSettings};
use crate::failure::Kind;
use crate::process::{self, Cmd, CmdError};

/// The transient unit's name: fixed, so a second activation cannot start beside a stuck one.
pub const UNIT: &str = "homelab-agent-switch";
/// Every activation carries its tag in this environment variable (its own, and inherited
/// by everything it starts), so a later run can find it after the agent was killed.
pub const TAG_VAR: &str = "HOMELAB_AGENT_ACTIVATION";
/// How long an activation left by a killed run may take to end by itself before it is
/// stopped (at most the activation timeout).
const LEFTOVER_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Live now, boot default unchanged.
    Test,
    /// Boot default only.
    Boot,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Test => "test",
            Action::Boot => "boot",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("switch-to-configuration {action} of {system} failed with exit code {code}{}{}", meaning(*code), tail(stderr))]
    Failed {
        action: &'static str,
        system: String,
        code: i32,
        stderr: String,
    },
    #[error("switch-to-configuration {action} of {system} timed out after {} and was stopped (limit: [activation] timeout)", crate::duration::format_duration(*after))]
    TimedOut {
        action: &'static str,
        system: String,
        after: Duration,
    },
    #[error("switch-to-configuration {action} of {system}: {message}")]
    Other {
        action: &'static str,
        system: String,
        message: String,
    },
    #[error("an activation left by an interrupted run ({tag}) is still running and could not be stopped: {message}")]
    Leftover { tag: String, message: String },
}

impl SwitchError {
    /// A switch that failed or hung is the system's fault (the commit's, when it is new);
    /// one that could not even start, or a leftover that will not stop, is this machine's.
    pub fn kind(&self) -> Kind {
        match self {
            SwitchError::Failed { .. } | SwitchError::TimedOut { .. } => Kind::Commit,
            SwitchError::Other { .. } | SwitchError::Leftover { .. } => Kind::Environment,
        }
    }

    /// What to do about it, when more than the kind's hint can be said.
    pub fn hint(&self) -> Option<String> {
        match self {
            SwitchError::Leftover { .. } => Some(format!("stop it by hand (`systemctl stop {UNIT}`, or kill the process tree of switch-to-configuration), then run again")),
            _ => None,
        }
    }
}

/// A switch error as the cycle sees it: kind, words, hint, and the error kept.
impl From<SwitchError> for crate::failure::Failure {
    fn from(e: SwitchError) -> crate::failure::Failure {
        let f = crate::failure::Failure::new(e.kind(), e.to_string());
        let f = match e.hint() {
            Some(h) => f.with_hint(h),
            None => f,
        };
        f.with_source(e)
    }
}

/// NixOS's documented exit codes of switch-to-configuration.
fn meaning(code: i32) -> &'static str {
    match code {
        2 => " (the activation script failed)",
        3 => " (systemd could not be reloaded)",
        4 => " (some units failed to start)",
        100 => " (a reboot is needed to switch: the init interface changed)",
        _ => "",
    }
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let kept = &lines[lines.len().saturating_sub(10)..];
    if kept.is_empty() {
        String::new()
    } else {
        format!(
            ":\n{}",
            kept.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

#[derive(Debug, Clone)]
pub struct Switcher {
    via_systemd: bool,
    systemd_run: PathBuf,
    systemctl: PathBuf,
    timeout: Duration,
}

impl Switcher {
    pub fn new(settings: &ActivationSettings, systemd_run: &Path, systemctl: &Path) -> Switcher {
        let via_systemd = match settings.mode {
            ActivationMode::Direct => false,
            ActivationMode::SystemdRun => true,
            // systemd's own test for "booted with systemd".
            ActivationMode::Auto => Path::new("/run/systemd/system").is_dir(),
        };
        Switcher {
            via_systemd,
            systemd_run: systemd_run.into(),
            systemctl: systemctl.into(),
            timeout: settings.timeout,
        }
    }

    /// The argument vector for one activation, tagged `tag` (see [`TAG_VAR`]).
    pub fn command(&self, system: &Path, action: Action, tag: &str) -> Cmd {
        let stc = system.join("bin/switch-to-configuration");
        let cmd = if self.via_systemd {
            Cmd::new(&self.systemd_run)
                .arg(format!("--unit={UNIT}"))
                .args(["--collect", "--wait", "--quiet", "--service-type=exec"])
                .arg("--setenv=NIXOS_INSTALL_BOOTLOADER=")
                .arg(format!("--setenv={TAG_VAR}={tag}"))
                .arg("--")
                .arg(stc)
                .arg(action.as_str())
        } else {
            Cmd::new(stc).arg(action.as_str()).env(TAG_VAR, tag)
        };
        cmd.timeout(self.timeout)
    }

    pub async fn run(&self, system: &Path, action: Action, tag: &str) -> Result<(), SwitchError> {
        let name = system.display().to_string();
        let act = action.as_str();
        crate::failpoint("before_switch");
        match self.command(system, action, tag).run().await {
            Ok(done) if done.status.success() => Ok(()),
            Ok(done) => Err(SwitchError::Failed {
                action: act,
                system: name,
                code: done.status.code().unwrap_or(-1),
                stderr: done.stderr_tail,
            }),
            Err(CmdError::TimedOut { after, .. }) => {
                if self.via_systemd {
                    // Killing systemd-run does not stop the unit it started.
                    let _ = Cmd::new(&self.systemctl)
                        .args(["stop", UNIT])
                        .timeout(Duration::from_secs(90))
                        .run()
                        .await;
                }
                Err(SwitchError::TimedOut {
                    action: act,
                    system: name,
                    after,
                })
            }
            Err(e) => Err(SwitchError::Other {
                action: act,
                system: name,
                message: e.to_string(),
            }),
        }
    }
}

impl Switcher {
    /// Makes sure no activation tagged `tag` (left by a killed run) is still running:
    /// waits for it to end by itself for a short grace, then stops it. Under systemd it
    /// lives in the transient unit; in direct mode it is found by its tag in /proc.
    pub async fn settle_leftover(&self, tag: &str) -> Result<(), SwitchError> {
        let grace = LEFTOVER_GRACE.min(self.timeout);
        let deadline = tokio::time::Instant::now() + grace;
        let leftover = |e: String| SwitchError::Leftover {
            tag: tag.to_string(),
            message: e,
        };
        if self.via_systemd {
            while self.unit_running().await? && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if self.unit_running().await? {
                log::warn!("stopping {UNIT}, left running by an interrupted run");
                Cmd::new(&self.systemctl)
                    .args(["stop", UNIT])
                    .timeout(Duration::from_secs(90))
                    .run_ok()
                    .await
                    .map_err(|e| leftover(e.to_string()))?;
            }
            // A failed unit that was not collected would block the name.
            let _ = Cmd::new(&self.systemctl)
                .args(["reset-failed", UNIT])
                .timeout(Duration::from_secs(30))
                .run()
                .await;
            return Ok(());
        }
        let needle = format!("{TAG_VAR}={tag}");
        while !process::tagged(&needle).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = process::tagged(&needle);
        if !left.is_empty() {
            log::warn!(
                "stopping {} process(es) of an activation left by an interrupted run",
                left.len()
            );
            for pid in left {
                process::kill_tree(pid).await;
            }
            if !process::tagged(&needle).is_empty() {
                return Err(leftover("processes survived SIGKILL".into()));
            }
        }
        Ok(())
    }

    /// Whether the transient activation unit is loaded and not yet finished.
    async fn unit_running(&self) -> Result<bool, SwitchError> {
        let done = Cmd::new(&self.systemctl)
            .args(["show", "--property=ActiveState", "--value", UNIT])
            .capture_stdout()
            .timeout(Duration::from_secs(30))
            .run_ok()
            .await
            .map_err(|e| SwitchError::Leftover {
                tag: UNIT.to_string(),
                message: e.to_string(),
            })?;
        Ok(matches!(
            done.stdout.trim(),
            "active" | "activating" | "deactivating" | "reloading"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_run_argument_vector() {
        let s = ActivationSettings {
            mode: ActivationMode::SystemdRun,
            timeout: Duration::from_secs(60),
            require_agent_and_ssh: true,
        };
        let sw = Switcher::new(
            &s,
            Path::new("/run/current-system/sw/bin/systemd-run"),
            Path::new("systemctl"),
        );
        let argv = sw
            .command(Path::new("/nix/store/abc-nixos-system"), Action::Test, "t1")
            .argv();
        assert_eq!(argv[0], "/run/current-system/sw/bin/systemd-run");
        assert_eq!(argv[1], "--unit=homelab-agent-switch");
        assert!(argv.contains(&"--wait".to_string()) && argv.contains(&"--collect".to_string()));
        assert!(argv.contains(&"--setenv=HOMELAB_AGENT_ACTIVATION=t1".to_string()));
        let dashdash = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &argv[dashdash + 1..],
            [
                "/nix/store/abc-nixos-system/bin/switch-to-configuration",
                "test"
            ]
        );
    }

    #[test]
    fn direct_argument_vector() {
        let s = ActivationSettings {
            mode: ActivationMode::Direct,
            timeout: Duration::from_secs(60),
            require_agent_and_ssh: true,
        };
        let sw = Switcher::new(&s, Path::new("systemd-run"), Path::new("systemctl"));
        let cmd = sw.command(Path::new("/nix/store/abc"), Action::Boot, "t1");
        assert_eq!(
            cmd.argv(),
            ["/nix/store/abc/bin/switch-to-configuration", "boot"]
        );
    }

    #[test]
    fn exit_codes_are_explained() {
        let e = SwitchError::Failed {
            action: "test",
            system: "/nix/store/x".into(),
            code: 4,
            stderr: "unit foo failed".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("exit code 4 (some units failed to start)")
                && text.contains("unit foo failed"),
            "{text}"
        );
    }
}
