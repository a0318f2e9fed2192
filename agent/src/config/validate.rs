//! From the file as written ([`super::raw`]) to [`Settings`]: defaults, types, and the
//! bounds of [`super::bounds`]. Every error names the key path (`health.checks[0].timeout`);
//! [`super::parse`] adds the line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bounds::{self, DurationKey};
use super::names::{
    default_attribute, valid_unit_name, validate_attribute, validate_branch, validate_host,
};
use super::raw::{RawBuild, RawCheck, RawConfig, RawHealth, RawPaths, RawSource};
use super::*;
use crate::model::url::RemoteUrl;

/// An error about one key: its path, what is wrong, and what to do when more than "fix
/// the key" can be said.
#[derive(Debug)]
pub(super) struct KeyError {
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

pub(super) fn err(key: &str, message: impl Into<String>) -> KeyError {
    KeyError {
        key: key.to_string(),
        message: message.into(),
        hint: None,
    }
}

impl KeyError {
    pub(super) fn with_hint(mut self, hint: impl Into<String>) -> KeyError {
        self.hint = Some(hint.into());
        self
    }
}

type Result<T> = std::result::Result<T, KeyError>;

pub(super) struct Validator<'a> {
    pub file: &'a Path,
}

impl Validator<'_> {
    /// A duration key: parsed as a duration (crate::time), then checked against its bounds.
    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        spec: &DurationKey,
    ) -> Result<Duration> {
        self.duration_or(key, value, spec.default, spec)
    }

    fn duration_or(
        &self,
        key: &str,
        value: Option<&str>,
        default: &str,
        spec: &DurationKey,
    ) -> Result<Duration> {
        let text = value.unwrap_or(default);
        bounds::parse_duration(spec, text).map_err(|m| err(key, m))
    }

    pub(super) fn settings(&self, raw: RawConfig) -> Result<Settings> {
        let mut source = self.source(raw.source)?;
        let host_map = super::host_map::validate(&raw.host)?;
        let host = match raw.host.name {
            Some(name) => name,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
        };
        let host = match host_map {
            // The generic image's own hostname need not be a host of the flake.
            Some(_) if validate_host(&host).is_err() => "unmapped".to_string(),
            _ => host,
        };
        validate_host(&host).map_err(|m| err("host.name", m))?;
        source.testing_branch =
            super::testing::resolve(source.testing_branch.take(), &host, &source.branch)
                .map_err(|m| err("source.testing_branch", m))?;
        let attribute = match raw.host.attribute {
            Some(a) => {
                validate_attribute(&a).map_err(|m| err("host.attribute", m))?;
                a
            }
            None => default_attribute(&host),
        };
        let deployed: Vec<&str> = std::iter::once(source.branch.as_str())
            .chain(source.testing_branch.as_deref())
            .collect();
        let prebuilt = super::prebuilt::validate(
            raw.prebuilt,
            &deployed,
            attribute != default_attribute(&host),
        )?;
        source.prebuilt_branch = prebuilt.enable.then(|| prebuilt.branch.clone());
        let checks_configured = !raw.health.checks.is_empty();
        let reboot = super::reboot::validate(raw.reboot)?;
        // verify-boot is the health checks on the new kernel: without any, every trial
        // boot would "verify" and become the boot default unchecked (issue 19).
        if reboot.policy == super::RebootPolicy::WhenRequired && !checks_configured {
            return Err(err(
                "reboot.policy",
                "\"when-required\" needs at least one [[health.checks]]: they decide whether a reboot into a new kernel is kept",
            )
            .with_hint("add checks that prove this machine works (e.g. type = \"systemd\" with your services, type = \"remote\"), or set policy = \"never\""));
        }
        Ok(Settings {
            file: self.file.to_path_buf(),
            digest: String::new(), // set by `parse`, which has the text
            source,
            host,
            attribute,
            host_map,
            paths: self.paths(raw.paths)?,
            build: self.build(raw.build)?,
            activation: ActivationSettings {
                mode: raw.activation.mode.unwrap_or(ActivationMode::Auto),
                timeout: self.duration(
                    "activation.timeout",
                    raw.activation.timeout.as_deref(),
                    &bounds::ACTIVATION_TIMEOUT,
                )?,
                require_agent_and_ssh: raw.activation.require_agent_and_ssh.unwrap_or(true),
            },
            health: self.health(raw.health)?,
            notify: self.notify(raw.notify)?,
            reboot,
            run: RunSettings {
                interval: self.duration(
                    "run.interval",
                    raw.run.interval.as_deref(),
                    &bounds::RUN_INTERVAL,
                )?,
                jitter: self.duration(
                    "run.jitter",
                    raw.run.jitter.as_deref(),
                    &bounds::RUN_JITTER,
                )?,
            },
            metrics: super::metrics::validate(raw.metrics)?,
            retention_keep: match raw.retention.keep {
                Some(0) => {
                    return Err(err(
                        "retention.keep",
                        "0: at least the generation that runs is kept; give 1 or more (e.g. 3), or leave it out to keep every generation",
                    ))
                }
                keep => keep,
            },
            prebuilt,
        })
    }

    fn source(&self, raw: RawSource) -> Result<SourceSettings> {
        let trust = super::trust::settings(&raw)?;
        let url_text = raw.url.ok_or_else(|| {
            err(
                "source.url",
                "missing: the git URL of your homelab flake repository",
            )
        })?;
        let url = RemoteUrl::parse(&url_text).map_err(|m| err("source.url", m))?;
        let branch = raw.branch.unwrap_or_else(|| "main".into());
        validate_branch(&branch).map_err(|m| err("source.branch", m))?;
        if url.embedded_secret().is_some() && !url.is_encrypted_or_loopback() {
            return Err(err(
                "source.url",
                "refusing to send the token in this URL over plain http:// to a non-loopback host (it would travel in clear); use https://",
            ));
        }
        if raw.token_file.is_some() && !url.is_http() {
            return Err(err(
                "source.token_file",
                "a token is only used with https:// URLs",
            ));
        }
        if raw.token_file.is_some() && !url.is_encrypted_or_loopback() {
            return Err(err(
                "source.token_file",
                "refusing to send a token over plain http:// to a non-loopback host (it would travel in clear); use https://",
            ));
        }
        if raw.ca_file.is_some() && url.scheme() != crate::model::url::Scheme::Https {
            return Err(err(
                "source.ca_file",
                "a certificate authority is only used with https:// URLs",
            ));
        }
        for (key, path) in [
            ("source.ssh_key_file", &raw.ssh_key_file),
            ("source.known_hosts_file", &raw.known_hosts_file),
            ("source.token_file", &raw.token_file),
            ("source.ca_file", &raw.ca_file),
        ] {
            if let Some(p) = path {
                absolute(key, p)?;
            }
        }
        Ok(SourceSettings {
            trust,
            url,
            branch,
            ssh_key_file: raw.ssh_key_file,
            known_hosts_file: raw
                .known_hosts_file
                .unwrap_or_else(|| PathBuf::from("/etc/ssh/ssh_known_hosts")),
            token_file: raw.token_file,
            timeout: self.duration(
                "source.timeout",
                raw.timeout.as_deref(),
                &bounds::SOURCE_TIMEOUT,
            )?,
            ca_file: raw.ca_file,
            testing_branch: raw.testing_branch,
            prebuilt_branch: None, // set with [prebuilt]
        })
    }

    fn paths(&self, raw: RawPaths) -> Result<Paths> {
        let abs = |key: &str, value: Option<PathBuf>, default: &str| -> Result<PathBuf> {
            let p = value.unwrap_or_else(|| PathBuf::from(default));
            absolute(key, &p)?;
            Ok(p)
        };
        let program = |key: &str, value: Option<PathBuf>, default: &str| -> Result<PathBuf> {
            let p = value.unwrap_or_else(|| PathBuf::from(default));
            if p.as_os_str().is_empty() {
                return Err(err(key, "empty: name a program or an absolute path"));
            }
            Ok(p)
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
            systemctl: program("paths.systemctl", raw.systemctl, "systemctl")?,
            systemd_run: program("paths.systemd_run", raw.systemd_run, "systemd-run")?,
            identity: super::IdentityPaths {
                serial_number: abs(
                    "paths.serial_number",
                    raw.serial_number,
                    "/sys/firmware/devicetree/base/serial-number",
                )?,
                cpuinfo: abs("paths.cpuinfo", raw.cpuinfo, "/proc/cpuinfo")?,
                net_class: abs("paths.net_class", raw.net_class, "/sys/class/net")?,
                host_file: abs(
                    "paths.host_file",
                    raw.host_file,
                    "/boot/firmware/homelab-host",
                )?,
            },
        })
    }

    fn build(&self, raw: RawBuild) -> Result<BuildSettings> {
        let timeout = self.duration(
            "build.timeout",
            raw.timeout.as_deref(),
            &bounds::BUILD_TIMEOUT,
        )?;
        if let Some(jobs) = raw.max_jobs {
            bounds::check_number(&bounds::MAX_JOBS, jobs).map_err(|m| {
                err(
                    "build.max_jobs",
                    format!("{m} (the build runs on this machine)"),
                )
            })?;
        }
        if let Some(cores) = raw.cores {
            bounds::check_number(&bounds::CORES, cores)
                .map_err(|m| err("build.cores", format!("{m} (0: all cores)")))?;
        }
        let extra_args = raw.extra_args.unwrap_or_default();
        arguments("build.extra_args", &extra_args, true)?;
        Ok(BuildSettings {
            timeout,
            max_jobs: raw.max_jobs,
            cores: raw.cores,
            extra_args,
            max_local_builds: raw.max_local_builds,
        })
    }

    fn health(&self, raw: RawHealth) -> Result<HealthSettings> {
        let consecutive = raw.consecutive.unwrap_or(1);
        bounds::check_number(&bounds::CONSECUTIVE, consecutive)
            .map_err(|m| err("health.consecutive", m))?;
        let settle = self.duration(
            "health.settle",
            raw.settle.as_deref(),
            &bounds::HEALTH_SETTLE,
        )?;
        let timeout = self.duration(
            "health.timeout",
            raw.timeout.as_deref(),
            &bounds::HEALTH_TIMEOUT,
        )?;
        let interval = self.duration(
            "health.interval",
            raw.interval.as_deref(),
            &bounds::HEALTH_INTERVAL,
        )?;
        if raw.checks.len() > bounds::MAX_CHECKS {
            return Err(err(
                "health.checks",
                format!(
                    "{} checks: at most {} are allowed",
                    raw.checks.len(),
                    bounds::MAX_CHECKS
                ),
            ));
        }
        let checks = raw
            .checks
            .into_iter()
            .enumerate()
            .map(|(i, c)| self.check(i, c))
            .collect::<Result<Vec<_>>>()?;
        Ok(HealthSettings {
            settle,
            timeout,
            interval,
            consecutive,
            checks,
        })
    }

    fn check(&self, index: usize, raw: RawCheck) -> Result<Check> {
        let key = |field: &str| format!("health.checks[{index}].{field}");
        let allowed: &[&str] = match raw.kind.as_str() {
            "systemd" => &["units", "no_failed_units"],
            "http" => &["url", "expect_status", "body_contains", "insecure_tls"],
            "tcp" => &["address"],
            "command" => &["command"],
            "remote" => &[],
            other => {
                return Err(err(
                    &key("type"),
                    format!("unknown variant `{other}`, expected one of `systemd`, `http`, `tcp`, `command`, `remote`"),
                ))
            }
        };
        if let Some(extra) = raw
            .specific_fields()
            .into_iter()
            .find(|f| !allowed.contains(f))
        {
            return Err(err(
                &key(extra),
                format!(
                    "not a field of a check of type \"{}\" (it takes: {})",
                    raw.kind,
                    allowed.join(", ")
                ),
            ));
        }
        let required = |field: &str, value: Option<String>| {
            value.ok_or_else(|| {
                err(
                    &key(field),
                    format!("missing: a check of type \"{}\" needs {field}", raw.kind),
                )
            })
        };
        let (name, default_timeout, kind) = match raw.kind.as_str() {
            "systemd" => {
                let units = raw.units.clone().unwrap_or_default();
                let no_failed_units = raw.no_failed_units.unwrap_or(false);
                if units.is_empty() && !no_failed_units {
                    return Err(err(
                        &key("units"),
                        "list at least one unit, or set no_failed_units = true",
                    ));
                }
                if let Some(bad) = units.iter().find(|u| !valid_unit_name(u)) {
                    return Err(err(
                        &key("units"),
                        format!("{bad:?} is not a systemd unit name"),
                    ));
                }
                let auto = format!("systemd {}", units.join(" "));
                let kind = CheckKind::Systemd {
                    units,
                    no_failed_units,
                };
                (raw.name.clone().unwrap_or(auto), "10s", kind)
            }
            "http" => {
                let url = required("url", raw.url.clone())?;
                http_url(&url).map_err(|m| err(&key("url"), m))?;
                if let Some(s) = raw.expect_status {
                    bounds::check_number(&bounds::HTTP_STATUS, s)
                        .map_err(|m| err(&key("expect_status"), format!("{m} (an HTTP status)")))?;
                }
                if let Some(b) = &raw.body_contains {
                    if b.is_empty() || b.len() > bounds::MAX_ARG_LEN {
                        return Err(err(
                            &key("body_contains"),
                            format!("must be 1 to {} bytes", bounds::MAX_ARG_LEN),
                        ));
                    }
                }
                let auto = format!("http {url}");
                let kind = CheckKind::Http {
                    url,
                    expect_status: raw.expect_status,
                    body_contains: raw.body_contains.clone(),
                    insecure_tls: raw.insecure_tls.unwrap_or(false),
                };
                (raw.name.clone().unwrap_or(auto), "10s", kind)
            }
            "tcp" => {
                let address = required("address", raw.address.clone())?;
                tcp_address(&address).map_err(|m| err(&key("address"), m))?;
                let auto = format!("tcp {address}");
                (
                    raw.name.clone().unwrap_or(auto),
                    "5s",
                    CheckKind::Tcp { address },
                )
            }
            "command" => {
                let command = raw.command.clone().unwrap_or_default();
                if command.first().is_none_or(|p| p.is_empty()) {
                    return Err(err(
                        &key("command"),
                        "must be a non-empty argument vector, e.g. [\"/run/current-system/sw/bin/true\"]",
                    ));
                }
                arguments(&key("command"), &command, false)?;
                let auto = format!("command {}", command[0]);
                (
                    raw.name.clone().unwrap_or(auto),
                    "30s",
                    CheckKind::Command { command },
                )
            }
            _ => (
                raw.name.clone().unwrap_or_else(|| "remote".into()),
                "30s",
                CheckKind::Remote,
            ),
        };
        let timeout = raw.timeout;
        if name.is_empty() || name.len() > 200 {
            return Err(err(&key("name"), "must be 1 to 200 characters"));
        }
        let timeout = self.duration_or(
            &key("timeout"),
            timeout.as_deref(),
            default_timeout,
            &bounds::CHECK_TIMEOUT,
        )?;
        Ok(Check {
            name,
            timeout,
            kind,
        })
    }
}

