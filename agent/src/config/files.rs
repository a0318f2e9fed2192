//! `config check` on the machine itself: every file the configuration names must exist,
//! be a regular file and be readable by this user (the agent runs as root). Not part of
//! loading the config: a run finds a missing key file itself, as a configuration error,
//! and a config validated elsewhere (the NixOS module's checks) names files that only
//! exist on the machine.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{locate, ConfigError, Settings};
use crate::config::CheckKind;

/// Every referenced file that is missing or unreadable, each as one error with its key
/// path and line.
pub fn check(s: &Settings, text: &str) -> Vec<ConfigError> {
    let mut wanted: Vec<(String, &Path)> = Vec::new();
    if let Some(k) = &s.source.ssh_key_file {
        wanted.push(("source.ssh_key_file".into(), k));
    }
    if let Some(t) = &s.source.token_file {
        wanted.push(("source.token_file".into(), t));
    }
    if let Some(c) = &s.source.ca_file {
        wanted.push(("source.ca_file".into(), c));
    }
    if s.source.url.scheme() == crate::model::url::Scheme::Ssh {
        wanted.push(("source.known_hosts_file".into(), &s.source.known_hosts_file));
    }
    wanted.extend(super::trust::key_file(&s.source.trust));
    for (i, c) in s.health.checks.iter().enumerate() {
        if let CheckKind::Command { command } = &c.kind {
            if let Some(program) = command.first().map(Path::new).filter(|p| p.is_absolute()) {
                wanted.push((format!("health.checks[{i}].command"), program));
            }
        }
    }
    for (i, w) in s.notify.webhooks.iter().enumerate() {
        for (key, file) in [
            ("token_file", &w.token_file),
            ("headers_file", &w.headers_file),
        ] {
            if let Some(f) = file {
                wanted.push((format!("notify.webhooks[{i}].{key}"), f));
            }
        }
    }
    for (i, h) in s.notify.commands.iter().enumerate() {
        if let Some(program) = h.command.first().map(Path::new).filter(|p| p.is_absolute()) {
            wanted.push((format!("notify.commands[{i}].command"), program));
        }
    }
    wanted
        .into_iter()
        .filter_map(|(key, path)| {
            problem(path).map(|message| ConfigError {
                file: s.file.clone(),
                line: locate::line_of(text, &key),
                key,
                message,
            })
        })
        .collect()
}

/// What is wrong with `path` as a file the agent reads, if anything.
fn problem(path: &Path) -> Option<String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("{shown} does not exist"))
        }
        Err(e) => return Some(format!("{shown}: {e}")),
    };
    if !meta.is_file() {
        return Some(format!("{shown} is not a regular file"));
    }
    // O_NONBLOCK: never wait on a FIFO put there instead.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path);
    match opened {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
            "{shown} is not readable by this user (uid {})\nhint: the agent runs as root: `sudo homelab-agent config check`",
            nix::unistd::getuid()
        )),
        Err(e) => Some(format!("{shown}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        super::super::parse(Path::new("/etc/homelab-agent/config.toml"), text).unwrap()
    }

    #[test]
    fn missing_files_are_named_with_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("key");
        std::fs::write(&present, "k").unwrap();
        let text = format!(
            "[source]\nurl = \"ssh://git@example.org/r.git\"\nssh_key_file = \"{}\"\nknown_hosts_file = \"/no/such/known_hosts\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"command\"\ncommand = [\"/no/such/prog\"]\n",
            present.display()
        );
        let errors = check(&settings(&text), &text);
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(
            shown[0],
            "/etc/homelab-agent/config.toml: source.known_hosts_file: /no/such/known_hosts does not exist (line 4)"
        );
        assert_eq!(
            shown[1],
            "/etc/homelab-agent/config.toml: health.checks[0].command: /no/such/prog does not exist (line 9)"
        );
    }

    #[test]
    fn notification_secrets_and_hook_programs_are_checked_too() {
        let text = "[source]\nurl = \"https://example.org/r.git\"\n[host]\nname = \"pi1\"\n[[notify.webhooks]]\nurl = \"https://ntfy.sh/t\"\ntoken_file = \"/no/such/token\"\n[[notify.commands]]\ncommand = [\"/no/such/hook\"]\n";
        let shown: Vec<String> = check(&settings(text), text)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "/etc/homelab-agent/config.toml: notify.webhooks[0].token_file: /no/such/token does not exist (line 7)",
                "/etc/homelab-agent/config.toml: notify.commands[0].command: /no/such/hook does not exist (line 9)"
            ]
        );
    }

    #[test]
    fn a_directory_or_fifo_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, why) in [
            (dir.path(), "not a regular file"),
            (fifo.as_path(), "not a regular file"),
        ] {
            let text = format!(
                "[source]\nurl = \"https://example.org/r.git\"\ntoken_file = \"{}\"\n[host]\nname = \"pi1\"\n",
                path.display()
            );
            let errors = check(&settings(&text), &text);
            assert_eq!(errors.len(), 1);
            assert!(errors[0].to_string().contains(why), "{}", errors[0]);
            assert_eq!(errors[0].key, "source.token_file");
        }
    }
}
