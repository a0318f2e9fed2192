//! `[metrics]`: Prometheus textfile metrics (README "Monitoring"). Off unless
//! `textfile_dir` is set.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::err;

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawMetrics {
    pub(super) textfile_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// Where `homelab_agent.prom` is kept (node_exporter's
    /// `--collector.textfile.directory`); none: no metrics file.
    pub textfile_dir: Option<PathBuf>,
}

/// Checks `[metrics]`.
pub(super) fn validate(raw: RawMetrics) -> Result<MetricsSettings, super::validate::KeyError> {
    if let Some(dir) = &raw.textfile_dir {
        if !dir.is_absolute() {
            return Err(err(
                "metrics.textfile_dir",
                format!("{} is not an absolute path", dir.display()),
            )
            .with_hint("give node_exporter's --collector.textfile.directory, e.g. \"/var/lib/prometheus-node-exporter/textfile\""));
        }
        if dir == Path::new("/") {
            return Err(
                err("metrics.textfile_dir", "\"/\" is not a textfile directory")
                    .with_hint("give node_exporter's --collector.textfile.directory"),
            );
        }
    }
    Ok(MetricsSettings {
        textfile_dir: raw.textfile_dir,
    })
}
