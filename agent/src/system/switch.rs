//! Running `<system>/bin/switch-to-configuration <action>`.
//!
//! Under systemd it runs in a transient unit (`systemd-run --wait --collect`), as
//! nixos-rebuild does: a switch that restarts units, the agent's own included, cannot
//! kill it halfway. Outside systemd (tests, containers) it runs as a direct child.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{ActivationMode, ActivationSettings};
use crate::process::{Cmd, CmdError};

/// The transient unit's name: fixed, so a second activation cannot start beside a stuck one.
pub const UNIT: &str = "homelab-agent-switch";

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
    #[error("switch-to-configuration {action} of {system} timed out after {} and was stopped (limit: [activation] timeout)", humantime::format_duration(*after))]
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

    /// The argument vector for one activation.
    pub fn command(&self, system: &Path, action: Action) -> Cmd {
        let stc = system.join("bin/switch-to-configuration");
        let cmd = if self.via_systemd {
            Cmd::new(&self.systemd_run)
                .arg(format!("--unit={UNIT}"))
                .args(["--collect", "--wait", "--quiet", "--service-type=exec"])
                .args(["--setenv=NIXOS_INSTALL_BOOTLOADER=", "--"])
                .arg(stc)
                .arg(action.as_str())
        } else {
            Cmd::new(stc).arg(action.as_str())
        };
        cmd.timeout(self.timeout)
    }

    pub async fn run(&self, system: &Path, action: Action) -> Result<(), SwitchError> {
        let name = system.display().to_string();
        let act = action.as_str();
        crate::failpoint("before_switch");
        match self.command(system, action).run().await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_run_argument_vector() {
        let s = ActivationSettings {
            mode: ActivationMode::SystemdRun,
            timeout: Duration::from_secs(60),
        };
        let sw = Switcher::new(
            &s,
            Path::new("/run/current-system/sw/bin/systemd-run"),
            Path::new("systemctl"),
        );
        let argv = sw
            .command(Path::new("/nix/store/abc-nixos-system"), Action::Test)
            .argv();
        assert_eq!(argv[0], "/run/current-system/sw/bin/systemd-run");
        assert_eq!(argv[1], "--unit=homelab-agent-switch");
        assert!(argv.contains(&"--wait".to_string()) && argv.contains(&"--collect".to_string()));
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
        };
        let sw = Switcher::new(&s, Path::new("systemd-run"), Path::new("systemctl"));
        let argv = sw.command(Path::new("/nix/store/abc"), Action::Boot).argv();
        assert_eq!(argv, ["/nix/store/abc/bin/switch-to-configuration", "boot"]);
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
