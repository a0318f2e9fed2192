# The VM test's machine, booted by the test (vm-deploy.nix) and deployed by the agent
# (vm/system.nix): a demo app that the health checks watch, and the agent pulling from a
# repository inside the VM. Each commit's release.nix says which demo release runs.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.demo;
in
{
  options.demo = {
    marker = lib.mkOption {
      type = lib.types.str;
      description = "Written to /etc/homelab-test/marker, to tell which release runs.";
    };
    readyAfter = lib.mkOption {
      type = lib.types.nullOr lib.types.ints.unsigned;
      description = "Seconds until the app is ready; null: never.";
    };
  };

  config = {
    networking.hostName = "machine";
    environment.etc."homelab-test/marker".text = cfg.marker;

    systemd.services.demo-app = {
      wantedBy = [ "multi-user.target" ];
      # Removed when the app stops: a restarted app is not ready until it says so.
      serviceConfig.RuntimeDirectory = "demo-app";
      script =
        lib.optionalString (cfg.readyAfter != null) ''
          sleep ${toString cfg.readyAfter}
          touch /run/demo-app/ready
        ''
        + "exec sleep infinity\n";
    };

    services.homelab-agent = {
      enable = true;
      repository.url = "file:///srv/git/homelab.git";
      health = {
        settle = "1s";
        timeout = "60s";
        checks = [
          { systemd.units = [ "demo-app.service" ]; }
          {
            command.command = [
              "/run/current-system/sw/bin/test"
              "-e"
              "/run/demo-app/ready"
            ];
          }
        ];
      };
    };
    # The test script starts each run.
    systemd.timers.homelab-agent.wantedBy = lib.mkForce [ ];

    nix.settings = {
      experimental-features = [
        "nix-command"
        "flakes"
      ];
      substituters = lib.mkForce [ ];
    };
    environment.systemPackages = [ pkgs.git ];

    # The test profile leaves switch-to-configuration out of systems without specialisations.
    system.switch.enable = true;
    boot.loader.grub.enable = false;
    documentation.enable = false;
  };
}
