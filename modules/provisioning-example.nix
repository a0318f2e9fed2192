# The values behind this flake's nixosConfigurations.provisioning and its sd-image
# packages: an example and a build check. Your own image comes from your homelab flake
# (templates/default), with your host name, repository and keys.
{ lib, ... }:
{
  nixpkgs.hostPlatform = "aarch64-linux";
  networking.hostName = lib.mkDefault "pi1";
  # The release this flake's nixpkgs input is: the example's first installation.
  system.stateVersion = lib.mkDefault "26.05";
  services.homelab-agent.repository.url = lib.mkDefault "https://git.example.org/me/homelab.git";
}
