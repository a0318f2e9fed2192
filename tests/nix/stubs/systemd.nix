# NixOS's systemd unit options, restated in our words from nixpkgs
# (nixos/lib/systemd-lib.nix, nixos/lib/systemd-unit-options.nix and
# nixos/modules/system/boot/systemd.nix) for the options our modules touch, with NixOS's
# types and merge rules, so that a module NixOS rejects is rejected here too:
#
# - a service's `path` becomes `environment.PATH` (each entry's bin, then its sbin), after
#   NixOS has appended its default path (coreutils, findutils, gnugrep, gnused, systemd);
# - `environment` is attrsOf (nullOr (oneOf [ str path package ])): two different values
#   for one variable (say, a PATH copied from another unit beside the computed one) are a
#   conflict, exactly as NixOS reports it;
# - serviceConfig, unitConfig and timerConfig values: lists concatenate, anything else must
#   be equal in every definition; a service's Type and Restart must be values systemd knows;
# - unit names in wantedBy, after, ... must look like unit names;
# - `systemd.watchdog.*` are renamed to `systemd.settings.Manager.*`: setting the old name
#   still works, with NixOS's rename warning.
{
  lib,
  pkgs,
  config,
  ...
}:
let
  inherit (lib) mkOption types;
  nixos = config;

  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # One directive of a unit section: a list adds up, a single value must agree.
  directive = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (d: lib.isList d.value) defs' then
        lib.concatMap (d: lib.toList d.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  section = mkOption {
    type = types.attrsOf directive;
    default = { };
  };

  oneOfOr =
    name: known: s:
    !(s ? ${name}) || lib.elem s.${name} known;
  serviceSection = mkOption {
    type = types.addCheck (types.attrsOf directive) (
      s:
      oneOfOr "Type" [
        "exec"
        "simple"
        "forking"
        "oneshot"
        "dbus"
        "notify"
        "notify-reload"
        "idle"
      ] s
      && oneOfOr "Restart" [
        "no"
        "on-success"
        "on-failure"
        "on-abnormal"
        "on-abort"
        "always"
      ] s
    );
    default = { };
  };

  units = mkOption {
    type = types.listOf unitName;
    default = [ ];
  };
  bool = default: mkOption {
    type = types.bool;
    inherit default;
  };

  unitOptions = {
    enable = bool true;
    description = mkOption {
      type = types.str;
      default = "";
    };
    wantedBy = units;
    requiredBy = units;
    upheldBy = units;
    wants = units;
    requires = units;
    upholds = units;
    after = units;
    before = units;
    bindsTo = units;
    partOf = units;
    conflicts = units;
    requisite = units;
    onFailure = units;
    onSuccess = units;
    unitConfig = section;
    restartTriggers = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
  };

  service = types.submodule (
    { config, ... }:
    {
      options = unitOptions // {
        path = mkOption {
          type = types.listOf (types.oneOf [
            types.package
            types.str
          ]);
          default = [ ];
        };
        environment = mkOption {
          type = types.attrsOf (
            types.nullOr (
              types.oneOf [
                types.str
                types.path
                types.package
              ]
            )
          );
          default = { };
        };
        serviceConfig = serviceSection;
        script = mkOption {
          type = types.lines;
          default = "";
        };
        preStart = mkOption {
          type = types.lines;
          default = "";
        };
        restartIfChanged = bool true;
        reloadIfChanged = bool false;
        stopIfChanged = bool true;
        startAt = mkOption {
          type = types.either types.str (types.listOf types.str);
          default = [ ];
        };
      };
      config = {
        path = lib.mkAfter [
          pkgs.coreutils
          pkgs.findutils
          pkgs.gnugrep
          pkgs.gnused
          nixos.systemd.package
        ];
        environment.PATH = lib.mkIf (config.path != [ ]) "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}";
      };
    }
  );

  timer = types.submodule {
    options = unitOptions // {
      timerConfig = section;
    };
  };
in
{
  imports =
    map
      (
        old:
        lib.mkRenamedOptionModule
          [
            "systemd"
            "watchdog"
            old.from
          ]
          [
            "systemd"
            "settings"
            "Manager"
            old.to
          ]
      )
      [
        {
          from = "device";
          to = "WatchdogDevice";
        }
        {
          from = "runtimeTime";
          to = "RuntimeWatchdogSec";
        }
        {
          from = "rebootTime";
          to = "RebootWatchdogSec";
        }
        {
          from = "kexecTime";
          to = "KExecWatchdogSec";
        }
      ];

  options.systemd = {
    package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    timers = mkOption {
      type = types.attrsOf timer;
      default = { };
    };
    settings.Manager = mkOption {
      type = types.attrsOf directive;
      default = { };
    };
  };
}
