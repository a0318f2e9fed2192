//! `homelab-agent bootloader ...`: provisioning and the trial by hand, with the settings
//! from flags (independent of the config file; the NixOS module passes them).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::layout::Sysboot;
use super::UBoot;
use crate::config::UBootSettings;
use crate::doors::trial::TrialBoot;
use crate::exit;
use crate::failure::Failure;

const EXIT_CODES: &str = "Exit codes:\n  0   done\n  71  this machine: no fw_env.config or tools, a missing or damaged environment, the boot command not provisioned, the boot partition not writable\n  78  bad settings (--sysboot-*, --initial-env)";

#[derive(Subcommand, Debug)]
pub enum BootloaderCommand {
    /// Provision U-Boot's boot command for one-shot trials (once per machine; again is
    /// harmless). A missing or damaged environment is written only from --initial-env
    #[command(after_help = EXIT_CODES)]
    Setup {
        #[command(flatten)]
        uboot: UBootArgs,
        /// U-Boot's interface holding the boot directory (mmc on a Pi)
        #[arg(long, value_name = "IF", default_value = "mmc")]
        sysboot_device: String,
        /// DEV:PART of the partition holding the boot directory (0:2 on the NixOS SD image)
        #[arg(long, value_name = "DEV:PART", default_value = "0:2")]
        sysboot_partition: String,
        /// The boot directory inside that partition, as U-Boot sees it (/boot/ or /)
        #[arg(long, value_name = "PREFIX", default_value = "/boot/")]
        boot_prefix: String,
        /// How the boot command saves the environment (U-Boot commands; the QEMU tier
        /// writes uboot.env with env export and fatwrite)
        #[arg(long, value_name = "COMMANDS", default_value = super::layout::DEFAULT_SAVE)]
        save_command: String,
        /// U-Boot's default environment for this board (`make u-boot-initial-env`):
        /// written, with the boot command, only when the environment is missing or damaged
        #[arg(long, value_name = "FILE")]
        initial_env: Option<PathBuf>,
    },
    /// Lay out a one-entry trial of SYSTEM beside extlinux.conf and set the one-shot flag
    #[command(after_help = EXIT_CODES)]
    Arm {
        /// The NixOS toplevel to try once (kernel, initrd, init, kernel-params, dtbs)
        system: PathBuf,
        #[command(flatten)]
        uboot: UBootArgs,
    },
    /// Clear the flag, then remove the trial's files (idempotent)
    #[command(after_help = EXIT_CODES)]
    Disarm {
        #[command(flatten)]
        uboot: UBootArgs,
    },
    /// The environment (valid? provisioned? flag?) and the trial entry
    #[command(after_help = EXIT_CODES)]
    Show {
        #[command(flatten)]
        uboot: UBootArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct UBootArgs {
    /// libubootenv's configuration naming U-Boot's environment
    #[arg(long, value_name = "PATH", default_value = "/etc/fw_env.config")]
    fw_env_config: PathBuf,
    /// fw_printenv (libubootenv-tool)
    #[arg(long, value_name = "PATH", default_value = "fw_printenv")]
    fw_printenv: PathBuf,
    /// fw_setenv (libubootenv-tool)
    #[arg(long, value_name = "PATH", default_value = "fw_setenv")]
    fw_setenv: PathBuf,
    /// The directory holding extlinux/extlinux.conf
    #[arg(long, value_name = "DIR", default_value = "/boot")]
    boot_dir: PathBuf,
    /// panic=N on the trial's kernel command line
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    panic_seconds: u32,
}

impl UBootArgs {
    fn door(&self) -> UBoot {
        UBoot::new(UBootSettings {
            fw_env_config: self.fw_env_config.clone(),
            fw_printenv: self.fw_printenv.clone(),
            fw_setenv: self.fw_setenv.clone(),
            boot_dir: self.boot_dir.clone(),
            panic_seconds: self.panic_seconds,
        })
    }
}

pub async fn run(cmd: BootloaderCommand) -> u8 {
    let result = match cmd {
        BootloaderCommand::Setup {
            uboot,
            sysboot_device,
            sysboot_partition,
            boot_prefix,
            save_command,
            initial_env,
        } => {
            let sysboot = Sysboot {
                device: sysboot_device,
                partition: sysboot_partition,
                prefix: boot_prefix,
            };
            uboot
                .door()
                .setup(&sysboot, &save_command, initial_env.as_deref())
                .await
                .map(|done| format!("provisioned {done}"))
        }
        BootloaderCommand::Arm { system, uboot } => {
            let door = uboot.door();
            door.arm(&system).await.map(|()| {
                format!(
                    "armed: the next boot tries {} once ({})",
                    system.display(),
                    door.describe()
                )
            })
        }
        BootloaderCommand::Disarm { uboot } => uboot
            .door()
            .disarm()
            .await
            .map(|()| "disarmed: no trial is armed".to_string()),
        BootloaderCommand::Show { uboot } => uboot.door().show().await,
    };
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            exit::OK
        }
        Err(Failure { kind, message }) => {
            eprintln!("error: {message}");
            kind.exit_code()
        }
    }
}
