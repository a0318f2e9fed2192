# The agent module in a real NixOS evaluation (the stub-based tests/nix/eval.nix cannot
# tell whether NixOS really has the options it sets): assertions pass, the rendered unit
# and timer files hold the settings that keep the agent alive through its own switch, and
# the agent accepts the config file written by the real pkgs.formats.toml.
{
  system,
  pkgs,
  self,
  nixpkgs,
}:
let
  inherit (pkgs) lib;

  nixos = nixpkgs.lib.nixosSystem {
    modules = [
      self.nixosModules.default
      {
        nixpkgs.hostPlatform = system;
        nixpkgs.overlays = [ self.overlays.default ];
        boot.loader.grub.enable = false;
        fileSystems."/".device = "nodev";
        system.stateVersion = "26.05";
        networking.hostName = "pi1";
        services.homelab-agent = {
          enable = true;
          repository.url = "https://git.example.org/me/homelab.git";
          build.timeout = "1h";
          health.checks = [
            { systemd.units = [ "sshd.service" ]; }
            { tcp.address = "127.0.0.1:22"; }
            { remote = { }; }
          ];
        };
      }
    ];
  };
  inherit (nixos) config;
  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  agent = config.services.homelab-agent.package;
  service = pkgs.writeText "homelab-agent.service" config.systemd.units."homelab-agent.service".text;
  timer = pkgs.writeText "homelab-agent.timer" config.systemd.units."homelab-agent.timer".text;
  configFile = config.environment.etc."homelab-agent/config.toml".source;

  expectLine = file: line: ''
    grep -qxF ${lib.escapeShellArg line} ${file} || { echo "${file}: no line: ${line}" >&2; cat ${file} >&2; exit 1; }
  '';
in
assert lib.assertMsg (failed == [ ]) "module-nixos: failed assertions: ${toString failed}";
pkgs.runCommand "homelab-agent-module-nixos" { nativeBuildInputs = [ agent ]; } ''
  ${expectLine service "ExecStart=${lib.getExe agent} --config /etc/homelab-agent/config.toml run --once"}
  ${expectLine service "Type=oneshot"}
  ${expectLine service "X-RestartIfChanged=false"}
  ${expectLine service "X-StopOnRemoval=false"}
  ${expectLine service "RestartPreventExitStatus=1 2 4 78"}
  ${expectLine service "NotifyAccess=main"}
  ${expectLine service "RuntimeDirectoryPreserve=yes"}
  ${expectLine service "StateDirectoryMode=0700"}
  ${expectLine service "TimeoutStartSec=1h 15min 15min 10s 5min 30min"}
  ${expectLine timer "OnUnitInactiveSec=5min"}
  ${expectLine timer "RandomizedDelaySec=1min"}
  ${expectLine timer "AccuracySec=1s"}
  cat ${configFile}
  homelab-agent --config ${configFile} config check
  touch $out
''
