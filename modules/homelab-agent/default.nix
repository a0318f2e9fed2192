# services.homelab-agent: a systemd timer runs `homelab-agent run --once`, which polls the
# homelab repository and deploys this machine's configuration (see ../../README.md).
# The options are declared in ./options.nix.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.homelab-agent;

  configPath = "/etc/homelab-agent/config.toml";

  # Drops nulls and the tables left empty by that, so that an option left at null leaves
  # its key out of the file and the agent applies its own default.
  prune =
    attrs:
    lib.filterAttrs (_: v: v != null && v != { }) (
      lib.mapAttrs (_: v: if builtins.isAttrs v then prune v else v) attrs
    );

  snakeCase = lib.replaceStrings lib.upperChars (map (c: "_" + c) lib.lowerChars);

  # { http = { url = ...; expectStatus = 200; }; } -> { type = "http"; url = ...; expect_status = 200; }
  renderCheck =
    check:
    let
      kind = lib.head (lib.attrNames check);
    in
    { type = kind; } // lib.mapAttrs' (n: v: lib.nameValuePair (snakeCase n) v) (prune check.${kind});

  # ssh://host/path or scp-style user@host:path
  isSshUrl = url: lib.hasPrefix "ssh://" url || builtins.match "[^/:@]+@[^/:]+:.*" url != null;

  knownHostsFile =
    if cfg.auth.knownHosts != "" then
      "${pkgs.writeText "homelab-agent-known-hosts" cfg.auth.knownHosts}"
    else
      cfg.auth.knownHostsFile;

  fromOptions = prune {
    source = {
      url = if cfg.repository.url == "" then null else cfg.repository.url;
      inherit (cfg.repository) branch;
      ssh_key_file = cfg.auth.sshKeyFile;
      known_hosts_file = knownHostsFile;
      token_file = cfg.auth.tokenFile;
    };
    # Map mode (./host-map.nix) finds the host per machine: no name of its own.
    host = if cfg.hostMap == null then { name = cfg.host; } else { map = cfg.hostMap; };
    build.timeout = cfg.build.timeout;
    metrics.textfile_dir = cfg.metrics.textfileDir;
    health = {
      inherit (cfg.health) settle timeout;
      checks = if cfg.health.checks == [ ] then null else map renderCheck cfg.health.checks;
    };
    reboot = cfg.reboot.rendered; # ./reboot.nix
  };

  # What the config file holds: the options, then `settings` over them.
  settings = lib.recursiveUpdate fromOptions cfg.settings;

  configFile = (pkgs.formats.toml { }).generate "homelab-agent.toml" settings;

  effectiveUrl = settings.source.url or "";
  effectiveHost = settings.host.name or "";

  # systemd's backstop for a whole run, which the agent bounds itself step by step. The
  # fallbacks are the agent's defaults, used only to size this limit; systemd adds the spans.
  startTimeout = lib.concatStringsSep " " [
    (settings.build.timeout or "2h")
    (settings.activation.timeout or "15min") # switch to the new system
    (settings.activation.timeout or "15min") # and, if unhealthy, back
    (settings.health.settle or "10s")
    (settings.health.timeout or "5min")
    "30min" # fetch, evaluation, bookkeeping
  ];

  hostPattern = "[A-Za-z0-9][A-Za-z0-9_-]{0,62}";
