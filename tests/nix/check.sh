#!/usr/bin/env bash
# The Nix side's checks that run without nixpkgs, a Nix daemon or KVM (Nix 2.8 is enough):
#
#   1. every tracked or untracked .nix file parses (nix-instantiate --parse);
#   2. with nixpkgs' lib ($NIXPKGS_LIB, else ../shared/nixpkgs-lib beside the checkout;
#      tests/nix/lib/nixpkgs-lib.sh):
#      the module evaluation test (tests/nix/eval.nix, reported by lib/eval-report.py,
#      which runs `homelab-agent config check` on the generated configs when the binary
#      ${HOMELAB_AGENT_BIN:-target/debug/homelab-agent} exists), and docs/options.md
#      being up to date (tests/nix/gen-options-doc.sh regenerates it).
#
#   3. `nix flake check --no-build` on a copy of the repository with the nixpkgs input
#      replaced by a stand-in (tests/nix/stand-in: the real lib, stub NixOS options, empty
#      derivations): the outputs' shape as this Nix checks it; and the same for the
#      template, with that copy as its homelab-agent input; every `.#packages.SYSTEM.NAME`
#      that README.md and docs/ name is defined by one of the two;
#   4. the Nix version guard of pkgs/homelab-agent.nix: under Nix < 2.18 it refuses with
#      its message (what to install), under 2.18 or newer it lets the package evaluate
#      (tests/nix226/run runs this file under Debian 13's Nix 2.26).
#
# The builds, the real-NixOS evaluation and the VM tests are the flake's checks:
# `nix flake check` on x86_64-linux with KVM.
#
# Last line: "nix-checks: N passed, N failed[, N skipped]"; the exit status is non-zero
# when anything failed. With HOMELAB_TEST_REQUIRE_ALL=1 (tests/run, CI) a check that
# cannot run (no nixpkgs lib, no agent binary, no tomllib) fails instead of skipping.
#
# Every Nix setting used is stated here (NIX_CONFIG, after the caller's), so nothing
# depends on /etc/nix/nix.conf or a nixbld group.
set -u -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2

passed=0
failed=0
skipped=0
pass() {
  passed=$((passed + 1))
  echo "ok    $*"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL  $*"
}
skip() {
  if [ "${HOMELAB_TEST_REQUIRE_ALL:-}" = 1 ]; then
    fail "$* (skipped, but HOMELAB_TEST_REQUIRE_ALL=1 requires it)"
    return
  fi
  skipped=$((skipped + 1))
  echo "skip  $*"
}

nix_settings=$'experimental-features = nix-command flakes\nsandbox = false\nsubstituters ='
[ "$(id -u)" -ne 0 ] || nix_settings+=$'\nbuild-users-group ='
export NIX_CONFIG="${NIX_CONFIG:+$NIX_CONFIG$'\n'}$nix_settings"

work=$(mktemp -d)
NIXPKGS_LIB_TMP=
cleanup() {
  rm -rf "$work"
  [ -z "$NIXPKGS_LIB_TMP" ] || rm -rf "$NIXPKGS_LIB_TMP"
}
trap cleanup EXIT

# 1. Parse.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -d '' files < <(git ls-files -z --cached --others --exclude-standard -- '*.nix')
else # a copy without .git (e.g. a source tarball)
  mapfile -d '' files < <(find . -name '*.nix' -not -path './target/*' -not -path '*/.git/*' -print0 | sort -z)
fi
[ "${#files[@]}" -gt 0 ] || fail "parse: no .nix file found"
for f in "${files[@]}"; do
  [ -f "$f" ] || continue # deleted in the work tree
  if out=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then
    pass "parse: $f"
  else
    fail "parse: $f"
    echo "$out" | sed 's/^/      /'
  fi
done

