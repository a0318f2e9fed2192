//! The one-shot trial on U-Boot + extlinux (the Pi image; docs/reboots-uboot.md).
//!
//! U-Boot's environment holds a boot command provisioned once ([`setup`]): when the flag
//! `homelab_trial` is set, it clears it and saves the environment, then boots a one-entry
//! extlinux file (`extlinux/homelab-trial.conf`); otherwise, and after any reset, U-Boot's
//! own boot command boots `extlinux.conf`'s default, the last verified generation. The
//! agent writes the trial's files and the flag with libubootenv's tools ([`fwenv`]).
//!
//! | file              | owns                                                        |
//! |-------------------|-------------------------------------------------------------|
//! | `uboot.rs`        | [`UBoot`] (the door), provisioning, `bootloader show`       |
//! | `uboot/layout.rs` | names, the trial entry, the boot command (pure)             |
//! | `uboot/fwenv.rs`  | `fw_printenv` / `fw_setenv` and their exit codes            |
//! | `uboot/files.rs`  | copying the trial's files onto the boot partition           |
//! | `uboot/cli.rs`    | `homelab-agent bootloader setup | arm | disarm | show`      |

pub mod cli;
pub mod files;
pub mod fwenv;
pub mod layout;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::UBootSettings;
use crate::doors::trial::TrialBoot;
use crate::doors::Fut;
use crate::failure::{Failure, Kind};

use fwenv::{Env, Tools};
use layout::{Sysboot, BOOTCMD, BOOT_VAR, DEFAULT_VAR, FLAG, SAVE_VAR, TRIAL_CONF};

/// fw_env.config is a few lines.
const MAX_CONFIG: u64 = 64 << 10;
/// A `u-boot-initial-env` file is a few KiB.
const MAX_INITIAL_ENV: u64 = 1 << 20;

pub struct UBoot {
    settings: UBootSettings,
    tools: Tools,
}

impl UBoot {
    pub fn new(settings: UBootSettings) -> UBoot {
        let tools = Tools {
            config: settings.fw_env_config.clone(),
            printenv: settings.fw_printenv.clone(),
            setenv: settings.fw_setenv.clone(),
        };
        UBoot { settings, tools }
    }

    pub fn settings(&self) -> &UBootSettings {
        &self.settings
    }

