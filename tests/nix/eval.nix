# The module evaluation test: our modules evaluated with nixpkgs' lib.evalModules against
# stub NixOS options (stubs/nixos.nix) and a stub pkgs (stubs/pkgs.nix). Needs only
# nixpkgs' lib, so it runs with Nix 2.8 and no nixpkgs:
#
#   nix-instantiate --eval --strict --json --read-write-mode tests/nix/eval.nix \
#     --argstr nixpkgsLib /path/to/lib
#
# (--read-write-mode: the documented examples are read from README.md and docs/
# and written to the store with builtins.toFile, to be imported.) Besides the modules, it
# evaluates those examples and the template through this repository's flake.nix with a
# stand-in nixpkgs (stand-in/nixpkgs.nix), and checks what the documents tell a newcomer.
#
# Returns { results = [ { name; ok; detail; } ]; configs = { <case> = { toml; value; }; };
# rejected = { <case> = { toml; key; }; }; }. tests/nix/check.sh counts the results, reads
# each TOML back to compare with its value, and runs `homelab-agent config check` on it:
# `configs` must be accepted, `rejected` refused with exit 78 naming `key`.
{
  nixpkgsLib ? null,
  lib ? import (/. + nixpkgsLib),
}:
let
  inherit (builtins) toJSON tryEval deepSeq;

  pkgs = import ./stubs/pkgs.nix { inherit lib; };
  toTOML = import ./lib/toml.nix { inherit lib; };
  fake = name: "${builtins.storeDir}/00000000000000000000000000000000-${name}";

  evalWith =
    modules:
    (lib.evalModules {
      modules = [
        ./stubs/nixos.nix
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
      specialArgs.modulesPath = ./stubs/modules;
    }).config;

  # One configuration of the agent module, and what a test looks at.
  agent =
    config:
    let
      c = evalWith [
        ../../modules/homelab-agent
        config
      ];
    in
    {
      inherit c;
      failed = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
      unit = c.systemd.services.homelab-agent;
      timer = c.systemd.timers.homelab-agent;
      toml = c.environment.etc."homelab-agent/config.toml".source.value;
    };

  # A value, or a marker when evaluating it throws, so that one broken case is one failure.
  attempt =
    v:
    let
      r = tryEval (deepSeq v v);
    in
    if r.success then r.value else "<evaluation failed>";

  expect = name: actual: expected: {
    inherit name;
    ok = attempt actual == expected;
    detail = "expected ${toJSON expected}, got ${toJSON (attempt actual)}";
  };

  # The configuration must be refused: a failed assertion whose message contains `fragment`.
  expectAssertion =
    name: config: fragment:
    let
      failed = attempt (agent config).failed;
    in
    {
      inherit name;
      ok = builtins.isList failed && lib.any (lib.hasInfix fragment) failed;
      detail = "expected a failed assertion mentioning ${toJSON fragment}, got ${toJSON failed}";
    };

  # The configuration must not evaluate at all (a type error).
  expectTypeError = name: config: {
    inherit name;
    ok =
      let
        a = agent config;
      in
      !(tryEval (deepSeq [ a.toml a.unit a.timer ] true)).success;
    detail = "expected a type error, but it evaluated";
  };

  url = "https://git.example.org/me/homelab.git";
  base = extra: {
    networking.hostName = "pi1";
    services.homelab-agent = {
      enable = true;
      repository.url = url;
    }
    // extra;
  };

  minimal = agent (base { });

  withMetrics = agent (base { metrics.textfileDir = "/var/lib/prometheus-node-exporter/textfile"; });

  # services.homelab-agent.reboot.uboot (modules/homelab-agent/uboot.nix).
  withUboot = agent (base { reboot.uboot.enable = true; });
  ubootSetup = withUboot.c.systemd.services.homelab-agent-uboot-setup;

  full = agent {
    networking.hostName = "pi1";
    services.homelab-agent = {
      enable = true;
      repository = {
        url = "git@git.example.org:me/homelab.git";
        branch = "production";
      };
      host = "garage-pi";
      interval = "10min";
      randomizedDelay = "30s";
      bootDelay = "5min";
      auth = {
        sshKeyFile = "/run/keys/deploy";
        knownHosts = "git.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample";
      };
      build.timeout = "3h";
      health = {
        settle = "5s";
        timeout = "2min";
        checks = [
          { systemd.units = [ "sshd.service" ]; }
          {
            systemd = {
              noFailedUnits = true;
              name = "nothing failed";
            };
          }
          {
            http = {
              url = "http://127.0.0.1:8080/health";
              expectStatus = 200;
              bodyContains = "ok";
              timeout = "3s";
            };
          }
          { tcp.address = "127.0.0.1:22"; }
          { command.command = [ "/run/current-system/sw/bin/true" ]; }
          { remote = { }; }
        ];
      };
      settings = {
        build.max_jobs = 2;
        activation.timeout = "30m";
        health.consecutive = 2;
      };
    };
  };

  fullToml = {
    source = {
      url = "git@git.example.org:me/homelab.git";
      branch = "production";
      ssh_key_file = "/run/keys/deploy";
      known_hosts_file = fake "homelab-agent-known-hosts";
    };
    host.name = "garage-pi";
    build = {
      timeout = "3h";
      max_jobs = 2;
    };
    activation.timeout = "30m";
    health = {
      settle = "5s";
      timeout = "2min";
      consecutive = 2;
      checks = [
        {
          type = "systemd";
          units = [ "sshd.service" ];
        }
        {
          type = "systemd";
          no_failed_units = true;
          name = "nothing failed";
        }
        {
          type = "http";
          url = "http://127.0.0.1:8080/health";
          expect_status = 200;
          body_contains = "ok";
          timeout = "3s";
        }
        {
          type = "tcp";
          address = "127.0.0.1:22";
        }
        {
          type = "command";
          command = [ "/run/current-system/sw/bin/true" ];
        }
        { type = "remote"; }
      ];
    };
  };

  # Given only through `settings`, the URL satisfies the module too.
  viaSettings = agent {
    networking.hostName = "pi1";
    services.homelab-agent = {
      enable = true;
      settings.source.url = "file:///srv/git/homelab.git";
    };
  };

  withToken = agent (base {
    auth.tokenFile = "/run/keys/git-token";
    auth.knownHostsFile = "/etc/ssh/extra_known_hosts";
  });

  withSsh = agent (base {
    trust = {
      verify = "ssh";
      allowedSigners = "me@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample";
    };
  });
  withGpg = agent (base {
    trust = {
      verify = "gpg";
      keyringFile = "/etc/homelab-agent/deployers.gpg";
      allowDowngrade = true;
    };
  });
  # prebuilt.nix: signed manifests of systems built elsewhere (issue 24).
  withPrebuilt = agent (base {
    prebuilt = {
      enable = true;
      allowedSigners = "ci@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample";
      wait = "2h";
    };
  });
  withPrebuiltGpg = agent (base {
    prebuilt = {
      enable = true;
      keyringFile = "/etc/homelab-agent/ci.gpg";
      branch = "ci/prebuilt";
    };
  });
  # tls-subst: a private CA, a local-build limit, the per-host testing branch (fetch-and-build.nix).
  withTrust = agent (base {
    repository = {
      inherit url;
      testingBranch = "testing/{host}";
    };
    auth.caFile = "/etc/ssl/homelab-ca.pem";
    build.maxLocalBuilds = 0;
  });

  withEnv = agent {
    imports = [ (base { }) ];
    nix.envVars = {
      NIX_SSHOPTS = "-o ServerAliveInterval=10";
      GIT_ASKPASS = "/run/keys/askpass";
      HOME = "/var/empty"; # the unit's own HOME wins
    };
    networking.proxy.envVars.http_proxy = "http://proxy.lan:3128";
  };

  disabled = evalWith [
    ../../modules/homelab-agent
    { services.homelab-agent.repository.url = url; }
  ];

  # services.homelab-agent.reboot (modules/homelab-agent/reboot.nix).
  rebooting = agent (base {
    # verify-boot's checks: the agent refuses "when-required" without any.
    health.checks = [ { systemd.units = [ "sshd.service" ]; } ];
    reboot = {
      policy = "when-required";
      delay = "10min";
      maxWait = "3d";
      window = {
        days = [
          "sat"
          "sun"
        ];
        start = "02:00";
        end = "5:30";
        timezone = "Europe/Berlin";
      };
      fleetlock = {
        url = "http://lock.lan:8080";
        group = "pis";
      };
    };
  });
  rebootingVerify = rebooting.c.systemd.services.homelab-agent-verify-boot;

  version = self: (evalWith [ (import ../../modules/version.nix self) ]).system.configurationRevision;
  versionStamp =
    self:
    let
      etc = (evalWith [ (import ../../modules/version.nix self) ]).environment.etc;
    in
    if etc ? "homelab-agent/configuration-revision" then
      etc."homelab-agent/configuration-revision".text
    else
      null;

  provisioningWith =
    extra: keys:
    evalWith [
      ../../modules/provisioning.nix
      {
        networking.hostName = "pi1";
        services.homelab-agent.repository.url = url;
        homelab.provisioning.authorizedKeys = keys;
      }
      extra
    ];
  provisioning = provisioningWith { system.stateVersion = "26.05"; };
  provisioned = provisioning [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop" ];
  # A host that imports the provisioning module and forgets its state version.
  noStateVersion = provisioningWith { } [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop" ];

  # This repository's flake, its nixpkgs input replaced by the stand-in (the real lib, stub
  # NixOS options): what a homelab flake gets as its homelab-agent input.
  standIn = import ./stand-in/nixpkgs.nix { inherit lib; };
  homelabAgent = (import ../../flake.nix).outputs {
    self = homelabAgent // {
      outPath = "/homelab-agent-stand-in";
    };
    nixpkgs = standIn;
  };

  # A homelab flake's outputs, with the stand-in nixpkgs and this homelab-agent.
  homelab =
    flake:
    let
      outputs = flake.outputs {
        self = outputs // {
          rev = "0123abc";
        };
        nixpkgs = standIn;
        homelab-agent = homelabAgent;
      };
    in
    outputs;

  # The documented one-file homelab flake, as the document shows it: its ```nix block that
  # is a flake (starts with `inputs`).
  docExample =
    file:
    let
      blocks = map (b: lib.head (lib.splitString "\n```" b)) (
        lib.tail (lib.splitString "```nix\n" (builtins.readFile file))
      );
      flakes = lib.filter (lib.hasPrefix "{\n  inputs") blocks;
    in
    if lib.length flakes != 1 then
      throw "${toString file}: expected one ```nix block holding a flake, found ${toString (lib.length flakes)}"
    else
      import (builtins.toFile "homelab-example-flake.nix" (lib.head flakes));

  served = import ./lib/served.nix { inherit lib; };

  # What a homelab flake's pi1 must be: it evaluates, its checks have something to check,
  # it is stamped with the commit, and its SD image is an output.
  examples =
    lib.concatMap
      (
        { name, flake }:
        let
          outputs = homelab flake;
          inherit (outputs.nixosConfigurations.pi1) config;
        in
        [
          (expect "${name}: pi1 has no failed assertion" (map (a: a.message) (
            lib.filter (a: !a.assertion) config.assertions
          )) [ ])
          (expect "${name}: pi1 has a system (config.system.build.toplevel)"
            config.system.build.toplevel.name
            "nixos-system-pi1"
          )
          (expect "${name}: every health check of pi1 is served by what pi1 enables" (served config) [ ])
          (expect "${name}: pi1 names its commit" config.system.configurationRevision "0123abc")
          (expect "${name}: pi1's SD image is an output" outputs.packages.aarch64-linux.sd-image-pi1.name
            "sd-image"
          )
        ]
      )
      [
        {
          name = "docs/nixos.md example";
          flake = docExample ../../docs/nixos.md;
        }
        {
          name = "docs/quick-start.md example";
          flake = docExample ../../docs/quick-start.md;
        }
        {
          name = "template";
          flake = import ../../templates/default/flake.nix;
        }
      ];

  # Every ```nix block of the documents that sets services.homelab-agent options (a module
  # fragment, not a flake), evaluated on a host as a user would paste it: whole (every
  # unit, the config file), with no failed assertion and no warning.
  snippets =
    file:
    lib.filter (lib.hasPrefix "services.homelab-agent") (
      map (b: lib.trim (lib.head (lib.splitString "```" b))) (
        lib.tail (lib.splitString "```nix\n" (builtins.readFile file))
      )
    );
  snippetResults = lib.concatMap (
    file:
    lib.imap1 (
      i: text:
      let
        fragment = import (builtins.toFile "snippet.nix" "{ config, lib, pkgs, ... }: {\n${text}\n}");
        a = agent (
          { config, ... }:
          {
            imports = [ fragment ];
            networking.hostName = "pi1";
            services.homelab-agent = {
              enable = true;
              repository.url = lib.mkDefault url;
            };
          }
        );
      in
      expect "${baseNameOf (toString file)} snippet ${toString i}: evaluates whole, no failed assertion, no warning" {
        inherit (a) failed;
        inherit (a.c) warnings;
        units = builtins.seq (deepSeq a.c.systemd.services (deepSeq a.c.systemd.timers a.toml)) true;
      } {
        failed = [ ];
        warnings = [ ];
        units = true;
      }
    ) (snippets file)
  ) [
    ../../README.md
    ../../docs/nixos.md
    ../../docs/quick-start.md
    ../../docs/monitoring.md
    ../../docs/notifications.md
    ../../docs/deploy-on-push.md
  ];

  # When the template's Pis first poll after boot: OnBootSec, plus up to RandomizedDelaySec.
  firstPoll =
    let
      template = homelab (import ../../templates/default/flake.nix);
      minutes = s: lib.toInt (lib.removeSuffix "min" s);
      window =
        name:
        let
          t = template.nixosConfigurations.${name}.config.systemd.timers.homelab-agent.timerConfig;
        in
        "${toString (minutes t.OnBootSec)} to ${toString (minutes t.OnBootSec + minutes t.RandomizedDelaySec)} minutes after boot";
    in
    assert window "pi1" == window "generic";
    window "pi1";

  # What the documents must say where a newcomer follows them step by step.
  has = name: text: fragments: {
    inherit name;
    ok = lib.all (f: lib.hasInfix f text) fragments;
    detail = "missing: ${toJSON (lib.filter (f: !lib.hasInfix f text) fragments)}";
  };
  nixosDoc = builtins.readFile ../../docs/nixos.md;
  # From the remote builder's step to the next one.
  builderRecipe = lib.head (
    lib.splitString "3. **Cross-compilation**" (
      lib.last (lib.splitString "2. **A remote aarch64 builder**" nixosDoc)
    )
  );
  inherit (homelabAgent.templates.default) welcomeText;
  documents = [
    (has "template welcome text: commit flake.lock, and why" welcomeText [
      "nix flake lock"
      "git add flake.lock"
      "--no-write-lock-file"
      "configurationRevision"
    ])
    (has "template welcome text: the homelab-agent input is a placeholder" welcomeText [
      "`github:homelab-agent/homelab-agent` is a placeholder"
    ])
    (has "template flake.nix: the homelab-agent input is a placeholder"
      (builtins.readFile ../../templates/default/flake.nix)
      [ "A placeholder: replace it" ]
    )
    (has "docs/nixos.md: commit flake.lock, and why" nixosDoc [
      "### Commit flake.lock"
      "nix flake lock"
      "--no-write-lock-file"
      "configurationRevision"
      "is a\n  placeholder"
    ])
    (has "docs/quick-start.md: commit flake.lock; the input is a placeholder; the remote builder's trust"
      (builtins.readFile ../../docs/quick-start.md)
      [
        "commit `flake.lock`"
        "# a placeholder: where you get homelab-agent from"
        "the daemon ignores `--builders` from\nusers it does not trust, and connects as root"
      ]
    )
    (has "docs/nixos.md: the remote builder needs a trusted user and root's SSH key" builderRecipe [
      "trusted-users"
      "as root"
      "/root/.ssh/"
      "nix.buildMachines"
    ])
  ];

  # The generic image and map mode (tests/nix/pivot.nix).
  pivot = import ./pivot.nix {
    inherit
      lib
      evalWith
      agent
      base
      url
      expect
      expectTypeError
      homelab
      served
      ;
  };

  results = examples ++ documents ++ snippetResults ++ pivot.results ++ [
    (has "README and docs/nixos.md: when the template's Pis first poll (${firstPoll})"
      (lib.replaceStrings [ "\n" ] [ " " ] (builtins.readFile ../../README.md + builtins.readFile ../../docs/nixos.md))
      [ firstPoll ]
    )
    (expect "the template's Pis get zram swap (an evaluation needs 1 to 2 GB)"
      (map (
        h:
        (homelab (import ../../templates/default/flake.nix)).nixosConfigurations.${h}.config.zramSwap.enable
      ) [ "pi1" "pi2" "generic" ])
      [
        true
        true
        true
      ]
    )
    (expect "the template's two Pis and its generic image, as the README says"
      (lib.attrNames (homelab (import ../../templates/default/flake.nix)).nixosConfigurations)
      [
        "generic"
        "pi1"
        "pi2"
      ]
    )
    (expect "package: a Pi that builds the agent does not also run its test suite (doCheck)"
      # As a Nix new enough for the package's version guard sees it (this test runs on 2.8
      # too): the file imported with `builtins.nixVersion` at the minimum.
      (scopedImport { builtins = builtins // { nixVersion = "2.18"; }; } ../../pkgs/homelab-agent.nix {
        inherit lib;
        stdenv = { };
        rustPlatform.buildRustPackage = args: args;
        installShellFiles = null;
        pkg-config = null;
        openssl = null;
        zlib = null;
      }).doCheck or true
      false
    )
    # What an unset option leaves out, the agent defaults: only url and host are written.
    (expect "minimal: config holds only url and host" minimal.toml {
      source.url = url;
      host.name = "pi1";
    })
    (expect "minimal: no failed assertion" minimal.failed [ ])
    (expect "reboot: no policy, no verify-boot unit (nothing changes)"
      (minimal.c.systemd.services ? homelab-agent-verify-boot)
      false
    )
    (expect "reboot: options in the [reboot] table" rebooting.toml.reboot {
      policy = "when-required";
      delay = "10min";
      max_wait = "3d";
      fleetlock_url = "http://lock.lan:8080";
      group = "pis";
      window = {
        days = [
          "sat"
          "sun"
        ];
        start = "02:00";
        end = "5:30";
        timezone = "Europe/Berlin";
      };
    })
    (expect "reboot: no failed assertion" rebooting.failed [ ])
    (expect "reboot: verify-boot has the agent's environment and its own PATH (no conflicting definitions)"
      {
        inherit (rebootingVerify.environment) HOME;
        nixOnPath = lib.hasInfix "${fake "nix"}/bin" rebootingVerify.environment.PATH;
      }
      {
        HOME = "/root";
        nixOnPath = true;
      }
    )
    (expect "reboot: verify-boot runs before boot-complete.target, after the services it checks"
      {
        inherit (rebootingVerify)
          wantedBy
          requiredBy
          before
          after
          restartIfChanged
          ;
        inherit (rebootingVerify.serviceConfig) Type RemainAfterExit ExecStart;
      }
      {
        wantedBy = [ "multi-user.target" ];
        requiredBy = [ "boot-complete.target" ];
        before = [
          "boot-complete.target"
          "homelab-agent.service"
        ];
        after = [
          "network-online.target"
          "multi-user.target"
        ];
        restartIfChanged = false;
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${fake "homelab-agent"}/bin/homelab-agent --config /etc/homelab-agent/config.toml verify-boot";
      }
    )
    (expect "reboot: the trial deadline unit runs outside multi-user.target, emergency and rescue included"
      (
        let
          u = rebooting.c.systemd.services.homelab-agent-trial-deadline;
        in
        {
          inherit (u) wantedBy unitConfig restartIfChanged;
          inherit (u.serviceConfig) Type ExecStart;
        }
      )
      {
        wantedBy = [
          "sysinit.target"
          "emergency.target"
          "rescue.target"
        ];
        unitConfig = {
          DefaultDependencies = false;
          Conflicts = "shutdown.target";
          IgnoreOnIsolate = true;
        };
        restartIfChanged = false;
        Type = "simple";
        ExecStart = "${fake "homelab-agent"}/bin/homelab-agent --config /etc/homelab-agent/config.toml trial-deadline";
      }
    )
    (expect "reboot: bootloader and trial deadline in the [reboot] table"
      (agent (base {
        reboot = {
          policy = "when-required";
          bootloader = "uboot";
          trialDeadline = "20min";
        };
      })).toml.reboot
      {
        policy = "when-required";
        bootloader = "uboot";
        trial_deadline = "20min";
      }
    )
    (expectTypeError "reboot: a bootloader the agent has no trial for is a type error" (base {
      reboot.bootloader = "grub";
    }))
    (expect "reboot: the agent's first run after a boot waits for its verification"
      (lib.elem "homelab-agent-verify-boot.service" rebooting.unit.after)
      true
    )
    (expect "reboot: a policy given through settings also gets verify-boot"
      ((agent (base { settings.reboot.policy = "when-required"; })).c.systemd.services
        ? homelab-agent-verify-boot
      )
      true
    )
    (expectTypeError "reboot: a window time that is not HH:MM is a type error" (base {
      reboot.window = {
        start = "2am";
        end = "05:00";
      };
    }))
    (expectTypeError "reboot: a FleetLock group outside the protocol's alphabet is a type error" (base {
      reboot.fleetlock = {
        url = "http://lock.lan";
        group = "my group";
      };
    }))
    (expect "unit: ExecStart runs one cycle with the /etc config" minimal.unit.serviceConfig.ExecStart
      "${fake "homelab-agent"}/bin/homelab-agent --config /etc/homelab-agent/config.toml run --once"
    )
    (expect "unit: config file in /etc" (toString
      minimal.c.environment.etc."homelab-agent/config.toml".source
    ) (fake "homelab-agent.toml"))
    (expect "unit: not restarted by the switch it runs" minimal.unit.restartIfChanged false)
    (expect "unit: not stopped by the switch it runs" minimal.unit.stopIfChanged false)
    (expect "unit: not stopped when removed" minimal.unit.unitConfig.X-StopOnRemoval false)
    (expect "unit: oneshot" minimal.unit.serviceConfig.Type "oneshot")
    (expect "unit: bad config (78) is not restarted" (lib.elem "78" (
      lib.splitString " " minimal.unit.serviceConfig.RestartPreventExitStatus
    )) true)
    (expect "unit: a rolled-back deployment (1) is not restarted" (lib.elem "1" (
      lib.splitString " " minimal.unit.serviceConfig.RestartPreventExitStatus
    )) true)
    (expect "unit: restarts other failures" minimal.unit.serviceConfig.Restart "on-failure")
    (expect "unit: sd_notify STATUS accepted" minimal.unit.serviceConfig.NotifyAccess "main")
    (expect "unit: state and runtime directories" {
      inherit (minimal.unit.serviceConfig) StateDirectory RuntimeDirectory RuntimeDirectoryPreserve;
      StateDirectoryMode = minimal.unit.serviceConfig.StateDirectoryMode or null;
    } {
      StateDirectory = "homelab-agent";
      # Readable by every user (`status` without sudo); the agent keeps the git cache in
      # it, a mirror of a repository that may be private, at 0700.
      StateDirectoryMode = "0755";
      RuntimeDirectory = "homelab-agent";
      RuntimeDirectoryPreserve = "yes";
    })
    (expect "unit: waits for the network" {
      inherit (minimal.unit) after wants;
    } {
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
    })
    (expect "unit: nix, git, ssh and systemd on PATH, before NixOS's default path"
      (lib.take 4 (map toString minimal.unit.path))
      (
        map fake [
          "nix"
          "git"
          "openssh"
          "systemd"
        ]
      )
    )
    (expect "unit: lowest CPU and I/O priority, a memory guard, and an OOM kill does not stop the service"
      {
        inherit (minimal.unit.serviceConfig)
          Nice
          IOSchedulingClass
          CPUWeight
          IOWeight
          MemoryHigh
          MemoryMax
          OOMPolicy
          ;
      }
      {
        Nice = 19;
        IOSchedulingClass = "idle";
        CPUWeight = 20;
        IOWeight = 20;
        MemoryHigh = "70%";
        MemoryMax = "85%";
        OOMPolicy = "continue";
      }
    )
    (expect "unit: resources off: no priority, no limit"
      (
        let
          s =
            (agent (base {
              resources = {
                lowPriority = false;
                memoryHigh = null;
                memoryMax = "1G";
              };
            })).unit.serviceConfig;
        in
        {
          nice = s ? Nice;
          high = s ? MemoryHigh;
          inherit (s) MemoryMax;
        }
      )
      {
        nice = false;
        high = false;
        MemoryMax = "1G";
      }
    )
    (expectTypeError "resources: a memory size systemd does not read is a type error" (base {
      resources.memoryMax = "lots";
    }))
    (expect "unit: PATH computed from path, as NixOS does" (lib.hasPrefix "${fake "nix"}/bin:${fake "git"}/bin:"
      minimal.unit.environment.PATH
    ) true)
    (expect "unit: start timeout above build, activation and health defaults"
      minimal.unit.serviceConfig.TimeoutStartSec
      "2h 15min 15min 10s 5min 30min"
    )
    (expect "unit: start timeout follows the configured limits" full.unit.serviceConfig.TimeoutStartSec
      "3h 30m 30m 5s 2min 30min"
    )
    (expect "unit: HOME for nix" minimal.unit.environment.HOME "/root")
    (expect "unit: nix.envVars and the proxy reach nix, as for system.autoUpgrade" (removeAttrs withEnv.unit.environment [ "PATH" ])
      {
        NIX_SSHOPTS = "-o ServerAliveInterval=10";
        GIT_ASKPASS = "/run/keys/askpass";
        http_proxy = "http://proxy.lan:3128";
        HOME = "/root";
      }
    )
    (expect "package installed for `homelab-agent status`" (map toString
      minimal.c.environment.systemPackages
    ) [ (fake "homelab-agent") ])
    (expect "timer: defaults" minimal.timer.timerConfig {
      OnBootSec = "2min";
      OnUnitInactiveSec = "5min";
      RandomizedDelaySec = "1min";
      AccuracySec = "1s";
    })
    (expect "timer: started at boot" minimal.timer.wantedBy [ "timers.target" ])
    (expect "timer: interval and delays from the options" full.timer.timerConfig {
      OnBootSec = "5min";
      OnUnitInactiveSec = "10min";
      RandomizedDelaySec = "30s";
      AccuracySec = "1s";
    })
    (expect "full: every option in its key, checks in snake_case, settings merged" full.toml fullToml)
    (expect "full: no failed assertion" full.failed [ ])
    (expect "metrics: textfileDir in metrics.textfile_dir" withMetrics.toml.metrics {
      textfile_dir = "/var/lib/prometheus-node-exporter/textfile";
    })
    (expect "metrics: none by default" (minimal.toml ? metrics) false)
    (expect "uboot: fw_env.config names uboot.env on the firmware partition, 16 KiB"
      withUboot.c.environment.etc."fw_env.config".text
      "# homelab-agent (services.homelab-agent.reboot.uboot): U-Boot's environment\n/boot/firmware/uboot.env 0x0 16384\n")
    (expect "uboot: the setup unit provisions the boot command before the agent runs" {
      inherit (ubootSetup) wantedBy before;
      inherit (ubootSetup.serviceConfig) Type ExecStart;
    } {
      wantedBy = [ "multi-user.target" ];
      before = [ "homelab-agent.service" ];
      Type = "oneshot";
      ExecStart = "${fake "homelab-agent"}/bin/homelab-agent bootloader setup --fw-env-config /etc/fw_env.config --fw-printenv ${fake "libubootenv"}/bin/fw_printenv --fw-setenv ${fake "libubootenv"}/bin/fw_setenv --boot-dir /boot --sysboot-device mmc --sysboot-partition 0:2 --boot-prefix /boot/";
    })
    (expect "uboot: libubootenv on the agent's path" (lib.elem (fake "libubootenv") (map toString withUboot.unit.path)) true)
    (expect "uboot: the agent's config names the door, with absolute tool paths; verify-boot only with a reboot policy"
      (
        let
          on = agent (base {
            reboot.policy = "when-required";
            reboot.uboot.enable = true;
          });
        in
        {
          inherit (on.toml.reboot) bootloader;
          inherit (on.toml.reboot.uboot) fw_printenv fw_setenv fw_env_config;
          verifyMounts = on.c.systemd.services.homelab-agent-verify-boot.unitConfig.RequiresMountsFor;
          noPolicyNoVerify = withUboot.c.systemd.services ? homelab-agent-verify-boot;
        }
      )
      {
        bootloader = "uboot";
        fw_printenv = "${fake "libubootenv"}/bin/fw_printenv";
        fw_setenv = "${fake "libubootenv"}/bin/fw_setenv";
        fw_env_config = "/etc/fw_env.config";
        verifyMounts = [
          "/boot/firmware"
          "/boot"
        ];
        noPolicyNoVerify = false;
      }
    )
    (expect "uboot: nothing when not enabled" (minimal.c.environment.etc ? "fw_env.config") false)
    {
      name = "uboot: a sysboot partition that could bend U-Boot's command is a type error";
      ok =
        !(tryEval (
          deepSeq
            (agent (base {
              reboot.uboot = {
                enable = true;
                sysboot.partition = "0:2; reset";
              };
            })).c.systemd.services.homelab-agent-uboot-setup.serviceConfig.ExecStart
            true
        )).success;
      detail = "expected a type error, but it evaluated";
    }
    (expect "metrics: the alert rules are shipped" (builtins.pathExists withMetrics.c.services.homelab-agent.metrics.alertRules) true)
    (expect "known hosts lines written to a file" full.c.environment.etc."homelab-agent/config.toml".source.value.source.known_hosts_file
      (fake "homelab-agent-known-hosts")
    )
    (expect "settings alone may give the URL" viaSettings.toml {
      source.url = "file:///srv/git/homelab.git";
      host.name = "pi1";
    })
    (expect "settings alone may give the URL: no failed assertion" viaSettings.failed [ ])
    (expect "token and known hosts file" withToken.toml.source {
      inherit url;
      token_file = "/run/keys/git-token";
      known_hosts_file = "/etc/ssh/extra_known_hosts";
    })
    (expect "CA file, testing branch and local-build limit in their keys" withTrust.toml {
      source = {
        inherit url;
        ca_file = "/etc/ssl/homelab-ca.pem";
        testing_branch = "testing/{host}";
      };
      host.name = "pi1";
      build.max_local_builds = 0;
    })
    (expect "disabled: no unit, no timer, no file" {
      services = disabled.systemd.services ? homelab-agent;
      timers = disabled.systemd.timers ? homelab-agent;
      etc = disabled.environment.etc ? "homelab-agent/config.toml";
    } {
      services = false;
      timers = false;
      etc = false;
    })

    (expect "push: a trigger key may only run homelab-agent trigger"
      (agent (base { trigger.authorizedKeys = [ "ssh-ed25519 AAAAC3Nza git-server" ]; }))
      .c.users.users.root.openssh.authorizedKeys.keys
      [
        ''command="${(agent (base { })).c.services.homelab-agent.package}/bin/homelab-agent --config /etc/homelab-agent/config.toml trigger",restrict ssh-ed25519 AAAAC3Nza git-server''
      ]
    )
    (expectAssertion "refused: a trigger key with options of its own" (base {
      trigger.authorizedKeys = [ ''command="/bin/sh" ssh-ed25519 AAAA x'' ];
    }) "is not a bare public key")
    (expectAssertion "refused: empty repository.url" {
      networking.hostName = "pi1";
      services.homelab-agent.enable = true;
    } "repository.url is empty")
    (expectAssertion "refused: knownHosts and knownHostsFile" (base {
      auth.knownHosts = "git.example.org ssh-ed25519 AAAA";
      auth.knownHostsFile = "/etc/ssh/ssh_known_hosts";
    }) "are both set")
    (expectAssertion "refused: scp-style URL without a key" (base {
      repository.url = "git@github.com:me/homelab.git";
    }) "is an SSH URL but no key is set")
    (expectAssertion "refused: ssh:// URL without a key" (base {
      repository.url = "ssh://git@git.example.org/me/homelab.git";
    }) "set services.homelab-agent.auth.sshKeyFile")
    (expectAssertion "refused: no host name" {
      networking.hostName = "";
      services.homelab-agent = {
        enable = true;
        repository.url = url;
      };
    } "not a valid host name")
    (expectAssertion "refused: dotted host name" (base { host = "pi1.lan"; }) "not a valid host name")
    (expectAssertion "refused: token with an ssh URL" (base {
      repository.url = "ssh://git@git.example.org/me/homelab.git";
      auth.sshKeyFile = "/run/keys/deploy";
      auth.tokenFile = "/run/keys/git-token";
    }) "only used with https:// URLs")
    (expectAssertion "refused: systemd check without units" (base {
      health.checks = [ { systemd = { }; } ];
    }) "a systemd check needs units")

    (expectTypeError "type error: duration in words" (base { interval = "soon"; }))
    (expectTypeError "type error: duration in months (ambiguous)" (base { interval = "1M"; }))
    (expectTypeError "type error: key in the Nix store" (base {
      auth.sshKeyFile = "/nix/store/00000000000000000000000000000000-key";
    }))
    (expectTypeError "type error: relative key path" (base { auth.sshKeyFile = "keys/deploy"; }))
    (expectTypeError "type error: check with two kinds" (base {
      health.checks = [
        {
          tcp.address = "127.0.0.1:22";
          remote = { };
        }
      ];
    }))
    (expectTypeError "type error: unknown check kind" (base { health.checks = [ { ping = { }; } ]; }))
    (expectTypeError "type error: unknown field of a check" (base {
      health.checks = [ { tcp.port = 22; } ];
    }))
    (expectTypeError "type error: http check with an ftp URL" (base {
      health.checks = [ { http.url = "ftp://example.org/"; } ];
    }))
    (expectTypeError "type error: null in settings" (base { settings.build.timeout = null; }))

    (expect "version: rev" (version { rev = "0123abc"; }) "0123abc")
    (expect "version: dirtyRev" (version { dirtyRev = "0123abc-dirty"; }) "0123abc-dirty")
    (expect "version: none" (version { }) null)
    (expect "trust: nothing by default" (minimal.toml.source ? verify || minimal.toml.source ? allow_downgrade) false)
    (expect "trust: ssh renders verify and the signers file" (
      with withSsh.toml.source; [ verify (lib.hasSuffix "homelab-agent-allowed-signers" allowed_signers_file) ]
    ) [ "ssh" true ])
    (expect "trust: gpg renders the keyring and allow_downgrade" (
      with withGpg.toml.source; [ verify keyring_file allow_downgrade (withGpg.toml.source ? allowed_signers_file) ]
    ) [ "gpg" "/etc/homelab-agent/deployers.gpg" true false ])
    (expect "trust: gpg puts gpgv on the unit's PATH" (lib.any (p: p.name or "" == "gnupg") withGpg.unit.path) true)
    (expectAssertion "trust: ssh without signers is refused" (base { trust.verify = "ssh"; }) "no signer is allowed")
    (expectAssertion "trust: gpg without a keyring is refused" (base { trust.verify = "gpg"; }) "no keyring is set")
    (expect "prebuilt: nothing by default" (minimal.toml ? prebuilt) false)
    (expect "prebuilt: ssh signers render enable, the signers file and wait" (
      with withPrebuilt.toml.prebuilt; [ enable (lib.hasSuffix "homelab-agent-prebuilt-signers" allowed_signers_file) wait (withPrebuilt.toml.prebuilt ? branch) ]
    ) [ true true "2h" false ])
    (expect "prebuilt: a gpg keyring renders the keyring and the branch, and gpgv is on PATH" (
      with withPrebuiltGpg.toml.prebuilt; [ keyring_file branch (lib.any (p: p.name or "" == "gnupg") withPrebuiltGpg.unit.path) ]
    ) [ "/etc/homelab-agent/ci.gpg" "ci/prebuilt" true ])
    (expectAssertion "prebuilt: enabled without a signer is refused" (base { prebuilt.enable = true; }) "no one may sign manifests")
    (expectAssertion "prebuilt: two kinds of signer are refused" (base {
      prebuilt = {
        enable = true;
        allowedSignersFile = "/etc/ci";
        keyringFile = "/etc/ci.gpg";
      };
    }) "set one of allowedSigners")
    (expect "version: stamp file" (versionStamp { rev = "0123abc"; }) "0123abc\n")
    (expect "version: no stamp file without a revision" (versionStamp { }) null)

    (expect "provisioning: key-only ssh" provisioned.services.openssh {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "prohibit-password";
      };
    })
    (expect "provisioning: root keys" provisioned.users.users.root.openssh.authorizedKeys.keys [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop"
    ])
    (expect "provisioning: agent enabled for this host" provisioned.environment.etc."homelab-agent/config.toml".source.value
      {
        source.url = url;
        host.name = "pi1";
      }
    )
    (expect "provisioning: first poll a minute after boot" provisioned.systemd.timers.homelab-agent.timerConfig.OnBootSec
      "1min"
    )
    (expect "provisioning: a real host gets the SD card layout, not the installer profile (ZFS, tools)"
      (lib.sort lib.lessThan provisioned.testStub.imported)
      [
        "installer/sd-card/sd-image-aarch64.nix"
        "installer/sd-card/sd-image.nix"
      ]
    )
    (expect "provisioning: the hardware watchdog resets a hung boot" {
      inherit (provisioned.boot) kernelModules;
      inherit (provisioned.systemd.settings.Manager) RuntimeWatchdogSec;
    } {
      kernelModules = [ "bcm2835_wdt" ];
      RuntimeWatchdogSec = "15s";
    })
    (expect "provisioning: no warning" provisioned.warnings [ ])
    (expect "provisioning: warns without keys" (lib.length (provisioning [ ]).warnings) 1)
    (expect "provisioning: no state version of its own: it stays NixOS's default, with a warning that says what to set"
      {
        inherit (noStateVersion.system) stateVersion;
        warned = lib.any (lib.hasPrefix "system.stateVersion is not set") noStateVersion.warnings;
      }
      {
        stateVersion = lib.trivial.release;
        warned = true;
      }
    )

  ];

  # Configurations the agent must accept (`config check` exits 0) ...
  configs = lib.mapAttrs (_: value: {
    inherit value;
    toml = toTOML value;
  }) (pivot.configs // {
    minimal = minimal.toml;
    full = full.toml;
    via-settings = viaSettings.toml;
    with-token = withToken.toml;
    with-notify =
      (agent (base {
        settings.notify = {
          webhooks = [
            {
              url = "https://ntfy.example.org/homelab";
              token_file = "/run/keys/ntfy-token";
            }
            {
              url = "https://hooks.example.org/deploys";
              format = "json";
              on = [ "failed" "needs-attention" ];
            }
          ];
          commands = [ { command = [ "/run/current-system/sw/bin/logger" "homelab-agent" ]; } ];
        };
      })).toml;
    with-trust-gpg = withGpg.toml;
    reboot = rebooting.toml;
    with-metrics = withMetrics.toml;
    with-trust = withTrust.toml;
    with-prebuilt = withPrebuilt.toml;
    with-prebuilt-gpg = withPrebuiltGpg.toml;
    provisioning = provisioned.environment.etc."homelab-agent/config.toml".source.value;
  });

  # ... and ones that only the agent can refuse (exit 78, naming the key).
  rejected =
    lib.mapAttrs
      (_: r: {
        inherit (r) key;
        toml = toTOML (agent (base { settings = r.settings; })).toml;
      })
      {
        bad-duration = {
          settings.build.timeout = "soon";
          key = "build.timeout";
        };
        reboot-without-checks = {
          settings.reboot.policy = "when-required";
          key = "reboot.policy";
        };
        reboot-policy = {
          settings.reboot.policy = "always";
          key = "reboot.policy";
        };
        reboot-timezone = {
          settings.reboot.window = {
            start = "02:00";
            end = "04:00";
            timezone = "Mars/Olympus";
          };
          key = "reboot.window.timezone";
        };
        relative-metrics-dir = {
          settings.metrics.textfile_dir = "metrics";
          key = "metrics.textfile_dir";
        };
        prebuilt-deployed-branch = {
          settings.prebuilt = {
            enable = true;
            allowed_signers_file = "/etc/ci";
            branch = "main";
          };
          key = "prebuilt.branch";
        };
        unknown-key = {
          settings.source.mirror = "https://example.org/x.git";
          key = "source.mirror";
        };
      };
in
{
  inherit results configs rejected;
}
