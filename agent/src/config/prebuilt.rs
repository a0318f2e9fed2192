//! `[prebuilt]` (issue 24): deploy the system a workstation or CI built and signed a
//! manifest for, fetched from the binary cache, instead of evaluating here. Off unless
//! `enable = true`; then the key that signs manifests is required (a key of its own:
//! `allowed_signers_file` for ssh, `keyring_file` for gpg, as `[source]` chooses), and
//! the manifest branch must be another branch than the deployed ones. Used by the
//! prebuilt module and its door.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::bounds::{self, DurationKey};
use super::trust::Verify;
use super::validate::{absolute, err, KeyError};

/// The branch manifests live on, unless `[prebuilt] branch` says otherwise.
pub const DEFAULT_BRANCH: &str = "homelab-prebuilt";

/// `[prebuilt]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPrebuilt {
    pub(super) enable: Option<bool>,
    pub(super) branch: Option<String>,
    pub(super) allowed_signers_file: Option<PathBuf>,
    pub(super) keyring_file: Option<PathBuf>,
    pub(super) wait: Option<String>,
}

/// `[prebuilt] wait`: how long after a new head is first seen the agent waits for its
/// manifest before building it here. The default covers a CI run that builds and
/// publishes after the push with a warm cache; a publish run before the push (the
/// workstation recipe) is never waited for. Zero: never wait.
pub const WAIT: DurationKey = DurationKey {
    default: "30m",
    min: Duration::ZERO,
    max: Duration::from_secs(7 * 24 * 3600),
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrebuiltSettings {
    pub enable: bool,
    /// The branch manifests are published on.
    pub branch: String,
    /// Who may sign manifests: [`Verify::Ssh`] or [`Verify::Gpg`] (never
    /// [`Verify::None`] when enabled).
    pub key: Verify,
    pub wait: Duration,
}

impl Default for PrebuiltSettings {
    fn default() -> Self {
        PrebuiltSettings {
            enable: false,
            branch: DEFAULT_BRANCH.to_string(),
            key: Verify::None,
            wait: Duration::from_secs(30 * 60),
        }
    }
}

/// Checks `[prebuilt]`. `branches` are the deployed branches (main, testing), which the
/// manifest branch must not be; `custom_attribute` is a `[host] attribute` other than the
/// host's toplevel, for which no manifest can speak.
pub(super) fn validate(
    raw: RawPrebuilt,
    branches: &[&str],
    custom_attribute: bool,
) -> Result<PrebuiltSettings, KeyError> {
    let branch = raw.branch.unwrap_or_else(|| DEFAULT_BRANCH.to_string());
    super::names::validate_branch(&branch).map_err(|m| err("prebuilt.branch", m))?;
    if branches.contains(&branch.as_str()) {
        return Err(err(
            "prebuilt.branch",
            format!("{branch:?} is a branch the agent deploys: manifests go on a branch of their own (the default is \"homelab-prebuilt\")"),
        ));
    }
    let wait_text = raw.wait.as_deref().unwrap_or(WAIT.default);
    let wait = bounds::parse_duration(&WAIT, wait_text).map_err(|m| err("prebuilt.wait", m))?;
    for (key, path) in [
        ("prebuilt.allowed_signers_file", &raw.allowed_signers_file),
        ("prebuilt.keyring_file", &raw.keyring_file),
    ] {
        if let Some(p) = path {
            absolute(key, p)?;
        }
    }
    let enable = raw.enable.unwrap_or(false);
    let key = match (raw.allowed_signers_file, raw.keyring_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "prebuilt.keyring_file",
                "set allowed_signers_file (ssh) or keyring_file (gpg), not both",
            ))
        }
        (Some(allowed_signers_file), None) => Verify::Ssh {
            allowed_signers_file,
        },
        (None, Some(keyring)) => Verify::Gpg { keyring },
        (None, None) if enable => {
            return Err(err(
                "prebuilt.allowed_signers_file",
                "missing: enable = true needs the key that signs manifests: allowed_signers_file (ssh, `ssh-keygen -Y sign -n homelab-prebuilt`) or keyring_file (gpg)",
            ))
        }
        (None, None) => Verify::None,
    };
    if enable && custom_attribute {
        return Err(err(
            "prebuilt.enable",
            "[host] attribute is not the host's toplevel: manifests name the system of each nixosConfigurations host, not other attributes",
        )
        .with_hint("remove [host] attribute, or leave [prebuilt] off"));
    }
    Ok(PrebuiltSettings {
        enable,
        branch,
        key,
        wait,
    })
}

