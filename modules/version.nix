# Stamps the system with the git commit of the flake it was built from, so that
# `nixos-version --json` (configurationRevision) names the commit a machine runs.
#
# A function of that flake's `self`:
#   this repository's flake:  nixosModules.version = import ./modules/version.nix self;
#   your homelab flake:       modules = [ (homelab-agent.lib.versionModule self) ... ];
# A clean tree has `rev`; a dirty one only `dirtyRev` ("<rev>-dirty", Nix 2.18+); neither
# (e.g. a path: flake) leaves the revision unset.
#
# The same commit is also written into the system itself, as
# <toplevel>/etc/homelab-agent/configuration-revision: homelab-agent reads that file (no
# process) as the floor no new head may go below (no silent downgrade), even when its
# state file is lost.
flake:
{ config, lib, ... }:
{
  system.configurationRevision = lib.mkDefault (flake.rev or flake.dirtyRev or null);
  environment.etc."homelab-agent/configuration-revision" =
    lib.mkIf (config.system.configurationRevision != null)
      {
        text = config.system.configurationRevision + "\n";
      };
}
