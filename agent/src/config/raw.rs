//! The config file as written: every field optional, unknown keys rejected. Only
//! [`super::Validator`] turns these into settings.

use std::path::PathBuf;

use serde::Deserialize;

use super::ActivationMode;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) source: RawSource,
    pub(super) host: RawHost,
    pub(super) paths: RawPaths,
    pub(super) build: RawBuild,
    pub(super) activation: RawActivation,
    pub(super) health: RawHealth,
    pub(super) run: RawRun,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSource {
    pub(super) url: Option<String>,
    pub(super) branch: Option<String>,
    pub(super) ssh_key_file: Option<PathBuf>,
    pub(super) known_hosts_file: Option<PathBuf>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHost {
    pub(super) name: Option<String>,
    pub(super) attribute: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPaths {
    pub(super) state_dir: Option<PathBuf>,
    pub(super) profile: Option<PathBuf>,
    pub(super) current_system: Option<PathBuf>,
    pub(super) booted_system: Option<PathBuf>,
    pub(super) runtime_dir: Option<PathBuf>,
    pub(super) systemctl: Option<PathBuf>,
    pub(super) systemd_run: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBuild {
    pub(super) timeout: Option<String>,
    pub(super) max_jobs: Option<u32>,
    pub(super) cores: Option<u32>,
    pub(super) extra_args: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawActivation {
    pub(super) mode: Option<ActivationMode>,
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHealth {
    pub(super) settle: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) consecutive: Option<u32>,
    pub(super) checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawCheck {
    Systemd {
        name: Option<String>,
        timeout: Option<String>,
        #[serde(default)]
        units: Vec<String>,
        #[serde(default)]
        no_failed_units: bool,
    },
    Http {
        name: Option<String>,
        timeout: Option<String>,
        url: String,
        expect_status: Option<u16>,
        body_contains: Option<String>,
        #[serde(default)]
        insecure_tls: bool,
    },
    Tcp {
        name: Option<String>,
        timeout: Option<String>,
        address: String,
    },
    Command {
        name: Option<String>,
        timeout: Option<String>,
        command: Vec<String>,
    },
    Remote {
        name: Option<String>,
        timeout: Option<String>,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRun {
    pub(super) interval: Option<String>,
    pub(super) jitter: Option<String>,
}
