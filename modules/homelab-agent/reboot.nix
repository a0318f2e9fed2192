# services.homelab-agent.reboot: when a deployment that changes the kernel, initrd or kernel
# modules may reboot the machine, and the boot-time unit that verifies such a reboot
# (README "Reboots"). Imported by ./default.nix; rendered into the `[reboot]` table of the
# agent's config file. Every key option is null by default: the agent's defaults apply
# (policy "never": nothing reboots, as before).
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.homelab-agent;
  r = cfg.reboot;

  # As in ./options.nix: a span both the agent (agent/src/time.rs) and systemd read the same way.
  duration =
    types.strMatching "[0-9]+ ?(ns|nsec|us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|h|hr|hour|hours|d|day|days|w|week|weeks)( ?[0-9]+ ?(ns|nsec|us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|h|hr|hour|hours|d|day|days|w|week|weeks))*"
    // {
      description = ''duration such as "30s", "5min" or "2h 30min"'';
    };

  timeOfDay = types.strMatching "([01]?[0-9]|2[0-3]):[0-5][0-9]" // {
    description = ''time of day "HH:MM"'';
  };

  nullable =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  # The first of: a key given through `settings`, the option, the agent's default.
  pick =
    fromSettings: option: default:
    if fromSettings != null then
      fromSettings
    else if option != null then
      option
    else
      default;

  whenRequired = (cfg.settings.reboot.policy or r.policy) == "when-required";
