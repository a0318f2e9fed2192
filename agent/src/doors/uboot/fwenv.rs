//! libubootenv's tools (`fw_printenv`, `fw_setenv`, 0.3.2 in Debian 12), and what their
//! exit codes mean.
//!
//! Facts from libubootenv 0.3.2's `src/fw_printenv.c` (checked against the real tools in
//! the tests below and in tests/qemu/run):
//! - A missing or damaged environment (bad CRC, unreadable device) is not an error by
//!   itself: the tools print "Cannot read environment, using default" and load the
//!   *default environment file* (`-f`, else `/etc/u-boot-initial-env`). If that file
//!   exists, `fw_printenv` exits 0 with the defaults (indistinguishable from a valid
//!   environment), and `fw_setenv` *stores* them with the change: an environment holding
//!   whatever that file holds instead of U-Boot's built-in one. That is the danger.
//! - If the default file cannot be opened, both exit with `-EACCES` (status 243) and
//!   write nothing.
//! - A wrong or missing `fw_env.config` exits with what `libuboot_read_config` returned
//!   (`-EBADF` 247, `-EINVAL` 234), never `-EACCES`.
//!
//! So the agent always passes `-f` [`NO_DEFAULT`], a path that can never be opened: an
//! invalid environment is then exit status 243, read or write, and is never replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::failure::{Failure, Kind};
use crate::process::{Cmd, CmdError};

/// A default-environment path that no `fopen` can open (`/dev/null` is not a directory).
pub const NO_DEFAULT: &str = "/dev/null/no-default-environment";
/// `exit(-EACCES)`: the environment is missing or damaged and no default was loaded.
pub const EXIT_NO_VALID_ENV: i32 = 256 - 13;
/// An environment is at most a few hundred KiB (qemu_arm64: 256 KiB; a Pi: 16 KiB).
const MAX_DUMP: u64 = 2 << 20;
const DEADLINE: Duration = Duration::from_secs(30);

/// What `fw_printenv` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Env {
    Valid(BTreeMap<String, String>),
    /// Bad CRC, empty, unreadable: U-Boot boots with its built-in default environment.
    Invalid,
}

/// The two tools and their configuration.
#[derive(Debug, Clone)]
pub struct Tools {
    pub config: PathBuf,
    pub printenv: PathBuf,
    pub setenv: PathBuf,
}

impl Tools {
    pub fn printenv_cmd(&self) -> Cmd {
        Cmd::new(&self.printenv)
            .arg("-c")
            .arg(&self.config)
            .args(["-f", NO_DEFAULT])
            .timeout(DEADLINE)
            .capture_stdout()
            .max_stdout(MAX_DUMP)
    }

    /// `fw_setenv` applying `script` (lines `name=value`), never from a default file
    /// unless `default_env` names one (provisioning a damaged environment on purpose).
    pub fn setenv_script_cmd(&self, script: &Path, default_env: Option<&Path>) -> Cmd {
        let default = default_env.map_or(PathBuf::from(NO_DEFAULT), Path::to_path_buf);
        Cmd::new(&self.setenv)
            .arg("-c")
            .arg(&self.config)
            .arg("-f")
            .arg(default)
            .arg("-s")
            .arg(script)
            .timeout(DEADLINE)
    }

    /// `fw_setenv NAME [VALUE]`: without a value the variable is removed.
    pub fn setenv_cmd(&self, name: &str, value: Option<&str>) -> Cmd {
        let mut cmd = Cmd::new(&self.setenv)
            .arg("-c")
            .arg(&self.config)
            .args(["-f", NO_DEFAULT, name]);
        if let Some(v) = value {
            cmd = cmd.arg(v);
        }
        cmd.timeout(DEADLINE)
    }

    /// Reads the whole environment.
    pub async fn read(&self) -> Result<Env, Failure> {
        let cmd = self.printenv_cmd();
        let done = cmd.run().await.map_err(|e| self.tool_failure(&e))?;
        match done.status.code() {
            Some(0) if done.stdout_truncated => Err(Failure::new(
                Kind::Environment,
                format!(
                    "reading the U-Boot environment named by {}: more than {MAX_DUMP} bytes\nhint: check that fw_env.config names the environment (offset and size), not a whole disk",
                    self.config.display()
                ),
            )),
            Some(0) => Ok(Env::Valid(parse_dump(&done.stdout))),
            Some(EXIT_NO_VALID_ENV) => Ok(Env::Invalid),
            _ => Err(Failure::new(
                Kind::Environment,
                format!(
                    "{} could not use {} ({}){}\nhint: check fw_env.config: `DEVICE OFFSET SIZE`, the device or file it names must exist",
                    self.printenv.display(),
                    self.config.display(),
                    done.status,
                    tail(&done.stderr_tail)
                ),
            )),
        }
    }

