# The stand-in nixpkgs as a flake (see ./nixpkgs.nix). tests/nix/check.sh assembles it in
# a temporary directory with nixpkgs' real lib in ./lib and the stubs in ./stubs, and runs
# `nix flake check --no-build --override-input nixpkgs path:<that directory>` on a copy of
# this repository.
{
  outputs =
    _:
    import ./nixpkgs.nix {
      lib = import ./lib;
      stubs = ./stubs;
    };
}
