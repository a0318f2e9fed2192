# Deploy on push: SSH keys that may start a run of this machine's agent, and nothing
# else. Each key is added to root's authorized_keys with a forced command and
# `restrict` (no shell, no other command, no forwarding, no pty); the repository's
# post-receive hook (contrib/post-receive) uses it. See README "Deploy on push".
{
  config,
  lib,
  ...
}:
let
  cfg = config.services.homelab-agent;
  forced = ''command="${lib.getExe cfg.package} --config /etc/homelab-agent/config.toml trigger",restrict'';
  # A bare public key: options of its own would weaken or replace the restriction.
  bareKey = key: builtins.match "(ssh|ecdsa|sk)-[^ ]+ [A-Za-z0-9+/=]+( .*)?" key != null;
in
{
  options.services.homelab-agent.trigger.authorizedKeys = lib.mkOption {
    type = lib.types.listOf lib.types.str;
    default = [ ];
    example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample git-server" ];
    description = ''
      Public keys (one `authorized_keys` line each, without options) that may start a run
      of the agent now, for deploy on push. Each is added to root's authorized keys as
      `command="homelab-agent --config /etc/homelab-agent/config.toml trigger",restrict <key>`:
      whatever a client asks, only `homelab-agent trigger` runs (it starts
      homelab-agent.service and returns), with no pty and no forwarding. Give the key to
      the repository's post-receive hook (contrib/post-receive).
    '';
  };

  config = lib.mkIf (cfg.enable && cfg.trigger.authorizedKeys != [ ]) {
    assertions = map (key: {
      assertion = bareKey key;
      message = ''services.homelab-agent.trigger.authorizedKeys: "${key}" is not a bare public key ("ssh-ed25519 AAAA... comment"): leave out authorized_keys options, the module adds command= and restrict itself.'';
    }) cfg.trigger.authorizedKeys;
    users.users.root.openssh.authorizedKeys.keys = map (key: "${forced} ${key}") cfg.trigger.authorizedKeys;
  };
}
