# Stands in for nixpkgs' installer/sd-card/sd-image.nix (see sd-image-aarch64.nix here).
{ pkgs, ... }:
{
  testStub.imported = [ "installer/sd-card/sd-image.nix" ];
  system.build.sdImage = pkgs.writeText "sd-image" "";
}
