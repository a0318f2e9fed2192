# The options of services.homelab-agent. The service itself is in ./default.nix.
#
# Every option that maps to a key of the agent's config file is nullable and defaults to
# null, which leaves the key out of the file: the defaults live in the agent (one copy),
# and docs/contract-extensions.md lists them.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types literalExpression;

  # A span that both the agent (agent/src/time.rs) and systemd (systemd.time(7)) read the same way:
  # "90s", "5min", "2h 30min". Months and years are left out ("M" and "m" differ in case only).
  duration =
    types.strMatching "[0-9]+ ?(ns|nsec|us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|h|hr|hour|hours|d|day|days|w|week|weeks)( ?[0-9]+ ?(ns|nsec|us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|h|hr|hour|hours|d|day|days|w|week|weeks))*"
    // {
      description = ''duration such as "30s", "5min" or "2h 30min"'';
    };

  # Secrets are named by a string path, never a Nix path: a path literal would copy the
  # secret into the world-readable Nix store.
  secretFile =
    types.addCheck types.str (p: lib.hasPrefix "/" p && !lib.hasPrefix "${builtins.storeDir}/" p)
    // {
      description = "absolute path outside the Nix store (a string)";
    };

  # An option for one key of the config file: null (the default) leaves the key out.
  nullable =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  # Options every health check takes.
  checkCommon = {
    name = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Name shown in status and logs. `null`: the agent derives one from the check.";
    };
    timeout = mkOption {
      type = types.nullOr duration;
      default = null;
      description = "Time limit for one attempt of this check. `null`: the agent's default for its kind.";
    };
  };

  checkKind =
    description: options:
    mkOption {
      inherit description;
      type = types.submodule {
        _file = ./options.nix; # names this file as the fields' declaration in docs/options.md
        options = checkCommon // options;
      };
    };

  healthCheck = types.attrTag {
    systemd = checkKind "Systemd units must be active (and optionally: no unit failed)." {
      units = mkOption {
        type = types.nullOr (types.listOf (types.strMatching "[A-Za-z0-9:_.@\\\\-]+"));
        default = null;
        example = [ "sshd.service" ];
        description = "Units that must be active.";
      };
      noFailedUnits = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = "Also require that no unit at all is in the failed state (`no_failed_units`).";
      };
    };
    http = checkKind "An HTTP(S) endpoint must answer." {
      url = mkOption {
        type = types.strMatching "https?://.+";
        example = "http://127.0.0.1:8080/health";
        description = "URL to request.";
      };
      expectStatus = mkOption {
        type = types.nullOr (types.ints.between 100 599);
        default = null;
        example = 200;
        description = "Required status (`expect_status`). `null`: any 2xx.";
      };
      bodyContains = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "ok";
        description = "Text the response body must contain (`body_contains`).";
      };
      insecureTls = mkOption {
        type = types.nullOr types.bool;
        default = null;
        description = "Accept any TLS certificate (`insecure_tls`).";
      };
    };
    tcp = checkKind "A TCP port must accept connections." {
      address = mkOption {
        type = types.strMatching ".+:[0-9]+";
        example = "127.0.0.1:22";
        description = "`HOST:PORT` to connect to.";
      };
    };
    command = checkKind "A command must exit 0." {
      command = mkOption {
        type = types.nonEmptyListOf types.str;
        example = [
          "/run/current-system/sw/bin/test"
          "-e"
          "/run/myapp/ready"
        ];
        description = "Argument vector (no shell), first element the program.";
      };
    };
    remote = checkKind "The git remote must still be reachable from the new system." { };
  };
