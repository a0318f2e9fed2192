{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
  pkg-config,
  openssl,
  zlib,
}:
let
  manifest = lib.importTOML ../agent/Cargo.toml;
  workspace = lib.importTOML ../Cargo.toml;
  # `version.workspace = true` reads the version from the workspace manifest.
  version =
    if builtins.isString manifest.package.version then
      manifest.package.version
    else
      workspace.workspace.package.version;
  # nixpkgs' lib needs Nix 2.18 (its lib/minver.nix; lib.fileset below fails on older ones
  # with "attribute 'readFileType' missing"): say so first, and how to upgrade.
  minimumNix = "2.18";
  nixTooOld = builtins.compareVersions builtins.nixVersion minimumNix < 0;
in
lib.throwIf nixTooOld ''
  homelab-agent needs Nix ${minimumNix} or newer to evaluate (nixpkgs' lib requires it); this is Nix ${builtins.nixVersion}.
  hint: on Debian 13, Ubuntu 25.04 or newer: sudo apt-get install nix-bin; on Debian 12 or an
  older Ubuntu: install Nix with the upstream installer (docs/nix-on-debian.md)''
(rustPlatform.buildRustPackage {
  pname = "homelab-agent";
  inherit version;

  # Only what the crate is built from: editing a module, a doc or a Nix test does not
  # rebuild the agent.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../agent
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [
    pkg-config
    installShellFiles
  ];
  # git2 (https and ssh) and reqwest (native-tls) link OpenSSL, found with pkg-config.
  # libgit2 and libssh2 are compiled from the sources bundled in their -sys crates,
  # pinned by Cargo.lock: libgit2-sys only accepts a system libgit2 of one exact minor
  # version, so LIBGIT2_NO_VENDOR would tie the build to whatever nixpkgs ships.
  buildInputs = [
    openssl
    zlib
  ];

  # The test suite runs in this repository's CI (tests/run), against real git, nix,
  # systemd and a real bootloader. A Pi that builds a new agent natively would spend tens
  # of minutes of its CPU and SD card on it, during a deployment, to learn nothing CI did
  # not: the package only builds.
  doCheck = false;

  # Completions and the man page come from the binary's own clap definitions
  # (`homelab-agent completions <shell>`, `homelab-agent man`), so they never disagree
  # with `--help`. Skipped when cross-compiling (the binary cannot run on the builder).
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd homelab-agent \
      --bash <($out/bin/homelab-agent completions bash) \
      --fish <($out/bin/homelab-agent completions fish) \
      --zsh <($out/bin/homelab-agent completions zsh)
    $out/bin/homelab-agent man > homelab-agent.1
    installManPage homelab-agent.1
  '';

  meta = {
    description = manifest.package.description or "Pull-based upgrade agent for NixOS machines";
    license = lib.licenses.mit;
    mainProgram = "homelab-agent";
    platforms = lib.platforms.linux;
  };
})
