# The first system of a Raspberry Pi (3, 4, CM4, Zero 2; aarch64): nixpkgs' SD card image,
# reachable over SSH with keys only, and the agent already pointed at the homelab
# repository, so that a freshly flashed Pi fetches and switches to its real configuration
# (nixosConfigurations.<networking.hostName>) on first boot.
#
# Set networking.hostName, services.homelab-agent.repository.url and
# homelab.provisioning.authorizedKeys; build config.system.build.sdImage (docs/nixos.md).
# A host's real configuration can import this module too: it then boots exactly like the
# image, and its first deployment has next to nothing to build.
{
  config,
  lib,
  options,
  modulesPath,
  ...
}:
let
  cfg = config.homelab.provisioning;
in
{
  imports = [
    (modulesPath + "/installer/sd-card/sd-image-aarch64.nix")
    ./homelab-agent
  ];
  # sd-image-aarch64.nix also brings the installer's base profile (ZFS and a dozen file
  # systems, disk and rescue tools), which a Pi running its own configuration has no use
  # for, and which breaks the build ("zfs-kernel is broken") as soon as a host picks another
  # boot.kernelPackages. The image is the host's configuration, so it goes for both.
  disabledModules = [ (modulesPath + "/profiles/base.nix") ];

  options.homelab.provisioning = {
    authorizedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.singleLineStr;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... me@laptop" ];
      description = ''
        SSH public keys allowed to log in as root. Passwords are disabled, so with no key
        nobody can log in until the agent has deployed a configuration that adds one.
      '';
    };
    watchdog = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Let systemd feed the Pi's hardware watchdog (`bcm2835_wdt`, on every Pi this image
        is for), so that a kernel or boot that hangs resets the board instead of leaving it
        off the network. 15 s: the most that watchdog can count.
      '';
    };
  };

  config = {
    warnings =
      lib.optional (cfg.authorizedKeys == [ ])
        "homelab.provisioning.authorizedKeys is empty: nobody can log in over SSH until the agent has deployed your real configuration."
      # Never a default here: a stateVersion that followed nixpkgs would move with every
      # update, which is what it must never do.
      ++ lib.optional (options.system.stateVersion.highestPrio >= (lib.mkOptionDefault null).priority)
        ''system.stateVersion is not set: set it to the NixOS release this machine was first installed with (for a new Pi, the nixpkgs release you build its image from, e.g. "${lib.trivial.release}"), and never change it afterwards.''
      ++ lib.optional (config.networking.hostName == "nixos")
        ''networking.hostName is still "nixos": the agent will deploy nixosConfigurations."nixos". Set it to this machine's name.'';

    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    };
    users.users.root.openssh.authorizedKeys.keys = cfg.authorizedKeys;

    services.homelab-agent = {
      enable = true;
      # The image has one job: fetching the real configuration. Start soon after boot.
      bootDelay = lib.mkDefault "1min";
    };

    # A hung kernel or boot at least resets the board (README "Reboots": what still needs
    # physical access).
    boot.kernelModules = lib.mkIf cfg.watchdog [ "bcm2835_wdt" ];
    # nixpkgs renamed systemd.watchdog.runtimeTime to systemd.settings.Manager.
    # RuntimeWatchdogSec (the old name warns on every evaluation); older releases only know
    # the old one.
    systemd =
      if options.systemd ? settings then
        { settings.Manager.RuntimeWatchdogSec = lib.mkIf cfg.watchdog (lib.mkDefault "15s"); }
      else
        { watchdog.runtimeTime = lib.mkIf cfg.watchdog (lib.mkDefault "15s"); };

    # For whoever logs in to look around; the agent passes these flags itself.
    nix.settings.experimental-features = [
      "nix-command"
      "flakes"
    ];
  };
}
