# pi2: this host's own services (none yet beyond what every Pi has: SSH and the agent).
# Its name is what the agent looks up: nixosConfigurations.pi2 in flake.nix, and the
# right-hand side of its line in machines.toml.
{ ... }:
{
  networking.hostName = "pi2";

  # Its health checks are those of hosts/common.nix (SSH and the git server): add one here
  # for each service you enable, e.g. { http.url = "http://127.0.0.1/health"; }.
}