# 2. Evaluate, with nixpkgs' lib.
. tests/nix/lib/nixpkgs-lib.sh
find_nixpkgs_lib "$root"
case $? in
  0)
    echo "nixpkgs lib: $NIXPKGS_LIB_DIR"
    ;;
  2)
    fail "module evaluation: nixpkgs' lib is unusable (see above)"
    NIXPKGS_LIB_DIR=
    ;;
  *)
    echo "module evaluation: nixpkgs' lib not found (set NIXPKGS_LIB=/path/to/nixpkgs/lib, or keep ../shared/nixpkgs-lib beside the checkout)"
    skip "module evaluation"
    skip "options document freshness"
    NIXPKGS_LIB_DIR=
    ;;
esac

if [ -n "$NIXPKGS_LIB_DIR" ] && ! command -v python3 >/dev/null; then
  fail "module evaluation: python3 is needed to read its results"
  NIXPKGS_LIB_DIR=
fi

if [ -n "$NIXPKGS_LIB_DIR" ]; then
  # --read-write-mode: the documented examples are written to the store (builtins.toFile).
  if nix-instantiate --eval --strict --json --read-write-mode tests/nix/eval.nix \
    --argstr nixpkgsLib "$NIXPKGS_LIB_DIR" >"$work/eval.json" 2>"$work/eval.err"; then
    agent=${HOMELAB_AGENT_BIN:-target/debug/homelab-agent}
    if [ -x "$agent" ]; then
      agent=$(cd "$(dirname "$agent")" && pwd)/$(basename "$agent")
    else
      echo "agent config check: $agent not built (set HOMELAB_AGENT_BIN or run cargo build)"
      agent=
    fi
    python3 tests/nix/lib/eval-report.py "$work/eval.json" "$agent" >"$work/report" 2>&1
    while IFS= read -r line; do
      case $line in
        "ok    "*) pass "${line#ok    }" ;;
        "FAIL  "*) fail "${line#FAIL  }" ;;
        "skip  "*) skip "${line#skip  }" ;;
        "counts "*) ;;
        *) echo "      $line" ;;
      esac
    done <"$work/report"
    grep -q '^counts ' "$work/report" || fail "module evaluation: eval-report.py did not finish"
  else
    fail "module evaluation: tests/nix/eval.nix does not evaluate"
    sed 's/^/      /' "$work/eval.err"
  fi

  if nix-instantiate --eval --strict --json tests/nix/options-doc.nix \
    --argstr nixpkgsLib "$NIXPKGS_LIB_DIR" 2>"$work/doc.err" |
    python3 -c 'import json, sys; sys.stdout.write(json.load(sys.stdin))' >"$work/options.md"; then
    if diff -u docs/options.md "$work/options.md" >"$work/doc.diff" 2>&1; then
      pass "docs/options.md is up to date"
    else
      fail "docs/options.md is stale: run bash tests/nix/gen-options-doc.sh"
      head -n 40 "$work/doc.diff" | sed 's/^/      /'
    fi
  else
    fail "options document: tests/nix/options-doc.nix does not evaluate"
    sed 's/^/      /' "$work/doc.err"
  fi
fi

