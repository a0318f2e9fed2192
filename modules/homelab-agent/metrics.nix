# services.homelab-agent.metrics: Prometheus textfile metrics and the alert rules shipped
# with the module (README "Monitoring"). Imported by ./default.nix, which writes
# `metrics.textfile_dir` into the config file.
{ lib, ... }:
let
  inherit (lib) mkOption types literalExpression;
in
{
  options.services.homelab-agent.metrics = {
    textfileDir = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/var/lib/prometheus-node-exporter/textfile";
      description = ''
        Directory where the agent keeps `homelab_agent.prom` (`metrics.textfile_dir`), for
        node_exporter's textfile collector: point
        `services.prometheus.exporters.node` at it with
        `enabledCollectors = [ "textfile" ]` and
        `extraFlags = [ "--collector.textfile.directory=<this directory>" ]`.
        The agent creates it if missing and rewrites the file only when a value changed.
        `null`: no metrics file.
      '';
    };

    alertRules = mkOption {
      type = types.path;
      readOnly = true;
      default = ./alerts.yml;
      defaultText = literalExpression "\"\${homelab-agent}/modules/homelab-agent/alerts.yml\"";
      description = ''
        Prometheus alerting rules for these metrics (deploy failed, rolled back, needs
        attention, stuck, reboot pending too long, poll failing), for the machine that runs
        Prometheus: `services.prometheus.ruleFiles = [ config.services.homelab-agent.metrics.alertRules ];`
        (the option exists wherever the module is imported, enabled or not).
      '';
    };
  };
}
