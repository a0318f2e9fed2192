//! Configuration: the TOML file as written (every field optional, unknown keys rejected),
//! then defaults (they live here and nowhere else), then validated [`Settings`] with real
//! types. Every error names the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::source::url::RemoteUrl;

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/homelab-agent/config.toml";
/// Overrides [`DEFAULT_PATH`].
pub const ENV_VAR: &str = "HOMELAB_AGENT_CONFIG";

/// A config error: which file, which key, what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

/// The validated settings every other module works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    pub source: SourceSettings,
    pub host: String,
    /// The flake attribute that is built, e.g. `nixosConfigurations."pi1".config.system.build.toplevel`.
    pub attribute: String,
    pub paths: Paths,
    pub build: BuildSettings,
    pub activation: ActivationSettings,
    pub health: HealthSettings,
    pub run: RunSettings,
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub url: RemoteUrl,
    pub branch: String,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: PathBuf,
    pub token_file: Option<PathBuf>,
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
}

#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub timeout: Duration,
    pub max_jobs: Option<u32>,
    pub cores: Option<u32>,
    pub extra_args: Vec<String>,
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

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    source: RawSource,
    host: RawHost,
    paths: RawPaths,
    build: RawBuild,
    activation: RawActivation,
    health: RawHealth,
    run: RawRun,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSource {
    url: Option<String>,
    branch: Option<String>,
    ssh_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHost {
    name: Option<String>,
    attribute: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPaths {
    state_dir: Option<PathBuf>,
    profile: Option<PathBuf>,
    current_system: Option<PathBuf>,
    booted_system: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    systemctl: Option<PathBuf>,
    systemd_run: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBuild {
    timeout: Option<String>,
    max_jobs: Option<u32>,
    cores: Option<u32>,
    extra_args: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawActivation {
    mode: Option<ActivationMode>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealth {
    settle: Option<String>,
    timeout: Option<String>,
    interval: Option<String>,
    consecutive: Option<u32>,
    checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawCheck {
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
struct RawRun {
    interval: Option<String>,
    jitter: Option<String>,
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
        message: format!(
            "cannot read: {e}\nhint: pass --config PATH or set {ENV_VAR}; `homelab-agent config check` validates a file"
        ),
    })?;
    parse(file, &text)
}

/// Parses and validates config text; `file` is only used in error messages.
pub fn parse(file: &Path, text: &str) -> Result<Settings, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: toml_error_key(text, &e),
        message: e.message().to_string() + &toml_error_location(text, &e),
    })?;
    Validator { file }.settings(raw)
}

/// The key a toml error is about: the field serde names in backticks, prefixed with the
/// `[table]` it sits in (found from the error's position).
fn toml_error_key(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message();
    let Some(span) = e.span() else {
        return "(syntax)".into();
    };
    let field = match msg.split('`').nth(1) {
        Some(k) if msg.contains("unknown field") || msg.contains("missing field") => k.to_string(),
        // A bad value: the key is what stands before `=` on the value's line.
        _ => {
            let line_start = text[..span.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            match text[line_start..].split_once('=') {
                Some((key, _)) if !key.contains('\n') && !key.trim().is_empty() => {
                    key.trim().to_string()
                }
                _ => return "(syntax)".into(),
            }
        }
    };
    let field = field.as_str();
    // Errors inside an array-of-tables entry point at its `[[header]]` line: include it.
    let line_end = text[span.start.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.start + i);
    let table = text[..line_end]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match table {
        Some(t) if t != field => format!("{t}.{field}"),
        _ => field.to_string(),
    }
}

fn toml_error_location(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

struct Validator<'a> {
    file: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let text = value.unwrap_or(default);
        humantime::parse_duration(text).map_err(|e| {
            self.err(
                key,
                format!("invalid duration {text:?}: {e} (examples: \"30s\", \"5m\", \"2h\")"),
            )
        })
    }

    fn settings(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let source = self.source(raw.source)?;
        let host = match raw.host.name {
            Some(name) => name,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
        };
        validate_host(&host).map_err(|m| self.err("host.name", m))?;
        let attribute = match raw.host.attribute {
            Some(a) => {
                validate_attribute(&a).map_err(|m| self.err("host.attribute", m))?;
                a
            }
            None => default_attribute(&host),
        };
        Ok(Settings {
            file: self.file.to_path_buf(),
            source,
            host,
            attribute,
            paths: self.paths(raw.paths)?,
            build: self.build(raw.build)?,
            activation: ActivationSettings {
                mode: raw.activation.mode.unwrap_or(ActivationMode::Auto),
                timeout: self.duration(
                    "activation.timeout",
                    raw.activation.timeout.as_deref(),
                    "15m",
                )?,
            },
            health: self.health(raw.health)?,
            run: RunSettings {
                interval: self.duration("run.interval", raw.run.interval.as_deref(), "5m")?,
                jitter: self.duration("run.jitter", raw.run.jitter.as_deref(), "30s")?,
            },
        })
    }

    fn source(&self, raw: RawSource) -> Result<SourceSettings, ConfigError> {
        let url_text = raw.url.ok_or_else(|| {
            self.err(
                "source.url",
                "missing: the git URL of your homelab flake repository",
            )
        })?;
        let url = RemoteUrl::parse(&url_text).map_err(|m| self.err("source.url", m))?;
        let branch = raw.branch.unwrap_or_else(|| "main".into());
        validate_branch(&branch).map_err(|m| self.err("source.branch", m))?;
        if raw.token_file.is_some() && !url.is_http() {
            return Err(self.err(
                "source.token_file",
                "a token is only used with https:// URLs",
            ));
        }
        if raw.token_file.is_some() && !url.is_encrypted_or_loopback() {
            return Err(self.err(
                "source.token_file",
                "refusing to send a token over plain http:// to a non-loopback host; use https://",
            ));
        }
        Ok(SourceSettings {
            url,
            branch,
            ssh_key_file: raw.ssh_key_file,
            known_hosts_file: raw
                .known_hosts_file
                .unwrap_or_else(|| PathBuf::from("/etc/ssh/ssh_known_hosts")),
            token_file: raw.token_file,
        })
    }

    fn paths(&self, raw: RawPaths) -> Result<Paths, ConfigError> {
        let abs =
            |key: &str, value: Option<PathBuf>, default: &str| -> Result<PathBuf, ConfigError> {
                let p = value.unwrap_or_else(|| PathBuf::from(default));
                if p.is_absolute() {
                    Ok(p)
                } else {
                    Err(self.err(
                        key,
                        format!(
                            "must be an absolute path, got {:?}",
                            p.display().to_string()
                        ),
                    ))
                }
            };
        Ok(Paths {
            state_dir: abs("paths.state_dir", raw.state_dir, "/var/lib/homelab-agent")?,
            profile: abs("paths.profile", raw.profile, "/nix/var/nix/profiles/system")?,
            current_system: abs(
                "paths.current_system",
                raw.current_system,
                "/run/current-system",
            )?,
            booted_system: abs(
                "paths.booted_system",
                raw.booted_system,
                "/run/booted-system",
            )?,
            runtime_dir: abs("paths.runtime_dir", raw.runtime_dir, "/run/homelab-agent")?,
            systemctl: raw.systemctl.unwrap_or_else(|| PathBuf::from("systemctl")),
            systemd_run: raw
                .systemd_run
                .unwrap_or_else(|| PathBuf::from("systemd-run")),
        })
    }

    fn build(&self, raw: RawBuild) -> Result<BuildSettings, ConfigError> {
        let timeout = self.duration("build.timeout", raw.timeout.as_deref(), "2h")?;
        if timeout.is_zero() {
            return Err(self.err("build.timeout", "must be more than zero"));
        }
        if raw.max_jobs == Some(0) {
            return Err(self.err(
                "build.max_jobs",
                "must be at least 1 (the build runs on this machine)",
            ));
        }
        Ok(BuildSettings {
            timeout,
            max_jobs: raw.max_jobs,
            cores: raw.cores,
            extra_args: raw.extra_args.unwrap_or_default(),
        })
    }

    fn health(&self, raw: RawHealth) -> Result<HealthSettings, ConfigError> {
        let consecutive = raw.consecutive.unwrap_or(1);
        if consecutive == 0 {
            return Err(self.err("health.consecutive", "must be at least 1"));
        }
        let checks = raw
            .checks
            .into_iter()
            .enumerate()
            .map(|(i, c)| self.check(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HealthSettings {
            settle: self.duration("health.settle", raw.settle.as_deref(), "10s")?,
            timeout: self.duration("health.timeout", raw.timeout.as_deref(), "5m")?,
            interval: self.duration("health.interval", raw.interval.as_deref(), "5s")?,
            consecutive,
            checks,
        })
    }

    fn check(&self, index: usize, raw: RawCheck) -> Result<Check, ConfigError> {
        let key = |field: &str| format!("health.checks[{index}].{field}");
        let (name, timeout, default_timeout, kind) = match raw {
            RawCheck::Systemd {
                name,
                timeout,
                units,
                no_failed_units,
            } => {
                if units.is_empty() && !no_failed_units {
                    return Err(self.err(
                        &key("units"),
                        "list at least one unit, or set no_failed_units = true",
                    ));
                }
                if let Some(bad) = units.iter().find(|u| !valid_unit_name(u)) {
                    return Err(
                        self.err(&key("units"), format!("{bad:?} is not a systemd unit name"))
                    );
                }
                let auto = format!("systemd {}", units.join(" "));
                (
                    name.unwrap_or(auto),
                    timeout,
                    "10s",
                    CheckKind::Systemd {
                        units,
                        no_failed_units,
                    },
                )
            }
            RawCheck::Http {
                name,
                timeout,
                url,
                expect_status,
                body_contains,
                insecure_tls,
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    return Err(self.err(
                        &key("url"),
                        format!("{url:?} is not an http:// or https:// URL"),
                    ));
                }
                if let Some(s) = expect_status {
                    if !(100..=599).contains(&s) {
                        return Err(
                            self.err(&key("expect_status"), format!("{s} is not an HTTP status"))
                        );
                    }
                }
                let auto = format!("http {url}");
                let kind = CheckKind::Http {
                    url,
                    expect_status,
                    body_contains,
                    insecure_tls,
                };
                (name.unwrap_or(auto), timeout, "10s", kind)
            }
            RawCheck::Tcp {
                name,
                timeout,
                address,
            } => {
                if address
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(self.err(&key("address"), format!("{address:?} is not HOST:PORT")));
                }
                (
                    name.unwrap_or(format!("tcp {address}")),
                    timeout,
                    "5s",
                    CheckKind::Tcp { address },
                )
            }
            RawCheck::Command {
                name,
                timeout,
                command,
            } => {
                if command.first().is_none_or(|p| p.is_empty()) {
                    return Err(self.err(&key("command"), "must be a non-empty argument vector, e.g. [\"/run/current-system/sw/bin/true\"]"));
                }
                let auto = format!("command {}", command[0]);
                (
                    name.unwrap_or(auto),
                    timeout,
                    "30s",
                    CheckKind::Command { command },
                )
            }
            RawCheck::Remote { name, timeout } => (
                name.unwrap_or_else(|| "remote".into()),
                timeout,
                "30s",
                CheckKind::Remote,
            ),
        };
        let timeout = self.duration(&key("timeout"), timeout.as_deref(), default_timeout)?;
        Ok(Check {
            name,
            timeout,
            kind,
        })
    }
}

/// `nixosConfigurations."<host>".config.system.build.toplevel`, the attribute quoted so a
/// dotted name can never be read as a path.
pub fn default_attribute(host: &str) -> String {
    format!("nixosConfigurations.\"{host}\".config.system.build.toplevel")
}

/// Branch names end up in git refspecs and argument vectors: a strict allow-list, far
/// narrower than what git accepts (git accepts `x&rev=…` and `--upload-pack=…`).
pub fn validate_branch(branch: &str) -> Result<(), String> {
    let ok_chars = branch
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    let reason = if branch.is_empty() || branch.len() > 100 {
        Some("must be 1 to 100 characters")
    } else if !ok_chars {
        Some("may contain only letters, digits, '.', '_', '/' and '-'")
    } else if branch.starts_with(['-', '/', '.']) || branch.ends_with(['/', '.']) {
        Some("must not start with '-', '/' or '.', nor end with '/' or '.'")
    } else if branch.contains("..") || branch.contains("//") || branch.ends_with(".lock") {
        Some("must not contain '..' or '//', nor end with '.lock'")
    } else {
        None
    };
    match reason {
        Some(r) => Err(format!("invalid branch name {branch:?}: {r}")),
        None => Ok(()),
    }
}

/// Host names end up in a flake attribute path: letters, digits, '-' and '_' only.
pub fn validate_host(host: &str) -> Result<(), String> {
    let mut chars = host.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if first_ok && rest_ok && host.len() <= 63 {
        Ok(())
    } else if host.is_empty() {
        Err("empty: set [host] name (the machine's hostname could not be read)".into())
    } else {
        Err(format!(
            "invalid host name {host:?}: 1 to 63 letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

fn validate_attribute(attr: &str) -> Result<(), String> {
    if attr.is_empty()
        || attr
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#' || c == '?')
    {
        Err(format!(
            "invalid flake attribute {attr:?}: no spaces, '#' or '?'"
        ))
    } else {
        Ok(())
    }
}

fn valid_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && !unit.starts_with('-')
        && unit.len() <= 256
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
}

/// For `config check`: a short summary of what was understood.
pub fn summary(s: &Settings) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            "source",
            format!("{} (branch {})", s.source.url.redacted(), s.source.branch),
        ),
        ("host", s.host.clone()),
        ("attribute", s.attribute.clone()),
        ("state_dir", s.paths.state_dir.display().to_string()),
        ("health checks", s.health.checks.len().to_string()),
    ])
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
            ("[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"tcp\"\naddress = \"a:1\"\nport = 2\n", "health.checks.port"),
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
