//! Configuration: the TOML file as written ([`raw`]: every field optional, unknown keys
//! rejected), then defaults and bounds ([`bounds`]: they live here and nowhere else), then
//! validated [`Settings`] with real types ([`validate`]). Every error is one line naming
//! the file, the key path and the line ([`locate`]).

pub mod announce;
pub(crate) mod bounds;
pub mod files;
mod host_map;
mod locate;
mod metrics;
mod names;
pub mod prebuilt;
mod raw;
pub mod reboot;
mod suggest;
mod testing;
pub mod trust;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::url::RemoteUrl;
pub use bounds::DurationKey;
pub use metrics::MetricsSettings;
pub use names::{default_attribute, valid_unit_name, validate_branch, validate_host};
use raw::RawConfig;
pub use reboot::{
    Bootloader, FleetLockSettings, RebootPolicy, RebootSettings, UBootSettings, Window,
};
use validate::Validator;

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/homelab-agent/config.toml";
/// Overrides [`DEFAULT_PATH`].
pub const ENV_VAR: &str = "HOMELAB_AGENT_CONFIG";

/// A config error: which file, which key (a path such as `health.checks[0].timeout`),
/// what is wrong with it, and on which line.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}{}{}", file.display(), line.map(|l| format!(" (line {l})")).unwrap_or_default(), hint.as_ref().map(|h| crate::failure::with_hint_line("", h)).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
    /// What to do, when more than "fix the key" can be said: shown on its own line.
    pub hint: Option<String>,
}

/// The validated settings every other module works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    /// A digest of the configuration text: a backoff started by a configuration failure
    /// ends when the configuration changes (deploy/record.rs).
    pub digest: String,
    pub source: SourceSettings,
    pub host: String,
    /// The flake attribute that is built, e.g. `nixosConfigurations."pi1".config.system.build.toplevel`.
    pub attribute: String,
    /// Map mode (`[host] map`): the machine map's path in the repository; the host is
    /// found per run by `pivot`.
    pub host_map: Option<String>,
    pub paths: Paths,
    pub build: BuildSettings,
    pub activation: ActivationSettings,
    pub health: HealthSettings,
    pub run: RunSettings,
    /// `[notify]`: webhooks and hook commands told about recorded runs.
    pub notify: announce::NotifySettings,
    /// `[reboot]` (config/reboot.rs): never, unless a policy is set.
    pub reboot: RebootSettings,
    pub metrics: MetricsSettings,
    /// `[retention] keep`: at most this many profile generations are kept (the newest;
    /// the booted and the default one always). `None`: all (nix.gc decides).
    pub retention_keep: Option<u32>,
    /// `[prebuilt]` (config/prebuilt.rs): systems built elsewhere, off by default.
    pub prebuilt: prebuilt::PrebuiltSettings,
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub url: RemoteUrl,
    pub branch: String,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: PathBuf,
    pub token_file: Option<PathBuf>,
    /// Deadline of one poll or fetch (`[source] timeout`), connection included.
    pub timeout: Duration,
    /// `verify`, its key files, `allow_downgrade` (config/trust.rs).
    pub trust: trust::TrustSettings,
    /// Extra certificate authorities (PEM) trusted for https, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The per-host testing branch (`{host}` already replaced), if watched: its commits
    /// are activated with `switch-to-configuration test` only (deploy/testing.rs).
    pub testing_branch: Option<String>,
    /// `[prebuilt] branch` when `[prebuilt]` is enabled: fetched with the head, so its
    /// manifest comes in the same fetch (the prebuilt module).
    pub prebuilt_branch: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub profile: PathBuf,
    pub current_system: PathBuf,
    pub booted_system: PathBuf,
    pub runtime_dir: PathBuf,
    pub systemctl: PathBuf,
    pub systemd_run: PathBuf,
    pub identity: IdentityPaths,
}

/// Where the identity is read from (`[paths]` in the config; read by `pivot::identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    pub serial_number: PathBuf,
    pub cpuinfo: PathBuf,
    pub net_class: PathBuf,
    pub host_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub timeout: Duration,
    pub max_jobs: Option<u32>,
    pub cores: Option<u32>,
    pub extra_args: Vec<String>,
    /// Refuse a build that would compile more derivations than this here (`None`: no limit).
    pub max_local_builds: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationMode {
    /// `systemd-run` when systemd is PID 1, directly otherwise.
    Auto,
    Direct,
    SystemdRun,
}

#[derive(Debug, Clone)]
pub struct ActivationSettings {
    pub mode: ActivationMode,
    pub timeout: Duration,
    /// `[activation] require_agent_and_ssh` (default true): refuse a system that no longer
    /// runs the agent or sshd (the orphan guard, system/reach.rs).
    pub require_agent_and_ssh: bool,
}

