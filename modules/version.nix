# Stamps the system with the git commit of the flake it was built from, so that
# `nixos-version --json` (configurationRevision) names the commit a machine runs.
#
# A function of that flake's `self`:
#   this repository's flake:  nixosModules.version = import ./modules/version.nix self;
#   your homelab flake:       modules = [ (homelab-agent.lib.versionModule self) ... ];
# A clean tree has `rev`; a dirty one only `dirtyRev` ("<rev>-dirty", Nix 2.18+); neither
# (e.g. a path: flake) leaves the revision unset.
flake:
{ lib, ... }:
{
  system.configurationRevision = lib.mkDefault (flake.rev or flake.dirtyRev or null);
}
