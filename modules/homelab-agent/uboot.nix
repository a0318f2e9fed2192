# services.homelab-agent.reboot.uboot: U-Boot one-shot trials on the Pi image (U-Boot +
# extlinux; docs/reboots-uboot.md). Imported by ./default.nix. Writes /etc/fw_env.config
# naming U-Boot's environment (uboot.env on the firmware partition), puts libubootenv's
# tools on the agent's path, and provisions U-Boot's boot command once at boot
# (homelab-agent-uboot-setup.service: `homelab-agent bootloader setup`; again is harmless).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption mkEnableOption types;
  cfg = config.services.homelab-agent;
  u = cfg.reboot.uboot;
  tools = u.package;
  setupArgs = [
    "bootloader"
    "setup"
    "--fw-env-config"
    "/etc/fw_env.config"
    "--fw-printenv"
    "${tools}/bin/fw_printenv"
    "--fw-setenv"
    "${tools}/bin/fw_setenv"
    "--boot-dir"
    u.bootDir
    "--sysboot-device"
    u.sysboot.device
    "--sysboot-partition"
    u.sysboot.partition
    "--boot-prefix"
    u.sysboot.prefix
  ]
  ++ lib.optionals (u.initialEnv != null) [
    "--initial-env"
    "${u.initialEnv}"
  ];
in
{
  options.services.homelab-agent.reboot.uboot = {
    enable = mkEnableOption ''
      one-shot trials of new kernels through U-Boot's environment (the Pi image's
      U-Boot + extlinux boot path): a reboot deploy boots the new generation once, and
      any reset before it verified boots the last verified one
    '';

    package = mkOption {
      type = types.package;
      default = pkgs.libubootenv;
      defaultText = lib.literalExpression "pkgs.libubootenv";
      description = "libubootenv, for `fw_printenv` and `fw_setenv`.";
    };

    envFile = mkOption {
      type = types.strMatching "/.+";
      default = "/boot/firmware/uboot.env";
      description = ''
        U-Boot's environment file on the firmware FAT partition (`CONFIG_ENV_IS_IN_FAT`;
        the NixOS SD image mounts that partition at /boot/firmware).
      '';
    };

    envSize = mkOption {
      type = types.ints.positive;
      default = 16384;
      description = "U-Boot's `CONFIG_ENV_SIZE` (0x4000 in the Raspberry Pi builds).";
    };

    bootDir = mkOption {
      type = types.strMatching "/.+";
      default = "/boot";
      description = "The directory holding extlinux/extlinux.conf (generic-extlinux-compatible).";
    };

    sysboot = {
      device = mkOption {
        type = types.strMatching "[A-Za-z0-9._-]+";
        default = "mmc";
        description = "U-Boot's interface for the partition holding `bootDir`.";
      };
      partition = mkOption {
        type = types.strMatching "[A-Za-z0-9._-]+:[A-Za-z0-9._-]+";
        default = "0:2";
        description = "DEV:PART holding `bootDir` (0:2: the root partition of the NixOS SD image).";
      };
      prefix = mkOption {
        type = types.strMatching "/([A-Za-z0-9._-]+/)*";
        default = "/boot/";
        description = "`bootDir` as U-Boot sees it inside that partition.";
      };
    };

    initialEnv = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        U-Boot's default environment for this board's U-Boot build (`make
        u-boot-initial-env`), used only when uboot.env is missing or damaged. `null`: such
        a machine is not provisioned (the setup unit fails and says so) until U-Boot
        wrote uboot.env once (`saveenv` at its prompt); writing an environment from
        anything else would replace U-Boot's built-in one and lose its boot command.
      '';
    };
  };

  config = lib.mkIf (cfg.enable && u.enable) {
    environment.etc."fw_env.config".text = ''
      # homelab-agent (services.homelab-agent.reboot.uboot): U-Boot's environment
      ${u.envFile} 0x0 ${toString u.envSize}
    '';
    environment.systemPackages = [ tools ];
    systemd.services.homelab-agent.path = [ tools ];
    # The agent, verify-boot and the trial deadline write and read the environment and
    # the trial's files: its partition must be mounted for them (the SD image does not
    # mount the firmware partition by default).
    systemd.services.homelab-agent.unitConfig.RequiresMountsFor = [
      (dirOf u.envFile)
      u.bootDir
    ];
    systemd.services.homelab-agent-verify-boot = lib.mkIf cfg.reboot.verifyBoot {
      unitConfig.RequiresMountsFor = [
        (dirOf u.envFile)
        u.bootDir
      ];
    };

    # The agent's side: trials through this door (`[reboot] bootloader = "uboot"`), with
    # absolute tool paths (every unit that runs the agent finds them, whatever its PATH).
    services.homelab-agent.reboot.bootloader = lib.mkDefault "uboot";
    services.homelab-agent.settings.reboot.uboot = {
      fw_env_config = lib.mkDefault "/etc/fw_env.config";
      fw_printenv = lib.mkDefault "${tools}/bin/fw_printenv";
      fw_setenv = lib.mkDefault "${tools}/bin/fw_setenv";
      boot_dir = lib.mkDefault u.bootDir;
    };

    systemd.services.homelab-agent-uboot-setup = {
      description = "homelab-agent: provision U-Boot's boot command for one-shot trials";
      wantedBy = [ "multi-user.target" ];
      before = [ "homelab-agent.service" ];
      unitConfig.RequiresMountsFor = [
        (dirOf u.envFile)
        u.bootDir
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${lib.getExe cfg.package} ${lib.escapeShellArgs setupArgs}";
      };
    };
  };
}
