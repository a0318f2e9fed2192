# services.homelab-agent.trust: which heads may be deployed at all. A head whose tip
# commit is not signed by an allowed key (verify), or that does not descend from the
# commit this machine runs (no silent downgrade), is refused before anything is built.
# Rendered into the [source] table of the agent's config file (README "Trusting the source").
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.homelab-agent;
  t = cfg.trust;

  allowedSignersFile =
    if t.allowedSigners != "" then
      "${pkgs.writeText "homelab-agent-allowed-signers" t.allowedSigners}"
    else
      t.allowedSignersFile;

  nonNull = lib.filterAttrs (_: v: v != null);
in
{
  options.services.homelab-agent.trust = {
    verify = mkOption {
      type = types.nullOr (
        types.enum [
          "none"
          "ssh"
          "gpg"
        ]
      );
      default = null;
      example = "ssh";
      description = ''
        Signatures a branch head's tip commit must carry (`source.verify`): `ssh`
        (`git config gpg.format ssh`; checked with `ssh-keygen -Y verify` against
        {option}`services.homelab-agent.trust.allowedSigners`), `gpg` (checked with `gpgv`
        against {option}`services.homelab-agent.trust.keyringFile`; expired and revoked keys
        are refused) or `none`. An unsigned or wrongly signed head is refused before it is
        evaluated. `null`: the agent's default, `none`.
      '';
    };
    allowedSigners = mkOption {
      type = types.lines;
      default = "";
      example = "me@example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...";
      description = ''
        For `verify = "ssh"`: allowed signers, in the format of `ssh-keygen`'s ALLOWED
        SIGNERS (`<principals> [options] <key type> <public key>`), written to a file in the
        Nix store (`source.allowed_signers_file`). Or set
        {option}`services.homelab-agent.trust.allowedSignersFile`.
      '';
    };
    allowedSignersFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "An allowed-signers file to use instead of {option}`services.homelab-agent.trust.allowedSigners` (`source.allowed_signers_file`).";
    };
    keyringFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "./keys/deployers.gpg";
      description = ''
        For `verify = "gpg"`: an OpenPGP keyring (`gpg --export KEYID... > deployers.gpg`) whose
        keys may sign deployable commits (`source.keyring_file`). Public keys only.
      '';
    };
    gpgHome = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "For `verify = \"gpg\"`: a GnuPG home whose public keyring (`pubring.kbx`) holds the allowed keys, instead of {option}`services.homelab-agent.trust.keyringFile` (`source.gpg_home`).";
    };
    allowDowngrade = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = ''
        Deploy a head that does not descend from the deployed commit (a reset or force-pushed
        branch) instead of refusing it (`source.allow_downgrade`). The floor is the deployed
        commit, also read from the running system's `configurationRevision` stamp
        (`homelab-agent.lib.versionModule`), so losing the agent's state does not lower it.
        `null`: the agent's default, `false`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = t.verify == "ssh" -> (t.allowedSigners != "" || t.allowedSignersFile != null);
        message = ''services.homelab-agent.trust.verify is "ssh" but no signer is allowed: set trust.allowedSigners to lines such as "me@example.org ssh-ed25519 AAAA...".'';
      }
      {
        assertion = t.verify == "gpg" -> (t.keyringFile != null || t.gpgHome != null);
        message = ''services.homelab-agent.trust.verify is "gpg" but no keyring is set: set trust.keyringFile (e.g. ./keys/deployers.gpg from `gpg --export`).'';
      }
      {
        assertion = !(t.allowedSigners != "" && t.allowedSignersFile != null);
        message = "services.homelab-agent.trust.allowedSigners and trust.allowedSignersFile are both set: keep one of them.";
      }
    ];

    # mkDefault, as fetch-and-build.nix: a key set in `settings` wins over these options.
    services.homelab-agent.settings.source = lib.mapAttrs (_: lib.mkDefault) (nonNull {
      inherit (t) verify;
      allowed_signers_file = if t.verify == "ssh" then allowedSignersFile else null;
      keyring_file = if t.verify == "gpg" && t.keyringFile != null then "${t.keyringFile}" else null;
      gpg_home = if t.verify == "gpg" then t.gpgHome else null;
      allow_downgrade = t.allowDowngrade;
    });

    # gpgv for verify = "gpg" (ssh-keygen comes with programs.ssh.package, already there).
    systemd.services.homelab-agent.path = lib.mkIf (t.verify == "gpg") [ pkgs.gnupg ];
  };
}
