# The unit files the real-systemd tests install, rendered from the NixOS module itself:
# modules/homelab-agent evaluated with nixpkgs' lib against the stand-in NixOS options and
# packages of tests/nix/stubs (the module evaluation test's), then its
# systemd.services.homelab-agent and systemd.timers.homelab-agent written out the way
# NixOS writes units (nixos/lib/systemd-lib.nix: [Unit] from description, wants, after
# and unitConfig; Environment= lines (PATH computed from `path` by the stub, as NixOS does), X-RestartIfChanged
# and X-StopIfChanged; serviceConfig; [Install] WantedBy=), and the module's config file.
#
#   nix-instantiate --eval --strict --json tests/systemd/units.nix \
#     --argstr nixpkgsLib /path/to/nixpkgs/lib --argstr variants '{"NAME": {...}}'
#
# Each variant is { options = <services.homelab-agent definitions>; serviceConfig = <forced
# [Service] settings, as a NixOS user would mkForce them>; }. Returns, per variant,
# { service; timer; config; extraServices = { "<name>.service" = text; }; } as text (the
# extra services: the module's other homelab-agent-* units). The stand-in packages' store paths are mapped to
# where the container has the real thing (the agent in /usr/local/bin, nix, git, ssh and
# systemd from Debian in /usr/bin); a store path left over is an error.
{
  nixpkgsLib,
  variants,
}:
let
  lib = import (/. + nixpkgsLib);
  stubs = ../nix/stubs;
  pkgs = import (stubs + "/pkgs.nix") { inherit lib; };
  toTOML = import ../nix/lib/toml.nix { inherit lib; };

  # Where each stand-in package is in the container (tests/nix/stubs/pkgs.nix names them).
  fakePath = name: "${builtins.storeDir}/00000000000000000000000000000000-${name}";
  inContainer = {
    homelab-agent = "/usr/local";
    nix = "/usr";
    git = "/usr";
    openssh = "/usr";
    systemd = "/usr";
    # What NixOS appends to every service's path (systemd.services.<name>.path, stage 2).
    coreutils = "/usr";
    findutils = "/usr";
    gnugrep = "/usr";
    gnused = "/usr";
  };
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = fakePath name;
  };
  mapStorePaths =
    what: text:
    let
      names = builtins.attrNames inContainer;
      mapped = lib.replaceStrings (map fakePath names) (map (n: inContainer.${n}) names) text;
    in
    if lib.hasInfix "${builtins.storeDir}/" mapped then
      throw "tests/systemd/units.nix: ${what} still names a store path after mapping the stand-in packages: ${mapped}"
    else
      mapped;

  evaluate =
    variant:
    (lib.evalModules {
      modules = [
        (stubs + "/nixos.nix")
        { _module.args.pkgs = pkgs; }
        ../../modules/homelab-agent
        { services.homelab-agent = variant.options or { }; }
        {
          systemd.services.homelab-agent.serviceConfig = lib.mapAttrs (_: lib.mkForce) (
            variant.serviceConfig or { }
          );
        }
      ];
      specialArgs.modulesPath = stubs + "/modules";
    }).config;

  # systemd's spelling of one value, and one KEY=VALUE line per value of a list.
  option =
    v:
    if v == true then
      "true"
    else if v == false then
      "false"
    else
      toString v;
  section =
    attrs:
    lib.concatStrings (
      lib.concatMap (name: map (v: "${name}=${option v}\n") (lib.toList attrs.${name})) (
        builtins.attrNames attrs
      )
    );

  unitSection =
    def:
    section (
      lib.optionalAttrs (def.description != "") { Description = def.description; }
      // lib.optionalAttrs ((def.wants or [ ]) != [ ]) { Wants = toString def.wants; }
      // lib.optionalAttrs ((def.after or [ ]) != [ ]) { After = toString def.after; }
      // lib.optionalAttrs ((def.before or [ ]) != [ ]) { Before = toString def.before; }
      // lib.optionalAttrs ((def.requires or [ ]) != [ ]) { Requires = toString def.requires; }
      // (def.unitConfig or { })
    );

  install =
    def:
    lib.optionalString (def.wantedBy != [ ] || (def.requiredBy or [ ]) != [ ]) (
      "\n[Install]\n"
      + lib.optionalString (def.wantedBy != [ ]) "WantedBy=${toString def.wantedBy}\n"
      + lib.optionalString ((def.requiredBy or [ ]) != [ ]) "RequiredBy=${toString def.requiredBy}\n"
    );

  serviceText =
    def:
    let
      # NixOS's default path and the PATH computed from `path` come from the stub
      # (tests/nix/stubs/systemd.nix), as from NixOS.
      inherit (def) environment;
    in
    "[Unit]\n"
    + unitSection def
    + "\n[Service]\n"
    + lib.concatMapStrings (n: "Environment=${builtins.toJSON "${n}=${environment.${n}}"}\n") (
      builtins.attrNames environment
    )
    + lib.optionalString (!def.restartIfChanged) "X-RestartIfChanged=false\n"
    + lib.optionalString (!def.stopIfChanged) "X-StopIfChanged=false\n"
    + section def.serviceConfig
    + install def;

  timerText =
    def: "[Unit]\n" + unitSection def + "\n[Timer]\n" + section def.timerConfig + install def;

  render =
    name: variant:
    let
      c = evaluate variant;
      failed = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
    in
    if failed != [ ] then
      throw "tests/systemd/units.nix: variant ${name}: ${lib.concatStringsSep "; " failed}"
    else
      {
        service = mapStorePaths "homelab-agent.service" (serviceText c.systemd.services.homelab-agent);
        timer = mapStorePaths "homelab-agent.timer" (timerText c.systemd.timers.homelab-agent);
        config = mapStorePaths "config.toml" (
          toTOML c.environment.etc."homelab-agent/config.toml".source.value
        );
        # The module's other services (homelab-agent-*: e.g. the boot verification), by file name.
        extraServices = lib.mapAttrs' (
          n: def: lib.nameValuePair "${n}.service" (mapStorePaths "${n}.service" (serviceText def))
        ) (lib.filterAttrs (n: _: n != "homelab-agent" && lib.hasPrefix "homelab-agent" n) c.systemd.services);
      };
in
lib.mapAttrs render (builtins.fromJSON variants)
