# A stand-in for the nixpkgs flake input: nixpkgs' real lib, with
#   - lib.nixosSystem evaluating modules against the stub NixOS options (../stubs/nixos.nix,
#     modulesPath = ../stubs/modules), whose config.system.build.toplevel is a derivation
#     that, like NixOS's, refuses to evaluate while an assertion fails;
#   - legacyPackages.<system>: the stub pkgs (../stubs/pkgs.nix), with the builders the
#     flake's outputs call (callPackage, runCommand, writeText, mkShell,
#     testers.runNixOSTest, ...) returning real but empty derivations.
# Used by tests/nix/eval.nix (the documented examples and the template, evaluated through
# this repository's flake.nix) and by tests/nix/check.sh (`nix flake check --no-build`,
# with ./flake.nix).
#
# Not covered: what the derivations build (they are empty: a stand-in runCommand ignores
# its script), and nixpkgs' own modules. The flake's checks against real nixpkgs cover those.
{
  lib,
  stubs ? ../stubs,
}:
let
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  pkgsFor =
    system:
    let
      stub = import (stubs + "/pkgs.nix") { inherit lib; };
      drv =
        name:
        derivation {
          inherit name system;
          builder = "/bin/sh";
          args = [
            "-c"
            "echo stand-in > $out"
          ];
        };
    in
    stub
    // {
      inherit lib;
      callPackage = fn: _: drv (lib.removeSuffix ".nix" (baseNameOf (toString fn)));
      runCommand = name: _env: _script: drv name;
      writeText = name: text: drv name // { inherit text; };
      mkShell = _: drv "shell";
      testers.runNixOSTest = _: drv "nixos-test";
      formats.toml =
        { }:
        stub.formats.toml { }
        // {
          generate = name: value: drv name // { inherit value; };
        };
    }
    // lib.genAttrs [
      "clippy"
      "rustfmt"
      "rust-analyzer"
      "nixfmt-tree"
    ] drv;

  nixosSystem =
    {
      modules,
      specialArgs ? { },
      ...
    }:
    lib.evalModules {
      modules = [
        (stubs + "/nixos.nix")
        (
          { config, ... }:
          let
            pkgs = pkgsFor (
              if config.nixpkgs.hostPlatform == null then "x86_64-linux" else config.nixpkgs.hostPlatform
            );
            failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
          in
          {
            _module.args.pkgs = pkgs;
            system.build.toplevel =
              if failed == [ ] then
                pkgs.runCommand "nixos-system-${config.networking.hostName}" { } ""
              else
                throw "Failed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}";
          }
        )
      ]
      ++ modules;
      specialArgs = {
        modulesPath = stubs + "/modules";
      }
      // specialArgs;
    };
in
{
  lib = lib // {
    inherit nixosSystem;
  };
  legacyPackages = lib.genAttrs systems pkgsFor;
}
