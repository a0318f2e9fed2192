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
    pub(super) notify: super::announce::RawNotify,
    pub(super) reboot: super::reboot::RawReboot,
    pub(super) metrics: super::metrics::RawMetrics,
    pub(super) retention: RawRetention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetention {
    pub(super) keep: Option<u32>,
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
    // Trust (config/trust.rs).
    pub(super) verify: Option<String>,
    pub(super) allowed_signers_file: Option<PathBuf>,
    pub(super) keyring_file: Option<PathBuf>,
    pub(super) gpg_home: Option<PathBuf>,
    pub(super) allow_downgrade: Option<bool>,
    /// A PEM file of extra certificate authorities for https (a private CA).
    pub(super) ca_file: Option<PathBuf>,
    /// A second branch whose commits are only ever test-activated ("testing/{host}").
    pub(super) testing_branch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHost {
    pub(super) name: Option<String>,
    pub(super) attribute: Option<String>,
    /// Map mode (the generic image): the machine map's path inside the repository.
    pub(super) map: Option<String>,
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
    // Where map mode reads this machine's identity (see `pivot::identity`).
    pub(super) serial_number: Option<PathBuf>,
    pub(super) cpuinfo: Option<PathBuf>,
    pub(super) net_class: Option<PathBuf>,
    pub(super) host_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBuild {
    pub(super) timeout: Option<String>,
    pub(super) max_jobs: Option<u32>,
    pub(super) cores: Option<u32>,
    pub(super) extra_args: Option<Vec<String>>,
    /// At most this many derivations built on this machine (the rest must be substituted).
    pub(super) max_local_builds: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawActivation {
    pub(super) mode: Option<ActivationMode>,
    pub(super) timeout: Option<String>,
    pub(super) require_agent_and_ssh: Option<bool>,
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

/// One `[[health.checks]]` entry: one flat table (not a serde-tagged enum, whose
/// buffering loses the position of a bad value), checked per `type` by the validator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) name: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) units: Option<Vec<String>>,
    pub(super) no_failed_units: Option<bool>,
    pub(super) url: Option<String>,
    pub(super) expect_status: Option<u16>,
    pub(super) body_contains: Option<String>,
    pub(super) insecure_tls: Option<bool>,
    pub(super) address: Option<String>,
    pub(super) command: Option<Vec<String>>,
}

impl RawCheck {
    /// The fields that are set, by name, except `type`, `name` and `timeout`.
    pub(super) fn specific_fields(&self) -> Vec<&'static str> {
        let set = [
            ("units", self.units.is_some()),
            ("no_failed_units", self.no_failed_units.is_some()),
            ("url", self.url.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("body_contains", self.body_contains.is_some()),
            ("insecure_tls", self.insecure_tls.is_some()),
            ("address", self.address.is_some()),
            ("command", self.command.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRun {
    pub(super) interval: Option<String>,
    pub(super) jitter: Option<String>,
}
