# Stands in for nixpkgs' installer/sd-card/sd-image-aarch64.nix (via modulesPath) in the
# evaluation test, which has nixpkgs' lib but not its NixOS modules.
{ }
