# Map mode, for the generic image (../generic.nix): instead of a host name, the agent gets
# the path of a machine map in the homelab repository, and finds per run which
# nixosConfigurations entry this machine is (by serial number, MAC address, or a host file
# on the boot partition). The rendering into the config file is in ./default.nix.
{ lib, ... }:
{
  options.services.homelab-agent.hostMap = lib.mkOption {
    type = lib.types.nullOr (
      lib.types.addCheck (lib.types.strMatching "[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*") (
        p:
        !lib.any (part: part == "." || part == "..") (lib.splitString "/" p)
      )
      // {
        description = "path inside the repository, such as \"machines.toml\"";
      }
    );
    default = null;
    example = "machines.toml";
    description = ''
      Map mode (`[host] map`): the path, inside the homelab repository, of the machine map
      that says which `nixosConfigurations` entry each machine is, one
      `serial-<serial number> = "<host>"` or `mac-<aa-bb-cc-dd-ee-ff> = "<host>"` line per
      machine. The agent reads it from each fetched commit and deploys the entry that names
      this machine; a file `/boot/firmware/homelab-host` holding a host name wins over the
      map. A machine that is not listed stays as it is, keeps polling, and
      `homelab-agent status` shows the line to add. Replaces `host`: set one of them.
      `null`: the agent deploys `host`.
    '';
  };
}
