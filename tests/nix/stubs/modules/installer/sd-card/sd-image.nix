# Stands in for nixpkgs' installer/sd-card/sd-image.nix (see sd-image-aarch64.nix here).
{
  testStub.imported = [ "installer/sd-card/sd-image.nix" ];
}
