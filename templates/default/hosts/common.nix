# What every Pi of this homelab shares.
{
  lib,
  repository,
  authorizedKeys,
  ...
}:
{
  nixpkgs.hostPlatform = "aarch64-linux";

  homelab.provisioning.authorizedKeys = authorizedKeys;

  services.homelab-agent = {
    enable = true;
    repository.url = repository;
    # For a private repository over SSH:
    #   repository.url = "git@git.example.org:me/homelab.git";
    #   auth.sshKeyFile = "/etc/homelab-agent/deploy-key";  # copy it there once, by hand or with sops-nix/agenix
    #   auth.knownHosts = "git.example.org ssh-ed25519 AAAA...";
    bootDelay = "2min";

    # A deployment is kept only if these pass; otherwise the Pi goes back to the previous
    # system. Include whatever must work for you to reach the Pi again.
    health.checks = [
      { systemd.units = [ "sshd.service" ]; }
      { tcp.address = "127.0.0.1:22"; }
      { remote = { }; } # the git server is still reachable, so the next fix can arrive
    ];
  };

  # Evaluating a NixOS system takes 1 to 2 GB of memory, more than a Pi 3 or a 1 GB Pi 4
  # has: compressed swap in RAM (not on the SD card) lets it finish. The agent's own
  # memory guard (services.homelab-agent.resources.memoryMax) stops a build that still
  # outgrows the board, without blaming the commit.
  zramSwap = {
    enable = true;
    memoryPercent = 50;
  };

  # Firmware for the Pi's Wi-Fi and Bluetooth.
  hardware.enableRedistributableFirmware = lib.mkDefault true;

  # Keep the SD card from filling up with old generations.
  nix.gc = {
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 30d";
  };

  system.stateVersion = "26.05"; # the release of the first installation; do not bump it
}