    /// Runs a `fw_setenv` command; an invalid environment is refused, never replaced.
    pub async fn write(&self, cmd: &Cmd) -> Result<(), Failure> {
        let done = cmd.run().await.map_err(|e| self.tool_failure(&e))?;
        match done.status.code() {
            Some(0) => Ok(()),
            Some(EXIT_NO_VALID_ENV) => Err(invalid_env(&self.config)),
            _ => Err(Failure::new(
                Kind::Environment,
                format!(
                    "{} failed on {} ({}){}\nhint: check fw_env.config and that the environment's device is writable",
                    self.setenv.display(),
                    self.config.display(),
                    done.status,
                    tail(&done.stderr_tail)
                ),
            )),
        }
    }

    fn tool_failure(&self, e: &CmdError) -> Failure {
        let hint = match e {
            CmdError::NotFound { .. } => {
                "\nhint: install libubootenv's tools (Debian: libubootenv-tool; NixOS: services.homelab-agent.reboot.uboot.enable puts them on the agent's path)"
            }
            _ => "",
        };
        Failure::new(
            Kind::Environment,
            format!("reading the U-Boot environment: {e}{hint}"),
        )
    }
}

/// The refusal for a missing or damaged environment.
pub fn invalid_env(config: &Path) -> Failure {
    Failure::new(
        Kind::Environment,
        format!(
            "the U-Boot environment named by {} is missing or damaged (bad CRC): U-Boot boots with its built-in default, and writing it now would replace that default with a partial environment\nhint: run `homelab-agent bootloader setup` (with --initial-env, U-Boot's `make u-boot-initial-env` output for this board), or `saveenv` once at the U-Boot prompt",
            config.display()
        ),
    )
}

fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {}", t.escape_debug())
    }
}

/// `name=value` lines (fw_printenv's output); a line without `=` is ignored.
pub fn parse_dump(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The lines of a `fw_setenv -s` script (libubootenv: `name=value`, at most 1023 bytes
/// a line: a longer one would be cut and its rest taken as another line).
pub fn script(vars: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    for (k, v) in vars {
        let line = format!("{k}={v}");
        if line.len() > 1023 || line.contains('\n') {
            return Err(format!(
                "the U-Boot variable {k} is longer than libubootenv's 1023-byte line (or holds a newline)"
            ));
        }
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_dump_and_keeps_equals_in_values() {
        let env = parse_dump("bootcmd=run distro_bootcmd\nx=a=b\nnoise\n");
        assert_eq!(env["bootcmd"], "run distro_bootcmd");
        assert_eq!(env["x"], "a=b");
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn a_script_line_too_long_for_libubootenv_is_refused() {
        assert_eq!(script(&[("a", "b")]).unwrap(), "a=b\n");
        let long = "x".repeat(1100);
        let e = script(&[("a", &long)]).unwrap_err();
        assert!(e.contains("1023-byte line"), "{e}");
    }

    #[test]
    fn every_call_names_the_config_and_no_default_file() {
        let t = Tools {
            config: "/etc/fw_env.config".into(),
            printenv: "fw_printenv".into(),
            setenv: "fw_setenv".into(),
        };
        assert_eq!(
            t.printenv_cmd().argv(),
            ["fw_printenv", "-c", "/etc/fw_env.config", "-f", NO_DEFAULT]
        );
        assert_eq!(
            t.setenv_cmd("homelab_trial", None).argv(),
            [
                "fw_setenv",
                "-c",
                "/etc/fw_env.config",
                "-f",
                NO_DEFAULT,
                "homelab_trial"
            ]
        );
        assert_eq!(
            t.setenv_script_cmd(Path::new("/tmp/s"), None).argv()[4..],
            [NO_DEFAULT, "-s", "/tmp/s"]
        );
    }
}
