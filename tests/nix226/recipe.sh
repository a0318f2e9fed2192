#!/usr/bin/env bash
# Recipe A of docs/nix-on-debian.md (Debian 13's nix-bin), as written there, run inside
# the Debian 13 root by tests/nix226/run (as root: `sudo` is the identity). Then, with
# only the settings the recipe wrote to /etc/nix/nix.conf (plus what a root without a
# daemon or build users needs), `nix --version` is 2.18 or newer and `nix flake check
# --no-build` of the repository and the template succeed, nixpkgs replaced by the
# stand-in (tests/nix/lib/stand-in.sh; nixpkgs' real lib from $NIXPKGS_LIB).
#
# Prints "ok    ..." / "FAIL  ..." lines, then "recipe: done".
set -u -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
doc=docs/nix-on-debian.md

pass() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; }
indent() { sed 's/^/      | /' | tail -n 20; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The fenced block between the recipe's markers.
awk '/^<!-- recipe: debian-13/ { on = 1; next } /^<!-- end recipe -->/ { on = 0 }
  on && /^```sh$/ { code = 1; next } on && /^```$/ { code = 0; next } on && code' \
  "$doc" >"$work/recipe"
if [[ ! -s $work/recipe ]]; then
  fail "$doc: no block between '<!-- recipe: debian-13' and '<!-- end recipe -->'"
  echo "recipe: done"
  exit 0
fi

# The recipe reads the machine's configuration: none of the tier's overrides.
unset NIX_CONF_DIR NIX_USER_CONF_FILES NIX_CONFIG
{
  echo 'set -e'
  echo 'sudo() { "$@"; }'
  cat "$work/recipe"
} >"$work/recipe.sh"
if bash "$work/recipe.sh" </dev/null >"$work/recipe.out" 2>&1; then
  pass "$doc's Debian 13 block ran ($(wc -l <"$work/recipe") lines)"
else
  fail "$doc's Debian 13 block failed"
  indent <"$work/recipe.out"
fi

version=$(nix --version 2>&1 | awk '{ print $NF }')
if [[ $(printf '%s\n' 2.18 "$version" | sort -V | head -n 1) == 2.18 ]]; then
  pass "nix --version: $version (2.18 or newer)"
else
  fail "nix --version: '$version', wanted 2.18 or newer"
fi
if grep -qx 'experimental-features = nix-command flakes' /etc/nix/nix.conf 2>/dev/null; then
  pass "/etc/nix/nix.conf turns flakes on"
else
  fail "/etc/nix/nix.conf does not turn flakes on"
  { indent </etc/nix/nix.conf; } 2>/dev/null
fi

# No daemon and no nixbld group in the root: root's own store, Nix's own settings
# otherwise (flakes come from the recipe's file).
export NIX_CONFIG=$'sandbox = false\nbuild-users-group =\nsubstituters ='
. tests/nix/lib/stand-in.sh
. tests/nix/lib/nixpkgs-lib.sh
if ! find_nixpkgs_lib "$root"; then
  fail "nixpkgs' lib not found (NIXPKGS_LIB)"
elif ! stand_in_assemble "$work" "$NIXPKGS_LIB_DIR"; then
  fail "assembling the stand-in nixpkgs and the copy of the repository"
else
  if out=$(nix flake check --no-build --no-write-lock-file \
    --override-input nixpkgs "path:$work/stand-in" "path:$work/src" 2>&1); then
    pass "nix flake check --no-build of homelab-agent's flake (nix $version, the recipe's settings)"
  else
    fail "nix flake check --no-build of homelab-agent's flake (nix $version, the recipe's settings)"
    grep -v '^warning: \|^• ' <<<"$out" | indent
  fi
  if out=$(nix flake check --no-build --no-write-lock-file \
    --override-input nixpkgs "path:$work/stand-in" --override-input homelab-agent "path:$work/src" \
    "path:$work/src/templates/default" 2>&1); then
    pass "nix flake check --no-build of the template (nix $version, the recipe's settings)"
  else
    fail "nix flake check --no-build of the template (nix $version, the recipe's settings)"
    grep -v '^warning: \|^• ' <<<"$out" | indent
  fi
fi
echo "recipe: done"
