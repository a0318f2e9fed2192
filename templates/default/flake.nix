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
      # this repository's commit stamped into `nixos-version --json`, what every Pi
      # shares, and the machine's own configuration.
      pi =
        provisioning: hostModule:
        nixpkgs.lib.nixosSystem {
          specialArgs = { inherit repository authorizedKeys; };
          modules = [
            provisioning
            (homelab-agent.lib.versionModule self)
            ./hosts/common.nix
            hostModule
          ];
        };
      host = pi homelab-agent.nixosModules.provisioning;
    in
    {
      # The agent on each Pi builds nixosConfigurations.<its host name>.
      nixosConfigurations.pi1 = host ./hosts/pi1.nix;
      nixosConfigurations.pi2 = host ./hosts/pi2.nix;

      # The generic image's system: no host of its own. A Pi flashed with it finds its
      # host in ./machines.toml (by serial number or MAC address; `homelab-agent status`
      # on the Pi says which line to add) and deploys it.
      nixosConfigurations.generic = pi homelab-agent.nixosModules.generic { };

      # The SD card image to flash on every Pi: the generic one.
      # On an aarch64 machine, or with binfmt emulation / a remote aarch64 builder:
      packages.aarch64-linux.sd-image = self.nixosConfigurations.generic.config.system.build.sdImage;
      # Cross-compiled on x86_64 (its store paths differ from native builds, so the first
      # deployment on the Pi downloads or builds the native system):
      packages.x86_64-linux.sd-image-cross =
        (self.nixosConfigurations.generic.extendModules {
          modules = [ { nixpkgs.buildPlatform = "x86_64-linux"; } ];
        }).config.system.build.sdImage;
      # Or an image that is pi1 from the start (no machines.toml line needed):
      packages.aarch64-linux.sd-image-pi1 = self.nixosConfigurations.pi1.config.system.build.sdImage;
    };
}
