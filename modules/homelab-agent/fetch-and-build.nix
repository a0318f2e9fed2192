# Options for whom the agent trusts and how much it may compile: a private certificate
# authority for an https repository, a limit on derivations built on the machine itself
# (README "Substitute before compiling"), and the per-host testing branch whose commits
# are only ever test-activated (README "Per-host testing branches"). Imported by ./default.nix; each option
# left at null leaves its key out of the config file (the agent's default applies).
{
  config,
  lib,
  ...
}:
let
  inherit (lib) mkOption types mkIf mkMerge mkDefault;
  cfg = config.services.homelab-agent;
in
{
  options.services.homelab-agent = {
    auth.caFile = mkOption {
      type = types.nullOr (types.addCheck types.str (lib.hasPrefix "/"));
      default = null;
      example = "/etc/ssl/homelab-ca.pem";
      description = ''
        PEM file of extra certificate authorities trusted for an `https://` repository
        (`source.ca_file`), e.g. a private CA. The system's trust store stays trusted too.
        A certificate is public: a Nix store path is fine here.
      '';
    };
    repository.testingBranch = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9._/{}-]+");
      default = null;
      example = "testing/{host}";
      description = ''
        A second branch this machine watches (`source.testing_branch`; `{host}` becomes
        {option}`services.homelab-agent.host`). A commit there is activated with
        `switch-to-configuration test` only and health-checked: never a profile generation
        or the boot default, gone after a reboot or the next deployment of the main branch,
        which always comes first. Promote it by merging the branch into the main one.
        `null`: off.
      '';
    };
    build.maxLocalBuilds = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      example = 0;
      description = ''
        Refuse a commit whose build would compile more than this many derivations on this
        machine (`build.max_local_builds`); paths in a binary cache that nix would not
        accept (no signature that verifies with a key in `nix.settings.trusted-public-keys`)
        count as compiled, and a cache that cannot be reached is named as the cause. The
        refusal is not the commit's fault: it is retried after the build backoff, at once
        after `homelab-agent retry`. `null`: no limit (the plan is still reported in
        `homelab-agent status`). See docs/build-plan.md.
      '';
    };
  };

  config = mkIf cfg.enable {
    services.homelab-agent.settings = mkMerge [
      (mkIf (cfg.auth.caFile != null) { source.ca_file = mkDefault cfg.auth.caFile; })
      (mkIf (cfg.repository.testingBranch != null) {
        source.testing_branch = mkDefault cfg.repository.testingBranch;
      })
      (mkIf (cfg.build.maxLocalBuilds != null) {
        build.max_local_builds = mkDefault cfg.build.maxLocalBuilds;
      })
    ];
  };
}
