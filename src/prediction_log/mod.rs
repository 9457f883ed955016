//! The prediction log: every successful prediction appends one line to its stage's log.
//! (Interim local-file version; replaced by the store trait with S3 and local implementations.)

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use crate::config::Stage;
use crate::inference::Prediction;

/// One prediction as it is logged.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// When the prediction was made.
    pub timestamp: DateTime<Utc>,
    /// The client's file name, if it gave one.
    pub filename: Option<String>,
    /// The top-k classes, most probable first.
    pub predictions: Vec<Prediction>,
    /// Decode + pre-process + inference, in seconds.
    pub processing_time_s: f64,
}

/// The stage's prediction log.
pub struct PredictionLog {
    stage: Stage,
    dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl PredictionLog {
    /// A log in a local directory.
    pub fn local(stage: Stage, dir: PathBuf) -> Self {
        PredictionLog {
            stage,
            dir,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Appends one entry; failures are logged, never returned.
    pub async fn record(&self, entry: LogEntry) {
        if let Err(err) = self.append(&entry).await {
            tracing::warn!(error = %err, "prediction log write failed");
        }
    }

    async fn append(&self, entry: &LogEntry) -> anyhow::Result<()> {
        let _guard = self.lock.lock().await;
        let stage = self.stage.as_str();
        let dir = self.dir.join(format!("logs{stage}"));
        tokio::fs::create_dir_all(&dir).await?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("predicciones_{stage}.txt")))
            .await?;
        let top = entry.predictions.first();
        let line = format!(
            "{}|{}|{}|{:.4}|{:.4}|{{}}\n",
            entry
                .timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
            entry.filename.as_deref().unwrap_or("unknown"),
            top.map_or("", |p| p.label.as_str()),
            top.map_or(0.0, |p| p.probability),
            entry.processing_time_s
        );
        file.write_all(line.as_bytes()).await?;
        Ok(())
    }
}
