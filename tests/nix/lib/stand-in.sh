# Sourced by check.sh and tests/nix226/recipe.sh: the inputs of `nix flake check
# --no-build` without nixpkgs.
#
# stand_in_assemble WORK LIBDIR: WORK/stand-in, the stand-in nixpkgs flake
# (tests/nix/stand-in, with nixpkgs' real lib LIBDIR and the stub NixOS options), and
# WORK/src, a copy of this repository (the files git tracks or would track; without git,
# everything but target/ and .git). Run from the checkout's top. Returns non-zero when a
# copy fails.
stand_in_assemble() {
  local work=$1 lib=$2
  mkdir -p "$work/stand-in" "$work/src" &&
    cp -r "$lib" "$work/stand-in/lib" &&
    cp tests/nix/stand-in/flake.nix tests/nix/stand-in/nixpkgs.nix "$work/stand-in/" &&
    cp -r tests/nix/stubs "$work/stand-in/stubs" || return 1
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
      tar --null -T - -cf - | tar -xf - -C "$work/src" || return 1
  else
    tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$work/src" || return 1
  fi
}