in
{
  options.services.homelab-agent = {
    enable = lib.mkEnableOption "homelab-agent, which pulls this machine's configuration from git, builds it here and deploys it, rolling back when its health checks fail";

    package = mkOption {
      type = types.package;
      default = pkgs.homelab-agent or (pkgs.callPackage ../../pkgs/homelab-agent.nix { });
      defaultText = literalExpression "pkgs.homelab-agent or (pkgs.callPackage \"\${homelab-agent}/pkgs/homelab-agent.nix\" { })";
      description = "The homelab-agent package (the flake's `overlays.default` provides `pkgs.homelab-agent`).";
    };

    repository = {
      url = mkOption {
        type = types.str;
        default = "";
        example = "https://git.example.org/me/homelab.git";
        description = ''
          Git URL of your homelab flake (`source.url`): `https://`, `ssh://`, scp-style
          `user@host:path`, `git://`, `file://` or an absolute path. Required.
        '';
      };
      branch = nullable (types.strMatching "[A-Za-z0-9._/-]+") "Branch to deploy (`source.branch`). `null`: the agent's default, `main`.";
    };

    host = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = literalExpression "config.networking.hostName";
      example = "pi1";
      description = ''
        Name of this machine in your flake (`host.name`): the agent builds
        `nixosConfigurations."<host>".config.system.build.toplevel`.
      '';
    };

    interval = mkOption {
      type = duration;
      default = "5min";
      description = "Time between the end of one run and the start of the next (the timer's `OnUnitInactiveSec`).";
    };

    randomizedDelay = mkOption {
      type = duration;
      default = "1min";
      description = "Random extra delay before each run (`RandomizedDelaySec`), so machines do not all poll at once.";
    };

    bootDelay = mkOption {
      type = duration;
      default = "2min";
      description = "Time after boot before the first run (`OnBootSec`), leaving the network and clock time to settle.";
    };

    auth = {
      sshKeyFile = nullable secretFile ''
        Private key for `ssh://` and `user@host:path` URLs (`source.ssh_key_file`), e.g. a
        deploy key provisioned by sops-nix or agenix. Readable by root only.
      '';
      knownHosts = mkOption {
        type = types.lines;
        default = "";
        example = "git.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...";
        description = ''
          known_hosts lines that pin the git server's SSH host key; written to a file in the
          Nix store (`source.known_hosts_file`). Set this or {option}`services.homelab-agent.auth.knownHostsFile`.
          Both empty: the agent uses `/etc/ssh/ssh_known_hosts` (see `programs.ssh.knownHosts`).
        '';
      };
      knownHostsFile = nullable types.str "A known_hosts file to use instead of {option}`services.homelab-agent.auth.knownHosts` (`source.known_hosts_file`).";
      tokenFile = nullable secretFile ''
        File holding an access token for an `https://` URL (`source.token_file`). Never logged,
        never stored in the agent's state.
      '';
    };

    build.timeout = nullable duration "Limit for evaluating and building one commit (`build.timeout`). `null`: the agent's default.";

    health = {
      settle = nullable duration "Wait after activation before the first health check (`health.settle`). `null`: the agent's default.";
      timeout = nullable duration "All health checks must pass within this time, else the deployment is rolled back (`health.timeout`). `null`: the agent's default.";
      checks = mkOption {
        type = types.listOf healthCheck;
        default = [ ];
        example = literalExpression ''
          [
            { systemd.units = [ "sshd.service" "nginx.service" ]; }
            { http = { url = "http://127.0.0.1:8080/health"; expectStatus = 200; }; }
            { tcp.address = "127.0.0.1:22"; }
            { command.command = [ "/run/current-system/sw/bin/true" ]; }
            { remote = { }; }
          ]
        '';
        description = ''
          Checks a new configuration must pass after activation (`[[health.checks]]`), each
          one kind: `systemd`, `http`, `tcp`, `command` or `remote`. A deployment whose checks
          do not all pass within {option}`services.homelab-agent.health.timeout` is rolled back.
        '';
      };
    };

    settings = mkOption {
      type = (pkgs.formats.toml { }).type;
      default = { };
      example = literalExpression ''
        {
          build.max_jobs = 2;
          activation.timeout = "30m";
          health.consecutive = 2;
        }
      '';
      description = ''
        Anything else for the agent's config file (`/etc/homelab-agent/config.toml`), with
        the keys of docs/contract-extensions.md. Merged over the options above with
        `lib.recursiveUpdate`: a key set here wins, a list set here replaces.
      '';
    };
  };
}
