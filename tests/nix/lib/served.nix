# Which of a configuration's health checks nothing in that configuration serves: an
# example whose checks cannot pass rolls back every deployment. Returns the unserved
# checks, as JSON strings; [ ] when every check has something behind it.
#
# Knows the services the examples use: OpenSSH (sshd.service, port 22) and nginx
# (nginx.service, port 80, the locations of its virtual hosts). A systemd unit, port or
# HTTP path it does not know counts as unserved, so a new example with another service
# fails here until this file learns it. `remote` (the git server) and `command` checks
# depend on nothing the configuration enables, and count as served.
{ lib }:
config:
let
  inherit (builtins) elemAt match;
  loopback = [
    "127.0.0.1"
    "localhost"
    "[::1]"
  ];
  openssh = config.services.openssh.enable or false;
  nginx = config.services.nginx.enable or false;
  nginxPaths = lib.concatMap (vhost: lib.attrNames (vhost.locations or { })) (
    lib.attrValues (config.services.nginx.virtualHosts or { })
  );
  units = {
    "sshd.service" = openssh;
    "nginx.service" = nginx;
  };
  ports = {
    "22" = openssh;
    "80" = nginx;
  };

  served =
    check:
    if check ? systemd then
      lib.all (unit: units.${unit} or false) (
        if check.systemd.units == null then [ ] else check.systemd.units
      )
    else if check ? tcp then
      let
        m = match "(.*):([0-9]+)" check.tcp.address;
      in
      m != null && lib.elem (elemAt m 0) loopback && ports.${elemAt m 1} or false
    else if check ? http then
      let
        m = match "http://([^/:]+|\\[[^]]*])(:([0-9]+))?(/[^?#]*)?.*" check.http.url;
        port = if elemAt m 2 == null then "80" else elemAt m 2;
        path = if elemAt m 3 == null then "/" else elemAt m 3;
      in
      m != null && lib.elem (elemAt m 0) loopback && port == "80" && nginx && lib.elem path nginxPaths
    else
      true;
in
map builtins.toJSON (lib.filter (check: !served check) config.services.homelab-agent.health.checks)
