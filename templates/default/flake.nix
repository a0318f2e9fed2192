{
  description = "My homelab: NixOS machines deployed by homelab-agent";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # A placeholder: replace it with where you get homelab-agent from (its git URL or a
    # fork), then `nix flake lock` and commit flake.lock (the agent never writes it).
    homelab-agent.url = "github:homelab-agent/homelab-agent";
    homelab-agent.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs =
    {
      self,
      nixpkgs,
      homelab-agent,
    }:
    let
      # Every machine pulls its configuration from where this repository is pushed.
      repository = "https://git.example.org/me/homelab.git";
      # Who may log in over SSH (as root; passwords are off).
      authorizedKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... me@laptop" ];

      # A Raspberry Pi: the SD card layout, key-only SSH and the agent (provisioning),
      # this repository's commit stamped into `nixos-version --json`, and the host's own
      # configuration.
      pi =
        hostModule:
        nixpkgs.lib.nixosSystem {
          specialArgs = { inherit repository authorizedKeys; };
          modules = [
            homelab-agent.nixosModules.provisioning
            (homelab-agent.lib.versionModule self)
            ./hosts/common.nix
            hostModule
          ];
        };
    in
    {
      # The agent on each machine builds nixosConfigurations.<its host name>.
      nixosConfigurations.pi1 = pi ./hosts/pi1.nix;

      # The SD card image to flash: pi1 as it is at this commit.
      # On an aarch64 machine, or with binfmt emulation / a remote aarch64 builder:
      packages.aarch64-linux.sd-image-pi1 = self.nixosConfigurations.pi1.config.system.build.sdImage;
      # Cross-compiled on x86_64 (its store paths differ from native builds, so the first
      # deployment on the Pi downloads or builds the native system):
      packages.x86_64-linux.sd-image-pi1-cross =
        (self.nixosConfigurations.pi1.extendModules {
          modules = [ { nixpkgs.buildPlatform = "x86_64-linux"; } ];
        }).config.system.build.sdImage;
    };
}