/// The key file `config check` must find on the machine, when enabled.
pub(super) fn key_file(p: &PrebuiltSettings) -> Option<(String, &std::path::Path)> {
    if !p.enable {
        return None;
    }
    match &p.key {
        Verify::None => None,
        Verify::Ssh {
            allowed_signers_file,
        } => Some(("prebuilt.allowed_signers_file".into(), allowed_signers_file)),
        Verify::Gpg { keyring } => Some(("prebuilt.keyring_file".into(), keyring)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::Verify;
    use crate::config::parse;

    fn parse_prebuilt(extra: &str) -> Result<crate::config::Settings, crate::config::ConfigError> {
        let text = format!(
            "[source]\nurl = \"/r\"\ntesting_branch = \"testing/{{host}}\"\n[host]\nname = \"pi1\"\n{extra}\n"
        );
        parse(Path::new("/etc/t.toml"), &text)
    }

    #[test]
    fn off_by_default_with_the_documented_defaults() {
        let s = parse_prebuilt("").unwrap();
        assert!(!s.prebuilt.enable);
        assert_eq!(s.prebuilt.branch, "homelab-prebuilt");
        assert_eq!(s.prebuilt.wait, Duration::from_secs(1800));
        assert_eq!(s.source.prebuilt_branch, None);
    }

    #[test]
    fn each_key_format_and_the_branch_it_reads() {
        let s = parse_prebuilt(
            "[prebuilt]\nenable = true\nallowed_signers_file = \"/etc/ci\"\nwait = \"0s\"",
        )
        .unwrap();
        assert!(s.prebuilt.enable);
        assert_eq!(
            s.prebuilt.key,
            Verify::Ssh {
                allowed_signers_file: "/etc/ci".into()
            }
        );
        assert_eq!(s.prebuilt.wait, Duration::ZERO);
        // The fetch brings the manifest branch with the head.
        assert_eq!(
            s.source.prebuilt_branch.as_deref(),
            Some("homelab-prebuilt")
        );
        let s = parse_prebuilt(
            "[prebuilt]\nenable = true\nkeyring_file = \"/etc/ci.gpg\"\nbranch = \"ci/prebuilt\"",
        )
        .unwrap();
        assert_eq!(
            s.prebuilt.key,
            Verify::Gpg {
                keyring: "/etc/ci.gpg".into()
            }
        );
        assert_eq!(s.source.prebuilt_branch.as_deref(), Some("ci/prebuilt"));
        // Switched off, the keys may stay.
        let s =
            parse_prebuilt("[prebuilt]\nenable = false\nkeyring_file = \"/etc/ci.gpg\"").unwrap();
        assert!(!s.prebuilt.enable);
        assert_eq!(s.source.prebuilt_branch, None);
    }

    #[test]
    fn bad_prebuilt_settings_name_the_key() {
        let on = "[prebuilt]\nenable = true\n";
        let ssh = "allowed_signers_file = \"/etc/ci\"\n";
        let cases = [
            (
                on.to_string(),
                "prebuilt.allowed_signers_file",
                "missing: enable = true needs the key that signs manifests",
            ),
            (
                format!("{on}{ssh}keyring_file = \"/k\""),
                "prebuilt.keyring_file",
                "not both",
            ),
            (
                format!("{on}allowed_signers_file = \"ci\""),
                "prebuilt.allowed_signers_file",
                "absolute",
            ),
            (
                format!("{on}{ssh}branch = \"main\""),
                "prebuilt.branch",
                "\"main\" is a branch the agent deploys",
            ),
            (
                format!("{on}{ssh}branch = \"testing/pi1\""),
                "prebuilt.branch",
                "is a branch the agent deploys",
            ),
            (
                format!("{on}{ssh}branch = \"x&rev=1\""),
                "prebuilt.branch",
                "invalid branch name",
            ),
            (
                format!("{on}{ssh}wait = \"soon\""),
                "prebuilt.wait",
                "invalid duration \"soon\"",
            ),
            (
                format!("{on}{ssh}wait = \"8days\""),
                "prebuilt.wait",
                "is too long: must be at most 7days",
            ),
            (
                format!("{on}{ssh}sign = true"),
                "prebuilt.sign",
                "unknown field",
            ),
        ];
        for (extra, key, needle) in &cases {
            let e = parse_prebuilt(extra).expect_err(extra);
            assert_eq!(e.key, *key, "{extra}: {e}");
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        // A custom attribute: no manifest speaks for it.
        let text = format!(
            "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\nattribute = \"packages.x86_64-linux.default\"\n{on}{ssh}"
        );
        let e = parse(Path::new("/etc/t.toml"), &text).unwrap_err();
        assert_eq!(e.key, "prebuilt.enable", "{e}");
        assert!(
            e.to_string()
                .contains("[host] attribute is not the host's toplevel"),
            "{e}"
        );
        // The default attribute written out is fine.
        let text = format!(
            "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\nattribute = 'nixosConfigurations.\"pi1\".config.system.build.toplevel'\n{on}{ssh}"
        );
        assert!(parse(Path::new("/etc/t.toml"), &text).is_ok());
    }
}
