# Declarations of the NixOS options our modules set or read, typed closely enough that a
# misspelt option name fails here as it would in NixOS (the flake's checks evaluate the
# module against real NixOS too). Defaults are NixOS's where the modules read them.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  strings = opt (types.listOf types.str) [ ];
  attrs = opt (types.attrsOf types.anything) { };

  service = types.submodule {
    options = {
      description = opt types.str "";
      wants = strings;
      after = strings;
      before = strings;
      requires = strings;
      wantedBy = strings;
      requiredBy = strings;
      path = opt (types.listOf types.anything) [ ];
      environment = attrs;
      serviceConfig = attrs;
      unitConfig = attrs;
      script = opt types.lines "";
      restartIfChanged = opt types.bool true;
      stopIfChanged = opt types.bool true;
    };
  };

  timer = types.submodule {
    options = {
      description = opt types.str "";
      wantedBy = strings;
      timerConfig = attrs;
    };
  };

  etcFile = types.submodule {
    options = {
      source = opt types.anything null;
      text = opt (types.nullOr types.lines) null;
    };
  };
in
{
  options = {
    assertions = opt (types.listOf types.unspecified) [ ];
    warnings = strings;

    networking.hostName = opt types.str "nixos";
    networking.proxy.envVars = opt (types.attrsOf types.str) { };

    nix.package = opt types.package pkgs.nix;
    nix.settings = attrs;
    nix.envVars = attrs;
    programs.ssh.package = opt types.package pkgs.openssh;
    systemd.package = opt types.package pkgs.systemd;
    systemd.watchdog = attrs;
    boot.kernelModules = strings;

    environment.etc = opt (types.attrsOf etcFile) { };
    environment.systemPackages = opt (types.listOf types.package) [ ];

    systemd.services = opt (types.attrsOf service) { };
    systemd.timers = opt (types.attrsOf timer) { };

    services.openssh = attrs;
    services.nginx = attrs;
    networking.firewall.allowedTCPPorts = opt (types.listOf types.port) [ ];
    hardware.enableRedistributableFirmware = opt types.bool false;
    nix.gc = attrs;
    nixpkgs.hostPlatform = opt (types.nullOr types.str) null;
    nixpkgs.buildPlatform = opt (types.nullOr types.str) null;
    nixpkgs.overlays = opt (types.listOf types.anything) [ ];
    boot.loader.grub.enable = opt types.bool true;
    fileSystems = attrs;
    system.build = opt (types.lazyAttrsOf types.unspecified) { };
    users.users = attrs;
    system.stateVersion = opt types.str "";
    system.configurationRevision = opt (types.nullOr types.str) null;

    # Not NixOS: which stub of nixpkgs' modules (stubs/modules) a configuration imports.
    testStub.imported = opt (types.listOf types.str) [ ] // {
      internal = true;
    };
  };
}
