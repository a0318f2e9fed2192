# The Nix version guard of pkgs/homelab-agent.nix, without nixpkgs: its arguments are
# empty but for nixpkgs' real lib and a buildRustPackage that only says it was reached.
# Under Nix < 2.18 evaluating this must fail with the guard's message (what to install);
# under 2.18 or newer it is `true`. Run by tests/nix/check.sh (step 4).
{ nixpkgsLib }:
let
  none = { };
in
(import ../../pkgs/homelab-agent.nix {
  lib = import nixpkgsLib;
  stdenv = none;
  installShellFiles = none;
  pkg-config = none;
  openssl = none;
  zlib = none;
  rustPlatform.buildRustPackage = _: { reached = true; };
}).reached