pub(super) fn absolute(key: &str, p: &Path) -> Result<()> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(err(
            key,
            format!(
                "must be an absolute path, got {:?}",
                p.display().to_string()
            ),
        ))
    }
}

/// An argument vector: no NUL (it cannot reach `execve`), no absurd length. Empty
/// elements are refused in commands, allowed in nix options (`substituters ""`).
fn arguments(key: &str, args: &[String], empty_ok: bool) -> Result<()> {
    for (i, a) in args.iter().enumerate() {
        if a.contains('\0') {
            return Err(err(key, format!("element {i} contains a NUL character")));
        }
        if a.len() > bounds::MAX_ARG_LEN {
            return Err(err(
                key,
                format!("element {i} is longer than {} bytes", bounds::MAX_ARG_LEN),
            ));
        }
        if a.is_empty() && !empty_ok && i == 0 {
            return Err(err(key, "the program (element 0) is empty"));
        }
    }
    Ok(())
}

/// An http(s) URL with a host and a non-zero port.
fn http_url(url: &str) -> std::result::Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if parsed.port() == Some(0) {
        return Err(format!("{url:?}: port 0 is not a port"));
    }
    Ok(())
}

/// `HOST:PORT` with a port from 1 to 65535 (`[::1]:22` for IPv6).
fn tcp_address(address: &str) -> std::result::Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not HOST:PORT"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{address:?}: the port must be a number from 1 to 65535"))?;
    if port == 0 {
        return Err(format!("{address:?}: port 0 is not a port (1 to 65535)"));
    }
    if host.is_empty() || host == "[]" {
        return Err(format!("{address:?} has no host"));
    }
    Ok(())
}
