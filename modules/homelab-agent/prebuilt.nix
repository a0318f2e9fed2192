# services.homelab-agent.prebuilt: deploy the system a workstation or CI built and signed
# a manifest for (`homelab-agent publish`), fetched from a binary cache, instead of
# evaluating on the machine; built here when the manifest is missing, late, untrusted or
# its system cannot be fetched. Rendered into the [prebuilt] table (docs/prebuilt.md).
# The binary cache itself is nix's: nix.settings.substituters and trusted-public-keys.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.homelab-agent;
  p = cfg.prebuilt;

  allowedSignersFile =
    if p.allowedSigners != "" then
      "${pkgs.writeText "homelab-agent-prebuilt-signers" p.allowedSigners}"
    else
      p.allowedSignersFile;

  nonNull = lib.filterAttrs (_: v: v != null);
in
{
  options.services.homelab-agent.prebuilt = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Look for a signed manifest of each new head on the manifest branch and, when it
        names this host's system, fetch that system from the binary caches nix trusts
        instead of evaluating and building it here (`prebuilt.enable`). The head's own
        checks (signature, no downgrade, bad commits) still come first.
      '';
    };
    branch = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "homelab-prebuilt";
      description = "The branch of the repository the manifests are published on (`prebuilt.branch`). `null`: the agent's default, `homelab-prebuilt`.";
    };
    allowedSigners = mkOption {
      type = types.lines;
      default = "";
      example = "ci@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...";
      description = ''
        Who may sign manifests with ssh (`ssh-keygen -Y sign -n homelab-prebuilt`), in the
        format of `ssh-keygen`'s ALLOWED SIGNERS, written to a file in the Nix store
        (`prebuilt.allowed_signers_file`). A key of its own: the commit signers of
        {option}`services.homelab-agent.trust` are not asked.
      '';
    };
    allowedSignersFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "An allowed-signers file to use instead of {option}`services.homelab-agent.prebuilt.allowedSigners` (`prebuilt.allowed_signers_file`).";
    };
    keyringFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./keys/ci.gpg";
      description = "An OpenPGP keyring whose keys may sign manifests (armored detached `.asc` signatures; `prebuilt.keyring_file`), instead of ssh signers.";
    };
    wait = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "2h";
      description = ''
        How long after a new head is first seen to wait for its manifest before building it
        here (`prebuilt.wait`; `0s`: never wait). `null`: the agent's default, `30m`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion =
          p.enable -> (p.allowedSigners != "" || p.allowedSignersFile != null || p.keyringFile != null);
        message = ''services.homelab-agent.prebuilt.enable is set but no one may sign manifests: set prebuilt.allowedSigners (lines such as "ci@example.org ssh-ed25519 AAAA...") or prebuilt.keyringFile.'';
      }
      {
        assertion =
          lib.length (lib.filter (x: x) [
            (p.allowedSigners != "")
            (p.allowedSignersFile != null)
            (p.keyringFile != null)
          ]) <= 1;
        message = "services.homelab-agent.prebuilt: set one of allowedSigners, allowedSignersFile and keyringFile.";
      }
    ];

    # mkDefault, as trust.nix: a key set in `settings` wins over these options.
    services.homelab-agent.settings.prebuilt = lib.mkIf p.enable (
      lib.mapAttrs (_: lib.mkDefault) (nonNull {
        enable = true;
        inherit (p) branch wait;
        allowed_signers_file = allowedSignersFile;
        keyring_file = if p.keyringFile != null then "${p.keyringFile}" else null;
      })
    );

    # gpgv for keyring-signed manifests (ssh-keygen is already there).
    systemd.services.homelab-agent.path = lib.mkIf (p.enable && p.keyringFile != null) [ pkgs.gnupg ];
  };
}