#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub settle: Duration,
    pub timeout: Duration,
    pub interval: Duration,
    pub consecutive: u32,
    pub checks: Vec<Check>,
}

/// One configured health check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub timeout: Duration,
    pub kind: CheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Systemd {
        units: Vec<String>,
        no_failed_units: bool,
    },
    Http {
        url: String,
        expect_status: Option<u16>,
        body_contains: Option<String>,
        insecure_tls: bool,
    },
    Tcp {
        address: String,
    },
    Command {
        command: Vec<String>,
    },
    Remote,
}

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub interval: Duration,
    pub jitter: Duration,
}

// ---- loading ---------------------------------------------------------------------------

/// The config path: `--config`, else `$HOMELAB_AGENT_CONFIG`, else the default.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    match std::env::var_os(ENV_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// Reads, parses and validates the config file.
pub fn load(file: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
        line: None,
        hint: Some(format!(
            "pass --config PATH or set {ENV_VAR}; `homelab-agent config check` validates a file"
        )),
    })?;
    parse(file, &text)
}

/// Parses and validates config text; `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        ConfigError {
            file: file.to_path_buf(),
            key: toml_error_key(text, &e),
            message: match suggest::closest_field(&message) {
                Some(name) => format!("{message} (did you mean `{name}`?)"),
                None => message,
            },
            line: e.span().map(|s| locate::line_at(text, s.start)),
            hint: None,
        }
    })?;
    let mut settings = Validator { file }.settings(raw).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: locate::line_of(text, &e.key),
        key: e.key,
        message: e.message,
        hint: e.hint,
    })?;
    settings.digest = {
        use sha1::{Digest, Sha1};
        Sha1::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    Ok(settings)
}

/// The key path a toml error is about: the key or value at the error's position (from
/// `toml_edit`'s spans), completed by the field serde names when one is missing or unknown.
fn toml_error_key(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "(syntax)".into();
    };
    // Inside a tagged check serde reports the table's position, not the field's: the
    // field it names completes the path.
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| e.message().strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (locate::path_at(text, span.start), named) {
        (Some(path), Some(field)) if path == field || path.ends_with(&format!(".{field}")) => path,
        (Some(path), Some(field)) => format!("{path}.{field}"),
        (Some(path), None) => path,
        (None, Some(field)) => field.to_string(),
        (None, None) => "(syntax)".into(),
    }
}

/// For `config check --json`: what was understood, typed (numbers as numbers, absent as
/// null), with snake_case keys.
pub fn summary_json(s: &Settings) -> serde_json::Value {
    serde_json::json!({
        "source": {
            "url": s.source.url.redacted(),
            "branch": s.source.branch,
            "testing_branch": s.source.testing_branch,
        },
        "host": s.host,
        "host_map": s.host_map,
        "attribute": s.attribute,
        "state_dir": s.paths.state_dir.display().to_string(),
        "health_checks": s.health.checks.len(),
        "reboot": {
            "policy": s.reboot.policy.as_str(),
            "summary": reboot::summary(&s.reboot),
        },
        "prebuilt": {
            "enable": s.prebuilt.enable,
            "branch": s.prebuilt.branch,
            "verify": s.prebuilt.key.as_str(),
            "wait_seconds": s.prebuilt.wait.as_secs(),
        },
    })
}

