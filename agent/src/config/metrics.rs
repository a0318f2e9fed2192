//! `[metrics]`: Prometheus textfile metrics (README "Monitoring"). Off unless
//! `textfile_dir` is set.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// Checks `[metrics]`; the error is (key, message).
pub(super) fn validate(raw: RawMetrics) -> Result<MetricsSettings, (String, String)> {
    if let Some(dir) = &raw.textfile_dir {
        if !dir.is_absolute() {
            return Err((
                "metrics.textfile_dir".into(),
                format!(
                    "{} is not an absolute path\nhint: give node_exporter's --collector.textfile.directory, e.g. \"/var/lib/prometheus-node-exporter/textfile\"",
                    dir.display()
                ),
            ));
        }
        if dir == Path::new("/") {
            return Err((
                "metrics.textfile_dir".into(),
                "\"/\" is not a textfile directory\nhint: give node_exporter's --collector.textfile.directory".into(),
            ));
        }
    }
    Ok(MetricsSettings {
        textfile_dir: raw.textfile_dir,
    })
}
