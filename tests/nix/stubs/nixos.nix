# Declarations of the NixOS options our modules set or read, typed closely enough that a
# misspelt option name fails here as it would in NixOS (the flake's checks evaluate the
# module against real NixOS too). Defaults are NixOS's where the modules read them.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  strings = opt (types.listOf types.str) [ ];
  attrs = opt (types.attrsOf types.anything) { };

  etcFile = types.submodule {
    options = {
      source = opt types.anything null;
      text = opt (types.nullOr types.lines) null;
    };
  };
in
{
  # systemd.*: NixOS's types and merge rules (./systemd.nix).
  imports = [ ./systemd.nix ];

  options = {
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = strings;

    networking.hostName = opt types.str "nixos";
    networking.proxy.envVars = opt (types.attrsOf types.str) { };

    nix.package = opt types.package pkgs.nix;
    nix.settings = attrs;
    nix.envVars = attrs;
    programs.ssh.package = opt types.package pkgs.openssh;
    boot.kernelModules = strings;

    environment.etc = opt (types.attrsOf etcFile) { };
    environment.systemPackages = opt (types.listOf types.package) [ ];


    services.openssh = attrs;
    services.nginx = attrs;
    # What the README's monitoring example sets (nixos/modules/services/monitoring/prometheus).
    services.prometheus.ruleFiles = opt (types.listOf types.path) [ ];
    services.prometheus.exporters.node = {
      enable = opt types.bool false;
      enabledCollectors = strings;
      extraFlags = strings;
    };
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];
    hardware.enableRedistributableFirmware = opt types.bool false;
    # nixos/modules/config/zram.nix
    zramSwap.enable = opt types.bool false;
    zramSwap.memoryPercent = opt types.ints.positive 50;
    nix.gc = attrs;
    nixpkgs.hostPlatform = opt (types.nullOr types.str) null;
    nixpkgs.buildPlatform = opt (types.nullOr types.str) null;
    nixpkgs.overlays = opt (types.listOf types.anything) [ ];
    boot.loader.grub.enable = opt types.bool true;
    fileSystems = attrs;
    system.build = opt (types.lazyAttrsOf types.unspecified) { };
    users.users = attrs;
    # NixOS's default is the release (and NixOS traces a warning when only that is set).
    system.stateVersion = opt types.str lib.trivial.release;
    system.configurationRevision = opt (types.nullOr types.str) null;

    # Not NixOS: which stub of nixpkgs' modules (stubs/modules) a configuration imports.
    testStub.imported = opt (types.listOf types.str) [ ] // {
      internal = true;
    };
  };
}