/// For `config check`: a short summary of what was understood.
pub fn summary(s: &Settings) -> BTreeMap<&'static str, String> {
    let mut summary = BTreeMap::from([
        (
            "source",
            format!("{} (branch {})", s.source.url.redacted(), s.source.branch),
        ),
        ("host", s.host.clone()),
        ("attribute", s.attribute.clone()),
        ("state_dir", s.paths.state_dir.display().to_string()),
        ("health checks", s.health.checks.len().to_string()),
        ("reboot", reboot::summary(&s.reboot)),
    ]);
    if s.prebuilt.enable {
        summary.insert(
            "prebuilt",
            format!(
                "manifests on branch {} signed by {} ({}), waited for up to {}",
                s.prebuilt.branch,
                s.prebuilt.key.as_str(),
                match &s.prebuilt.key {
                    trust::Verify::Ssh {
                        allowed_signers_file: f,
                    } => f.display().to_string(),
                    trust::Verify::Gpg { keyring: f } => f.display().to_string(),
                    trust::Verify::None => String::new(),
                },
                crate::duration::format_duration(s.prebuilt.wait)
            ),
        );
    }
    if let Some(map) = &s.host_map {
        // Map mode: `host` is only this machine's own name until the map names it.
        summary.insert(
            "host map",
            format!("{map} (map mode: the host is found per machine)"),
        );
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Settings, ConfigError> {
        parse(Path::new("/etc/test.toml"), text)
    }

    const MINIMAL: &str =
        "[source]\nurl = \"https://git.example.org/me/homelab.git\"\n[host]\nname = \"pi1\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let s = parse_str(MINIMAL).unwrap();
        assert_eq!(s.source.branch, "main");
        assert_eq!(
            s.attribute,
            "nixosConfigurations.\"pi1\".config.system.build.toplevel"
        );
        assert_eq!(
            s.paths.profile,
            PathBuf::from("/nix/var/nix/profiles/system")
        );
        assert_eq!(s.build.timeout, Duration::from_secs(7200));
        assert_eq!(s.health.settle, Duration::from_secs(10));
        assert_eq!(s.activation.mode, ActivationMode::Auto);
    }

    #[test]
    fn when_required_without_health_checks_is_refused_with_a_hint() {
        let text = format!("{MINIMAL}[reboot]\npolicy = \"when-required\"\n");
        let err = parse_str(&text).unwrap_err();
        // The hint is a field (issue 22), shown as the last line, after the line number.
        assert!(!err.message.contains("hint"), "{}", err.message);
        assert!(
            err.hint
                .as_deref()
                .is_some_and(|h| h.starts_with("add checks")),
            "{err:?}"
        );
        let e = err.to_string();
        assert!(e.contains("reboot.policy"), "{e}");
        assert!(e.contains("needs at least one [[health.checks]]"), "{e}");
        assert!(
            e.lines()
                .last()
                .is_some_and(|l| l.starts_with("hint: add checks")),
            "{e}"
        );
        let with_check =
            format!("{text}[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:22\"\n");
        assert!(parse_str(&with_check).is_ok());
        // "never" with no checks stays valid: nothing reboots.
        assert!(parse_str(&format!("{MINIMAL}[reboot]\npolicy = \"never\"\n")).is_ok());
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases: &[(&str, &str)] = &[
            ("[source]\nurl = \"/r\"\nbranchh = \"main\"\n", "source.branchh"),
            ("[source]\nurl = \"/r\"\n[bogus]\n", "bogus"),
            ("[host]\nname = \"pi1\"\n", "source.url"),
            ("[source]\nurl = 3\n", "source.url"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[health]\nconsecutive = \"two\"\n", "health.consecutive"),
            ("[source\nurl = 3\n", "(syntax)"),
            ("[source]\nurl = \"/r\"\nbranch = \"x&rev=0000\"\n", "source.branch"),
            ("[source]\nurl = \"/r\"\nbranch = \"--upload-pack=touch\"\n", "source.branch"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"a.b\"\n", "host.name"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[build]\ntimeout = \"soon\"\n", "build.timeout"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"rel\"\n", "paths.state_dir"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"command\"\ncommand = []\n", "health.checks[0].command"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"http\"\nurl = \"ftp://x\"\n", "health.checks[0].url"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"tcp\"\naddress = \"nope\"\n", "health.checks[0].address"),
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"tcp\"\naddress = \"a:1\"\nport = 2\n", "health.checks[0].port"),
            ("[source]\nurl = \"ext::sh -c touch% /tmp/pwned\"\n", "source.url"),
            ("[source]\nurl = \"http://git.example.org/r.git\"\ntoken_file = \"/k\"\n", "source.token_file"),
        ];
        for (text, key) in cases {
            let err = parse_str(text).expect_err(text);
            assert_eq!(&err.key, key, "for {text:?}: {err}");
            assert!(err.to_string().starts_with("/etc/test.toml: "), "{err}");
        }
    }

    #[test]
    fn unknown_key_message_names_key_and_line() {
        let err = parse_str("[source]\nurl = \"/r\"\nurll = \"x\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `urll`"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn checks_parse_with_defaults() {
        let text = format!(
            "{MINIMAL}[health]\nsettle = \"0s\"\n[[health.checks]]\ntype = \"http\"\nurl = \"http://127.0.0.1:8080/health\"\n\
             [[health.checks]]\ntype = \"systemd\"\nunits = [\"sshd.service\"]\n[[health.checks]]\ntype = \"remote\"\n"
        );
        let s = parse_str(&text).unwrap();
        assert_eq!(s.health.checks.len(), 3);
        assert_eq!(s.health.checks[0].name, "http http://127.0.0.1:8080/health");
        assert_eq!(s.health.checks[0].timeout, Duration::from_secs(10));
        assert_eq!(s.health.checks[2].kind, CheckKind::Remote);
    }

    #[test]
    fn branch_allow_list() {
        for good in ["main", "release/2026.11", "feature_x-1"] {
            assert!(validate_branch(good).is_ok(), "{good}");
        }
        for bad in [
            "", "-x", "a b", "x&rev=1", "a..b", "a//b", "x.lock", "ü", "a?b", "a#b", "/a", "a/",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_allow_list() {
        for good in ["pi1", "Pi-2", "a_b"] {
            assert!(validate_host(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "\"", "${x}", "-a", "../x", &"a".repeat(64)] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }
}
