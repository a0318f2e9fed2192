# The generic image and map mode (services.homelab-agent.hostMap), for eval.nix: the
# module renders `[host] map` instead of a name, the generic module is a provisioning
# system with no host of its own that can read the boot partition's host file, and the
# template gives two Pis and a generic image whose checks all have something to serve them.
# Returns { results; configs; }: configs are run through `homelab-agent config check`.
{
  lib,
  evalWith,
  agent,
  base,
  url,
  expect,
  expectTypeError,
  homelab,
  served,
}:
let
  generic = evalWith [
    ../../modules/generic.nix
    {
      services.homelab-agent.repository.url = url;
      homelab.provisioning.authorizedKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop" ];
    }
  ];
  genericToml = generic.environment.etc."homelab-agent/config.toml".source.value;
  mapped = agent (base { hostMap = "hosts/machines.toml"; });

  template = homelab (import ../../templates/default/flake.nix);
  tc = name: template.nixosConfigurations.${name}.config;
  tomlOf = c: c.environment.etc."homelab-agent/config.toml".source.value;
  failedOf = c: map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
in
{
  configs = {
    generic = genericToml;
    template-generic = tomlOf (tc "generic");
  };

  results = [
    (expect "map mode: [host] map instead of a name" mapped.toml {
      source.url = url;
      host.map = "hosts/machines.toml";
    })
    (expect "map mode: no failed assertion" mapped.failed [ ])
    (expectTypeError "map mode: a map path outside the repository is refused" (base {
      hostMap = "/etc/machines.toml";
    }))
    (expectTypeError "map mode: '..' is refused" (base { hostMap = "../machines.toml"; }))

    (expect "generic: agent in map mode, no host of its own" genericToml {
      source.url = url;
      host.map = "machines.toml";
    })
    (expect "generic: no failed assertion, no warning" [ (failedOf generic) generic.warnings ] [
      [ ]
      [ ]
    ])
    (expect "generic: a network name that is no host of the flake" generic.networking.hostName
      "homelab-generic"
    )
    (expect "generic: the firmware partition (homelab-host) is mounted, read-only"
      generic.fileSystems."/boot/firmware".options
      [
        "nofail"
        "ro"
      ]
    )
    (expect "generic: the SD card layout, not the installer profile"
      (lib.sort lib.lessThan generic.testStub.imported)
      [
        "installer/sd-card/sd-image-aarch64.nix"
        "installer/sd-card/sd-image.nix"
      ]
    )

    (expect "template: pi1, pi2 and the generic system" (lib.attrNames template.nixosConfigurations) [
      "generic"
      "pi1"
      "pi2"
    ])
    (expect "template: no failed assertion in any system" (map failedOf [
      (tc "pi1")
      (tc "pi2")
      (tc "generic")
    ]) [ [ ] [ ] [ ] ])
    (expect "template: pi2 deploys itself by name" (tomlOf (tc "pi2")).host { name = "pi2"; })
    (expect "template: the generic system finds its host in machines.toml" (tomlOf (tc "generic")).host
      { map = "machines.toml"; }
    )
    (expect "template: every health check of pi2 and of the generic system is served" [
      (served (tc "pi2"))
      (served (tc "generic"))
    ] [ [ ] [ ] ])
    (expect "template: pi2 and the generic system name their commit" [
      (tc "pi2").system.configurationRevision
      (tc "generic").system.configurationRevision
    ] [ "0123abc" "0123abc" ])
    (expect "template: the image to flash is the generic one" template.packages.aarch64-linux.sd-image
      (tc "generic").system.build.sdImage
    )
    (expect "template: machines.toml is there, with the line format" (lib.hasInfix
      ''serial-10000000abcdef01 = "pi1"''
      (builtins.readFile ../../templates/default/machines.toml)
    ) true)
  ];
}
