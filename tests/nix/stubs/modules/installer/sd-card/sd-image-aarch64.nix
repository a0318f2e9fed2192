# Stands in for nixpkgs' installer/sd-card/sd-image-aarch64.nix (via modulesPath) in the
# evaluation test, which has nixpkgs' lib but not its NixOS modules. It imports what the
# real one imports, and each stub records itself in testStub.imported, so that the test
# sees which of nixpkgs' modules a configuration ends up with.
{
  imports = [
    ../../profiles/base.nix
    ./sd-image.nix
  ];
  testStub.imported = [ "installer/sd-card/sd-image-aarch64.nix" ];
}