# 3. `nix flake check --no-build` on a copy of this repository (the files git tracks or
# would track), with the nixpkgs input replaced by the stand-in of tests/nix/stand-in:
# nixpkgs' real lib, stub NixOS options, empty derivations. It checks what `nix flake
# check` checks of each output's shape on this Nix (modules are modules, configurations
# have a toplevel derivation, overlays, templates, packages and checks evaluate to
# derivations), not what the derivations build: the flake's checks on real nixpkgs do.
if [ -n "$NIXPKGS_LIB_DIR" ]; then
  . tests/nix/lib/stand-in.sh
  flake_check() {
    stand_in_assemble "$work" "$NIXPKGS_LIB_DIR" || return 1
    nix flake check --no-build --no-write-lock-file \
      --override-input nixpkgs "path:$work/stand-in" "path:$work/src"
  }
  if out=$(flake_check 2>&1); then
    pass "nix flake check --no-build (nixpkgs: stand-in with the real lib; $(nix --version))"
  else
    fail "nix flake check --no-build (nixpkgs: stand-in with the real lib; $(nix --version))"
    echo "$out" | grep -v '^warning: \|^• \|^    .path:\|^ *follows ' | tail -n 20 | sed 's/^/      /'
  fi
  # The template as `nix flake init -t` gives it, with that copy as its homelab-agent.
  if [ -d "$work/src/templates/default" ] &&
    out=$(nix flake check --no-build --no-write-lock-file \
      --override-input nixpkgs "path:$work/stand-in" \
      --override-input homelab-agent "path:$work/src" \
      "path:$work/src/templates/default" 2>&1); then
    pass "template: nix flake check --no-build (nixpkgs: stand-in; homelab-agent: this repository)"
  else
    fail "template: nix flake check --no-build (nixpkgs: stand-in; homelab-agent: this repository)"
    echo "$out" | grep -v '^warning: \|^• \|^    .path:\|^ *follows ' | tail -n 20 | sed 's/^/      /'
  fi
  # Every `.#packages.SYSTEM.NAME` the README and docs tell users to build is one the
  # repository's flake or the template defines (names only: nothing is evaluated).
  names_of() { # names_of FLAKEREF OVERRIDES...: "SYSTEM.NAME" lines of its packages
    local ref=$1
    shift
    nix eval --json --no-write-lock-file "$@" "$ref#packages" \
      --apply 'ps: builtins.concatLists (builtins.attrValues (builtins.mapAttrs (s: p: map (n: s + "." + n) (builtins.attrNames p)) ps))' |
      python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)))'
  }
  if [ -d "$work/src/templates/default" ] &&
    { names_of "path:$work/src" --override-input nixpkgs "path:$work/stand-in" &&
      names_of "path:$work/src/templates/default" --override-input nixpkgs "path:$work/stand-in" \
        --override-input homelab-agent "path:$work/src"; } >"$work/defined" 2>"$work/defined.err"; then
    documented=$(grep -oE '\.#packages\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+' README.md docs/*.md | sort -u)
    missing=$(printf '%s\n' "$documented" | while IFS=: read -r file ref; do
      [ -n "$ref" ] && ! grep -qxF "${ref#.#packages.}" "$work/defined" && echo "$file: $ref"
    done)
    if [ -z "$documented" ]; then
      fail "documented packages: no .#packages.SYSTEM.NAME found in README.md or docs/ (the pattern is stale)"
    elif [ -z "$missing" ]; then
      pass "every .#packages output README.md and docs/ name is defined ($(printf '%s\n' "$documented" | sed 's/.*#packages\.//' | sort -u | tr '\n' ' '))"
    else
      fail "README.md and docs/ name packages that neither the flake nor the template define"
      printf '%s\n' "$missing" | sed 's/^/      /'
    fi
  else
    fail "documented packages: listing the flake's and the template's packages failed"
    tail -n 10 "$work/defined.err" | sed 's/^/      /'
  fi
fi

# 4. The Nix version guard of pkgs/homelab-agent.nix (tests/nix/version-guard.nix): under
# Nix < 2.18 (Debian 12's 2.8) the package refuses to evaluate with a message that says
# what to install; under 2.18 or newer (tests/nix226/run: Debian 13's 2.26) it evaluates.
if [ -n "$NIXPKGS_LIB_DIR" ]; then
  version=$(nix-instantiate --eval --json -E builtins.nixVersion 2>/dev/null | tr -d '"')
  out=$(nix-instantiate --eval tests/nix/version-guard.nix --argstr nixpkgsLib "$NIXPKGS_LIB_DIR" 2>&1)
  status=$?
  if [ "$(printf '%s\n' 2.18 "$version" | sort -V | head -n 1)" != 2.18 ]; then
    if [ $status -ne 0 ] &&
      printf '%s' "$out" | grep -q "homelab-agent needs Nix 2.18 or newer to evaluate (nixpkgs' lib requires it); this is Nix $version\." &&
      printf '%s' "$out" | grep -q 'sudo apt-get install nix-bin; on Debian 12 or an' &&
      printf '%s' "$out" | grep -q 'upstream installer (docs/nix-on-debian.md)'; then
      pass "Nix $version: the package refuses to evaluate and says to install Nix 2.18 or newer, and how"
    else
      fail "Nix $version: the package should refuse to evaluate with the version guard's message (status $status)"
      printf '%s\n' "$out" | tail -n 10 | sed 's/^/      /'
    fi
  elif [ $status -eq 0 ] && [ "$out" = true ]; then
    pass "Nix $version: the version guard lets the package evaluate"
  else
    fail "Nix $version: the version guard should let the package evaluate (status $status)"
    printf '%s\n' "$out" | tail -n 10 | sed 's/^/      /'
  fi
fi

# 4. The README's quick start, as a reader runs it: its first ```sh block with the three
# variables the reader sets (HLA, REPO, KEY) given this repository's copy, a local
# repository and a test key; the rest verbatim. Then nothing of the template's
# placeholders is left, and the flake it made evaluates (the stand-in nixpkgs, as above).
if [ -n "$NIXPKGS_LIB_DIR" ] && [ -d "$work/src" ]; then
  quick_start() {
    local block dir="$work/reader"
    block=$(awk '/^## Quick start/ { on = 1 } on && /^```sh$/ { inside = 1; next } inside && /^```$/ { exit } inside { print }' README.md)
    [ -n "$block" ] || { echo "README.md: no \`\`\`sh block under '## Quick start'"; return 1; }
    grep -q '^HLA=' <<<"$block" && grep -q '^REPO=' <<<"$block" && grep -q '^KEY=' <<<"$block" ||
      { echo "the quick start does not set HLA, REPO and KEY"; return 1; }
    block=$(grep -v '^HLA=\|^REPO=\|^KEY=' <<<"$block")
    # HLA: this repository's copy whose own nixpkgs input is the stand-in (no network
    # here: `nix flake init` evaluates the flake's outputs, so it fetches its inputs).
    rm -rf "$work/hla" && cp -r "$work/src" "$work/hla" &&
      sed -i "s|^  inputs.nixpkgs.url = .*|  inputs.nixpkgs.url = \"path:$work/stand-in\";|" "$work/hla/flake.nix" &&
      rm -f "$work/hla/flake.lock" || return 1
    mkdir -p "$dir" && cd "$dir" || return 1
    HLA="path:$work/hla" REPO="file:///srv/homelab.git" \
      KEY="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIQuickStartReaderKey reader@laptop" \
      GIT_CONFIG_GLOBAL=/dev/null bash -euo pipefail -c "$block" || return 1
    cd "$dir/homelab" || return 1
    if grep -n 'git.example.org\|github:homelab-agent/homelab-agent\|AAAAI\.\.\.' flake.nix; then
      echo "a placeholder is left in flake.nix"
      return 1
    fi
    grep -q 'QuickStartReaderKey' flake.nix && grep -q 'file:///srv/homelab.git' flake.nix || return 1
    nix flake check --no-build --no-write-lock-file \
      --override-input nixpkgs "path:$work/stand-in" "path:$dir/homelab"
  }
  if out=$(quick_start 2>&1); then
    pass "README quick start: run as written (the reader's three variables set), no placeholder left, the flake evaluates"
  else
    fail "README quick start: run as written (the reader's three variables set), no placeholder left, the flake evaluates"
    echo "$out" | grep -v '^warning: \|^• \|^    .path:\|^ *follows ' | tail -n 20 | sed 's/^/      /'
  fi
fi

summary="nix-checks: $passed passed, $failed failed"
[ "$skipped" -eq 0 ] || summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
