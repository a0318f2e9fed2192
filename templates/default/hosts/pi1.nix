# pi1: this host's own services. Its name is what the agent looks up:
# nixosConfigurations.pi1 in flake.nix.
{ ... }:
{
  networking.hostName = "pi1";

  services.nginx = {
    enable = true;
    virtualHosts.default.locations."/health".return = "200 ok";
  };
  networking.firewall.allowedTCPPorts = [ 80 ];

  # The web server must answer before a deployment is kept (merged with hosts/common.nix).
  services.homelab-agent.health.checks = [
    {
      http = {
        url = "http://127.0.0.1/health";
        expectStatus = 200;
        bodyContains = "ok";
      };
    }
  ];
}
