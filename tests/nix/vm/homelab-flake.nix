# The homelab flake committed inside the VM test; vm-deploy.nix fills in the store paths.
# Both inputs are already in the VM's store, and vm/system.nix evaluates the machine as the
# host did when it built it, so the agent's build is a no-op without network.
{
  inputs = {
    nixpkgs = {
      url = "path:@nixpkgs@";
      flake = false;
    };
    homelab-agent = {
      url = "path:@homelab-agent@";
      flake = false;
    };
  };

  outputs =
    { nixpkgs, homelab-agent, ... }:
    {
      nixosConfigurations.machine = import ./system.nix {
        inherit nixpkgs homelab-agent;
        network = builtins.fromJSON (builtins.readFile ./network.json);
        release = ./release.nix;
      };
    };
}
