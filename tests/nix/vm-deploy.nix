# NixOS VM test (needs KVM): the agent deploys a pushed commit, rolls back a commit whose
# health check fails, and recovers when it is killed in the middle of a deployment.
#
# The VM has no network. A homelab repository inside it holds a flake (vm/homelab-flake.nix)
# whose machine is evaluated exactly as this file evaluates it on the host (vm/system.nix),
# and the systems built here are put in the VM's store: the agent's evaluation in the VM
# yields the same derivations, already built, so its `nix build` runs offline.
{
  pkgs,
  self,
  nixpkgs,
}:
let
  inherit (pkgs) lib;

  releases = {
    good = ./vm/release-good.nix;
    unhealthy = ./vm/release-unhealthy.nix;
    slow = ./vm/release-slow.nix;
  };

  # The system of each release, given the test network's configuration of the node.
  systems =
    networkConfig:
    lib.mapAttrs
      (
        _: release:
        (import ./vm/system.nix {
          inherit nixpkgs release;
          homelab-agent = self;
          # Through JSON, as the VM reads network.json: the very same value.
          network = builtins.fromJSON (builtins.toJSON networkConfig);
        }).config.system.build.toplevel
      )
      releases;

  homelabFlake = pkgs.writeText "flake.nix" (
    lib.replaceStrings [ "@nixpkgs@" "@homelab-agent@" ] [ "${nixpkgs}" "${self}" ] (
      builtins.readFile ./vm/homelab-flake.nix
    )
  );
in
pkgs.testers.runNixOSTest {
  name = "homelab-agent-deploy";

  # Let the node instantiate nixpkgs itself, as vm/system.nix does, rather than use the
  # flake's package set: the test driver's backdoor unit must be identical in every
  # system, or a switch restarts it and the driver loses the machine.
  node.pkgs = lib.mkForce null;

  nodes.machine =
    { config, ... }:
    {
      imports = [
        self.nixosModules.default
        ./vm/machine.nix
      ];
      demo = {
        marker = "initial";
        readyAfter = 0;
      };
      virtualisation = {
        memorySize = 4096; # evaluating a NixOS system takes a good part of it
        cores = 2;
        additionalPaths = lib.attrValues (systems config.system.build.networkConfig) ++ [
          "${nixpkgs}"
          "${self}"
        ];
      };
    };

  testScript =
    { nodes, ... }:
    let
      built = systems nodes.machine.system.build.networkConfig;
      networkJson = pkgs.writeText "network.json" (builtins.toJSON nodes.machine.system.build.networkConfig);
    in
    ''
      import json

      GOOD = "${built.good}"
      SLOW = "${built.slow}"


      def current():
          return machine.succeed("readlink -f /run/current-system").strip()


      def profile():
          return machine.succeed("readlink -f /nix/var/nix/profiles/system").strip()


      def marker():
          return machine.succeed("cat /etc/homelab-test/marker").strip()


      def status():
          return json.loads(machine.succeed("homelab-agent status --json"))


      def push(release, message):
          machine.succeed(
              f"install -m 0644 {release} /root/homelab/release.nix",
              f"cd /root/homelab && git add -A && git commit -q -m '{message}' && git push -q origin main",
          )
          return machine.succeed("git -C /root/homelab rev-parse HEAD").strip()


      machine.wait_for_unit("multi-user.target")

      with subtest("a homelab repository in the VM"):
          machine.succeed(
              "git config --global user.name test",
              "git config --global user.email test@example.org",
              "mkdir -p /srv/git",
              "git init -q --bare -b main /srv/git/homelab.git",
              "git init -q -b main /root/homelab",
              "git -C /root/homelab remote add origin /srv/git/homelab.git",
              "install -m 0644 ${homelabFlake} /root/homelab/flake.nix",
              "install -m 0644 ${./vm/system.nix} /root/homelab/system.nix",
              "install -m 0644 ${./vm/machine.nix} /root/homelab/machine.nix",
              "install -m 0644 ${networkJson} /root/homelab/network.json",
              "install -m 0644 ${releases.good} /root/homelab/release.nix",
              "cd /root/homelab && git add -A && git commit -q -m 'a homelab flake'",
              # Pins the inputs, already in the store; committed with the next push.
              "cd /root/homelab && nix flake lock",
          )

      with subtest("a pushed commit is deployed"):
          commit = push("${releases.good}", "good")
          machine.succeed("systemctl start homelab-agent.service")
          assert current() == GOOD, current()
          assert profile() == GOOD, profile()
          assert marker() == "good"
          s = status()
          assert s["last_run"]["outcome"] == "deployed", s
          assert s["deployed"]["commit"] == commit, s

      with subtest("an unchanged branch is only polled"):
          machine.succeed("systemctl start homelab-agent.service")
          assert status()["last_run"]["outcome"] == "up-to-date"

      with subtest("a commit whose health check fails is rolled back"):
          push("${releases.unhealthy}", "never ready")
          # The run fails (exit 1), so the unit fails, and is not restarted.
          machine.fail("systemctl start homelab-agent.service")
          assert current() == GOOD, current()
          assert profile() == GOOD, profile()
          assert marker() == "good"
          last = status()["last_run"]
          assert last["outcome"] == "failed", last
          assert last["phase"] == "health", last
          assert last["rolled_back"] is True, last
          # Remembered as bad: not tried again until the branch moves.
          machine.succeed("systemctl start homelab-agent.service")
          assert status()["last_run"]["outcome"] == "skipped"
          assert current() == GOOD, current()

      with subtest("an agent killed mid-deployment is recovered by the next run"):
          commit = push("${releases.slow}", "slow to start")
          machine.succeed("systemctl start --no-block homelab-agent.service")
          # Activated (switch-to-configuration test), not yet healthy: kill it there.
          machine.wait_until_succeeds(
              "systemctl show -P StatusText homelab-agent.service | grep -q 'checking health'",
              timeout=900,
          )
          assert current() == SLOW, current()
          machine.succeed("systemctl kill --signal=SIGKILL homelab-agent.service")
          assert profile() == GOOD, profile()
          # systemd restarts the killed run (Restart=on-failure); that run first brings
          # the machine back to the profile, then deploys the commit again.
          machine.wait_until_succeeds(
              "test \"$(systemctl show -P NRestarts homelab-agent.service)\" -ge 1"
              " && systemctl show -P ActiveState homelab-agent.service | grep -qx -e inactive -e failed",
              timeout=900,
          )
          history = json.loads(machine.succeed("homelab-agent history --json"))
          outcomes = [run["outcome"] for run in history]
          assert outcomes[:2] == ["deployed", "interrupted"], outcomes
          assert current() == SLOW, current()
          assert profile() == SLOW, profile()
          assert status()["deployed"]["commit"] == commit
    '';
}
