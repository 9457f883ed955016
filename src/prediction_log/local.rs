//! The log in a local directory: one text file per stage, `{dir}/logs{S}/predicciones_{S}.txt`,
//! exactly the log's text, so it can be read with any tool.
//!
//! Lines are appended with one `write` on a file opened with `O_APPEND`: the kernel places each
//! write at the end of the file under the inode lock, so simultaneous writers (tasks of this
//! process or other processes) never overwrite or interleave each other's lines, and an append
//! costs the same however long the file is. Clearing replaces the file by renaming a new one over
//! it; a lock keeps this process's appends out of that moment, so none lands in the replaced file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::sync::RwLock;

use super::{ByteStream, LogLine, LogStore, format};
use crate::config::Stage;

/// How much of the file one read returns.
const READ_CHUNK: usize = 64 * 1024;

/// A stage's log in a local directory.
pub struct LocalStore {
    stage: Stage,
    path: PathBuf,
    /// Appends hold it shared, a clear holds it exclusively.
    lock: Arc<RwLock<()>>,
}

impl LocalStore {
    /// The log of `stage` under `dir` (`LOG_DIR`).
    pub fn new(stage: Stage, dir: &Path) -> Self {
        LocalStore {
            stage,
            path: dir.join(format::file_key(stage)),
            lock: Arc::new(RwLock::new(())),
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file with its header unless it exists.
    async fn ensure_file(&self) -> anyhow::Result<()> {
        if tokio::fs::try_exists(&self.path).await.unwrap_or(false) {
            return Ok(());
        }
        let _exclusive = self.lock.write().await;
        let (path, stage) = (self.path.clone(), self.stage);
        run_blocking(move || {
            create_parent(&path)?;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => file
                    .write_all(format::header(stage, Utc::now()).as_bytes())
                    .with_context(|| format!("writing the header of {}", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        })
        .await
    }
}

impl LogStore for LocalStore {
    fn append<'a>(&'a self, lines: &'a [LogLine]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.ensure_file().await?;
            let text: String = lines.iter().map(|l| l.text.as_str()).collect();
            let shared = self.lock.clone().read_owned().await;
            let path = self.path.clone();
            run_blocking(move || {
                let _shared = shared;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                file.write_all(text.as_bytes())
                    .with_context(|| format!("appending to {}", path.display()))
            })
            .await
        })
    }

    fn read(&self) -> BoxFuture<'_, anyhow::Result<Option<ByteStream>>> {
        Box::pin(async move {
            let file = match tokio::fs::File::open(&self.path).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(e).with_context(|| format!("opening {}", self.path.display()));
                }
            };
            let path = self.path.clone();
            let chunks = futures_util::stream::try_unfold(file, move |mut file| {
                let path = path.clone();
                async move {
                    let mut buf = vec![0; READ_CHUNK];
                    let n = file
                        .read(&mut buf)
                        .await
                        .with_context(|| format!("reading {}", path.display()))?;
                    buf.truncate(n);
                    Ok((n > 0).then(|| (Bytes::from(buf), file)))
                }
            });
            Ok(Some(chunks.boxed()))
        })
    }

    fn clear(&self, at: DateTime<Utc>) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let _exclusive = self.lock.write().await;
            let (path, stage) = (self.path.clone(), self.stage);
            run_blocking(move || {
                create_parent(&path)?;
                let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
                std::fs::write(&tmp, format::header(stage, at))
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("replacing {}", path.display()))
            })
            .await
        })
    }

    fn bucket(&self) -> Option<&str> {
        None
    }
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the directory {}", parent.display()))?;
    }
    Ok(())
}

async fn run_blocking<T: Send + 'static>(
    job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(job)
        .await
        .context("the file task stopped")?
}
