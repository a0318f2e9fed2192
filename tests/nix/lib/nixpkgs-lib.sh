# Sourced by check.sh and gen-options-doc.sh: find nixpkgs' lib without nixpkgs.
#
# find_nixpkgs_lib ROOT sets NIXPKGS_LIB_DIR to a directory whose default.nix is nixpkgs'
# lib, from (in order):
#   $NIXPKGS_LIB                  a nixpkgs (or nixpkgs.lib) checkout holding
#                                 lib/default.nix, or the lib directory itself
#   ROOT/../shared/nixpkgs-lib    the snapshot of nix-community/nixpkgs.lib kept beside the
#                                 checkout (its SOURCE.md names the commit); CI has it
# Returns 1 when neither is there, 2 when $NIXPKGS_LIB is set but unusable (the caller
# says so; with HOMELAB_TEST_REQUIRE_ALL=1 check.sh fails either way).
# NIXPKGS_LIB_TMP is kept for callers that clean it up; nothing is extracted any more.
# shellcheck disable=SC2034 # both are read by the caller
find_nixpkgs_lib() {
  local root=$1 dir
  NIXPKGS_LIB_DIR='' NIXPKGS_LIB_TMP=
  if [ -n "${NIXPKGS_LIB:-}" ]; then
    dir=$(cd "$NIXPKGS_LIB" 2>/dev/null && pwd) || {
      echo "NIXPKGS_LIB=$NIXPKGS_LIB: no such directory" >&2
      return 2
    }
  elif [ -d "$root/../shared/nixpkgs-lib" ]; then
    dir=$(cd "$root/../shared/nixpkgs-lib" && pwd)
  else
    return 1
  fi
  if [ -f "$dir/lib/default.nix" ]; then
    NIXPKGS_LIB_DIR=$dir/lib
  elif [ -f "$dir/default.nix" ]; then
    NIXPKGS_LIB_DIR=$dir
  else
    echo "$dir holds neither lib/default.nix nor default.nix" >&2
    return 2
  fi
}
