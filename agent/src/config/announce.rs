//! `[[notify.webhooks]]` and `[[notify.commands]]`: who hears about a recorded run
//! (README "Notifications"). Raw form, settings and their validation in one place.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::bounds::DurationKey;
use super::validate::{err, KeyError, Validator};

/// The outcomes a receiver can ask for: the recorded outcomes of `state::Outcome`
/// plus `needs-attention` (a run whose rollback failed, or that was interrupted).
pub const EVENTS: &[&str] = &[
    "deployed",
    "unchanged",
    "failed",
    "rolled-back",
    "interrupted",
    "needs-attention",
];
/// What a receiver hears when it names nothing.
pub const DEFAULT_EVENTS: &[&str] = &["deployed", "failed", "rolled-back", "needs-attention"];

/// `timeout` of a webhook: short, a receiver never holds up the agent for long.
pub const WEBHOOK_TIMEOUT: DurationKey = DurationKey {
    default: "5s",
    min: Duration::from_millis(100),
    max: Duration::from_secs(60),
};
/// `timeout` of a hook command.
pub const COMMAND_TIMEOUT: DurationKey = DurationKey {
    default: "10s",
    min: Duration::from_millis(100),
    max: Duration::from_secs(120),
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNotify {
    pub(super) webhooks: Vec<RawWebhook>,
    pub(super) commands: Vec<RawHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Option<String>,
    format: Option<String>,
    on: Option<Vec<String>>,
    token_file: Option<PathBuf>,
    headers_file: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    command: Option<Vec<String>>,
    on: Option<Vec<String>>,
    timeout: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    pub webhooks: Vec<Webhook>,
    pub commands: Vec<Hook>,
}

impl NotifySettings {
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.commands.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ntfy's publish API: the message as a plain-text body, Title/Tags/Priority headers.
    Ntfy,
    /// The versioned JSON document of docs/contract-extensions.md.
    Json,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub format: Format,
    pub on: Vec<String>,
    /// Sent as `Authorization: Bearer <token>`; read at send time, never logged.
    pub token_file: Option<PathBuf>,
    /// `Name: value` lines added to the request; read at send time, never logged.
    pub headers_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Hook {
    pub command: Vec<String>,
    pub on: Vec<String>,
    pub timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn notify(&self, raw: RawNotify) -> Result<NotifySettings, KeyError> {
        let webhooks = raw
            .webhooks
            .into_iter()
            .enumerate()
            .map(|(i, w)| self.webhook(&format!("notify.webhooks[{i}]"), w))
            .collect::<Result<_, _>>()?;
        let commands = raw
            .commands
            .into_iter()
            .enumerate()
            .map(|(i, h)| self.hook(&format!("notify.commands[{i}]"), h))
            .collect::<Result<_, _>>()?;
        Ok(NotifySettings { webhooks, commands })
    }

    fn webhook(&self, key: &str, raw: RawWebhook) -> Result<Webhook, KeyError> {
        let url = raw.url.ok_or_else(|| {
            err(
                &format!("{key}.url"),
                "missing: the http:// or https:// address to POST to",
            )
        })?;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(err(
                &format!("{key}.url"),
                format!("{url:?} is not an http:// or https:// URL with a host"),
            ));
        }
        if rest.is_some_and(|r| r.split('/').next().unwrap_or_default().contains('@')) {
            return Err(err(
                &format!("{key}.url"),
                "credentials in the URL would be logged and shown; put the token in token_file or the header in headers_file",
            ));
        }
        let format = match raw.format.as_deref() {
            None | Some("ntfy") => Format::Ntfy,
            Some("json") => Format::Json,
            Some(other) => {
                return Err(err(
                    &format!("{key}.format"),
                    format!("unknown format {other:?}: use \"ntfy\" or \"json\""),
                ))
            }
        };
        Ok(Webhook {
            url,
            format,
            on: self.events(&format!("{key}.on"), raw.on)?,
            token_file: raw.token_file,
            headers_file: raw.headers_file,
            timeout: self.duration(
                &format!("{key}.timeout"),
                raw.timeout.as_deref(),
                &WEBHOOK_TIMEOUT,
            )?,
        })
    }

    fn hook(&self, key: &str, raw: RawHook) -> Result<Hook, KeyError> {
        let command = raw.command.unwrap_or_default();
        match command.first() {
            None => {
                return Err(err(
                    &format!("{key}.command"),
                    "missing: the program and its arguments, as a list (e.g. [\"/run/current-system/sw/bin/logger\", \"deployed\"])",
                ))
            }
            Some(p) if p.is_empty() => {
                return Err(err(&format!("{key}.command"), "the program name is empty"))
            }
            Some(_) => {}
        }
        Ok(Hook {
            command,
            on: self.events(&format!("{key}.on"), raw.on)?,
            timeout: self.duration(
                &format!("{key}.timeout"),
                raw.timeout.as_deref(),
                &COMMAND_TIMEOUT,
            )?,
        })
    }

    fn events(&self, key: &str, on: Option<Vec<String>>) -> Result<Vec<String>, KeyError> {
        let Some(on) = on else {
            return Ok(DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect());
        };
        if on.is_empty() {
            return Err(err(
                key,
                format!(
                    "empty: name at least one of {}, or drop the key for the default",
                    EVENTS.join(", ")
                ),
            ));
        }
        if let Some(bad) = on.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(err(
                key,
                format!("unknown outcome {bad:?}: one of {}", EVENTS.join(", ")),
            ));
        }
        Ok(on)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "[source]\nurl = \"https://example.org/r.git\"\n[host]\nname = \"pi1\"\n";

    fn parse(extra: &str) -> Result<NotifySettings, super::super::ConfigError> {
        super::super::parse(Path::new("/c.toml"), &format!("{BASE}{extra}")).map(|s| s.notify)
    }

    fn error(extra: &str) -> String {
        let e = parse(extra).unwrap_err();
        format!("{} {}", e.key, e.message)
    }

    #[test]
    fn receivers_get_defaults() {
        let n = parse(
            "[[notify.webhooks]]\nurl = \"https://ntfy.sh/t\"\n[[notify.commands]]\ncommand = [\"/bin/true\"]\n",
        )
        .unwrap();
        assert_eq!(n.webhooks[0].format, Format::Ntfy);
        assert_eq!(n.webhooks[0].timeout, Duration::from_secs(5));
        assert_eq!(n.webhooks[0].on, DEFAULT_EVENTS);
        assert_eq!(n.commands[0].timeout, Duration::from_secs(10));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_receivers_are_named_with_their_key() {
        assert_eq!(
            error("[[notify.webhooks]]\nurl = \"https://x/\"\non = [\"deploy\"]\n"),
            "notify.webhooks[0].on unknown outcome \"deploy\": one of deployed, unchanged, failed, rolled-back, interrupted, needs-attention"
        );
        assert!(
            error("[[notify.webhooks]]\nurl = \"https://x/\"\nformat = \"xml\"\n")
                .starts_with("notify.webhooks[0].format unknown format \"xml\"")
        );
        assert!(error("[[notify.webhooks]]\nurl = \"ftp://x/\"\n")
            .starts_with("notify.webhooks[0].url \"ftp://x/\" is not an http:// or https:// URL"));
        assert!(error("[[notify.webhooks]]\nurl = \"https://u:pw@x/\"\n")
            .starts_with("notify.webhooks[0].url credentials in the URL"));
        assert!(
            error("[[notify.webhooks]]\nurl = \"https://x/\"\ntimeout = \"10m\"\n")
                .starts_with("notify.webhooks[0].timeout")
        );
        assert!(error("[[notify.commands]]\ncommand = []\n")
            .starts_with("notify.commands[0].command missing"));
        assert!(
            error("[[notify.commands]]\ncommand = [\"/bin/true\"]\non = []\n")
                .starts_with("notify.commands[0].on empty")
        );
    }
}
