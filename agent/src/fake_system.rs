//! The fake NixOS used by `homelab-agent demo` and the tests: a nixpkgs-free flake
//! (agent/fixtures/fake-system) whose hosts build in a fraction of a second and whose
//! `switch-to-configuration` logs each call and moves a fake `current-system` link.
//! Writing it from here keeps one copy for the demo and the tests.

use std::io;
use std::path::Path;

pub const FLAKE: &str = include_str!("../fixtures/fake-system/flake.nix");
pub const FLAKE_LOCK: &str = include_str!("../fixtures/fake-system/flake.lock");
pub const BUILD: &str = include_str!("../fixtures/fake-system/build.sh");
pub const STC: &str = include_str!("../fixtures/fake-system/switch-to-configuration.sh");

/// One host of the fake flake. `mode` is baked into its switch-to-configuration (`ok`,
/// `exit:N`, `hang`, `sleep:S`, `kill-agent-once`, `kill-agent-always`,
/// `fail-unless:PATH`, `hook:PATH`, and for the `test` action only `restart-unit:UNIT`,
/// `stop-unit:UNIT`, `kill-unit:UNIT`); `build` is `ok`, `eval-throw`, `build-exit:N` or
/// `build-sleep:S`. The `kill-agent-*` modes SIGKILL the agent that started the
/// activation, found whether it runs the switch directly or through `systemd-run`.
/// `eval-oom` and `build-oom` want gigabytes, in the evaluator or in the builder;
/// `eval-cost:N` makes the evaluation build and force N strings (a known cost: the
/// prebuilt benchmark).
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub mode: String,
    pub build: String,
    /// Anything: changing it changes the system's store path.
    pub content: String,
    pub kernel: String,
    /// Whether the system carries the `healthy` marker file.
    pub healthy: bool,
    /// Whether the system is stamped with the commit it was built from, where
    /// modules/version.nix puts it on a real one (`etc/homelab-agent/configuration-revision`).
    /// Off by default: a stamp makes every commit a new system.
    pub stamp: bool,
    /// Whether the system still runs the agent and sshd, laid out as NixOS does (unit
    /// files and their enabling links under `etc/systemd/system`, the agent's config):
    /// what the orphan guard looks for. On by default.
    pub agent: bool,
    pub sshd: bool,
    /// Packages (`name-version`) in the system's closure, each its own derivation.
    pub packages: Vec<String>,
}

impl Host {
    pub fn new(name: &str) -> Host {
        Host {
            name: name.into(),
            mode: "ok".into(),
            build: "ok".into(),
            content: String::new(),
            kernel: "k1".into(),
            healthy: true,
            stamp: false,
            agent: true,
            sshd: true,
            packages: Vec::new(),
        }
    }
}

/// The Nix system double for this machine, e.g. `x86_64-linux`.
pub fn nix_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

/// Writes the flake files into `dir` (a git work tree), with `fake_root` as the fake
/// machine root (where `run/current-system`, `stc.log` and `boot-default` live).
pub fn write(dir: &Path, fake_root: &Path, hosts: &[Host]) -> io::Result<()> {
    std::fs::write(dir.join("flake.nix"), FLAKE)?;
    std::fs::write(dir.join("flake.lock"), FLAKE_LOCK)?;
    std::fs::write(dir.join("build.sh"), BUILD)?;
    std::fs::write(dir.join("switch-to-configuration.sh"), STC)?;
    std::fs::write(dir.join("hosts.nix"), hosts_nix(fake_root, hosts))
}

fn hosts_nix(fake_root: &Path, hosts: &[Host]) -> String {
    let mut text = format!(
        "{{\n  system = {};\n  fake = {};\n  hosts = {{\n",
        nix_string(&nix_system()),
        nix_string(&fake_root.display().to_string())
    );
    for h in hosts {
        text.push_str(&format!(
            "    {} = {{ mode = {}; build = {}; content = {}; kernel = {}; healthy = {}; stamp = {}; agent = {}; sshd = {}; }};\n",
            nix_string(&h.name),
            nix_string(&h.mode),
            nix_string(&h.build),
            nix_string(&h.content),
            nix_string(&h.kernel),
            h.healthy,
            h.stamp,
            h.agent,
            h.sshd
        ));
        if !h.packages.is_empty() {
            // Into the host's attribute set, just before its closing `};`.
            let list: Vec<String> = h.packages.iter().map(|p| nix_string(p)).collect();
            let at = text.len() - " };\n".len();
            text.insert_str(at, &format!(" packages = [ {} ];", list.join(" ")));
        }
    }
    text.push_str("  };\n}\n");
    text
}

fn nix_string(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace("${", "\\${")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_escapes_strings() {
        let mut h = Host::new("pi1");
        h.content = "a\"b${x}".into();
        let text = hosts_nix(Path::new("/tmp/f"), &[h]);
        assert!(
            text.contains(r#""pi1" = { mode = "ok"; build = "ok"; content = "a\"b\${x}";"#),
            "{text}"
        );
        assert!(text.contains("healthy = true;"));
    }
}
