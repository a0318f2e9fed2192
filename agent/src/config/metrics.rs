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
                crate::failure::with_hint_line(format!("{} is not an absolute path", dir.display()), "give node_exporter's --collector.textfile.directory, e.g. \"/var/lib/prometheus-node-exporter/textfile\""),
            ));
        }
        if dir == Path::new("/") {
            return Err((
                "metrics.textfile_dir".into(),
                crate::failure::with_hint_line(
                    "\"/\" is not a textfile directory",
                    "give node_exporter's --collector.textfile.directory",
                ),
            ));
        }
    }
    Ok(MetricsSettings {
        textfile_dir: raw.textfile_dir,
    })
}
