# A small TOML writer for the evaluation test, which has no nixpkgs (and so no
# pkgs.formats.toml, whose generate runs remarshal in a build). Covers what the module
# emits: tables, arrays of tables, strings, integers, booleans and arrays of those.
# check.sh reads every file it writes back with Python's tomllib and compares.
{ lib }:
let
  inherit (builtins) isAttrs isList isString isBool isInt toJSON;

  key = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else toJSON k;
  isTable = isAttrs;
  isTableArray = v: isList v && v != [ ] && lib.all isAttrs v;

  value =
    v:
    if isString v then
      toJSON v # JSON string escapes are valid TOML basic-string escapes
    else if isBool v || isInt v then
      toJSON v
    else if isList v then
      "[" + lib.concatMapStringsSep ", " value v + "]"
    else
      throw "toml.nix: cannot write ${builtins.typeOf v} values";

  # A table's own keys first, then its sub-tables and arrays of tables, as TOML requires.
  table =
    path: attrs:
    let
      names = builtins.attrNames attrs;
      plain = lib.filter (n: !(isTable attrs.${n}) && !(isTableArray attrs.${n})) names;
      tables = lib.filter (n: isTable attrs.${n}) names;
      arrays = lib.filter (n: isTableArray attrs.${n}) names;
      dotted = p: lib.concatMapStringsSep "." key p;
    in
    lib.concatMapStrings (n: "${key n} = ${value attrs.${n}}\n") plain
    + lib.concatMapStrings (
      n: "\n[${dotted (path ++ [ n ])}]\n" + table (path ++ [ n ]) attrs.${n}
    ) tables
    + lib.concatMapStrings (
      n:
      lib.concatMapStrings (
        item: "\n[[${dotted (path ++ [ n ])}]]\n" + table (path ++ [ n ]) item
      ) attrs.${n}
    ) arrays;
in
attrs: table [ ] attrs
