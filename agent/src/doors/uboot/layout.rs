//! What the trial looks like on the boot partition and in U-Boot's environment: pure
//! functions of the settings and the system, unit-tested here.
//!
//! Files are laid out as NixOS's `extlinux-conf-builder.sh` lays out its own (a copy of
//! each store file named `<hash>-<name>-<file>`, entries pointing at them relative to
//! `extlinux/`), but in a directory of their own: the builder deletes every file under
//! `nixos/` that its generations do not use, so a trial copied there would be removed by
//! the next `switch-to-configuration boot`.

use std::path::Path;

/// Beside `extlinux/extlinux.conf`: the one-entry file the boot command boots once.
pub const TRIAL_CONF: &str = "extlinux/homelab-trial.conf";
/// The trial's kernel, initrd and dtbs (not under `nixos/`: see above).
pub const TRIAL_DIR: &str = "homelab-trial";
/// The one-shot flag: set by `arm`, cleared (and saved) by U-Boot before the trial boots.
pub const FLAG: &str = "homelab_trial";
/// The provisioned boot command.
pub const BOOT_VAR: &str = "homelab_boot";
/// U-Boot's own boot command as found at provisioning (`run distro_bootcmd` on a Pi).
pub const DEFAULT_VAR: &str = "homelab_default_bootcmd";
/// How the boot command saves the environment: `saveenv` (U-Boot's own: on a Pi,
/// `uboot.env` on the firmware partition); the QEMU tier gives another (docs).
pub const SAVE_VAR: &str = "homelab_save";
pub const DEFAULT_SAVE: &str = "saveenv";
/// What `bootcmd` is once provisioned.
pub const BOOTCMD: &str = "run homelab_boot";

/// Kernel parameters a trial adds after the system's own (the last `panic=` wins):
/// - `panic=N`: a panic resets the board after N seconds (the kernel default, 0, waits
///   for hands forever);
/// - `oops=panic`: an oops (a driver crashing in the kernel) is a panic, so a trial that
///   oopses resets into the verified generation instead of limping on towards
///   verification;
/// - `softlockup_panic=1`: a CPU stuck in the kernel for 20 s (a hang with interrupts on)
///   panics. Not `hung_task_panic`: a slow SD card blocks tasks for minutes on healthy
///   boots. These apply to the trial boot only: once verified, the generation boots from
///   NixOS's own entry, with its own parameters.
pub fn trial_params(panic_seconds: u32) -> String {
    format!("panic={panic_seconds} oops=panic softlockup_panic=1")
}

/// `/nix/store/<hash>-<name>/<file>` → `<hash>-<name>-<file>` (the builder's naming).
pub fn clean_name(store_path: &Path) -> String {
    let s = store_path.to_string_lossy();
    s.strip_prefix("/nix/store/")
        .unwrap_or(s.trim_start_matches('/'))
        .replace('/', "-")
}

/// The files of one trial, as copied into [`TRIAL_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The toplevel, resolved (`init=<system>/init`).
    pub system: String,
    pub kernel: String,
    pub initrd: String,
    pub dtbs: Option<String>,
    /// The system's `kernel-params`, on one line.
    pub params: String,
}

/// The one-entry extlinux file: no menu, no timeout, booted by `sysboot` at once.
pub fn trial_conf(e: &Entry, panic_seconds: u32) -> String {
    let mut out = format!(
        "# homelab-agent: a one-shot trial of {system} (booted once by {BOOT_VAR}, which\n\
         # clears {FLAG} before booting it; any reset boots extlinux.conf's default)\n\
         DEFAULT homelab-trial\n\n\
         LABEL homelab-trial\n\
         \x20 MENU LABEL NixOS - trial of {system}\n\
         \x20 LINUX ../{TRIAL_DIR}/{kernel}\n\
         \x20 INITRD ../{TRIAL_DIR}/{initrd}\n\
         \x20 APPEND init={system}/init {params}{sep}{trial}\n",
        system = e.system,
        kernel = e.kernel,
        initrd = e.initrd,
        params = e.params,
        sep = if e.params.is_empty() { "" } else { " " },
        trial = trial_params(panic_seconds),
    );
    if let Some(d) = &e.dtbs {
        out.push_str(&format!("  FDTDIR ../{TRIAL_DIR}/{d}\n"));
    }
    out
}

/// Where U-Boot finds the trial: `sysboot DEVICE PARTITION any ${scriptaddr} PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysboot {
    /// U-Boot's interface: `mmc` on a Pi, `virtio` in QEMU.
    pub device: String,
    /// `DEV:PART` holding the boot directory (`0:2` on the NixOS SD image, where /boot
    /// is on the root partition; `0:1` in QEMU).
    pub partition: String,
    /// The boot directory inside that partition (`/boot/` or `/`).
    pub prefix: String,
}

