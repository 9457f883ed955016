//! The prediction log: every successful prediction adds one line to its stage's log, which reads
//! back as one text file, `logs{S}/predicciones_{S}.txt` (its format is in [`format`]).
//!
//! # Storage
//! The routes see a [`PredictionLog`]; it keeps the log in a [`LogStore`], chosen at start-up:
//! [`S3Store`] when `LOGS_BUCKET` is set, [`LocalStore`] (a directory, `LOG_DIR`) otherwise.
//!
//! The original service read the whole file, appended a line and wrote it back on every
//! prediction: simultaneous requests lost each other's lines, a failed read wiped the log, and
//! each prediction cost three round trips that grew with the file. Here no write reads anything.
//! In S3, under `logs{S}/predicciones_{S}/`:
//! - `lines/{YYYYMMDDTHHMMSS.ffffffZ}-{uuid}.txt`: one object per write, holding one line (a
//!   Lambda request) or a batch of lines (the local server's writer). Writers never share an
//!   object, so any number of Lambda instances write at once without coordination, and
//!   `If-None-Match: *` makes S3 itself refuse to overwrite an existing object. The time in the
//!   key is fixed-width, so a listing (always in key order) returns the log oldest first, by the
//!   clock of the instance that made each prediction.
//! - `cleared`: the time of the last clear. Readers list only the lines after it
//!   (ListObjectsV2 `StartAfter`), so a clear takes effect at once, and the older objects are
//!   deleted afterwards. Every clear updates this one object, so it is written conditionally
//!   (`If-Match` on its ETag, `If-None-Match: *` when absent).
//!
//! The header is not stored: it shows the time of the last clear or, for a log never cleared,
//! of its first line. A prediction thus costs one PUT of a few hundred bytes, whatever the log's
//! length; reading costs one LIST per thousand objects and one GET per object (several in
//! flight), streamed in order, never held in memory whole. A local directory keeps the plain
//! file, appended to with `O_APPEND` (see [`local`]).
//!
//! # Never in the way of a prediction
//! [`PredictionLog::record`] never fails, and every write is bounded by `LOG_WRITE_TIMEOUT_MS`.
//! In Lambda ([`WriteMode::Inline`]) the line is stored before the response, because Lambda
//! freezes the process once it has answered and work left for later may never run. The local
//! server ([`WriteMode::Background`]) queues the line for a writer task and answers at once;
//! reads and clears flush the queue first, and so does a clean shutdown. A line that cannot be
//! stored is reported with a `warn` event and counted in `log_write_failures` (in the stats).

pub mod format;
pub mod local;
pub mod s3;
pub mod stats;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

pub use local::LocalStore;
pub use s3::S3Store;
pub use stats::{LogStats, TopClasses};

use crate::config::Stage;
use crate::inference::Prediction;
use stats::{LogMeta, Scanner};
use writer::Writer;

/// How many prediction lines `GET /logs/predictions` shows without `limit`.
pub const DEFAULT_VIEW_LINES: usize = 100;
/// The largest `limit` of `GET /logs/predictions`.
pub const MAX_VIEW_LINES: usize = 10_000;

/// The log's text, chunk by chunk.
pub type ByteStream = BoxStream<'static, anyhow::Result<Bytes>>;

/// Where a stage's log is kept. Implementations keep every line stored, in order, without
/// reading the log to write it.
pub trait LogStore: Send + Sync + 'static {
    /// Stores `lines` (complete lines, oldest first) after everything stored before.
    fn append<'a>(&'a self, lines: &'a [LogLine]) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The log's text, header first, or `None` when there is no log yet.
    fn read(&self) -> BoxFuture<'_, anyhow::Result<Option<ByteStream>>>;
    /// Empties the log, which starts again with a header dated `at`.
    fn clear(&self, at: DateTime<Utc>) -> BoxFuture<'_, anyhow::Result<()>>;
    /// The bucket, for a store in S3.
    fn bucket(&self) -> Option<&str>;
}

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

/// One formatted line, ready for a store.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The prediction's time, which orders the lines.
    pub timestamp: DateTime<Utc>,
    /// The line, ending with `\n`.
    pub text: String,
}

impl LogLine {
    /// The line of `entry`.
    pub fn new(entry: &LogEntry) -> Self {
        LogLine {
            timestamp: entry.timestamp,
            text: format::line(entry),
        }
    }
}

/// How [`PredictionLog::record`] stores a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Stored before `record` returns (Lambda: nothing runs after the response).
    Inline,
    /// Queued for a writer task (the local server); flushed on reads and at shutdown.
    Background,
}

/// The body of `GET /logs/predictions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogView {
    /// The stage whose log this is.
    pub stage: String,
    /// The header and the last lines of the log.
    pub content: String,
    /// Statistics over the whole log.
    pub stats: LogStats,
}

