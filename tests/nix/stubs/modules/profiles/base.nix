# Stands in for nixpkgs' profiles/base.nix, the installer's tools and file systems (ZFS
# among them), imported by the real sd-image-aarch64.nix (see installer/sd-card here).
{
  testStub.imported = [ "profiles/base.nix" ];
}
