# The generic provisioning image: one SD card image for every Pi of a homelab. It has no
# host of its own: on first boot its agent runs in map mode (services.homelab-agent.hostMap),
# finds which nixosConfigurations entry this Pi is in the repository's machines.toml (by
# serial number or MAC address), or in /boot/firmware/homelab-host if written when flashing,
# and deploys that host through the usual test, health check and commit. The deployed
# host's own configuration names itself, so from then on the Pi follows it.
#
# A Pi that is not listed stays on this system, keeps polling, and says in
# `homelab-agent status` which line to add to machines.toml (docs/nixos.md).
{ lib, ... }:
{
  imports = [ ./provisioning.nix ];

  # Not a host of the flake: a name for the network until the Pi has its own.
  networking.hostName = lib.mkDefault "homelab-generic";

  services.homelab-agent.hostMap = lib.mkDefault "machines.toml";

  # The release the image is built from (this flake's nixpkgs input): a first installation.
  # The host each Pi becomes sets its own (templates/default/hosts/common.nix).
  system.stateVersion = lib.mkDefault "26.05";

  # The SD image's firmware partition is not mounted by default (noauto); the agent reads
  # the host file written on it when flashing, so this system mounts it, read-only.
  fileSystems."/boot/firmware".options = lib.mkForce [
    "nofail"
    "ro"
  ];
}