in
{
  options.services.homelab-agent.reboot = {
    policy = nullable (types.enum [
      "never"
      "when-required"
    ]) ''
      When the agent reboots (`reboot.policy`). `"never"` (the agent's default): `status` says
      a reboot is required and pending, a person decides. `"when-required"`: after a
      deployment whose kernel, initrd, kernel modules, kernel parameters or device tree
      differ from the booted system's (activated live and health-checked first, like every
      deployment, but not made the boot default), the agent reboots into it once as a trial
      ({option}`services.homelab-agent.reboot.bootloader`), inside
      {option}`services.homelab-agent.reboot.window`, holding a FleetLock slot if
      {option}`services.homelab-agent.reboot.fleetlock.url` is set. Never twice for the same
      generation; the boot is then verified by `homelab-agent verify-boot`.
    '';

    delay = nullable duration "Wait at least this long after the generation became the boot default before rebooting (`reboot.delay`). `null`: the agent's default, no wait.";

    maxWait = nullable duration ''
      A reboot that has waited this long for its window reboots at the next run, window or
      not (`reboot.max_wait`); it still never reboots without the FleetLock slot. `null`:
      waits for the window for ever.
    '';

    window = mkOption {
      default = null;
      description = ''
        When reboots may happen (`[reboot.window]`), like nixpkgs'
        `system.autoUpgrade.rebootWindow` plus days. `null`: any time.
      '';
      example = lib.literalExpression ''
        {
          days = [ "sat" "sun" ];
          start = "02:00";
          end = "05:00";
          timezone = "Europe/Berlin";
        }
      '';
      type = types.nullOr (
        types.submodule {
          _file = ./reboot.nix;
          options = {
            days = nullable (types.nonEmptyListOf (
              types.enum [
                "mon"
                "tue"
                "wed"
                "thu"
                "fri"
                "sat"
                "sun"
              ]
            )) "Days on which the window opens. `null`: every day.";
            start = mkOption {
              type = timeOfDay;
              example = "02:00";
              description = "When the window opens (nixpkgs' `rebootWindow.lower`).";
            };
            end = mkOption {
              type = timeOfDay;
              example = "05:00";
              description = "When it closes (`rebootWindow.upper`); before `start`: the next day.";
            };
            timezone = nullable types.str ''
              IANA time zone of `start` and `end`, e.g. `"Europe/Berlin"`, or `"UTC"`. `null`:
              the machine's own (`time.timeZone`, /etc/localtime).
            '';
          };
        }
      );
    };

    fleetlock = {
      url = nullable (types.strMatching "https?://[^?#]+") ''
        Base URL of a FleetLock server (`reboot.fleetlock_url`; the protocol Zincati uses:
        airlock, poseidon/fleetlock). Before rebooting the agent takes a slot with
        `POST <url>/v1/pre-reboot`; the verified boot releases it (`/v1/steady-state`). A
        server that is down or refuses means wait, never reboot.
      '';
      group = nullable (types.strMatching "[a-zA-Z0-9.-]+") "FleetLock group (`reboot.group`). `null`: `\"default\"`.";
      id = nullable types.str "FleetLock id of this machine (`reboot.id`). `null`: an app-specific hash of its /etc/machine-id (docs/reboots.md).";
    };

    bootloader = nullable (types.enum [
      "none"
      "uboot"
    ]) ''
      The bootloader's one-shot trial (`reboot.bootloader`; docs/reboots.md). A deployment
      that needs a reboot is activated live and health-checked, but becomes the boot default
      only once a trial boot into it verified. `"uboot"`: U-Boot + extlinux with its
      environment in `uboot.env` (the Pi image): the agent arms a one-entry trial and the
      one-shot flag (`fw_setenv`), and reboots. `"none"` (`null`: the agent's default): no
      trial mechanism; such a deployment stays live and pending, never the boot default
      unverified, and `status` says what to do.
    '';

    trialDeadline = nullable duration ''
      A trial boot not verified this long after its early start (sysinit) is rebooted back to the
      last verified generation (`reboot.trial_deadline`), emergency and rescue mode
      included (`homelab-agent-trial-deadline.service`). `null`: the agent's default, 15
      minutes.
    '';

    verifyBoot = mkOption {
      type = types.bool;
      default = whenRequired;
      defaultText = lib.literalExpression ''services.homelab-agent.reboot.policy == "when-required"'';
      description = ''
        Run `homelab-agent verify-boot` at every boot, before `boot-complete.target`: in the
        agent's trial boot it runs the health checks (pass: the generation becomes the boot
        default, the FleetLock slot is released; fail: the commit is marked bad, one reboot
        into the untouched default, the last verified generation); a boot of a default that
        never verified here is checked too, and falls back to the last verified generation;
        a boot that is not the profile's default (the bootloader fell back) is recorded as a
        failed deployment. Started by `switch-to-configuration test` in the deployment's own
        boot, it does nothing. With it comes
        `homelab-agent-trial-deadline.service` (see {option}`services.homelab-agent.reboot.trialDeadline`).
      '';
    };

    rendered = mkOption {
      internal = true;
      readOnly = true;
      type = types.attrsOf types.anything;
      description = "The `[reboot]` table these options give (nulls are left out by ./default.nix).";
    };
  };

  config = lib.mkMerge [
    {
      services.homelab-agent.reboot.rendered = {
        inherit (r) policy delay bootloader;
        trial_deadline = r.trialDeadline;
        max_wait = r.maxWait;
        fleetlock_url = r.fleetlock.url;
        inherit (r.fleetlock) group id;
        window =
          if r.window == null then
            null
          else
            {
              inherit (r.window)
                days
                start
                end
                timezone
                ;
            };
      };
    }
    (lib.mkIf (cfg.enable && r.verifyBoot) {
      systemd.services.homelab-agent-verify-boot = {
        description = "homelab-agent: verify this boot (health checks after a reboot into a new generation)";
        # After the system's own services are up (the checks look at them), before the boot
        # counts as complete: a failure here keeps boot-complete.target from being reached,
        # so a counting bootloader (systemd-boot's bless-boot) is not told the boot was good.
        wantedBy = [ "multi-user.target" ];
        requiredBy = [ "boot-complete.target" ];
        before = [
          "boot-complete.target"
          "homelab-agent.service"
        ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "multi-user.target"
        ];
        # Never restarted by a switch: it runs once per boot.
        restartIfChanged = false;
        stopIfChanged = false;
        # The agent's tools and environment. Not its PATH: NixOS computes each unit's
        # environment.PATH from its `path`, and a copied one conflicts with that.
        inherit (config.systemd.services.homelab-agent) path;
        environment = removeAttrs config.systemd.services.homelab-agent.environment [ "PATH" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${lib.getExe cfg.package} --config /etc/homelab-agent/config.toml verify-boot";
          StateDirectory = "homelab-agent";
          StateDirectoryMode = "0755"; # as the agent's unit: the state for everyone, the git cache root only
          RuntimeDirectory = "homelab-agent";
          RuntimeDirectoryPreserve = "yes";
          # Settle and health timeout of the checks, a switch-to-configuration boot, margin.
          TimeoutStartSec = lib.concatStringsSep " " [
            (pick (cfg.settings.health.settle or null) cfg.health.settle "10s")
            (pick (cfg.settings.health.timeout or null) cfg.health.timeout "5min")
            (pick (cfg.settings.activation.timeout or null) null "15min")
            "5min"
          ];
        };
      };
      # The first run after a boot comes after its verification.
      systemd.services.homelab-agent.after = [ "homelab-agent-verify-boot.service" ];

      # The bound on a trial boot (docs/reboots.md): started in every boot, early and
      # outside multi-user.target, so a trial that ends in emergency or rescue mode (where
      # verify-boot never starts) is rebooted too; it exits at once in any other boot.
      systemd.services.homelab-agent-trial-deadline = {
        description = "homelab-agent: reboot a trial boot that is not verified in time";
        wantedBy = [
          "sysinit.target"
          "emergency.target"
          "rescue.target"
        ];
        after = [ "local-fs.target" ];
        before = [ "shutdown.target" ];
        unitConfig = {
          DefaultDependencies = false;
          Conflicts = "shutdown.target";
          # Isolating emergency.target or rescue.target does not stop the watch.
          IgnoreOnIsolate = true;
        };
        restartIfChanged = false;
        stopIfChanged = false;
        serviceConfig = {
          Type = "simple";
          ExecStart = "${lib.getExe cfg.package} --config /etc/homelab-agent/config.toml trial-deadline";
          # `systemctl reboot` when the deadline passes.
          Environment = "PATH=${lib.makeBinPath [ config.systemd.package ]}";
        };
      };
    })
  ];
}
