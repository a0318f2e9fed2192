# The flake's checks for one system (flake.nix: checks.<system>).
{
  system,
  pkgs,
  self,
  nixpkgs,
}:
let
  inherit (pkgs) lib;
  agent = self.packages.${system}.homelab-agent;

  evalTest = import ./eval.nix { inherit lib; };
  failures = lib.filter (r: !r.ok) evalTest.results;
  toml = name: text: pkgs.writeText "${name}.toml" text;
in
{
  # The agent, with its own tests (cargo test runs in the build).
  package = agent;

  # The evaluation test of check.sh (stub NixOS options), and the real agent on the
  # configs it generates.
  module-eval =
    pkgs.runCommand "homelab-agent-module-eval" { nativeBuildInputs = [ agent ]; }
      ''
        ${lib.concatMapStrings (r: ''
          echo ${lib.escapeShellArg "FAIL ${r.name}: ${r.detail}"}
        '') failures}
        ${lib.optionalString (failures != [ ]) "exit 1"}
        ${lib.concatStrings (
          lib.mapAttrsToList (name: c: ''
            homelab-agent --config ${toml name c.toml} config check
          '') evalTest.configs
        )}
        ${lib.concatStrings (
          lib.mapAttrsToList (name: c: ''
            code=0
            homelab-agent --config ${toml name c.toml} config check 2>err || code=$?
            cat err
            [ "$code" = 78 ] && grep -qF ${lib.escapeShellArg c.key} err
          '') evalTest.rejected
        )}
        echo ${toString (lib.length evalTest.results)} evaluation checks passed > $out
      '';

  # The module in a real NixOS evaluation: option names, the rendered units, and the
  # config file written by the real pkgs.formats.toml, checked by the agent.
  module-nixos = import ./module-nixos.nix { inherit system pkgs self nixpkgs; };

  options-doc = pkgs.runCommand "homelab-agent-options-doc" { } ''
    if ! diff -u ${../../docs/options.md} ${pkgs.writeText "options.md" (import ./options-doc.nix { inherit lib; })}; then
      echo "docs/options.md is stale: run bash tests/nix/gen-options-doc.sh" >&2
      exit 1
    fi
    touch $out
  '';
}
// lib.optionalAttrs (system == "x86_64-linux") {
  # NixOS VM tests: need KVM.
  vm-deploy = import ./vm-deploy.nix { inherit pkgs self nixpkgs; };
}
