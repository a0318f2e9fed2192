#!/usr/bin/env bash
# Regenerates docs/options.md from the module declarations (tests/nix/options-doc.nix).
# Needs nixpkgs' lib: see tests/nix/lib/nixpkgs-lib.sh for where it is looked for.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
. tests/nix/lib/nixpkgs-lib.sh
if ! find_nixpkgs_lib "$root"; then
  echo "nixpkgs' lib not found: set NIXPKGS_LIB=/path/to/nixpkgs (or nixpkgs.lib)" >&2
  exit 1
fi
# Evaluation only: no build users, whatever this machine's nix.conf says (as tests/run).
export NIX_CONFIG='build-users-group ='
trap '[ -z "$NIXPKGS_LIB_TMP" ] || rm -rf "$NIXPKGS_LIB_TMP"' EXIT
nix-instantiate --eval --strict --json tests/nix/options-doc.nix --argstr nixpkgsLib "$NIXPKGS_LIB_DIR" |
  python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin))' >docs/options.md.tmp
mv docs/options.md.tmp docs/options.md
echo "wrote docs/options.md"