/// The default bound of one write, as `LOG_WRITE_TIMEOUT_MS` defaults.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The stage's prediction log, over whichever store holds it.
pub struct PredictionLog {
    stage: Stage,
    store: Arc<dyn LogStore>,
    timeout: Duration,
    failures: Arc<AtomicU64>,
    writer: Option<Writer>,
}

impl PredictionLog {
    /// The log of `stage` in `store`, each write bounded by `timeout`. `Background` starts the
    /// writer task, so it must be called inside a Tokio runtime.
    pub fn new(stage: Stage, store: Arc<dyn LogStore>, timeout: Duration, mode: WriteMode) -> Self {
        let failures = Arc::new(AtomicU64::new(0));
        let writer = (mode == WriteMode::Background)
            .then(|| Writer::spawn(store.clone(), timeout, failures.clone()));
        PredictionLog {
            stage,
            store,
            timeout,
            failures,
            writer,
        }
    }

    /// A log in the local directory `dir`, written inline with the default timeout.
    pub fn local(stage: Stage, dir: impl AsRef<Path>) -> Self {
        let store = Arc::new(LocalStore::new(stage, dir.as_ref()));
        PredictionLog::new(stage, store, DEFAULT_WRITE_TIMEOUT, WriteMode::Inline)
    }

    /// The stage whose log this is.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Lines this process failed to store since it started.
    pub fn write_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Adds the line of `entry`. Never fails and never waits longer than the write timeout; a
    /// line that cannot be stored is logged and counted.
    pub async fn record(&self, entry: LogEntry) {
        let line = LogLine::new(&entry);
        match &self.writer {
            None => {
                let lines = std::slice::from_ref(&line);
                store_with_timeout(self.store.as_ref(), lines, self.timeout, &self.failures).await;
            }
            Some(writer) => {
                if let Err(reason) = writer.push(line) {
                    let total = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        error = reason,
                        log_write_failures = total,
                        "prediction log write failed"
                    );
                }
            }
        }
    }

    /// Waits until every line recorded so far is stored or has failed. The queue holds at most
    /// ten batches, each bounded by the write timeout, so this is bounded too.
    pub async fn flush(&self) {
        if let Some(writer) = &self.writer {
            writer.flush().await;
        }
    }

    /// The whole log as a stream of text; empty when there is no log yet.
    pub async fn download(&self) -> anyhow::Result<ByteStream> {
        self.flush().await;
        Ok(match self.store.read().await? {
            Some(chunks) => chunks,
            None => futures_util::stream::empty().boxed(),
        })
    }

    /// The header and the last `limit` lines, with statistics over the whole log.
    pub async fn view(&self, limit: usize) -> anyhow::Result<LogView> {
        let (stats, content) = self.scan(limit).await?;
        Ok(LogView {
            stage: self.stage.as_str().to_owned(),
            content,
            stats,
        })
    }

    /// Statistics over the whole log.
    pub async fn stats(&self) -> anyhow::Result<LogStats> {
        Ok(self.scan(0).await?.0)
    }

    /// Empties the log, which restarts with a header dated now; returns that time. Whether the
    /// stage allows it is the caller's decision.
    pub async fn clear(&self) -> anyhow::Result<DateTime<Utc>> {
        self.flush().await;
        let at = Utc::now();
        self.store.clear(at).await?;
        Ok(at)
    }

    async fn scan(&self, tail: usize) -> anyhow::Result<(LogStats, String)> {
        self.flush().await;
        let mut scanner = Scanner::new(tail);
        let chunks = self.store.read().await?;
        let exists = chunks.is_some();
        if let Some(mut chunks) = chunks {
            while let Some(chunk) = chunks.try_next().await? {
                scanner.feed(&chunk);
            }
        }
        Ok(scanner.finish(LogMeta {
            stage: self.stage.as_str().to_owned(),
            bucket: self.store.bucket().map(str::to_owned),
            file_key: format::file_key(self.stage),
            exists,
            write_failures: self.write_failures(),
        }))
    }
}

/// Stores `lines` within `timeout`; a failure is logged and counted, never returned.
async fn store_with_timeout(
    store: &dyn LogStore,
    lines: &[LogLine],
    timeout: Duration,
    failures: &AtomicU64,
) {
    let error = match tokio::time::timeout(timeout, store.append(lines)).await {
        Ok(Ok(())) => return,
        Ok(Err(err)) => format!("{err:#}"),
        Err(_) => format!("timed out after {} ms", timeout.as_millis()),
    };
    let count = lines.len() as u64;
    let total = failures.fetch_add(count, Ordering::Relaxed) + count;
    tracing::warn!(
        error,
        lines = count,
        log_write_failures = total,
        "prediction log write failed"
    );
}
