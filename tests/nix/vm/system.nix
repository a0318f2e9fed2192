# The test machine's configuration, evaluated the same way on the host (where
# vm-deploy.nix builds it into the VM's store) and inside the VM (where the agent
# evaluates the committed flake): same nixpkgs, same modules in the same order, hence the
# same derivations, so the agent's `nix build` in the VM, which has no network, finds
# everything already built.
{
  nixpkgs,
  homelab-agent,
  network,
  release,
}:
import "${nixpkgs}/nixos/lib/eval-config.nix" {
  system = "x86_64-linux";
  modules = [
    # What the test driver needs (its backdoor shell, the VM's disks) stays across switches.
    "${nixpkgs}/nixos/lib/testing/nixos-test-base.nix"
    # The test network's addresses and host name (nodes.machine.system.build.networkConfig).
    network
    "${homelab-agent}/modules/homelab-agent"
    ./machine.nix
    release
  ];
}