    /// fw_env.config present, readable, naming something; the tools there.
    fn check_config(&self) -> Result<(), Failure> {
        let path = &self.settings.fw_env_config;
        let text = read_small(path, MAX_CONFIG).map_err(|e| {
            Failure::new(
                Kind::Environment,
                format!(
                    "reading libubootenv's configuration {}: {e}\nhint: enable services.homelab-agent.reboot.uboot (it writes /etc/fw_env.config), or write one line `DEVICE OFFSET SIZE` naming U-Boot's environment (on a Pi: /boot/firmware/uboot.env 0x0 0x4000)",
                    path.display()
                ),
            )
        })?;
        let named = text
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with('#'));
        if !named {
            return Err(Failure::new(
                Kind::Environment,
                format!(
                    "libubootenv's configuration {} names no environment\nhint: write one line `DEVICE OFFSET SIZE` (on a Pi: /boot/firmware/uboot.env 0x0 0x4000)",
                    path.display()
                ),
            ));
        }
        // libubootenv refuses a configuration naming a missing file ("Configuration file
        // wrong or corrupted"): say what it really is.
        if let Some((device, _)) = first_device(&text) {
            if !device.exists() {
                return Err(Failure::new(
                    Kind::Environment,
                    format!(
                        "U-Boot's environment {} (named by {}) does not exist: U-Boot has never saved its environment there\nhint: run `homelab-agent bootloader setup --initial-env FILE` (U-Boot's `make u-boot-initial-env` output), or `saveenv` once at the U-Boot prompt",
                        device.display(),
                        path.display()
                    ),
                ));
            }
        }
        for tool in [&self.settings.fw_printenv, &self.settings.fw_setenv] {
            if find_program(tool).is_none() {
                return Err(Failure::new(
                    Kind::Environment,
                    format!(
                        "{} not found\nhint: install libubootenv's tools (Debian: libubootenv-tool; NixOS: services.homelab-agent.reboot.uboot.enable puts them on the agent's path)",
                        tool.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The environment, valid; otherwise the refusal.
    async fn valid_env(&self) -> Result<BTreeMap<String, String>, Failure> {
        match self.tools.read().await? {
            Env::Valid(vars) => Ok(vars),
            Env::Invalid => Err(fwenv::invalid_env(&self.settings.fw_env_config)),
        }
    }

    async fn ready_now(&self) -> Result<(), Failure> {
        self.check_config()?;
        let vars = self.valid_env().await?;
        provisioned(&vars, &self.settings.fw_env_config)?;
        let conf = self.settings.boot_dir.join("extlinux/extlinux.conf");
        if !conf.is_file() {
            return Err(Failure::new(
                Kind::Environment,
                format!(
                    "no {}: the trial is written beside NixOS's extlinux.conf\nhint: set the boot directory to where boot.loader.generic-extlinux-compatible writes (/boot)",
                    conf.display()
                ),
            ));
        }
        Ok(())
    }

    async fn flag_set(&self) -> Result<bool, Failure> {
        Ok(match self.tools.read().await? {
            Env::Valid(vars) => vars.get(FLAG).is_some_and(|v| !v.is_empty()),
            // U-Boot then runs its built-in environment: no boot command of ours, no flag.
            Env::Invalid => false,
        })
    }

    async fn arm_now(&self, system: &Path) -> Result<(), Failure> {
        self.ready_now().await?;
        // A flag left from an earlier trial must not boot files being replaced.
        if self.flag_set().await? {
            self.tools.write(&self.tools.setenv_cmd(FLAG, None)).await?;
        }
        let boot_dir = self.settings.boot_dir.clone();
        let system = system.to_path_buf();
        let entry = tokio::task::spawn_blocking(move || files::lay_out(&boot_dir, &system))
            .await
            .map_err(|e| Failure::new(Kind::Environment, format!("laying out the trial: {e}")))??;
        let conf = layout::trial_conf(&entry, self.settings.panic_seconds);
        let path = self.settings.boot_dir.join(TRIAL_CONF);
        crate::state::write_atomic(&path, conf.as_bytes())
            .map_err(|e| files::io_failure(&e, "writing", &path))?;
        // Only now: the flag, the one thing that makes U-Boot boot the trial.
        self.tools
            .write(&self.tools.setenv_cmd(FLAG, Some("1")))
            .await?;
        if !self.flag_set().await? {
            return Err(Failure::new(
                Kind::Environment,
                format!(
                    "fw_setenv {FLAG} 1 succeeded but {} does not show it\nhint: check that fw_env.config names the environment U-Boot reads (`homelab-agent bootloader show`)",
                    self.settings.fw_printenv.display()
                ),
            ));
        }
        log::info!(
            "armed a one-shot trial of {} ({})",
            entry.system,
            path.display()
        );
        Ok(())
    }

    async fn disarm_now(&self) -> Result<(), Failure> {
        match self.check_config() {
            Ok(()) => {
                if self.flag_set().await? {
                    self.tools.write(&self.tools.setenv_cmd(FLAG, None)).await?;
                }
            }
            // No environment file: U-Boot runs its built-in one, which holds no flag.
            Err(_) if self.env_file_missing() => {}
            Err(e) => return Err(e),
        }
        let boot_dir = self.settings.boot_dir.clone();
        tokio::task::spawn_blocking(move || files::remove_trial(&boot_dir))
            .await
            .map_err(|e| Failure::new(Kind::Environment, format!("removing the trial: {e}")))?
    }

    /// Provisions the boot command (`bootloader setup`). A valid environment keeps every
    /// variable it has and gains ours; a missing or damaged one is written only from
    /// `initial_env` (U-Boot's own default environment for this build), never from
    /// nothing: an environment with a valid CRC replaces U-Boot's built-in one entirely.
    /// `save` is how the boot command saves the environment (`saveenv`).
    pub async fn setup(
        &self,
        sysboot: &Sysboot,
        save: &str,
        initial_env: Option<&Path>,
    ) -> Result<String, Failure> {
        sysboot
            .validate()
            .map_err(|e| Failure::new(Kind::Configuration, e))?;
        if save.trim().is_empty() || save.chars().any(char::is_control) {
            return Err(Failure::new(
                Kind::Configuration,
                "--save-command must be one line of U-Boot commands (default: saveenv)",
            ));
        }
        if initial_env.is_some() {
            self.create_missing_env()?;
        }
        self.check_config()?;
        let (base, default_env) = match self.tools.read().await? {
            Env::Valid(vars) => (vars, None),
            Env::Invalid => match initial_env {
                None => return Err(fwenv::invalid_env(&self.settings.fw_env_config)),
                Some(file) => (read_initial_env(file)?, Some(file)),
            },
        };
        let original = match base.get("bootcmd").map(String::as_str) {
            Some(BOOTCMD) => base.get(DEFAULT_VAR).cloned().ok_or_else(|| {
                Failure::new(
                    Kind::Environment,
                    format!("bootcmd is `{BOOTCMD}` but {DEFAULT_VAR} is missing: U-Boot's own boot command is lost\nhint: `fw_setenv bootcmd 'run distro_bootcmd'` (U-Boot's default on a Pi), then run setup again"),
                )
            })?,
            Some(cmd) if !cmd.trim().is_empty() => cmd.to_string(),
            _ => {
                return Err(Failure::new(
                    Kind::Environment,
                    "the U-Boot environment has no bootcmd: nothing boots the default to fall back to\nhint: give --initial-env with U-Boot's default environment for this board",
                ))
            }
        };
        let command = sysboot.boot_command();
        let script = fwenv::script(&[
            (DEFAULT_VAR, &original),
            (SAVE_VAR, save),
            (BOOT_VAR, &command),
            ("bootcmd", BOOTCMD),
        ])
        .map_err(|e| Failure::new(Kind::Configuration, e))?;
        let dir = tempfile::tempdir()
            .map_err(|e| files::io_failure(&e, "creating", &std::env::temp_dir()))?;
        let file = dir.path().join("homelab-boot.env");
        std::fs::write(&file, script).map_err(|e| files::io_failure(&e, "writing", &file))?;
        self.tools
            .write(&self.tools.setenv_script_cmd(&file, default_env))
            .await?;
        let vars = self.valid_env().await?;
        provisioned(&vars, &self.settings.fw_env_config)?;
        if vars.get(BOOT_VAR) != Some(&command) {
            return Err(Failure::new(
                Kind::Environment,
                format!("{BOOT_VAR} did not read back as written\nhint: check that fw_env.config names the environment U-Boot reads"),
            ));
        }
        Ok(format!(
            "{}: bootcmd={BOOTCMD}; {BOOT_VAR}={command}; {DEFAULT_VAR}={}{}",
            self.settings.fw_env_config.display(),
            original.escape_debug(),
            if default_env.is_some() {
                " (the damaged environment was replaced from --initial-env)"
            } else {
                ""
            }
        ))
    }

    /// A Pi that never ran `saveenv` has no `uboot.env` yet: libubootenv cannot create
    /// it, so provisioning from `--initial-env` creates it (zeros: an invalid
    /// environment, which the provisioning then writes whole), sized as fw_env.config says.
    fn create_missing_env(&self) -> Result<(), Failure> {
        let text = read_small(&self.settings.fw_env_config, MAX_CONFIG)
            .map_err(|e| files::io_failure(&e, "reading", &self.settings.fw_env_config))?;
        let Some((device, end)) = first_device(&text) else {
            return Err(Failure::new(
                Kind::Environment,
                format!(
                    "{}: no line `DEVICE OFFSET SIZE` with numbers libubootenv reads\nhint: write e.g. `/boot/firmware/uboot.env 0x0 0x4000`",
                    self.settings.fw_env_config.display()
                ),
            ));
        };
        if device.exists() || !device.parent().is_some_and(Path::is_dir) || end > 16 << 20 {
            return Ok(());
        }
        crate::state::write_atomic(&device, &vec![0; end as usize])
            .map_err(|e| files::io_failure(&e, "creating", &device))?;
        log::info!(
            "created {} ({end} bytes) for U-Boot's environment",
            device.display()
        );
        Ok(())
    }

    fn env_file_missing(&self) -> bool {
        read_small(&self.settings.fw_env_config, MAX_CONFIG)
            .ok()
            .and_then(|text| first_device(&text))
            .is_some_and(|(device, _)| !device.exists())
    }

    /// What `bootloader show` prints.
    pub async fn show(&self) -> Result<String, Failure> {
        self.check_config()?;
        let mut out = format!("environment: {}\n", self.settings.fw_env_config.display());
        match self.tools.read().await? {
            Env::Invalid => out.push_str(
                "valid:       no (missing or bad CRC: U-Boot uses its built-in default)\n",
            ),
            Env::Valid(vars) => {
                let get = |k: &str| {
                    vars.get(k)
                        .map_or("(unset)".to_string(), |v| v.escape_debug().to_string())
                };
                out.push_str("valid:       yes\n");
                out.push_str(&format!(
                    "provisioned: {}\n",
                    if provisioned(&vars, &self.settings.fw_env_config).is_ok() {
                        "yes"
                    } else {
                        "no"
                    }
                ));
                for k in ["bootcmd", BOOT_VAR, SAVE_VAR, DEFAULT_VAR, FLAG] {
                    out.push_str(&format!("{k}={}\n", get(k)));
                }
            }
        }
        let conf = self.settings.boot_dir.join(TRIAL_CONF);
        match read_small(&conf, MAX_CONFIG) {
            Ok(text) => {
                out.push_str(&format!("trial entry: {}\n", conf.display()));
                for l in text
                    .lines()
                    .filter(|l| l.trim_start().starts_with("APPEND"))
                {
                    out.push_str(&format!("  {}\n", l.trim().escape_debug()));
                }
            }
            Err(_) => out.push_str(&format!("trial entry: none ({})\n", conf.display())),
        }
        Ok(out)
    }
}

impl TrialBoot for UBoot {
    fn describe(&self) -> String {
        format!(
            "U-Boot one-shot trial ({}, {})",
            self.settings.fw_env_config.display(),
            self.settings.boot_dir.join(TRIAL_CONF).display()
        )
    }
    fn ready(&self) -> Fut<'_, Result<(), Failure>> {
        Box::pin(self.ready_now())
    }
    fn arm<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<(), Failure>> {
        Box::pin(self.arm_now(system))
    }
    fn armed(&self) -> Fut<'_, Result<bool, Failure>> {
        Box::pin(async move {
            self.check_config()?;
            self.flag_set().await
        })
    }
    fn disarm(&self) -> Fut<'_, Result<(), Failure>> {
        Box::pin(self.disarm_now())
    }
}

/// fw_env.config's first device and where its environment ends (offset + size).
fn first_device(config: &str) -> Option<(PathBuf, u64)> {
    let num = |s: &str| match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    };
    let line = config
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let mut fields = line.split_whitespace();
    let device = PathBuf::from(fields.next()?);
    let offset = num(fields.next()?)?;
    let size = num(fields.next()?)?;
    Some((device, offset.checked_add(size)?))
}

/// The boot command is ours: `bootcmd` runs it, and U-Boot's own is kept.
fn provisioned(vars: &BTreeMap<String, String>, config: &Path) -> Result<(), Failure> {
    let ok = vars.get("bootcmd").map(String::as_str) == Some(BOOTCMD)
        && vars.get(BOOT_VAR).is_some_and(|v| v.contains(FLAG))
        && vars.get(SAVE_VAR).is_some_and(|v| !v.is_empty())
        && vars.get(DEFAULT_VAR).is_some_and(|v| !v.is_empty());
    if ok {
        return Ok(());
    }
    Err(Failure::new(
        Kind::Environment,
        format!(
            "the U-Boot environment named by {} is not provisioned for one-shot trials (bootcmd={:?}, {BOOT_VAR} {})\nhint: run `homelab-agent bootloader setup` once (the NixOS module's homelab-agent-uboot-setup unit does)",
            config.display(),
            vars.get("bootcmd").map_or("", String::as_str),
            if vars.contains_key(BOOT_VAR) { "set" } else { "unset" }
        ),
    ))
}

/// `name=value` lines of U-Boot's `make u-boot-initial-env`; it must boot something.
fn read_initial_env(file: &Path) -> Result<BTreeMap<String, String>, Failure> {
    let text = read_small(file, MAX_INITIAL_ENV).map_err(|e| {
        Failure::new(
            Kind::Configuration,
            format!("reading the initial environment {}: {e}\nhint: give U-Boot's `make u-boot-initial-env` output for this board's U-Boot", file.display()),
        )
    })?;
    let vars = fwenv::parse_dump(&text);
    if vars.get("bootcmd").is_none_or(|v| v.trim().is_empty()) {
        return Err(Failure::new(
            Kind::Configuration,
            format!("the initial environment {} has no bootcmd: it is not U-Boot's default environment\nhint: give U-Boot's `make u-boot-initial-env` output for this board's U-Boot", file.display()),
        ));
    }
    Ok(vars)
}

/// A small text file, following symlinks (NixOS's /etc links into /etc/static), bounded.
fn read_small(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!("more than {max} bytes")));
    }
    Ok(text)
}

/// A program by path, or on PATH.
fn find_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

#[cfg(test)]
mod tests;
