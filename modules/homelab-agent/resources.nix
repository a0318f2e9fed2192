# services.homelab-agent.resources: a Pi is never starved by its own upgrade (issue 20).
# The agent's service, and so every `nix` it runs with their builders, gets the lowest CPU
# and I/O priority, so the services being health-checked keep their share of the board;
# and a memory guard, so an evaluation that outgrows the board is stopped by the kernel
# inside this service instead of taking the machine down. The agent tells such a kill
# from a failed build by the kernel's count of OOM kills in this service's memory cgroup:
# it blames this machine, never the commit (docs/deploy-safety.md). Imported by
# ./default.nix.
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkOption types mkIf;
  cfg = config.services.homelab-agent;
  r = cfg.resources;

  # What systemd's MemoryHigh=/MemoryMax= take: bytes with an optional K, M, G or T, a
  # percentage of the machine's memory, or "infinity".
  memory =
    types.strMatching "([0-9]+[KMGT]?|[0-9]+(\\.[0-9]+)?%|infinity)"
    // {
      description = ''memory size such as "768M", "1G", "80%" or "infinity"'';
    };
in
{
  options.services.homelab-agent.resources = {
    lowPriority = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run the agent, and the evaluations and builds it starts, at the lowest CPU and I/O
        priority (`Nice=19`, `IOSchedulingClass=idle`, `CPUWeight=20`, `IOWeight=20`), so
        that the machine's own services, which the health checks look at, are not starved
        while a new system compiles. Activation runs in a transient unit of its own and is
        not slowed.
      '';
    };
    memoryHigh = mkOption {
      type = types.nullOr memory;
      default = "70%";
      description = ''
        Above this, the kernel reclaims the service's memory hard and slows it
        (`MemoryHigh=`): an evaluation near the limit swaps (zram) before it is killed.
        `null`: no throttling.
      '';
    };
    memoryMax = mkOption {
      type = types.nullOr memory;
      default = "85%";
      description = ''
        The most memory the agent's service (nix, its builders) may use (`MemoryMax=`): an
        evaluation or build over it is killed by the kernel's OOM killer inside this
        service, the rest of the machine keeps running, and the agent reports it as this
        machine's problem (more memory, swap or zram, or a build elsewhere), not the
        commit's. `null`: no limit.
      '';
    };
  };

  config = mkIf cfg.enable {
    systemd.services.homelab-agent.serviceConfig = lib.mkMerge [
      (mkIf r.lowPriority {
        Nice = 19;
        IOSchedulingClass = "idle";
        CPUWeight = 20;
        IOWeight = 20;
      })
      (mkIf (r.memoryHigh != null) { MemoryHigh = r.memoryHigh; })
      (mkIf (r.memoryMax != null) { MemoryMax = r.memoryMax; })
      # An OOM kill of nix inside the service must not stop the service (systemd's
      # default, OOMPolicy=stop): the agent records why the build failed.
      { OOMPolicy = "continue"; }
    ];
  };
}