in
{
  imports = [
    ./options.nix
    ./push.nix
    ./trust.nix
    ./prebuilt.nix
    ./fetch-and-build.nix
    ./host-map.nix
    ./reboot.nix
    ./metrics.nix
    ./resources.nix
    ./uboot.nix
  ];

  config = lib.mkIf cfg.enable {
    # On what the file will hold, so that keys given through `settings` count too.
    assertions = [
      {
        assertion = effectiveUrl != "";
        message = ''services.homelab-agent.repository.url is empty: set it to the git URL of your homelab flake, e.g. "https://git.example.org/me/homelab.git".'';
      }
      {
        assertion = settings ? host.map || builtins.match hostPattern effectiveHost != null;
        message = ''services.homelab-agent.host is "${effectiveHost}", not a valid host name (1 to 63 letters, digits, '-' or '_', starting with a letter or digit): set networking.hostName, or services.homelab-agent.host to this machine's name in nixosConfigurations.'';
      }
      {
        assertion = !(cfg.auth.knownHosts != "" && cfg.auth.knownHostsFile != null);
        message = "services.homelab-agent.auth.knownHosts and auth.knownHostsFile are both set: keep one of them.";
      }
      {
        assertion = isSshUrl effectiveUrl -> settings ? source.ssh_key_file;
        message = ''services.homelab-agent.repository.url "${effectiveUrl}" is an SSH URL but no key is set: set services.homelab-agent.auth.sshKeyFile to the path of a deploy key, e.g. "/etc/homelab-agent/deploy-key".'';
      }
      {
        assertion = settings ? source.token_file -> builtins.match "https?://.*" effectiveUrl != null;
        message = ''services.homelab-agent.auth.tokenFile is only used with https:// URLs, but repository.url is "${effectiveUrl}": use an https:// URL, or auth.sshKeyFile for SSH.'';
      }
    ]
    ++ lib.imap0 (i: check: {
      assertion =
        check ? systemd
        -> (check.systemd.units != null && check.systemd.units != [ ]) || check.systemd.noFailedUnits == true;
      message = ''services.homelab-agent.health.checks entry ${toString i}: a systemd check needs units, e.g. { systemd.units = [ "sshd.service" ]; }, or noFailedUnits = true.'';
    }) cfg.health.checks;

    environment.etc."homelab-agent/config.toml".source = configFile;

    # So that `ssh pi homelab-agent status` works.
    environment.systemPackages = [ cfg.package ];

    systemd.services.homelab-agent = {
      description = "homelab-agent: deploy this machine's configuration from git";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      # The agent runs switch-to-configuration itself. If that switch restarted or stopped
      # this unit, it would kill the run that is activating and health-checking the new
      # system. Instead the run finishes, and the next one starts the new agent.
      restartIfChanged = false;
      stopIfChanged = false;
      # Nor stop it when a configuration without the agent is deployed: the running agent
      # still has to check that configuration's health and commit or roll it back.
      unitConfig.X-StopOnRemoval = false;

      # nix for `nix build`, git for nix's git fetcher, ssh for git over ssh, systemd for
      # systemd-run (activation in a transient unit) and systemctl (health checks).
      path = [
        config.nix.package
        pkgs.gitMinimal
        config.programs.ssh.package
        config.systemd.package
      ];
      # What nixpkgs' own upgrade service (system.autoUpgrade) passes to nix: the agent runs
      # `nix build` itself, as root, so the daemon's settings (nix.envVars) and the proxy
      # must reach its fetches too.
      environment = config.nix.envVars // config.networking.proxy.envVars // {
        # nix keeps its caches and user config there, as for nixos-rebuild.
        HOME = "/root";
      };

      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${lib.getExe cfg.package} --config ${configPath} run --once";
        # The agent reports its phase with sd_notify STATUS= (`systemctl status homelab-agent`).
        NotifyAccess = "main";
        StateDirectory = "homelab-agent";
        # Readable by every user, so `ssh pi homelab-agent status` works without sudo:
        # the state holds no secret (tokens and keys never reach it). The mirror of the
        # homelab repository in it, which may be private, is root only (0700): the agent
        # keeps it so.
        StateDirectoryMode = "0755";
        # Last-poll data lives in /run (not on the SD card) and must survive between runs.
        RuntimeDirectory = "homelab-agent";
        RuntimeDirectoryPreserve = "yes";
        TimeoutStartSec = startTimeout;
        # A killed run, a transient failure (75) or a failed rollback (3) is retried soon;
        # the next run resolves what the last one left. Not retried: a failed deployment
        # (1, it is rolled back and remembered as bad), usage (2), the lock being held (4)
        # and a bad configuration (78), which only a new configuration fixes.
        Restart = "on-failure";
        RestartSec = "2min";
        RestartPreventExitStatus = "1 2 4 78";
      };
    };

    systemd.timers.homelab-agent = {
      description = "Poll the homelab repository";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = cfg.bootDelay;
        OnUnitInactiveSec = cfg.interval;
        RandomizedDelaySec = cfg.randomizedDelay;
        AccuracySec = "1s";
        # No Persistent=: it only applies to OnCalendar=. These monotonic timers need
        # nothing to catch up on, since OnBootSec= runs the agent soon after every boot.
      };
    };
  };
}
