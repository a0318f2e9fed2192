{
  description = "homelab-agent: pull-based upgrades for NixOS machines, Raspberry Pis first";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      provisioning = self.nixosConfigurations.provisioning;
    in
    {
      overlays.default = final: _prev: {
        homelab-agent = final.callPackage ./pkgs/homelab-agent.nix { };
      };

      packages = forAllSystems (
        system: pkgs:
        {
          homelab-agent = pkgs.callPackage ./pkgs/homelab-agent.nix { };
          default = self.packages.${system}.homelab-agent;
        }
        // lib.optionalAttrs (system == "aarch64-linux") {
          sd-image = provisioning.config.system.build.sdImage;
          sd-image-generic = self.nixosConfigurations.generic.config.system.build.sdImage;
        }
        // lib.optionalAttrs (system == "x86_64-linux") {
          # The same image cross-compiled on x86_64: no emulation, no aarch64 builder.
          sd-image-cross =
            (provisioning.extendModules {
              modules = [ { nixpkgs.buildPlatform = "x86_64-linux"; } ];
            }).config.system.build.sdImage;
        }
      );

      # Modules, not bare paths, which `nix flake check` refuses before Nix 2.1x ("module
      # must be a function or an attribute set"). Each imports its file, so a configuration
      # that imports two of them (provisioning holds homelab-agent) gets each file once.
      nixosModules = {
        homelab-agent.imports = [ ./modules/homelab-agent ];
        default = self.nixosModules.homelab-agent;
        # Stamps systems built from this repository; a homelab flake uses lib.versionModule.
        version = import ./modules/version.nix self;
        provisioning.imports = [ ./modules/provisioning.nix ];
        # The generic image: provisioning with no host of its own; the agent finds the
        # Pi's host in the repository's machines.toml (map mode) and deploys it.
        generic.imports = [ ./modules/generic.nix ];
      };

      lib.versionModule = import ./modules/version.nix;

      nixosConfigurations.provisioning = lib.nixosSystem {
        modules = [
          self.nixosModules.provisioning
          self.nixosModules.version
          ./modules/provisioning-example.nix
        ];
      };

      # The generic image, as an example and a build check.
      nixosConfigurations.generic = lib.nixosSystem {
        modules = [
          self.nixosModules.generic
          self.nixosModules.version
          ./modules/provisioning-example.nix
          { networking.hostName = "homelab-generic"; }
        ];
      };

      checks = forAllSystems (
        system: pkgs: import ./tests/nix/checks.nix { inherit system pkgs self nixpkgs; }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            inputsFrom = [ self.packages.${system}.homelab-agent ];
            packages = with pkgs; [
              clippy
              rustfmt
              rust-analyzer
              nixfmt-tree
            ];
          };
        }
      );

      formatter = forAllSystems (_system: pkgs: pkgs.nixfmt-tree);

      templates.default = {
        path = ./templates/default;
        description = "A homelab flake: two Raspberry Pis and one generic SD card image, deployed by homelab-agent";
        welcomeText = ''
          # A homelab flake, deployed by homelab-agent

          Two Pis (hosts/pi1.nix, hosts/pi2.nix), what they share (hosts/common.nix), and
          one generic SD card image for all of them (packages.aarch64-linux.sd-image): a
          Pi flashed with it finds its host in machines.toml and deploys it.

          Next, in flake.nix:

          1. Point the `homelab-agent` input at where you get homelab-agent from (its git
             URL or your fork): `github:homelab-agent/homelab-agent` is a placeholder.
          2. Set `repository` (where you will push this repository) and `authorizedKeys`.

          Then lock the inputs and commit, flake.lock included:

              git init && git add -A && nix flake lock && git add flake.lock
              git commit -m "homelab: pi1 and pi2"

          The agent builds with --no-write-lock-file: without a committed flake.lock each
          Pi locks the inputs to whatever is newest (not what you tested or flashed), and
          the commit is not stamped (`nixos-version --json` has no configurationRevision).

          Push, build the generic image and flash it on both Pis: docs/nixos.md in
          homelab-agent. Each Pi boots, polls, and says in `homelab-agent status` the line
          to add to machines.toml, e.g. serial-10000000abcdef01 = "pi1". Add it, commit,
          push: the Pi deploys pi1 and follows it from then on.
        '';
      };
    };
}