impl Sysboot {
    /// Only characters that cannot end or bend a U-Boot command line.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |s: &str, extra: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
        };
        if !ok(&self.device, "") {
            return Err(format!(
                "--sysboot-device {:?}: give U-Boot's interface name (mmc, virtio, usb)",
                self.device
            ));
        }
        if !ok(&self.partition, ":") {
            return Err(format!(
                "--sysboot-partition {:?}: give DEV:PART as U-Boot counts them (0:2 on the NixOS SD image)",
                self.partition
            ));
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') || !ok(&self.prefix, "/") {
            return Err(format!(
                "--boot-prefix {:?}: give the boot directory inside that partition, starting and ending with / (/boot/ or /)",
                self.prefix
            ));
        }
        Ok(())
    }

    /// The boot command: if the flag is set, clear it and save the environment, and only
    /// if the save worked boot the trial (a flag that cannot be cleared must not boot the
    /// trial again and again); then, or if the trial's files do not load, U-Boot's own
    /// boot command (the default entry: the last verified generation).
    pub fn boot_command(&self) -> String {
        format!(
            "if test -n \"${{{FLAG}}}\"; then setenv {FLAG}; if run {SAVE_VAR}; then sysboot {} {} any ${{scriptaddr}} {}{TRIAL_CONF}; fi; fi; run {DEFAULT_VAR}",
            self.device, self.partition, self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dtbs: Option<&str>, params: &str) -> Entry {
        Entry {
            system: "/nix/store/aaa-nixos-system-pi1".into(),
            kernel: "bbb-linux-6.1-Image".into(),
            initrd: "ccc-initrd-linux-6.1-initrd".into(),
            dtbs: dtbs.map(String::from),
            params: params.into(),
        }
    }

    #[test]
    fn names_files_as_the_nixos_builder_does() {
        assert_eq!(
            clean_name(Path::new("/nix/store/bbb-linux-6.1/Image")),
            "bbb-linux-6.1-Image"
        );
        assert_eq!(clean_name(Path::new("/tmp/x/kernel")), "tmp-x-kernel");
    }

    #[test]
    fn the_trial_entry_bounds_the_boot_and_points_beside_extlinux() {
        let conf = trial_conf(&entry(Some("ddd-dtbs"), "console=ttyS0 quiet"), 5);
        assert!(conf.contains("DEFAULT homelab-trial\n"), "{conf}");
        assert!(conf.contains("  LINUX ../homelab-trial/bbb-linux-6.1-Image\n"));
        assert!(conf.contains("  INITRD ../homelab-trial/ccc-initrd-linux-6.1-initrd\n"));
        assert!(conf.contains(
            "  APPEND init=/nix/store/aaa-nixos-system-pi1/init console=ttyS0 quiet panic=5 oops=panic softlockup_panic=1\n"
        ));
        assert!(conf.contains("  FDTDIR ../homelab-trial/ddd-dtbs\n"));
        assert!(!conf.contains("TIMEOUT"), "no menu: {conf}");
        let plain = trial_conf(&entry(None, ""), 3);
        assert!(plain.contains("/init panic=3 oops"), "{plain}");
        assert!(!plain.contains("FDTDIR"));
    }

    #[test]
    fn the_boot_command_clears_and_saves_before_the_trial() {
        let s = Sysboot {
            device: "mmc".into(),
            partition: "0:2".into(),
            prefix: "/boot/".into(),
        };
        s.validate().unwrap();
        let cmd = s.boot_command();
        let clear = cmd.find("setenv homelab_trial;").unwrap();
        let save = cmd.find("if run homelab_save; then sysboot").unwrap();
        let boot = cmd
            .find("sysboot mmc 0:2 any ${scriptaddr} /boot/extlinux/homelab-trial.conf")
            .unwrap();
        assert!(clear < save && save < boot, "{cmd}");
        assert!(cmd.ends_with("; run homelab_default_bootcmd"), "{cmd}");
    }

    #[test]
    fn sysboot_settings_that_could_bend_the_command_are_refused() {
        let good = Sysboot {
            device: "virtio".into(),
            partition: "0:1".into(),
            prefix: "/".into(),
        };
        good.validate().unwrap();
        for (bad, what) in [
            (
                Sysboot {
                    device: "mmc; reset".into(),
                    ..good.clone()
                },
                "--sysboot-device",
            ),
            (
                Sysboot {
                    partition: "0:1\"".into(),
                    ..good.clone()
                },
                "--sysboot-partition",
            ),
            (
                Sysboot {
                    prefix: "boot".into(),
                    ..good.clone()
                },
                "--boot-prefix",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.starts_with(what), "{e}");
        }
    }
}
