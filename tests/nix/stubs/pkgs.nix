# Just enough of `pkgs` for the modules, without nixpkgs: fake derivations (attribute sets
# with a store path) and a pkgs.formats.toml whose `generate` keeps the value it was given,
# so the test asserts on exactly what would be written to the config file.
{ lib }:
let
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "${builtins.storeDir}/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
in
{
  homelab-agent = fake "homelab-agent";
  nix = fake "nix";
  gitMinimal = fake "git";
  openssh = fake "openssh";
  systemd = fake "systemd";
  gnupg = fake "gnupg";
  coreutils = fake "coreutils";
  findutils = fake "findutils";
  gnugrep = fake "gnugrep";
  gnused = fake "gnused";
  libubootenv = fake "libubootenv";

  writeText = name: text: fake name // { inherit text; };

  # The type is nixpkgs' (pkgs/pkgs-lib/formats.nix, toml): no null, attribute sets merge.
  formats.toml =
    { }:
    {
      type =
        let
          valueType =
            lib.types.oneOf [
              lib.types.bool
              lib.types.int
              lib.types.float
              lib.types.str
              lib.types.path
              (lib.types.attrsOf valueType)
              (lib.types.listOf valueType)
            ]
            // {
              description = "TOML value";
            };
        in
        valueType;
      generate = name: value: fake name // { inherit value; };
    };

  callPackage = _: _: throw "stubs/pkgs.nix: callPackage is not available in the evaluation test";
}
