# Sourced by check.sh and gen-options-doc.sh: find nixpkgs' lib without nixpkgs.
#
# find_nixpkgs_lib ROOT sets NIXPKGS_LIB_DIR to a directory whose default.nix is nixpkgs'
# lib, from (in order):
#   $NIXPKGS_LIB                          a nixpkgs (or nixpkgs.lib) checkout holding
#                                         lib/default.nix, or the lib directory itself
#   /work/.mirror/nix-community+nixpkgs.lib, ROOT/../.mirror/nix-community+nixpkgs.lib
#                                         a bare git repository of nix-community/nixpkgs.lib
#                                         (or a directory holding one as repo/), whose lib/
#                                         is extracted to a temporary directory
# Returns 1 when none is found, 2 when $NIXPKGS_LIB is set but unusable.
# Sets NIXPKGS_LIB_TMP to the temporary directory to delete, if one was made.
find_nixpkgs_lib() {
  local root=$1 candidate gitdir dir
  NIXPKGS_LIB_DIR= NIXPKGS_LIB_TMP=
  if [ -n "${NIXPKGS_LIB:-}" ]; then
    dir=$(cd "$NIXPKGS_LIB" 2>/dev/null && pwd) || {
      echo "NIXPKGS_LIB=$NIXPKGS_LIB: no such directory" >&2
      return 2
    }
    if [ -f "$dir/lib/default.nix" ]; then
      NIXPKGS_LIB_DIR=$dir/lib
    elif [ -f "$dir/default.nix" ]; then
      NIXPKGS_LIB_DIR=$dir
    else
      echo "NIXPKGS_LIB=$NIXPKGS_LIB holds neither lib/default.nix nor default.nix" >&2
      return 2
    fi
    return 0
  fi
  for candidate in /work/.mirror/nix-community+nixpkgs.lib "$root/../.mirror/nix-community+nixpkgs.lib"; do
    for gitdir in "$candidate" "$candidate/repo"; do
      if [ -d "$gitdir" ] && git --git-dir="$gitdir" rev-parse -q --verify 'HEAD^{commit}' >/dev/null 2>&1; then
        NIXPKGS_LIB_TMP=$(mktemp -d)
        if git --git-dir="$gitdir" archive HEAD lib | tar -x -C "$NIXPKGS_LIB_TMP" &&
          [ -f "$NIXPKGS_LIB_TMP/lib/default.nix" ]; then
          NIXPKGS_LIB_DIR=$NIXPKGS_LIB_TMP/lib
          return 0
        fi
        rm -rf "$NIXPKGS_LIB_TMP"
        NIXPKGS_LIB_TMP=
      fi
    done
  done
  return 1
}
